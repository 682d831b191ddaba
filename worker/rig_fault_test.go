package worker_test

// Helpers of the fault-injection tests (fault_test.go, *_fault_test.go):
// a worker started with the options a fault needs, per-target poll
// outcomes with times, a front that resets connections, and readers of the
// stream and the bucket.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/queuewatch/queuewatch/diff"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
	"github.com/queuewatch/queuewatch/publisher"
	"github.com/queuewatch/queuewatch/snapshot"
	"github.com/queuewatch/queuewatch/worker"
)

// rigOpts are the knobs of a test's worker (e.start passes a few of them).
type rigOpts struct {
	baseURL      string        // API base URL (e.api.URL)
	timeout      time.Duration // request timeout (5s)
	maxBody      int64         // response size cap (64 KiB)
	pollInterval time.Duration // 10ms
	// backoff and authBackoff (constant 10ms each).
	backoff, authBackoff func() backoff.BackOff
	commitTimeout        time.Duration // 5s
	emitBaseline         bool
	logger               *zap.Logger
	// afterPublish runs between publish and commit; crash stops the
	// worker as if its process died.
	afterPublish func(key string, crash func()) error
	polls        *polls // shared across restarts; new if nil
}

// rig is a running worker with its poll outcomes.
type rig struct {
	*replica
	w   *worker.Worker
	out *outcomes
}

const rigMaxBody = 64 << 10

func (e *env) startRig(targets []periskope.Target, o rigOpts) *rig {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := periskope.NewClient(periskope.Options{
		BaseURL:      cmp.Or(o.baseURL, e.api.URL),
		APIKey:       testKey,
		Timeout:      cmp.Or(o.timeout, 5*time.Second),
		MaxBodyBytes: cmp.Or(o.maxBody, rigMaxBody),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	pub := publisher.New(e.js, publisher.Config{DuplicateWindow: 10 * time.Minute})
	if err := pub.EnsureStream(ctx); err != nil {
		e.t.Fatal(err)
	}
	store, err := snapshot.Open(ctx, e.js, snapshot.Config{TTL: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	fast := func() backoff.BackOff { return backoff.NewConstantBackOff(10 * time.Millisecond) }
	if o.backoff == nil {
		o.backoff = fast
	}
	if o.authBackoff == nil {
		o.authBackoff = fast
	}
	r := &rig{replica: &replica{cancel: cancel, done: make(chan error, 1), polls: o.polls}, out: newOutcomes()}
	if r.polls == nil {
		r.polls = newPolls()
	}
	var afterPublish func(string) error
	if o.afterPublish != nil {
		afterPublish = func(key string) error { return o.afterPublish(key, cancel) }
	}
	r.w = worker.New(client, pub, store, targets, worker.Options{
		PollInterval:  cmp.Or(o.pollInterval, 10*time.Millisecond),
		EmitBaseline:  o.emitBaseline,
		SnapshotTTL:   time.Hour,
		CommitTimeout: cmp.Or(o.commitTimeout, 5*time.Second),
		Backoff:       o.backoff,
		AuthBackoff:   o.authBackoff,
		Logger:        cmp.Or(o.logger, zap.NewNop()),
		AfterPoll: func(t periskope.Target, err error) {
			r.out.record(t, err)
			r.polls.record(t, err)
		},
		AfterPublish: afterPublish,
	})
	var wg sync.WaitGroup
	wg.Go(func() { store.Watch(ctx, 50*time.Millisecond, nil) })
	go func() {
		err := r.w.Run(ctx)
		wg.Wait()
		r.done <- err
	}()
	return r
}

// alive fails the test if the worker returned.
func (r *rig) alive(t testing.TB) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		t.Fatalf("the worker stopped on its own: %v", err)
	default:
	}
}

// outcome is one finished poll.
type outcome struct {
	at  time.Time
	err error
}

// outcomes records every finished poll per target.
type outcomes struct {
	mu sync.Mutex
	by map[string][]outcome
}

func newOutcomes() *outcomes { return &outcomes{by: map[string][]outcome{}} }

func (o *outcomes) record(t periskope.Target, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.by[t.String()] = append(o.by[t.String()], outcome{time.Now(), err})
}

// of returns the polls of target (phone-wide) finished in [from, to].
func (o *outcomes) of(phone string, from, to time.Time) []outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []outcome
	for _, p := range o.by[phone] {
		if !p.at.Before(from) && !p.at.After(to) {
			out = append(out, p)
		}
	}
	return out
}

// count returns how many polls of phone finished ok and failed so far.
func (o *outcomes) count(phone string) (ok, failed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range o.by[phone] {
		if p.err == nil {
			ok++
		} else {
			failed++
		}
	}
	return ok, failed
}

// failedSince returns a function counting the polls of phones that failed
// after this call.
func (o *outcomes) failedSince(phones []string) func() int {
	total := func() int {
		n := 0
		for _, p := range phones {
			_, f := o.count(p)
			n += f
		}
		return n
	}
	before := total()
	return func() int { return total() - before }
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kvState returns the revision of every key of phone in the bucket (its
// jobs and its baseline marker).
func (e *env) kvState(t testing.TB, phone string) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, snapshot.DefaultBucket)
	if err != nil {
		t.Errorf("bucket: %v", err)
		return nil
	}
	out := map[string]uint64{}
	keys, err := kv.ListKeysFiltered(ctx, phone+".*", "_baseline."+phone+".>")
	if err != nil {
		t.Errorf("list keys: %v", err)
		return nil
	}
	for k := range keys.Keys() {
		en, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Errorf("get %s: %v", k, err)
			continue
		}
		out[k] = en.Revision()
	}
	return out
}

// checkCommitsPublished asserts that no snapshot in the bucket is ahead of
// the stream: every job's stored (status, attempts) was announced by an
// event the stream holds, unless it is the silent state of a baseline job.
// A commit without its event would mean a transition lost for good.
func checkCommitsPublished(t *testing.T, e *env, w *workload) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := map[string]bool{}
	for _, m := range e.streamMsgs(t) {
		ids[m.ev.ID] = true
	}
	kv, err := e.js.KeyValue(ctx, snapshot.DefaultBucket)
	if err != nil {
		t.Fatalf("bucket: %v", err)
	}
	checked := 0
	for _, s := range w.jobs {
		en, err := kv.Get(ctx, snapshot.JobKey(s.phone, s.job.QueueID))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		var rec snapshot.Record
		if err := json.Unmarshal(en.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		if s.seenFrom == 0 && rec.Status == s.path[0].status && rec.Attempts == s.path[0].attempts {
			continue // the silent baseline
		}
		checked++
		if !ids[diff.EventID(s.phone, s.job.QueueID, rec.Status, rec.Attempts)] {
			t.Errorf("job %s/%s: snapshot committed at %s #%d without its event in the stream", s.phone, s.job.QueueID, rec.Status, rec.Attempts)
		}
	}
	if checked == 0 {
		t.Errorf("no committed snapshot to check")
	}
}

// front stands between the worker and the fake API: every request goes on
// to the fake (which logs it and may intercept it), and an answer the fake
// marks with the header X-Fault is turned into a broken connection:
// "reset" closes it with an RST before any byte of the answer, "reset-body"
// sends the headers and half the body first.
type front struct {
	srv *httptest.Server
	to  string
	hc  *http.Client
}

func newFront(t testing.TB, api *periskopetest.Server) *front {
	f := &front{to: strings.TrimSuffix(api.URL, "/v1"), hc: &http.Client{Transport: &http.Transport{}}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.srv.Close()
		f.hc.CloseIdleConnections()
	})
	return f
}

// URL is the base URL to give the client.
func (f *front) URL() string { return f.srv.URL + "/v1" }

func (f *front) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req, err := http.NewRequestWithContext(r.Context(), r.Method, f.to+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := f.hc.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	switch mode := resp.Header.Get("X-Fault"); mode {
	case "reset", "reset-body":
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if mode == "reset-body" {
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(answer))
			buf.Write(answer[:len(answer)/2])
			buf.Flush()
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close with an RST, not a FIN
		}
		conn.Close()
	default:
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(answer)
	}
}
