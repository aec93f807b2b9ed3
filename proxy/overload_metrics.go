package proxy

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gateView is a gate's state for /debug/upstreams and the metrics.
type gateView struct {
	Mode         string            `json:"mode"`
	Limit        int               `json:"limit"`
	InFlight     int               `json:"in_flight"`
	Queue        int               `json:"queue_length"`
	QueueCap     int               `json:"queue_capacity"`
	MinRTT       float64           `json:"min_rtt_ms"`
	SampleRTT    float64           `json:"sample_rtt_ms"`
	Probing      bool              `json:"measuring_min_rtt"`
	Clients      int               `json:"active_clients"`
	Shed         map[string]uint64 `json:"shed"`
	minRTT, rtt  time.Duration
	shedByReason [numShedReasons]uint64
}

func (g *overloadGate) view() gateView {
	snap := g.ctl.Snapshot()
	g.mu.Lock()
	v := gateView{
		Mode: snap.Mode.String(), Limit: snap.Limit, InFlight: snap.InFlight, Queue: len(g.queue),
		QueueCap: int(math.Ceil(g.queueRatio * float64(snap.Limit))),
		MinRTT:   millis(snap.MinRTT), SampleRTT: millis(snap.SampleRTT), Probing: snap.Probing,
		Clients: g.active, Shed: map[string]uint64{},
		minRTT: snap.MinRTT, rtt: snap.SampleRTT,
	}
	g.mu.Unlock()
	for i := range v.shedByReason {
		v.shedByReason[i] = g.shed[i].Load()
		v.Shed[shedNames[i]] = v.shedByReason[i]
	}
	return v
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// overloadCollector reports the gates at scrape time: the data path pays
// nothing for the gauges.
type overloadCollector struct{ s *Server }

var (
	descAdaptiveLimit = prometheus.NewDesc("tollgate_adaptive_limit",
		"Current adaptive_concurrency limit on requests in flight, by upstream.", []string{"upstream"}, nil)
	descAdaptiveInFlight = prometheus.NewDesc("tollgate_adaptive_in_flight",
		"Requests in flight through the adaptive_concurrency gate, by upstream.", []string{"upstream"}, nil)
	descAdaptiveQueue = prometheus.NewDesc("tollgate_adaptive_queue_length",
		"Requests waiting for an adaptive_concurrency slot, by upstream.", []string{"upstream"}, nil)
	descAdaptiveMinRTT = prometheus.NewDesc("tollgate_adaptive_min_rtt_seconds",
		"The adaptive controller's minRTT (latency without queueing), by upstream.", []string{"upstream"}, nil)
	descAdaptiveSampleRTT = prometheus.NewDesc("tollgate_adaptive_sample_rtt_seconds",
		"The last window's latency percentile, by upstream.", []string{"upstream"}, nil)
	descAdaptiveShed = prometheus.NewDesc("tollgate_adaptive_shed_total",
		"Requests shed by adaptive_concurrency, by upstream and reason (fair_share, queue_full, queue_timeout).",
		[]string{"upstream", "reason"}, nil)
)

func (oc *overloadCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAdaptiveLimit, descAdaptiveInFlight, descAdaptiveQueue,
		descAdaptiveMinRTT, descAdaptiveSampleRTT, descAdaptiveShed} {
		ch <- d
	}
}

func (oc *overloadCollector) Collect(ch chan<- prometheus.Metric) {
	rt := oc.s.rt.Load()
	if rt == nil {
		return
	}
	for name, up := range rt.upstreams {
		if !up.gated() {
			continue
		}
		v := oc.s.overload.gateOf(up).view()
		gauge := func(d *prometheus.Desc, x float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x, name)
		}
		gauge(descAdaptiveLimit, float64(v.Limit))
		gauge(descAdaptiveInFlight, float64(v.InFlight))
		gauge(descAdaptiveQueue, float64(v.Queue))
		gauge(descAdaptiveMinRTT, v.minRTT.Seconds())
		gauge(descAdaptiveSampleRTT, v.rtt.Seconds())
		for i, n := range v.shedByReason {
			ch <- prometheus.MustNewConstMetric(descAdaptiveShed, prometheus.CounterValue, float64(n), name, shedNames[i])
		}
	}
}

// adaptiveView is an upstream's gate for /debug/upstreams; nil when
// adaptive_concurrency is off.
func (s *Server) adaptiveView(up *upstream) *gateView {
	if !up.gated() {
		return nil
	}
	v := s.overload.gateOf(up).view()
	return &v
}
