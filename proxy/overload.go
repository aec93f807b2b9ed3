package proxy

import (
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

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
// key is not empty, else the client address after real_ip. A client's rate
// is the requests it sent to the gate (admitted or not) in about the last
// second (decayed exponentially, time constant 1s). The fair share is the
// max-min fair share of the gate's throughput (requests admitted in about
// the last second) among the clients seen in the last seconds: the level
// at which every client asking less gets all it asks and every client
// asking more gets the level. It is recomputed every window.
//
//  1. Below the limit with nobody queued: the request goes on at once.
//  2. Otherwise the upstream is saturated. Under sustained overload (over
//     about the last second, more than 1.25 times as many requests arrived
//     as were admitted) and when other clients are active, a client asking
//     more than twice its fair share is shed at once (reason fair_share):
//     a heavy client is throttled before anyone waits, and light clients
//     keep their places. A lone client is never over its share. Near
//     capacity, without sustained overload, nobody is shed for its share:
//     the queue absorbs the bursts.
//  3. Otherwise the request queues if the queue has room; the queue holds
//     ceil(queue × limit) requests, burstQueue times as many near capacity
//     (without sustained overload). When it is full, the queued request of
//     the client asking the most is shed (fair_share) to make room, if that
//     client asks more than twice as much as the newcomer's; else the
//     newcomer is shed (queue_full).
//  4. A freed slot goes to the oldest queued request of a client asking no
//     more than twice its fair share; only when none waits, to the
//     request of the client asking the least. Light clients go first, and
//     among clients near their share the queue is first come, first
//     served: ordering them by their rates, which differ by chance, would
//     starve the unlucky ones near capacity.
//  5. A request waits at most queue_timeout (burstQueue times that when it
//     arrived near capacity), then is shed (queue_timeout). A client that
//     disconnects while queued is noticed within gatePoll and its request
//     dropped (499, no response).
//  6. Under sustained overload, a standing queue, one that has not been
//     empty for a whole window, adds delay without adding throughput (the
//     limit keeps the backend busy on its own): while it stands, requests
//     still waiting after the free slots were handed out that waited more
//     than a quarter of minRTT (at least 1ms, at most queue_timeout; no
//     such rule before minRTT is known) are shed (queue_timeout), as CoDel
//     drops from a standing queue, except those of clients asking no more
//     than their fair share. The queue
//     absorbs bursts, and near capacity it waits up to queue_timeout;
//     under sustained overload it adds at most that quarter of minRTT.
//
// Clients are tracked while they send or hold requests, at most
// maxTrackedClients; more are counted together as one client.
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
	// overloadRatio of requests arrived to requests admitted marks a
	// sustained overload, where a standing queue only adds delay.
	overloadRatio = 1.25
	// burstQueue multiplies the queue's bounds (its length and
	// queue_timeout) for a request that arrives while the upstream is
	// saturated without a sustained overload: near capacity, bursts come
	// and go, and a request that waits for one to drain was going to be
	// served. Should the overload become sustained, the standing-queue
	// rule (policy 6) sheds it anyway. Larger multipliers let a backend
	// exactly at capacity build a queue that only adds delay (measured
	// with bench/overload: 4 gave 0.01 % shed at 0.9 C but 0.40 C of
	// goodput at 1 C; 2 gives under 0.1 % and 0.95 C).
	burstQueue = 2
	// shedProxyStatus is the RFC 9209 Proxy-Status of a shed request.
	shedProxyStatus = `tollgate; error=connection_limit_reached; details="adaptive concurrency"`
)

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
	since time.Time     // queued at
	wait  time.Duration // the longest it may wait
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

	// Per-client accounting (overload_clients.go).
	clients  map[string]*clientLoad
	free     []*clientLoad // entries to reuse: most clients come and go
	overflow clientLoad    // clients beyond maxTrackedClients
	admitted decayed       // the gate's throughput
	asked    decayed       // requests that arrived at the gate
	level    float64       // the fair share, requests per rateTau
	levelAt  time.Time
	active   int       // clients counted in level
	rates    []float64 // scratch for refreshLocked
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

// arrive applies the shedding policy to a request of client k. It returns
// the client's entry and either nil (admitted), a waiter (queued), or the
// reason it was shed.
func (g *overloadGate) arrive(now time.Time, k gateKey) (*clientLoad, *gateWaiter, shedReason, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.grantLocked(now)
	g.refreshLocked(now)
	cl := g.clientLocked(k)
	cl.asked.add(now, 1)
	cl.rate = cl.asked.v
	g.asked.add(now, 1)
	if len(g.queue) == 0 && g.ctl.Acquire(now) {
		cl.inFlight++
		g.admitted.add(now, 1)
		return cl, nil, 0, true
	}
	overloaded := g.asked.value(now) > overloadRatio*g.admitted.value(now)
	if overloaded && g.overShare(cl) {
		return nil, nil, shedFairShare, false
	}
	capQ := int(math.Ceil(g.queueRatio * float64(g.ctl.Limit())))
	if !overloaded {
		capQ *= burstQueue
	}
	if len(g.queue) >= capQ && !g.evictLocked(cl) {
		return nil, nil, shedQueueFull, false
	}
	w := &gateWaiter{cl: cl, since: now, wait: g.queueTimeout, ready: make(chan struct{}, 1)}
	if !overloaded {
		w.wait *= burstQueue
	}
	cl.queued++
	g.queue = append(g.queue, w)
	return cl, w, 0, true
}

// evictLocked sheds the queued request of the client asking the most, the
// newest of its requests, if that client asks more than twice as much as
// the newcomer's; it reports whether a place was freed. Clients whose
// rates differ by less, by chance as often as not, keep their order.
func (g *overloadGate) evictLocked(newcomer *clientLoad) bool {
	victim := -1
	for i, w := range g.queue {
		if victim < 0 || w.cl.rate >= g.queue[victim].cl.rate {
			victim = i
		}
	}
	if victim < 0 || g.queue[victim].cl.rate <= shareFactor*newcomer.rate {
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
}

func (g *overloadGate) removeLocked(i int) *gateWaiter {
	w := g.queue[i]
	copy(g.queue[i:], g.queue[i+1:])
	g.queue[len(g.queue)-1] = nil
	g.queue = g.queue[:len(g.queue)-1]
	w.cl.queued--
	return w
}

// grantLocked hands free slots to queued requests, the client asking the
// least first, then sheds what waited too long in a standing queue.
func (g *overloadGate) grantLocked(now time.Time) {
	for len(g.queue) > 0 {
		best := g.nextLocked()
		if !g.ctl.Acquire(now) {
			break
		}
		w := g.removeLocked(best)
		w.cl.inFlight++
		g.admitted.add(now, 1)
		w.state = waitGranted
		w.ready <- struct{}{}
	}
	if len(g.queue) > 0 && now.Sub(g.lastEmpty) >= g.cfg.Window.Duration {
		g.drainStandingLocked(now)
	}
	if len(g.queue) == 0 {
		g.lastEmpty = now
	}
}

// nextLocked picks the queued request a free slot goes to (policy 4): the
// oldest of a client within twice its fair share, else the request of the
// client asking the least.
func (g *overloadGate) nextLocked() int {
	least := 0
	for i, w := range g.queue {
		if !g.overShare(w.cl) {
			return i // the queue is in arrival order
		}
		if w.cl.rate < g.queue[least].cl.rate {
			least = i
		}
	}
	return least
}

// drainStandingLocked sheds the requests that waited more than a quarter
// of minRTT in a standing queue, under sustained overload (policy 6).
func (g *overloadGate) drainStandingLocked(now time.Time) {
	minRTT := g.ctl.Snapshot().MinRTT
	if minRTT <= 0 || g.asked.value(now) <= overloadRatio*g.admitted.value(now) {
		return
	}
	target := min(max(minRTT/4, time.Millisecond), g.queueTimeout)
	for i := 0; i < len(g.queue); {
		if w := g.queue[i]; now.Sub(w.since) > target && w.cl.rate > g.level {
			g.shedLocked(i, shedQueueTimeout)
			continue
		}
		i++
	}
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
	g.grantLocked(now)
}

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
	wait := w.wait // set before w was shared
	deadline := time.Now().Add(wait)
	t := time.NewTimer(min(wait, gatePoll))
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
	ss.writeOwnResponse(st.status,
		h1.Field{Name: st.fwd.requestIDName, Value: st.fwd.requestID},
		h1.Field{Name: "Retry-After", Value: "1"},
		h1.Field{Name: "Proxy-Status", Value: shedProxyStatus})
}
