package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/queuewatch/queuewatch/config"
	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

const testKey = "sk-live-QW-BINARY-7f3e9a1c"

func TestHelpListsEveryVariable(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errb.String())
	}
	for _, v := range config.Vars() {
		if !strings.Contains(out.String(), v.Name) {
			t.Errorf("--help does not list %s", v.Name)
		}
	}
}

func TestBadConfigExits2NamingTheVariable(t *testing.T) {
	t.Setenv("QUEUEWATCH_API_KEY", testKey)
	t.Setenv("QUEUEWATCH_PHONES", "918527184400")
	t.Setenv("QUEUEWATCH_POLL_INTERVAL", "soon")
	var out, errb bytes.Buffer
	if code := run([]string{"run"}, &out, &errb); code != exitUsage {
		t.Fatalf("exit %d, want %d; stderr %s", code, exitUsage, errb.String())
	}
	msg := errb.String()
	if !strings.Contains(msg, "QUEUEWATCH_POLL_INTERVAL") || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
		t.Errorf("want one line naming QUEUEWATCH_POLL_INTERVAL, got %q", msg)
	}
	if strings.Contains(msg, testKey) {
		t.Error("the API key leaked into the error")
	}
}

func TestUnknownCommandExits2(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
}

// buildBinary builds a main package into dir and returns its path.
func buildBinary(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build %s: %v", pkg, err)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBinaryAgainstExternalNATS builds queuewatch and nats-server, runs
// `nats-server -js` as its own process and queuewatch configured only by
// environment variables, and receives the events with a plain core NATS
// subscription on queue.job.status_changed (what `nats sub` does).
func TestBinaryAgainstExternalNATS(t *testing.T) {
	dir := t.TempDir()
	qw := buildBinary(t, dir, "queuewatch", ".")
	ns := buildBinary(t, dir, "nats-server", "github.com/nats-io/nats-server/v2")

	port := freePort(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	srv := exec.Command(ns, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", filepath.Join(dir, "js"))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	var nc *nats.Conn
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if nc, err = nats.Connect(natsURL); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer nc.Close()
	received := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("queue.job.status_changed", received)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	api := periskopetest.NewServer(testKey)
	defer api.Close()
	job := periskopetest.Job{QueueID: "5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400", UniqueID: "3EB0A0A8F90A01259C81A3",
		ChatID: "8824248940@c.us", PerformedBy: "api", Status: "queued", StatusDescription: "Queued.",
		Timeline: map[string]string{"queued_at": "2026-04-01T14:23:21.279Z"}, Attempts: 1}
	api.Upsert("918527184400", job)

	var stderr lockedBuffer
	cmd, exited := startBinary(t, qw, []string{
		"QUEUEWATCH_API_KEY=" + testKey,
		"QUEUEWATCH_API_URL=" + api.URL,
		"QUEUEWATCH_PHONES=918527184400",
		"QUEUEWATCH_NATS_URL=" + natsURL,
		"QUEUEWATCH_POLL_INTERVAL=100ms",
		"QUEUEWATCH_EMIT_BASELINE=true",
		"QUEUEWATCH_HTTP_ADDR=127.0.0.1:0",
		"QUEUEWATCH_LOG_LEVEL=debug",
	}, &stderr)

	expect := func(prev, status string) {
		t.Helper()
		select {
		case m := <-received:
			ev, err := events.Decode(m.Data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if ev.Data.PreviousStatus != prev || ev.Data.Status != status || ev.Data.QueueID != job.QueueID {
				t.Fatalf("got %q→%q for %s, want %q→%q", ev.Data.PreviousStatus, ev.Data.Status, ev.Data.QueueID, prev, status)
			}
			if m.Header.Get("Nats-Msg-Id") != ev.ID {
				t.Errorf("Nats-Msg-Id %q != id %q", m.Header.Get("Nats-Msg-Id"), ev.ID)
			}
		case err := <-exited:
			t.Fatalf("queuewatch exited early: %v\n%s", err, stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("no event %q→%q within 30s; queuewatch output:\n%s", prev, status, stderr.String())
		}
	}
	expect("", "queued") // EMIT_BASELINE=true: the first sight is an event
	job.Status = "sending"
	api.Upsert("918527184400", job)
	expect("queued", "sending")
	job.Status, job.MessageID = "sent", "true_8824248940@c.us_3EB0A0A8F90A01259C81A3"
	api.Upsert("918527184400", job)
	expect("sending", "sent")

	stopBinary(t, cmd, exited, &stderr)
	logs := stderr.String()
	if strings.Contains(logs, testKey) {
		t.Error("the API key appears in queuewatch's output")
	}
	// Every line is JSON (LOG_FORMAT defaults to json).
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Errorf("log line is not JSON: %q", sc.Text())
		}
	}
	// The stream holds each transition once.
	js, _ := nc.JetStream()
	info, err := js.StreamInfo("QUEUE_JOB_EVENTS", nats.Context(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("stream holds %d events, want 3", info.State.Msgs)
	}
}

// startBinary runs the built queuewatch with env and returns a channel that
// receives its exit error.
func startBinary(t *testing.T, bin string, env []string, out *lockedBuffer) (*exec.Cmd, chan error) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return cmd, exited
}

func stopBinary(t *testing.T, cmd *exec.Cmd, exited chan error, out *lockedBuffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(25 * time.Second):
		t.Fatalf("no exit within 25s of SIGTERM\n%s", out.String())
	}
}

// TestBinaryEmbeddedNATS runs queuewatch without QUEUEWATCH_NATS_URL: it
// starts its own JetStream server on QUEUEWATCH_NATS_LISTEN with data in
// QUEUEWATCH_DATA_DIR, where an outside consumer receives the events. A
// restart on the same data directory keeps the snapshots and the baseline:
// unchanged jobs give no event, a job added while it was down does.
func TestBinaryEmbeddedNATS(t *testing.T) {
	dir := t.TempDir()
	qw := buildBinary(t, dir, "queuewatch", ".")
	api := periskopetest.NewServer(testKey)
	defer api.Close()
	phone := "919876543210"
	api.Upsert(phone, periskopetest.Job{QueueID: "q-old", ChatID: "1@c.us", Status: "sent", Attempts: 1})

	port := freePort(t)
	env := []string{
		"QUEUEWATCH_API_KEY=" + testKey,
		"QUEUEWATCH_API_URL=" + api.URL,
		"QUEUEWATCH_PHONES=" + phone,
		"QUEUEWATCH_POLL_INTERVAL=50ms",
		"QUEUEWATCH_DATA_DIR=" + filepath.Join(dir, "data"),
		fmt.Sprintf("QUEUEWATCH_NATS_LISTEN=127.0.0.1:%d", port),
		"QUEUEWATCH_HTTP_ADDR=127.0.0.1:0",
	}
	baselined := func() int {
		n := 0
		for _, r := range api.Requests() {
			if r.Status == 200 {
				n++
			}
		}
		return n
	}
	var out lockedBuffer
	cmd, exited := startBinary(t, qw, env, &out)
	waitUntil(t, "first polls", func() bool { return baselined() >= 3 })
	if !strings.Contains(out.String(), fmt.Sprintf("nats://127.0.0.1:%d", port)) {
		t.Errorf("the log does not say where consumers can connect:\n%s", out.String())
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe("queue.job.status_changed", received); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	api.Upsert(phone, periskopetest.Job{QueueID: "q-new", ChatID: "2@c.us", Status: "queued", Attempts: 1})
	if ev := nextEvent(t, received, &out); ev.Data.QueueID != "q-new" || ev.Data.PreviousStatus != "" || ev.Data.Status != "queued" {
		t.Fatalf("got %+v", ev.Data)
	}
	nc.Close()
	stopBinary(t, cmd, exited, &out)

	// Down: one job moves on, one appears.
	api.Upsert(phone, periskopetest.Job{QueueID: "q-new", ChatID: "2@c.us", Status: "sent", Attempts: 1})
	api.Upsert(phone, periskopetest.Job{QueueID: "q-later", ChatID: "3@c.us", Status: "queued", Attempts: 1})
	out = lockedBuffer{}
	cmd, exited = startBinary(t, qw, env, &out)
	var js nats.JetStreamContext
	waitUntil(t, "embedded server back", func() bool {
		c, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		nc = c
		js, _ = nc.JetStream()
		return true
	})
	defer nc.Close()
	waitUntil(t, "stream holds 3 events", func() bool {
		info, err := js.StreamInfo("QUEUE_JOB_EVENTS")
		return err == nil && info.State.Msgs >= 3
	})
	before := baselined()
	waitUntil(t, "a few more polls", func() bool { return baselined() >= before+3 })
	info, err := js.StreamInfo("QUEUE_JOB_EVENTS") // the stream lives in the binary's server
	if err != nil {
		t.Fatal(err)
	}
	stopBinary(t, cmd, exited, &out)
	// q-new queued (1st run), q-new queued→sent and q-later new (2nd run);
	// q-old never: it was in the baseline and did not change.
	if info.State.Msgs != 3 {
		t.Errorf("stream holds %d events, want 3", info.State.Msgs)
	}
}

func nextEvent(t *testing.T, ch chan *nats.Msg, out *lockedBuffer) events.Event {
	t.Helper()
	select {
	case m := <-ch:
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatalf("no event within 30s\n%s", out.String())
	}
	return events.Event{}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
