package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/queuewatch/queuewatch/config"
	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/internal/embednats"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

// demoPhones are the simulated WhatsApp numbers of the demo.
var demoPhones = []string{"918527184400", "919876543210", "phone-demo7c1e"}

// Pace of the demo: the simulated API moves every demoStep, queuewatch polls
// every demoPoll, and a summary line comes every demoSummary.
const (
	demoStep    = 400 * time.Millisecond
	demoPoll    = time.Second
	demoSummary = 5 * time.Second
)

// demoWorkload is the simulated traffic: a few jobs per phone at the start,
// then a broadcast of 20 to 200 chats every 20s on the phones in turn (the
// second, fourth, … scheduled to start 20s later), sent a few chats a step,
// some failing and retried, the odd unknown "waiting" status.
func demoWorkload(seed int64) periskopetest.SimOptions {
	return periskopetest.SimOptions{
		Phones: demoPhones, JobsPerPhone: 4, FailRate: 0.08, Seed: seed,
		MaxDelay: 6, SendPerStep: 2, UnknownRate: 0.03,
		BroadcastEvery: 50, BroadcastMin: 20, BroadcastMax: 200,
		ScheduledEvery: 2, ScheduleDelay: 50,
		Forget: 150,
	}
}

// runDemo is `queuewatch demo`: an embedded NATS server in a temporary
// directory, the simulated Periskope API, the worker, and every event
// printed as it arrives. No API key and nothing installed.
func runDemo(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := config.Parse()
	if err != nil {
		return err
	}
	cfg.PollInterval = demoPoll
	if _, set := os.LookupEnv("QUEUEWATCH_SUBJECT_DETAIL"); !set {
		cfg.SubjectDetail = true // show off server-side filtering
	}
	log := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zap.WarnLevel))

	dir, err := os.MkdirTemp("", "queuewatch-demo-")
	if err != nil {
		return fmt.Errorf("demo data directory: %w", err)
	}
	defer os.RemoveAll(dir)
	srv, err := embednats.Start(embednats.Options{StoreDir: dir, Port: demoPort(cfg.NATSListen)})
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	natsURL := srv.ClientURL()

	key := randomKey()
	api := periskopetest.NewServer(key)
	defer api.Close()
	seed := time.Now().UnixNano()
	sim := periskopetest.NewSimulator(api, demoWorkload(seed))
	client, err := periskope.NewClient(periskope.Options{BaseURL: api.URL, APIKey: key, Timeout: cfg.RequestTimeout})
	if err != nil {
		return err
	}

	nc, err := connect(cfg, natsURL, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	v := newView(stdout, colourFor(stdout))
	for _, subject := range []string{cfg.Subject, cfg.Subject + ".>"} {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) { v.event(m.Data) })
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	demoBanner(stdout, v.p, cfg, api.URL, natsURL, seed)

	var wg sync.WaitGroup
	wg.Go(func() { sim.Run(ctx, demoStep) })
	wg.Go(func() {
		t := time.NewTicker(demoSummary)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				v.summary()
			}
		}
	})
	targets := make([]periskope.Target, len(demoPhones))
	for i, p := range demoPhones {
		targets[i] = periskope.Target{Phone: p}
	}
	err = pipeline{cfg: cfg, log: log, lister: client, targets: targets}.run(ctx, nc)
	wg.Wait()
	v.close()
	fmt.Fprintln(stdout, "queuewatch demo: stopped")
	return err
}

// demoBanner says what runs where and how to watch from elsewhere.
func demoBanner(w io.Writer, p palette, cfg *config.Config, apiURL, natsURL string, seed int64) {
	all, failed := "'"+cfg.Subject+"'", ""
	if cfg.SubjectDetail {
		all, failed = "'"+cfg.Subject+".>'", "'"+cfg.Subject+".*.failed'"
	}
	server := ""
	if natsURL != defaultNATSURL {
		server = " --server " + natsURL
	}
	fmt.Fprintln(w, p.bold("queuewatch demo"))
	fmt.Fprintf(w, "  simulated Periskope API  %s  (%d phones; broadcasts of 20 to 200 chats, some scheduled; failures, retries; seed %d)\n", apiURL, len(demoPhones), seed)
	fmt.Fprintf(w, "  NATS with JetStream      %s  (stream %s)\n", natsURL, cfg.Stream)
	if cfg.SubjectDetail {
		fmt.Fprintf(w, "  events on                %s.<phone>.<status>  (QUEUEWATCH_SUBJECT_DETAIL=true)\n", cfg.Subject)
	} else {
		fmt.Fprintf(w, "  events on                %s\n", cfg.Subject)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Watch from another terminal (in a checkout, queuewatch is go run ./cmd/queuewatch):")
	tails := [][2]string{
		{"queuewatch tail" + server, "new events, one line each"},
		{"queuewatch tail" + server + " --all --json", "all the stream holds, then new ones"},
		{"queuewatch tail" + server + " --status failed,waiting", "only these statuses"},
	}
	subs := [][2]string{{"nats sub --server " + natsURL + " " + all, "core NATS, from now on"}}
	if failed != "" {
		subs = append(subs, [2]string{"nats sub --server " + natsURL + " " + failed, "failures only, filtered by the server"})
	}
	printCommands(w, p, tails)
	printCommands(w, p, subs)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Each phone's first poll records a silent baseline; then one line per change. Ctrl-C stops.")
	fmt.Fprintln(w)
}

// printCommands prints commands with their comments aligned.
func printCommands(w io.Writer, p palette, cmds [][2]string) {
	width := 0
	for _, c := range cmds {
		width = max(width, len(c[0]))
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c[0], p.dim("# "+c[1]))
	}
}

// demoPort is the port of listen (QUEUEWATCH_NATS_LISTEN, by default
// 4222, where `queuewatch tail` looks) if it is free, or -1 (any free port).
func demoPort(listen string) int {
	host, port, err := embednats.SplitHostPort(listen)
	if err != nil || port < 0 || host != "127.0.0.1" && host != "localhost" && host != "" {
		return -1
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return -1
	}
	_ = l.Close()
	return port
}

// view prints events as they arrive, one line each, and summaries of the
// jobs by status. It is safe for concurrent use.
type view struct {
	w io.Writer
	p palette

	mu     sync.Mutex
	closed bool
	events int
	jobs   map[string]string // phone/queue_id → latest status
}

func newView(w io.Writer, p palette) *view {
	return &view{w: w, p: p, jobs: make(map[string]string)}
}

// event prints one event payload.
func (v *view) event(payload []byte) {
	e, err := events.Decode(payload)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return
	}
	if err != nil {
		fmt.Fprintf(v.w, "%s\n", v.p.colour("31", "undecodable event: "+err.Error()))
		return
	}
	v.events++
	v.jobs[e.Data.Phone+"/"+e.Data.QueueID] = e.Data.Status
	fmt.Fprintln(v.w, formatEvent(e, v.p))
}

// summary prints the number of events so far and the jobs by their latest
// status.
func (v *view) summary() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.closed {
		v.printSummary()
	}
}

// close prints a last summary and stops printing: events still in flight
// are dropped.
func (v *view) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.closed {
		v.printSummary()
		v.closed = true
	}
}

// printSummary writes the summary line. v.mu must be held.
func (v *view) printSummary() {
	counts := map[string]int{}
	for _, s := range v.jobs {
		counts[s]++
	}
	statuses := make([]string, 0, len(counts))
	for s := range counts {
		statuses = append(statuses, s)
	}
	slices.SortFunc(statuses, func(a, b string) int {
		if c := statusOrder(a) - statusOrder(b); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var b strings.Builder
	for _, s := range statuses {
		fmt.Fprintf(&b, "  %s %d", v.p.status(s), counts[s])
	}
	fmt.Fprintf(v.w, "%s %d events, %d jobs:%s\n", v.p.dim("──"), v.events, len(v.jobs), b.String())
}

// formatEvent is the readable line of an event (demo and tail):
//
//	14:23:24  918527184400     5df4cb6d  sending   → sent       attempt 1  8824248940@c.us
//
// with the status description after failed and unknown statuses.
func formatEvent(e events.Event, p palette) string {
	from := e.Data.PreviousStatus
	if from == "" {
		from = "(new)"
	}
	attempt := fmt.Sprintf("attempt %d", e.Data.Attempts)
	if e.Data.Attempts > 1 {
		attempt = p.colour("1;33", attempt)
	}
	line := fmt.Sprintf("%s  %-15s  %s  %s → %s  %s  %s",
		p.dim(e.Time.Local().Format("15:04:05")), e.Data.Phone, p.dim(shortID(e.Data.QueueID)),
		p.dim(fmt.Sprintf("%-9s", from)), p.status(fmt.Sprintf("%-9s", e.Data.Status)), attempt, e.Data.ChatID)
	if statusOrder(e.Data.Status) >= statusOrder("failed") && e.Data.StatusDescription != "" {
		line += "  " + p.dim(e.Data.StatusDescription)
	}
	return line
}

// statusOrder sorts statuses along a job's life; failed, then unknown ones,
// come last.
func statusOrder(s string) int {
	order := []string{"scheduled", "queued", "pending", "sending", "sent", "delivered", "read", "played", "failed"}
	if i := slices.Index(order, s); i >= 0 {
		return i
	}
	return len(order)
}

// palette colours text with ANSI escapes when on; off, text is unchanged.
type palette struct{ on bool }

// colourFor colours output to a terminal, unless NO_COLOR is set or TERM is
// dumb (https://no-color.org).
func colourFor(w io.Writer) palette {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return palette{}
	}
	fi, err := f.Stat()
	return palette{on: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

func (p palette) colour(code, s string) string {
	if !p.on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p palette) dim(s string) string  { return p.colour("2", s) }
func (p palette) bold(s string) string { return p.colour("1", s) }

// status colours s (a status, maybe padded) by the status it names.
func (p palette) status(s string) string {
	code := "35" // unknown: magenta
	switch strings.TrimSpace(s) {
	case "scheduled":
		code = "34"
	case "queued", "pending":
		code = "36"
	case "sending":
		code = "33"
	case "sent":
		code = "32"
	case "delivered", "read", "played":
		code = "1;32"
	case "failed":
		code = "1;31"
	}
	return p.colour(code, s)
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "demo-" + hex.EncodeToString(b)
}
