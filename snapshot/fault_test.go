package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/diff"
	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/periskope"
)

// faultFixture is a store in use: two jobs and a baseline marker written,
// the watcher running and its cache loaded.
type faultFixture struct {
	js     jetstream.JetStream
	store  *KV
	target periskope.Target
	recs   map[string]Record
	stop   func()
}

func newFaultFixture(t *testing.T, srv *natstest.Server) *faultFixture {
	t.Helper()
	_, js := srv.Connect(t)
	ctx := context.Background()
	f := &faultFixture{js: js, store: openStore(t, js), target: periskope.Target{Phone: "918527184400"}, recs: map[string]Record{}}
	// Written now, as the worker does: the store forgets cached records
	// older than the bucket's TTL.
	seen := time.Now().UTC().Truncate(time.Second)
	for i, st := range []string{"sent", "queued"} {
		key := JobKey(f.target.Phone, "q-"+st)
		rec := Record{Snapshot: diff.Snapshot{Status: st, Attempts: 1, Digest: "d" + st}, SeenAt: seen.Add(time.Duration(i) * time.Second)}
		if _, err := f.store.Create(ctx, key, rec); err != nil {
			t.Fatal(err)
		}
		f.recs[key] = rec
	}
	if err := f.store.MarkBaselined(ctx, f.target, seen); err != nil {
		t.Fatal(err)
	}
	f.recs[BaselineKey(f.target)] = Record{SeenAt: seen}
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.store.Watch(wctx, 10*time.Millisecond, nil) }()
	f.stop = func() { cancel(); <-done }
	t.Cleanup(f.stop)
	waitFor(t, "cache loaded", func() bool { return f.store.Ready() && f.store.Len() == 2 })
	return f
}

// checkBucketBack asserts the bucket exists again with the configuration
// Open gave it and holds every record the store knew.
func (f *faultFixture) checkBucketBack(t *testing.T) {
	t.Helper()
	// A store that did not itself meet the deleted bucket learns of the new
	// one from its watcher's periodic check (about a second): wait for it.
	var problems []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if problems = f.bucketBackProblems(t); len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func (f *faultFixture) bucketBackProblems(t *testing.T) (problems []string) {
	t.Helper()
	fail := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	ctx := context.Background()
	kv, err := f.js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		fail("bucket after re-creation: %v", err)
		return problems
	}
	st, err := kv.Status(ctx)
	if err != nil {
		fail("%v", err)
		return problems
	}
	cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
	if cfg.MaxAge != time.Hour || cfg.MaxMsgsPerSubject != 1 || cfg.Storage != jetstream.FileStorage || cfg.Description == "" {
		fail("re-created bucket has another configuration: TTL %v, history %d, storage %v, description %q",
			cfg.MaxAge, cfg.MaxMsgsPerSubject, cfg.Storage, cfg.Description)
	}
	fresh := openStore(t, f.js) // another process: reads the bucket, not a cache
	for key, want := range f.recs {
		got, _, found, err := fresh.Get(ctx, key)
		if err != nil || !found {
			fail("%s after re-creation: found=%v err=%v", key, found, err)
			continue
		}
		if got.Snapshot != want.Snapshot || !got.SeenAt.Equal(want.SeenAt) {
			fail("%s after re-creation = %+v, want %+v", key, got, want)
		}
	}
	if at, err := fresh.Baselined(ctx, f.target); err != nil || at.IsZero() {
		fail("baseline marker after re-creation: %v, %v (a restart would baseline again)", at, err)
	}
	return problems
}

// TestFaultBucketDeletedIsRecreated deletes the snapshot bucket under a
// store in use. Whichever operation meets the hole first (or the watcher
// alone, with no traffic at all), the bucket comes back with its
// configuration and the snapshots and marker the store knew, and the store
// keeps working: compare-and-set included.
func TestFaultBucketDeletedIsRecreated(t *testing.T) {
	ops := []struct {
		name string
		op   func(ctx context.Context, f *faultFixture) error
	}{
		{"Get", func(ctx context.Context, f *faultFixture) error {
			rec, _, found, err := f.store.Get(ctx, JobKey(f.target.Phone, "q-sent"))
			if err == nil && (!found || rec.Status != "sent") {
				err = errors.New("Get after re-creation lost the snapshot")
			}
			return err
		}},
		{"Create", func(ctx context.Context, f *faultFixture) error {
			key := JobKey(f.target.Phone, "q-new")
			rec := Record{Snapshot: diff.Snapshot{Status: "queued", Attempts: 1}, SeenAt: time.Date(2026, 4, 1, 15, 0, 0, 0, time.UTC)}
			_, err := f.store.Create(ctx, key, rec)
			f.recs[key] = rec
			return err
		}},
		{"Update", func(ctx context.Context, f *faultFixture) error {
			key := JobKey(f.target.Phone, "q-queued")
			rec := f.recs[key]
			rec.Status = "sending"
			_, err := f.store.Update(ctx, key, rec, 2) // a revision of the deleted bucket
			if errors.Is(err, ErrConflict) {
				// Right answer for a stale revision: re-read, decide again.
				var rev uint64
				if _, rev, _, err = f.store.Get(ctx, key); err == nil {
					_, err = f.store.Update(ctx, key, rec, rev)
				}
			}
			f.recs[key] = rec
			return err
		}},
		{"MarkBaselined", func(ctx context.Context, f *faultFixture) error {
			return f.store.MarkBaselined(ctx, f.target, f.recs[BaselineKey(f.target)].SeenAt)
		}},
		{"Baselined", func(ctx context.Context, f *faultFixture) error {
			at, err := f.store.Baselined(ctx, f.target)
			if err == nil && at.IsZero() {
				err = errors.New("Baselined after re-creation: no marker")
			}
			return err
		}},
		{"watcher alone", nil},
	}
	for _, tt := range ops {
		t.Run(tt.name, func(t *testing.T) {
			f := newFaultFixture(t, natstest.Run(t))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := f.js.DeleteKeyValue(ctx, DefaultBucket); err != nil {
				t.Fatal(err)
			}
			if tt.op == nil {
				waitFor(t, "the watcher re-creates the bucket", func() bool {
					_, err := f.js.KeyValue(ctx, DefaultBucket)
					return err == nil
				})
				waitFor(t, "the restored records written", func() bool {
					kv, err := f.js.KeyValue(ctx, DefaultBucket)
					if err != nil {
						return false
					}
					st, err := kv.Status(ctx)
					return err == nil && st.Values() >= uint64(len(f.recs))
				})
			} else if err := tt.op(ctx, f); err != nil {
				t.Fatalf("%s after the bucket was deleted: %v", tt.name, err)
			}
			f.checkBucketBack(t)

			// The store works on: a compare-and-set round, and the watcher
			// feeds the cache again from the new bucket.
			key := JobKey(f.target.Phone, "q-sent")
			rec, rev, found, err := f.store.Get(ctx, key)
			if err != nil || !found {
				t.Fatalf("Get: %v %v", found, err)
			}
			rec.Status = "delivered"
			if _, err := f.store.Update(ctx, key, rec, rev); err != nil {
				t.Fatalf("Update after re-creation: %v", err)
			}
			if _, err := f.store.Update(ctx, key, rec, rev); !errors.Is(err, ErrConflict) {
				t.Fatalf("stale Update after re-creation: %v, want ErrConflict", err)
			}
			other := openStore(t, f.js)
			later := JobKey(f.target.Phone, "q-later")
			if _, err := other.Create(ctx, later, Record{Snapshot: diff.Snapshot{Status: "queued", Attempts: 1}}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the watcher sees the new bucket", func() bool { _, ok := f.store.Cached(later); return ok })
		})
	}
}

// TestFaultBucketDeletedUnderTwoReplicas: two stores meet the deleted
// bucket at the same time, three times over; whichever re-creates it, one
// bucket comes back holding what the stores knew, and neither fails.
func TestFaultBucketDeletedUnderTwoReplicas(t *testing.T) {
	srv := natstest.Run(t)
	f := newFaultFixture(t, srv)
	_, js2 := srv.Connect(t)
	b := openStore(t, js2) // a replica that knows nothing yet
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for round := range 3 {
		if err := f.js.DeleteKeyValue(ctx, DefaultBucket); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for i, s := range []*KV{f.store, b} {
			wg.Go(func() {
				key := JobKey(f.target.Phone, fmt.Sprintf("replica-%d-%d", i, round))
				_, err := s.Create(ctx, key, Record{Snapshot: diff.Snapshot{Status: "queued", Attempts: 1}})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("round %d: Create after deletion: %v", round, err)
			}
		}
		f.checkBucketBack(t)
		n := 0
		for name := range f.js.KeyValueStoreNames(ctx).Name() {
			if name == DefaultBucket {
				n++
			}
		}
		if n != 1 {
			t.Errorf("round %d: %d buckets named %s", round, n, DefaultBucket)
		}
	}
}

// TestFaultStoreWhileServerDown: with NATS down, reads and writes fail
// within their deadline instead of hanging; once the server is back on the
// same store, the data is there and compare-and-set still holds. A write
// that timed out during the outage may still land after the reconnect (the
// client buffers it): it is a compare-and-set on the old revision, so it
// lands whole or not at all, and never over a newer value.
func TestFaultStoreWhileServerDown(t *testing.T) {
	srv := natstest.Run(t)
	f := newFaultFixture(t, srv)
	key := JobKey(f.target.Phone, "q-queued")
	orig := f.recs[key]
	attempted := orig
	attempted.Status = "sending"
	srv.Shutdown()
	for _, op := range []func(context.Context) error{
		func(ctx context.Context) error { _, _, _, err := f.store.Get(ctx, key); return err },
		func(ctx context.Context) error { _, err := f.store.Update(ctx, key, attempted, 2); return err },
		func(ctx context.Context) error { return f.store.MarkBaselined(ctx, f.target, orig.SeenAt) },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := op(ctx)
		cancel()
		if err == nil {
			t.Errorf("an operation succeeded with NATS down")
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("an operation with NATS down took %v", took)
		}
	}
	srv.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Compare-and-set after the restart; a conflict can only come from the
	// buffered write landing meanwhile, whole.
	next := orig
	next.Status = "sent"
	var rev uint64
	waitFor(t, "a compare-and-set after restart", func() bool {
		rec, r, found, err := f.store.Get(ctx, key)
		if err != nil || !found {
			return false
		}
		if rec.Snapshot != orig.Snapshot && rec.Snapshot != attempted.Snapshot {
			t.Fatalf("after restart: %+v, want %+v or %+v", rec, orig, attempted)
		}
		rev, err = f.store.Update(ctx, key, next, r)
		if errors.Is(err, ErrConflict) {
			t.Logf("the write attempted during the outage landed after the reconnect")
		}
		return err == nil
	})
	if _, err := f.store.Update(ctx, key, next, rev-1); !errors.Is(err, ErrConflict) {
		t.Errorf("stale Update after restart: %v, want ErrConflict", err)
	}
	if _, err := f.js.KeyValue(ctx, DefaultBucket); err != nil {
		t.Errorf("bucket after restart: %v", err)
	}
}
