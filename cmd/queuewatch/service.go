package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/queuewatch/queuewatch/config"
	"github.com/queuewatch/queuewatch/internal/embednats"
	"github.com/queuewatch/queuewatch/metrics"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/publisher"
	"github.com/queuewatch/queuewatch/snapshot"
	"github.com/queuewatch/queuewatch/worker"
)

// runService is `queuewatch run`: load the configuration, connect to NATS
// (or start the embedded server), and poll until ctx ends.
func runService(ctx context.Context, stderr io.Writer) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	natsURL := cfg.NATSURL
	if cfg.EmbeddedNATS() {
		srv, err := startEmbedded(cfg, log)
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		natsURL = srv.ClientURL()
	}
	h := &health{}
	m := metrics.New(version, h.trackedJobs)
	// The HTTP server outlives ctx: /readyz answers 503 while in-flight work
	// drains after SIGTERM, and it stops once the pipeline has returned.
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	waitHTTP, err := serveHTTP(httpCtx, cfg.HTTPAddr, h.handler(m), log)
	if err != nil {
		return err
	}
	defer func() {
		stopHTTP()
		if err := waitHTTP(); err != nil {
			log.Warn("HTTP server", zap.Error(err))
		}
	}()

	nc, err := connect(cfg, natsURL, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	h.nc.Store(nc)

	client, err := periskope.NewClient(periskope.Options{
		BaseURL:       cfg.APIURL,
		APIKey:        cfg.APIKey.Reveal(),
		Timeout:       cfg.RequestTimeout,
		UserAgent:     "queuewatch/" + version,
		WrapTransport: m.InstrumentTransport,
	})
	if err != nil {
		return fmt.Errorf("periskope client: %w", err)
	}
	defer client.CloseIdleConnections()
	p := pipeline{cfg: cfg, log: log, lister: client, targets: cfg.Targets(), health: h, observer: m}
	// Every publish and commit waited for its acknowledgement, so there is
	// nothing to drain: the deferred Close ends the connection.
	return p.run(ctx, nc)
}

// pipeline wires the stream, the snapshot bucket and the worker for a lister
// and runs them; the service and the demo share it.
type pipeline struct {
	cfg     *config.Config
	log     *zap.Logger
	lister  worker.Lister
	targets []periskope.Target
	// emitBaseline overrides cfg.EmitBaseline when set (the demo).
	emitBaseline *bool
	// health, if set, is told what is ready; observer, if set, counts.
	health   *health
	observer worker.Observer
}

// run sets up the stream and bucket (retrying while NATS is unreachable),
// then polls until ctx ends. Shutdown waits for in-flight commits, up to
// the configured grace period.
func (p pipeline) run(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	pub := publisher.New(js, publisher.Config{
		Stream:          p.cfg.Stream,
		Subject:         p.cfg.Subject,
		DuplicateWindow: p.cfg.DuplicateWindow,
		MaxAge:          p.cfg.StreamMaxAge,
		Replicas:        p.cfg.Replicas,
		Detail:          p.cfg.SubjectDetail,
	})
	var store *snapshot.KV
	setup := func() error {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := pub.EnsureStream(sctx); err != nil {
			return err
		}
		store, err = snapshot.Open(sctx, js, snapshot.Config{Bucket: p.cfg.KVBucket, TTL: p.cfg.SnapshotTTL, Replicas: p.cfg.Replicas})
		return err
	}
	notify := func(err error, wait time.Duration) {
		p.log.Warn("NATS setup failed; retrying", zap.Error(err), zap.Duration("retry_in", wait))
	}
	if err := backoff.RetryNotify(setup, backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0)), ctx), notify); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before we started
		}
		return err
	}
	emit := p.cfg.EmitBaseline
	if p.emitBaseline != nil {
		emit = *p.emitBaseline
	}
	w := worker.New(p.lister, pub, store, p.targets, worker.Options{
		PollInterval:  p.cfg.PollInterval,
		EmitBaseline:  emit,
		SnapshotTTL:   p.cfg.SnapshotTTL,
		CommitTimeout: p.cfg.RequestTimeout,
		RateLimit:     p.cfg.RateLimit,
		Logger:        p.log,
		Observer:      p.observer,
	})
	if p.health != nil {
		p.health.worker.Store(w)
		p.health.store.Store(store)
	}
	p.log.Info("polling", zap.Int("targets", len(p.targets)), zap.Duration("interval", p.cfg.PollInterval),
		zap.String("stream", p.cfg.Stream), zap.String("subject", p.cfg.Subject), zap.String("bucket", p.cfg.KVBucket))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		store.Watch(gctx, 2*time.Second, func(err error) { p.log.Warn("snapshot watcher stopped; re-watching", zap.Error(err)) })
		return nil
	})
	g.Go(func() error { return w.Run(gctx) })
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	if p.health != nil {
		p.health.stopping.Store(true)
	}
	p.log.Info("shutting down: finishing in-flight publishes and commits", zap.Duration("grace", p.cfg.ShutdownGrace))
	select {
	case err := <-done:
		p.log.Info("stopped cleanly")
		return err
	case <-time.After(p.cfg.ShutdownGrace):
		return fmt.Errorf("shutdown: work still in flight after %s (QUEUEWATCH_SHUTDOWN_GRACE)", p.cfg.ShutdownGrace)
	}
}

func startEmbedded(cfg *config.Config, log *zap.Logger) (*server.Server, error) {
	host, port, err := embednats.SplitHostPort(cfg.NATSListen)
	if err != nil {
		return nil, &config.Error{Var: "QUEUEWATCH_NATS_LISTEN", Problem: err.Error(), Expected: "host:port"}
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err == nil {
		err = os.MkdirAll(dir, 0o750)
	}
	if err != nil {
		return nil, fmt.Errorf("data dir %s (QUEUEWATCH_DATA_DIR): %w", cfg.DataDir, err)
	}
	srv, err := embednats.Start(embednats.Options{StoreDir: dir, Host: host, Port: port})
	if err != nil {
		return nil, err
	}
	log.Info("started embedded NATS server with JetStream; consumers can connect",
		zap.String("url", srv.ClientURL()), zap.String("data_dir", dir),
		zap.String("note", "a single embedded server acknowledges before fsync; run a replicated NATS cluster in production"))
	return srv, nil
}

// connect dials NATS with the configured credentials and reconnects forever.
func connect(cfg *config.Config, url string, log *zap.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("queuewatch"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", zap.String("url", nc.ConnectedUrlRedacted())) }),
	}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword.Reveal()))
	}
	if cfg.NATSToken.Reveal() != "" {
		opts = append(opts, nats.Token(cfg.NATSToken.Reveal()))
	}
	if cfg.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSTLSCert, cfg.NATSTLSKey))
	}
	if cfg.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSTLSCA))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		// The error text can quote a URL, and a URL can hold a password or
		// token: the error is told again without them (so it cannot wrap).
		msg := err.Error()
		for _, u := range strings.Split(url, ",") {
			if u = strings.TrimSpace(u); u != "" {
				msg = strings.ReplaceAll(msg, u, redactURLs(u))
			}
		}
		return nil, fmt.Errorf("connect to NATS at %s: %s", redactURLs(url), msg)
	}
	return nc, nil
}

// newLogger builds the zap logger LOG_LEVEL and LOG_FORMAT ask for.
func newLogger(cfg *config.Config, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, &config.Error{Var: "QUEUEWATCH_LOG_LEVEL", Problem: err.Error(), Expected: "debug, info, warn or error"}
	}
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)), nil
}
