package periskope

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFaultBrokenConnections: connection faults a real network produces,
// each a retryable error naming the target, never a partial Result.
func TestFaultBrokenConnections(t *testing.T) {
	body := `[{"queue_id":"a","status":"sent"},{"queue_id":"b","status":"queued"}]`
	rst := func(w http.ResponseWriter, prefix string) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		buf.WriteString(prefix)
		buf.Flush()
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // an RST, not a FIN
		}
		conn.Close()
	}
	tests := []struct {
		name    string
		timeout time.Duration
		handler http.HandlerFunc
	}{
		{"reset before the status line", 0, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			rst(w, "")
		}},
		{"reset after the headers", 0, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			rst(w, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body)))
		}},
		{"reset in the body", 0, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			rst(w, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)/2]))
		}},
		{"reset in a chunked body", 0, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			rst(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n"+body[:16]+"\r\n")
		}},
		{"garbage instead of HTTP", 0, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			rst(w, "SSH-2.0-OpenSSH_9.6\r\n")
		}},
		{"body trickles past the timeout", 300 * time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(200)
			for i := range len(body) {
				if _, err := io.WriteString(w, body[i:i+1]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, tt.handler)
			c := newTestClient(t, srv, Options{Timeout: tt.timeout})
			start := time.Now()
			res, err := c.ListJobs(context.Background(), Target{Phone: "919876543210"})
			if err == nil {
				t.Fatalf("ListJobs = %+v, want an error", res)
			}
			if res != nil {
				t.Errorf("a partial result came with the error: %+v", res)
			}
			if !Retryable(err) {
				t.Errorf("Retryable(%v) = false", err)
			}
			if !strings.Contains(err.Error(), "919876543210") {
				t.Errorf("err = %q does not name the target", err)
			}
			if tt.timeout > 0 {
				if took := time.Since(start); took > tt.timeout+5*time.Second {
					t.Errorf("gave up after %v, timeout %v", took, tt.timeout)
				}
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want a deadline error", err)
				}
			}
		})
	}
}

// TestFaultCloseIdleConnections: a client done with its work closes the
// connections it keeps for later, also when its transport is wrapped (as
// the service wraps it for metrics), so no goroutine of it lingers.
func TestFaultCloseIdleConnections(t *testing.T) {
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(reply(200, nil, `[]`))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	var wrapped atomic.Int64
	c := newTestClient(t, srv, Options{WrapTransport: func(next http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			wrapped.Add(1)
			return next.RoundTrip(r)
		})
	}})
	for range 3 {
		if _, err := c.ListJobs(context.Background(), Target{Phone: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if wrapped.Load() != 3 || open.Load() < 1 {
		t.Fatalf("requests through the wrapper %d, open connections %d", wrapped.Load(), open.Load())
	}
	c.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after CloseIdleConnections", open.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
