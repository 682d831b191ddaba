package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/queuewatch/queuewatch/periskope"
)

func newState() *targetState {
	return &targetState{
		backoff:     backoff.NewConstantBackOff(time.Second),
		authBackoff: backoff.NewConstantBackOff(time.Minute),
	}
}

func TestNextWait(t *testing.T) {
	const interval = 5 * time.Second
	unavailable := &periskope.StatusError{StatusCode: 503}
	limited := &periskope.StatusError{StatusCode: 429, RetryAfter: 30 * time.Second}
	shortHint := &periskope.StatusError{StatusCode: 429, RetryAfter: time.Millisecond}
	rejected := &periskope.StatusError{StatusCode: 401}
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"success waits the poll interval", nil, interval},
		{"server error backs off", unavailable, time.Second},
		{"network error backs off", errors.New("connection reset"), time.Second},
		{"Retry-After longer than the backoff wins", limited, 30 * time.Second},
		{"backoff longer than Retry-After wins", shortHint, time.Second},
		{"rejected credentials back off long", rejected, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newState().next(tt.err, interval, zap.NewNop()); got != tt.want {
				t.Errorf("wait = %v, want %v", got, tt.want)
			}
		})
	}
}

// Rejected credentials are logged once when the state changes, not on every
// poll, and recovery is logged once too.
func TestNextLogsStateChangesOnce(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(core)
	st := newState()
	rejected := &periskope.StatusError{StatusCode: 403}
	for range 5 {
		st.next(rejected, time.Second, log)
	}
	if n := logs.FilterMessageSnippet("rejected the credentials").Len(); n != 1 {
		t.Errorf("logged the rejection %d times, want 1", n)
	}
	st.next(nil, time.Second, log)
	st.next(nil, time.Second, log)
	if n := logs.FilterMessage("polling recovered").Len(); n != 1 {
		t.Errorf("logged recovery %d times, want 1", n)
	}
	for range 3 {
		st.next(&periskope.StatusError{StatusCode: 500}, time.Second, log)
	}
	if n := logs.FilterMessageSnippet("poll failed").Len(); n != 1 {
		t.Errorf("logged the failure %d times at info or above, want 1", n)
	}
}

func TestMaskPhone(t *testing.T) {
	for in, want := range map[string]string{
		"918527184400":   "****4400",
		"phone-7c1e2a9b": "****2a9b",
		"123":            "****",
	} {
		if got := MaskPhone(in); got != want {
			t.Errorf("MaskPhone(%q) = %q, want %q", in, got, want)
		}
	}
	got := MaskTarget(periskope.Target{Phone: "918527184400", BroadcastID: "b1"})
	if got != "****4400/broadcast/b1" {
		t.Errorf("MaskTarget = %q", got)
	}
}

func TestDefaultBackoffsStayUnderTheirCaps(t *testing.T) {
	b := expBackoff(time.Minute, 15*time.Minute)
	for i := range 50 {
		if d := b.NextBackOff(); d > 15*time.Minute || d <= 0 {
			t.Fatalf("wait %d = %v, want in (0, 15m]", i, d)
		}
	}
}
