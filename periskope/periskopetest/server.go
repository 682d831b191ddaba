package periskopetest

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// ListPath is the path the Server serves.
const ListPath = "/v1/message/queues"

// Job is one queue job as the fake API reports it. It encodes to JSON like
// the documented item (see the docs example of POST /message/queues):
// queue_id, unique_id, message_id (omitted when empty), chat_id,
// broadcast_id (omitted when empty), performed_by, status,
// status_description, message, timeline, attempts.
type Job struct {
	QueueID           string
	UniqueID          string
	MessageID         string
	ChatID            string
	BroadcastID       string
	PerformedBy       string
	Status            string
	StatusDescription string
	// Message is e.g. {"body":"Hello","type":"chat"}; nil encodes as {}.
	Message map[string]any
	// Timeline maps keys like "queued_at" to RFC 3339 timestamps; nil
	// encodes as {}.
	Timeline map[string]string
	Attempts int
}

// wireJob fixes the field order and names of an encoded Job.
type wireJob struct {
	QueueID           string            `json:"queue_id"`
	UniqueID          string            `json:"unique_id"`
	MessageID         string            `json:"message_id,omitempty"`
	ChatID            string            `json:"chat_id"`
	BroadcastID       string            `json:"broadcast_id,omitempty"`
	PerformedBy       string            `json:"performed_by"`
	Status            string            `json:"status"`
	StatusDescription string            `json:"status_description"`
	Message           map[string]any    `json:"message"`
	Timeline          map[string]string `json:"timeline"`
	Attempts          int               `json:"attempts"`
}

// MarshalJSON encodes j in the API's item shape.
func (j Job) MarshalJSON() ([]byte, error) {
	w := wireJob(j)
	if w.Message == nil {
		w.Message = map[string]any{}
	}
	if w.Timeline == nil {
		w.Timeline = map[string]string{}
	}
	return json.Marshal(w)
}

// clone copies j's maps so the copy can be changed independently.
func (j Job) clone() Job {
	j.Message = maps.Clone(j.Message)
	j.Timeline = maps.Clone(j.Timeline)
	return j
}

// Request is one request as the Server saw it.
type Request struct {
	Time        time.Time
	Method      string
	Path        string
	Phone       string // x-phone header
	QueueID     string // from the JSON body, if any
	BroadcastID string // from the JSON body, if any
	AuthOK      bool   // the bearer token matched the key at that time
	Status      int    // status code of the response (0 while being handled)
}

// phoneJobs holds one phone's jobs in insertion order, and the version of
// each job before its last change (for stale reads).
type phoneJobs struct {
	jobs []Job
	prev map[string]Job
}

// Server is a fake Periskope API. All methods are safe for concurrent use.
type Server struct {
	// URL is the base URL to give a client; it ends with "/v1".
	URL string

	ts *httptest.Server

	mu             sync.Mutex
	apiKey         string
	phones         map[string]*phoneJobs
	stale          map[string]int
	failN          int
	failStatus     int
	failRetryAfter string
	intercept      func(Request) (bool, int, http.Header, []byte)
	requests       []Request
}

// NewServer starts a fake API accepting apiKey as bearer token. Close it
// when done.
func NewServer(apiKey string) *Server {
	s := &Server{
		apiKey: apiKey,
		phones: make(map[string]*phoneJobs),
		stale:  make(map[string]int),
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.ts.URL + "/v1"
	return s
}

// Close shuts the server down, waiting for requests in flight.
func (s *Server) Close() { s.ts.Close() }

// SetAPIKey changes the accepted key: requests with the old one now get 401.
func (s *Server) SetAPIKey(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiKey = k
}

// Upsert inserts jobs for phone, or replaces the ones with the same
// QueueID in place (keeping the order of first insertion). A replaced job's
// old version is kept for [Server.ServeStale].
func (s *Server) Upsert(phone string, jobs ...Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.phone(phone)
	for _, j := range jobs {
		j = j.clone()
		i := slices.IndexFunc(p.jobs, func(old Job) bool { return old.QueueID == j.QueueID })
		if i < 0 {
			p.jobs = append(p.jobs, j)
			continue
		}
		p.prev[j.QueueID] = p.jobs[i]
		p.jobs[i] = j
	}
}

// SetJobs replaces all of phone's jobs with jobs. Jobs whose QueueID was
// already there keep their old version for [Server.ServeStale].
func (s *Server) SetJobs(phone string, jobs []Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.phone(phone)
	p := &phoneJobs{prev: make(map[string]Job)}
	for _, j := range jobs {
		if i := slices.IndexFunc(old.jobs, func(o Job) bool { return o.QueueID == j.QueueID }); i >= 0 {
			p.prev[j.QueueID] = old.jobs[i]
		}
		p.jobs = append(p.jobs, j.clone())
	}
	s.phones[phone] = p
}

// Jobs returns a copy of phone's jobs, in order.
func (s *Server) Jobs(phone string) []Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.phones[phone]
	if p == nil {
		return nil
	}
	out := make([]Job, len(p.jobs))
	for i, j := range p.jobs {
		out[i] = j.clone()
	}
	return out
}

// ServeStale makes the next n successful (200) responses for phone stale:
// each job that has a previous version is reported as that version.
func (s *Server) ServeStale(phone string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stale[phone] = n
}

// FailNext makes the next n requests, for any phone, fail with status and a
// small JSON error body, with a Retry-After header if retryAfter is
// non-empty.
func (s *Server) FailNext(n int, status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus, s.failRetryAfter = n, status, retryAfter
}

// Intercept installs f, called for every request before anything else
// (auth, FailNext, path checks) so a test can script any answer. f gets
// the request as it will be logged (Status 0). If it returns handled, the
// Server writes status, header and body as given (Content-Type defaults to
// application/json) and does nothing else. f runs without the Server's
// lock held and may call its methods. nil removes the hook.
func (s *Server) Intercept(f func(r Request) (handled bool, status int, header http.Header, body []byte)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.intercept = f
}

// Requests returns the log of every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// phone returns phone's jobs, creating the entry. s.mu must be held.
func (s *Server) phone(phone string) *phoneJobs {
	p := s.phones[phone]
	if p == nil {
		p = &phoneJobs{prev: make(map[string]Job)}
		s.phones[phone] = p
	}
	return p
}

// maxRequestBody caps what the server reads of a request body.
const maxRequestBody = 1 << 20

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	filter, bodyErr := parseFilter(raw)
	req := Request{
		Time:        time.Now(),
		Method:      r.Method,
		Path:        r.URL.Path,
		Phone:       r.Header.Get("x-phone"),
		QueueID:     filter.QueueID,
		BroadcastID: filter.BroadcastID,
	}

	s.mu.Lock()
	req.AuthOK = bearerOK(r.Header.Get("Authorization"), s.apiKey)
	idx := len(s.requests)
	s.requests = append(s.requests, req)
	intercept := s.intercept
	s.mu.Unlock()

	var status int
	var body []byte
	handled := false
	if intercept != nil {
		var header http.Header
		handled, status, header, body = intercept(req)
		if handled {
			for k, vs := range header {
				w.Header()[k] = slices.Clone(vs)
			}
		}
	}

	s.mu.Lock()
	if !handled {
		status, body = s.answer(r, req, readErr == nil && bodyErr == nil, w.Header())
	}
	if status == 0 {
		status = http.StatusOK
	}
	s.requests[idx].Status = status
	s.mu.Unlock()

	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	w.Write(body)
}

// answer decides the response to a request that no hook handled. s.mu
// must be held.
func (s *Server) answer(r *http.Request, req Request, bodyOK bool, h http.Header) (int, []byte) {
	if s.failN > 0 {
		s.failN--
		if s.failRetryAfter != "" {
			h.Set("Retry-After", s.failRetryAfter)
		}
		return s.failStatus, errorBody(fmt.Sprintf("simulated failure (HTTP %d)", s.failStatus))
	}
	switch {
	case r.URL.Path != ListPath:
		return http.StatusNotFound, errorBody("not found")
	case r.Method != http.MethodPost:
		h.Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, errorBody("method not allowed")
	case !req.AuthOK:
		return http.StatusUnauthorized, errorBody("invalid api key")
	case req.Phone == "":
		return http.StatusBadRequest, errorBody("missing x-phone header")
	case !bodyOK:
		return http.StatusBadRequest, errorBody("invalid JSON body")
	}

	stale := s.stale[req.Phone] > 0
	if stale {
		s.stale[req.Phone]--
	}
	jobs := []Job{}
	if p := s.phones[req.Phone]; p != nil {
		for _, j := range p.jobs {
			if stale {
				if old, ok := p.prev[j.QueueID]; ok {
					j = old
				}
			}
			if (req.QueueID == "" || j.QueueID == req.QueueID) &&
				(req.BroadcastID == "" || j.BroadcastID == req.BroadcastID) {
				jobs = append(jobs, j)
			}
		}
	}
	body, err := json.Marshal(jobs)
	if err != nil { // a Message value that JSON cannot encode
		return http.StatusInternalServerError, errorBody("encode jobs: " + err.Error())
	}
	return http.StatusOK, body
}

// filter is the JSON body of a list request.
type filter struct {
	QueueID     string `json:"queue_id"`
	BroadcastID string `json:"broadcast_id"`
}

// parseFilter reads a request body: empty, or a JSON object whose
// queue_id and broadcast_id (if present) are strings or null.
func parseFilter(raw []byte) (filter, error) {
	var f filter
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return f, nil
	}
	if raw[0] != '{' {
		return filter{}, fmt.Errorf("body is not a JSON object")
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return filter{}, err
	}
	return f, nil
}

// bearerOK reports whether an Authorization header carries key as a
// bearer token (constant time).
func bearerOK(header, key string) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(token), []byte(key)) == 1
}

// errorBody is the simulator's JSON error body.
func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return b
}
