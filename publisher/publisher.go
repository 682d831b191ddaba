// Package publisher puts queue.job.status_changed events on JetStream.
//
// It owns the stream (created if missing), the subject of each event, its
// CloudEvents JSON encoding and its headers. Publish waits for the stream's
// acknowledgement and sets Nats-Msg-Id to the event id, so a republished
// event (after a crash, a reconnect, or by another replica) is dropped by the
// stream's duplicate window. Publish does not retry: the worker owns retries
// and republishes with the same id.
package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/events"
)

// ErrUnpublishable is wrapped by Publish's error when the event can never
// be published as it is (invalid, not encodable, larger than the server
// accepts): retrying will not help.
var ErrUnpublishable = errors.New("publisher: event cannot be published")

// Config names the stream and subject and sets how the stream keeps events.
type Config struct {
	Stream  string // default events.Stream
	Subject string // root subject; default events.Subject
	// DuplicateWindow is how long the stream remembers event ids; it must
	// cover a worker restart.
	DuplicateWindow time.Duration
	// MaxAge bounds how long events are kept; 0 keeps them until removed.
	MaxAge   time.Duration
	Replicas int
	// Detail publishes on <subject>.<phone>.<status> instead of <subject>.
	Detail bool
}

// NATS publishes events to a JetStream stream. It is safe for concurrent use.
type NATS struct {
	js  jetstream.JetStream
	cfg Config
}

// New returns a publisher; call EnsureStream before the first Publish.
func New(js jetstream.JetStream, cfg Config) *NATS {
	if cfg.Stream == "" {
		cfg.Stream = events.Stream
	}
	if cfg.Subject == "" {
		cfg.Subject = events.Subject
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	return &NATS{js: js, cfg: cfg}
}

// Subjects returns the subjects the stream captures: the root subject and
// every detail subject below it.
func (p *NATS) Subjects() []string { return []string{p.cfg.Subject, p.cfg.Subject + ".>"} }

// EnsureStream creates the stream if it does not exist. An existing stream
// is kept as its operator configured it, except that its duplicate window is
// widened to Config.DuplicateWindow; a stream that does not capture the
// subjects is an error.
func (p *NATS) EnsureStream(ctx context.Context) error {
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = p.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        p.cfg.Stream,
			Description: "queuewatch: queue.job.status_changed events",
			Subjects:    p.Subjects(),
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      p.cfg.MaxAge,
			Duplicates:  p.cfg.DuplicateWindow,
			Replicas:    p.cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return p.EnsureStream(ctx) // another replica won the race
		}
		if err != nil {
			return fmt.Errorf("create stream %s: %w", p.cfg.Stream, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", p.cfg.Stream, err)
	}
	cfg := s.CachedInfo().Config
	for _, want := range p.Subjects() {
		if !slices.Contains(cfg.Subjects, want) {
			return fmt.Errorf("stream %s exists but does not capture subject %q (it has %v): add the subject or choose another QUEUEWATCH_STREAM", p.cfg.Stream, want, cfg.Subjects)
		}
	}
	if cfg.Duplicates < p.cfg.DuplicateWindow {
		cfg.Duplicates = p.cfg.DuplicateWindow
		if _, err := p.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("widen duplicate window of stream %s: %w", p.cfg.Stream, err)
		}
	}
	return nil
}

// Subject returns the subject e is published on.
func (p *NATS) Subject(e events.Event) string {
	if p.cfg.Detail {
		return events.DetailSubject(p.cfg.Subject, e.Data.Phone, e.Data.Status)
	}
	return p.cfg.Subject
}

// Encode returns the NATS message for e.
func (p *NATS) Encode(e events.Event) (*nats.Msg, error) {
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("%w: event %s of job %s: %w", ErrUnpublishable, e.ID, e.Data.QueueID, err)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: encode event %s of job %s: %w", ErrUnpublishable, e.ID, e.Data.QueueID, err)
	}
	m := nats.NewMsg(p.Subject(e))
	m.Data = body
	m.Header.Set(events.HeaderMsgID, e.ID)
	m.Header.Set(events.HeaderContentType, events.ContentType)
	m.Header.Set(events.HeaderType, e.Type)
	m.Header.Set(events.HeaderID, e.ID)
	m.Header.Set(events.HeaderPhone, e.Data.Phone)
	m.Header.Set(events.HeaderStatus, e.Data.Status)
	return m, nil
}

// Publish sends e and waits for the stream to store it. A repeat of an id
// still inside the duplicate window is acknowledged without being stored
// again, and is not an error. If no stream captures the subject (the stream
// was deleted), Publish recreates it once and retries.
func (p *NATS) Publish(ctx context.Context, e events.Event) error {
	m, err := p.Encode(e)
	if err != nil {
		return err
	}
	_, err = p.js.PublishMsg(ctx, m, jetstream.WithExpectStream(p.cfg.Stream))
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if err := p.EnsureStream(ctx); err != nil {
			return fmt.Errorf("publish event %s: stream missing: %w", e.ID, err)
		}
		_, err = p.js.PublishMsg(ctx, m, jetstream.WithExpectStream(p.cfg.Stream))
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("%w: event %s of job %s is %d bytes: %w", ErrUnpublishable, e.ID, e.Data.QueueID, len(m.Data), err)
	}
	if err != nil {
		return fmt.Errorf("publish event %s of job %s: %w", e.ID, e.Data.QueueID, err)
	}
	return nil
}
