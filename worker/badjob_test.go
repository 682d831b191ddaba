package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
	"github.com/queuewatch/queuewatch/snapshot"
)

// One job that can never be handled as it is — its event is larger than
// NATS accepts — or whose snapshot key holds something else, does not hold
// back the jobs after it: they are announced, the foreign value is
// replaced, and the oversized job is skipped without a commit.
func TestABadJobDoesNotHoldBackTheOthers(t *testing.T) {
	e := newEnv(t)
	phone := "918527184400"
	target := periskope.Target{Phone: phone}
	huge := strings.Repeat("x", 2<<20) // over the server's 1 MiB max_payload
	jobs := []periskopetest.Job{
		{QueueID: "q-huge", ChatID: "1@c.us", Status: "queued", Attempts: 1, StatusDescription: huge},
		{QueueID: "q-foreign", ChatID: "2@c.us", Status: "queued", Attempts: 1},
		{QueueID: "q-fine", ChatID: "3@c.us", Status: "queued", Attempts: 1},
	}
	e.api.SetJobs(phone, jobs)
	ctx := context.Background()
	if _, err := snapshot.Open(ctx, e.js, snapshot.Config{TTL: time.Hour}); err != nil { // creates the bucket
		t.Fatal(err)
	}
	bucket, err := e.js.KeyValue(ctx, snapshot.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutString(ctx, snapshot.JobKey(phone, "q-foreign"), "written by something else"); err != nil {
		t.Fatal(err)
	}
	r := e.start([]periskope.Target{target}, replicaOpts{emitBaseline: true})
	r.polls.waitFresh(t, []periskope.Target{target})
	r.stop(t)

	got := map[string]string{}
	for _, ev := range e.streamEvents(t) {
		got[ev.Data.QueueID] = ev.Data.Status
	}
	if got["q-fine"] != "queued" || got["q-foreign"] != "queued" {
		t.Errorf("events = %v, want q-fine and q-foreign announced", got)
	}
	if _, ok := got["q-huge"]; ok {
		t.Error("the oversized event was published")
	}
	fresh, err := snapshot.Open(ctx, e.js, snapshot.Config{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rec, _, found, err := fresh.Get(ctx, snapshot.JobKey(phone, "q-foreign")); err != nil || !found || rec.Status != "queued" {
		t.Errorf("foreign value not replaced: %+v found=%v err=%v", rec, found, err)
	}
	if _, _, found, err := fresh.Get(ctx, snapshot.JobKey(phone, "q-huge")); err != nil || found {
		t.Errorf("the oversized job was committed (found=%v, err=%v)", found, err)
	}
}
