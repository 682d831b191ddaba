// Package embednats starts an in-process nats-server with JetStream, for
// `queuewatch run` without QUEUEWATCH_NATS_URL, the demo and the tests.
package embednats

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options says where the server keeps its data and where it listens.
type Options struct {
	// StoreDir holds the JetStream data; it survives restarts.
	StoreDir string
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// SyncAlways makes JetStream fsync every write before acknowledging it.
	// Off, a single server acknowledges before its periodic (2 min) sync,
	// so an OS crash or power loss can lose acknowledged events.
	SyncAlways bool
}

// Start starts the server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "queuewatch-embedded",
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: o.SyncAlways,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready on %s within 15s", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
	}
	return s, nil
}

// SplitHostPort parses "host:port" for Options; port "0" becomes -1 (any
// free port).
func SplitHostPort(addr string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if n == 0 {
		n = -1
	}
	return h, n, nil
}
