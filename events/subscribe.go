package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// SubscribeOptions configures Subscribe. Only Durable is required.
type SubscribeOptions struct {
	// Durable names the JetStream consumer. The instances of one service
	// share it (and so share the events); each service needs its own name.
	// A new durable starts with the oldest event the stream holds.
	Durable string
	// Stream holds the events; default Stream.
	Stream string
	// Subject is the root subject; default Subject. The consumer takes
	// <Subject> and <Subject>.> (the detail subjects).
	Subject string
	// FilterSubjects, if set, replaces that filter, e.g.
	// {"queue.job.status_changed.*.failed"} for failures only when
	// queuewatch publishes detail subjects.
	FilterSubjects []string
	// MaxDeliver is how many times an event is delivered before it is given
	// up: after the handler failed on the last delivery, the event is
	// terminated and logged. Default 10.
	MaxDeliver int
	// BackOff[n-1] is the delay before the event is delivered again after
	// the handler's n-th failure; the last entry repeats. Default 1s, 5s,
	// 30s, 1m, 5m.
	BackOff []time.Duration
	// AckWait is how long the server waits for the handler before it
	// delivers the event again (to this or another instance). Default 30s.
	AckWait time.Duration
	// MaxAckPending caps events delivered but not yet acknowledged, over all
	// instances; default 1000.
	MaxAckPending int
	// Logger receives malformed events and handler failures; nil logs
	// nothing.
	Logger *zap.Logger
}

// DefaultBackOff is the redelivery schedule when SubscribeOptions.BackOff
// is empty.
var DefaultBackOff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute}

// pullBatch is how many events Subscribe buffers ahead of the handler: few,
// so that buffered events do not wait out their AckWait behind a slow
// handler.
const pullBatch = 16

// Delivery describes the message a handler is processing; see
// DeliveryFrom.
type Delivery struct {
	Subject  string    // the NATS subject it was published on
	Sequence uint64    // its sequence in the stream
	Attempt  uint64    // 1 on the first delivery, 2 on the first redelivery, …
	Stored   time.Time // when the stream stored it
}

type deliveryKey struct{}

// DeliveryFrom returns the delivery of the event whose handler got ctx.
func DeliveryFrom(ctx context.Context) (Delivery, bool) {
	d, ok := ctx.Value(deliveryKey{}).(Delivery)
	return d, ok
}

// Subscribe consumes the events of the stream through the durable pull
// consumer o.Durable (created, or updated to o, with explicit acks) and calls
// handler for each one, one at a time, until ctx is done; it then returns
// nil. It returns an error if the consumer cannot be set up (e.g. the stream
// does not exist yet) or is deleted while in use.
//
// A nil error from handler acknowledges the event. An error makes it come
// back after the next o.BackOff delay, up to o.MaxDeliver deliveries; then
// it is terminated and logged. A message that is not a valid event is
// terminated and logged at once, so it never holds back the others.
//
// The handler's ctx is done when Subscribe's is. An event whose handler was
// interrupted that way, and the few buffered ahead of the handler, are
// delivered again (to another instance, or on the next start), at the
// latest after AckWait. Handlers should be idempotent: delivery is at least
// once.
func Subscribe(ctx context.Context, js jetstream.JetStream, o SubscribeOptions, handler func(context.Context, Event) error) error {
	o = o.withDefaults()
	if o.Durable == "" {
		return errors.New("events: subscribe: SubscribeOptions.Durable is required")
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, o.Stream, jetstream.ConsumerConfig{
		Durable:        o.Durable,
		Description:    "queuewatch events consumer",
		FilterSubjects: o.FilterSubjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        o.AckWait,
		MaxDeliver:     o.MaxDeliver,
		MaxAckPending:  o.MaxAckPending,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("events: subscribe %s: stream %s does not exist (queuewatch creates it on start): %w", o.Durable, o.Stream, err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("events: subscribe %s: consumer on stream %s: %w", o.Durable, o.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBatch))
	if err != nil {
		return fmt.Errorf("events: subscribe %s: pull from stream %s: %w", o.Durable, o.Stream, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			if m != nil {
				o.interrupted(it, m)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("events: subscribe %s: %w", o.Durable, err)
		}
		if !o.handle(ctx, m, handler) {
			o.interrupted(it, m)
			return nil
		}
	}
}

// interrupted gives back an event that was not handled because ctx ended,
// so that another instance (or the next start) can take it without waiting
// out AckWait. Best effort: if the server hands it straight back to the
// closing pull subscription, it does come back after AckWait.
func (o SubscribeOptions) interrupted(it jetstream.MessagesContext, m jetstream.Msg) {
	it.Stop()
	settle(o.Logger, "nak", m.Nak())
}

func (o SubscribeOptions) withDefaults() SubscribeOptions {
	if o.Stream == "" {
		o.Stream = Stream
	}
	if o.Subject == "" {
		o.Subject = Subject
	}
	if len(o.FilterSubjects) == 0 {
		o.FilterSubjects = []string{o.Subject, o.Subject + ".>"}
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 10
	}
	if len(o.BackOff) == 0 {
		o.BackOff = DefaultBackOff
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 1000
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// handle decodes m, runs handler and settles m: Ack, NakWithDelay or Term.
// It returns false, leaving m unsettled, if ctx ended while the handler ran
// and the handler failed.
func (o SubscribeOptions) handle(ctx context.Context, m jetstream.Msg, handler func(context.Context, Event) error) bool {
	d := Delivery{Subject: m.Subject(), Attempt: 1}
	if md, err := m.Metadata(); err == nil {
		d.Sequence, d.Attempt, d.Stored = md.Sequence.Stream, md.NumDelivered, md.Timestamp
	}
	log := o.Logger.With(zap.String("durable", o.Durable), zap.String("subject", d.Subject), zap.Uint64("stream_seq", d.Sequence))

	ev, err := Decode(m.Data())
	if err != nil {
		log.Warn("terminating a malformed event", zap.Error(err))
		settle(log, "term", m.TermWithReason("malformed event"))
		return true
	}
	log = log.With(zap.String("event_id", ev.ID), zap.Uint64("attempt", d.Attempt))
	err = handler(context.WithValue(ctx, deliveryKey{}, d), ev)
	switch {
	case err == nil:
		settle(log, "ack", m.Ack())
	case ctx.Err() != nil:
		return false
	case d.Attempt >= uint64(o.MaxDeliver):
		log.Error("handler failed on the last delivery; giving the event up", zap.Error(err), zap.Int("max_deliver", o.MaxDeliver))
		settle(log, "term", m.TermWithReason(fmt.Sprintf("handler failed %d times", d.Attempt)))
	default:
		delay := o.BackOff[min(int(d.Attempt), len(o.BackOff))-1]
		log.Warn("handler failed; the event comes back later", zap.Error(err), zap.Duration("retry_in", delay))
		settle(log, "nak", m.NakWithDelay(delay))
	}
	return true
}

// settle logs a failed acknowledgement; the server redelivers after AckWait.
func settle(log *zap.Logger, what string, err error) {
	if err != nil {
		log.Warn("could not settle the event; the server redelivers it after AckWait", zap.String("reply", what), zap.Error(err))
	}
}
