package worker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

// stage is one step of a job's scripted life.
type stage struct {
	status   string
	attempts int
}

var (
	happyPath = []stage{{"scheduled", 1}, {"queued", 1}, {"sending", 1}, {"sent", 1}}
	retryPath = []stage{{"scheduled", 1}, {"queued", 1}, {"sending", 1}, {"failed", 1}, {"queued", 2}, {"sending", 2}, {"sent", 2}}
)

// scripted is a job walking its path on the fake API.
type scripted struct {
	phone string
	job   periskopetest.Job
	path  []stage
	pos   int
	// seenFrom is the first stage the worker sees: 0 for baseline jobs (no
	// event for it), -1 for jobs added after the baseline (their first stage
	// is an event with no previous status).
	seenFrom int
}

// workload is the scripted traffic of a test and the transitions it must
// produce.
type workload struct {
	api    *periskopetest.Server
	phones []string
	jobs   []*scripted
	step   int
}

func newWorkload(api *periskopetest.Server, phones []string, perPhone int) *workload {
	w := &workload{api: api, phones: phones}
	for _, p := range phones {
		for i := range perPhone {
			w.add(p, i, 0)
		}
	}
	return w
}

// add puts a new job on the API; seenFrom 0 means it exists before the
// baseline, -1 that the worker meets it after.
func (w *workload) add(phone string, i, seenFrom int) {
	path := happyPath
	if i%4 == 3 {
		path = retryPath
	}
	n := len(w.jobs)
	s := &scripted{phone: phone, path: path, seenFrom: seenFrom, job: periskopetest.Job{
		QueueID:     fmt.Sprintf("5df4cb6d-9f2b-46b6-936e-%012d", n),
		UniqueID:    fmt.Sprintf("3EB0A0A8F90A%010d", n),
		ChatID:      fmt.Sprintf("91%010d@c.us", 8824240000+n),
		PerformedBy: "api",
		Message:     map[string]any{"body": fmt.Sprintf("hello %d", n), "type": "chat"},
		Timeline:    map[string]string{},
	}}
	w.jobs = append(w.jobs, s)
	w.apply(s)
}

// apply writes a job's current stage to the fake API.
func (w *workload) apply(s *scripted) {
	st := s.path[s.pos]
	j := s.job
	j.Status, j.Attempts = st.status, st.attempts
	j.StatusDescription = "Job is " + st.status + "."
	ts := time.Date(2026, 4, 1, 14, 0, 0, 0, time.UTC).Add(time.Duration(w.step) * time.Second).Format("2006-01-02T15:04:05.000Z07:00")
	tl := make(map[string]string, len(j.Timeline)+1)
	for k, v := range j.Timeline {
		tl[k] = v
	}
	tl[st.status+"_at"] = ts
	j.Timeline = tl
	if st.status == "sent" {
		j.MessageID = "true_" + j.ChatID + "_" + j.UniqueID
	}
	s.job = j
	w.api.Upsert(s.phone, j)
}

// advance moves some jobs one stage (each job moves on most steps, at a
// rhythm of its own) and reports whether any job is not yet at its end.
func (w *workload) advance() bool {
	w.step++
	more := false
	for i, s := range w.jobs {
		if s.pos+1 < len(s.path) && (i+w.step)%3 != 0 {
			s.pos++
			w.apply(s)
		}
		if s.pos+1 < len(s.path) {
			more = true
		}
	}
	return more
}

func (w *workload) targets() []periskope.Target {
	ts := make([]periskope.Target, len(w.phones))
	for i, p := range w.phones {
		ts[i] = periskope.Target{Phone: p}
	}
	return ts
}

// want lists the transitions the stream must hold once every job reached
// the end of its path and every stage was observed.
func (w *workload) want() []transition {
	var out []transition
	for _, s := range w.jobs {
		from := ""
		for i := range s.path {
			if i > s.seenFrom {
				out = append(out, transition{s.phone, s.job.QueueID, from, s.path[i].status, s.path[i].attempts})
			}
			from = s.path[i].status
		}
	}
	return out
}

var phones = []string{"918527184400", "919876543210", "phone-7c1e2a9b"}

// runWorkload drives a workload to its end: baseline first, then new jobs,
// stale reads every third step, and a fresh observation after every step.
func runWorkload(t *testing.T, e *env, w *workload, waitFresh func()) {
	t.Helper()
	waitFresh() // baseline recorded
	for i, p := range w.phones {
		for k := range 10 {
			w.add(p, 100+i*10+k, -1)
		}
	}
	waitFresh() // new jobs seen
	for more := true; more; {
		more = w.advance()
		waitFresh()
		if w.step%3 == 0 {
			// Two stale answers per phone, then fresh ones again: one
			// wait lets the stale ones be served, the next sees fresh.
			for _, p := range w.phones {
				e.api.ServeStale(p, 2)
			}
			waitFresh()
			waitFresh()
		}
	}
	waitFresh()
}

func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(lockedWriter{&logMu, &logs}), zap.DebugLevel))

	w := newWorkload(e.api, phones, 40)
	r := e.start(w.targets(), replicaOpts{logger: logger})
	runWorkload(t, e, w, func() { r.polls.waitFresh(t, w.targets()) })
	r.stop(t)

	want := w.want()
	got := e.streamEvents(t)
	checkStream(t, got, want, e.api)
	t.Logf("checked %d transitions of %d jobs on %d phones", len(want), len(w.jobs), len(phones))
	if len(want) < 3*40*3 {
		t.Fatalf("workload too small: %d transitions", len(want))
	}
	for _, req := range e.api.Requests() {
		if !req.AuthOK {
			t.Errorf("request without valid auth: %+v", req)
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), testKey) {
		t.Error("the API key appears in the logs")
	}
	if !strings.Contains(logs.String(), "ignored a stale read") {
		t.Error("no stale read was ignored: the workload did not exercise stale reads")
	}
	// Every line about a target names it with the phone masked, and no line
	// holds a whole phone number.
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if _, ok := fields["target"]; ok {
			if p, _ := fields["phone"].(string); !strings.HasPrefix(p, "****") {
				t.Errorf("log line about a target without a masked phone: %s", line)
			}
		}
		for _, p := range phones {
			if strings.Contains(line, p) {
				t.Errorf("log line holds phone %s: %s", p, line)
			}
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestCrashBetweenPublishAndCommit kills the pipeline right after an event
// is acknowledged and before its snapshot is committed, again and again,
// and starts a fresh one (new client, publisher, store and cache) each time:
// every transition still lands in the stream exactly once.
func TestCrashBetweenPublishAndCommit(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 12)
	shared := newPolls()
	var published, crashes atomic.Int32
	errCrash := errors.New("simulated crash between publish and commit")

	stopping := make(chan struct{})
	supervised := make(chan struct{})
	go func() {
		defer close(supervised)
		for {
			r := e.start(w.targets(), replicaOpts{polls: shared, afterPublish: func(_ string, crash func()) error {
				if published.Add(1)%7 != 0 {
					return nil
				}
				crashes.Add(1)
				crash() // the process dies: nothing else starts
				return errCrash
			}})
			select {
			case <-r.done: // crashed: start another
			case <-stopping:
				r.stop(t)
				return
			}
		}
	}()
	runWorkload(t, e, w, func() { shared.waitFresh(t, w.targets()) })
	close(stopping)
	<-supervised

	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	if crashes.Load() < 10 {
		t.Fatalf("only %d crashes happened; the test did not exercise the fault", crashes.Load())
	}
	if int(published.Load()) <= len(want) {
		t.Errorf("%d publishes for %d transitions: crashed events were never re-published", published.Load(), len(want))
	}
	t.Logf("checked %d transitions across %d crashes between publish and commit (%d publishes, repeats dropped by the stream)", len(want), crashes.Load(), published.Load())
}

// TestTwoReplicas runs two workers on the same phones, API and NATS at the
// same time: every transition is in the stream once.
func TestTwoReplicas(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 20)
	a := e.start(w.targets(), replicaOpts{})
	b := e.start(w.targets(), replicaOpts{})
	both := func() {
		a.polls.waitFresh(t, w.targets())
		b.polls.waitFresh(t, w.targets())
	}
	both()
	for i, p := range w.phones {
		for k := range 5 {
			w.add(p, 100+i*10+k, -1)
		}
	}
	both()
	for more := true; more; {
		more = w.advance()
		both()
	}
	a.stop(t)
	b.stop(t)
	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	t.Logf("checked %d transitions with two replicas", len(want))
}
