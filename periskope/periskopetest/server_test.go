package periskopetest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

const key = "sim-key-123"

func newServer(t *testing.T) *periskopetest.Server {
	t.Helper()
	s := periskopetest.NewServer(key)
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, s *periskopetest.Server, apiKey string) *periskope.Client {
	t.Helper()
	c, err := periskope.NewClient(periskope.Options{BaseURL: s.URL, APIKey: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// post sends a raw request and returns status, body and Content-Type.
func post(t *testing.T, method, url string, header map[string]string, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header.Get("Content-Type")
}

var docsJob = periskopetest.Job{
	QueueID:           "5df4cb6d-9f2b-46b6-936e-8e6f4b1a5400",
	UniqueID:          "3EB0A0A8F90A01259C81A3",
	MessageID:         "true_8824248940@c.us_3EB0A0A8F90A01259C81A3",
	ChatID:            "8824248940@c.us",
	PerformedBy:       "api",
	Status:            "sent",
	StatusDescription: "Successfully submitted.",
	Message:           map[string]any{"body": "Hello", "type": "chat"},
	Timeline:          map[string]string{"queued_at": "2026-04-01T14:23:21.279Z", "sent_at": "2026-04-01T14:23:24.111Z"},
	Attempts:          1,
}

func TestJobEncodesLikeTheDocs(t *testing.T) {
	fixture, err := os.ReadFile("../testdata/list-queue-jobs.docs-example.json")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, fixture); err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal([]periskopetest.Job{docsJob})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want.String() {
		t.Errorf("encoded\n%s\nwant\n%s", got, want.String())
	}

	// Optional fields: broadcast_id only when set, message_id omitted when empty.
	j := periskopetest.Job{QueueID: "q", BroadcastID: "b"}
	got, _ = json.Marshal(j)
	wantJ := `{"queue_id":"q","unique_id":"","chat_id":"","broadcast_id":"b","performed_by":"","status":"","status_description":"","message":{},"timeline":{},"attempts":0}`
	if string(got) != wantJ {
		t.Errorf("encoded %s, want %s", got, wantJ)
	}
}

func TestServerWithClient(t *testing.T) {
	s := newServer(t)
	s.Upsert("919876543210", docsJob)
	c := newClient(t, s, key)
	res, err := c.ListJobs(context.Background(), periskope.Target{Phone: "919876543210"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 1 || len(res.Invalid) != 0 {
		t.Fatalf("got %+v", res)
	}
	j := res.Jobs[0]
	if j.QueueID != docsJob.QueueID || j.Status != "sent" || j.Attempts != 1 ||
		!j.Timeline["sent_at"].Equal(time.Date(2026, 4, 1, 14, 23, 24, 111e6, time.UTC)) {
		t.Errorf("decoded %+v", j)
	}
}

func TestServerErrors(t *testing.T) {
	s := newServer(t)
	ok := map[string]string{"Authorization": "Bearer " + key, "x-phone": "1"}
	with := func(k, v string) map[string]string {
		h := map[string]string{}
		for a, b := range ok {
			h[a] = b
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	tests := []struct {
		name     string
		method   string
		path     string
		header   map[string]string
		body     string
		status   int
		wantBody string
	}{
		{"ok", "POST", "/v1/message/queues", ok, `{}`, 200, `[]`},
		{"ok empty body", "POST", "/v1/message/queues", ok, ``, 200, `[]`},
		{"lower-case bearer", "POST", "/v1/message/queues", with("Authorization", "bearer "+key), `{}`, 200, `[]`},
		{"no auth", "POST", "/v1/message/queues", with("Authorization", ""), `{}`, 401, `{"message":"invalid api key"}`},
		{"wrong-key", "POST", "/v1/message/queues", with("Authorization", "Bearer nope"), `{}`, 401, `{"message":"invalid api key"}`},
		{"not bearer", "POST", "/v1/message/queues", with("Authorization", "Basic "+key), `{}`, 401, `{"message":"invalid api key"}`},
		{"no phone", "POST", "/v1/message/queues", with("x-phone", ""), `{}`, 400, `{"message":"missing x-phone header"}`},
		{"bad json", "POST", "/v1/message/queues", ok, `{"queue_id":`, 400, `{"message":"invalid JSON body"}`},
		{"array body", "POST", "/v1/message/queues", ok, `[]`, 400, `{"message":"invalid JSON body"}`},
		{"numeric filter", "POST", "/v1/message/queues", ok, `{"queue_id":5}`, 400, `{"message":"invalid JSON body"}`},
		{"get", "GET", "/v1/message/queues", ok, ``, 405, `{"message":"method not allowed"}`},
		{"other path", "POST", "/v1/queue/jobs", ok, `{}`, 404, `{"message":"not found"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, ct := post(t, tt.method, strings.TrimSuffix(s.URL, "/v1")+tt.path, tt.header, tt.body)
			if status != tt.status || body != tt.wantBody || ct != "application/json" {
				t.Errorf("got %d %s (%s), want %d %s", status, body, ct, tt.status, tt.wantBody)
			}
		})
	}
}

func TestSetAPIKey(t *testing.T) {
	s := newServer(t)
	old := newClient(t, s, key)
	tg := periskope.Target{Phone: "1"}
	if _, err := old.ListJobs(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	s.SetAPIKey("rotated")
	_, err := old.ListJobs(context.Background(), tg)
	var se *periskope.StatusError
	if !errors.As(err, &se) || !se.AuthRejected() || periskope.Retryable(err) {
		t.Fatalf("old key: err = %v, want a non-retryable auth rejection", err)
	}
	if _, err := newClient(t, s, "rotated").ListJobs(context.Background(), tg); err != nil {
		t.Errorf("new key: %v", err)
	}
}

func ids(jobs []periskopetest.Job) []string {
	out := []string{}
	for _, j := range jobs {
		out = append(out, j.QueueID)
	}
	return out
}

func clientIDs(t *testing.T, c *periskope.Client, tg periskope.Target) []string {
	t.Helper()
	res, err := c.ListJobs(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, j := range res.Jobs {
		out = append(out, j.QueueID)
	}
	return out
}

func TestFilters(t *testing.T) {
	s := newServer(t)
	s.Upsert("p1",
		periskopetest.Job{QueueID: "a", BroadcastID: "b1"},
		periskopetest.Job{QueueID: "b", BroadcastID: "b2"},
		periskopetest.Job{QueueID: "c", BroadcastID: "b1"},
	)
	s.Upsert("p2", periskopetest.Job{QueueID: "z", BroadcastID: "b1"})
	c := newClient(t, s, key)
	tests := []struct {
		tg   periskope.Target
		want []string
	}{
		{periskope.Target{Phone: "p1"}, []string{"a", "b", "c"}},
		{periskope.Target{Phone: "p1", BroadcastID: "b1"}, []string{"a", "c"}},
		{periskope.Target{Phone: "p1", QueueID: "b"}, []string{"b"}},
		{periskope.Target{Phone: "p1", QueueID: "b", BroadcastID: "b1"}, []string{}},
		{periskope.Target{Phone: "p1", QueueID: "nope"}, []string{}},
		{periskope.Target{Phone: "p2"}, []string{"z"}},
		{periskope.Target{Phone: "unknown"}, []string{}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, clientIDs(t, c, tt.tg)); diff != "" {
			t.Errorf("%v (-want +got):\n%s", tt.tg, diff)
		}
	}
}

func TestUpsertSetJobsAndCopies(t *testing.T) {
	s := newServer(t)
	s.Upsert("p", periskopetest.Job{QueueID: "a", Status: "queued"}, periskopetest.Job{QueueID: "b"})
	s.Upsert("p", periskopetest.Job{QueueID: "c"}, periskopetest.Job{QueueID: "a", Status: "sent"})
	got := s.Jobs("p")
	if diff := cmp.Diff([]string{"a", "b", "c"}, ids(got)); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if got[0].Status != "sent" {
		t.Errorf("a not replaced: %+v", got[0])
	}

	// Jobs returns copies; Upsert stores copies.
	tl := map[string]string{"queued_at": "x"}
	s.Upsert("p", periskopetest.Job{QueueID: "d", Timeline: tl})
	tl["queued_at"] = "changed"
	got = s.Jobs("p")
	got[3].Timeline["queued_at"] = "changed too"
	if v := s.Jobs("p")[3].Timeline["queued_at"]; v != "x" {
		t.Errorf("stored job was changed through an alias: %q", v)
	}

	s.SetJobs("p", []periskopetest.Job{{QueueID: "x"}, {QueueID: "a"}})
	if diff := cmp.Diff([]string{"x", "a"}, ids(s.Jobs("p"))); diff != "" {
		t.Errorf("after SetJobs (-want +got):\n%s", diff)
	}
	if s.Jobs("nobody") != nil {
		t.Error("Jobs of an unknown phone is not nil")
	}
}

func TestServeStale(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, key)
	s.Upsert("p", periskopetest.Job{QueueID: "a", Status: "queued"}, periskopetest.Job{QueueID: "b", Status: "queued"})
	s.Upsert("p", periskopetest.Job{QueueID: "a", Status: "sent"})
	s.Upsert("p", periskopetest.Job{QueueID: "c", Status: "queued"})

	statuses := func(phone string) []string {
		res, err := c.ListJobs(context.Background(), periskope.Target{Phone: phone})
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, j := range res.Jobs {
			out = append(out, j.QueueID+"="+j.Status)
		}
		return out
	}
	s.ServeStale("p", 2)
	s.FailNext(1, 503, "") // failed responses do not use up stale reads
	if _, err := c.ListJobs(context.Background(), periskope.Target{Phone: "p"}); err == nil {
		t.Fatal("FailNext did not fail")
	}
	stale := []string{"a=queued", "b=queued", "c=queued"}
	fresh := []string{"a=sent", "b=queued", "c=queued"}
	for i, want := range [][]string{stale, stale, fresh} {
		if diff := cmp.Diff(want, statuses("p")); diff != "" {
			t.Errorf("response %d (-want +got):\n%s", i, diff)
		}
	}
}

func TestFailNext(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, key)
	s.FailNext(2, http.StatusServiceUnavailable, "2")
	for i := range 2 {
		_, err := c.ListJobs(context.Background(), periskope.Target{Phone: "p"})
		var se *periskope.StatusError
		if !errors.As(err, &se) || se.StatusCode != 503 || se.RetryAfter != 2*time.Second || !periskope.Retryable(err) {
			t.Fatalf("request %d: err = %v", i, err)
		}
		if !strings.Contains(se.Body, "simulated failure") {
			t.Errorf("body = %q", se.Body)
		}
	}
	if _, err := c.ListJobs(context.Background(), periskope.Target{Phone: "p"}); err != nil {
		t.Fatalf("third request: %v", err)
	}
	s.FailNext(1, http.StatusTooManyRequests, "")
	_, err := c.ListJobs(context.Background(), periskope.Target{Phone: "p"})
	if d, ok := periskope.RetryAfter(err); ok || !periskope.Retryable(err) {
		t.Errorf("429 without Retry-After: err = %v, RetryAfter = %v %v", err, d, ok)
	}
}

func TestIntercept(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, "wrong-key")
	var mu sync.Mutex
	var seen []periskopetest.Request
	s.Intercept(func(r periskopetest.Request) (bool, int, http.Header, []byte) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		if r.QueueID == "pass" {
			return false, 0, nil, nil
		}
		return true, 200, http.Header{"Content-Type": {"text/html"}}, []byte("<html>maintenance</html>")
	})
	_, err := c.ListJobs(context.Background(), periskope.Target{Phone: "p", QueueID: "q"})
	var de *periskope.DecodeError
	if !errors.As(err, &de) || de.ContentType != "text/html" {
		t.Fatalf("err = %v, want a DecodeError for text/html (the hook runs before auth)", err)
	}
	_, err = c.ListJobs(context.Background(), periskope.Target{Phone: "p", QueueID: "pass"})
	var se *periskope.StatusError
	if !errors.As(err, &se) || se.StatusCode != 401 {
		t.Fatalf("err = %v, want 401 when the hook passes", err)
	}
	mu.Lock()
	if len(seen) != 2 || seen[0].AuthOK || seen[0].Phone != "p" || seen[0].Status != 0 {
		t.Errorf("hook saw %+v", seen)
	}
	mu.Unlock()

	s.Intercept(nil)
	s.SetAPIKey("wrong-key")
	if _, err := c.ListJobs(context.Background(), periskope.Target{Phone: "p"}); err != nil {
		t.Errorf("after clearing the hook: %v", err)
	}
}

func TestRequestsLog(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, key)
	start := time.Now()
	c.ListJobs(context.Background(), periskope.Target{Phone: "p1", BroadcastID: "b"})
	newClient(t, s, "bad").ListJobs(context.Background(), periskope.Target{Phone: "p2", QueueID: "q"})
	post(t, "GET", s.URL+"/message/queues", nil, "")

	got := s.Requests()
	for _, r := range got {
		if r.Time.Before(start) {
			t.Errorf("request time %v before the test started", r.Time)
		}
	}
	want := []periskopetest.Request{
		{Method: "POST", Path: "/v1/message/queues", Phone: "p1", BroadcastID: "b", AuthOK: true, Status: 200},
		{Method: "POST", Path: "/v1/message/queues", Phone: "p2", QueueID: "q", Status: 401},
		{Method: "GET", Path: "/v1/message/queues", Status: 405},
	}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Time" }, cmp.Ignore())); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
}

// Concurrent use must be race-free (run with -race).
func TestConcurrentUse(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, key)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for n := range 20 {
				phone := []string{"a", "b"}[n%2]
				s.Upsert(phone, periskopetest.Job{QueueID: string(rune('a' + i)), Attempts: n})
				if _, err := c.ListJobs(context.Background(), periskope.Target{Phone: phone}); err != nil {
					t.Error(err)
				}
				s.ServeStale(phone, 1)
				_ = s.Jobs(phone)
				_ = s.Requests()
			}
		})
	}
	wg.Wait()
	if n := len(s.Requests()); n != 160 {
		t.Errorf("logged %d requests, want 160", n)
	}
}
