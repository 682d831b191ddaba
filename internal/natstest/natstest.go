// Package natstest runs a real nats-server with JetStream inside a test
// process, on a free loopback port and a temporary store, and can restart it
// on the same port and store to test reconnects.
package natstest

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/internal/embednats"
)

// Server is a running in-process JetStream server.
type Server struct {
	t        testing.TB
	srv      *server.Server
	storeDir string
	port     int
}

// Run starts a server that is shut down when the test ends.
func Run(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, storeDir: t.TempDir(), port: -1}
	s.start()
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := embednats.Start(embednats.Options{StoreDir: s.storeDir, Port: s.port})
	if err != nil {
		s.t.Fatalf("start nats-server: %v", err)
	}
	s.srv = srv
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		s.t.Fatalf("client url: %v", err)
	}
	s.port, _ = strconv.Atoi(u.Port())
}

// URL is the client URL; it stays the same across restarts.
func (s *Server) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// Shutdown stops the server (idempotent).
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// Restart stops the server and starts it again on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.start()
}

// Connect dials the server with reconnects that never give up, and closes
// the connection when the test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
