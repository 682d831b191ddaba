package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/queuewatch/queuewatch/config"
	"github.com/queuewatch/queuewatch/events"
)

// defaultNATSURL is where tail looks without --server or
// QUEUEWATCH_NATS_URL: the default address of the embedded server (and of
// the demo's).
const defaultNATSURL = "nats://127.0.0.1:4222"

// tailOptions are the flags of `queuewatch tail`.
type tailOptions struct {
	server   string
	json     bool
	all      bool
	since    time.Duration
	phones   listFlag
	statuses listFlag
}

func tailFlags(o *tailOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("queuewatch tail", flag.ContinueOnError)
	fs.StringVar(&o.server, "server", "", "NATS URL(s), comma-separated (default $QUEUEWATCH_NATS_URL, else "+defaultNATSURL+")")
	fs.BoolVar(&o.json, "json", false, "print each event as one line of JSON, as published")
	fs.BoolVar(&o.all, "all", false, "first replay every event the stream holds, then follow")
	fs.DurationVar(&o.since, "since", 0, "first replay the events of this last `duration` (e.g. 15m), then follow")
	fs.Var(&o.phones, "phone", "only events of this `phone`; repeat the flag or separate with commas")
	fs.Var(&o.statuses, "status", "only events entering this `status` (e.g. failed); repeat the flag or separate with commas")
	return fs
}

func tailUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: queuewatch tail [flags]

Prints queue.job.status_changed events as they are published, one readable
line each (or JSON lines with --json), until Ctrl-C. It reads the stream
through an ordered consumer: nothing is acknowledged or changed on the server.
Without --all or --since it prints new events only.

Flags:
`)
	fs := tailFlags(&tailOptions{})
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Environment: QUEUEWATCH_NATS_URL and the QUEUEWATCH_NATS_* credentials and TLS
settings, QUEUEWATCH_STREAM and QUEUEWATCH_SUBJECT (see queuewatch --help).
`)
}

// usageError is a mistake on the command line: exit 2, with the usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// tailCommand runs `queuewatch tail` and returns its exit status.
func tailCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := runTail(ctx, args, stdout, stderr)
	var usageErr usageError
	var cfgErr *config.Error
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		tailUsage(stdout)
		return exitOK
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "queuewatch tail: %v\n\n", err)
		tailUsage(stderr)
		return exitUsage
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "queuewatch tail: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "queuewatch tail: %v\n", err)
		return exitFailed
	}
}

// runTail is `queuewatch tail`: it prints the events of the stream until ctx
// is done, then returns nil.
func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o tailOptions
	fs := tailFlags(&o)
	fs.SetOutput(io.Discard) // tailCommand prints the usage
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	case o.all && o.since != 0:
		return usageError{"--all and --since cannot be used together"}
	case o.since < 0:
		return usageError{fmt.Sprintf("--since %s: want a positive duration such as 15m", o.since)}
	}
	cfg, err := config.Parse()
	if err != nil {
		return err
	}
	server := o.server
	if server == "" {
		server = cfg.NATSURL
	}
	if server == "" {
		server = defaultNATSURL
	}

	log := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zap.WarnLevel))
	nc, err := connect(cfg, server, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if !nc.IsConnected() { // the first attempt failed; connect retries in the background
		return fmt.Errorf("no NATS server reachable at %s (set --server or QUEUEWATCH_NATS_URL)", redactURLs(server))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	lookup, cancel := context.WithTimeout(ctx, 10*time.Second)
	stream, err := js.Stream(lookup, cfg.Stream)
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("stream %s not found at %s: is queuewatch running there? (%w)", cfg.Stream, redactURLs(server), err)
	case err != nil:
		return fmt.Errorf("look up stream %s at %s: %w", cfg.Stream, redactURLs(server), err)
	}

	cc := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{cfg.Subject, cfg.Subject + ".>"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	from := "new events"
	switch {
	case o.all:
		cc.DeliverPolicy, from = jetstream.DeliverAllPolicy, "all events held"
	case o.since > 0:
		start := time.Now().Add(-o.since)
		cc.DeliverPolicy, cc.OptStartTime, from = jetstream.DeliverByStartTimePolicy, &start, "events since "+start.Format(time.DateTime)
	}
	cons, err := stream.OrderedConsumer(ctx, cc)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("consumer on stream %s: %w", cfg.Stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read stream %s: %w", cfg.Stream, err)
	}
	defer it.Stop()
	fmt.Fprintf(stderr, "queuewatch tail: %s of stream %s at %s, then following. Ctrl-C stops.\n",
		from, cfg.Stream, nc.ConnectedUrlRedacted())

	pal := colourFor(stdout)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read stream %s: %w", cfg.Stream, err)
		}
		o.print(stdout, stderr, pal, m)
	}
}

// print writes m if it is an event that passes the filters.
func (o *tailOptions) print(stdout, stderr io.Writer, pal palette, m jetstream.Msg) {
	e, err := events.Decode(m.Data())
	if err != nil {
		seq := uint64(0)
		if md, mdErr := m.Metadata(); mdErr == nil {
			seq = md.Sequence.Stream
		}
		fmt.Fprintf(stderr, "queuewatch tail: skipping message %d on %s: %v\n", seq, m.Subject(), err)
		return
	}
	if len(o.phones) > 0 && !slices.Contains(o.phones, e.Data.Phone) ||
		len(o.statuses) > 0 && !slices.Contains(o.statuses, e.Data.Status) {
		return
	}
	if !o.json {
		fmt.Fprintln(stdout, formatEvent(e, pal))
		return
	}
	var line bytes.Buffer
	if err := json.Compact(&line, m.Data()); err != nil { // Decode accepted it, so it is JSON
		line.Reset()
		line.Write(m.Data())
	}
	line.WriteByte('\n')
	_, _ = stdout.Write(line.Bytes())
}

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for v := range strings.SplitSeq(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			return fmt.Errorf("empty value in %q", s)
		}
		*l = append(*l, v)
	}
	return nil
}

// redactURLs hides the user information (passwords, tokens) of
// comma-separated URLs.
func redactURLs(s string) string {
	return userInfo.ReplaceAllString(s, "${1}redacted@")
}

// userInfo matches the user info of a URL (user, password or token), even
// in a URL too malformed to parse.
var userInfo = regexp.MustCompile(`(://)[^/@\s,]*@`)
