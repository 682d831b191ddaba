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
	// StatusWaiting is not a documented status: the Simulator uses it (see
	// SimOptions.UnknownRate) for the odd value a real API reports that
	// queuewatch does not know.
	StatusWaiting = "waiting"
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
	StatusWaiting:   StatusSending,
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
	StatusWaiting:   "Waiting for the phone to come online.",
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

// SimOptions configures a Simulator. The zero value of each field after Now
// turns its feature off, so the first five alone give the plain simulation.
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

	// MaxDelay, if > 0, makes each job wait a random 1 to MaxDelay steps
	// before each move, instead of moving on a coin flip at every step.
	MaxDelay int
	// SendPerStep, if > 0, caps how many jobs of one phone the sender
	// takes up (to sending or waiting) in one step, as a real sender works
	// through a broadcast.
	SendPerStep int
	// UnknownRate is the chance (0..1) that the sender finds a queued job's
	// phone offline: the job goes through StatusWaiting, a status
	// queuewatch does not know, before sending.
	UnknownRate float64
	// BroadcastEvery, if > 0, starts a broadcast at step 1 and then every
	// BroadcastEvery steps, on the phones in turn: BroadcastMin to
	// BroadcastMax chats (default 20 to 200), all added queued at once.
	BroadcastEvery int
	BroadcastMin   int
	BroadcastMax   int
	// ScheduledEvery, if > 0, makes every ScheduledEvery-th broadcast a
	// scheduled one: its jobs are added "scheduled" and start moving
	// ScheduleDelay steps later.
	ScheduledEvery int
	ScheduleDelay  int
	// Forget, if > 0, drops a job from the API's list Forget steps after it
	// was read or failed for good, as a real queue lists recent jobs only.
	Forget int
}

// Simulator moves the jobs of a Server along a send's life:
// scheduled → queued → sending → sent → delivered → read, with
// sending → failed at FailRate and failed → queued (a retry, attempts+1)
// while fewer than MaxAttempts attempts were made; optionally with
// queued → waiting → sending, broadcasts and per-job delays (see
// SimOptions). It is safe for concurrent use.
type Simulator struct {
	srv *Server
	o   SimOptions

	mu         sync.Mutex
	rng        *rand.Rand
	seq        int            // messages created so far, for bodies
	step       int            // steps taken so far
	broadcasts int            // broadcasts started so far
	due        map[string]int // queue id → first step the job may move at
	finished   map[string]int // queue id → step it reached a final status
}

// NewSimulator fills s with o.JobsPerPhone jobs per phone, each "scheduled"
// or "queued" with 1 attempt. The jobs of one phone share a broadcast id.
func NewSimulator(s *Server, o SimOptions) *Simulator {
	if o.Now == nil {
		o.Now = time.Now
	}
	o.FailRate = min(max(o.FailRate, 0), 1)
	o.UnknownRate = min(max(o.UnknownRate, 0), 1)
	if o.BroadcastMin <= 0 {
		o.BroadcastMin = 20
	}
	if o.BroadcastMax <= 0 {
		o.BroadcastMax = 200
	}
	o.BroadcastMax = max(o.BroadcastMax, o.BroadcastMin)
	m := &Simulator{
		srv:      s,
		o:        o,
		rng:      rand.New(rand.NewPCG(uint64(o.Seed), 0x9e3779b97f4a7c15)),
		due:      make(map[string]int),
		finished: make(map[string]int),
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
// adds a new queued job to a phone; it starts the broadcasts that are due
// and forgets finished jobs (if so configured). It does not sleep.
func (m *Simulator) Step() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.step++
	m.startBroadcast()
	for _, phone := range m.o.Phones {
		var changed, kept []Job
		forgot := false
		sending := 0 // jobs of this phone that started sending in this step
		for _, j := range m.srv.Jobs(phone) {
			if at, ok := m.finished[j.QueueID]; ok && m.o.Forget > 0 && m.step-at >= m.o.Forget {
				delete(m.finished, j.QueueID)
				delete(m.due, j.QueueID)
				forgot = true
				continue
			}
			if m.ready(j) && m.advance(&j, &sending) {
				changed = append(changed, j)
			}
			kept = append(kept, j)
		}
		if m.rng.IntN(5) == 0 {
			j := m.newJob(StatusQueued, "")
			changed, kept = append(changed, j), append(kept, j)
		}
		switch {
		case forgot:
			m.srv.SetJobs(phone, kept)
		case len(changed) > 0:
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

// ready reports whether j may move in this step. m.mu must be held.
func (m *Simulator) ready(j Job) bool {
	if m.step < m.due[j.QueueID] {
		return false
	}
	return m.o.MaxDelay > 0 || m.rng.IntN(2) == 1
}

// startBroadcast adds the broadcast due at this step, if any. m.mu must be
// held.
func (m *Simulator) startBroadcast() {
	every := m.o.BroadcastEvery
	if every <= 0 || len(m.o.Phones) == 0 || (m.step-1)%every != 0 {
		return
	}
	i := m.broadcasts
	m.broadcasts++
	phone := m.o.Phones[i%len(m.o.Phones)]
	scheduled := m.o.ScheduledEvery > 0 && (i+1)%m.o.ScheduledEvery == 0
	id := m.uuid()
	jobs := make([]Job, m.o.BroadcastMin+m.rng.IntN(m.o.BroadcastMax-m.o.BroadcastMin+1))
	for k := range jobs {
		if scheduled {
			jobs[k] = m.newJob(StatusScheduled, id)
			m.due[jobs[k].QueueID] = m.step + m.o.ScheduleDelay
		} else {
			jobs[k] = m.newJob(StatusQueued, id)
		}
	}
	m.srv.Upsert(phone, jobs...)
}

// advance moves j one stage on, reporting whether it changed; sending
// counts the phone's jobs that started sending in this step. m.mu must be
// held.
func (m *Simulator) advance(j *Job, sending *int) bool {
	next, ok := simNext[j.Status]
	if !ok {
		return false // read, or a status the simulator does not know
	}
	if next == StatusSending && m.o.SendPerStep > 0 && *sending >= m.o.SendPerStep {
		return false // the sender is busy; try again next step
	}
	switch j.Status {
	case StatusQueued:
		if m.o.UnknownRate > 0 && m.rng.Float64() < m.o.UnknownRate {
			next = StatusWaiting // the sender found the phone offline
		}
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
	if next == StatusSending || next == StatusWaiting {
		*sending++ // the sender took it up
	}
	m.setStatus(j, next)
	if next == StatusSent && j.MessageID == "" {
		j.MessageID = "true_" + j.ChatID + "_" + j.UniqueID
	}
	if m.o.Forget > 0 && (next == StatusRead || next == StatusFailed && j.Attempts >= MaxAttempts) {
		m.finished[j.QueueID] = m.step
	}
	m.delay(j.QueueID)
	return true
}

// delay sets when the job may move next, if jobs wait between moves. m.mu
// must be held.
func (m *Simulator) delay(queueID string) {
	if m.o.MaxDelay > 0 {
		m.due[queueID] = m.step + 1 + m.rng.IntN(m.o.MaxDelay)
	}
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
	m.delay(j.QueueID)
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
