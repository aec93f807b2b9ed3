package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-proxy/tollgate/breaker"
	"github.com/tollgate-proxy/tollgate/config"
)

// serverGuard is one server's protection state that outlives reloads, as its
// pool does: the circuit breaker, the active health verdict and the
// slow-start ramp. Balancers of successive runtimes share it.
//
// A serverGuard is safe for concurrent use.
type serverGuard struct {
	upstream, addr string
	pool           *serverPool // nil in balancer unit tests
	log            *slog.Logger

	brk atomic.Pointer[guardBreaker] // nil: breakers off

	health atomic.Int32                // healthState
	check  atomic.Pointer[healthCheck] // nil: no active checks
	// checkMu guards the consecutive check results.
	checkMu   sync.Mutex
	passes    int
	fails     int
	lastCheck string // the last check's result, for /debug/upstreams

	// out is set while the server is out of use (failed, unhealthy or its
	// breaker not closed); rampFrom is when it last came back, in unix
	// nanoseconds, for slow start.
	out      atomic.Bool
	rampFrom atomic.Int64

	transitions [3]atomic.Uint64 // breaker transitions, by target state
	shed        atomic.Uint64    // requests the breaker kept off the server
}

// guardBreaker is a breaker with the configuration it was built from.
type guardBreaker struct {
	b          *breaker.Breaker
	cfg        config.Breaker
	failStatus [10]uint64 // bit per status 0-639: failure_statuses
}

func (gb *guardBreaker) isFailureStatus(status int) bool {
	return status >= 0 && status < 640 && gb.failStatus[status/64]&(1<<(status%64)) != 0
}

func newServerGuard(upstream, addr string, pool *serverPool, log *slog.Logger) *serverGuard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &serverGuard{upstream: upstream, addr: addr, pool: pool, log: log}
}

// guardOf returns pool's guard, creating it on first use; without a pool (in
// unit tests) a fresh guard.
func guardOf(pool *serverPool, upstream, addr string) *serverGuard {
	if pool == nil {
		return newServerGuard(upstream, addr, nil, nil)
	}
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.guard == nil {
		pool.guard = newServerGuard(pool.upstream, pool.addr, pool, nil)
	}
	return pool.guard
}

// configure applies an upstream's breaker and health_check settings. A
// breaker whose settings did not change is kept with its state; changed
// settings start a new, closed one.
func (g *serverGuard) configure(up *config.Upstream) {
	g.configureBreaker(up.Breaker)
	g.configureCheck(up.HealthCheck)
}

func (g *serverGuard) configureBreaker(c *config.Breaker) {
	if c == nil || !c.Enabled {
		g.brk.Store(nil)
		return
	}
	if cur := g.brk.Load(); cur != nil && reflect.DeepEqual(cur.cfg, *c) {
		return
	}
	gb := &guardBreaker{cfg: *c}
	gb.cfg.FailureStatuses = append([]int(nil), c.FailureStatuses...)
	for _, s := range c.FailureStatuses {
		if s >= 0 && s < 640 {
			gb.failStatus[s/64] |= 1 << (s % 64)
		}
	}
	gb.b = breaker.New(breaker.Settings{
		Name:                g.upstream + "/" + g.addr,
		ConsecutiveFailures: uint32(c.ConsecutiveFailures),
		FailureRatio:        c.FailureRatio.Fraction,
		MinRequests:         uint32(c.MinRequests),
		Window:              c.Window.Duration,
		OpenDuration:        c.OpenDuration.Duration,
		Jitter:              c.Jitter.Fraction,
		HalfOpenRequests:    uint32(c.HalfOpenRequests),
		SlowCallDuration:    c.SlowCallDuration.Duration,
		SlowCallRatio:       c.SlowCallRatio.Fraction,
		OnTransition:        g.onTransition,
	})
	g.brk.Store(gb)
}

// breaker returns the server's breaker, nil when breakers are off.
func (g *serverGuard) breaker() *breaker.Breaker {
	if gb := g.brk.Load(); gb != nil {
		return gb.b
	}
	return nil
}

// closed reports whether the breaker is off or closed.
func (g *serverGuard) closed() bool {
	b := g.breaker()
	return b == nil || b.Closed()
}

// onTransition logs a breaker's state change as one line, counts it, and
// drains the pool when the breaker opened. The breaker calls it outside its
// lock.
func (g *serverGuard) onTransition(t breaker.Transition) {
	if int(t.To) < len(g.transitions) {
		g.transitions[t.To].Add(1)
	}
	level := slog.LevelInfo
	if t.To == breaker.StateOpen {
		level = slog.LevelWarn
	}
	c := t.Counts
	g.log.Log(context.Background(), level, "circuit breaker",
		"upstream", g.upstream, "server", g.addr, "from", t.From.String(), "to", t.To.String(), "why", t.Why,
		"requests", c.Requests, "successes", c.Successes, "failures", c.Failures,
		"consecutive_failures", c.ConsecutiveFailures, "exclusions", c.Exclusions,
		"timed_calls", c.TimedCalls, "slow_calls", c.SlowCalls, "open_for", t.OpenFor.String())
	if t.To == breaker.StateOpen {
		g.drain()
	}
}

// drain closes the server's idle pooled connections; requests in flight
// finish on theirs.
func (g *serverGuard) drain() {
	if g.pool != nil {
		g.pool.closeIdle(reasonServerDrained)
	}
}

// track notes whether the server is in use at now, and when it comes back
// starts its slow-start ramp.
func (g *serverGuard) track(now time.Time, up bool) {
	if !up {
		if !g.out.Load() {
			g.out.Store(true)
		}
		return
	}
	if g.out.Load() && g.out.CompareAndSwap(true, false) {
		g.rampFrom.Store(now.UnixNano())
	}
}

// outcome is what an attempt that ended with the close reason (or "" for a
// complete response) and status means to the breaker.
func (g *serverGuard) outcome(reason string, status int) breaker.Outcome {
	if reason != "" {
		return reasonOutcome(reason)
	}
	if gb := g.brk.Load(); gb != nil && gb.isFailureStatus(status) {
		return breaker.BadStatus
	}
	return breaker.Success
}

// reasonOutcome maps an upstream close reason to a breaker outcome. The
// client's cancellations, keep-alive races (the backend closed an idle
// connection, which says nothing of its health) and closes tollgate chose
// are exclusions.
func reasonOutcome(reason string) breaker.Outcome {
	switch reason {
	case reasonConnectRefused, reasonConnectTimeout, reasonConnectUnreachable, reasonDNSFailure, reasonTLSFailure:
		return breaker.ConnectFailure
	case reasonResetBeforeHeaders, reasonClosedBeforeHdrs, reasonResetDuringBody, reasonClosedDuringBody:
		return breaker.ConnectionFailure
	case reasonHeaderTimeout, reasonBodyTimeout, reasonNetworkTimeout:
		return breaker.Timeout
	case reasonBadResponse:
		return breaker.BadResponse
	}
	return breaker.Excluded
}

// report tells the breaker that issued tk how attempt a on p ended: its
// close reason or status, and its time to the response head.
func (p *peer) report(tk breaker.Ticket, a *attempt) {
	tk.Done(p.guard.outcome(a.reason, a.status), a.duration)
}

// admit asks p's breaker to admit a request, in panic too; without a
// breaker the request goes through uncounted.
func (b *balancer) admit(p *peer) (breaker.Ticket, bool) {
	brk := p.guard.breaker()
	if brk == nil {
		return breaker.Ticket{}, true
	}
	tk, err := brk.Allow()
	if err != nil {
		p.guard.shed.Add(1)
		return tk, false
	}
	return tk, true
}

// healthy reports whether p takes traffic by health alone: not down, not
// failed by passive health (a lone server never is), its active check has
// not found it unhealthy and its breaker admits requests.
func (b *balancer) healthy(p *peer, now time.Time) bool {
	if p.down || !b.lone && p.failed(now) || p.guard.unhealthy() {
		return false
	}
	brk := p.guard.breaker()
	return brk == nil || brk.Ready(now)
}

// survey counts the non-down primaries and the healthy ones among them,
// for the panic threshold, and tracks every server's comings and goings
// for slow start.
func (b *balancer) survey(now time.Time) (healthy, total int) {
	for _, p := range b.primary {
		up := b.healthy(p, now)
		p.guard.track(now, up && p.guard.closed())
		if !p.down {
			total++
			if up {
				healthy++
			}
		}
	}
	for _, p := range b.backup {
		p.guard.track(now, b.healthy(p, now) && p.guard.closed())
	}
	return healthy, total
}

// countSheds counts a request against every server whose open breaker keeps
// it out of this pick.
func (b *balancer) countSheds(now time.Time) {
	for _, ps := range [2][]*peer{b.primary, b.backup} {
		for _, p := range ps {
			if brk := p.guard.breaker(); brk != nil && !p.down && !brk.Ready(now) {
				p.guard.shed.Add(1)
			}
		}
	}
}

// effWeight is p's weight in weightScale units, ramped up linearly from a
// tenth over slow_start after the server came back.
func (b *balancer) effWeight(p *peer, now time.Time) int {
	w := p.weight * weightScale
	if b.slowStart <= 0 {
		return w
	}
	from := p.guard.rampFrom.Load()
	if from == 0 {
		return w
	}
	el := now.Sub(time.Unix(0, from))
	if el >= b.slowStart {
		return w
	}
	f := 0.1 + 0.9*float64(max(el, 0))/float64(b.slowStart)
	return max(1, int(float64(w)*f))
}

// shedCircuitOpen answers a request whose upstream has no server left but
// ones whose breakers are open: 503, never retried, with a Proxy-Status
// naming the reason (RFC 9209).
func (ss *session) shedCircuitOpen(st *requestState) {
	ss.respondError(st, http.StatusServiceUnavailable, "destination_unavailable", "circuit open")
}

// resilienceView is a server's protection state in /debug/upstreams.
type resilienceView struct {
	// Available: the server takes traffic by health — not down, not failed,
	// not unhealthy, breaker not open.
	Available       bool         `json:"available"`
	Health          string       `json:"health"` // unchecked, unknown, healthy, unhealthy
	LastCheck       string       `json:"last_check,omitempty"`
	EffectiveWeight float64      `json:"effective_weight"` // weight after slow start
	Breaker         *breakerView `json:"breaker,omitempty"`
}

type breakerView struct {
	State        string            `json:"state"`
	Counts       breaker.Counts    `json:"counts"`
	OpenDuration string            `json:"open_duration"` // this breaker's, jitter applied
	Transitions  map[string]uint64 `json:"transitions"`   // by target state
	Shed         uint64            `json:"shed"`
}

// resilienceOf describes p's health, breaker and effective weight at now.
func (b *balancer) resilienceOf(p *peer, now time.Time) resilienceView {
	g := p.guard
	b.mu.Lock()
	v := resilienceView{
		Available:       b.healthy(p, now),
		Health:          g.healthState().String(),
		EffectiveWeight: float64(b.effWeight(p, now)) / weightScale,
	}
	b.mu.Unlock()
	g.checkMu.Lock()
	v.LastCheck = g.lastCheck
	g.checkMu.Unlock()
	if brk := g.breaker(); brk != nil {
		v.Breaker = &breakerView{
			State: brk.State().String(), Counts: brk.Counts(), OpenDuration: brk.OpenDuration().String(),
			Transitions: map[string]uint64{}, Shed: g.shed.Load(),
		}
		for st := range g.transitions {
			v.Breaker.Transitions[breaker.State(st).String()] = g.transitions[st].Load()
		}
	}
	return v
}

// guardCollector reports health and breaker state at scrape time, so the
// data path pays nothing for them.
type guardCollector struct{ s *Server }

var (
	descServerHealthy = prometheus.NewDesc("tollgate_upstream_server_healthy",
		"1 when the server takes traffic by health: not down, not failed by passive health, not unhealthy by active checks, breaker not open.",
		[]string{"upstream", "server"}, nil)
	descBreakerState = prometheus.NewDesc("tollgate_circuit_breaker_state",
		"Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"upstream", "server"}, nil)
	descBreakerTransitions = prometheus.NewDesc("tollgate_circuit_breaker_transitions_total",
		"Circuit breaker state changes, by the state entered.", []string{"upstream", "server", "to"}, nil)
	descBreakerShed = prometheus.NewDesc("tollgate_circuit_breaker_shed_total",
		"Requests a server's breaker kept off it (open, or half-open with its probes taken).", []string{"upstream", "server"}, nil)
)

func (gc *guardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descServerHealthy
	ch <- descBreakerState
	ch <- descBreakerTransitions
	ch <- descBreakerShed
}

func (gc *guardCollector) Collect(ch chan<- prometheus.Metric) {
	rt := gc.s.rt.Load()
	if rt == nil {
		return
	}
	now := time.Now()
	for name, up := range rt.upstreams {
		for _, p := range up.bal.peers() {
			up.bal.mu.Lock()
			healthy := up.bal.healthy(p, now)
			up.bal.mu.Unlock()
			ch <- prometheus.MustNewConstMetric(descServerHealthy, prometheus.GaugeValue, boolValue(healthy), name, p.addr)
			g := p.guard
			brk := g.breaker()
			if brk == nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descBreakerState, prometheus.GaugeValue, float64(brk.State()), name, p.addr)
			for st := range g.transitions {
				ch <- prometheus.MustNewConstMetric(descBreakerTransitions, prometheus.CounterValue,
					float64(g.transitions[st].Load()), name, p.addr, breaker.State(st).String())
			}
			ch <- prometheus.MustNewConstMetric(descBreakerShed, prometheus.CounterValue, float64(g.shed.Load()), name, p.addr)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// draining reports whether the server's pool keeps no idle connections:
// its breaker is open or active checks found it unhealthy.
func (g *serverGuard) draining() bool {
	if g.unhealthy() {
		return true
	}
	b := g.breaker()
	return b != nil && !b.Closed() && !b.Ready(time.Now())
}
