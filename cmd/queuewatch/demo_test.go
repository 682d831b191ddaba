package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/queuewatch/queuewatch/events"
)

// TestDemoOutputWhenPiped runs the demo into a buffer (not a terminal):
// plain text, the commands to connect another consumer, events, and a
// summary by status when it stops.
func TestDemoOutputWhenPiped(t *testing.T) {
	var out, errb lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDemo(ctx, &out, &errb) }()
	waitUntil(t, "five events printed", func() bool { return strings.Count(out.String(), "→") >= 5 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v\n%s", err, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop within 30s")
	}
	s := out.String()
	for _, want := range []string{"queuewatch tail", "--all --json", "nats sub --server nats://127.0.0.1:", "queue.job.status_changed.*.failed", "queuewatch demo: stopped"} {
		if !strings.Contains(s, want) {
			t.Errorf("the output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "\x1b[") {
		t.Error("colour escapes in piped output")
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if summary := lines[len(lines)-2]; !strings.HasPrefix(summary, "── ") || !strings.Contains(summary, " events, ") {
		t.Errorf("no summary before the last line: %q", summary)
	}
}

func TestViewCountsJobsByLatestStatus(t *testing.T) {
	var out bytes.Buffer
	v := newView(&out, palette{})
	send := func(queueID, from, to string) {
		b, err := json.Marshal(events.New(queueID+to, events.Data{Phone: "p", QueueID: queueID, PreviousStatus: from, Status: to, ObservedAt: time.Now()}))
		if err != nil {
			t.Fatal(err)
		}
		v.event(b)
	}
	send("q1", "", "queued")
	send("q2", "", "queued")
	send("q1", "queued", "sent")
	send("q3", "sending", "waiting")
	send("q4", "sending", "failed")
	v.event([]byte("garbage"))
	v.close()                // a last summary
	send("q5", "", "queued") // after close: dropped
	v.summary()
	v.close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[5], "undecodable event") {
		t.Errorf("line 6 = %q", lines[5])
	}
	// Life-cycle order; failed, then unknown statuses, last.
	if want := "── 5 events, 4 jobs:  queued 1  sent 1  failed 1  waiting 1"; lines[6] != want {
		t.Errorf("summary\n got %q\nwant %q", lines[6], want)
	}
}

func TestColourOnlyOnATerminal(t *testing.T) {
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm-256color")
	if colourFor(&bytes.Buffer{}).on {
		t.Error("colour into a buffer")
	}
	tty, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0) // a character device, as a terminal is
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	if !colourFor(tty).on {
		t.Error("no colour on a character device")
	}
	t.Setenv("NO_COLOR", "1")
	if colourFor(tty).on {
		t.Error("colour despite NO_COLOR")
	}
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "dumb")
	if colourFor(tty).on {
		t.Error("colour on a dumb terminal")
	}
}
