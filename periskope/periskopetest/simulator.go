package periskopetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Job statuses the Simulator uses.
const (
	StatusScheduled = "scheduled"
	StatusQueued    = "queued"
	StatusSending   = "sending"
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
	StatusFailed    = "failed"
)

// MaxAttempts is how many times the Simulator tries a job before leaving
// it failed.
const MaxAttempts = 3

// simNext is the normal next status; sending may also go to failed, and
// failed goes back to queued while attempts remain.
var simNext = map[string]string{
	StatusScheduled: StatusQueued,
	StatusQueued:    StatusSending,
	StatusSending:   StatusSent,
	StatusSent:      StatusDelivered,
	StatusDelivered: StatusRead,
	StatusFailed:    StatusQueued,
}

// statusDescription is the human text the Simulator sets per status.
var statusDescription = map[string]string{
	StatusScheduled: "Scheduled for later.",
	StatusQueued:    "Queued for sending.",
	StatusSending:   "Sending.",
	StatusSent:      "Successfully submitted.",
	StatusDelivered: "Delivered to recipient.",
	StatusRead:      "Read by recipient.",
	StatusFailed:    "Failed to send: simulated failure.",
}

// timelineKey is the timeline entry set on entering a status.
var timelineKey = map[string]string{
	StatusScheduled: "scheduled_at",
	StatusQueued:    "queued_at",
	StatusSent:      "sent_at",
	StatusDelivered: "delivered_at",
	StatusRead:      "read_at",
	StatusFailed:    "failed_at",
}

// SimOptions configures a Simulator.
type SimOptions struct {
	// Phones are the x-phone values to fill.
	Phones []string
	// JobsPerPhone is how many jobs each phone starts with.
	JobsPerPhone int
	// FailRate is the chance (0..1) that a sending job fails.
	FailRate float64
	// Seed makes the run reproducible: the same seed (and clock) gives the
	// same jobs after the same number of steps.
	Seed int64
	// Now is the clock for timeline stamps. Default time.Now; set a fixed
	// clock for fully reproducible jobs.
	Now func() time.Time
}

// Simulator moves the jobs of a Server along a send's life:
// scheduled → queued → sending → sent → delivered → read, with
// sending → failed at FailRate and failed → queued (a retry, attempts+1)
// while fewer than MaxAttempts attempts were made. It is safe for
// concurrent use.
type Simulator struct {
	srv *Server
	o   SimOptions

	mu  sync.Mutex
	rng *rand.Rand
	seq int // messages created so far, for bodies
}

// NewSimulator fills s with o.JobsPerPhone jobs per phone, each "scheduled"
// or "queued" with 1 attempt. The jobs of one phone share a broadcast id.
func NewSimulator(s *Server, o SimOptions) *Simulator {
	if o.Now == nil {
		o.Now = time.Now
	}
	o.FailRate = min(max(o.FailRate, 0), 1)
	m := &Simulator{
		srv: s,
		o:   o,
		rng: rand.New(rand.NewPCG(uint64(o.Seed), 0x9e3779b97f4a7c15)),
	}
	for _, phone := range o.Phones {
		broadcast := m.uuid()
		jobs := make([]Job, 0, o.JobsPerPhone)
		for range o.JobsPerPhone {
			status := StatusQueued
			if m.rng.IntN(3) == 0 {
				status = StatusScheduled
			}
			jobs = append(jobs, m.newJob(status, broadcast))
		}
		s.SetJobs(phone, jobs)
	}
	return m
}

// Step advances a random subset of jobs by one stage and, now and then,
// adds a new queued job to a phone. It does not sleep.
func (m *Simulator) Step() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, phone := range m.o.Phones {
		var changed []Job
		for _, j := range m.srv.Jobs(phone) {
			if m.rng.IntN(2) == 0 {
				continue
			}
			if m.advance(&j) {
				changed = append(changed, j)
			}
		}
		if m.rng.IntN(5) == 0 {
			changed = append(changed, m.newJob(StatusQueued, ""))
		}
		if len(changed) > 0 {
			m.srv.Upsert(phone, changed...)
		}
	}
}

// Run calls Step every interval (default 1s) until ctx is done.
func (m *Simulator) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Step()
		}
	}
}

// advance moves j one stage on, reporting whether it changed. m.mu must be
// held.
func (m *Simulator) advance(j *Job) bool {
	next, ok := simNext[j.Status]
	if !ok {
		return false // read, or a status the simulator does not know
	}
	switch j.Status {
	case StatusSending:
		if m.rng.Float64() < m.o.FailRate {
			next = StatusFailed
		}
	case StatusFailed:
		if j.Attempts >= MaxAttempts {
			return false
		}
		j.Attempts++
		delete(j.Timeline, "failed_at")
	}
	m.setStatus(j, next)
	if next == StatusSent && j.MessageID == "" {
		j.MessageID = "true_" + j.ChatID + "_" + j.UniqueID
	}
	return true
}

// setStatus sets j's status, its description and its timeline stamp.
func (m *Simulator) setStatus(j *Job, status string) {
	j.Status = status
	j.StatusDescription = statusDescription[status]
	if key, ok := timelineKey[status]; ok {
		if j.Timeline == nil {
			j.Timeline = make(map[string]string)
		}
		j.Timeline[key] = m.o.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	}
}

// newJob makes a job with realistic ids. m.mu must be held (or m not yet
// shared).
func (m *Simulator) newJob(status, broadcast string) Job {
	m.seq++
	j := Job{
		QueueID:     m.uuid(),
		UniqueID:    fmt.Sprintf("3EB0%016X%02X", m.rng.Uint64(), m.rng.IntN(256)),
		ChatID:      fmt.Sprintf("91987%07d@c.us", m.rng.IntN(10_000_000)),
		BroadcastID: broadcast,
		PerformedBy: "api",
		Message:     map[string]any{"body": fmt.Sprintf("Hello #%d", m.seq), "type": "chat"},
		Attempts:    1,
	}
	m.setStatus(&j, status)
	return j
}

// uuid returns a random (version 4 shaped) UUID from m's source.
func (m *Simulator) uuid() string {
	hi, lo := m.rng.Uint64(), m.rng.Uint64()
	hi = hi&^0xf000 | 0x4000     // version 4
	lo = lo&^(0xc<<60) | 0x8<<60 // RFC 4122 variant
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
		hi>>32, hi>>16&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}
