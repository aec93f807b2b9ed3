package proxy

import (
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/limiter"
	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// Adaptive overload protection (adaptive_concurrency): each upstream that
// enables it has an overloadGate between admission (limit_req) and forward.
// The gate holds a limiter.Controller, the limit on requests in flight to
// the upstream, and a short queue in front of it.
//
// Shedding policy, in order, for a request arriving at the gate. A client
// is the route's first limit_req key when the route has limit_req and the
// key is not empty, else the client address after real_ip. What a client
// holds is its requests in flight through the gate plus its queued ones.
//
//  1. Below the limit with nobody queued: the request goes on at once.
//  2. Otherwise the upstream is saturated. The fair share of a client is
//     (limit + queue capacity) ÷ active clients, where active clients are
//     those holding a request, this one included, and at least 1. When
//     more than one client is active, a client already holding its fair
//     share or more is shed at once (reason fair_share): a heavy client is
//     throttled before anyone waits. A lone client may fill the limit and
//     the queue.
//  3. Otherwise the request queues if the queue has room; the queue holds
//     ceil(queue × limit) requests. When it is full, the queued request of
//     the client holding the most is shed (fair_share) to make room, if
//     that client holds more than the newcomer would with this request;
//     else the newcomer is shed (queue_full).
//  4. A freed slot goes to the queued request whose client has the fewest
//     requests in flight, the oldest among equals: light clients first.
//  5. A request waits at most queue_timeout, then is shed
//     (queue_timeout). A client that disconnects while queued is noticed
//     within gatePoll and its request dropped (499, no response).
//  6. A standing queue, one that has not been empty for a whole window,
//     adds delay without adding throughput (the limit keeps the backend
//     busy on its own): while the queue stands, requests that waited more
//     than a quarter of minRTT (at least 1ms, at most queue_timeout; no
//     such rule before minRTT is known) are
//     shed from the queue (queue_timeout) when a slot is handed out, as
//     CoDel drops from a standing queue. The queue absorbs bursts; under
//     sustained overload it adds at most that quarter of minRTT.
//
// A shed request gets 503 with Retry-After: 1 and Proxy-Status
// connection_limit_reached; its access log line has "shed":
// "adaptive_concurrency/<reason>". Waiting holds no upstream connection.
//
// Upgrade requests (WebSocket) bypass the gate: a tunnel would hold a slot
// for its whole life. Other requests hold their slot until the response
// has been streamed; the latency sample is the time to the response head.

// shedReason says why the gate shed a request.
type shedReason uint8

const (
	shedFairShare shedReason = iota
	shedQueueFull
	shedQueueTimeout
	numShedReasons
)

var (
	shedNames   = [numShedReasons]string{"fair_share", "queue_full", "queue_timeout"}
	shedLogText = [numShedReasons]string{"adaptive_concurrency/fair_share",
		"adaptive_concurrency/queue_full", "adaptive_concurrency/queue_timeout"}
)

const (
	// gatePoll is how often a queued request checks that its client is
	// still there.
	gatePoll = 10 * time.Millisecond
	// maxTrackedClients bounds the per-client map; clients beyond it are
	// counted together as one, which then looks heavy and is shed first.
	// Only clients holding a request are tracked, so the bound is reached
	// only with more distinct clients than limit plus queue.
	maxTrackedClients = 4096
	// shedProxyStatus is the RFC 9209 Proxy-Status of a shed request.
	shedProxyStatus = `tollgate; error=connection_limit_reached; details="adaptive concurrency"`
)

// clientLoad is what one client holds at the gate.
type clientLoad struct {
	key      string
	inFlight int
	queued   int
}

func (c *clientLoad) holds() int { return c.inFlight + c.queued }

// waiterState is where a queued request stands; it changes under the
// gate's lock, and the waiter is signalled once it leaves waitQueued.
type waiterState uint8

const (
	waitQueued waiterState = iota
	waitGranted
	waitEvicted
	waitAbandoned
)

type gateWaiter struct {
	cl    *clientLoad
	since time.Time // queued at
	state waiterState
	why   shedReason    // for waitEvicted
	ready chan struct{} // one signal when granted or evicted
}

// overloadGate is the adaptive concurrency limit of one upstream, with its
// queue and per-client accounting. It outlives reloads (overloadState).
type overloadGate struct {
	name string
	ctl  *limiter.Controller
	shed [numShedReasons]atomic.Uint64

	mu           sync.Mutex
	cfg          config.AdaptiveConcurrency // as applied
	queueRatio   float64
	queueTimeout time.Duration
	queue        []*gateWaiter // in arrival order
	lastEmpty    time.Time     // the queue was last seen empty
	clients      map[string]*clientLoad
	overflow     clientLoad // clients beyond maxTrackedClients
}

func newOverloadGate(name string, cfg config.AdaptiveConcurrency, now time.Time) *overloadGate {
	g := &overloadGate{
		name:    name,
		ctl:     limiter.NewController(controllerConfig(cfg), now),
		clients: map[string]*clientLoad{},
	}
	g.apply(cfg)
	return g
}

// controllerConfig maps the YAML block to the controller's settings; an
// explicit zero buffer or jitter means none.
func controllerConfig(a config.AdaptiveConcurrency) limiter.ControllerConfig {
	none := func(f float64) float64 {
		if f == 0 {
			return -1
		}
		return f
	}
	mode := limiter.Gradient
	if a.Mode == config.AdaptiveFixed {
		mode = limiter.Fixed
	}
	return limiter.ControllerConfig{
		Mode: mode, FixedLimit: a.FixedLimit,
		Min: a.Min, Max: a.Max, Initial: a.Initial,
		Window: a.Window.Duration, Percentile: float64(a.Percentile),
		Buffer:         none(a.Buffer.Fraction),
		MinRTTInterval: a.MinRTTInterval.Duration, MinRTTJitter: none(a.MinRTTJitter.Fraction),
		Backoff: a.Backoff.Fraction,
	}
}

func (g *overloadGate) apply(cfg config.AdaptiveConcurrency) {
	g.cfg = cfg
	g.queueRatio, g.queueTimeout = cfg.Queue.Fraction, cfg.QueueTimeout.Duration
	if g.queueTimeout <= 0 {
		g.queueRatio = 0
	}
}

// reconfigure applies a reloaded configuration, keeping the limit, the
// requests in flight and the queue.
func (g *overloadGate) reconfigure(cfg config.AdaptiveConcurrency, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cfg == g.cfg {
		return
	}
	g.ctl.Reconfigure(controllerConfig(cfg), now)
	g.apply(cfg)
}

// gateKey names a client at the gate without allocating for a lookup: the
// limit_req key's bytes when b is not nil, else s.
type gateKey struct {
	b []byte
	s string
}

// clientLocked returns the client's entry, creating it, and whether it was
// there before.
func (g *overloadGate) clientLocked(k gateKey) (*clientLoad, bool) {
	var cl *clientLoad
	if k.b != nil {
		cl = g.clients[string(k.b)]
	} else {
		cl = g.clients[k.s]
	}
	if cl != nil {
		return cl, true
	}
	if len(g.clients) >= maxTrackedClients {
		return &g.overflow, g.overflow.holds() > 0
	}
	cl = &clientLoad{key: k.s}
	if k.b != nil {
		cl.key = string(k.b)
	}
	g.clients[cl.key] = cl
	return cl, false
}

// forgetLocked drops a client that holds nothing any more.
func (g *overloadGate) forgetLocked(cl *clientLoad) {
	if cl.holds() == 0 && cl != &g.overflow {
		delete(g.clients, cl.key)
	}
}

// activeLocked is the number of clients holding a request.
func (g *overloadGate) activeLocked() int {
	n := len(g.clients)
	if g.overflow.holds() > 0 {
		n++
	}
	return n
}

// arrive applies the shedding policy to a request of client k. It returns
// the client's entry and either nil (admitted), a waiter (queued), or the
// reason it was shed.
func (g *overloadGate) arrive(now time.Time, k gateKey) (*clientLoad, *gateWaiter, shedReason, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.grantLocked(now)
	cl, _ := g.clientLocked(k)
	if len(g.queue) == 0 && g.ctl.Acquire(now) {
		cl.inFlight++
		return cl, nil, 0, true
	}
	limit := g.ctl.Limit()
	capQ := int(math.Ceil(g.queueRatio * float64(limit)))
	active := g.activeLocked()
	share := float64(limit+capQ) / float64(max(active, 1))
	if active > 1 && float64(cl.holds()) >= max(share, 1) {
		g.forgetLocked(cl)
		return nil, nil, shedFairShare, false
	}
	if len(g.queue) >= capQ {
		if !g.evictLocked(cl.holds() + 1) {
			g.forgetLocked(cl)
			return nil, nil, shedQueueFull, false
		}
	}
	w := &gateWaiter{cl: cl, since: now, ready: make(chan struct{}, 1)}
	cl.queued++
	g.queue = append(g.queue, w)
	return cl, w, 0, true
}

// evictLocked sheds the queued request of the client holding the most, the
// newest of its requests, if that client holds more than than; it reports
// whether a place was freed.
func (g *overloadGate) evictLocked(than int) bool {
	victim := -1
	for i, w := range g.queue {
		if w.cl.holds() > than && (victim < 0 || w.cl.holds() >= g.queue[victim].cl.holds()) {
			victim = i
		}
	}
	if victim < 0 {
		return false
	}
	g.shedLocked(victim, shedFairShare)
	return true
}

// shedLocked takes the i-th queued request out and tells it why.
func (g *overloadGate) shedLocked(i int, why shedReason) {
	w := g.removeLocked(i)
	w.state, w.why = waitEvicted, why
	w.ready <- struct{}{}
	g.forgetLocked(w.cl)
}

func (g *overloadGate) removeLocked(i int) *gateWaiter {
	w := g.queue[i]
	copy(g.queue[i:], g.queue[i+1:])
	g.queue[len(g.queue)-1] = nil
	g.queue = g.queue[:len(g.queue)-1]
	w.cl.queued--
	return w
}

// grantLocked hands free slots to queued requests, the client with the
// fewest in flight first, after shedding what waited too long in a
// standing queue.
func (g *overloadGate) grantLocked(now time.Time) {
	if len(g.queue) == 0 {
		g.lastEmpty = now
		return
	}
	if minRTT := g.ctl.Snapshot().MinRTT; minRTT > 0 && now.Sub(g.lastEmpty) >= g.cfg.Window.Duration {
		target := min(max(minRTT/4, time.Millisecond), g.queueTimeout)
		for i := 0; i < len(g.queue); {
			if now.Sub(g.queue[i].since) > target {
				g.shedLocked(i, shedQueueTimeout)
				continue
			}
			i++
		}
	}
	for len(g.queue) > 0 {
		best := 0
		for i, w := range g.queue {
			if w.cl.inFlight < g.queue[best].cl.inFlight {
				best = i
			}
		}
		if !g.ctl.Acquire(now) {
			return
		}
		w := g.removeLocked(best)
		w.cl.inFlight++
		w.state = waitGranted
		w.ready <- struct{}{}
	}
	g.lastEmpty = now
}

// abandon takes a waiter out of the queue (timeout, client gone) and
// returns its final state: waitGranted means it holds a slot after all.
func (g *overloadGate) abandon(w *gateWaiter) waiterState {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.state != waitQueued {
		return w.state
	}
	for i, q := range g.queue {
		if q == w {
			g.removeLocked(i)
			break
		}
	}
	w.state = waitAbandoned
	g.forgetLocked(w.cl)
	if len(g.queue) == 0 {
		g.lastEmpty = time.Now()
	}
	return waitAbandoned
}

// leave ends a request that held a slot and hands the slot on.
func (g *overloadGate) leave(now time.Time, cl *clientLoad, latency time.Duration, o limiter.Outcome) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ctl.Release(now, latency, o)
	cl.inFlight--
	g.forgetLocked(cl)
	g.grantLocked(now)
}

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
		Clients: g.activeLocked(), Shed: map[string]uint64{},
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

// gateRef is an upstream's overload gate, set on first use.
type gateRef struct{ atomic.Pointer[overloadGate] }

// overloadState holds the gates by upstream name, so that a gate's limit,
// minRTT, requests in flight and queue survive reloads, as pools do.
type overloadState struct {
	mu    sync.Mutex
	gates map[string]*overloadGate
}

// gateOf returns the gate of an upstream with adaptive_concurrency enabled,
// creating it or applying a reloaded configuration to it on first use by a
// runtime.
func (o *overloadState) gateOf(up *upstream) *overloadGate {
	if g := up.gate.Load(); g != nil {
		return g
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	g := o.gates[up.name]
	if g == nil {
		if o.gates == nil {
			o.gates = map[string]*overloadGate{}
		}
		g = newOverloadGate(up.name, *up.adaptive, now)
		o.gates[up.name] = g
	} else {
		g.reconfigure(*up.adaptive, now)
	}
	up.gate.Store(g)
	return g
}

// gated reports whether an upstream has adaptive_concurrency enabled.
func (up *upstream) gated() bool { return up.adaptive != nil && up.adaptive.Enabled }

// forwardGuarded is forward behind the upstream's overload gate, when it
// has one: the request waits for a slot or is shed, and the slot is
// released with what the attempts said about the backend.
func (ss *session) forwardGuarded(rt *runtime, st *requestState) {
	up := st.route.upstream
	if !up.gated() || ss.req.Upgrade != "" {
		ss.forward(rt, st)
		return
	}
	g := ss.s.overload.gateOf(up)
	cl, ok := ss.enterGate(g, st)
	if !ok {
		return
	}
	ss.forward(rt, st)
	latency, o := gateOutcome(st)
	g.leave(time.Now(), cl, latency, o)
}

// clientKey is the request's client at the gate (see the policy above).
func (ss *session) clientKey(st *requestState) gateKey {
	if st.route.limits != nil && ss.lim != nil && len(ss.lim.keys) > 0 && len(ss.lim.keys[0]) > 0 {
		return gateKey{b: ss.lim.keys[0]}
	}
	return gateKey{s: st.fwd.clientIP}
}

// enterGate admits the request through the gate, queueing it when the
// policy allows. It reports whether the request goes on; when it does not,
// the client has its answer (or is gone).
func (ss *session) enterGate(g *overloadGate, st *requestState) (*clientLoad, bool) {
	cl, w, why, ok := g.arrive(time.Now(), ss.clientKey(st))
	if !ok {
		ss.respondShed(g, st, why)
		return nil, false
	}
	if w == nil {
		return cl, true
	}
	deadline := time.Now().Add(g.queueTimeout)
	t := time.NewTimer(min(g.queueTimeout, gatePoll))
	defer t.Stop()
	for {
		select {
		case <-w.ready:
			if w.state == waitGranted {
				return cl, true
			}
			ss.respondShed(g, st, w.why)
			return nil, false
		case <-t.C:
		}
		gone := ss.conn.peerGone()
		left := time.Until(deadline)
		if !gone && left > 0 {
			t.Reset(min(left, gatePoll))
			continue
		}
		switch g.abandon(w) {
		case waitGranted:
			if !gone {
				return cl, true
			}
			g.leave(time.Now(), cl, 0, limiter.Dropped)
		case waitEvicted:
			if !gone {
				ss.respondShed(g, st, w.why)
				return nil, false
			}
		}
		if gone {
			st.status = statusClientClosed
			st.dsReason = reasonDSAbortBeforeResp
			return nil, false
		}
		ss.respondShed(g, st, shedQueueTimeout)
		return nil, false
	}
}

// gateOutcome reads what the attempts said about the backend: a 503 or
// 429 or a timed-out try is overload; a response below 500 (not 429) is a
// success whose latency, the last attempt's time to the response head, is
// a sample; a client that left says nothing; anything else is a failure
// without a sample.
func gateOutcome(st *requestState) (time.Duration, limiter.Outcome) {
	if len(st.attempts) == 0 {
		return 0, limiter.Dropped
	}
	for _, a := range st.attempts {
		switch {
		case a.status == http.StatusServiceUnavailable, a.status == http.StatusTooManyRequests,
			a.reason == reasonHeaderTimeout, a.reason == reasonConnectTimeout, a.reason == reasonNetworkTimeout:
			return 0, limiter.Overloaded
		}
	}
	last := st.attempts[len(st.attempts)-1]
	switch {
	case last.reason == reasonCancelledByDS:
		return 0, limiter.Dropped
	case last.reason == "" && last.status > 0 && last.status < 500:
		return last.duration, limiter.Success
	}
	return 0, limiter.Failed
}

// respondShed answers a request the gate shed: 503, Retry-After: 1 and an
// RFC 9209 Proxy-Status, and counts it.
func (ss *session) respondShed(g *overloadGate, st *requestState, why shedReason) {
	g.shed[why].Add(1)
	st.shed = shedLogText[why]
	st.status = http.StatusServiceUnavailable
	if ss.rw.wroteHead {
		return
	}
	fields := [...]h1.Field{
		{Name: "Content-Type", Value: "text/plain; charset=utf-8"},
		{Name: "Cache-Control", Value: "no-store"},
		{Name: st.fwd.requestIDName, Value: st.fwd.requestID},
		{Name: "Retry-After", Value: "1"},
		{Name: "Proxy-Status", Value: shedProxyStatus},
	}
	body := statusText(st.status) + "\n"
	ss.rw.writeHead(&headSpec{status: st.status, reason: statusText(st.status),
		contentLength: int64(len(body)), extra: fields[:]})
	ss.rw.Write([]byte(body))
	ss.rw.finish(nil)
}

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
