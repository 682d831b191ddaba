package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
	"github.com/queuewatch/queuewatch/publisher"
	"github.com/queuewatch/queuewatch/snapshot"
	"github.com/queuewatch/queuewatch/worker"
)

// benchJobs is the size of the polled broadcast in the benchmarks.
const benchJobs = 5000

func benchAPI(b *testing.B) (*periskopetest.Server, *periskope.Client, periskope.Target) {
	api := periskopetest.NewServer(testKey)
	b.Cleanup(api.Close)
	phone := "918527184400"
	jobs := make([]periskopetest.Job, benchJobs)
	for i := range jobs {
		jobs[i] = periskopetest.Job{
			QueueID: fmt.Sprintf("5df4cb6d-9f2b-46b6-936e-%012d", i), UniqueID: fmt.Sprintf("3EB0A0A8F90A%010d", i),
			ChatID: fmt.Sprintf("91%010d@c.us", i), PerformedBy: "api", Status: "sent", StatusDescription: "Successfully submitted.",
			Message:  map[string]any{"body": "Hello", "type": "chat"},
			Timeline: map[string]string{"queued_at": "2026-04-01T14:23:21.279Z", "sent_at": "2026-04-01T14:23:24.111Z"}, Attempts: 1,
		}
	}
	api.SetJobs(phone, jobs)
	client, err := periskope.NewClient(periskope.Options{BaseURL: api.URL, APIKey: testKey})
	if err != nil {
		b.Fatal(err)
	}
	return api, client, periskope.Target{Phone: phone}
}

// BenchmarkFetchOnly is the reference: one API request for the broadcast
// and its decoding, nothing else.
func BenchmarkFetchOnly(b *testing.B) {
	_, client, target := benchAPI(b)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		res, err := client.ListJobs(ctx, target)
		if err != nil || len(res.Jobs) != benchJobs {
			b.Fatalf("list: %v", err)
		}
	}
}

// BenchmarkPollUnchanged is one whole poll of the same broadcast when no
// job changed (the steady state): fetch, decode, and diff every job against
// the watcher-fed snapshot cache, with no NATS round trip.
func BenchmarkPollUnchanged(b *testing.B) {
	_, client, target := benchAPI(b)
	ns := natstest.Run(b)
	_, js := ns.Connect(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := publisher.New(js, publisher.Config{DuplicateWindow: time.Minute})
	if err := pub.EnsureStream(ctx); err != nil {
		b.Fatal(err)
	}
	store, err := snapshot.Open(ctx, js, snapshot.Config{TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	polls := make(chan error, 1)
	w := worker.New(client, pub, store, []periskope.Target{target}, worker.Options{
		PollInterval: time.Nanosecond,
		AfterPoll:    func(_ periskope.Target, err error) { polls <- err },
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	if err := <-polls; err != nil { // the baseline: every snapshot written
		b.Fatal(err)
	}
	if store.Len() != benchJobs {
		b.Fatalf("cache holds %d jobs", store.Len())
	}
	b.ResetTimer()
	for b.Loop() {
		if err := <-polls; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cancel()
	for { // let a poll in flight report, then wait for the worker to stop
		select {
		case <-polls:
		case <-done:
			return
		}
	}
}
