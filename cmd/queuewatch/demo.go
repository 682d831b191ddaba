package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/queuewatch/queuewatch/config"
	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/internal/embednats"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

// demoPhones are the simulated WhatsApp numbers of the demo.
var demoPhones = []string{"918527184400", "919876543210", "phone-demo7c1e"}

// runDemo is `queuewatch demo`: an embedded NATS server in a temporary
// directory, the simulated Periskope API, the worker, and every event
// printed as it arrives. No API key and nothing installed.
func runDemo(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := config.Parse()
	if err != nil {
		return err
	}
	cfg.PollInterval = time.Second
	log := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zap.WarnLevel))

	dir, err := os.MkdirTemp("", "queuewatch-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := embednats.Start(embednats.Options{StoreDir: dir, Port: -1})
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	key := randomKey()
	api := periskopetest.NewServer(key)
	defer api.Close()
	sim := periskopetest.NewSimulator(api, periskopetest.SimOptions{Phones: demoPhones, JobsPerPhone: 6, FailRate: 0.15, Seed: time.Now().UnixNano()})
	client, err := periskope.NewClient(periskope.Options{BaseURL: api.URL, APIKey: key, Timeout: cfg.RequestTimeout})
	if err != nil {
		return err
	}

	nc, err := connect(cfg, srv.ClientURL(), log)
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.Subscribe(cfg.Subject, func(m *nats.Msg) { printEvent(stdout, m.Data) })
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()

	fmt.Fprintf(stdout, "queuewatch demo: simulated Periskope API at %s, %d phones\n", api.URL, len(demoPhones))
	fmt.Fprintf(stdout, "NATS with JetStream at %s; stream %s, subject %s\n", srv.ClientURL(), cfg.Stream, cfg.Subject)
	fmt.Fprintf(stdout, "another consumer:  nats sub --server %s '%s'\n", srv.ClientURL(), cfg.Subject)
	fmt.Fprintln(stdout, "the first poll of each phone records a silent baseline; events follow as jobs move. Ctrl-C stops.")
	fmt.Fprintln(stdout)

	simDone := make(chan struct{})
	go func() { defer close(simDone); sim.Run(ctx, 700*time.Millisecond) }()
	targets := make([]periskope.Target, len(demoPhones))
	for i, p := range demoPhones {
		targets[i] = periskope.Target{Phone: p}
	}
	err = pipeline{cfg: cfg, log: log, lister: client, targets: targets}.run(ctx, nc)
	<-simDone
	fmt.Fprintln(stdout, "\nqueuewatch demo: stopped")
	return err
}

// printEvent writes one line per event.
func printEvent(w io.Writer, payload []byte) {
	e, err := events.Decode(payload)
	if err != nil {
		fmt.Fprintf(w, "undecodable event: %v\n", err)
		return
	}
	from := e.Data.PreviousStatus
	if from == "" {
		from = "(new)"
	}
	fmt.Fprintf(w, "%s  %-15s  %s  %-9s → %-9s  attempt %d\n",
		e.Time.Local().Format("15:04:05"), e.Data.Phone, shortID(e.Data.QueueID), from, e.Data.Status, e.Data.Attempts)
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "demo-" + hex.EncodeToString(b)
}
