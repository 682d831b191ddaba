package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/queuewatch/queuewatch/metrics"
	"github.com/queuewatch/queuewatch/snapshot"
	"github.com/queuewatch/queuewatch/worker"
)

// stallLimit is how long a poll loop may be busy without progress before
// /livez fails. Every request and commit is bounded far below it.
const stallLimit = 5 * time.Minute

// health is what /livez and /readyz report; the pipeline fills it in as it
// starts.
type health struct {
	nc       atomic.Pointer[nats.Conn]
	store    atomic.Pointer[snapshot.KV] // set once the stream and bucket are ready
	worker   atomic.Pointer[worker.Worker]
	stopping atomic.Bool
}

// live fails only if a poll loop is stuck: never because Periskope or NATS
// are down, so an outage cannot cause a restart storm.
func (h *health) live() error {
	if w := h.worker.Load(); w != nil {
		return w.Stalled(stallLimit)
	}
	return nil
}

// ready says whether this replica is doing its job.
func (h *health) ready() error {
	switch nc := h.nc.Load(); {
	case h.stopping.Load():
		return errors.New("shutting down")
	case nc == nil || nc.Status() != nats.CONNECTED:
		status := "not connected"
		if nc != nil {
			status = nc.Status().String()
		}
		return fmt.Errorf("NATS: %s", status)
	case h.store.Load() == nil:
		return errors.New("stream and snapshot bucket not ready yet")
	}
	if w := h.worker.Load(); w != nil && w.CredentialsRejected() {
		return errors.New("the Periskope API rejects the credentials (QUEUEWATCH_API_KEY)")
	}
	return nil
}

func (h *health) trackedJobs() int {
	if s := h.store.Load(); s != nil {
		return s.Len()
	}
	return 0
}

// handler serves /metrics, /livez (and its alias /healthz) and /readyz.
func (h *health) handler(m *metrics.Metrics) http.Handler {
	check := func(f func() error) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			if err := f(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ok: %v\n", err)
				return
			}
			fmt.Fprintln(w, "ok")
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /livez", check(h.live))
	mux.Handle("GET /healthz", check(h.live))
	mux.Handle("GET /readyz", check(h.ready))
	return mux
}

// serveHTTP listens on addr and serves until ctx ends, then shuts down.
// The listener is bound before it returns, so a bad address fails at start.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *zap.Logger) (wait func() error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (QUEUEWATCH_HTTP_ADDR): %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Info("serving health and metrics", zap.String("addr", ln.Addr().String()))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			return serr
		}
		return err
	}, nil
}
