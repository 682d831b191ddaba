package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"go.uber.org/zap"

	"github.com/queuewatch/queuewatch/config"
	"github.com/queuewatch/queuewatch/internal/natstest"
	"github.com/queuewatch/queuewatch/periskope/periskopetest"
)

// get returns the status code and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%s answering %d", url, want), func() bool { code, _ := get(t, url); return code == want })
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, url)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// sum adds the values of every series of a family whose labels include
// want (counter, gauge, or histogram sample count).
func sum(f *dto.MetricFamily, want map[string]string) float64 {
	total := 0.0
	if f == nil {
		return 0
	}
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// TestServiceHealthAndMetrics runs `queuewatch run` in-process against a
// NATS server it does not own and the fake API: /metrics shows the traffic;
// /readyz follows NATS and the credentials while /livez stays up.
func TestServiceHealthAndMetrics(t *testing.T) {
	ns := natstest.Run(t)
	api := periskopetest.NewServer(testKey)
	defer api.Close()
	phone := "918527184400"
	job := periskopetest.Job{QueueID: "q-1", ChatID: "1@c.us", Status: "queued", Attempts: 1}
	api.Upsert(phone, job)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for k, v := range map[string]string{
		"QUEUEWATCH_API_KEY":       testKey,
		"QUEUEWATCH_API_URL":       api.URL,
		"QUEUEWATCH_PHONES":        phone,
		"QUEUEWATCH_NATS_URL":      ns.URL(),
		"QUEUEWATCH_POLL_INTERVAL": "20ms",
		"QUEUEWATCH_HTTP_ADDR":     fmt.Sprintf("127.0.0.1:%d", port),
		"QUEUEWATCH_LOG_LEVEL":     "debug",
	} {
		t.Setenv(k, v)
	}
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runService(ctx, &logs) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runService: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("runService did not return within 30s")
		}
		if strings.Contains(logs.String(), testKey) {
			t.Error("the API key appears in the logs")
		}
	}()

	waitStatus(t, base+"/readyz", 200)
	// The first poll records the silent baseline; only changes after it
	// are events.
	waitUntil(t, "the baseline poll", func() bool {
		return sum(scrape(t, base+"/metrics")["queuewatch_last_successful_poll_timestamp_seconds"], nil) > 0
	})
	for _, st := range []string{"sending", "sent"} {
		job.Status = st
		api.Upsert(phone, job)
		waitUntil(t, "event for "+st, func() bool {
			return sum(scrape(t, base+"/metrics")["queuewatch_events_published_total"], map[string]string{"status": st}) == 1
		})
	}
	api.ServeStale(phone, 1)
	waitUntil(t, "a stale read counted", func() bool {
		return sum(scrape(t, base+"/metrics")["queuewatch_stale_reads_total"], nil) >= 1
	})
	fams := scrape(t, base+"/metrics")
	for name, min := range map[string]float64{
		"queuewatch_poll_duration_seconds":                  1,
		"queuewatch_api_requests_total":                     1,
		"queuewatch_events_published_total":                 2,
		"queuewatch_tracked_jobs":                           1,
		"queuewatch_last_successful_poll_timestamp_seconds": float64(time.Now().Add(-time.Minute).Unix()),
		"queuewatch_build_info":                             1,
		"queuewatch_publish_errors_total":                   0,
		"queuewatch_snapshot_conflicts_total":               0,
		"queuewatch_api_credentials_rejected":               0,
	} {
		f, ok := fams[name]
		if !ok {
			t.Errorf("/metrics lacks %s", name)
			continue
		}
		if got := sum(f, nil); got < min {
			t.Errorf("%s = %v, want >= %v", name, got, min)
		}
	}
	if got := sum(fams["queuewatch_api_requests_total"], map[string]string{"code": "200"}); got < 1 {
		t.Errorf(`queuewatch_api_requests_total{code="200"} = %v`, got)
	}
	if _, body := get(t, base+"/metrics"); strings.Contains(body, testKey) || strings.Contains(body, phone) {
		t.Error("/metrics shows the API key or an unmasked phone")
	}

	// NATS down: not ready, still alive. Back: ready again.
	ns.Shutdown()
	waitStatus(t, base+"/readyz", 503)
	if code, body := get(t, base+"/livez"); code != 200 {
		t.Errorf("/livez during a NATS outage: %d %s", code, body)
	}
	ns.Restart()
	waitStatus(t, base+"/readyz", 200)

	// Credentials rejected: not ready, counted, logged once; a working key again: ready.
	api.SetAPIKey("sk-rotated-elsewhere")
	waitStatus(t, base+"/readyz", 503)
	if _, body := get(t, base+"/readyz"); !strings.Contains(body, "credentials") {
		t.Errorf("/readyz body %q does not name the credentials", body)
	}
	if got := sum(scrape(t, base+"/metrics")["queuewatch_api_credentials_rejected"], nil); got != 1 {
		t.Errorf("queuewatch_api_credentials_rejected = %v, want 1", got)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz while credentials are rejected: %d", code)
	}
	api.SetAPIKey(testKey)
	waitStatus(t, base+"/readyz", 200)
	if n := strings.Count(logs.String(), "rejected the credentials"); n != 1 {
		t.Errorf("the rejection was logged %d times, want once", n)
	}
}

func TestReadyzAfterShutdownBegins(t *testing.T) {
	h := &health{}
	if err := h.ready(); err == nil || !strings.Contains(err.Error(), "NATS") {
		t.Errorf("ready before connecting = %v", err)
	}
	h.stopping.Store(true)
	if err := h.ready(); err == nil || err.Error() != "shutting down" {
		t.Errorf("ready while stopping = %v", err)
	}
	if err := h.live(); err != nil {
		t.Errorf("live = %v", err)
	}
}

// A malformed NATS URL with credentials never shows them in the error,
// although the parse error quotes the URL. (An unreachable server is no
// error: the connection keeps retrying.)
func TestConnectErrorsHideURLSecrets(t *testing.T) {
	for _, url := range []string{
		"nats://u:s3cr3tPW@127.0.0.1:badport",
		"nats://s3cr3tTOKEN@127.0.0.1:badport",
		"nats://127.0.0.1:1, nats://u:s3cr3tPW@127.0.0.1:badport",
	} {
		cfg, err := config.Parse()
		if err != nil {
			t.Fatal(err)
		}
		_, err = connect(cfg, url, zap.NewNop())
		if err == nil {
			t.Fatalf("connect(%q) succeeded", url)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("connect error shows a secret: %v", err)
		}
	}
}
