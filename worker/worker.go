package worker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/queuewatch/queuewatch/diff"
	"github.com/queuewatch/queuewatch/events"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/publisher"
	"github.com/queuewatch/queuewatch/snapshot"
)

// Lister lists the jobs of a target (periskope.Client).
type Lister interface {
	ListJobs(ctx context.Context, t periskope.Target) (*periskope.Result, error)
}

// Publisher publishes an event and waits for it to be stored
// (publisher.NATS).
type Publisher interface {
	Publish(ctx context.Context, e events.Event) error
}

// Store keeps job snapshots and baseline markers (snapshot.KV). Create and
// Update return an error wrapping snapshot.ErrConflict when they lose a
// compare-and-set.
type Store interface {
	Cached(key string) (snapshot.Record, bool)
	Get(ctx context.Context, key string) (snapshot.Record, uint64, bool, error)
	Create(ctx context.Context, key string, rec snapshot.Record) (uint64, error)
	Update(ctx context.Context, key string, rec snapshot.Record, rev uint64) (uint64, error)
	Baselined(ctx context.Context, t periskope.Target) (time.Time, error)
	MarkBaselined(ctx context.Context, t periskope.Target, at time.Time) error
}

// Observer is told what the worker does, for metrics. Its methods must be
// safe for concurrent use and must not block.
type Observer interface {
	// PollFinished reports one poll of t: how long it took and how it ended.
	PollFinished(t periskope.Target, took time.Duration, err error)
	// EventPublished reports an event stored by the stream.
	EventPublished(status string)
	// PublishFailed reports an event the stream did not acknowledge.
	PublishFailed()
	// SnapshotConflict reports a lost compare-and-set.
	SnapshotConflict()
	// StaleRead reports a job the API returned in an older state than known.
	StaleRead()
}

type nopObserver struct{}

func (nopObserver) PollFinished(periskope.Target, time.Duration, error) {}
func (nopObserver) EventPublished(string)                               {}
func (nopObserver) PublishFailed()                                      {}
func (nopObserver) SnapshotConflict()                                   {}
func (nopObserver) StaleRead()                                          {}

// Options tune a Worker; the zero value of each field picks its default.
type Options struct {
	// PollInterval is the pause between successful polls of a target (5s).
	PollInterval time.Duration
	// EmitBaseline publishes events for the jobs found on a target's first
	// poll instead of recording them silently.
	EmitBaseline bool
	// SnapshotTTL is the bucket's TTL; snapshots of jobs still returned by
	// the API are rewritten after half of it so they do not expire (168h).
	SnapshotTTL time.Duration
	// CommitTimeout bounds one job's read+publish+commit, which is finished
	// even after shutdown has begun (10s).
	CommitTimeout time.Duration
	// RateLimit caps API requests per second over all targets; 0 = no cap.
	RateLimit float64
	// Backoff returns the retry policy after failed polls (exponential from
	// 1s to 2m with jitter), and AuthBackoff the one while the API rejects
	// the credentials (from 12 poll intervals, 1m by default, to 15m).
	Backoff, AuthBackoff func() backoff.BackOff
	Logger               *zap.Logger
	// Observer is told about polls, events and conflicts (for metrics).
	Observer Observer
	// Now is the clock (time.Now).
	Now func() time.Time
	// AfterPoll, if set, is called after every poll of a target with its
	// outcome. Tests use it to wait for progress instead of sleeping.
	AfterPoll func(t periskope.Target, err error)
	// AfterPublish, if set, runs between an event's publish and the commit
	// of its snapshot; an error aborts the poll there, as a crash would.
	AfterPublish func(key string) error
}

// maxConflicts bounds how often one job is re-read after losing a
// compare-and-set before the poll fails and is retried later.
const maxConflicts = 8

// Worker polls targets and turns their job changes into events.
type Worker struct {
	lister  Lister
	pub     Publisher
	store   Store
	targets []periskope.Target
	o       Options
	log     *zap.Logger
	obs     Observer
	limiter *rate.Limiter

	rejected atomic.Int32 // targets whose credentials the API rejects now
	busy     sync.Map     // periskope.Target -> *atomic.Int64: unix nanos of the last progress while busy, 0 while waiting
}

// New returns a worker for targets. Run starts it.
func New(l Lister, p Publisher, s Store, targets []periskope.Target, o Options) *Worker {
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.SnapshotTTL <= 0 {
		o.SnapshotTTL = 168 * time.Hour
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 10 * time.Second
	}
	if o.Backoff == nil {
		o.Backoff = func() backoff.BackOff { return expBackoff(time.Second, 2*time.Minute) }
	}
	if o.AuthBackoff == nil {
		first := min(12*o.PollInterval, 15*time.Minute) // 1m at the default interval
		o.AuthBackoff = func() backoff.BackOff { return expBackoff(first, 15*time.Minute) }
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	limit := rate.Inf
	if o.RateLimit > 0 {
		limit = rate.Limit(o.RateLimit)
	}
	return &Worker{
		lister: l, pub: p, store: s, o: o, log: o.Logger, obs: o.Observer,
		targets: slices.Clone(targets),
		limiter: rate.NewLimiter(limit, 1),
	}
}

func expBackoff(initial, max time.Duration) backoff.BackOff {
	return capped{backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(initial),
		backoff.WithMaxInterval(max),
		backoff.WithMaxElapsedTime(0), // never give up
	), max}
}

// capped keeps a jittered backoff at or below its maximum (the jitter
// alone would take it up to 1.5 times over).
type capped struct {
	backoff.BackOff
	max time.Duration
}

func (c capped) NextBackOff() time.Duration { return min(c.BackOff.NextBackOff(), c.max) }

// Run polls every target until ctx is done, then returns nil once in-flight
// publishes and commits have finished.
func (w *Worker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, t := range w.targets {
		wg.Go(func() { w.loop(ctx, t) })
	}
	wg.Wait()
	return nil
}

// CredentialsRejected reports whether the API currently rejects the
// credentials for any target.
func (w *Worker) CredentialsRejected() bool { return w.rejected.Load() > 0 }

// Stalled returns an error if a poll loop has been busy without progress
// (a finished request or job) for longer than limit. A loop waiting for its
// next poll or backoff is never stalled, however long the wait: an API or
// NATS outage shows as errors and backoff, not as a stall.
func (w *Worker) Stalled(limit time.Duration) error {
	now := w.o.Now()
	var err error
	w.busy.Range(func(k, v any) bool {
		if since := v.(*atomic.Int64).Load(); since != 0 && now.Sub(time.Unix(0, since)) > limit {
			err = fmt.Errorf("poll loop of %s made no progress for %s", MaskTarget(k.(periskope.Target)), now.Sub(time.Unix(0, since)).Round(time.Second))
			return false
		}
		return true
	})
	return err
}

// progress marks that the loop of t is busy and moving.
func (w *Worker) progress(hb *atomic.Int64) { hb.Store(w.o.Now().UnixNano()) }

// loop polls one target until ctx is done.
func (w *Worker) loop(ctx context.Context, t periskope.Target) {
	log := w.logger(t)
	st := &targetState{backoff: w.o.Backoff(), authBackoff: w.o.AuthBackoff(), rejected: &w.rejected}
	hb := new(atomic.Int64)
	w.busy.Store(t, hb)
	defer st.setRejected(false)
	for {
		w.progress(hb)
		start := w.o.Now()
		err := w.poll(ctx, t, st, hb)
		hb.Store(0)
		if ctx.Err() != nil {
			return
		}
		w.obs.PollFinished(t, w.o.Now().Sub(start), err)
		if w.o.AfterPoll != nil {
			w.o.AfterPoll(t, err)
		}
		wait := st.next(err, w.o.PollInterval, log)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// targetState is what a target's loop remembers between polls.
type targetState struct {
	backoff, authBackoff backoff.BackOff
	authRejected         bool
	rejected             *atomic.Int32 // the worker's count of rejected targets; may be nil
	failing              bool
	baselinedAt          time.Time // zero until known
}

// setRejected records whether the API rejects this target's credentials.
func (st *targetState) setRejected(r bool) {
	if r != st.authRejected && st.rejected != nil {
		if r {
			st.rejected.Add(1)
		} else {
			st.rejected.Add(-1)
		}
	}
	st.authRejected = r
}

// next returns how long to wait after a poll that returned err, and logs
// state changes once rather than on every poll.
func (st *targetState) next(err error, interval time.Duration, log *zap.Logger) time.Duration {
	var se *periskope.StatusError
	auth := errors.As(err, &se) && se.AuthRejected()
	switch {
	case err == nil:
		if st.authRejected || st.failing {
			log.Info("polling recovered")
		}
		st.setRejected(false)
		st.failing = false
		st.backoff.Reset()
		st.authBackoff.Reset()
		return interval
	case auth:
		if !st.authRejected {
			log.Error("Periskope API rejected the credentials; backing off until they work (check QUEUEWATCH_API_KEY)", zap.Int("http_status", se.StatusCode))
		}
		st.setRejected(true)
		return st.authBackoff.NextBackOff()
	}
	wait := st.backoff.NextBackOff()
	if ra, ok := periskope.RetryAfter(err); ok && ra > wait {
		wait = ra
	}
	if !st.failing {
		log.Warn("poll failed; retrying with backoff", zap.Error(err), zap.Duration("retry_in", wait))
	} else {
		log.Debug("poll failed again", zap.Error(err), zap.Duration("retry_in", wait))
	}
	st.failing = true
	return wait
}

// poll lists a target's jobs once and handles each; the first failure ends
// the poll (what was committed before it stays committed).
func (w *Worker) poll(ctx context.Context, t periskope.Target, st *targetState, hb *atomic.Int64) error {
	if err := w.limiter.Wait(ctx); err != nil {
		return err
	}
	w.progress(hb)
	res, err := w.lister.ListJobs(ctx, t)
	if err != nil {
		return err
	}
	w.progress(hb)
	for _, bad := range res.Invalid {
		w.logger(t).Warn("skipped an invalid job in the API response", zap.Error(bad))
	}
	now := w.o.Now().UTC()
	if st.baselinedAt.IsZero() {
		if st.baselinedAt, err = w.store.Baselined(ctx, t); err != nil {
			return err
		}
	}
	baseline := st.baselinedAt.IsZero() && !w.o.EmitBaseline
	for _, j := range res.Jobs {
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: start no new job
		}
		if j.Status == "" {
			// Nothing to announce or compare: an event needs a status, and
			// one such item must not fail the poll for all the others.
			w.logger(t).Warn("skipped a job without a status in the API response", zap.String("queue_id", j.QueueID))
			continue
		}
		if err := w.handle(ctx, t, j, baseline, now); err != nil {
			return err
		}
		w.progress(hb)
	}
	if st.baselinedAt.IsZero() || now.Sub(st.baselinedAt) > w.o.SnapshotTTL/2 {
		if err := w.store.MarkBaselined(ctx, t, now); err != nil {
			return err
		}
		if baseline {
			w.logger(t).Info("recorded baseline", zap.Int("jobs", len(res.Jobs)))
		}
		st.baselinedAt = now
	}
	return nil
}

// handle applies one polled job: diff, then publish and commit if needed.
func (w *Worker) handle(ctx context.Context, t periskope.Target, j periskope.Job, baseline bool, now time.Time) error {
	key := snapshot.JobKey(t.Phone, j.QueueID)
	cur := diffJob(j)
	if rec, found := w.store.Cached(key); found {
		// The cache only lags the bucket, and the bucket only moves forward,
		// so "unchanged" or "stale" against the cache holds against the
		// bucket too. Anything else is decided again on a fresh read.
		if w.nothingToWrite(t, j, rec, diff.Compare(rec.Snapshot, true, cur, baseline), now) {
			return nil
		}
	}
	// From here the job's read+publish+commit is finished even if shutdown
	// begins: cutting it short would be safe, finishing it is tidier.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.o.CommitTimeout)
	defer cancel()
	for range maxConflicts {
		rec, rev, found, err := w.store.Get(ctx, key)
		if errors.Is(err, snapshot.ErrNotSnapshot) {
			// Something else wrote the key: decide as if nothing were
			// known of the job, and overwrite it at its revision.
			w.logger(t).Warn("replacing a snapshot key that holds something else", zap.String("queue_id", j.QueueID), zap.Error(err))
			rec, err = snapshot.Record{}, nil
		}
		if err != nil {
			return err
		}
		d := diff.Compare(rec.Snapshot, found, cur, baseline)
		if w.nothingToWrite(t, j, rec, d, now) {
			return nil
		}
		if d.Kind == diff.Event {
			if err := w.pub.Publish(ctx, event(t, j, d, now)); err != nil {
				w.obs.PublishFailed()
				if errors.Is(err, publisher.ErrUnpublishable) {
					// Retrying cannot help, and failing the poll would hold
					// back every job after this one: skip it, commit nothing.
					w.logger(t).Error("skipped a job whose event cannot be published", zap.String("queue_id", j.QueueID), zap.Error(err))
					return nil
				}
				return err
			}
			w.obs.EventPublished(j.Status)
			if w.o.AfterPublish != nil {
				if err := w.o.AfterPublish(key); err != nil {
					return err
				}
			}
		}
		next := snapshot.Record{Snapshot: d.Next, SeenAt: now}
		if found {
			_, err = w.store.Update(ctx, key, next, rev)
		} else {
			_, err = w.store.Create(ctx, key, next)
		}
		if !errors.Is(err, snapshot.ErrConflict) {
			return err
		}
		w.obs.SnapshotConflict()
		w.logger(t).Debug("snapshot changed under us; deciding again", zap.String("queue_id", j.QueueID))
	}
	return fmt.Errorf("job %s: gave up after %d snapshot conflicts", j.QueueID, maxConflicts)
}

// stale notes a read older than the stored snapshot.
func (w *Worker) stale(t periskope.Target, rec snapshot.Record, j periskope.Job) {
	w.obs.StaleRead()
	if !w.log.Core().Enabled(zap.DebugLevel) {
		return // stale reads can come by the thousand: skip building the logger
	}
	w.logger(t).Debug("ignored a stale read", zap.String("queue_id", j.QueueID),
		zap.String("stored", rec.Status), zap.Int("stored_attempts", rec.Attempts),
		zap.String("read", j.Status), zap.Int("read_attempts", j.Attempts))
}

// nothingToWrite reports whether decision d against rec leaves the job's
// snapshot as it is: a stale read (noted) or no change, unless the
// snapshot is old enough to be rewritten before the bucket expires it.
func (w *Worker) nothingToWrite(t periskope.Target, j periskope.Job, rec snapshot.Record, d diff.Decision, now time.Time) bool {
	switch {
	case d.Kind == diff.Stale:
		w.stale(t, rec, j)
		return true
	case d.Kind == diff.None:
		return !w.needsRefresh(rec, now)
	}
	return false
}

func (w *Worker) needsRefresh(rec snapshot.Record, now time.Time) bool {
	return now.Sub(rec.SeenAt) > w.o.SnapshotTTL/2
}

// diffJob maps an API job to what diff compares.
func diffJob(j periskope.Job) diff.Job {
	return diff.Job{Status: j.Status, Attempts: j.Attempts, Digest: digest(j)}
}

// digest summarises the fields whose change updates a snapshot silently.
// It runs for every polled job, so it avoids fmt and keeps allocations few.
func digest(j periskope.Job) string {
	h := sha256.New()
	buf := make([]byte, 0, 256)
	field := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	for _, s := range [...]string{j.UniqueID, j.MessageID, j.ChatID, j.BroadcastID, j.StatusDescription} {
		field(s)
	}
	keys := make([]string, 0, len(j.Timeline))
	for k := range j.Timeline {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field(k)
		buf = binary.AppendVarint(buf, j.Timeline[k].UnixNano())
	}
	h.Write(buf)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:8])
}

// event builds the event announcing decision d for job j of target t.
func event(t periskope.Target, j periskope.Job, d diff.Decision, now time.Time) events.Event {
	broadcast := j.BroadcastID
	if broadcast == "" {
		broadcast = t.BroadcastID
	}
	return events.New(diff.EventID(t.Phone, j.QueueID, j.Status, j.Attempts), events.Data{
		Phone:             t.Phone,
		QueueID:           j.QueueID,
		UniqueID:          j.UniqueID,
		MessageID:         j.MessageID,
		ChatID:            j.ChatID,
		BroadcastID:       broadcast,
		PreviousStatus:    d.PreviousStatus,
		Status:            j.Status,
		StatusDescription: j.StatusDescription,
		Attempts:          j.Attempts,
		Timeline:          j.Timeline,
		ObservedAt:        now,
		Job:               j.Raw,
	})
}

// logger is the log of everything about target t: every line carries the
// masked phone and the target.
func (w *Worker) logger(t periskope.Target) *zap.Logger {
	return w.log.With(zap.String("phone", MaskPhone(t.Phone)), zap.String("target", MaskTarget(t)))
}

// MaskTarget names a target for logs with all but the last four characters
// of the phone hidden.
func MaskTarget(t periskope.Target) string {
	t.Phone = MaskPhone(t.Phone)
	return t.String()
}

// MaskPhone hides all but the last four characters of a phone.
func MaskPhone(p string) string {
	if len(p) <= 4 {
		return "****"
	}
	return "****" + p[len(p)-4:]
}
