package snapshot

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/diff"
	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/periskope"
)

func TestKeys(t *testing.T) {
	tests := []struct{ phone, queue, want string }{
		{"918527184400", "5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400", "918527184400.5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400"},
		{"phone-abc", "q_1", "phone-abc.q_1"},
		{"918527184400", "a.b", "918527184400.=YS5i"},
		{"918527184400", "a b*>", "918527184400.=YSBiKj4"},
		{"918527184400", "=x", "918527184400.=PXg"},
		{"918527184400", "", "918527184400.="},
	}
	for _, tt := range tests {
		if got := JobKey(tt.phone, tt.queue); got != tt.want {
			t.Errorf("JobKey(%q, %q) = %q, want %q", tt.phone, tt.queue, got, tt.want)
		}
	}
	seen := map[string]bool{}
	for _, k := range []string{
		BaselineKey(periskope.Target{Phone: "9185"}),
		BaselineKey(periskope.Target{Phone: "9185", BroadcastID: "b"}),
		BaselineKey(periskope.Target{Phone: "9185", QueueID: "b"}),
		JobKey("_baseline", "9185"),
	} {
		if seen[k] {
			t.Errorf("key %q collides", k)
		}
		seen[k] = true
	}
}

func openStore(t *testing.T, js jetstream.JetStream) *KV {
	t.Helper()
	s, err := Open(context.Background(), js, Config{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCompareAndSet(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a, b := openStore(t, js), openStore(t, js) // two replicas
	key := JobKey("918527184400", "q-1")

	if _, _, found, err := a.Get(ctx, key); err != nil || found {
		t.Fatalf("Get missing key: found=%v err=%v", found, err)
	}
	rec := Record{Snapshot: diff.Snapshot{Status: "queued", Attempts: 1}, SeenAt: time.Now().UTC()}
	rev, err := a.Create(ctx, key, rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, key, rec); !errors.Is(err, ErrConflict) {
		t.Fatalf("second Create: %v, want ErrConflict", err)
	}
	rec.Status = "sending"
	if _, err := b.Update(ctx, key, rec, rev); err != nil {
		t.Fatal(err)
	}
	rec.Status = "sent"
	if _, err := a.Update(ctx, key, rec, rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale Update: %v, want ErrConflict", err)
	}
	got, rev2, found, err := a.Get(ctx, key)
	if err != nil || !found || got.Status != "sending" || rev2 <= rev {
		t.Fatalf("Get = %+v rev %d found %v err %v", got, rev2, found, err)
	}
	if c, ok := a.Cached(key); !ok || c.Status != "sending" {
		t.Errorf("cache after Get = %+v %v", c, ok)
	}
}

func TestWatcherKeepsCacheCurrent(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer, reader := openStore(t, js), openStore(t, js)
	key := JobKey("918527184400", "q-1")
	if _, err := writer.Create(ctx, key, Record{Snapshot: diff.Snapshot{Status: "queued"}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); reader.Watch(ctx, 10*time.Millisecond, nil) }()
	waitFor(t, "watcher ready with the initial value", func() bool {
		r, ok := reader.Cached(key)
		return reader.Ready() && ok && r.Status == "queued"
	})
	_, rev, _, _ := writer.Get(ctx, key)
	if _, err := writer.Update(ctx, key, Record{Snapshot: diff.Snapshot{Status: "sent"}}, rev); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "update seen by the other replica", func() bool {
		r, ok := reader.Cached(key)
		return ok && r.Status == "sent"
	})
	if reader.Len() != 1 {
		t.Errorf("Len = %d, want 1", reader.Len())
	}
	kv, _ := js.KeyValue(ctx, DefaultBucket)
	if err := kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delete seen", func() bool { _, ok := reader.Cached(key); return !ok })
	if reader.Len() != 0 {
		t.Errorf("Len after delete = %d, want 0", reader.Len())
	}
	cancel()
	<-done
}

func TestWatcherSurvivesServerRestart(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer, reader := openStore(t, js), openStore(t, js)
	done := make(chan struct{})
	go func() { defer close(done); reader.Watch(ctx, 10*time.Millisecond, nil) }()
	waitFor(t, "watcher ready", reader.Ready)
	srv.Restart()
	key := JobKey("918527184400", "after-restart")
	waitFor(t, "write after restart", func() bool {
		_, err := writer.Create(ctx, key, Record{Snapshot: diff.Snapshot{Status: "queued"}})
		return err == nil || errors.Is(err, ErrConflict)
	})
	// The cache of the other replica catches up on its own (the watcher
	// may take a while to resume after a restart).
	waitFor(t, "watcher resumed after restart", func() bool { _, ok := reader.Cached(key); return ok })
	cancel()
	<-done
}

func TestGetRejectsForeignValue(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	s := openStore(t, js)
	kv, _ := js.KeyValue(ctx, DefaultBucket)
	key := JobKey("918527184400", "q-x")
	if _, err := kv.PutString(ctx, key, "not json"); err != nil {
		t.Fatal(err)
	}
	_, rev, found, err := s.Get(ctx, key)
	if !errors.Is(err, ErrNotSnapshot) || !found || rev == 0 {
		t.Errorf("Get = rev %d, found %v, err %v; want ErrNotSnapshot with the revision", rev, found, err)
	}
}

func TestBaselineMarker(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	s := openStore(t, js)
	tg := periskope.Target{Phone: "918527184400", BroadcastID: "b-1"}
	if at, err := s.Baselined(ctx, tg); err != nil || !at.IsZero() {
		t.Fatalf("Baselined before marking = %v, %v", at, err)
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if err := s.MarkBaselined(ctx, tg, now); err != nil {
		t.Fatal(err)
	}
	// A new process (fresh store) sees the marker.
	if at, err := openStore(t, js).Baselined(ctx, tg); err != nil || !at.Equal(now) {
		t.Fatalf("Baselined after marking = %v, %v", at, err)
	}
	if at, _ := s.Baselined(ctx, periskope.Target{Phone: "918527184400"}); !at.IsZero() {
		t.Error("the phone-wide target should not share the broadcast's marker")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMaskedKey(t *testing.T) {
	for key, want := range map[string]string{
		JobKey("918527184400", "q-1"):                                "****4400.q-1",
		BaselineKey(periskope.Target{Phone: "918527184400"}):         "_baseline.****4400.all",
		BaselineKey(periskope.Target{Phone: "91", BroadcastID: "b"}): "_baseline.****.broadcast.b",
	} {
		if got := masked(key); got != want {
			t.Errorf("masked(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestOpenAppliesTheConfiguredTTL(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if _, err := Open(ctx, js, Config{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, js, Config{TTL: 720 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	kv, _ := js.KeyValue(ctx, DefaultBucket)
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 720*time.Hour {
		t.Errorf("bucket TTL = %v, want the configured 720h", st.TTL())
	}
}

func TestSweepForgetsExpiredSnapshots(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	s, err := Open(ctx, js, Config{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old, fresh := JobKey("918527184400", "old"), JobKey("918527184400", "fresh")
	if _, err := s.Create(ctx, old, Record{Snapshot: diff.Snapshot{Status: "sent"}, SeenAt: now.Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, fresh, Record{Snapshot: diff.Snapshot{Status: "sent"}, SeenAt: now}); err != nil {
		t.Fatal(err)
	}
	s.sweep(now)
	if _, ok := s.Cached(old); ok {
		t.Error("a snapshot older than the TTL is still cached")
	}
	if _, ok := s.Cached(fresh); !ok {
		t.Error("a fresh snapshot was forgotten")
	}
	if s.Len() != 1 {
		t.Errorf("Len = %d, want 1", s.Len())
	}
}
