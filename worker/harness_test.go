package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

// testKey is the API key of every test; a test checks it never leaks.
const testKey = "sk-live-QW-TEST-a91b7c3d5e"

// env is one test's world: a real in-process NATS server and a fake
// Periskope API.
type env struct {
	t    *testing.T
	nats *natstest.Server
	api  *periskopetest.Server
	js   jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Run(t), api: periskopetest.NewServer(testKey)}
	t.Cleanup(e.api.Close)
	_, e.js = e.nats.Connect(t)
	return e
}

// polls counts finished polls per target, so tests wait for progress
// instead of sleeping.
type polls struct {
	mu   sync.Mutex
	ok   map[string]int
	errs []error
	cond chan struct{} // closed and replaced on every poll
}

func newPolls() *polls { return &polls{ok: map[string]int{}, cond: make(chan struct{})} }

func (p *polls) record(t periskope.Target, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.ok[t.String()]++
	} else {
		p.errs = append(p.errs, err)
	}
	close(p.cond)
	p.cond = make(chan struct{})
}

func (p *polls) snapshot() (map[string]int, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(map[string]int, len(p.ok))
	for k, v := range p.ok {
		c[k] = v
	}
	return c, p.cond
}

// waitFresh waits until every target has finished at least two successful
// polls after the call, so at least one of them read the API after it.
func (p *polls) waitFresh(t testing.TB, targets []periskope.Target) {
	t.Helper()
	base, _ := p.snapshot()
	deadline := time.After(30 * time.Second)
	for {
		now, changed := p.snapshot()
		done := true
		for _, tg := range targets {
			if now[tg.String()] < base[tg.String()]+2 {
				done = false
			}
		}
		if done {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("targets did not poll twice within 30s: before %v, now %v, errors %v", base, now, p.errs)
		}
	}
}

// replica is one running worker with its own client, publisher and store,
// as a separate process would have.
type replica struct {
	cancel context.CancelFunc
	done   chan error
	polls  *polls
}

type replicaOpts struct {
	emitBaseline bool
	// afterPublish runs between publish and commit; crash stops the
	// replica as if its process died.
	afterPublish func(key string, crash func()) error
	logger       *zap.Logger
	polls        *polls // shared by restarted replicas; a new one if nil
}

func (e *env) start(targets []periskope.Target, o replicaOpts) *replica {
	e.t.Helper()
	return e.startRig(targets, rigOpts{
		maxBody:       periskope.DefaultMaxBodyBytes,
		commitTimeout: 10 * time.Second, // the worker's default
		emitBaseline:  o.emitBaseline,
		logger:        o.logger,
		afterPublish:  o.afterPublish,
		polls:         o.polls,
	}).replica
}

// stop cancels the worker and waits for it to return.
func (r *replica) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("worker.Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop within 30s")
	}
}

// rawPayloads maps an event id to its message payload as the stream holds
// it, recorded by streamEvents for checkCloudEvent's schema validation.
var rawPayloads sync.Map

// streamMsg is an event of the stream with the time the stream stored it.
type streamMsg struct {
	ev     events.Event
	stored time.Time
}

// streamMsgs returns every event the stream holds, in stream order, and
// checks each message's Nats-Msg-Id against its event id.
func (e *env) streamMsgs(t testing.TB) []streamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []streamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("stream message %d: %v", seq, err)
		}
		if got := m.Header.Get(events.HeaderMsgID); got != ev.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, event id %q", seq, got, ev.ID)
		}
		rawPayloads.Store(ev.ID, m.Data)
		out = append(out, streamMsg{ev, m.Time})
	}
	return out
}

// streamEvents returns every event the stream holds, in stream order.
func (e *env) streamEvents(t testing.TB) []events.Event {
	t.Helper()
	msgs := e.streamMsgs(t)
	out := make([]events.Event, len(msgs))
	for i, m := range msgs {
		out[i] = m.ev
	}
	return out
}

// transition is what the tests expect to see once in the stream.
type transition struct {
	phone, queueID, from, to string
	attempts                 int
}

func (tr transition) String() string {
	return fmt.Sprintf("%s/%s %q→%q #%d", tr.phone, tr.queueID, tr.from, tr.to, tr.attempts)
}

func asTransition(ev events.Event) transition {
	return transition{ev.Data.Phone, ev.Data.QueueID, ev.Data.PreviousStatus, ev.Data.Status, ev.Data.Attempts}
}

// checkStream asserts the stream holds exactly want, each once, in per-job
// order, with valid CloudEvents attributes and data that matches the job.
func checkStream(t *testing.T, got []events.Event, want []transition, api *periskopetest.Server) {
	t.Helper()
	ids := map[string]bool{}
	gotByJob := map[string][]transition{}
	for _, ev := range got {
		if ids[ev.ID] {
			t.Errorf("event id %s twice in the stream (%v)", ev.ID, asTransition(ev))
		}
		ids[ev.ID] = true
		checkCloudEvent(t, ev)
		key := ev.Data.Phone + "/" + ev.Data.QueueID
		gotByJob[key] = append(gotByJob[key], asTransition(ev))
	}
	wantByJob := map[string][]transition{}
	for _, tr := range want {
		key := tr.phone + "/" + tr.queueID
		wantByJob[key] = append(wantByJob[key], tr)
	}
	for key, w := range wantByJob {
		g := gotByJob[key]
		if fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("job %s:\n got  %v\n want %v", key, g, w)
		}
	}
	for key, g := range gotByJob {
		if _, ok := wantByJob[key]; !ok {
			t.Errorf("unexpected events for job %s: %v", key, g)
		}
	}
	if len(got) != len(want) {
		t.Errorf("stream holds %d events, want %d", len(got), len(want))
	}
}

func checkCloudEvent(t *testing.T, ev events.Event) {
	t.Helper()
	if err := ev.Validate(); err != nil {
		t.Errorf("event %s: %v", ev.ID, err)
	}
	// The payload as published (or, for an event that did not come from
	// streamEvents, as Event encodes) satisfies the JSON Schema and uses no
	// member the schema does not describe: renaming, dropping or adding a
	// field in code without changing the contract fails here.
	payload, recorded := rawPayloads.Load(ev.ID)
	raw, _ := payload.([]byte)
	if !recorded {
		var err error
		if raw, err = json.Marshal(ev); err != nil {
			t.Errorf("event %s: encode: %v", ev.ID, err)
			return
		}
	}
	if err := events.ValidatePayload(raw); err != nil {
		t.Errorf("event %s breaks the schema: %v\n%s", ev.ID, err, raw)
	}
	if extra := undocumented(t, raw); len(extra) > 0 {
		t.Errorf("event %s carries members the schema does not describe: %v", ev.ID, extra)
	}
	if ev.DataContentType != "application/json" || ev.SpecVersion != "1.0" || ev.Type != "queue.job.status_changed" {
		t.Errorf("event %s attributes: %+v", ev.ID, ev)
	}
	if ev.Time.IsZero() || !ev.Time.Equal(ev.Data.ObservedAt) {
		t.Errorf("event %s: time %v, observed_at %v", ev.ID, ev.Time, ev.Data.ObservedAt)
	}
	// data.job is the item exactly as the API returned it.
	var job struct {
		QueueID           string            `json:"queue_id"`
		UniqueID          string            `json:"unique_id"`
		MessageID         string            `json:"message_id"`
		ChatID            string            `json:"chat_id"`
		Status            string            `json:"status"`
		StatusDescription string            `json:"status_description"`
		Timeline          map[string]string `json:"timeline"`
		Attempts          int               `json:"attempts"`
	}
	if err := json.Unmarshal(ev.Data.Job, &job); err != nil {
		t.Errorf("event %s: data.job: %v", ev.ID, err)
		return
	}
	if job.QueueID != ev.Data.QueueID || job.Status != ev.Data.Status || job.Attempts != ev.Data.Attempts ||
		job.ChatID != ev.Data.ChatID || job.UniqueID != ev.Data.UniqueID || job.MessageID != ev.Data.MessageID ||
		job.StatusDescription != ev.Data.StatusDescription {
		t.Errorf("event %s: data %+v does not match data.job %s", ev.ID, asTransition(ev), ev.Data.Job)
	}
	for k, v := range job.Timeline {
		ts, ok := ev.Data.Timeline[k]
		if want, err := time.Parse(time.RFC3339Nano, v); !ok || err != nil || !ts.Equal(want) {
			t.Errorf("event %s: timeline[%s] = %v, job has %q", ev.ID, k, ts, v)
		}
	}
}

// schemaMembers returns the members events.Schema describes: its
// "properties" and those of its data.
var schemaMembers = sync.OnceValues(func() (schemaProps, error) {
	var s schemaProps
	if err := json.Unmarshal(events.Schema, &s); err != nil {
		return s, err
	}
	err := json.Unmarshal(s.Properties["data"], &s.Data)
	return s, err
})

type schemaProps struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Data       struct {
		Properties map[string]json.RawMessage `json:"properties"`
	} `json:"-"`
}

// undocumented lists the members of an event payload that the schema does
// not describe (it allows them, for the contract to grow, but what
// queuewatch itself sends must be documented).
func undocumented(t *testing.T, raw []byte) []string {
	t.Helper()
	schema, err := schemaMembers()
	if err != nil {
		t.Fatalf("events.Schema: %v", err)
	}
	envelope, data := schema.Properties, schema.Data.Properties
	var ev map[string]json.RawMessage
	var d map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ev); err != nil {
		return []string{"(not a JSON object)"}
	}
	_ = json.Unmarshal(ev["data"], &d)
	var extra []string
	for k := range ev {
		if _, ok := envelope[k]; !ok {
			extra = append(extra, k)
		}
	}
	for k := range d {
		if _, ok := data[k]; !ok {
			extra = append(extra, "data."+k)
		}
	}
	return extra
}
