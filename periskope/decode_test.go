package periskope

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr[T any](v T) *T { return &v }

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// ignoreRaw compares jobs without their Raw bytes.
var ignoreRaw = cmpopts.IgnoreFields(Job{}, "Raw")

func TestDecodeFixtures(t *testing.T) {
	tests := []struct {
		file string
		want []Job
	}{{
		file: "list-queue-jobs.docs-example.json",
		want: []Job{{
			QueueID:           "5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400",
			UniqueID:          "3EB0A0A8F90A01259C81A3",
			MessageID:         "true_8824248940@c.us_3EB0A0A8F90A01259C81A3",
			ChatID:            "8824248940@c.us",
			PerformedBy:       "api",
			Status:            "sent",
			StatusDescription: "Successfully submitted.",
			Attempts:          1,
			Timeline: map[string]time.Time{
				"queued_at": utc("2026-04-01T14:23:21.279Z"),
				"sent_at":   utc("2026-04-01T14:23:24.111Z"),
			},
		}},
	}, {
		file: "legacy-queue-jobs.docs-example.json",
		want: []Job{{
			QueueID:   "63cda77b-73de-433e-a652-a8f489100d43",
			MessageID: "3EB0BB657AE18C4D3BB276DFB67F6CCA7DD13234",
			ChatID:    "919537851844@c.us",
			Status:    "completed",
			Attempts:  1,
		}},
	}}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body := readFixture(t, tt.file)
			res, err := decode(body, "application/json", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Invalid) != 0 {
				t.Fatalf("Invalid = %v", res.Invalid)
			}
			if diff := cmp.Diff(tt.want, res.Jobs, ignoreRaw); diff != "" {
				t.Errorf("jobs (-want +got):\n%s", diff)
			}
			var items []json.RawMessage
			if err := json.Unmarshal(body, &items); err != nil {
				t.Fatal(err)
			}
			if got := string(res.Jobs[0].Raw); got != string(items[0]) {
				t.Errorf("Raw = %s, want %s", got, items[0])
			}
		})
	}
}

// The message-status fixture is a single object, not a list: rejected as a
// top-level shape, but as an item it decodes with its ack.
func TestDecodeMessageStatusFixtureAsItem(t *testing.T) {
	body := readFixture(t, "message-status.docs-example.json")
	if _, err := decode(body, "application/json", ""); err == nil {
		t.Fatal("a bare object decoded without error")
	}
	res, err := decode(append(append([]byte("["), body...), ']'), "application/json", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Status != "read" || res.Jobs[0].Ack == nil || *res.Jobs[0].Ack != 4 {
		t.Fatalf("got %+v", res)
	}
}

func TestDecodeItemTolerance(t *testing.T) {
	tests := []struct {
		name    string
		item    string
		want    Job    // when wantErr is ""
		wantErr string // substring of the ItemError
	}{
		{"minimal", `{"queue_id":"q"}`, Job{QueueID: "q"}, ""},
		{"nulls everywhere", `{"queue_id":"q","unique_id":null,"message_id":null,"chat_id":null,"broadcast_id":null,"performed_by":null,"status":null,"status_description":null,"attempts":null,"ack":null,"timeline":null,"message":null}`, Job{QueueID: "q"}, ""},
		{"unknown fields ignored", `{"queue_id":"q","new_field":{"x":[1,2]},"delivered_count":1}`, Job{QueueID: "q"}, ""},
		{"broadcast_id", `{"queue_id":"q","broadcast_id":"b"}`, Job{QueueID: "q", BroadcastID: "b"}, ""},
		{"status trimmed and lower-cased", `{"queue_id":"q","status":"  Delivered \n"}`, Job{QueueID: "q", Status: "delivered"}, ""},
		{"unknown status kept", `{"queue_id":"q","status":"Waiting-Children"}`, Job{QueueID: "q", Status: "waiting-children"}, ""},
		{"attempts string", `{"queue_id":"q","attempts":"2"}`, Job{QueueID: "q", Attempts: 2}, ""},
		{"attempts spaced string", `{"queue_id":"q","attempts":" 3 "}`, Job{QueueID: "q", Attempts: 3}, ""},
		{"attempts empty string", `{"queue_id":"q","attempts":""}`, Job{QueueID: "q"}, ""},
		{"attempts float integral", `{"queue_id":"q","attempts":2.0}`, Job{QueueID: "q", Attempts: 2}, ""},
		{"attempts fractional", `{"queue_id":"q","attempts":1.5}`, Job{}, `field "attempts": 1.5 is not a count`},
		{"attempts negative", `{"queue_id":"q","attempts":-1}`, Job{}, `field "attempts"`},
		{"attempts bool", `{"queue_id":"q","attempts":true}`, Job{}, `field "attempts": got a boolean, want a number`},
		{"attempts word", `{"queue_id":"q","attempts":"two"}`, Job{}, `field "attempts": "two" is not a number`},
		{"attemptsMade used when attempts absent", `{"queue_id":"q","attemptsMade":3}`, Job{QueueID: "q", Attempts: 3}, ""},
		{"attemptsMade used when attempts null", `{"queue_id":"q","attempts":null,"attemptsMade":"2"}`, Job{QueueID: "q", Attempts: 2}, ""},
		{"attempts wins over attemptsMade", `{"queue_id":"q","attempts":1,"attemptsMade":3}`, Job{QueueID: "q", Attempts: 1}, ""},
		{"attemptsMade wrong type", `{"queue_id":"q","attemptsMade":{}}`, Job{}, `field "attemptsMade"`},
		{"ack number", `{"queue_id":"q","ack":4}`, Job{QueueID: "q", Ack: ptr(4)}, ""},
		{"ack string", `{"queue_id":"q","ack":"3"}`, Job{QueueID: "q", Ack: ptr(3)}, ""},
		{"ack -1", `{"queue_id":"q","ack":-1}`, Job{QueueID: "q", Ack: ptr(-1)}, ""},
		{"ack 0", `{"queue_id":"q","ack":0}`, Job{QueueID: "q", Ack: ptr(0)}, ""},
		{"ack above range", `{"queue_id":"q","ack":6}`, Job{QueueID: "q"}, ""},
		{"ack below range", `{"queue_id":"q","ack":"-2"}`, Job{QueueID: "q"}, ""},
		{"ack huge", `{"queue_id":"q","ack":1e400}`, Job{QueueID: "q"}, ""},
		{"ack fractional", `{"queue_id":"q","ack":2.5}`, Job{QueueID: "q"}, ""},
		{"ack object", `{"queue_id":"q","ack":{}}`, Job{}, `field "ack": got an object`},
		{"ack word", `{"queue_id":"q","ack":"read"}`, Job{}, `field "ack"`},
		{"status number", `{"queue_id":"q","status":3}`, Job{}, `field "status": got a number, want a string`},
		{"chat_id object", `{"queue_id":"q","chat_id":{"user":"1"}}`, Job{}, `field "chat_id": got an object`},
		{"message_id array", `{"queue_id":"q","message_id":[]}`, Job{}, `field "message_id": got an array`},
		{"queue_id number", `{"queue_id":5}`, Job{}, `field "queue_id"`},
		{"missing queue_id", `{"status":"sent"}`, Job{}, "missing queue_id"},
		{"empty queue_id", `{"queue_id":"","status":"sent"}`, Job{}, "missing queue_id"},
		{"blank queue_id", `{"queue_id":"  "}`, Job{}, "missing queue_id"},
		{"legacy id", `{"id":"abc","status":"completed"}`, Job{QueueID: "abc", Status: "completed"}, ""},
		{"legacy numeric id", `{"id":42}`, Job{QueueID: "42"}, ""},
		{"legacy id when queue_id empty", `{"queue_id":"","id":"abc"}`, Job{QueueID: "abc"}, ""},
		{"queue_id wins over id", `{"queue_id":"q","id":"abc"}`, Job{QueueID: "q"}, ""},
		{"legacy id wrong type", `{"id":true}`, Job{}, "missing queue_id"},
		{"legacy data.chat_id", `{"id":"a","data":{"chat_id":"1@c.us"}}`, Job{QueueID: "a", ChatID: "1@c.us"}, ""},
		{"legacy data odd", `{"id":"a","data":{"chat_id":7}}`, Job{QueueID: "a"}, ""},
		{"chat_id wins over data.chat_id", `{"id":"a","chat_id":"2@c.us","data":{"chat_id":"1@c.us"}}`, Job{QueueID: "a", ChatID: "2@c.us"}, ""},
		{"item null", `null`, Job{}, "item is null, want an object"},
		{"item string", `"q"`, Job{}, "item is a string, want an object"},
		{"item number", `7`, Job{}, "item is a number, want an object"},
		{"item array", `[{"queue_id":"q"}]`, Job{}, "item is an array, want an object"},
		{"timeline not object", `{"queue_id":"q","timeline":"2026-04-01T14:23:21Z"}`, Job{}, `field "timeline": got a string, want an object`},
		{"timeline array", `{"queue_id":"q","timeline":[]}`, Job{}, `field "timeline": got an array`},
		{"timeline empty", `{"queue_id":"q","timeline":{}}`, Job{QueueID: "q"}, ""},
		{"timeline formats", `{"queue_id":"q","timeline":{
			"a":"2026-04-01T14:23:21.279Z",
			"b":"2026-04-01T14:23:21Z",
			"c":"2026-04-01T14:23:21.279+00:00",
			"d":"2026-04-01T19:53:21.279+05:30",
			"e":"2026-04-01T14:23:21.279",
			"f":"2026-04-01T14:23:21",
			"g":1775053401279,
			"h":"1775053401279",
			"i":1775053401279.5,
			"j":"2026-04-01 14:23:21.279+00:00",
			"k":" 2026-04-01T14:23:21.279Z "}}`,
			Job{QueueID: "q", Timeline: map[string]time.Time{
				"a": utc("2026-04-01T14:23:21.279Z"),
				"b": utc("2026-04-01T14:23:21Z"),
				"c": utc("2026-04-01T14:23:21.279Z"),
				"d": utc("2026-04-01T14:23:21.279Z"),
				"e": utc("2026-04-01T14:23:21.279Z"),
				"f": utc("2026-04-01T14:23:21Z"),
				"g": utc("2026-04-01T14:23:21.279Z"),
				"h": utc("2026-04-01T14:23:21.279Z"),
				"i": utc("2026-04-01T14:23:21.2795Z"),
				"j": utc("2026-04-01T14:23:21.279Z"),
				"k": utc("2026-04-01T14:23:21.279Z"),
			}}, ""},
		{"timeline bad values dropped", `{"queue_id":"q","timeline":{
			"ok":"2026-04-01T14:23:21Z","null":null,"word":"yesterday","bool":true,
			"obj":{},"zero":0,"neg":-5,"huge":1e300,"empty":"","date":"2026-04-01"}}`,
			Job{QueueID: "q", Timeline: map[string]time.Time{"ok": utc("2026-04-01T14:23:21Z")}}, ""},
		{"timeline all dropped is nil", `{"queue_id":"q","timeline":{"x":"soon"}}`, Job{QueueID: "q"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `[{"queue_id":"before"},` + tt.item + `,{"queue_id":"after"}]`
			res, err := decode([]byte(body), "application/json", "")
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			ids := make([]string, 0, len(res.Jobs))
			for _, j := range res.Jobs {
				ids = append(ids, j.QueueID)
			}
			if tt.wantErr != "" {
				if len(res.Invalid) != 1 {
					t.Fatalf("Invalid = %v, want one error", res.Invalid)
				}
				ie := res.Invalid[0]
				if ie.Index != 1 || !strings.Contains(ie.Error(), tt.wantErr) {
					t.Errorf("ItemError = %q (index %d), want index 1 and %q", ie.Error(), ie.Index, tt.wantErr)
				}
				if ie.Err == nil || !errors.Is(ie, ie.Err) {
					t.Errorf("ItemError does not unwrap to its cause")
				}
				if diff := cmp.Diff([]string{"before", "after"}, ids); diff != "" {
					t.Errorf("the good items were affected (-want +got):\n%s", diff)
				}
				return
			}
			if len(res.Invalid) != 0 {
				t.Fatalf("Invalid = %v", res.Invalid)
			}
			if len(res.Jobs) != 3 {
				t.Fatalf("got %d jobs, want 3", len(res.Jobs))
			}
			got := res.Jobs[1]
			if diff := cmp.Diff(tt.want, got, ignoreRaw); diff != "" {
				t.Errorf("job (-want +got):\n%s", diff)
			}
			if !json.Valid(got.Raw) || string(got.Raw) != strings.TrimSpace(tt.item) {
				t.Errorf("Raw = %s, want the item verbatim", got.Raw)
			}
			for k, ts := range got.Timeline {
				if ts.Location() != time.UTC {
					t.Errorf("timeline %q not in UTC: %v", k, ts)
				}
			}
		})
	}
}

func TestItemErrorNamesQueueID(t *testing.T) {
	res, err := decode([]byte(`[{"queue_id":"x","status":1}]`), "application/json", "")
	if err != nil {
		t.Fatal(err)
	}
	want := `item 0 (queue_id "x"): field "status": got a number, want a string`
	if len(res.Invalid) != 1 || res.Invalid[0].Error() != want || res.Invalid[0].QueueID != "x" {
		t.Fatalf("Invalid = %v, want %q", res.Invalid, want)
	}
	if got := (ItemError{Index: 3, Err: errMissingQueueID}).Error(); got != "item 3: missing queue_id" {
		t.Errorf("Error() = %q", got)
	}
}

func TestDecodeTopLevel(t *testing.T) {
	one := `[{"queue_id":"a"},{"queue_id":"b"}]`
	tests := []struct {
		name    string
		body    string
		ct      string
		wantIDs []string
		wantErr string // substring of the *DecodeError
	}{
		{name: "array", body: one, wantIDs: []string{"a", "b"}},
		{name: "array with whitespace", body: "\n\t " + one + "\n", wantIDs: []string{"a", "b"}},
		{name: "empty array", body: `[]`, wantIDs: []string{}},
		{name: "null", body: `null`, wantIDs: []string{}},
		{name: "jobs wrapper", body: `{"jobs":` + one + `}`, wantIDs: []string{"a", "b"}},
		{name: "data wrapper", body: `{"data":` + one + `,"count":2}`, wantIDs: []string{"a", "b"}},
		{name: "items wrapper", body: `{"items":` + one + `}`, wantIDs: []string{"a", "b"}},
		{name: "results wrapper", body: `{"results":` + one + `}`, wantIDs: []string{"a", "b"}},
		{name: "queues wrapper", body: `{"queues":` + one + `}`, wantIDs: []string{"a", "b"}},
		{name: "wrapper null", body: `{"data":null}`, wantIDs: []string{}},
		{name: "wrapper empty", body: `{"jobs":[]}`, wantIDs: []string{}},
		{name: "array preferred over null", body: `{"jobs":null,"data":` + one + `}`, wantIDs: []string{"a", "b"}},
		{name: "array preferred over object", body: `{"data":{"x":1},"jobs":` + one + `}`, wantIDs: []string{"a", "b"}},
		{name: "wrapper wrong type", body: `{"data":"nope"}`, wantErr: `top-level object key "data" holds a string, want an array of jobs`},
		{name: "object without keys", body: `{"message":"ok","status":200}`, wantErr: `top-level object without a jobs array (keys: "message", "status")`},
		{name: "empty object", body: `{}`, wantErr: `top-level object without a jobs array (keys: none)`},
		{name: "string", body: `"hello"`, wantErr: "top level is a string, want an array of jobs"},
		{name: "number", body: `42`, wantErr: "top level is a number"},
		{name: "boolean", body: `true`, wantErr: "top level is a boolean"},
		{name: "empty body", body: ``, wantErr: "empty body"},
		{name: "blank body", body: " \n", wantErr: "empty body"},
		{name: "truncated array", body: `[{"queue_id":"a"},{"queue_`, wantErr: "invalid JSON: unexpected end of JSON input"},
		{name: "truncated object", body: `{"jobs":[{"queue_id":"a"}`, wantErr: "invalid JSON"},
		{name: "trailing garbage", body: one + `x`, wantErr: "invalid JSON"},
		{name: "bad literal", body: `nul`, wantErr: "invalid JSON"},
		{name: "html", ct: "text/html; charset=utf-8", body: "<!DOCTYPE html>\n<html><body>Bad gateway</body></html>",
			wantErr: "(content-type text/html): invalid JSON: invalid character '<' looking for beginning of value: <!DOCTYPE html> <html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := cmpOr(tt.ct, "application/json")
			res, err := decode([]byte(tt.body), ct, "")
			if tt.wantErr != "" {
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("err = %v, want a *DecodeError", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %q, want it to contain %q", err, tt.wantErr)
				}
				if !Retryable(err) {
					t.Errorf("Retryable(%v) = false", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, j := range res.Jobs {
				ids = append(ids, j.QueueID)
			}
			if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if res.Jobs == nil {
				t.Error("Jobs is nil")
			}
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestDecodeErrorSnippet(t *testing.T) {
	body := "<html>\x00\x1b[31m" + strings.Repeat("é", 300) + "</html>"
	_, err := decode([]byte(body), "", "")
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v", err)
	}
	if len(de.Snippet) > bodySnippetLen || !strings.HasPrefix(de.Snippet, "<html>[31mé") {
		t.Errorf("Snippet = %q (%d bytes)", de.Snippet, len(de.Snippet))
	}
	if !strings.Contains(err.Error(), "(no content-type)") {
		t.Errorf("err = %q, want it to mention the missing content type", err)
	}
}

// Raw must not alias the buffer the body was read into.
func TestDecodeRawIsACopy(t *testing.T) {
	body := []byte(`{"data":[{"queue_id":"a","status":"sent"}]}`)
	res, err := decode(body, "application/json", "")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"queue_id":"a","status":"sent"}`
	for i := range body {
		body[i] = 'x'
	}
	if got := string(res.Jobs[0].Raw); got != want {
		t.Errorf("Raw = %s after reusing the body buffer, want %s", got, want)
	}
}

func FuzzDecode(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			f.Add(readFixture(f, e.Name()))
		}
	}
	for _, s := range []string{
		`null`, `[]`, `{"jobs":null}`, `{"data":[{"id":1,"attemptsMade":"2"}]}`,
		`[{"queue_id":"q","ack":"4","attempts":"1","timeline":{"a":1775053401279,"b":"2026-04-01T14:23:21"}}]`,
		`[null,1,"x",{}]`, `<html>`, `[{"queue_id":"q"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := decode(body, "application/json", "secret-key")
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v (%T), want a *DecodeError", err, err)
			}
			return
		}
		if res.Jobs == nil {
			t.Fatal("Jobs is nil")
		}
		for _, j := range res.Jobs {
			if j.QueueID == "" {
				t.Fatalf("job without QueueID: %+v", j)
			}
			if !json.Valid(j.Raw) {
				t.Fatalf("Raw is not valid JSON: %q", j.Raw)
			}
			if j.Ack != nil && (*j.Ack < -1 || *j.Ack > 5) {
				t.Fatalf("Ack out of range: %d", *j.Ack)
			}
			if j.Attempts < 0 {
				t.Fatalf("negative Attempts: %d", j.Attempts)
			}
			for k, ts := range j.Timeline {
				if ts.Location() != time.UTC {
					t.Fatalf("timeline %q not UTC", k)
				}
			}
		}
		for _, ie := range res.Invalid {
			if ie.Err == nil || ie.Index < 0 {
				t.Fatalf("bad ItemError %+v", ie)
			}
		}
	})
}
