// Package snapshot keeps the last-known state of every job in a NATS
// JetStream Key-Value bucket, one key per job ("<phone>.<queue_id>"), and a
// marker per target that has recorded its baseline.
//
// Writes are compare-and-set on the key's revision: Create fails if the key
// exists and Update fails if another writer got there first; both return
// ErrConflict, and the caller re-reads and decides again.
//
// A local cache, kept current by a KV watcher (Watch) and by this process's
// own writes, answers Cached. It can lag behind the bucket, so it is a hint
// for skipping unchanged jobs, never the truth for a write: read with Get
// before any write.
package snapshot

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuewatch/queuewatch/diff"
	"github.com/queuewatch/queuewatch/periskope"
)

// DefaultBucket is the default name of the snapshot bucket.
const DefaultBucket = "queuewatch_snapshots"

// ErrConflict is returned by Create and Update when the key moved on since
// it was read: another replica wrote it first.
var ErrConflict = errors.New("snapshot: revision conflict")

// ErrNotSnapshot is wrapped by Get's error when the key holds something
// that is not a snapshot (written by something else). Get then also
// returns the key's revision, so the caller can overwrite it.
var ErrNotSnapshot = errors.New("snapshot: value is not a snapshot")

// Record is the stored value of a job's key.
type Record struct {
	diff.Snapshot
	// SeenAt is when the snapshot was last written; the worker rewrites old
	// snapshots of jobs it still sees so the bucket TTL does not expire them.
	SeenAt time.Time `json:"seen_at"`
}

// Config names the bucket and sets how long snapshots live.
type Config struct {
	Bucket   string
	TTL      time.Duration
	Replicas int
}

// KV is the snapshot store. It is safe for concurrent use.
type KV struct {
	js      jetstream.JetStream
	cfg     Config
	kv      atomic.Pointer[bucket]
	remake  sync.RWMutex // held to re-create a deleted bucket, read-held to use it
	created time.Time    // when the bucket bound to was created; under remake
	cached  sync.Map     // key -> entry
	jobs    atomic.Int64 // job keys in cached
	ready   atomic.Bool
}

// bucket is the handle of the bucket, replaced when it is re-created.
type bucket struct{ jetstream.KeyValue }

// use runs op on the bucket, and once more if op failed because the bucket
// was deleted and recreate brought it back. It never runs while a
// re-created bucket is being refilled.
func (s *KV) use(ctx context.Context, op func(jetstream.KeyValue) error) error {
	try := func() error {
		s.remake.RLock()
		defer s.remake.RUnlock()
		return op(s.kv.Load().KeyValue)
	}
	err := try()
	// The bucket is gone: bind it again (re-creating and refilling it) and
	// retry. A bucket just created may not answer at once, and its refill
	// may need another go: a few attempts, a little apart.
	for attempt := 1; err != nil && bucketGone(err) && attempt <= 5 && ctx.Err() == nil; attempt++ {
		if s.rebind(ctx) == nil {
			if err = try(); err == nil || !bucketGone(err) {
				break
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
	return err
}

type entry struct {
	rec Record
	rev uint64
}

// Open binds to the bucket, creating it if it does not exist. If the bucket
// is deleted while the store is in use, the first operation or watcher
// check that finds it gone creates it again, with the same configuration,
// and refills it with what the store knew.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*KV, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	s := &KV{js: js, cfg: cfg}
	kv, err := s.bind(ctx)
	if err == nil {
		err = s.applyTTL(ctx)
	}
	if err == nil {
		s.created, err = createdAt(ctx, kv)
	}
	if err != nil {
		return nil, fmt.Errorf("open snapshot bucket %s: %w", cfg.Bucket, err)
	}
	s.kv.Store(&bucket{kv})
	return s, nil
}

// bind returns the bucket, creating it if it does not exist.
func (s *KV) bind(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, s.cfg.Bucket)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	kv, err = s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      s.cfg.Bucket,
		Description: "queuewatch: last-known snapshot of each queue job",
		History:     1,
		TTL:         s.cfg.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = s.js.KeyValue(ctx, s.cfg.Bucket) // another replica won the race
	}
	return kv, err
}

// applyTTL makes an existing bucket keep snapshots as long as configured:
// the worker refreshes snapshots after half of the configured TTL, so a
// bucket that expires them sooner would forget jobs it still sees. The
// bucket's other settings are left as they are.
func (s *KV) applyTTL(ctx context.Context) error {
	st, err := s.js.Stream(ctx, "KV_"+s.cfg.Bucket)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxAge == s.cfg.TTL {
		return nil
	}
	cfg.MaxAge = s.cfg.TTL
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("set TTL to %s: %w", s.cfg.TTL, err)
	}
	return nil
}

// bucketGone reports whether err can mean that the bucket's stream no
// longer exists: a direct get or a write that nothing answers, or a lookup
// that says so.
func bucketGone(err error) bool {
	return errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, nats.ErrStreamNotFound) || // from the watcher
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// rebind binds to the bucket again, creating it with Open's configuration
// if it is gone. If the bucket is not the one the store knew (this store
// or another replica re-created it), it is refilled from the cache first:
// the snapshots and baseline markers this process knew, so that unchanged
// jobs are not announced again as new and targets are not baselined again
// after a restart. Cached values may lag what was lost; that only makes the
// worker re-derive an event whose id the stream already holds, which the
// stream drops. No operation of this store runs meanwhile.
func (s *KV) rebind(ctx context.Context) error {
	s.remake.Lock()
	defer s.remake.Unlock()
	kv, err := s.bind(ctx)
	if err != nil {
		return err
	}
	created, err := createdAt(ctx, kv)
	if err != nil {
		return err
	}
	s.kv.Store(&bucket{kv})
	if created.Equal(s.created) {
		return nil
	}
	// The refill counts as done only when complete: else the next
	// operation tries again (keys already back are kept).
	// Revisions start again in the new bucket: the cache takes the new
	// ones, or 0 so that whatever the watcher reads next wins.
	var failed error
	s.cached.Range(func(k, v any) bool {
		e := v.(entry)
		val, err := json.Marshal(e.rec)
		if err != nil {
			failed = err
			return false
		}
		rev, err := kv.Create(ctx, k.(string), val)
		switch {
		case err == nil:
			e.rev = rev
		case errors.Is(err, jetstream.ErrKeyExists): // a newer write got there first
			e.rev = 0
		default:
			failed = err
			return false
		}
		s.cached.Store(k, e)
		return true
	})
	if failed != nil {
		return fmt.Errorf("snapshot: refill re-created bucket %s: %w", s.cfg.Bucket, failed)
	}
	s.created = created
	return nil
}

// createdAt returns when the bucket's stream was created: a re-created
// bucket has the same name and another creation time.
func createdAt(ctx context.Context, kv jetstream.KeyValue) (time.Time, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		return bs.StreamInfo().Created, nil
	}
	return time.Time{}, nil
}

const baselinePrefix = "_baseline."

var safeToken = regexp.MustCompile(`^[-_a-zA-Z0-9]+$`)

// token returns s unchanged when a KV key token can hold it, else "=" and
// its unpadded base64url form ("=" never appears in an unescaped token).
func token(s string) string {
	if safeToken.MatchString(s) {
		return s
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

// JobKey is the key of a job's snapshot: "<phone>.<queue_id>", each part
// escaped when it holds characters a key cannot.
func JobKey(phone, queueID string) string { return token(phone) + "." + token(queueID) }

// BaselineKey is the key of a target's baseline marker. It has three or four
// tokens, so it never collides with a job key.
func BaselineKey(t periskope.Target) string {
	switch {
	case t.QueueID != "":
		return baselinePrefix + token(t.Phone) + ".queue." + token(t.QueueID)
	case t.BroadcastID != "":
		return baselinePrefix + token(t.Phone) + ".broadcast." + token(t.BroadcastID)
	}
	return baselinePrefix + token(t.Phone) + ".all"
}

// masked is key for errors and logs: the phone token shortened to its last
// four characters, like everywhere else queuewatch names a phone.
func masked(key string) string {
	prefix := ""
	if rest, ok := strings.CutPrefix(key, baselinePrefix); ok {
		prefix, key = baselinePrefix, rest
	}
	phone, rest, _ := strings.Cut(key, ".")
	if len(phone) > 4 {
		phone = "****" + phone[len(phone)-4:]
	} else {
		phone = "****"
	}
	return prefix + phone + "." + rest
}

// Cached returns the cached snapshot of key, if any. It never does I/O.
func (s *KV) Cached(key string) (Record, bool) {
	if e, ok := s.cached.Load(key); ok {
		return e.(entry).rec, true
	}
	return Record{}, false
}

// Ready reports whether the watcher has loaded the bucket's initial values.
func (s *KV) Ready() bool { return s.ready.Load() }

// remember stores e in the cache unless the cache already holds a newer
// revision of the key.
func (s *KV) remember(key string, e entry) {
	for {
		old, loaded := s.cached.LoadOrStore(key, e)
		if !loaded {
			s.count(key, 1)
			return
		}
		if old.(entry).rev >= e.rev {
			return
		}
		if s.cached.CompareAndSwap(key, old, e) {
			return
		}
	}
}

func (s *KV) forget(key string, rev uint64) {
	if old, ok := s.cached.Load(key); ok && old.(entry).rev <= rev && s.cached.CompareAndDelete(key, old) {
		s.count(key, -1)
	}
}

func (s *KV) count(key string, delta int64) {
	if !strings.HasPrefix(key, baselinePrefix) {
		s.jobs.Add(delta)
	}
}

// Len returns how many jobs the cache holds: the jobs this process tracks.
func (s *KV) Len() int { return int(s.jobs.Load()) }

// Get reads key from the bucket. found is false for a missing, deleted or
// expired key. The cache is refreshed with what was read.
func (s *KV) Get(ctx context.Context, key string) (rec Record, rev uint64, found bool, err error) {
	var e jetstream.KeyValueEntry
	err = s.use(ctx, func(kv jetstream.KeyValue) (err error) {
		e, err = kv.Get(ctx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if old, ok := s.cached.Load(key); ok {
			s.forget(key, old.(entry).rev)
		}
		return Record{}, 0, false, nil
	}
	if err != nil {
		return Record{}, 0, false, fmt.Errorf("get snapshot %s: %w", masked(key), err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return Record{}, e.Revision(), true, fmt.Errorf("get snapshot %s: value at revision %d: %w: %v", masked(key), e.Revision(), ErrNotSnapshot, err)
	}
	s.remember(key, entry{rec, e.Revision()})
	return rec, e.Revision(), true, nil
}

// Create writes the first snapshot of key; ErrConflict if it exists.
func (s *KV) Create(ctx context.Context, key string, rec Record) (uint64, error) {
	return s.write(ctx, key, rec, 0, false)
}

// Update replaces the snapshot of key if its revision is still rev;
// ErrConflict if another writer changed it.
func (s *KV) Update(ctx context.Context, key string, rec Record, rev uint64) (uint64, error) {
	return s.write(ctx, key, rec, rev, true)
}

func (s *KV) write(ctx context.Context, key string, rec Record, rev uint64, update bool) (uint64, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("encode snapshot %s: %w", masked(key), err)
	}
	var newRev uint64
	err = s.use(ctx, func(kv jetstream.KeyValue) (err error) {
		if update {
			newRev, err = kv.Update(ctx, key, val, rev)
		} else {
			newRev, err = kv.Create(ctx, key, val)
		}
		return err
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
		return 0, fmt.Errorf("write snapshot %s: %w", masked(key), ErrConflict)
	case err != nil:
		return 0, fmt.Errorf("write snapshot %s: %w", masked(key), err)
	}
	s.remember(key, entry{rec, newRev})
	return newRev, nil
}

// Baselined returns when target t recorded its baseline, or the zero time
// if it never did.
func (s *KV) Baselined(ctx context.Context, t periskope.Target) (time.Time, error) {
	rec, _, found, err := s.Get(ctx, BaselineKey(t))
	if err != nil || !found {
		return time.Time{}, err
	}
	return rec.SeenAt, nil
}

// MarkBaselined records (or refreshes) that target t has its baseline.
func (s *KV) MarkBaselined(ctx context.Context, t periskope.Target, at time.Time) error {
	key := BaselineKey(t)
	val, err := json.Marshal(Record{SeenAt: at})
	if err != nil {
		return err
	}
	var rev uint64
	err = s.use(ctx, func(kv jetstream.KeyValue) (err error) {
		rev, err = kv.Put(ctx, key, val)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark baseline of %s: %w", masked(key), err)
	}
	s.remember(key, entry{Record{SeenAt: at}, rev})
	return nil
}

// Watch keeps the cache current until ctx ends, re-watching after a pause
// when the watcher fails or stops (as it can after a broker restart); each
// such failure is passed to onError, which may be nil. Every retry (at
// least every second) it also checks that the bucket it watches still
// exists: a watcher whose bucket was deleted can stop without a word, and
// re-watching re-creates the bucket. It returns when ctx is done.
func (s *KV) Watch(ctx context.Context, retry time.Duration, onError func(error)) {
	for {
		err := s.watchOnce(ctx, max(retry, time.Second))
		if ctx.Err() != nil {
			return
		}
		if onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// sweep forgets cached snapshots older than the bucket's TTL: the bucket
// has expired them, and expiry is not reported to watchers. (A record
// without SeenAt was not written by queuewatch; its age is unknown.)
func (s *KV) sweep(now time.Time) {
	if s.cfg.TTL <= 0 {
		return
	}
	s.cached.Range(func(k, v any) bool {
		if e := v.(entry); !e.rec.SeenAt.IsZero() && now.Sub(e.rec.SeenAt) > s.cfg.TTL {
			s.forget(k.(string), e.rev)
		}
		return true
	})
}

// bucketCreated returns when the bucket's stream was created.
func (s *KV) bucketCreated(ctx context.Context) (created time.Time, err error) {
	err = s.use(ctx, func(kv jetstream.KeyValue) (err error) {
		created, err = createdAt(ctx, kv)
		return err
	})
	return created, err
}

func (s *KV) watchOnce(ctx context.Context, check time.Duration) error {
	var w jetstream.KeyWatcher
	err := s.use(ctx, func(kv jetstream.KeyValue) (err error) {
		w, err = kv.WatchAll(ctx)
		return err
	})
	if err != nil {
		return err
	}
	defer w.Stop()
	created, err := s.bucketCreated(ctx)
	if err != nil {
		return err
	}
	ticker := time.NewTicker(check)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			s.sweep(time.Now())
			now, err := s.bucketCreated(ctx)
			switch {
			case err != nil && bucketGone(err):
				return fmt.Errorf("snapshot: bucket %s is gone: %w", s.cfg.Bucket, err)
			case err == nil && !now.Equal(created):
				// Re-created elsewhere: refill it with what this store
				// knew, and watch the new one.
				if err := s.rebind(ctx); err != nil {
					return err
				}
				return fmt.Errorf("snapshot: bucket %s was re-created", s.cfg.Bucket)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("snapshot: watcher closed")
			}
			if e == nil {
				s.ready.Store(true)
				continue
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				var rec Record
				if json.Unmarshal(e.Value(), &rec) == nil {
					s.remember(e.Key(), entry{rec, e.Revision()})
				}
			default: // delete or purge (a TTL expiry sends nothing: see sweep)
				s.forget(e.Key(), e.Revision())
			}
		}
	}
}
