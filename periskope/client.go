package periskope

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxBodyBytes = 32 << 20 // 32 MiB
	DefaultUserAgent    = "queuewatch"
)

// listPath is appended to Options.BaseURL.
const listPath = "/message/queues"

// Options configures a Client. Only BaseURL and APIKey are required.
type Options struct {
	// BaseURL is the API root, e.g. "https://api.periskope.app/v1". The
	// request goes to BaseURL + "/message/queues".
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <APIKey>". It is a secret:
	// it never appears in errors or in the printed Options.
	APIKey string
	// HTTPClient sends the requests. Default: a client with its own
	// transport (proxy from the environment, pooled connections) that does
	// not follow redirects (a 3xx is returned as a *StatusError).
	HTTPClient *http.Client
	// WrapTransport, if set, wraps the default client's transport (to count
	// requests, say). It is ignored when HTTPClient is set.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Timeout bounds one request, including reading the body. It is applied
	// through a context derived from the caller's. Default 10s.
	Timeout time.Duration
	// MaxBodyBytes caps the (decompressed) response body. Default 32 MiB.
	MaxBodyBytes int64
	// UserAgent is sent as User-Agent. Default "queuewatch".
	UserAgent string
	// Now is the clock for Retry-After HTTP-dates. Default time.Now.
	Now func() time.Time
}

// String prints the options with the API key redacted.
func (o Options) String() string {
	key := "(empty)"
	if o.APIKey != "" {
		key = "[REDACTED]"
	}
	return fmt.Sprintf("periskope.Options{BaseURL:%q APIKey:%s Timeout:%s MaxBodyBytes:%d UserAgent:%q}",
		o.BaseURL, key, o.Timeout, o.MaxBodyBytes, o.UserAgent)
}

// GoString is like String, so %#v does not print the key either.
func (o Options) GoString() string { return o.String() }

// Client lists queue jobs. It is safe for concurrent use.
type Client struct {
	endpoint  string
	apiKey    string
	hc        *http.Client
	timeout   time.Duration
	maxBody   int64
	userAgent string
	now       func() time.Time
	idle      interface{ CloseIdleConnections() } // the default transport, under any wrapper
}

// NewClient checks o and returns a Client. BaseURL must be an absolute
// http or https URL without user info, query or fragment; APIKey must be
// non-empty and free of spaces and control characters.
func NewClient(o Options) (*Client, error) {
	u, err := url.Parse(o.BaseURL)
	switch {
	case err != nil:
		return nil, errors.New("periskope: BaseURL is not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("periskope: BaseURL scheme %q, want http or https", u.Scheme)
	case u.Host == "":
		return nil, errors.New("periskope: BaseURL has no host")
	case u.User != nil:
		return nil, errors.New("periskope: BaseURL must not contain user info")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, errors.New("periskope: BaseURL must not contain a query or fragment")
	}
	if o.APIKey == "" {
		return nil, errors.New("periskope: APIKey is empty")
	}
	if !headerSafe(o.APIKey, false) {
		return nil, errors.New("periskope: APIKey contains spaces or control characters")
	}
	if !headerSafe(o.UserAgent, true) {
		return nil, errors.New("periskope: UserAgent contains control characters")
	}
	if o.Timeout < 0 || o.MaxBodyBytes < 0 {
		return nil, errors.New("periskope: Timeout and MaxBodyBytes must not be negative")
	}
	c := &Client{
		endpoint:  strings.TrimRight(u.String(), "/") + listPath,
		apiKey:    o.APIKey,
		hc:        o.HTTPClient,
		timeout:   cmp.Or(o.Timeout, DefaultTimeout),
		maxBody:   cmp.Or(o.MaxBodyBytes, DefaultMaxBodyBytes),
		userAgent: cmp.Or(o.UserAgent, DefaultUserAgent),
		now:       o.Now,
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
		c.idle = c.hc.Transport.(*http.Transport)
		if o.WrapTransport != nil {
			c.hc.Transport = o.WrapTransport(c.hc.Transport)
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

func defaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tr.ResponseHeaderTimeout = 0 // the per-request context bounds it
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// CloseIdleConnections closes the connections the client keeps open for
// later requests. Call it when done with the client: they would otherwise
// stay open (and their goroutines alive) until the server drops them.
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
	if c.idle != nil {
		c.idle.CloseIdleConnections() // a wrapped transport does not pass it on
	}
}

// String describes the client without its API key.
func (c *Client) String() string {
	return fmt.Sprintf("periskope.Client{endpoint:%q timeout:%s}", c.endpoint, c.timeout)
}

// GoString is like String, so %#v does not print the key either.
func (c *Client) GoString() string { return c.String() }

// Result is the decoded answer to one ListJobs call.
type Result struct {
	// Jobs are the usable items, in response order. Never nil.
	Jobs []Job
	// Invalid lists the items that could not be used. They do not affect
	// Jobs: one bad item never hides the others.
	Invalid []ItemError
}

// listRequest is the JSON body of POST /message/queues.
type listRequest struct {
	QueueID     string `json:"queue_id,omitempty"`
	BroadcastID string `json:"broadcast_id,omitempty"`
}

// ListJobs polls the jobs of t once: POST {BaseURL}/message/queues with
// x-phone t.Phone and t's filters in the JSON body.
//
// Errors name t and wrap the cause: a *StatusError for a non-2xx answer, a
// *DecodeError or ErrBodyTooLarge for an unusable body, a network error, or
// ctx.Err() if ctx ended (errors.Is(err, context.Canceled) holds after a
// cancel). Use Retryable and RetryAfter to decide what to do next.
func (c *Client) ListJobs(ctx context.Context, t Target) (*Result, error) {
	if t.Phone == "" {
		return nil, fmt.Errorf("periskope: list jobs %s: target has no phone", t)
	}
	if !headerSafe(t.Phone, true) {
		return nil, fmt.Errorf("periskope: list jobs %q: phone contains control characters", t.Phone)
	}
	body, err := json.Marshal(listRequest{QueueID: t.QueueID, BroadcastID: t.BroadcastID})
	if err != nil {
		return nil, fmt.Errorf("periskope: list jobs %s: encode request: %w", t, err)
	}

	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("periskope: list jobs %s: %w", t, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("x-phone", t.Phone)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)

	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.failed(ctx, t, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.statusError(t, resp)
	}
	data, err := readCapped(resp.Body, resp.ContentLength, c.maxBody)
	if errors.Is(err, ErrBodyTooLarge) {
		return nil, fmt.Errorf("periskope: list jobs %s: response body over the %d-byte cap: %w", t, c.maxBody, err)
	}
	if err != nil {
		return nil, c.failed(ctx, t, fmt.Errorf("read response: %w", err))
	}
	res, err := decode(data, resp.Header.Get("Content-Type"), c.apiKey)
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			de.target = t.String()
		}
		return nil, err
	}
	return res, nil
}

// failed wraps an error of sending the request or reading the response.
// If the caller's ctx ended, its error is returned instead; a timeout of
// our own says so.
func (c *Client) failed(ctx context.Context, t Target, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("periskope: list jobs %s: %w", t, ctx.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("periskope: list jobs %s: no complete response within %s: %w", t, c.timeout, err)
	}
	return fmt.Errorf("periskope: list jobs %s: %w", t, &transportError{err})
}

// statusError reads a little of a non-2xx response into a *StatusError.
func (c *Client) statusError(t Target, resp *http.Response) *StatusError {
	head, _ := io.ReadAll(io.LimitReader(resp.Body, int64(bodySnippetLen+len(c.apiKey))))
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10) // let a short body's connection be reused
	return &StatusError{
		StatusCode: resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.now()),
		Body:       sanitize(head, bodySnippetLen, c.apiKey),
		target:     t.String(),
	}
}

// readCapped reads r whole unless it is (or announces to be) longer than
// max bytes, in which case it returns ErrBodyTooLarge.
func readCapped(r io.Reader, contentLength, max int64) ([]byte, error) {
	if contentLength > max {
		return nil, ErrBodyTooLarge
	}
	var buf bytes.Buffer
	if contentLength > 0 {
		buf.Grow(int(contentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, ErrBodyTooLarge
	}
	return buf.Bytes(), nil
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date
// (relative to now; past dates give 0). Invalid or unrepresentable values
// give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(math.MaxInt64/time.Second) {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return max(at.Sub(now), 0)
}

// headerSafe reports whether s can go in a header value: no control
// characters and, unless spaces is set, no spaces either.
func headerSafe(s string, spaces bool) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r == ' ' && !spaces) {
			return false
		}
	}
	return true
}
