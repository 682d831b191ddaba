// Command consumer is an example downstream service: it takes the
// queue.job.status_changed events from the JetStream stream through a
// durable consumer, with events.Subscribe, and reacts to each one.
//
// Run queuewatch (or `queuewatch demo`) first, then:
//
//	go run ./examples/consumer                   # every event
//	go run ./examples/consumer -failed-only      # failures only (detail subjects)
//
// It connects to QUEUEWATCH_NATS_URL, or nats://127.0.0.1:4222. The durable
// consumer stays on the server when it stops, so a restart resumes where it
// left off; remove it with `nats consumer rm QUEUE_JOB_EVENTS <name>`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/queuewatch/queuewatch/events"
)

func main() {
	durable := flag.String("durable", "example-consumer", "name of the durable consumer; instances with the same name share the events")
	failedOnly := flag.Bool("failed-only", false, "take only failures (needs queuewatch with QUEUEWATCH_SUBJECT_DETAIL=true)")
	flag.Parse()
	if err := run(*durable, *failedOnly); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(durable string, failedOnly bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	url := os.Getenv("QUEUEWATCH_NATS_URL")
	if url == "" {
		url = nats.DefaultURL // nats://127.0.0.1:4222
	}
	nc, err := nats.Connect(url, nats.Name("example-consumer"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	opts := events.SubscribeOptions{Durable: durable, Logger: log}
	if failedOnly {
		opts.FilterSubjects = []string{events.Subject + ".*.failed"} // <subject>.<phone>.<status>
	}
	log.Info("consuming", zap.String("url", nc.ConnectedUrlRedacted()), zap.String("durable", durable))
	return events.Subscribe(ctx, js, opts, handle)
}

// handle is where a real service does its work: update a database, notify
// someone, call another API. Returning an error makes the event come back
// later, with backoff; so it must be safe to run twice for one event id.
func handle(ctx context.Context, e events.Event) error {
	d, _ := events.DeliveryFrom(ctx)
	from := e.Data.PreviousStatus
	if from == "" {
		from = "(new)"
	}
	fmt.Printf("#%-5d %s  %s  %s → %s  attempt %d\n",
		d.Sequence, e.Data.Phone, e.Data.QueueID, from, e.Data.Status, e.Data.Attempts)
	if e.Data.Status == "failed" {
		fmt.Printf("       ALERT: the message to %s failed: %s\n", e.Data.ChatID, e.Data.StatusDescription)
	}
	return nil
}
