package worker_test

// Fault injection, API side: one target's answers go wrong while the other
// targets are served normally. Each scenario checks that the worker
// survives, that the faulty target's failed polls commit nothing and
// publish nothing, that its retries are paced by the backoff and never
// sooner than Retry-After (read from the fake API's request log), that the
// other targets keep polling meanwhile, and, once the workload has run to
// its end, that the stream holds every transition exactly once, in order.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

// The retry policy of the API fault tests: exponential without jitter, so
// the wait after the i-th failure in a row is known exactly.
const (
	faultBackoffFirst = 40 * time.Millisecond
	faultBackoffMax   = 320 * time.Millisecond
	// pacingSlack bounds how much later than its backoff a retry may come
	// (scheduling on a busy machine, the request itself).
	pacingSlack = 3 * time.Second
)

func faultBackoff() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(faultBackoffFirst),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0),
		backoff.WithMaxInterval(faultBackoffMax),
		backoff.WithMaxElapsedTime(0),
	)
}

// faultWait is the backoff after the i-th failure in a row (from 0).
func faultWait(i int) time.Duration {
	d := faultBackoffFirst
	for range i {
		d = min(2*d, faultBackoffMax)
	}
	return d
}

// faultKind says what a fault does to the faulty target's polls.
type faultKind int

const (
	// failing: the poll fails; nothing may be committed or published, and
	// retries follow the backoff.
	failing faultKind = iota
	// inert: the poll succeeds but shows nothing new (null, stale reads);
	// nothing may be committed or published.
	inert
	// odd: the poll succeeds on an odd but usable answer; it must succeed
	// every time, and what it publishes must be right.
	odd
)

// apiFault is one scenario.
type apiFault struct {
	name string
	kind faultKind
	n    int // faulted answers in a row (4)
	// answer builds the faulted answer; cur is the body the fake would send.
	answer func(fr *faultRun, req periskopetest.Request, cur []byte) (handled bool, status int, h http.Header, body []byte)
	// notBefore, if set, is the earliest time the next request may come
	// after a faulted answer with header h (Retry-After).
	notBefore func(req periskopetest.Request, h http.Header) time.Time
	viaFront  bool          // resets need the front
	timeout   time.Duration // client request timeout (5s)
	hold      time.Duration // how long a faulted request lasts at least, as the fake sees it (timeouts)
}

// faultRun is the state of one scenario's fault window.
type faultRun struct {
	t      *testing.T
	e      *env
	f      apiFault
	phone  string
	before map[string]periskopetest.Job // the phone's jobs before the window's step

	mu       sync.Mutex
	faulted  []faultedReq
	normalAt time.Time           // the first request answered normally again
	kv       []map[string]uint64 // bucket state at each of the phone's requests in the window
	release  chan struct{}       // closed at the end: hanging answers return
}

type faultedReq struct {
	at, notBefore time.Time
}

func (fr *faultRun) started() bool {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return len(fr.faulted) > 0
}

func (fr *faultRun) ended() bool {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return !fr.normalAt.IsZero()
}

func (fr *faultRun) intercept(req periskopetest.Request) (bool, int, http.Header, []byte) {
	if req.Phone != fr.phone {
		return false, 0, nil, nil
	}
	if fr.ended() {
		return false, 0, nil, nil
	}
	// Every earlier poll of the phone has finished: what the bucket holds
	// now is all they committed.
	state := fr.e.kvState(fr.t, fr.phone)
	fr.mu.Lock()
	i := len(fr.faulted)
	fr.kv = append(fr.kv, state)
	if i == fr.f.n {
		fr.normalAt = req.Time
		fr.mu.Unlock()
		return false, 0, nil, nil
	}
	// Counted before answering: a hanging answer may outlast the next
	// request.
	fr.faulted = append(fr.faulted, faultedReq{at: req.Time})
	fr.mu.Unlock()
	cur, err := json.Marshal(fr.e.api.Jobs(fr.phone))
	if err != nil {
		fr.t.Errorf("encode jobs: %v", err)
	}
	handled, status, h, body := fr.f.answer(fr, req, cur)
	if fr.f.notBefore != nil {
		nb := fr.f.notBefore(req, h)
		fr.mu.Lock()
		fr.faulted[i].notBefore = nb
		fr.mu.Unlock()
	}
	return handled, status, h, body
}

// hang holds a request until the client gave up (or the scenario ends).
func (fr *faultRun) hang() {
	select {
	case <-fr.release:
	case <-time.After(2*fr.f.timeout + time.Second):
	}
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

const htmlPage = `<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><p>upstream unavailable</p></body></html>`

func status(code int, h http.Header, body string) func(*faultRun, periskopetest.Request, []byte) (bool, int, http.Header, []byte) {
	return func(*faultRun, periskopetest.Request, []byte) (bool, int, http.Header, []byte) {
		return true, code, h, []byte(body)
	}
}

// afterSeconds reads a Retry-After in seconds.
func afterSeconds(req periskopetest.Request, h http.Header) time.Time {
	n, _ := strconv.Atoi(h.Get("Retry-After"))
	return req.Time.Add(time.Duration(n) * time.Second)
}

// afterDate reads a Retry-After HTTP-date.
func afterDate(_ periskopetest.Request, h http.Header) time.Time {
	at, _ := http.ParseTime(h.Get("Retry-After"))
	return at
}

var apiFaults = []apiFault{
	{name: "500 burst", answer: status(500, nil, `{"message":"internal error"}`)},
	{name: "502 burst with an HTML page", answer: status(502, header("Content-Type", "text/html"), htmlPage)},
	{name: "503 burst with Retry-After", n: 3, answer: status(503, header("Retry-After", "1"), `{"message":"maintenance"}`), notBefore: afterSeconds},
	{name: "429 with Retry-After seconds", n: 3, answer: status(429, header("Retry-After", "1"), `{"message":"slow down"}`), notBefore: afterSeconds},
	{name: "429 with Retry-After date", n: 2, notBefore: afterDate,
		answer: func(_ *faultRun, req periskopetest.Request, _ []byte) (bool, int, http.Header, []byte) {
			// Dates have whole seconds: this is 1 to 2 seconds away.
			at := req.Time.Add(2 * time.Second).UTC().Format(http.TimeFormat)
			return true, 429, header("Retry-After", at), []byte(`{"message":"slow down"}`)
		}},
	// The client's timer starts before the request reaches the fake (whose
	// log has arrival times), so a timed-out request lasts a little less
	// than the timeout in that log.
	{name: "timeout", timeout: time.Second, hold: time.Second - 50*time.Millisecond,
		answer: func(fr *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			fr.hang()
			return true, 200, nil, cur
		}},
	{name: "connection reset before the answer", viaFront: true,
		answer: func(_ *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			return true, 200, header("X-Fault", "reset"), cur
		}},
	{name: "connection reset in the body", viaFront: true,
		answer: func(_ *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			return true, 200, header("X-Fault", "reset-body"), cur
		}},
	{name: "malformed JSON",
		answer: func(_ *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			return true, 200, nil, bytes.Replace(cur, []byte(`"status":`), []byte(`"status"=`), 1)
		}},
	{name: "truncated JSON",
		answer: func(_ *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			return true, 200, nil, cur[:len(cur)*2/3]
		}},
	{name: "body cut short of its Content-Length",
		answer: func(_ *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			return true, 200, header("Content-Length", strconv.Itoa(len(cur))), cur[:len(cur)/2]
		}},
	{name: "body over the size cap",
		answer: func(_ *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			// Valid JSON, and the current jobs: only the cap stops them.
			pad := bytes.Repeat([]byte(" "), rigMaxBody)
			return true, 200, nil, append(append([]byte("["), pad...), cur[1:]...)
		}},
	{name: "HTML page with status 200",
		answer: status(200, header("Content-Type", "text/html; charset=utf-8"), htmlPage)},
	{name: "null", kind: inert, answer: status(200, nil, "null")},
	{name: "stale reads", kind: inert,
		answer: func(fr *faultRun, _ periskopetest.Request, _ []byte) (bool, int, http.Header, []byte) {
			fr.e.api.ServeStale(fr.phone, 1) // this very answer
			return false, 0, nil, nil
		}},
	{name: "object wrapper", kind: odd,
		answer: func(_ *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			return true, 200, nil, fmt.Appendf(nil, `{"data":%s,"total":%d,"page":1}`, cur, bytes.Count(cur, []byte(`"queue_id"`)))
		}},
	{name: "same queue_id twice", kind: odd,
		answer: func(fr *faultRun, _ periskopetest.Request, _ []byte) (bool, int, http.Header, []byte) {
			// Each job twice: its version before the step first, or after,
			// or the same version twice.
			var items []periskopetest.Job
			for i, j := range fr.e.api.Jobs(fr.phone) {
				old, ok := fr.before[j.QueueID]
				if !ok {
					old = j
				}
				switch i % 3 {
				case 0:
					items = append(items, old, j)
				case 1:
					items = append(items, j, old)
				default:
					items = append(items, j, j)
				}
			}
			body, _ := json.Marshal(items)
			return true, 200, nil, body
		}},
	{name: "missing fields", kind: odd,
		answer: func(fr *faultRun, _ periskopetest.Request, cur []byte) (bool, int, http.Header, []byte) {
			var items []map[string]any
			if err := json.Unmarshal(cur, &items); err != nil {
				fr.t.Errorf("decode jobs: %v", err)
			}
			for i, it := range items {
				switch i {
				case 0:
					delete(it, "queue_id") // unusable: skipped
				case 1:
					delete(it, "status") // no status to announce: skipped
				case 2:
					delete(it, "attempts") // reads as attempt 0: stale
				case 3:
					for _, k := range []string{"timeline", "chat_id", "unique_id", "status_description", "message", "performed_by"} {
						delete(it, k)
					}
				case 4:
					it["status"] = nil
				}
			}
			body, _ := json.Marshal(items)
			return true, 200, nil, body
		}},
}

// faultyPhone is the target whose answers go wrong.
var faultyPhone = phones[1]

func TestFaultAPI(t *testing.T) {
	var totals struct {
		scenarios, faulted, transitions int
	}
	for _, f := range apiFaults {
		t.Run(f.name, func(t *testing.T) {
			n, tr := runAPIFault(t, f)
			totals.scenarios++
			totals.faulted += n
			totals.transitions += tr
		})
	}
	t.Logf("FIGURES api-faults: %d scenarios, %d faulted answers, %d transitions checked, lost 0, duplicated 0",
		totals.scenarios, totals.faulted, totals.transitions)
}

// runAPIFault runs one scenario and returns how many answers it faulted
// and how many transitions it checked.
func runAPIFault(t *testing.T, f apiFault) (int, int) {
	if f.n == 0 {
		f.n = 4
	}
	if f.timeout == 0 {
		f.timeout = 5 * time.Second
	}
	e := newEnv(t)
	w := newWorkload(e.api, phones, 4)
	targets := w.targets()
	o := rigOpts{backoff: faultBackoff, timeout: f.timeout}
	if f.viaFront {
		o.baseURL = newFront(t, e.api).URL()
	}
	r := e.startRig(targets, o)
	fresh := func() { r.polls.waitFresh(t, targets) }
	fresh() // baseline
	for i, p := range phones {
		for k := range 2 {
			w.add(p, 100+i*10+k, -1)
		}
	}
	fresh()
	w.advance()
	fresh()

	fr := &faultRun{t: t, e: e, f: f, phone: faultyPhone, before: map[string]periskopetest.Job{}, release: make(chan struct{})}
	for _, j := range e.api.Jobs(faultyPhone) {
		fr.before[j.QueueID] = j
	}
	e.api.Intercept(fr.intercept)
	eventually(t, 30*time.Second, "the first faulted answer", fr.started)
	// The step happens inside the window: from now on the faulty target's
	// answers hide changes a careless worker would commit.
	w.advance()
	eventually(t, 90*time.Second, "the fault window to end", fr.ended)
	e.api.Intercept(nil)
	close(fr.release)
	r.alive(t)
	fresh()

	fr.mu.Lock()
	faulted, normalAt, states := fr.faulted, fr.normalAt, fr.kv
	fr.mu.Unlock()
	windowStart := faulted[0].at

	// The faulty target's polls in the window ended as the kind says.
	polls := r.out.of(faultyPhone, windowStart, normalAt)
	for _, p := range polls {
		if (f.kind == failing) != (p.err != nil) {
			t.Errorf("a poll in the fault window ended with %v", p.err)
		}
	}
	if f.kind == failing && len(polls) < f.n-1 {
		t.Errorf("%d failed polls recorded in the window, want at least %d", len(polls), f.n-1)
	}

	// Nothing committed, nothing published by the window's polls.
	if f.kind != odd {
		for i, s := range states[1:] {
			if !maps.Equal(s, states[0]) {
				t.Errorf("the bucket changed during the fault window (at request %d):\n before %v\n after  %v", i+2, states[0], s)
			}
		}
		for _, m := range e.streamMsgs(t) {
			if m.ev.Data.Phone == faultyPhone && m.stored.After(windowStart) && m.stored.Before(normalAt) {
				t.Errorf("event published during the fault window: %v", asTransition(m.ev))
			}
		}
	}

	// Pacing, from the fake API's log: each retry waits its backoff (plus
	// what the faulted request itself took), and never less than the
	// Retry-After; nor much more.
	for i, fq := range faulted {
		next := normalAt
		if i+1 < len(faulted) {
			next = faulted[i+1].at
		}
		gap := next.Sub(fq.at)
		least := f.hold
		if f.kind == failing {
			least += faultWait(i)
		} else {
			least += 10 * time.Millisecond // the poll interval
		}
		if !fq.notBefore.IsZero() {
			if next.Before(fq.notBefore) {
				t.Errorf("retry %d came %v before the Retry-After allowed it", i+1, fq.notBefore.Sub(next))
			}
			least = max(least, fq.notBefore.Sub(fq.at))
		}
		if gap < least {
			t.Errorf("retry %d came %v after the faulted answer, want at least %v", i+1, gap, least)
		}
		if gap > least+pacingSlack {
			t.Errorf("retry %d came %v after the faulted answer, want about %v", i+1, gap, least)
		}
	}
	gaps := make([]string, 0, len(faulted))
	for i := range faulted {
		next := normalAt
		if i+1 < len(faulted) {
			next = faulted[i+1].at
		}
		gaps = append(gaps, next.Sub(faulted[i].at).Round(time.Millisecond).String())
	}

	// The other targets kept polling on their own schedule meanwhile.
	var others []string
	for _, p := range phones {
		if p == faultyPhone {
			continue
		}
		var times []time.Time
		for _, req := range e.api.Requests() {
			if req.Phone == p && !req.Time.Before(windowStart) && !req.Time.After(normalAt) {
				times = append(times, req.Time)
			}
		}
		// A window of failures lasts its backoffs, so the others poll many
		// times; one of quick odd answers may be as short as a few polls.
		if least := map[bool]int{true: 3, false: 1}[f.kind == failing]; len(times) < least {
			t.Errorf("target %s polled %d times during the %v fault window of another target", p, len(times), normalAt.Sub(windowStart))
		}
		maxGap := time.Duration(0)
		for i := 1; i < len(times); i++ {
			maxGap = max(maxGap, times[i].Sub(times[i-1]))
		}
		if f.hold > 0 && maxGap >= f.hold {
			t.Errorf("target %s waited %v between polls while another target's requests hung for %v", p, maxGap, f.hold)
		}
		others = append(others, fmt.Sprintf("%d polls (max gap %v)", len(times), maxGap.Round(time.Millisecond)))
	}

	// Then the workload runs to its end.
	for more := true; more; {
		more = w.advance()
		fresh()
	}
	r.stop(t)
	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	checkCommitsPublished(t, e, w)
	t.Logf("%d faulted answers, retries after %v; other targets meanwhile: %s; %d transitions checked",
		len(faulted), gaps, strings.Join(others, ", "), len(want))
	return len(faulted), len(want)
}

// unknownPath walks through statuses the API does not document.
var unknownPath = []stage{{"scheduled", 1}, {"waiting", 1}, {"queued", 1}, {"sending", 1}, {"on-hold", 1}, {"sent", 1}}

// TestFaultUnknownStatuses: one target's jobs pass through statuses
// queuewatch does not know. Each change is announced once, verbatim, in
// order; the target's polls never fail; the other targets are unaffected.
func TestFaultUnknownStatuses(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 4)
	odd := 0
	for _, s := range w.jobs {
		if s.phone == faultyPhone {
			s.path = unknownPath
			odd++
		}
	}
	targets := w.targets()
	r := e.startRig(targets, rigOpts{})
	fresh := func() { r.polls.waitFresh(t, targets) }
	fresh()
	for k := range 3 {
		w.add(faultyPhone, 200+k, -1)
		w.jobs[len(w.jobs)-1].path = unknownPath
		odd++
	}
	fresh()
	for more := true; more; {
		more = w.advance()
		fresh()
	}
	r.stop(t)
	if _, failed := r.out.count(faultyPhone); failed > 0 {
		t.Errorf("%d polls of the target with unknown statuses failed", failed)
	}
	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	t.Logf("%d jobs through unknown statuses; %d transitions checked", odd, len(want))
}

// TestFaultCredentialsRejected: 403 for one target, then 401 for all (the
// key was rotated). While rejected: the long auth backoff paces the
// retries, one log line per target when the state changes (not per poll),
// CredentialsRejected is true (what /readyz reports), the other targets go
// on. When the key works again: one recovery line, CredentialsRejected
// false, and the events flow exactly once.
func TestFaultCredentialsRejected(t *testing.T) {
	e := newEnv(t)
	w := newWorkload(e.api, phones, 4)
	targets := w.targets()
	core, logs := observer.New(zap.InfoLevel)
	authFirst := 200 * time.Millisecond
	authBackoff := func() backoff.BackOff {
		return backoff.NewExponentialBackOff(backoff.WithInitialInterval(authFirst), backoff.WithMultiplier(2),
			backoff.WithRandomizationFactor(0), backoff.WithMaxInterval(800*time.Millisecond), backoff.WithMaxElapsedTime(0))
	}
	authWait := func(i int) time.Duration { return min(authFirst<<i, 800*time.Millisecond) }
	r := e.startRig(targets, rigOpts{backoff: faultBackoff, authBackoff: authBackoff, logger: zap.New(core)})
	fresh := func() { r.polls.waitFresh(t, targets) }
	fresh()
	w.advance()
	fresh()
	if r.w.CredentialsRejected() {
		t.Fatal("CredentialsRejected before any rejection")
	}
	rejectedLines := func(phone string) int {
		n := 0
		for _, en := range logs.FilterMessageSnippet("rejected the credentials").All() {
			if phone == "" || en.ContextMap()["phone"] == "****"+phone[len(phone)-4:] {
				n++
			}
		}
		return n
	}
	recoveredLines := func() int { return logs.FilterMessage("polling recovered").Len() }

	// 403 for one target.
	var mu sync.Mutex
	var forbidden []time.Time
	e.api.Intercept(func(req periskopetest.Request) (bool, int, http.Header, []byte) {
		if req.Phone != faultyPhone {
			return false, 0, nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		forbidden = append(forbidden, req.Time)
		return true, 403, nil, []byte(`{"message":"forbidden"}`)
	})
	count403 := func() int { mu.Lock(); defer mu.Unlock(); return len(forbidden) }
	eventually(t, 30*time.Second, "the first 403", func() bool { return count403() >= 1 })
	eventually(t, 30*time.Second, "CredentialsRejected", r.w.CredentialsRejected)
	w.advance()
	eventually(t, 30*time.Second, "four 403s", func() bool { return count403() >= 4 })
	var others []periskope.Target
	for _, tg := range targets {
		if tg.Phone != faultyPhone {
			others = append(others, tg)
		}
	}
	r.polls.waitFresh(t, others) // the other targets go on
	if n := rejectedLines(faultyPhone); n != 1 {
		t.Errorf("the rejection of one target was logged %d times over %d polls, want once", n, count403())
	}
	if !r.w.CredentialsRejected() {
		t.Error("CredentialsRejected = false while a target is rejected")
	}
	e.api.Intercept(nil)
	eventually(t, 30*time.Second, "recovery of the rejected target", func() bool { return !r.w.CredentialsRejected() })
	fresh()
	mu.Lock()
	for i := 1; i < len(forbidden); i++ {
		if gap := forbidden[i].Sub(forbidden[i-1]); gap < authWait(i-1) || gap > authWait(i-1)+pacingSlack {
			t.Errorf("403 retry %d came after %v, want the auth backoff %v", i, gap, authWait(i-1))
		}
	}
	n403 := len(forbidden)
	mu.Unlock()
	if n := recoveredLines(); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}

	// 401 for everyone: the key was rotated.
	start401 := time.Now()
	e.api.SetAPIKey("sk-rotated-elsewhere")
	rejectedFor := func(p string) int {
		n := 0
		for _, req := range e.api.Requests() {
			if req.Phone == p && req.Time.After(start401) && !req.AuthOK {
				n++
			}
		}
		return n
	}
	eventually(t, 30*time.Second, "three 401s per target", func() bool {
		for _, p := range phones {
			if rejectedFor(p) < 3 {
				return false
			}
		}
		return true
	})
	if !r.w.CredentialsRejected() {
		t.Error("CredentialsRejected = false while the key is rejected")
	}
	w.advance()
	r.alive(t)
	for _, p := range phones {
		want := 1
		if p == faultyPhone {
			want = 2 // its 403 earlier, its 401 now
		}
		if n := rejectedLines(p); n != want {
			t.Errorf("target %s: rejection logged %d times, want %d", p, n, want)
		}
	}
	if n := logs.FilterMessageSnippet("poll failed").Len(); n != 0 {
		t.Errorf("a rejection was logged as an ordinary failure %d times", n)
	}
	e.api.SetAPIKey(testKey)
	eventually(t, 30*time.Second, "recovery", func() bool { return !r.w.CredentialsRejected() })
	fresh()
	if n := recoveredLines(); n != 1+len(phones) {
		t.Errorf("recovery logged %d times, want %d (once per target per recovery)", n, 1+len(phones))
	}
	for more := true; more; {
		more = w.advance()
		fresh()
	}
	r.stop(t)
	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	n401 := 0
	for _, p := range phones {
		n401 += rejectedFor(p)
	}
	t.Logf("FIGURES auth: %d answers 403 and %d answers 401, %d rejection lines, %d recovery lines; %d transitions checked, lost 0, duplicated 0",
		n403, n401, rejectedLines(""), recoveredLines(), len(want))
}
