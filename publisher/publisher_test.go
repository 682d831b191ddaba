package publisher

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/internal/natstest"
)

func sample(status string) events.Event {
	return events.New("id-"+status, events.Data{
		Phone: "918527184400", QueueID: "q-1", Status: status, PreviousStatus: "queued", Attempts: 1,
		ObservedAt: time.Date(2026, 4, 1, 14, 23, 24, 0, time.UTC),
		Job:        json.RawMessage(`{"queue_id":"q-1","status":"` + status + `"}`),
	})
}

func TestEnsureStreamCreatesItOnce(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	p := New(js, Config{DuplicateWindow: 7 * time.Minute})
	for range 2 {
		if err := p.EnsureStream(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, "QUEUE_JOB_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if got := strings.Join(cfg.Subjects, " "); got != "queue.job.status_changed queue.job.status_changed.>" {
		t.Errorf("subjects = %s", got)
	}
	if cfg.Duplicates != 7*time.Minute {
		t.Errorf("duplicate window = %v", cfg.Duplicates)
	}
}

func TestEnsureStreamWidensDuplicateWindowAndRejectsForeignStream(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "QUEUE_JOB_EVENTS", Subjects: []string{"queue.job.status_changed", "queue.job.status_changed.>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := New(js, Config{DuplicateWindow: 15 * time.Minute}).EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, "QUEUE_JOB_EVENTS")
	if d := s.CachedInfo().Config.Duplicates; d != 15*time.Minute {
		t.Errorf("duplicate window = %v, want widened to 15m", d)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other"}}); err != nil {
		t.Fatal(err)
	}
	err := New(js, Config{Stream: "OTHER", DuplicateWindow: time.Minute}).EnsureStream(ctx)
	if err == nil || !strings.Contains(err.Error(), `does not capture subject "queue.job.status_changed"`) {
		t.Errorf("err = %v, want a clear subject mismatch", err)
	}
}

func TestPublishDedupsByEventID(t *testing.T) {
	srv := natstest.Run(t)
	nc, js := srv.Connect(t)
	ctx := context.Background()
	p := New(js, Config{DuplicateWindow: time.Minute})
	if err := p.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("queue.job.status_changed")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := p.Publish(ctx, sample("sent")); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Publish(ctx, sample("read")); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, "QUEUE_JOB_EVENTS")
	info, _ := s.Info(ctx)
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d messages, want 2 (repeats dropped)", info.State.Msgs)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]string{
		"Nats-Msg-Id": "id-sent", "Content-Type": "application/cloudevents+json",
		"ce-type": "queue.job.status_changed", "ce-id": "id-sent",
		"queuewatch-phone": "918527184400", "queuewatch-status": "sent",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Source != "periskope/phones/918527184400" || ev.Subject != "q-1" || ev.Data.Status != "sent" {
		t.Errorf("event = %+v", ev)
	}
	// previous_status and attempts are never omitted.
	var raw map[string]map[string]any
	_ = json.Unmarshal(m.Data, &raw)
	for _, f := range []string{"previous_status", "attempts", "timeline", "job", "observed_at"} {
		if _, ok := raw["data"][f]; !ok {
			t.Errorf("data.%s missing from %s", f, m.Data)
		}
	}
}

func TestPublishRecreatesADeletedStream(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	p := New(js, Config{DuplicateWindow: time.Minute})
	if err := p.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "QUEUE_JOB_EVENTS"); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, sample("sent")); err != nil {
		t.Fatalf("publish after the stream was deleted: %v", err)
	}
	s, err := js.Stream(ctx, "QUEUE_JOB_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Info(ctx); info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestDetailSubject(t *testing.T) {
	srv := natstest.Run(t)
	nc, js := srv.Connect(t)
	ctx := context.Background()
	p := New(js, Config{DuplicateWindow: time.Minute, Detail: true})
	if err := p.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	sub, _ := nc.SubscribeSync("queue.job.status_changed.*.sent")
	if err := p.Publish(ctx, sample("sent")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "queue.job.status_changed.918527184400.sent" {
		t.Errorf("subject = %s", m.Subject)
	}
}

func TestPublishRejectsInvalidEvent(t *testing.T) {
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	p := New(js, Config{DuplicateWindow: time.Minute})
	bad := sample("sent")
	bad.Data.QueueID = ""
	if err := p.Publish(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "data.queue_id") {
		t.Errorf("err = %v, want one naming data.queue_id", err)
	}
}
