package periskope

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrBodyTooLarge is wrapped into the error returned when a response body is
// larger than [Options.MaxBodyBytes]. The error's text names the cap.
var ErrBodyTooLarge = errors.New("periskope: response body exceeds size cap")

// bodySnippetLen is how much of a response body an error keeps.
const bodySnippetLen = 256

// StatusError reports a response with a non-2xx HTTP status.
type StatusError struct {
	// StatusCode is the HTTP status code.
	StatusCode int
	// RetryAfter is the server's Retry-After hint (seconds or HTTP-date,
	// dates relative to [Options.Now], past dates as 0), or 0 when absent or
	// invalid. It is kept for every status, not only 429 and 503.
	RetryAfter time.Duration
	// Body is the start of the response body (at most 256 bytes), with
	// control characters stripped and the API key redacted.
	Body string

	target string // set by the client: which poll failed
}

// Error returns e.g.
// "periskope: list jobs 919876543210: HTTP 503 Service Unavailable (retry after 2s): <body>".
// The target is left out when the error was not made by a [Client].
func (e *StatusError) Error() string {
	var b strings.Builder
	b.WriteString("periskope: list jobs")
	if e.target != "" {
		b.WriteString(" " + e.target)
	}
	fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	if text := http.StatusText(e.StatusCode); text != "" {
		b.WriteString(" " + text)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Body != "" {
		b.WriteString(": " + e.Body)
	}
	return b.String()
}

// AuthRejected reports whether the server refused the API key (401 or 403).
// Retrying will not help until the key is changed.
func (e *StatusError) AuthRejected() bool {
	return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
}

// DecodeError reports a 2xx response whose body is not a usable job list:
// not JSON (an HTML error page, a truncated body) or JSON of another shape.
type DecodeError struct {
	// ContentType is the media type the server declared, if any.
	ContentType string
	// Snippet is the start of the body (at most 256 bytes), with control
	// characters stripped and the API key redacted.
	Snippet string
	// Err says what was wrong.
	Err error

	target string // set by the client: which poll failed
}

// Error returns e.g.
// "periskope: decode response (content-type text/html): invalid JSON: …: <!DOCTYPE html>…".
func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString("periskope: ")
	if e.target != "" {
		b.WriteString("list jobs " + e.target + ": ")
	}
	b.WriteString("decode response (")
	if e.ContentType != "" {
		b.WriteString("content-type " + e.ContentType)
	} else {
		b.WriteString("no content-type")
	}
	b.WriteString("): ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("unusable body")
	}
	if e.Snippet != "" {
		b.WriteString(": " + e.Snippet)
	}
	return b.String()
}

// Unwrap returns the underlying reason.
func (e *DecodeError) Unwrap() error { return e.Err }

// ItemError reports one item of a response that could not be turned into a
// [Job]. The other items of the response are unaffected.
type ItemError struct {
	// Index is the item's position in the response array, from 0.
	Index int
	// QueueID is the item's queue id when it could be read, else "".
	QueueID string
	// Err says what was wrong.
	Err error
}

// Error returns e.g. `item 3 (queue_id "x"): field "status": got number, want string`.
func (e ItemError) Error() string {
	if e.QueueID != "" {
		return fmt.Sprintf("item %d (queue_id %q): %v", e.Index, e.QueueID, e.Err)
	}
	return fmt.Sprintf("item %d: %v", e.Index, e.Err)
}

// Unwrap returns the underlying reason.
func (e ItemError) Unwrap() error { return e.Err }

// transportError marks a failure to send the request or to read the
// response: the connection, not the caller, is at fault.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// Retryable reports whether a later attempt of the same request may succeed:
//
//   - true for a [*StatusError] with status 408, 425, 429 or 5xx;
//   - true for network failures, timeouts (including [context.DeadlineExceeded]),
//     connection resets and unexpected EOFs;
//   - true for a [*DecodeError] and [ErrBodyTooLarge]: the next poll may
//     get a good answer;
//   - false for nil, for 401, 403 and other 4xx, for [context.Canceled]
//     (the caller gave up) and for anything else.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		switch c := se.StatusCode; {
		case c == http.StatusRequestTimeout, c == http.StatusTooEarly, c == http.StatusTooManyRequests:
			return true
		default:
			return c >= 500 && c <= 599
		}
	}
	var de *DecodeError
	var te *transportError
	var ne net.Error
	switch {
	case errors.As(err, &de),
		errors.Is(err, ErrBodyTooLarge),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &te),
		errors.As(err, &ne),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT):
		return true
	}
	return false
}

// RetryAfter returns the server's Retry-After hint carried by err (a
// [*StatusError]). ok is false when there is no usable hint: not a
// StatusError, no header, an invalid one, or a delay of 0 (e.g. a past date).
func RetryAfter(err error) (d time.Duration, ok bool) {
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return se.RetryAfter, true
	}
	return 0, false
}

// sanitize returns the start of b (at most n bytes) as valid UTF-8 without
// control characters (line breaks and tabs become spaces) and with secret
// redacted. Redaction happens before the cut, so callers should pass up to
// n+len(secret) bytes: a secret straddling the cut is then never left half
// visible.
func sanitize(b []byte, n int, secret string) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case unicode.IsControl(r):
			return -1
		}
		return r
	}, s)
	s = redact(s, secret)
	if len(s) > n {
		s = s[:n]
		for len(s) > 0 && !utf8.ValidString(s) { // don't leave half a rune
			s = s[:len(s)-1]
		}
	}
	return strings.TrimSpace(s)
}

// redact replaces every occurrence of secret in s.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[REDACTED]")
}
