package worker

import (
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// TestFaultDefaultBackoffs checks the retry policies a worker gets when
// none is injected (the fault tests inject fast, exact ones): after failed
// polls, exponential from 1s to 2m with ±50% jitter, never giving up;
// while the credentials are rejected, from 12 poll intervals (at most 15m)
// to 15m.
func TestFaultDefaultBackoffs(t *testing.T) {
	tests := []struct {
		name          string
		b             func(o Options) backoff.BackOff
		interval      time.Duration
		first, most   time.Duration
		jitterPercent int
	}{
		{"failed polls", func(o Options) backoff.BackOff { return o.Backoff() }, 5 * time.Second, time.Second, 2 * time.Minute, 50},
		{"rejected credentials", func(o Options) backoff.BackOff { return o.AuthBackoff() }, 5 * time.Second, time.Minute, 15 * time.Minute, 50},
		{"rejected credentials, long interval", func(o Options) backoff.BackOff { return o.AuthBackoff() }, 2 * time.Minute, 15 * time.Minute, 15 * time.Minute, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := New(nil, nil, nil, nil, Options{PollInterval: tt.interval})
			within := func(d, center time.Duration) bool {
				j := center * time.Duration(tt.jitterPercent) / 100
				return d >= center-j && d <= center+j
			}
			for range 20 { // jitter: several draws
				b := tt.b(w.o)
				if d := b.NextBackOff(); !within(d, tt.first) {
					t.Fatalf("first wait %v, want %v ±%d%%", d, tt.first, tt.jitterPercent)
				}
				var last time.Duration
				for range 200 {
					last = b.NextBackOff()
					if last == backoff.Stop {
						t.Fatal("the policy gave up")
					}
				}
				if !within(last, tt.most) {
					t.Fatalf("wait after 200 failures %v, want %v ±%d%%", last, tt.most, tt.jitterPercent)
				}
				b.Reset()
				if d := b.NextBackOff(); !within(d, tt.first) {
					t.Fatalf("first wait after Reset %v, want %v", d, tt.first)
				}
			}
		})
	}
}
