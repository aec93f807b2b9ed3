package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves the admin API: liveness, readiness, metrics and the
// debug views. It listens on loopback by default and has no authentication.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// Liveness is the process only: backend health must never get
		// tollgate restarted.
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if why := s.unready(); why != "" { // readiness.require_healthy_upstreams
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/upstreams", s.serveUpstreams)
	mux.HandleFunc("GET /debug/limits", s.serveLimits)
	mux.HandleFunc("GET /debug/closes", s.serveCloses)
	mux.HandleFunc("GET /debug/closes/summary", s.serveClosesSummary)
	// Go's profiler, for the hot path; the admin listener is loopback-only
	// by default.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

type serverView struct {
	Addr     string `json:"addr"`
	Weight   int    `json:"weight"`
	Backup   bool   `json:"backup"`
	Down     bool   `json:"down"`
	Failed   bool   `json:"failed"`
	Fails    int    `json:"fails"`
	Active   int    `json:"active"`
	MaxConns int    `json:"max_conns"`
	Open     int64  `json:"conns_open"`
	Idle     int    `json:"conns_idle"`
	Dials    int64  `json:"dials"`

	// Health, breaker and effective weight (breakers.go).
	resilienceView
}

type upstreamView struct {
	Name    string       `json:"name"`
	Servers []serverView `json:"servers"`
	// Adaptive is the adaptive_concurrency gate (overload.go); absent
	// when it is off.
	Adaptive *gateView `json:"adaptive_concurrency,omitempty"`
}

// serveUpstreams shows every upstream and server with its balancing and
// pool state.
func (s *Server) serveUpstreams(w http.ResponseWriter, r *http.Request) {
	rt := s.rt.Load()
	now := time.Now()
	var out []upstreamView
	for i := range rt.cfg.Upstreams {
		up := rt.upstreams[rt.cfg.Upstreams[i].Name]
		uv := upstreamView{Name: up.name, Adaptive: s.adaptiveView(up)}
		up.bal.mu.Lock()
		for _, p := range up.bal.peers() {
			uv.Servers = append(uv.Servers, serverView{
				Addr: p.addr, Weight: p.weight, Backup: p.backup, Down: p.down,
				Failed: p.failed(now), Fails: p.fails, Active: p.active, MaxConns: p.maxConns,
			})
		}
		up.bal.mu.Unlock()
		for j, p := range up.bal.peers() {
			uv.Servers[j].Open = p.pool.open.Load()
			uv.Servers[j].Idle = p.pool.idleCount()
			uv.Servers[j].Dials = p.pool.dials.Load()
			uv.Servers[j].resilienceView = up.bal.resilienceOf(p, now)
		}
		out = append(out, uv)
	}
	writeJSON(w, out)
}

// serveCloses returns the most recent close records, oldest first,
// filtered by ?side=, ?reason= and ?request_id= when given.
func (s *Server) serveCloses(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	side, reason, rid := q.Get("side"), q.Get("reason"), q.Get("request_id")
	recs := s.closes.recent(func(rec *closeRecord) bool {
		return (side == "" || rec.Side == side) && (reason == "" || rec.Reason == reason) &&
			(rid == "" || rec.RequestID == rid)
	})
	if recs == nil {
		recs = []closeRecord{}
	}
	writeJSON(w, recs)
}

// serveClosesSummary returns close counts by side and reason since start.
func (s *Server) serveClosesSummary(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.closes.counts())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
