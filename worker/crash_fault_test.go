package worker_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// faultSeed returns the seed of a randomised fault test: QUEUEWATCH_FAULT_SEED
// if set (to replay a failure), else a fresh one. The test logs it.
func faultSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("QUEUEWATCH_FAULT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("QUEUEWATCH_FAULT_SEED: %v", err)
		}
	}
	t.Logf("seed %d (replay with QUEUEWATCH_FAULT_SEED=%d)", seed, seed)
	return seed
}

// TestFaultRandomCrashes kills the pipeline between an event's publish and
// its snapshot's commit at random points of the run: 25 kills at publishes
// drawn by a seeded RNG, each followed by a fresh pipeline (new client,
// publisher, store and cache), as a supervisor restarting a crashed process
// would. The run has new jobs, retries and stale reads. The stream holds
// every transition exactly once: each killed event is re-derived with the
// same id and the stream drops the repeat.
func TestFaultRandomCrashes(t *testing.T) {
	const kills = 25
	rng := rand.New(rand.NewPCG(faultSeed(t), 0x9e3779b97f4a7c15))
	// The kill points: distinct publish ordinals within the first 150
	// publishes (the run makes more than 250).
	var points []int64
	for _, p := range rng.Perm(150)[:kills] {
		points = append(points, int64(p+1))
	}
	slices.Sort(points)
	at := map[int64]bool{}
	for _, p := range points {
		at[p] = true
	}

	e := newEnv(t)
	w := newWorkload(e.api, phones, 12)
	targets := w.targets()
	shared := newPolls()
	var published, killed atomic.Int64
	errCrash := errors.New("simulated crash between publish and commit")
	stopping := make(chan struct{})
	supervised := make(chan struct{})
	var lives int
	start := func() *rig {
		var dead atomic.Bool
		lives++
		return e.startRig(targets, rigOpts{polls: shared, afterPublish: func(_ string, crash func()) error {
			if dead.Load() {
				return errCrash // a dead process commits nothing more
			}
			if !at[published.Add(1)] {
				return nil
			}
			dead.Store(true)
			killed.Add(1)
			crash() // the process dies: nothing else starts
			return errCrash
		}})
	}
	go func() {
		defer close(supervised)
		for {
			r := start()
			select {
			case <-r.done: // killed: start another
			case <-stopping:
				r.stop(t)
				return
			}
		}
	}()
	runWorkload(t, e, w, func() { shared.waitFresh(t, targets) })
	close(stopping)
	<-supervised

	want := w.want()
	checkStream(t, e.streamEvents(t), want, e.api)
	checkCommitsPublished(t, e, w)
	if killed.Load() != kills {
		t.Fatalf("%d kills happened, want %d: the run made only %d publishes", killed.Load(), kills, published.Load())
	}
	t.Logf("kill points (publish ordinals): %v", points)
	t.Logf("FIGURES crashes: %d kills between publish and commit, %d pipelines, %d publishes for %d transitions (repeats dropped by the stream); lost 0, duplicated 0",
		killed.Load(), lives, published.Load(), len(want))
}
