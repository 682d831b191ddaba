package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/queuewatch/queuewatch/events"
)

// full is an event with every member set, broadcast_id included.
func full() events.Event {
	return events.New("5a0d5f1c0f7e4b0c8f3a9b2d1e6c7a84", events.Data{
		Phone: "918527184400", QueueID: "5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400", UniqueID: "3EB0A0A8F90A01259C81A3",
		MessageID: "true_8824248940@c.us_3EB0A0A8F90A01259C81A3", ChatID: "8824248940@c.us",
		BroadcastID: "b-1", PreviousStatus: "sending", Status: "sent", StatusDescription: "Successfully submitted.",
		Attempts: 1,
		Timeline: map[string]time.Time{
			"queued_at": time.Date(2026, 4, 1, 14, 23, 21, 279e6, time.UTC),
			"sent_at":   time.Date(2026, 4, 1, 14, 23, 24, 111e6, time.FixedZone("IST", 5*3600+1800)),
		},
		ObservedAt: time.Date(2026, 4, 1, 14, 23, 24, 5e8, time.UTC),
		Job:        json.RawMessage(`{"queue_id":"5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400","status":"sent"}`),
	})
}

// minimal is an event with only the required data; everything optional is
// zero.
func minimal() events.Event {
	return events.New("x1", events.Data{Phone: "p", QueueID: "q", Status: "queued", ObservedAt: time.Now()})
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// schemaDoc is what the tests read of the embedded schema: the members of
// the envelope and of data.
type schemaDoc struct {
	Required   []string                   `json:"required"`
	Properties map[string]json.RawMessage `json:"properties"`
	Data       struct {
		Required   []string                   `json:"required"`
		Properties map[string]json.RawMessage `json:"properties"`
	} `json:"-"`
}

func loadSchema(t *testing.T) schemaDoc {
	t.Helper()
	var s schemaDoc
	if err := json.Unmarshal(events.Schema, &s); err != nil {
		t.Fatalf("events.Schema: %v", err)
	}
	if err := json.Unmarshal(s.Properties["data"], &s.Data); err != nil {
		t.Fatalf("events.Schema properties.data: %v", err)
	}
	return s
}

// keys returns the members of the JSON object b and of its "data" object.
func keys(t *testing.T, b []byte) (envelope, data []string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var d map[string]json.RawMessage
	if err := json.Unmarshal(m["data"], &d); err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m)), slices.Sorted(maps.Keys(d))
}

func TestEventsMatchTheSchema(t *testing.T) {
	for name, ev := range map[string]events.Event{"full": full(), "minimal": minimal()} {
		if err := events.ValidatePayload(marshal(t, ev)); err != nil {
			t.Errorf("%s event: %v", name, err)
		}
	}
}

// TestSchemaListsExactlyTheFieldsOfEvent ties the schema to the Go type
// both ways: what a minimal event always carries is what the schema
// requires, and what a full event carries is what it describes. Adding,
// renaming or dropping a field (or its omitempty) in code fails here.
func TestSchemaListsExactlyTheFieldsOfEvent(t *testing.T) {
	s := loadSchema(t)
	env, data := keys(t, marshal(t, minimal()))
	if diff := cmp.Diff(slices.Sorted(slices.Values(s.Required)), env); diff != "" {
		t.Errorf("envelope members always present vs schema required (-schema +code):\n%s", diff)
	}
	if diff := cmp.Diff(slices.Sorted(slices.Values(s.Data.Required)), data); diff != "" {
		t.Errorf("data members always present vs schema required (-schema +code):\n%s", diff)
	}
	env, data = keys(t, marshal(t, full()))
	if diff := cmp.Diff(slices.Sorted(maps.Keys(s.Properties)), env); diff != "" {
		t.Errorf("envelope members vs schema properties (-schema +code):\n%s", diff)
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(s.Data.Properties)), data); diff != "" {
		t.Errorf("data members vs schema properties (-schema +code):\n%s", diff)
	}
}

// TestSchemaRejectsARenamedField renames each required member, as a change
// of a json tag would, and expects the schema to name the missing one.
func TestSchemaRejectsARenamedField(t *testing.T) {
	s := loadSchema(t)
	payload := string(marshal(t, full()))
	renames := map[string]string{`"queue_id":`: `"queueId":`} // the classic
	for _, f := range s.Required {
		renames[`"`+f+`":`] = `"` + f + `_renamed":`
	}
	for _, f := range s.Data.Required {
		renames[`"`+f+`":`] = `"` + strings.ToUpper(f[:1]) + f[1:] + `":`
	}
	for from, to := range renames {
		t.Run(strings.Trim(from, `":`), func(t *testing.T) {
			// Rename the first occurrence: the envelope's, or data's (data.job
			// comes last).
			renamed := strings.Replace(payload, from, to, 1)
			err := events.ValidatePayload([]byte(renamed))
			var verr *jsonschema.ValidationError
			if !errors.Is(err, events.ErrInvalid) || !errors.As(err, &verr) {
				t.Fatalf("renamed %s → %s: err = %v, want ErrInvalid and a *jsonschema.ValidationError", from, to, err)
			}
			if name := strings.Trim(from, `":`); !strings.Contains(err.Error(), "'"+name+"'") {
				t.Errorf("the error does not name %s:\n%v", name, err)
			}
		})
	}
}

func TestSchemaRejectsWrongValues(t *testing.T) {
	tests := []struct{ name, from, to string }{
		{"time not a date-time", `"time":"2026-04-01T14:23:24.5Z"`, `"time":"yesterday"`},
		{"observed_at not a date-time", `"observed_at":"2026-04-01T14:23:24.5Z"`, `"observed_at":"14:23"`},
		{"timeline entry not a date-time", `"queued_at":"2026-04-01T14:23:21.279Z"`, `"queued_at":"soon"`},
		{"attempts a string", `"attempts":1`, `"attempts":"1"`},
		{"attempts negative", `"attempts":1`, `"attempts":-1`},
		{"attempts fractional", `"attempts":1`, `"attempts":1.5`},
		{"wrong specversion", `"specversion":"1.0"`, `"specversion":"0.3"`},
		{"wrong type", `"type":"queue.job.status_changed"`, `"type":"other"`},
		{"source without prefix", `"source":"periskope/phones/918527184400"`, `"source":"918527184400"`},
		{"empty status", `"status":"sent"`, `"status":""`},
		{"empty broadcast_id", `"broadcast_id":"b-1"`, `"broadcast_id":""`},
		{"job not an object", `"job":{"queue_id"`, `"job":["queue_id"`},
		{"data null", `"data":{`, `"data":null,"x":{`},
	}
	payload := string(marshal(t, full()))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(payload, tt.from) {
				t.Fatalf("%s not in %s", tt.from, payload)
			}
			broken := strings.Replace(payload, tt.from, tt.to, 1)
			if err := events.ValidatePayload([]byte(broken)); !errors.Is(err, events.ErrInvalid) {
				t.Errorf("err = %v for %s", err, broken)
			}
		})
	}
	if err := events.ValidatePayload([]byte("<html>")); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("not JSON: err = %v", err)
	}
	// Unknown members are allowed: the contract may grow.
	grown := strings.Replace(payload, `"data":{`, `"traceparent":"00-1-2-01","data":{"priority":3,`, 1)
	if err := events.ValidatePayload([]byte(grown)); err != nil {
		t.Errorf("extra members: %v", err)
	}
}

// TestAsyncAPIDocument checks docs/asyncapi.json: it is JSON (and so YAML),
// AsyncAPI 3.0, has both channels, its message payload is exactly the JSON
// Schema file, and its examples are valid events.
func TestAsyncAPIDocument(t *testing.T) {
	raw, err := os.ReadFile("../docs/asyncapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AsyncAPI string `json:"asyncapi"`
		Channels map[string]struct {
			Address  string `json:"address"`
			Messages map[string]struct {
				Ref string `json:"$ref"`
			} `json:"messages"`
		} `json:"channels"`
		Operations map[string]struct {
			Action  string `json:"action"`
			Channel struct {
				Ref string `json:"$ref"`
			} `json:"channel"`
		} `json:"operations"`
		Components struct {
			Messages map[string]struct {
				Payload struct {
					SchemaFormat string          `json:"schemaFormat"`
					Schema       json.RawMessage `json:"schema"`
				} `json:"payload"`
				Examples []struct {
					Payload json.RawMessage `json:"payload"`
				} `json:"examples"`
			} `json:"messages"`
		} `json:"components"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("docs/asyncapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.AsyncAPI, "3.0") {
		t.Errorf("asyncapi = %q, want 3.0.x", doc.AsyncAPI)
	}
	var addresses []string
	for name, ch := range doc.Channels {
		addresses = append(addresses, ch.Address)
		for _, m := range ch.Messages {
			if m.Ref != "#/components/messages/statusChanged" {
				t.Errorf("channel %s carries %s", name, m.Ref)
			}
		}
	}
	slices.Sort(addresses)
	if want := []string{events.Subject, events.Subject + ".{phone}.{status}"}; !slices.Equal(addresses, want) {
		t.Errorf("channel addresses %v, want %v", addresses, want)
	}
	if len(doc.Operations) == 0 {
		t.Error("no operations")
	}
	for name, op := range doc.Operations {
		if _, ok := doc.Channels[strings.TrimPrefix(op.Channel.Ref, "#/channels/")]; !ok || op.Action != "receive" {
			t.Errorf("operation %s: %s on %s", name, op.Action, op.Channel.Ref)
		}
	}
	msg, ok := doc.Components.Messages["statusChanged"]
	if !ok {
		t.Fatal("no components.messages.statusChanged")
	}
	if msg.Payload.SchemaFormat != "application/schema+json;version=draft-2020-12" {
		t.Errorf("payload schemaFormat %q", msg.Payload.SchemaFormat)
	}
	var inDoc, file any
	if err := json.Unmarshal(msg.Payload.Schema, &inDoc); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(events.Schema, &file); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(file, inDoc); diff != "" {
		t.Errorf("the AsyncAPI payload schema drifted from events/schema/queue.job.status_changed.schema.json; copy the file into components.messages.statusChanged.payload.schema (-file +asyncapi):\n%s", diff)
	}
	if len(msg.Examples) == 0 {
		t.Error("the message has no example")
	}
	for i, ex := range msg.Examples {
		if err := events.ValidatePayload(ex.Payload); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}

// TestEventsDocExamples validates every CloudEvent shown in docs/events.md.
func TestEventsDocExamples(t *testing.T) {
	raw, err := os.ReadFile("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(raw, -1)
	n := 0
	for _, b := range blocks {
		if !bytes.Contains(b[1], []byte(`"specversion"`)) {
			continue
		}
		n++
		if err := events.ValidatePayload(b[1]); err != nil {
			t.Errorf("docs/events.md example %d: %v\n%s", n, err, b[1])
		}
		if _, err := events.Decode(b[1]); err != nil {
			t.Errorf("docs/events.md example %d does not decode: %v", n, err)
		}
	}
	if n == 0 {
		t.Error("docs/events.md shows no event")
	}
}
