// Package metrics defines queuewatch's Prometheus metrics. A *Metrics is the
// worker's Observer and instruments the Periskope HTTP transport; Handler
// serves them for scraping.
//
// Names carry the queuewatch_ prefix and base units (seconds). Targets are
// labelled with the phone masked to its last four characters, and no label
// or value ever holds a secret.
package metrics

import (
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/queuewatch/queuewatch/diff"
	"github.com/queuewatch/queuewatch/periskope"
	"github.com/queuewatch/queuewatch/worker"
)

// Metrics holds queuewatch's collectors in a registry of their own.
type Metrics struct {
	reg                 *prometheus.Registry
	pollDuration        *prometheus.HistogramVec
	apiRequests         *prometheus.CounterVec
	eventsPublished     *prometheus.CounterVec
	publishErrors       prometheus.Counter
	snapshotConflicts   prometheus.Counter
	staleReads          prometheus.Counter
	lastSuccessfulPoll  *prometheus.GaugeVec
	credentialsRejected *prometheus.GaugeVec
}

var _ worker.Observer = (*Metrics)(nil)

// New registers the metrics. trackedJobs, if not nil, is read at scrape
// time for queuewatch_tracked_jobs.
func New(version string, trackedJobs func() int) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		pollDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "queuewatch_poll_duration_seconds",
			Help:    "Time one poll of a target took: the API request and every publish and commit it led to.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10), // 5ms .. ~19s
		}, []string{"target", "outcome"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queuewatch_api_requests_total",
			Help: `Requests to the Periskope API by HTTP status code ("error" when no response arrived).`,
		}, []string{"code"}),
		eventsPublished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queuewatch_events_published_total",
			Help: `queue.job.status_changed events acknowledged by the stream, by new status ("other" for statuses the API does not document; repeats dropped by the duplicate window included).`,
		}, []string{"status"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "queuewatch_publish_errors_total",
			Help: "Events the stream did not acknowledge; the poll is retried and nothing is committed.",
		}),
		snapshotConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "queuewatch_snapshot_conflicts_total",
			Help: "Snapshot compare-and-set writes lost to another writer (another replica); the job is re-read and decided again.",
		}),
		staleReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "queuewatch_stale_reads_total",
			Help: "Jobs the API returned in an older state than already known; ignored.",
		}),
		lastSuccessfulPoll: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "queuewatch_last_successful_poll_timestamp_seconds",
			Help: "Unix time of the last successful poll of each target.",
		}, []string{"target"}),
		credentialsRejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "queuewatch_api_credentials_rejected",
			Help: "1 while the Periskope API rejects the API key (401/403) for the target, else 0.",
		}, []string{"target"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "queuewatch_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(m.pollDuration, m.apiRequests, m.eventsPublished, m.publishErrors,
		m.snapshotConflicts, m.staleReads, m.lastSuccessfulPoll, m.credentialsRejected, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if trackedJobs != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "queuewatch_tracked_jobs",
			Help: "Jobs whose snapshot this process knows (its cache of the snapshot bucket).",
		}, func() float64 { return float64(trackedJobs()) }))
	}
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// PollFinished implements worker.Observer.
func (m *Metrics) PollFinished(t periskope.Target, took time.Duration, err error) {
	target := worker.MaskTarget(t)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.pollDuration.WithLabelValues(target, outcome).Observe(took.Seconds())
	var se *periskope.StatusError
	if errors.As(err, &se) && se.AuthRejected() {
		m.credentialsRejected.WithLabelValues(target).Set(1)
	} else {
		m.credentialsRejected.WithLabelValues(target).Set(0)
	}
	if err == nil {
		m.lastSuccessfulPoll.WithLabelValues(target).SetToCurrentTime()
	}
}

// EventPublished implements worker.Observer. Statuses the API does not
// document are counted as "other", so that a misbehaving API cannot grow
// the number of series without bound.
func (m *Metrics) EventPublished(status string) {
	if _, known := diff.Rank(status); !known {
		status = "other"
	}
	m.eventsPublished.WithLabelValues(status).Inc()
}

// PublishFailed implements worker.Observer.
func (m *Metrics) PublishFailed() { m.publishErrors.Inc() }

// SnapshotConflict implements worker.Observer.
func (m *Metrics) SnapshotConflict() { m.snapshotConflicts.Inc() }

// StaleRead implements worker.Observer.
func (m *Metrics) StaleRead() { m.staleReads.Inc() }

// InstrumentTransport counts every API request by the status code of its
// response.
func (m *Metrics) InstrumentTransport(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		m.apiRequests.WithLabelValues(code).Inc()
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
