package periskope

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testKey is distinctive so a leak into any error text is easy to spot.
const testKey = "pk_test_Zq8XvN3kW2sLuniqueSECRET"

// newTestClient returns a client for srv with o's non-zero fields.
func newTestClient(t *testing.T, srv *httptest.Server, o Options) *Client {
	t.Helper()
	o.BaseURL = srv.URL + "/v1"
	if o.APIKey == "" {
		o.APIKey = testKey
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve starts a server running h and closes it at the end of the test.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func reply(status int, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestListJobsRequest(t *testing.T) {
	type seen struct {
		Method, Path, RawQuery                      string
		Auth, Phone, ContentType, Accept, UserAgent string
		Body                                        map[string]any
	}
	tests := []struct {
		name     string
		target   Target
		ua       string
		wantBody map[string]any
	}{
		{"phone only", Target{Phone: "919876543210"}, "", map[string]any{}},
		{"broadcast", Target{Phone: "phone-abc123", BroadcastID: "b-1"}, "", map[string]any{"broadcast_id": "b-1"}},
		{"queue", Target{Phone: "+91 98765 43210", QueueID: "q-1"}, "qw/1.0", map[string]any{"queue_id": "q-1"}},
		{"both", Target{Phone: "1", QueueID: "q", BroadcastID: "b"}, "", map[string]any{"queue_id": "q", "broadcast_id": "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got seen
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				got = seen{
					Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
					Auth: r.Header.Get("Authorization"), Phone: r.Header.Get("x-phone"),
					ContentType: r.Header.Get("Content-Type"), Accept: r.Header.Get("Accept"),
					UserAgent: r.Header.Get("User-Agent"),
				}
				if err := json.NewDecoder(r.Body).Decode(&got.Body); err != nil {
					t.Errorf("request body: %v", err)
				}
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `[{"queue_id":"q-1","status":"queued"}]`)
			})
			c := newTestClient(t, srv, Options{UserAgent: tt.ua})
			res, err := c.ListJobs(context.Background(), tt.target)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Jobs) != 1 || res.Jobs[0].QueueID != "q-1" {
				t.Errorf("jobs = %+v", res.Jobs)
			}
			want := seen{
				Method: http.MethodPost, Path: "/v1/message/queues",
				Auth: "Bearer " + testKey, Phone: tt.target.Phone,
				ContentType: "application/json", Accept: "application/json",
				UserAgent: cmpOr(tt.ua, "queuewatch"), Body: tt.wantBody,
			}
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewClientTrailingSlash(t *testing.T) {
	var path string
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		io.WriteString(w, "[]")
	})
	c, err := NewClient(Options{BaseURL: srv.URL + "/v1/", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListJobs(context.Background(), Target{Phone: "1"}); err != nil {
		t.Fatal(err)
	}
	if path != "/v1/message/queues" {
		t.Errorf("path = %q", path)
	}
}

func TestNewClientValidation(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"empty base", Options{APIKey: "k"}},
		{"relative", Options{BaseURL: "/v1", APIKey: "k"}},
		{"no scheme", Options{BaseURL: "api.periskope.app/v1", APIKey: "k"}},
		{"ftp", Options{BaseURL: "ftp://api.periskope.app/v1", APIKey: "k"}},
		{"no host", Options{BaseURL: "https:///v1", APIKey: "k"}},
		{"user info", Options{BaseURL: "https://u:p@api.periskope.app/v1", APIKey: "k"}},
		{"query", Options{BaseURL: "https://api.periskope.app/v1?x=1", APIKey: "k"}},
		{"bad url", Options{BaseURL: "https://[::1/v1", APIKey: "k"}},
		{"no key", Options{BaseURL: "https://api.periskope.app/v1"}},
		{"key with newline", Options{BaseURL: "https://api.periskope.app/v1", APIKey: testKey + "\n"}},
		{"key with space", Options{BaseURL: "https://api.periskope.app/v1", APIKey: " " + testKey}},
		{"user agent with newline", Options{BaseURL: "https://api.periskope.app/v1", APIKey: testKey, UserAgent: "qw\r\nX: y"}},
		{"negative timeout", Options{BaseURL: "https://api.periskope.app/v1", APIKey: testKey, Timeout: -1}},
		{"negative cap", Options{BaseURL: "https://api.periskope.app/v1", APIKey: testKey, MaxBodyBytes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.o)
			if err == nil {
				t.Fatalf("NewClient = %v, want an error", c)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error leaks the key: %v", err)
			}
		})
	}
	if _, err := NewClient(Options{BaseURL: "http://localhost:8080/v1", APIKey: "k"}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestOptionsAndClientDoNotPrintKey(t *testing.T) {
	o := Options{BaseURL: "https://api.periskope.app/v1", APIKey: testKey}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), fmt.Sprintf("%v", &o),
		fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c),
	} {
		if strings.Contains(s, testKey) {
			t.Errorf("printed form leaks the key: %s", s)
		}
	}
}

func TestListJobsBadTarget(t *testing.T) {
	c, err := NewClient(Options{BaseURL: "http://127.0.0.1:1/v1", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range []Target{{}, {Phone: "1\r\nX-Evil: 1"}} {
		_, err := c.ListJobs(context.Background(), tg)
		if err == nil || Retryable(err) {
			t.Errorf("ListJobs(%q) err = %v, want a non-retryable error", tg.Phone, err)
		}
	}
}

func TestListJobsStatusErrors(t *testing.T) {
	now := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		status         int
		header         map[string]string
		body           string
		wantRetryable  bool
		wantAuth       bool
		wantRetryAfter time.Duration
		wantText       string
	}{
		{name: "401", status: 401, body: `{"message":"invalid api key"}`, wantAuth: true,
			wantText: `periskope: list jobs 919876543210: HTTP 401 Unauthorized: {"message":"invalid api key"}`},
		{name: "403", status: 403, wantAuth: true,
			wantText: "periskope: list jobs 919876543210: HTTP 403 Forbidden"},
		{name: "400", status: 400, body: "bad x-phone", wantText: "HTTP 400 Bad Request: bad x-phone"},
		{name: "404", status: 404, wantText: "HTTP 404 Not Found"},
		{name: "408", status: 408, wantRetryable: true},
		{name: "425", status: 425, wantRetryable: true},
		{name: "429 seconds", status: 429, header: map[string]string{"Retry-After": "7"}, wantRetryable: true,
			wantRetryAfter: 7 * time.Second, wantText: "HTTP 429 Too Many Requests (retry after 7s)"},
		{name: "429 date", status: 429, header: map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)},
			wantRetryable: true, wantRetryAfter: 90 * time.Second},
		{name: "429 past date", status: 429, header: map[string]string{"Retry-After": now.Add(-time.Hour).Format(http.TimeFormat)},
			wantRetryable: true},
		{name: "429 invalid", status: 429, header: map[string]string{"Retry-After": "soon"}, wantRetryable: true},
		{name: "429 negative", status: 429, header: map[string]string{"Retry-After": "-3"}, wantRetryable: true},
		{name: "500", status: 500, body: "oops\n\x1b[1mtrace", wantRetryable: true,
			wantText: "HTTP 500 Internal Server Error: oops [1mtrace"},
		{name: "502 html", status: 502, header: map[string]string{"Content-Type": "text/html"}, body: "<html>bad gateway</html>", wantRetryable: true},
		{name: "503 retry after", status: 503, header: map[string]string{"Retry-After": "2"}, body: "down", wantRetryable: true,
			wantRetryAfter: 2 * time.Second,
			wantText:       "periskope: list jobs 919876543210: HTTP 503 Service Unavailable (retry after 2s): down"},
		{name: "400 with retry after kept", status: 400, header: map[string]string{"Retry-After": "5"}, wantRetryAfter: 5 * time.Second},
		{name: "302 not followed", status: 302, header: map[string]string{"Location": "/elsewhere"}},
		{name: "long body", status: 500, body: strings.Repeat("x", 10000), wantRetryable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, reply(tt.status, tt.header, tt.body))
			c := newTestClient(t, srv, Options{Now: func() time.Time { return now }})
			res, err := c.ListJobs(context.Background(), Target{Phone: "919876543210"})
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("ListJobs = %v, %v; want a *StatusError", res, err)
			}
			if se.StatusCode != tt.status || se.RetryAfter != tt.wantRetryAfter || se.AuthRejected() != tt.wantAuth {
				t.Errorf("got status %d, RetryAfter %v, AuthRejected %v", se.StatusCode, se.RetryAfter, se.AuthRejected())
			}
			if got := Retryable(err); got != tt.wantRetryable {
				t.Errorf("Retryable = %v, want %v", got, tt.wantRetryable)
			}
			d, ok := RetryAfter(err)
			if d != tt.wantRetryAfter || ok != (tt.wantRetryAfter > 0) {
				t.Errorf("RetryAfter = %v, %v", d, ok)
			}
			if tt.wantText != "" && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantText)
			}
			if len(se.Body) > bodySnippetLen {
				t.Errorf("Body is %d bytes, want at most %d", len(se.Body), bodySnippetLen)
			}
		})
	}
}

func TestStatusErrorText(t *testing.T) {
	tests := []struct {
		err  *StatusError
		want string
	}{
		{&StatusError{StatusCode: 503, RetryAfter: 2 * time.Second, Body: "down"},
			"periskope: list jobs: HTTP 503 Service Unavailable (retry after 2s): down"},
		{&StatusError{StatusCode: 599}, "periskope: list jobs: HTTP 599"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestListJobsBodyProblems(t *testing.T) {
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		maxBody   int64
		check     func(error) bool
		wantText  string
		retryable bool
	}{
		{
			name:     "html 200",
			handler:  reply(200, map[string]string{"Content-Type": "text/html; charset=utf-8"}, "<!doctype html><title>Login</title>"),
			check:    func(err error) bool { var de *DecodeError; return errors.As(err, &de) && de.ContentType == "text/html" },
			wantText: "periskope: list jobs 1: decode response (content-type text/html): invalid JSON",
		},
		{
			name:     "truncated json",
			handler:  reply(200, map[string]string{"Content-Type": "application/json"}, `[{"queue_id":"a"},{"que`),
			check:    func(err error) bool { var de *DecodeError; return errors.As(err, &de) },
			wantText: "unexpected end of JSON input",
		},
		{
			name:     "over cap",
			handler:  reply(200, nil, `[`+strings.Repeat(`{"queue_id":"a"},`, 100)+`{"queue_id":"b"}]`),
			maxBody:  1000,
			check:    func(err error) bool { return errors.Is(err, ErrBodyTooLarge) },
			wantText: "1000-byte cap",
		},
		{
			name: "over cap without content-length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				for range 100 {
					io.WriteString(w, strings.Repeat(" ", 100))
					w.(http.Flusher).Flush()
				}
			},
			maxBody:  1000,
			check:    func(err error) bool { return errors.Is(err, ErrBodyTooLarge) },
			wantText: "1000-byte cap",
		},
		{
			name: "body cut short",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1000")
				io.WriteString(w, `[{"queue_id":"a"}`)
			},
			check: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) },
		},
		{
			name: "connection dropped",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
			},
			check: func(err error) bool { return err != nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, tt.handler)
			c := newTestClient(t, srv, Options{MaxBodyBytes: tt.maxBody})
			res, err := c.ListJobs(context.Background(), Target{Phone: "1"})
			if err == nil || !tt.check(err) {
				t.Fatalf("ListJobs = %v, %v", res, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantText)
			}
			if !Retryable(err) {
				t.Errorf("Retryable(%v) = false, want true", err)
			}
		})
	}
}

func TestListJobsConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	c := newTestClient(t, srv, Options{})
	srv.Close()
	_, err := c.ListJobs(context.Background(), Target{Phone: "1"})
	if err == nil || !Retryable(err) {
		t.Fatalf("err = %v, want a retryable error", err)
	}
	if !strings.Contains(err.Error(), "list jobs 1:") {
		t.Errorf("err = %q does not name the target", err)
	}
}

// blockingServer answers only when the client goes away (or the test
// ends); started receives one value per request once it is being handled.
func blockingServer(t *testing.T) (*httptest.Server, chan struct{}) {
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv, started
}

func TestListJobsCallerCancel(t *testing.T) {
	srv, started := blockingServer(t)
	c := newTestClient(t, srv, Options{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := c.ListJobs(ctx, Target{Phone: "1", BroadcastID: "b"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if Retryable(err) {
		t.Error("Retryable(canceled) = true")
	}
	if !strings.Contains(err.Error(), "1/broadcast/b") {
		t.Errorf("err = %q does not name the target", err)
	}
}

func TestListJobsAlreadyCancelled(t *testing.T) {
	srv := serve(t, reply(200, nil, "[]"))
	c := newTestClient(t, srv, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.ListJobs(ctx, Target{Phone: "1"}); !errors.Is(err, context.Canceled) || Retryable(err) {
		t.Fatalf("err = %v, want a non-retryable context.Canceled", err)
	}
}

func TestListJobsTimeout(t *testing.T) {
	srv, _ := blockingServer(t)
	c := newTestClient(t, srv, Options{Timeout: 50 * time.Millisecond})
	_, err := c.ListJobs(context.Background(), Target{Phone: "1"})
	if !errors.Is(err, context.DeadlineExceeded) || !Retryable(err) {
		t.Fatalf("err = %v, want a retryable deadline error", err)
	}
	if !strings.Contains(err.Error(), "within 50ms") {
		t.Errorf("err = %q, want it to name the timeout", err)
	}
}

// Every error path, with a server that echoes the credentials back, must
// keep the key out of the error text.
func TestAPIKeyNeverInErrors(t *testing.T) {
	echo := func(status int, ct string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			w.WriteHeader(status)
			// Put the key right across the 256-byte cut, and once more in full.
			fmt.Fprintf(w, "%s%s %s", strings.Repeat("-", bodySnippetLen-10), r.Header.Get("Authorization"), r.Header.Get("Authorization"))
		}
	}
	handlers := map[string]http.HandlerFunc{
		"401 echo":  echo(401, "application/json"),
		"403 echo":  echo(403, "text/plain"),
		"429 echo":  echo(429, "text/plain"),
		"500 echo":  echo(500, "text/html"),
		"503 echo":  echo(503, "text/html"),
		"200 html":  echo(200, "text/html"),
		"200 short": func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%q", r.Header.Get("Authorization")) },
		"200 object": func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string]string{r.Header.Get("Authorization"): "x"})
		},
		"over cap": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, strings.Repeat(r.Header.Get("Authorization"), 1000))
		},
		"dropped": func(w http.ResponseWriter, r *http.Request) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		},
	}
	for name, h := range handlers {
		t.Run(name, func(t *testing.T) {
			srv := serve(t, h)
			c := newTestClient(t, srv, Options{MaxBodyBytes: 4096})
			_, err := c.ListJobs(context.Background(), Target{Phone: "1"})
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
				if strings.Contains(s, testKey) || strings.Contains(s, testKey[:12]) {
					t.Errorf("error leaks the key: %s", s)
				}
			}
		})
	}
	t.Run("cancelled and timed out", func(t *testing.T) {
		srv, _ := blockingServer(t)
		c := newTestClient(t, srv, Options{Timeout: 20 * time.Millisecond})
		_, err := c.ListJobs(context.Background(), Target{Phone: "1"})
		if err == nil || strings.Contains(err.Error(), testKey) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestListJobsPartialItems(t *testing.T) {
	srv := serve(t, reply(200, map[string]string{"Content-Type": "application/json"},
		`[{"queue_id":"a","status":"SENT"},{"status":"sent"},{"queue_id":"c","timeline":5}]`))
	c := newTestClient(t, srv, Options{})
	res, err := c.ListJobs(context.Background(), Target{Phone: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].QueueID != "a" || res.Jobs[0].Status != "sent" {
		t.Errorf("Jobs = %+v", res.Jobs)
	}
	var got []string
	for _, ie := range res.Invalid {
		got = append(got, ie.Error())
	}
	want := []string{
		"item 1: missing queue_id",
		`item 2 (queue_id "c"): field "timeline": got a number, want an object`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Invalid (-want +got):\n%s", diff)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{context.Canceled, false},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{context.DeadlineExceeded, true},
		{io.ErrUnexpectedEOF, true},
		{&StatusError{StatusCode: 401}, false},
		{&StatusError{StatusCode: 403}, false},
		{&StatusError{StatusCode: 404}, false},
		{&StatusError{StatusCode: 422}, false},
		{&StatusError{StatusCode: 408}, true},
		{&StatusError{StatusCode: 425}, true},
		{&StatusError{StatusCode: 429}, true},
		{&StatusError{StatusCode: 500}, true},
		{&StatusError{StatusCode: 599}, true},
		{fmt.Errorf("wrapped: %w", &StatusError{StatusCode: 503}), true},
		{&DecodeError{Err: errors.New("x")}, true},
		{fmt.Errorf("x: %w", ErrBodyTooLarge), true},
		{ItemError{Err: errMissingQueueID}, false},
	}
	for _, tt := range tests {
		if got := Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%#v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if d, ok := RetryAfter(errors.New("x")); ok || d != 0 {
		t.Errorf("RetryAfter(plain error) = %v, %v", d, ok)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"":                                  0,
		"0":                                 0,
		"120":                               2 * time.Minute,
		" 3 ":                               3 * time.Second,
		"1.5":                               0,
		"-1":                                0,
		"99999999999999999999":              0,
		"Wed, 01 Apr 2026 12:00:30 GMT":     30 * time.Second,
		"Wednesday, 01-Apr-26 12:01:00 GMT": time.Minute,
		"Wed Apr  1 12:00:05 2026":          5 * time.Second,
		"Wed, 01 Apr 2026 11:00:00 GMT":     0,
		"tomorrow":                          0,
	}
	for in, want := range tests {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestItemErrorsRedactKey(t *testing.T) {
	body := fmt.Sprintf(`[{"queue_id":%q,"status":1},{"queue_id":"q","attempts":%q}]`, testKey, testKey)
	res, err := decode([]byte(body), "application/json", testKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Invalid) != 2 {
		t.Fatalf("Invalid = %v", res.Invalid)
	}
	for _, ie := range res.Invalid {
		if strings.Contains(ie.Error(), testKey) {
			t.Errorf("ItemError leaks the key: %v", ie)
		}
	}
}
