package events_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/publisher"
)

// world is an in-process NATS server with the events stream, and a
// publisher for each subject form.
type world struct {
	js     jetstream.JetStream
	pub    *publisher.NATS // on queue.job.status_changed
	detail *publisher.NATS // on queue.job.status_changed.<phone>.<status>
}

func newWorld(t *testing.T) *world {
	t.Helper()
	_, js := natstest.Run(t).Connect(t)
	w := &world{
		js:     js,
		pub:    publisher.New(js, publisher.Config{DuplicateWindow: time.Minute}),
		detail: publisher.New(js, publisher.Config{DuplicateWindow: time.Minute, Detail: true}),
	}
	if err := w.pub.EnsureStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func testEvent(n int) events.Event {
	return events.New(fmt.Sprintf("ev-%d", n), events.Data{
		Phone: "918527184400", QueueID: fmt.Sprintf("q-%d", n), Status: "sent", PreviousStatus: "sending",
		Attempts: 1, ObservedAt: time.Now(),
	})
}

func (w *world) publish(t *testing.T, p *publisher.NATS, e events.Event) {
	t.Helper()
	if err := p.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

// publishRaw puts bytes that are not a valid event on subject.
func (w *world) publishRaw(t *testing.T, subject, payload string) {
	t.Helper()
	if _, err := w.js.Publish(context.Background(), subject, []byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// subscription is a running Subscribe.
type subscription struct {
	cancel context.CancelFunc
	done   chan error
}

func (w *world) subscribe(o events.SubscribeOptions, h func(context.Context, events.Event) error) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscription{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- events.Subscribe(ctx, w.js, o, h) }()
	return s
}

// stop cancels Subscribe and expects it to return nil promptly.
func (s *subscription) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Subscribe returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not return within 10s of cancel")
	}
}

// await waits for a value on ch.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// eventually polls cond until it holds, for up to 30s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settled reports whether the durable has nothing pending or unacknowledged.
func (w *world) settled(t *testing.T, durable string) bool {
	t.Helper()
	c, err := w.js.Consumer(context.Background(), events.Stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false // Subscribe has not created it yet
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending == 0 && info.NumAckPending == 0
}

func logged(logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	return logs.FilterMessage(msg).All()
}

// TestSubscribeRedeliversWithBackOff: a handler error brings the event back
// after BackOff[0], then BackOff[1]; other events flow meanwhile.
func TestSubscribeRedeliversWithBackOff(t *testing.T) {
	w := newWorld(t)
	core, logs := observer.New(zap.DebugLevel)
	backOff := []time.Duration{300 * time.Millisecond, 600 * time.Millisecond}

	type call struct {
		id      string
		attempt uint64
		at      time.Time // when the handler got it
		failed  time.Time // when it returned an error
	}
	var mu sync.Mutex
	var calls []call
	// Both wait in the stream, so ev-2 is next when ev-1 first fails.
	w.publish(t, w.pub, testEvent(1))
	w.publish(t, w.pub, testEvent(2))
	done := make(chan string, 10)
	s := w.subscribe(events.SubscribeOptions{Durable: "redeliver", BackOff: backOff, MaxDeliver: 5, Logger: zap.New(core)},
		func(ctx context.Context, e events.Event) error {
			d, ok := events.DeliveryFrom(ctx)
			if !ok {
				t.Error("no Delivery in the handler's context")
			}
			c := call{id: e.ID, attempt: d.Attempt, at: time.Now()}
			var err error
			if e.ID == "ev-1" && d.Attempt < 3 {
				err = fmt.Errorf("downstream unavailable (attempt %d)", d.Attempt)
				c.failed = time.Now()
			}
			mu.Lock()
			calls = append(calls, c)
			mu.Unlock()
			if err == nil {
				done <- e.ID
			}
			return err
		})
	defer s.stop(t)

	got := []string{await(t, done, "first handled event"), await(t, done, "second handled event")}
	if !slices.Equal(got, []string{"ev-2", "ev-1"}) {
		t.Fatalf("handled %v, want ev-2 (while ev-1 waits for its redelivery) then ev-1", got)
	}
	eventually(t, "consumer settled", func() bool { return w.settled(t, "redeliver") })

	mu.Lock()
	defer mu.Unlock()
	var ev1 []call
	for _, c := range calls {
		if c.id == "ev-1" {
			ev1 = append(ev1, c)
		}
	}
	if len(ev1) != 3 {
		t.Fatalf("ev-1 handled %d times, want 3: %+v", len(ev1), ev1)
	}
	for i, c := range ev1 {
		if c.attempt != uint64(i+1) {
			t.Errorf("delivery %d of ev-1 has Attempt %d", i+1, c.attempt)
		}
		if i > 0 {
			if gap := c.at.Sub(ev1[i-1].failed); gap < backOff[i-1] {
				t.Errorf("delivery %d came %v after failure %d, want at least BackOff[%d] = %v", i+1, gap, i, i-1, backOff[i-1])
			}
		}
	}
	var delays []time.Duration
	for _, e := range logged(logs, "handler failed; the event comes back later") {
		delays = append(delays, e.ContextMap()["retry_in"].(time.Duration))
	}
	if !slices.Equal(delays, backOff) {
		t.Errorf("logged retry delays %v, want %v", delays, backOff)
	}
}

// TestSubscribeGivesUpAfterMaxDeliver: a handler that keeps failing sees the
// event MaxDeliver times; then it is terminated and logged, and the others
// flow.
func TestSubscribeGivesUpAfterMaxDeliver(t *testing.T) {
	w := newWorld(t)
	core, logs := observer.New(zap.DebugLevel)
	var mu sync.Mutex
	attempts := map[string]int{}
	ok := make(chan string, 10)
	s := w.subscribe(events.SubscribeOptions{Durable: "give-up", BackOff: []time.Duration{20 * time.Millisecond}, MaxDeliver: 3, Logger: zap.New(core)},
		func(ctx context.Context, e events.Event) error {
			mu.Lock()
			attempts[e.ID]++
			mu.Unlock()
			if e.ID == "ev-1" {
				return errors.New("always failing")
			}
			ok <- e.ID
			return nil
		})
	defer s.stop(t)

	w.publish(t, w.pub, testEvent(1))
	eventually(t, "the give-up log", func() bool { return len(logged(logs, "handler failed on the last delivery; giving the event up")) == 1 })
	eventually(t, "consumer settled", func() bool { return w.settled(t, "give-up") })
	w.publish(t, w.pub, testEvent(2))
	if id := await(t, ok, "ev-2"); id != "ev-2" {
		t.Fatalf("handled %s", id)
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts["ev-1"] != 3 {
		t.Errorf("ev-1 handled %d times, want MaxDeliver = 3", attempts["ev-1"])
	}
}

// TestSubscribeTerminatesPoisonMessages: malformed messages on both subject
// forms are terminated and logged, and never reach the handler nor hold back
// the good events, even with one event in flight at a time and an AckWait
// longer than the test.
func TestSubscribeTerminatesPoisonMessages(t *testing.T) {
	w := newWorld(t)
	core, logs := observer.New(zap.DebugLevel)
	handled := make(chan string, 10)
	s := w.subscribe(events.SubscribeOptions{Durable: "poison", MaxAckPending: 1, AckWait: time.Hour, Logger: zap.New(core)},
		func(ctx context.Context, e events.Event) error {
			handled <- e.ID
			return nil
		})
	defer s.stop(t)

	w.publish(t, w.pub, testEvent(1))
	w.publishRaw(t, events.Subject, "<html>502 Bad Gateway</html>")
	w.publishRaw(t, events.Subject+".918527184400.sent", `{"specversion":"1.0","type":"queue.job.status_changed"}`)
	w.publish(t, w.detail, testEvent(2))
	w.publish(t, w.pub, testEvent(3))
	for _, want := range []string{"ev-1", "ev-2", "ev-3"} {
		if got := await(t, handled, want); got != want {
			t.Fatalf("handled %s, want %s", got, want)
		}
	}
	eventually(t, "consumer settled", func() bool { return w.settled(t, "poison") })
	var seqs []uint64
	for _, e := range logged(logs, "terminating a malformed event") {
		seqs = append(seqs, e.ContextMap()["stream_seq"].(uint64))
		if err, _ := e.ContextMap()["error"].(string); !strings.Contains(err, "invalid event") {
			t.Errorf("log error %q", err)
		}
	}
	if !slices.Equal(seqs, []uint64{2, 3}) {
		t.Errorf("terminated stream sequences %v, want [2 3]", seqs)
	}
	c, err := w.js.Consumer(context.Background(), events.Stream, "poison")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.Delivered.Stream != 5 {
		t.Errorf("consumer: %d redelivered, delivered up to %d; want 0 and 5", info.NumRedelivered, info.Delivered.Stream)
	}
	cfg := info.Config
	if cfg.AckPolicy != jetstream.AckExplicitPolicy || !slices.Equal(cfg.FilterSubjects, []string{events.Subject, events.Subject + ".>"}) {
		t.Errorf("consumer config: ack %v, filters %v", cfg.AckPolicy, cfg.FilterSubjects)
	}
}

// TestSubscribeFilterSubjects: in detail mode a consumer can take the
// failures only.
func TestSubscribeFilterSubjects(t *testing.T) {
	w := newWorld(t)
	handled := make(chan string, 10)
	s := w.subscribe(events.SubscribeOptions{Durable: "failures", FilterSubjects: []string{events.Subject + ".*.failed"}},
		func(ctx context.Context, e events.Event) error {
			handled <- e.Data.Status
			return nil
		})
	defer s.stop(t)
	for i, status := range []string{"sent", "failed", "read", "failed"} {
		e := testEvent(i)
		e.Data.Status = status
		w.publish(t, w.detail, e)
	}
	eventually(t, "consumer settled", func() bool { return w.settled(t, "failures") })
	close(handled)
	var got []string
	for s := range handled {
		got = append(got, s)
	}
	if !slices.Equal(got, []string{"failed", "failed"}) {
		t.Errorf("handled %v, want the two failures", got)
	}
}

// TestSubscribeStopsCleanly: cancelling returns nil and leaves no goroutine
// behind; an event whose handler was interrupted is not acknowledged: the
// next subscriber gets it again.
func TestSubscribeStopsCleanly(t *testing.T) {
	w := newWorld(t)
	w.publish(t, w.pub, testEvent(1))
	leaks := goleak.IgnoreCurrent()

	started := make(chan uint64, 1)
	opts := events.SubscribeOptions{Durable: "stop", AckWait: 2 * time.Second}
	s := w.subscribe(opts,
		func(ctx context.Context, e events.Event) error {
			d, _ := events.DeliveryFrom(ctx)
			started <- d.Attempt
			<-ctx.Done() // a handler that only stops when told
			return ctx.Err()
		})
	if a := await(t, started, "the handler"); a != 1 {
		t.Fatalf("first delivery has Attempt %d", a)
	}
	s.stop(t) // the handler is blocked: only cancellation ends it

	again := make(chan uint64, 1)
	s = w.subscribe(opts,
		func(ctx context.Context, e events.Event) error {
			d, _ := events.DeliveryFrom(ctx)
			again <- d.Attempt
			return nil
		})
	// Attempt 2 when the Nak on cancel brought it back; 3 when the server
	// handed it to the closing subscription first, and AckWait did.
	if a := await(t, again, "the redelivery"); a != 2 && a != 3 {
		t.Errorf("redelivery has Attempt %d, want 2 (or 3)", a)
	}
	eventually(t, "consumer settled", func() bool { return w.settled(t, "stop") })
	s.stop(t)

	if err := w.js.DeleteConsumer(context.Background(), events.Stream, "stop"); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, leaks)
}

func TestSubscribeSetupErrors(t *testing.T) {
	_, js := natstest.Run(t).Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	noop := func(context.Context, events.Event) error { return nil }
	if err := events.Subscribe(ctx, js, events.SubscribeOptions{}, noop); err == nil || !strings.Contains(err.Error(), "Durable") {
		t.Errorf("without Durable: %v", err)
	}
	err := events.Subscribe(ctx, js, events.SubscribeOptions{Durable: "early"}, noop)
	if !errors.Is(err, jetstream.ErrStreamNotFound) || !strings.Contains(err.Error(), events.Stream) {
		t.Errorf("without the stream: %v", err)
	}
}

// TestSubscribeConnectionClosed: Subscribe reports a closed connection
// instead of hanging.
func TestSubscribeConnectionClosed(t *testing.T) {
	srv := natstest.Run(t)
	nc, js := srv.Connect(t)
	if err := publisher.New(js, publisher.Config{}).EnsureStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- events.Subscribe(context.Background(), js, events.SubscribeOptions{Durable: "closed"},
			func(context.Context, events.Event) error { return nil })
	}()
	eventually(t, "the consumer", func() bool {
		_, err := js.Consumer(context.Background(), events.Stream, "closed")
		return err == nil
	})
	nc.Close()
	if err := await(t, done, "Subscribe to return"); !errors.Is(err, jetstream.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("Subscribe returned %v, want an error wrapping ErrConnectionClosed", err)
	}
}
