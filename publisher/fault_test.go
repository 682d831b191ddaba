package publisher

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/internal/natstest"
)

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "QUEUE_JOB_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestFaultPublishAcrossServerRestart: with NATS down, Publish fails within
// its deadline (the worker then commits nothing); after a restart on the
// same store, republishing the same event is acknowledged and stored once,
// even if the failed attempt was buffered and landed after the reconnect,
// and an event stored before the restart is still recognised as a repeat.
func TestFaultPublishAcrossServerRestart(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	p := New(js, Config{DuplicateWindow: 10 * time.Minute})
	if err := p.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, sample("sending")); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	down, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	err := p.Publish(down, sample("sent"))
	cancel()
	if err == nil {
		t.Fatal("Publish succeeded with NATS down")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Publish with NATS down took %v", took)
	}
	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.Publish(pctx, sample("sent"))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after restart: %v", err)
		}
	}
	if err := p.Publish(ctx, sample("sending")); err != nil { // stored before the restart
		t.Fatal(err)
	}
	if n := streamMsgs(t, js); n != 2 {
		t.Errorf("stream holds %d events, want 2 (one per id, across the restart)", n)
	}
}

// TestFaultPublishRefusedByAFullStream: a stream that refuses new messages
// makes Publish fail (the worker then commits nothing); once it takes them
// again, Publish works.
func TestFaultPublishRefusedByAFullStream(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	p := New(js, Config{DuplicateWindow: 10 * time.Minute})
	if err := p.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, sample("sending")); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, "QUEUE_JOB_EVENTS")
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, sample("sent")); err == nil {
		t.Fatal("Publish to a full stream succeeded")
	}
	cfg.MaxMsgs, cfg.Discard = -1, jetstream.DiscardOld
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, sample("sent")); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, js); n != 2 {
		t.Errorf("stream holds %d events, want 2", n)
	}
}

// TestFaultStreamDeletedUnderTwoPublishers: two replicas publish at the
// same time into a stream that was just deleted; both re-create it (one
// wins, the other binds), neither fails, and the stream has its
// configuration back.
func TestFaultStreamDeletedUnderTwoPublishers(t *testing.T) {
	srv := natstest.Run(t)
	_, js1 := srv.Connect(t)
	_, js2 := srv.Connect(t)
	ctx := context.Background()
	a := New(js1, Config{DuplicateWindow: 10 * time.Minute})
	b := New(js2, Config{DuplicateWindow: 10 * time.Minute})
	if err := a.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		if err := js1.DeleteStream(ctx, "QUEUE_JOB_EVENTS"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for i, p := range []*NATS{a, b} {
			wg.Go(func() { errs <- p.Publish(ctx, sample([]string{"queued", "sending"}[i])) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("round %d: Publish into a deleted stream: %v", round, err)
			}
		}
		if n := streamMsgs(t, js1); n != 2 {
			t.Errorf("round %d: stream holds %d events, want 2", round, n)
		}
	}
	s, err := js1.Stream(ctx, "QUEUE_JOB_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if d := s.CachedInfo().Config.Duplicates; d != 10*time.Minute {
		t.Errorf("re-created stream has duplicate window %v", d)
	}
}
