package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func valid() Event {
	return New("0f3a", Data{
		Phone: "918527184400", QueueID: "q-1", Status: "sent", PreviousStatus: "sending", Attempts: 1,
		ObservedAt: time.Date(2026, 4, 1, 14, 23, 24, 0, time.UTC),
		Job:        json.RawMessage(`{"queue_id":"q-1"}`),
	})
}

func TestNewFillsTheEnvelope(t *testing.T) {
	e := valid()
	if e.SpecVersion != "1.0" || e.Type != "queue.job.status_changed" || e.Source != "periskope/phones/918527184400" ||
		e.Subject != "q-1" || e.DataContentType != "application/json" || !e.Time.Equal(e.Data.ObservedAt) {
		t.Errorf("envelope = %+v", e)
	}
	b, err := json.Marshal(New("x", Data{Phone: "p", QueueID: "q", Status: "queued", ObservedAt: time.Now()}))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`"previous_status":""`, `"attempts":0`, `"timeline":{}`, `"job":{}`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("%s missing from %s", f, b)
		}
	}
	if strings.Contains(string(b), "broadcast_id") {
		t.Errorf("broadcast_id present although unknown: %s", b)
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	b, _ := json.Marshal(valid())
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "0f3a" || got.Data.PreviousStatus != "sending" || string(got.Data.Job) != `{"queue_id":"q-1"}` {
		t.Errorf("decoded %+v", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	mutate := func(f func(*Event)) []byte {
		e := valid()
		f(&e)
		b, _ := json.Marshal(e)
		return b
	}
	tests := []struct {
		name, payload, want string
	}{
		{"not json", "<html>", "invalid character"},
		{"wrong type", `{"specversion":1}`, "cannot unmarshal"},
		{"missing id", string(mutate(func(e *Event) { e.ID = "" })), "missing id"},
		{"missing several", string(mutate(func(e *Event) { e.Data.Status = ""; e.Data.QueueID = "" })), "missing data.queue_id, data.status"},
		{"wrong specversion", string(mutate(func(e *Event) { e.SpecVersion = "0.3" })), `specversion "0.3"`},
		{"wrong type attr", string(mutate(func(e *Event) { e.Type = "other" })), `type "other"`},
		{"source mismatch", string(mutate(func(e *Event) { e.Source = "periskope/phones/1" })), "does not match data.phone"},
		{"subject mismatch", string(mutate(func(e *Event) { e.Subject = "q-2" })), "does not match data.queue_id"},
		{"no time", string(mutate(func(e *Event) { e.Time = time.Time{} })), "missing time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.payload))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestDetailSubject(t *testing.T) {
	for _, tt := range []struct{ phone, status, want string }{
		{"918527184400", "sent", "queue.job.status_changed.918527184400.sent"},
		{"phone-x", "weird.status >", "queue.job.status_changed.phone-x.weird_status__"},
		{"918527184400", "", "queue.job.status_changed.918527184400._"},
	} {
		if got := DetailSubject(Subject, tt.phone, tt.status); got != tt.want {
			t.Errorf("DetailSubject(%q,%q) = %q, want %q", tt.phone, tt.status, got, tt.want)
		}
	}
}

// FuzzDecode: the decoder never panics and what it accepts re-encodes to an
// event it accepts again.
func FuzzDecode(f *testing.F) {
	b, _ := json.Marshal(valid())
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		e, err := Decode(payload)
		if err != nil {
			return
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("re-decode of accepted event: %v", err)
		}
	})
}
