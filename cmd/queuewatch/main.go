// Command queuewatch polls the Periskope WhatsApp API's message queue and
// publishes one queue.job.status_changed event per job transition to NATS
// JetStream.
//
// Usage:
//
//	queuewatch [run]   run the service, configured by QUEUEWATCH_* variables
//	queuewatch demo    embedded NATS + simulated API + live view of events
//	queuewatch tail    print events from NATS as they come
//	queuewatch --help  list the configuration variables
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/queuewatch/queuewatch/config"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd = args[0]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "run":
		err = runService(ctx, stderr)
	case "demo":
		err = runDemo(ctx, stdout, stderr)
	case "tail":
		return tailCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "queuewatch", version)
		return exitOK
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "queuewatch: unknown command %q\n\n", cmd)
		usage(stderr)
		return exitUsage
	}
	var cfgErr *config.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "queuewatch: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "queuewatch: %v\n", err)
		return exitFailed
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `queuewatch turns the Periskope message queue into queue.job.status_changed events on NATS.

Usage:
  queuewatch [run]    run the service (configured by the environment below)
  queuewatch demo     embedded NATS + simulated Periskope API + live view of events
  queuewatch tail     print events from NATS as they come (queuewatch tail --help)
  queuewatch version  print the version
  queuewatch --help   this help

Environment:
`)
	_ = config.Usage(w)
}
