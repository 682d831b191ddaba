package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/publisher"
)

// tailWorld is an in-process NATS server with the events stream and
// publishers for both subject forms.
type tailWorld struct {
	srv    *natstest.Server
	js     jetstream.JetStream
	pub    *publisher.NATS
	detail *publisher.NATS
}

func newTailWorld(t *testing.T) *tailWorld {
	t.Helper()
	t.Setenv("QUEUEWATCH_NATS_URL", "") // --server decides
	srv := natstest.Run(t)
	_, js := srv.Connect(t)
	w := &tailWorld{
		srv:    srv,
		js:     js,
		pub:    publisher.New(js, publisher.Config{DuplicateWindow: time.Minute}),
		detail: publisher.New(js, publisher.Config{DuplicateWindow: time.Minute, Detail: true}),
	}
	if err := w.pub.EnsureStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func tailEvent(phone, queueID, from, to string) events.Event {
	return events.New(phone+"-"+queueID+"-"+to, events.Data{
		Phone: phone, QueueID: queueID, ChatID: "8824248940@c.us", PreviousStatus: from, Status: to,
		Attempts: 1, ObservedAt: time.Now(),
	})
}

// publish sends e and returns its payload as the stream stores it.
func (w *tailWorld) publish(t *testing.T, p *publisher.NATS, e events.Event) string {
	t.Helper()
	if err := p.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	m, err := p.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(m.Data)
}

// tailRun is `queuewatch tail` running in the background.
type tailRun struct {
	stdout, stderr *lockedBuffer
	cancel         context.CancelFunc
	exit           chan int
}

func (w *tailWorld) tail(t *testing.T, args ...string) *tailRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &tailRun{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, cancel: cancel, exit: make(chan int, 1)}
	args = append([]string{"--server", w.srv.URL()}, args...)
	go func() { r.exit <- tailCommand(ctx, args, r.stdout, r.stderr) }()
	t.Cleanup(cancel)
	// Following once it says so on stderr.
	waitUntil(t, "tail to start following", func() bool { return strings.Contains(r.stderr.String(), "then following") })
	return r
}

func (r *tailRun) lines() []string {
	s := strings.TrimSuffix(r.stdout.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (r *tailRun) waitLines(t *testing.T, n int) []string {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d lines", n), func() bool { return len(r.lines()) >= n })
	return r.lines()
}

// stop is Ctrl-C: exit status 0.
func (r *tailRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.exit:
		if code != exitOK {
			t.Errorf("exit %d after cancel, want 0; stderr:\n%s", code, r.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tail did not stop within 30s")
	}
}

// TestTailAllJSONReplaysThenFollows: --all --json prints what the stream
// holds, on both subject forms, as published, then what comes next.
func TestTailAllJSONReplaysThenFollows(t *testing.T) {
	w := newTailWorld(t)
	want := []string{
		w.publish(t, w.pub, tailEvent("918527184400", "q-1", "", "queued")),
		w.publish(t, w.detail, tailEvent("918527184400", "q-1", "queued", "sent")),
	}
	r := w.tail(t, "--all", "--json")
	if got := r.waitLines(t, 2); !slices.Equal(got, want) {
		t.Fatalf("replayed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	want = append(want, w.publish(t, w.pub, tailEvent("919876543210", "q-2", "sending", "failed")))
	if got := r.waitLines(t, 3); !slices.Equal(got, want) {
		t.Fatalf("after a new event:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	r.stop(t)
	for _, l := range r.lines() {
		if err := events.ValidatePayload([]byte(l)); err != nil {
			t.Errorf("line %s: %v", l, err)
		}
	}
	if strings.Contains(r.stdout.String(), "following") {
		t.Error("status messages went to stdout; they belong on stderr")
	}
}

// TestTailFollowsNewEventsOnly: without --all or --since, what the stream
// held before is not printed.
func TestTailFollowsNewEventsOnly(t *testing.T) {
	w := newTailWorld(t)
	w.publish(t, w.pub, tailEvent("918527184400", "q-old", "", "queued"))
	r := w.tail(t)
	w.publish(t, w.pub, tailEvent("918527184400", "q-new", "sending", "sent"))
	lines := r.waitLines(t, 1)
	r.stop(t)
	if len(lines) != 1 || !strings.Contains(lines[0], "q-new") || strings.Contains(r.stdout.String(), "q-old") {
		t.Errorf("printed:\n%s\nwant the new event only", r.stdout.String())
	}
	if !strings.Contains(lines[0], "sending   → sent") || !strings.Contains(lines[0], "918527184400") || strings.Contains(lines[0], "\x1b[") {
		t.Errorf("line %q is not the plain readable form", lines[0])
	}
}

// TestTailSinceReplays: --since replays the events of the last duration.
func TestTailSinceReplays(t *testing.T) {
	w := newTailWorld(t)
	w.publish(t, w.pub, tailEvent("918527184400", "q-1", "", "queued"))
	r := w.tail(t, "--since", "1h")
	r.waitLines(t, 1)
	w.publish(t, w.pub, tailEvent("918527184400", "q-1", "queued", "sending"))
	lines := r.waitLines(t, 2)
	r.stop(t)
	if !strings.Contains(lines[0], "(new)     → queued") || !strings.Contains(lines[1], "queued    → sending") {
		t.Errorf("printed:\n%s", r.stdout.String())
	}
}

// TestTailFilters: --phone and --status (repeated or comma-separated) keep
// the matching events, replayed and new.
func TestTailFilters(t *testing.T) {
	w := newTailWorld(t)
	type ev struct{ phone, queueID, to string }
	all := []ev{
		{"p-a", "q-1", "sent"}, {"p-b", "q-2", "failed"}, {"p-a", "q-3", "failed"},
		{"p-a", "q-4", "read"}, {"p-c", "q-5", "waiting"}, {"p-a", "q-6", "queued"},
	}
	for _, e := range all[:3] {
		w.publish(t, w.pub, tailEvent(e.phone, e.queueID, "sending", e.to))
	}
	r := w.tail(t, "--all", "--phone", "p-a,p-c", "--status", "failed", "--status", "read,waiting")
	for _, e := range all[3:] {
		w.publish(t, w.detail, tailEvent(e.phone, e.queueID, "sending", e.to))
	}
	// The last matching event is q-5; q-6 (queued) comes after it and must
	// not show up either, so wait for a sentinel that matches.
	w.publish(t, w.pub, tailEvent("p-c", "q-end", "sending", "failed"))
	lines := r.waitLines(t, 4)
	r.stop(t)
	var got []string
	for _, l := range lines {
		f := strings.Fields(l)
		got = append(got, f[1]+"/"+f[2]+"/"+f[5])
	}
	want := []string{"p-a/q-3/failed", "p-a/q-4/read", "p-c/q-5/waiting", "p-c/q-end/failed"}
	if !slices.Equal(got, want) {
		t.Errorf("printed %v, want %v:\n%s", got, want, r.stdout.String())
	}
}

// TestTailSkipsMalformedMessages: a message that is not an event is
// reported on stderr and the others print.
func TestTailSkipsMalformedMessages(t *testing.T) {
	w := newTailWorld(t)
	if _, err := w.js.Publish(context.Background(), events.Subject, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	want := w.publish(t, w.pub, tailEvent("918527184400", "q-1", "", "queued"))
	r := w.tail(t, "--all", "--json")
	lines := r.waitLines(t, 1)
	r.stop(t)
	if len(lines) != 1 || lines[0] != want {
		t.Errorf("printed %q", lines)
	}
	if !strings.Contains(r.stderr.String(), "skipping message 1") {
		t.Errorf("stderr does not report the malformed message:\n%s", r.stderr.String())
	}
}

func TestTailUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"--since"},
		{"--since", "soon"},
		{"--since", "-5m"},
		{"--all", "--since", "1m"},
		{"--status", ""},
		{"--phone", "a,,b"},
		{"extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(append([]string{"tail"}, args...), &out, &errb); code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, errb.String())
			}
			if !strings.HasPrefix(errb.String(), "queuewatch tail: ") || !strings.Contains(errb.String(), "Usage: queuewatch tail") {
				t.Errorf("stderr:\n%s", errb.String())
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run([]string{"tail", "--help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "-status") {
		t.Errorf("--help: exit %d, stdout:\n%s", code, out.String())
	}
}

func TestTailReportsWhatIsMissing(t *testing.T) {
	t.Setenv("QUEUEWATCH_NATS_URL", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	noServer := fmt.Sprintf("nats://secret:pw@127.0.0.1:%d", freePort(t))
	if code := tailCommand(ctx, []string{"--server", noServer}, &out, &errb); code != exitFailed ||
		!strings.Contains(errb.String(), "no NATS server reachable") || strings.Contains(errb.String(), "pw") {
		t.Errorf("no server: exit %d, stderr %s", code, errb.String())
	}

	srv := natstest.Run(t) // no stream yet
	errb.Reset()
	if code := tailCommand(ctx, []string{"--server", srv.URL()}, &out, &errb); code != exitFailed ||
		!strings.Contains(errb.String(), "stream QUEUE_JOB_EVENTS not found") {
		t.Errorf("no stream: exit %d, stderr %s", code, errb.String())
	}
}

func TestFormatEvent(t *testing.T) {
	e := events.New("x", events.Data{
		Phone: "918527184400", QueueID: "5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400", ChatID: "8824248940@c.us",
		PreviousStatus: "sending", Status: "failed", StatusDescription: "Failed to send.", Attempts: 2,
		ObservedAt: time.Date(2026, 4, 1, 14, 23, 24, 0, time.Local),
	})
	plain := formatEvent(e, palette{})
	want := "14:23:24  918527184400     5df4cb6d  sending   → failed     attempt 2  8824248940@c.us  Failed to send."
	if plain != want {
		t.Errorf("plain line\n got %q\nwant %q", plain, want)
	}
	coloured := formatEvent(e, palette{on: true})
	if !strings.Contains(coloured, "\x1b[1;31mfailed   \x1b[0m") {
		t.Errorf("failed is not bold red: %q", coloured)
	}
	if stripANSI(coloured) != plain {
		t.Errorf("colour changed the text: %q", stripANSI(coloured))
	}
	e.Data.PreviousStatus, e.Data.Status, e.Data.Attempts = "", "queued", 1
	if got := formatEvent(e, palette{}); !strings.Contains(got, "(new)     → queued     attempt 1") || strings.Contains(got, "Failed") {
		t.Errorf("new job line %q", got)
	}
}

func stripANSI(s string) string {
	for {
		i := strings.Index(s, "\x1b[")
		if i < 0 {
			return s
		}
		j := strings.IndexByte(s[i:], 'm')
		s = s[:i] + s[i+j+1:]
	}
}

func TestJSONLinesAreCompact(t *testing.T) {
	pretty, err := json.MarshalIndent(tailEvent("p", "q", "", "queued"), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	w := newTailWorld(t)
	if _, err := w.js.Publish(context.Background(), events.Subject, pretty); err != nil {
		t.Fatal(err)
	}
	r := w.tail(t, "--all", "--json")
	lines := r.waitLines(t, 1)
	r.stop(t)
	var compact bytes.Buffer
	_ = json.Compact(&compact, pretty)
	if len(lines) != 1 || lines[0] != compact.String() {
		t.Errorf("printed %q, want one compact line", r.stdout.String())
	}
}
