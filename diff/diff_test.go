package diff

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func snap(status string, attempts int) Snapshot {
	return Snapshot{Status: status, Attempts: attempts, Digest: "d"}
}

func job(status string, attempts int) Job {
	return Job{Status: status, Attempts: attempts, Digest: "d"}
}

func TestCompare(t *testing.T) {
	tests := []struct {
		name     string
		prev     *Snapshot // nil: never seen
		cur      Job
		baseline bool
		want     Kind
		wantPrev string
	}{
		{name: "first sight", cur: job("queued", 1), want: Event},
		{name: "first sight in baseline", cur: job("queued", 1), baseline: true, want: Silent},
		{name: "first sight of unknown status", cur: job("waiting", 0), want: Event},
		{name: "baseline does not hide a known job's change", prev: ptr(snap("queued", 1)), cur: job("sent", 1), baseline: true, want: Event, wantPrev: "queued"},
		{name: "unchanged", prev: ptr(snap("sent", 1)), cur: job("sent", 1), want: None},
		{name: "unchanged unknown", prev: ptr(snap("active", 1)), cur: job("active", 1), want: None},
		{name: "other fields changed", prev: ptr(snap("sent", 1)), cur: Job{Status: "sent", Attempts: 1, Digest: "e"}, want: Silent},
		{name: "scheduled to queued", prev: ptr(snap("scheduled", 1)), cur: job("queued", 1), want: Event, wantPrev: "scheduled"},
		{name: "queued to sending", prev: ptr(snap("queued", 1)), cur: job("sending", 1), want: Event, wantPrev: "queued"},
		{name: "sending to sent", prev: ptr(snap("sending", 1)), cur: job("sent", 1), want: Event, wantPrev: "sending"},
		{name: "skips a stage", prev: ptr(snap("queued", 1)), cur: job("read", 1), want: Event, wantPrev: "queued"},
		{name: "sent to delivered", prev: ptr(snap("sent", 1)), cur: job("delivered", 1), want: Event, wantPrev: "sent"},
		{name: "read to played", prev: ptr(snap("read", 1)), cur: job("played", 1), want: Event, wantPrev: "read"},
		{name: "stale: sent back to sending", prev: ptr(snap("sent", 1)), cur: job("sending", 1), want: Stale},
		{name: "stale: read back to queued", prev: ptr(snap("read", 1)), cur: job("queued", 1), want: Stale},
		{name: "queued and pending are one rank", prev: ptr(snap("queued", 1)), cur: job("pending", 1), want: Silent},
		{name: "pending to sending", prev: ptr(snap("pending", 1)), cur: job("sending", 1), want: Event, wantPrev: "pending"},
		{name: "sending to failed", prev: ptr(snap("sending", 1)), cur: job("failed", 1), want: Event, wantPrev: "sending"},
		{name: "sent to failed", prev: ptr(snap("sent", 1)), cur: job("failed", 1), want: Event, wantPrev: "sent"},
		{name: "unknown to failed", prev: ptr(snap("active", 1)), cur: job("failed", 1), want: Event, wantPrev: "active"},
		{name: "failed to queued without retry is stale", prev: ptr(snap("failed", 1)), cur: job("queued", 1), want: Stale},
		{name: "failed to sent without retry is stale", prev: ptr(snap("failed", 1)), cur: job("sent", 1), want: Stale},
		{name: "failed to unknown without retry is stale", prev: ptr(snap("failed", 1)), cur: job("active", 1), want: Stale},
		{name: "retry: failed to queued", prev: ptr(snap("failed", 1)), cur: job("queued", 2), want: Event, wantPrev: "failed"},
		{name: "retry failed again", prev: ptr(snap("failed", 1)), cur: job("failed", 2), want: Event, wantPrev: "failed"},
		{name: "retry seen directly as sent", prev: ptr(snap("failed", 1)), cur: job("sent", 2), want: Event, wantPrev: "failed"},
		{name: "attempts rose with same status", prev: ptr(snap("queued", 1)), cur: job("queued", 2), want: Event, wantPrev: "queued"},
		{name: "attempts fell is stale", prev: ptr(snap("queued", 2)), cur: job("sent", 1), want: Stale},
		{name: "stale read of the failed attempt", prev: ptr(snap("queued", 2)), cur: job("failed", 1), want: Stale},
		{name: "known to unknown", prev: ptr(snap("sent", 1)), cur: job("completed", 1), want: Event, wantPrev: "sent"},
		{name: "unknown to known", prev: ptr(snap("waiting", 1)), cur: job("scheduled", 1), want: Event, wantPrev: "waiting"},
		{name: "unknown to other unknown", prev: ptr(snap("waiting", 1)), cur: job("active", 1), want: Event, wantPrev: "waiting"},
		{name: "attempts zero when unknown", prev: ptr(snap("queued", 0)), cur: job("sending", 0), want: Event, wantPrev: "queued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev Snapshot
			found := tt.prev != nil
			if found {
				prev = *tt.prev
			}
			before := prev
			got := Compare(prev, found, tt.cur, tt.baseline)
			if got.Kind != tt.want {
				t.Fatalf("Kind = %v (%s), want %v", got.Kind, got.Reason, tt.want)
			}
			if got.Reason == "" {
				t.Error("Reason is empty")
			}
			if got.PreviousStatus != tt.wantPrev {
				t.Errorf("PreviousStatus = %q, want %q", got.PreviousStatus, tt.wantPrev)
			}
			want := Snapshot{Status: tt.cur.Status, Attempts: tt.cur.Attempts, Digest: tt.cur.Digest}
			if diff := cmp.Diff(want, got.Next); diff != "" {
				t.Errorf("Next (-want +got):\n%s", diff)
			}
			if prev != before {
				t.Errorf("prev was mutated: %+v", prev)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestEventID(t *testing.T) {
	id := EventID("918527184400", "q-1", "sent", 1)
	if len(id) != 32 {
		t.Fatalf("len(id) = %d, want 32", len(id))
	}
	if again := EventID("918527184400", "q-1", "sent", 1); again != id {
		t.Errorf("not stable: %s then %s", id, again)
	}
	distinct := map[string]string{
		"base":     id,
		"phone":    EventID("918527184401", "q-1", "sent", 1),
		"queue":    EventID("918527184400", "q-2", "sent", 1),
		"status":   EventID("918527184400", "q-1", "read", 1),
		"attempts": EventID("918527184400", "q-1", "sent", 2),
		// Field boundaries are part of the hash: "a"+"bc" is not "ab"+"c".
		"boundary1": EventID("a", "bc", "x", 1),
		"boundary2": EventID("ab", "c", "x", 1),
	}
	seen := map[string]string{}
	for name, v := range distinct {
		if other, dup := seen[v]; dup {
			t.Errorf("%s and %s share id %s", name, other, v)
		}
		seen[v] = name
	}
}

func TestRank(t *testing.T) {
	order := []string{"scheduled", "queued", "sending", "sent", "delivered", "read", "played"}
	for i := 1; i < len(order); i++ {
		a, _ := Rank(order[i-1])
		b, _ := Rank(order[i])
		if b <= a {
			t.Errorf("Rank(%s)=%d not above Rank(%s)=%d", order[i], b, order[i-1], a)
		}
	}
	if q, _ := Rank("queued"); q != func() int { p, _ := Rank("pending"); return p }() {
		t.Error("queued and pending should share a rank")
	}
	if _, known := Rank("completed"); known {
		t.Error("completed should be unknown")
	}
	if _, known := Rank("failed"); !known {
		t.Error("failed should be known")
	}
}

// FuzzCompare checks the invariants every decision must keep, whatever the
// input: an unchanged job never produces a write; an event always carries
// the previous status it came from; a stale read never comes from a rise in
// attempts; and the function never panics.
func FuzzCompare(f *testing.F) {
	f.Add("sent", 1, "d", true, "sending", 1, "d", false)
	f.Add("failed", 1, "d", true, "queued", 2, "x", false)
	f.Add("", 0, "", false, "weird", -3, "", true)
	f.Fuzz(func(t *testing.T, ps string, pa int, pd string, found bool, cs string, ca int, cd string, baseline bool) {
		prev := Snapshot{Status: ps, Attempts: pa, Digest: pd}
		cur := Job{Status: cs, Attempts: ca, Digest: cd}
		got := Compare(prev, found, cur, baseline)
		switch {
		case !found && baseline && got.Kind != Silent:
			t.Fatalf("baseline of a new job gave %v", got.Kind)
		case !found && !baseline && (got.Kind != Event || got.PreviousStatus != ""):
			t.Fatalf("new job gave %v prev %q", got.Kind, got.PreviousStatus)
		case found && prev.Status == cs && pa == ca && pd == cd && got.Kind != None:
			t.Fatalf("unchanged job gave %v", got.Kind)
		case found && got.Kind == Event && got.PreviousStatus != ps:
			t.Fatalf("event PreviousStatus %q, want %q", got.PreviousStatus, ps)
		case found && ca > pa && got.Kind != Event:
			t.Fatalf("retry gave %v", got.Kind)
		case found && ca < pa && got.Kind != Stale:
			t.Fatalf("attempts fell gave %v", got.Kind)
		}
		if got.Next != (Snapshot{Status: cs, Attempts: ca, Digest: cd}) {
			t.Fatalf("Next = %+v", got.Next)
		}
	})
}
