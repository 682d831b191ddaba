// Package diff decides what a freshly polled queue job means compared with
// the last snapshot kept of it: nothing, a silent snapshot update, a stale
// read to ignore, or a status change worth an event.
//
// It is pure: no I/O, no clock, no logging. Times and the baseline flag
// arrive as data, so every rule is a table test away.
//
// The rules, in the order they are applied when a previous snapshot exists:
//
//  1. same status and attempts: None, or Silent when other fields changed;
//  2. attempts rose (a retry): Event;
//  3. attempts fell: Stale;
//  4. the job reached "failed": Event;
//  5. the job left "failed" without a new attempt: Stale;
//  6. either status is unknown: Event;
//  7. rank rose: Event; rank fell: Stale; equal rank ("queued" and
//     "pending"): Silent.
//
// Without a previous snapshot the job is new: Event with an empty previous
// status, or Silent while a target records its baseline.
package diff

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Status values the API documents. Any other value is kept verbatim.
const (
	StatusScheduled = "scheduled"
	StatusQueued    = "queued"
	StatusPending   = "pending"
	StatusSending   = "sending"
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
	StatusPlayed    = "played"
	StatusFailed    = "failed"
)

var ranks = map[string]int{
	StatusScheduled: 0,
	StatusQueued:    1,
	StatusPending:   1,
	StatusSending:   2,
	StatusSent:      3,
	StatusDelivered: 4,
	StatusRead:      5,
	StatusPlayed:    6,
}

// Rank returns the position of a status in a job's lifecycle and whether
// the status is known. "failed" is known but has no rank: it is final for
// its attempt.
func Rank(status string) (rank int, known bool) {
	if status == StatusFailed {
		return -1, true
	}
	r, ok := ranks[status]
	return r, ok
}

// Job is what diff needs to know of a polled job.
type Job struct {
	Status   string
	Attempts int
	// Digest summarises every other field that matters (ids, description,
	// timeline) so that a change to them updates the snapshot silently.
	Digest string
}

// Snapshot is the last-known state of a job, as stored.
type Snapshot struct {
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	Digest   string `json:"digest,omitempty"`
}

// Kind says what a Decision asks the caller to do.
type Kind int

const (
	// None: nothing changed; write nothing.
	None Kind = iota
	// Silent: store the new snapshot, publish nothing.
	Silent
	// Stale: the API returned an older state than the one known; ignore it.
	Stale
	// Event: publish a status change, then store the new snapshot.
	Event
)

func (k Kind) String() string {
	switch k {
	case None:
		return "none"
	case Silent:
		return "silent"
	case Stale:
		return "stale"
	case Event:
		return "event"
	}
	return "unknown"
}

// Decision is the outcome of Compare.
type Decision struct {
	Kind Kind
	// Reason names the rule that decided, for logs and tests.
	Reason string
	// PreviousStatus is the status the change comes from ("" for a new job).
	PreviousStatus string
	// Next is the snapshot to store for Silent and Event.
	Next Snapshot
}

// Compare applies the diff rules to a polled job. prev is the stored
// snapshot when found is true. baseline is true while the job's target
// records its silent baseline: new jobs are then stored without an event.
func Compare(prev Snapshot, found bool, cur Job, baseline bool) Decision {
	next := Snapshot{Status: cur.Status, Attempts: cur.Attempts, Digest: cur.Digest}
	d := func(k Kind, reason string) Decision {
		dec := Decision{Kind: k, Reason: reason, Next: next}
		if k == Event && found {
			dec.PreviousStatus = prev.Status
		}
		return dec
	}
	if !found {
		if baseline {
			return d(Silent, "baseline")
		}
		return d(Event, "new job")
	}
	switch {
	case cur.Status == prev.Status && cur.Attempts == prev.Attempts:
		if cur.Digest != prev.Digest {
			return d(Silent, "fields changed")
		}
		return d(None, "unchanged")
	case cur.Attempts > prev.Attempts:
		return d(Event, "attempts rose")
	case cur.Attempts < prev.Attempts:
		return d(Stale, "attempts fell")
	case cur.Status == StatusFailed:
		return d(Event, "failed")
	case prev.Status == StatusFailed:
		return d(Stale, "left failed without a new attempt")
	}
	pr, pk := Rank(prev.Status)
	cr, ck := Rank(cur.Status)
	switch {
	case !pk || !ck:
		return d(Event, "unknown status")
	case cr > pr:
		return d(Event, "rank rose")
	case cr < pr:
		return d(Stale, "rank fell")
	}
	return d(Silent, "equivalent status")
}

// EventID is the stable id of the event announcing that a job reached
// status on its attempts-th attempt: the same transition always gets the
// same id, whichever replica or restart derives it, so JetStream's
// duplicate window drops repeats.
func EventID(phone, queueID, status string, attempts int) string {
	h := sha256.New()
	for _, s := range []string{phone, queueID, status} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var a [8]byte
	binary.BigEndian.PutUint64(a[:], uint64(int64(attempts)))
	h.Write(a[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}
