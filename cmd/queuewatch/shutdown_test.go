package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/queuewatch/queuewatch/diff"
	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
	"github.com/queuewatch/queuewatch/publisher"
	"github.com/queuewatch/queuewatch/snapshot"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// churn keeps every job of some phones moving, one transition per job per
// round (queued → sending → failed → queued on the next attempt → …),
// until stop is closed; each round waits for the service to poll.
func churn(api *periskopetest.Server, phones []string, perPhone int, stop <-chan struct{}) (rounds int) {
	cycle := []string{"queued", "sending", "failed"}
	for {
		for _, p := range phones {
			jobs := make([]periskopetest.Job, perPhone)
			for i := range jobs {
				jobs[i] = periskopetest.Job{
					QueueID:     fmt.Sprintf("q-%s-%04d", p[len(p)-4:], i),
					UniqueID:    fmt.Sprintf("u-%04d", i),
					ChatID:      fmt.Sprintf("91%010d@c.us", i),
					PerformedBy: "api",
					Status:      cycle[(rounds+i)%len(cycle)],
					Attempts:    1 + (rounds+i)/len(cycle),
				}
				jobs[i].StatusDescription = "Job is " + jobs[i].Status + "."
			}
			api.SetJobs(p, jobs)
		}
		rounds++
		seen := len(api.Requests())
		for len(api.Requests()) < seen+len(phones) {
			select {
			case <-stop:
				return rounds
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// TestFaultSIGTERMDuringHeavyTraffic runs `queuewatch run` in this process
// against NATS and the fake API while hundreds of jobs change on every
// poll, and sends the process a real SIGTERM in the middle of it. The
// in-flight publish and commit of each poll loop finish (and nothing new
// starts), run exits 0 within the grace period, every snapshot in the bucket
// matches the last event of its job (no event without its commit, no commit
// without its event), and no goroutine is left behind.
func TestFaultSIGTERMDuringHeavyTraffic(t *testing.T) {
	ns := natstest.Run(t)
	api := periskopetest.NewServer(testKey)
	defer api.Close()
	phones := []string{"918527184400", "919876543210", "phone-7c1e2a9b"}
	const perPhone = 150
	const grace = 10 * time.Second
	port := freePort(t)
	proxy := newHoldProxy(t, ns.URL()) // the service talks to NATS through it
	defer proxy.Close()
	for k, v := range map[string]string{
		"QUEUEWATCH_API_KEY":        testKey,
		"QUEUEWATCH_API_URL":        api.URL,
		"QUEUEWATCH_PHONES":         phones[0] + "," + phones[1] + "," + phones[2],
		"QUEUEWATCH_NATS_URL":       proxy.URL(),
		"QUEUEWATCH_POLL_INTERVAL":  "10ms",
		"QUEUEWATCH_RATE_LIMIT":     "0",
		"QUEUEWATCH_EMIT_BASELINE":  "true",
		"QUEUEWATCH_SHUTDOWN_GRACE": grace.String(),
		"QUEUEWATCH_HTTP_ADDR":      fmt.Sprintf("127.0.0.1:%d", port),
		"QUEUEWATCH_LOG_LEVEL":      "info",
	} {
		t.Setenv(k, v)
	}
	_, js := ns.Connect(t)
	stored := func() int {
		s, err := js.Stream(context.Background(), events.Stream)
		if err != nil {
			return 0
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return 0
		}
		return int(info.State.Msgs)
	}

	// The stream and bucket exist already (as the service would make
	// them): their goroutines in the server are not the service's, nor is
	// anything else running before it starts.
	setup, cancelSetup := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelSetup()
	if err := publisher.New(js, publisher.Config{DuplicateWindow: 15 * time.Minute, MaxAge: 168 * time.Hour}).EnsureStream(setup); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Open(setup, js, snapshot.Config{TTL: 168 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	stored()
	leaks := goleak.IgnoreCurrent()
	stopChurn := make(chan struct{})
	churned := make(chan int, 1)
	go func() { churned <- churn(api, phones, perPhone, stopChurn) }()

	var out lockedBuffer
	exited := make(chan int, 1)
	go func() { exited <- run([]string{"run"}, &out, &out) }()
	waitStatus(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), 200)
	waitUntil(t, "heavy traffic (1500 events)", func() bool { return stored() >= 1500 })

	// Hold the next event publish on its way to NATS, and send SIGTERM
	// while it is in flight; let it go once shutdown has begun.
	proxy.armed.Store(true)
	var held []byte
	select {
	case held = <-proxy.held:
	case <-time.After(30 * time.Second):
		t.Fatal("no event published within 30s")
	}
	heldID := regexp.MustCompile(`Nats-Msg-Id: *([0-9a-f]+)`).FindSubmatch(held)
	if heldID == nil {
		t.Fatalf("no Nats-Msg-Id in the held publish %q", held)
	}
	signalled := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "shutdown to begin", func() bool { return strings.Contains(out.String(), "shutting down") })
	proxy.Release()
	var code int
	select {
	case code = <-exited:
	case <-time.After(grace + 5*time.Second):
		t.Fatalf("no exit within %v of SIGTERM\n%s", grace+5*time.Second, out.String())
	}
	took := time.Since(signalled)
	close(stopChurn)
	rounds := <-churned
	if code != exitOK {
		t.Fatalf("exit %d after SIGTERM, want 0\n%s", code, out.String())
	}
	if took > grace {
		t.Errorf("exit %v after SIGTERM, beyond the %v grace period", took, grace)
	}
	if !strings.Contains(out.String(), "stopped cleanly") {
		t.Errorf("no clean stop logged:\n%s", out.String())
	}

	// The stream and the bucket agree: each job's snapshot is the state of
	// its last event, and each event before it was stored.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopping := shutdownLogged(t, out.String())
	var heldEvent *events.Event
	var heldStored time.Time
	last := map[string]events.Event{}
	afterSignal := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		last[snapshot.JobKey(ev.Data.Phone, ev.Data.QueueID)] = ev
		if m.Time.After(stopping) {
			afterSignal++
		}
		if ev.ID == string(heldID[1]) {
			heldEvent, heldStored = &ev, m.Time
		}
	}
	kv, err := js.KeyValue(ctx, snapshot.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for key, ev := range last {
		en, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("job %s: event %s→%s #%d stored, snapshot never committed", key, ev.Data.PreviousStatus, ev.Data.Status, ev.Data.Attempts)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var rec snapshot.Record
		if err := json.Unmarshal(en.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Status != ev.Data.Status || rec.Attempts != ev.Data.Attempts {
			id := diff.EventID(ev.Data.Phone, ev.Data.QueueID, rec.Status, rec.Attempts)
			t.Errorf("job %s: snapshot %s #%d, last event %s #%d (snapshot's event %s)", key, rec.Status, rec.Attempts, ev.Data.Status, ev.Data.Attempts, id)
		}
		checked++
	}
	if checked != len(phones)*perPhone {
		t.Errorf("%d jobs checked, want %d", checked, len(phones)*perPhone)
	}
	// The publish in flight at the signal was stored, and its commit made
	// (the snapshots were checked against the last events above).
	if heldEvent == nil {
		t.Fatalf("the event in flight at SIGTERM (%s) is not in the stream", heldID[1])
	}
	if !heldStored.After(stopping) {
		t.Errorf("the held event was stored at %v, before shutdown began (%v)", heldStored, stopping)
	}
	if ev := last[snapshot.JobKey(heldEvent.Data.Phone, heldEvent.Data.QueueID)]; ev.ID != heldEvent.ID {
		t.Errorf("the job of the in-flight event moved on after the signal")
	}
	// In flight when shutdown began: at most the one job each poll loop
	// was on.
	if afterSignal > len(phones) {
		t.Errorf("%d events stored after shutdown began: new work started after the signal", afterSignal)
	}
	goleak.VerifyNone(t, leaks)
	t.Logf("FIGURES sigterm: %d events over %d rounds of %d changing jobs, SIGTERM then exit 0 after %v (grace %v); %d in-flight events (one held at the signal) stored after shutdown began; %d jobs' snapshots match their last event; no goroutine left",
		info.State.Msgs, rounds, len(phones)*perPhone, took.Round(time.Millisecond), grace, afterSignal, checked)
}

// shutdownLogged returns when the service logged that shutdown began.
func shutdownLogged(t *testing.T, logs string) time.Time {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			TS  string `json:"ts"`
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || !strings.HasPrefix(l.Msg, "shutting down") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, l.TS)
		if err != nil {
			t.Fatalf("log time %q: %v", l.TS, err)
		}
		return at
	}
	t.Fatalf("no shutdown logged:\n%s", logs)
	return time.Time{}
}

// holdProxy relays NATS connections to a server and can hold one event in
// flight: armed, it stops relaying a client's traffic at the first publish
// of an event (until Release), so the test knows a publish is on its way
// when it sends SIGTERM.
type holdProxy struct {
	ln      net.Listener
	to      string
	armed   atomic.Bool
	held    chan []byte // the held bytes, once
	release chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func newHoldProxy(t *testing.T, to string) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, to: strings.TrimPrefix(to, "nats://"), held: make(chan []byte, 1), release: make(chan struct{})}
	p.wg.Go(p.accept)
	return p
}

func (p *holdProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *holdProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(s, c, true) })
		p.wg.Go(func() { p.pump(c, s, false) })
	}
}

// pump copies from src to dst; from the client, it holds at an event
// publish when armed.
func (p *holdProxy) pump(dst, src net.Conn, fromClient bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if fromClient && bytes.Contains(chunk, []byte("PUB "+events.Subject+" ")) && p.armed.CompareAndSwap(true, false) {
				p.held <- bytes.Clone(chunk)
				<-p.release
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Release lets the held traffic go.
func (p *holdProxy) Release() { p.once.Do(func() { close(p.release) }) }

// Close stops relaying and waits for the relay goroutines.
func (p *holdProxy) Close() {
	p.Release()
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
