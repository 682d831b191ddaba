package worker_test

// Fault injection, NATS side: the server restarted or down for a while,
// the stream refusing events, the stream or the snapshot bucket deleted
// while the worker runs.

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/snapshot"
)

// TestFaultNATSRestarts shuts the in-process NATS server down and starts it
// again on the same port and store directory, six times during a run with
// stale reads: three quick restarts right after the API changed, and three
// outages during which the API changes and polls fail (publish or snapshot
// reads time out) until the server is back. Nobody tells the worker: it reconnects on
// its own, and the stream holds every transition exactly once.
func TestFaultNATSRestarts(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 10)
	targets := w.targets()
	r := e.startRig(targets, rigOpts{commitTimeout: 500 * time.Millisecond})
	var restarts, outages, failedInOutages int
	calls := 0
	runWorkload(t, e, w, func() {
		calls++
		switch calls {
		case 4, 8, 12: // an outage, after the step was seen
			r.polls.waitFresh(t, targets)
			failed := r.out.failedSince(phones)
			e.nats.Shutdown()
			w.advance() // the API moves on while NATS is down
			eventually(t, 30*time.Second, "polls failing while NATS is down", func() bool { return failed() >= 3 })
			failedInOutages += failed()
			e.nats.Restart()
			outages++
			restarts++
		case 3, 7, 11: // a quick restart
			e.nats.Restart()
			restarts++
		}
		r.alive(t)
		r.polls.waitFresh(t, targets)
	})
	r.stop(t)
	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	checkCommitsPublished(t, e, w)
	if restarts != 6 {
		t.Fatalf("%d restarts, want 6: the workload ended too early", restarts)
	}
	t.Logf("FIGURES nats-restarts: %d restarts (%d outages, %d polls failed during them); %d transitions checked, lost 0, duplicated 0",
		restarts, outages, failedInOutages, len(want))
}

// TestFaultPublishRejectedCommitsNothing makes the stream refuse new events
// (a full stream that discards new messages) in the middle of a poll with
// many changes: the events it stored before are committed, the refused one
// and every job after it are not, the poll fails and is retried. Once the
// stream takes events again, every transition is there exactly once.
func TestFaultPublishRejectedCommitsNothing(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 10)
	targets := w.targets()
	r := e.startRig(targets, rigOpts{})
	fresh := func() { r.polls.waitFresh(t, targets) }
	fresh()
	w.advance()
	fresh()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const room = 3
	full := info.Config
	full.MaxMsgs = int64(info.State.Msgs) + room
	full.Discard = jetstream.DiscardNew
	if _, err := e.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	failed := r.out.failedSince(phones)
	w.advance() // dozens of transitions; room for 3
	eventually(t, 30*time.Second, "publishes refused", func() bool { return failed() >= 6 })
	r.alive(t)
	if got := len(e.streamMsgs(t)); got != int(info.State.Msgs)+room {
		t.Errorf("stream holds %d events, want %d", got, int(info.State.Msgs)+room)
	}
	checkCommitsPublished(t, e, w) // nothing committed past a refused event
	refused := failed()

	open := full
	open.MaxMsgs = -1
	open.Discard = jetstream.DiscardOld
	if _, err := e.js.UpdateStream(ctx, open); err != nil {
		t.Fatal(err)
	}
	fresh()
	for more := true; more; {
		more = w.advance()
		fresh()
	}
	r.stop(t)
	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	checkCommitsPublished(t, e, w)
	t.Logf("FIGURES publish-refused: %d polls failed on a refused publish, nothing committed past them; %d transitions checked, lost 0, duplicated 0",
		refused, len(want))
}

// TestFaultStreamDeleted deletes the event stream while the worker runs:
// the next publish re-creates it with its configuration, and every
// transition after the deletion is in the new stream exactly once.
func TestFaultStreamDeleted(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 10)
	targets := w.targets()
	r := e.startRig(targets, rigOpts{})
	fresh := func() { r.polls.waitFresh(t, targets) }
	fresh()
	w.advance()
	fresh()
	w.advance()
	fresh()
	// Quiet now: everything seen is published and committed.
	published := map[string]bool{}
	for _, ev := range e.streamEvents(t) {
		published[asTransition(ev).String()] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.js.DeleteStream(ctx, events.Stream); err != nil {
		t.Fatal(err)
	}
	for more := true; more; {
		more = w.advance()
		fresh()
	}
	r.stop(t)
	var want []transition
	for _, tr := range w.want() {
		if !published[tr.String()] {
			want = append(want, tr)
		}
	}
	checkStream(t, e.streamEvents(t), want, e.api)
	s, err := e.js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.Duplicates != 10*time.Minute || len(cfg.Subjects) != 2 {
		t.Errorf("re-created stream: duplicate window %v, subjects %v", cfg.Duplicates, cfg.Subjects)
	}
	t.Logf("FIGURES stream-deleted: 1 deletion, %d transitions before it, %d after it checked, lost 0, duplicated 0",
		len(published), len(want))
}

// TestFaultBucketDeleted deletes the snapshot bucket while the worker runs
// (twice: once quiet, once in the middle of changes), and later restarts
// the worker while jobs move on. The bucket comes back with the snapshots
// and baseline markers the worker knew, so no job is announced again, no
// previous status is lost, the restarted worker does not baseline again,
// and the stream holds every transition exactly once.
func TestFaultBucketDeleted(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 10)
	targets := w.targets()
	shared := newPolls()
	r := e.startRig(targets, rigOpts{polls: shared})
	fresh := func() { shared.waitFresh(t, targets) }
	fresh()
	for i, p := range phones {
		for k := range 4 {
			w.add(p, 100+i*10+k, -1)
		}
	}
	fresh()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	deleteBucket := func() {
		t.Helper()
		if err := e.js.DeleteKeyValue(ctx, snapshot.DefaultBucket); err != nil {
			t.Fatal(err)
		}
	}
	deleteBucket() // quiet: nothing to write, the watcher notices
	eventually(t, 30*time.Second, "the bucket re-created", func() bool {
		_, err := e.js.KeyValue(ctx, snapshot.DefaultBucket)
		return err == nil
	})
	w.advance()
	fresh()
	w.advance()
	deleteBucket() // while the step's changes are being written
	fresh()
	w.advance()
	fresh()
	r.stop(t)
	w.advance() // moves while no worker runs
	r = e.startRig(targets, rigOpts{polls: shared})
	fresh()
	for more := true; more; {
		more = w.advance()
		fresh()
	}
	r.stop(t)
	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	checkCommitsPublished(t, e, w)
	t.Logf("FIGURES bucket-deleted: 2 deletions, 1 worker restart after them; %d transitions checked, lost 0, duplicated 0", len(want))
}
