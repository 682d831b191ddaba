package periskopetest_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

func fixedClock() time.Time { return time.Date(2026, 4, 1, 14, 23, 21, 279e6, time.UTC) }

func simulate(t *testing.T, o periskopetest.SimOptions, steps int) map[string][]periskopetest.Job {
	t.Helper()
	s := newServer(t)
	m := periskopetest.NewSimulator(s, o)
	for range steps {
		m.Step()
	}
	out := map[string][]periskopetest.Job{}
	for _, p := range o.Phones {
		out[p] = s.Jobs(p)
	}
	return out
}

func TestSimulatorDeterministic(t *testing.T) {
	o := periskopetest.SimOptions{Phones: []string{"p1", "p2"}, JobsPerPhone: 5, FailRate: 0.3, Seed: 42, Now: fixedClock}
	a, b := simulate(t, o, 20), simulate(t, o, 20)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different jobs (-a +b):\n%s", diff)
	}
	o.Seed = 43
	if cmp.Equal(a, simulate(t, o, 20)) {
		t.Error("different seeds gave the same jobs")
	}
}

var (
	uuidRE      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	uniqueRE    = regexp.MustCompile(`^3EB0[0-9A-F]{18}$`)
	chatRE      = regexp.MustCompile(`^91987[0-9]{7}@c\.us$`)
	timestampRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
)

func TestSimulatorSeedsJobs(t *testing.T) {
	s := newServer(t)
	periskopetest.NewSimulator(s, periskopetest.SimOptions{Phones: []string{"p1", "p2"}, JobsPerPhone: 30, Seed: 1})
	for _, p := range []string{"p1", "p2"} {
		jobs := s.Jobs(p)
		if len(jobs) != 30 {
			t.Fatalf("%s has %d jobs, want 30", p, len(jobs))
		}
		seen := map[string]bool{}
		for _, j := range jobs {
			if j.Status != "scheduled" && j.Status != "queued" {
				t.Errorf("initial status %q", j.Status)
			}
			if !uuidRE.MatchString(j.QueueID) || !uuidRE.MatchString(j.BroadcastID) ||
				!uniqueRE.MatchString(j.UniqueID) || !chatRE.MatchString(j.ChatID) {
				t.Errorf("unrealistic ids: %+v", j)
			}
			if j.Attempts != 1 || j.MessageID != "" || j.BroadcastID != jobs[0].BroadcastID {
				t.Errorf("job %+v", j)
			}
			if seen[j.QueueID] {
				t.Errorf("duplicate queue id %s", j.QueueID)
			}
			seen[j.QueueID] = true
		}
	}
}

// allowed are the status changes one Step may make.
var allowed = map[[2]string]bool{
	{"scheduled", "queued"}: true,
	{"queued", "sending"}:   true,
	{"sending", "sent"}:     true,
	{"sending", "failed"}:   true,
	{"sent", "delivered"}:   true,
	{"delivered", "read"}:   true,
	{"failed", "queued"}:    true,
}

func TestSimulatorMovesAlongAllowedEdges(t *testing.T) {
	s := newServer(t)
	phones := []string{"p1", "p2", "p3"}
	m := periskopetest.NewSimulator(s, periskopetest.SimOptions{Phones: phones, JobsPerPhone: 20, FailRate: 0.4, Seed: 7})
	last := map[string]periskopetest.Job{}
	for _, p := range phones {
		for _, j := range s.Jobs(p) {
			last[j.QueueID] = j
		}
	}
	edges := map[[2]string]int{}
	added := 0
	for range 200 {
		m.Step()
		for _, p := range phones {
			for _, j := range s.Jobs(p) {
				prev, ok := last[j.QueueID]
				last[j.QueueID] = j
				if !ok {
					added++
					if j.Status != "queued" || j.Attempts != 1 {
						t.Errorf("new job %+v", j)
					}
					continue
				}
				if prev.Status == j.Status {
					continue
				}
				e := [2]string{prev.Status, j.Status}
				if !allowed[e] {
					t.Fatalf("job %s moved %s → %s", j.QueueID, e[0], e[1])
				}
				edges[e]++
				if e == [2]string{"failed", "queued"} && j.Attempts != prev.Attempts+1 {
					t.Errorf("retry did not count an attempt: %d → %d", prev.Attempts, j.Attempts)
				}
				if j.Attempts > periskopetest.MaxAttempts {
					t.Errorf("job %s has %d attempts", j.QueueID, j.Attempts)
				}
				if key := map[string]string{"queued": "queued_at", "sent": "sent_at", "failed": "failed_at", "read": "read_at"}[j.Status]; key != "" && !timestampRE.MatchString(j.Timeline[key]) {
					t.Errorf("job %s is %s without a %s stamp: %v", j.QueueID, j.Status, key, j.Timeline)
				}
				if j.Status == "sent" && j.MessageID != "true_"+j.ChatID+"_"+j.UniqueID {
					t.Errorf("sent job message_id = %q", j.MessageID)
				}
			}
		}
	}
	for e := range allowed {
		if edges[e] == 0 {
			t.Errorf("edge %s → %s never taken in 200 steps", e[0], e[1])
		}
	}
	if added == 0 {
		t.Error("no job was added")
	}
}

// The simulator's jobs decode cleanly with the client.
func TestSimulatorJobsDecode(t *testing.T) {
	s := newServer(t)
	m := periskopetest.NewSimulator(s, periskopetest.SimOptions{Phones: []string{"p"}, JobsPerPhone: 10, FailRate: 0.2, Seed: 3})
	for range 10 {
		m.Step()
	}
	res, err := newClient(t, s, key).ListJobs(context.Background(), periskope.Target{Phone: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Invalid) != 0 || len(res.Jobs) != len(s.Jobs("p")) {
		t.Fatalf("got %d jobs and %v, want %d jobs", len(res.Jobs), res.Invalid, len(s.Jobs("p")))
	}
	for _, j := range res.Jobs {
		if len(j.Timeline) == 0 {
			t.Errorf("job %s has no timeline", j.QueueID)
		}
	}
}

func TestSimulatorRun(t *testing.T) {
	s := newServer(t)
	m := periskopetest.NewSimulator(s, periskopetest.SimOptions{Phones: []string{"p"}, JobsPerPhone: 5, Seed: 1})
	before := s.Jobs("p")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx, time.Millisecond)
		close(done)
	}()
	// Wait (bounded) for Run to change something, then stop it.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for cmp.Equal(before, s.Jobs("p")) {
		select {
		case <-deadline:
			t.Fatal("Run changed nothing in 10s")
		case <-tick.C:
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// workload is the demo-like configuration: delays, a send rate,
// broadcasts (every second one scheduled), unknown statuses, forgetting.
func workload(seed int64) periskopetest.SimOptions {
	return periskopetest.SimOptions{
		Phones: []string{"p1", "p2", "p3"}, JobsPerPhone: 2, FailRate: 0.2, Seed: seed, Now: fixedClock,
		MaxDelay: 4, SendPerStep: 3, UnknownRate: 0.1,
		BroadcastEvery: 30, BroadcastMin: 20, BroadcastMax: 60, ScheduledEvery: 2, ScheduleDelay: 25,
		Forget: 40,
	}
}

func TestSimulatorWorkloadDeterministic(t *testing.T) {
	a, b := simulate(t, workload(9), 120), simulate(t, workload(9), 120)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different jobs (-a +b):\n%s", diff)
	}
	if cmp.Equal(a, simulate(t, workload(10), 120)) {
		t.Error("different seeds gave the same jobs")
	}
}

// TestSimulatorWorkload runs the demo-like workload for 300 steps and checks
// each promise of SimOptions on what the API serves after every step.
func TestSimulatorWorkload(t *testing.T) {
	s := newServer(t)
	o := workload(11)
	m := periskopetest.NewSimulator(s, o)
	edges := map[[2]string]bool{{"queued", "waiting"}: true, {"waiting", "sending"}: true}
	for e := range allowed {
		edges[e] = true
	}
	initial := map[string]bool{} // broadcast ids of the starting jobs
	last := map[string]periskopetest.Job{}
	for _, p := range o.Phones {
		for _, j := range s.Jobs(p) {
			initial[j.BroadcastID] = true
			last[j.QueueID] = j
		}
	}
	type broadcast struct {
		phone     string
		chats     int
		scheduled bool
		started   int // step it appeared
	}
	broadcasts := map[string]*broadcast{}
	var order []string
	seen := map[string]int{} // statuses and events of note → how often
	for step := 1; step <= 300; step++ {
		m.Step()
		present := map[string]bool{}
		for _, p := range o.Phones {
			started := 0
			for _, j := range s.Jobs(p) {
				present[j.QueueID] = true
				prev, ok := last[j.QueueID]
				last[j.QueueID] = j
				if !ok {
					if j.Attempts != 1 || (j.Status != "queued" && j.Status != "scheduled") {
						t.Fatalf("step %d: new job %+v", step, j)
					}
					if j.BroadcastID != "" && !initial[j.BroadcastID] {
						b := broadcasts[j.BroadcastID]
						if b == nil {
							b = &broadcast{phone: p, scheduled: j.Status == "scheduled", started: step}
							broadcasts[j.BroadcastID] = b
							order = append(order, j.BroadcastID)
						}
						if b.phone != p || b.started != step || b.scheduled != (j.Status == "scheduled") {
							t.Fatalf("step %d: broadcast %s is not one batch of one kind on one phone", step, j.BroadcastID)
						}
						b.chats++
					}
					continue
				}
				if prev.Status == j.Status && prev.Attempts == j.Attempts {
					continue
				}
				if e := [2]string{prev.Status, j.Status}; !edges[e] {
					t.Fatalf("step %d: job %s moved %s → %s", step, j.QueueID, e[0], e[1])
				}
				if b := broadcasts[j.BroadcastID]; b != nil && prev.Status == "scheduled" {
					if step < b.started+o.ScheduleDelay {
						t.Errorf("step %d: job %s of a scheduled broadcast started before step %d", step, j.QueueID, b.started+o.ScheduleDelay)
					}
					seen["scheduled broadcast job started"]++
				}
				if j.Status == "sending" || j.Status == "waiting" { // the sender took it up
					started++
				}
				if j.Attempts > prev.Attempts {
					seen["retry"]++
				}
				seen[j.Status]++
			}
			if started > o.SendPerStep {
				t.Errorf("step %d: %d jobs of %s started sending, cap %d", step, started, p, o.SendPerStep)
			}
		}
		for id, j := range last {
			if present[id] {
				continue
			}
			if j.Status != "read" && (j.Status != "failed" || j.Attempts < periskopetest.MaxAttempts) {
				t.Errorf("step %d: unfinished job %s (%s, attempt %d) was dropped", step, id, j.Status, j.Attempts)
			}
			seen["forgotten"]++
			delete(last, id)
		}
	}

	if len(order) != 10 { // steps 1, 31, …, 271
		t.Fatalf("%d broadcasts in 300 steps, want 10", len(order))
	}
	for i, id := range order {
		b := broadcasts[id]
		if want := o.Phones[i%len(o.Phones)]; b.phone != want || b.started != 1+30*i {
			t.Errorf("broadcast %d on %s at step %d, want %s at %d", i, b.phone, b.started, want, 1+30*i)
		}
		if b.chats < o.BroadcastMin || b.chats > o.BroadcastMax {
			t.Errorf("broadcast %d has %d chats", i, b.chats)
		}
		if b.scheduled != (i%2 == 1) {
			t.Errorf("broadcast %d scheduled = %v", i, b.scheduled)
		}
	}
	for _, what := range []string{"waiting", "failed", "retry", "read", "forgotten", "scheduled broadcast job started"} {
		if seen[what] == 0 {
			t.Errorf("no %s in 300 steps (%v)", what, seen)
		}
	}
}
