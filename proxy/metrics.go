package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are tollgate's Prometheus series. Label values come from the
// configuration and from status codes, never from request data, so the
// number of series stays bounded.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec   // route, upstream, code
	duration *prometheus.HistogramVec // route
	inFlight prometheus.Gauge
	closes   *prometheus.CounterVec // side, reason, initiator
	reloads  *prometheus.CounterVec // result

	retries    *prometheus.CounterVec // upstream, condition
	retrySkips *prometheus.CounterVec // upstream, reason
	limits     *limitMetrics          // limit_req (limits_admin.go)
}

func newMetrics(s *Server) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_requests_total",
			Help: "Requests answered, by route, upstream and status code.",
		}, []string{"route", "upstream", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_request_duration_seconds",
			Help:    "Time from request head to the end of the response, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_requests_in_flight",
			Help: "Requests being served.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_connection_closes_total",
			Help: "Connections closed (or failed to open), by side, close reason and initiator.",
		}, []string{"side", "reason", "initiator"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_config_reloads_total",
			Help: "Configuration reloads, by result (ok, error).",
		}, []string{"result"}),
	}
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_retries_total",
		Help: "Requests sent to another server after a failed attempt, by upstream and proxy_next_upstream condition.",
	}, []string{"upstream", "condition"})
	m.retrySkips = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_retries_skipped_total",
		Help: "Failed requests not tried again, by upstream and reason (not_idempotent, body_too_large, budget_exhausted, tries_exhausted, deadline_exceeded, response_started, condition_not_listed).",
	}, []string{"upstream", "reason"})
	reg.MustRegister(m.retries, m.retrySkips)
	reg.MustRegister(m.requests, m.duration, m.inFlight, m.closes, m.reloads,
		&poolCollector{s: s}, &guardCollector{s: s}, &overloadCollector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.limits = newLimitMetrics(s)
	reg.MustRegister(m.limits.collectors()...)
	return m
}

func (m *metrics) connectionClosed(rec *closeRecord) {
	m.closes.WithLabelValues(rec.Side, rec.Reason, rec.Initiator).Inc()
}

// codeLabels holds status codes as label values, so counting a request
// does not format a number.
var codeLabels = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func codeLabel(status int) string {
	if status >= 0 && status < len(codeLabels) {
		return codeLabels[status]
	}
	return strconv.Itoa(status)
}

// poolCollector reports upstream connection counts at scrape time, so the
// data path pays nothing for them.
type poolCollector struct{ s *Server }

var (
	descConnsOpen = prometheus.NewDesc("tollgate_upstream_connections_open",
		"Open connections to each upstream server.", []string{"upstream", "server"}, nil)
	descConnsIdle = prometheus.NewDesc("tollgate_upstream_connections_idle",
		"Idle pooled connections to each upstream server.", []string{"upstream", "server"}, nil)
	descDials = prometheus.NewDesc("tollgate_upstream_dials_total",
		"Connections dialed to each upstream server.", []string{"upstream", "server"}, nil)
)

func (pc *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnsOpen
	ch <- descConnsIdle
	ch <- descDials
}

func (pc *poolCollector) Collect(ch chan<- prometheus.Metric) {
	rt := pc.s.rt.Load()
	if rt == nil {
		return
	}
	for name, up := range rt.upstreams {
		for _, p := range up.bal.peers() {
			ch <- prometheus.MustNewConstMetric(descConnsOpen, prometheus.GaugeValue, float64(p.pool.open.Load()), name, p.addr)
			ch <- prometheus.MustNewConstMetric(descConnsIdle, prometheus.GaugeValue, float64(p.pool.idleCount()), name, p.addr)
			ch <- prometheus.MustNewConstMetric(descDials, prometheus.CounterValue, float64(p.pool.dials.Load()), name, p.addr)
		}
	}
}
