package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/limiter"
)

// limitMetrics are the limit_req series. Zone labels come from the config.
type limitMetrics struct {
	total     *prometheus.CounterVec // zone, status
	sharedKey *prometheus.CounterVec // zone
	zones     *zoneCollector
}

func newLimitMetrics(s *Server) *limitMetrics {
	return &limitMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_limit_req_total",
			Help: "Requests limit_req decided, by zone and $limit_req_status (PASSED, DELAYED, REJECTED, " +
				"DELAYED_DRY_RUN, REJECTED_DRY_RUN); one per request, under the zone that rejected or delayed it, " +
				"else the last zone applied.",
		}, []string{"zone", "status"}),
		sharedKey: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_limit_req_shared_key_warnings_total",
			Help: "10-second windows in which one key made more than half of a zone's requests (at least 100) " +
				"while real_ip is not configured: all clients probably share the edge's address.",
		}, []string{"zone"}),
		zones: &zoneCollector{s: s},
	}
}

// collectors lists what the registry must register.
func (m *limitMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.total, m.sharedKey, m.zones}
}

// newZone wraps an engine zone with its metric children.
func (m *limitMetrics) newZone(z *limiter.Zone) *limitZone {
	lz := &limitZone{Zone: z, usesAddr: z.Key().UsesRemoteAddr(),
		sharedKey: m.sharedKey.WithLabelValues(z.Name())}
	for st := limiter.Passed; st <= limiter.RejectedDryRun; st++ {
		lz.total[st] = m.total.WithLabelValues(z.Name(), st.String())
	}
	return lz
}

// zoneCollector reports zone occupancy at scrape time, so the request path
// pays nothing for it.
type zoneCollector struct{ s *Server }

var (
	descZoneKeys = prometheus.NewDesc("tollgate_limit_req_zone_keys",
		"Keys held by each limit_req zone.", []string{"zone"}, nil)
	descZoneCapacity = prometheus.NewDesc("tollgate_limit_req_zone_capacity",
		"Keys each limit_req zone can hold in its size.", []string{"zone"}, nil)
	descZoneEvictions = prometheus.NewDesc("tollgate_limit_req_zone_evictions_total",
		"Keys evicted (least recently used first) to make room in a full limit_req zone.", []string{"zone"}, nil)
)

func (zc *zoneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descZoneKeys
	ch <- descZoneCapacity
	ch <- descZoneEvictions
}

func (zc *zoneCollector) Collect(ch chan<- prometheus.Metric) {
	rt := zc.s.rt.Load()
	if rt == nil {
		return
	}
	for _, z := range rt.zones {
		ch <- prometheus.MustNewConstMetric(descZoneKeys, prometheus.GaugeValue, float64(z.Len()), z.Name())
		ch <- prometheus.MustNewConstMetric(descZoneCapacity, prometheus.GaugeValue, float64(z.Capacity()), z.Name())
		ch <- prometheus.MustNewConstMetric(descZoneEvictions, prometheus.CounterValue, float64(z.Evictions()), z.Name())
	}
}

// zoneView is one zone in GET /debug/limits.
type zoneView struct {
	Name          string    `json:"name"`
	Key           string    `json:"key"`
	IPv6Prefix    int       `json:"ipv6_prefix,omitempty"`
	Size          int64     `json:"size"`
	Rate          string    `json:"rate"`
	Capacity      int       `json:"capacity"`
	Len           int       `json:"len"`
	Evictions     uint64    `json:"evictions"`
	Expired       uint64    `json:"expired"`
	AllocFailures uint64    `json:"alloc_failures"`
	Top           []keyView `json:"top"`
}

// keyView is one key of a zone's top list.
type keyView struct {
	Key string `json:"key"`
	// Excess is the key's current excess in requests (Nginx logs it as
	// "excess: 10.500"): how far above the rate it is.
	Excess float64 `json:"excess"`
	// IdleMs is how long ago the key was last charged.
	IdleMs int64 `json:"idle_ms"`
}

// topDefault and topMax bound the keys per zone /debug/limits lists
// (?top=N).
const (
	topDefault = 10
	topMax     = 1000
)

// serveLimits shows every limit_req zone of the running config with its
// occupancy and its keys with the largest excess. Top scans the whole zone
// under its lock: a debug page, not for polling every second.
func (s *Server) serveLimits(w http.ResponseWriter, r *http.Request) {
	n := topDefault
	if v := r.URL.Query().Get("top"); v != "" {
		t, err := strconv.Atoi(v)
		if err != nil || t < 0 {
			http.Error(w, "top: want a number of keys", http.StatusBadRequest)
			return
		}
		n = min(t, topMax)
	}
	rt := s.rt.Load()
	now := s.limits.nowMs()
	out := make([]zoneView, 0, len(rt.zones))
	for _, z := range rt.zones {
		zv := zoneView{
			Name: z.Name(), Key: z.Key().String(), IPv6Prefix: z.Key().IPv6Prefix(),
			Size: z.Size(), Rate: config.Rate{PerSecondMilli: z.Rate()}.String(),
			Capacity: z.Capacity(), Len: z.Len(), Evictions: z.Evictions(),
			Expired: z.Expired(), AllocFailures: z.AllocFailures(), Top: []keyView{},
		}
		for _, e := range z.Top(n, now) {
			zv.Top = append(zv.Top, keyView{Key: e.Key, Excess: float64(e.Excess) / 1000, IdleMs: now - e.LastMs})
		}
		out = append(out, zv)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}
