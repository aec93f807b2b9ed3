package proxy

import (
	"sync"
	"time"

	"github.com/tollgate-proxy/tollgate/breaker"
	"github.com/tollgate-proxy/tollgate/config"
)

// peer is one upstream server as the balancer sees it: its configuration,
// its share of the smooth weighted round robin, its in-flight count (for
// max_conns and least_conn) and Nginx's passive-health counters. Its breaker,
// active health and slow-start ramp are in guard, which outlives reloads.
//
// All mutable fields are guarded by the owning balancer's mutex.
type peer struct {
	addr     string
	weight   int
	maxFails int
	failTime time.Duration
	maxConns int
	down     bool
	backup   bool

	pool  *serverPool  // pooled connections; shared across reloads
	guard *serverGuard // breaker, health, ramp; shared across reloads

	current int // smooth WRR running weight (RR:521-596)
	eff     int // effective weight of the pick in progress, weightScale units
	active  int // requests in flight to this server

	// Passive health, ngx_http_upstream_round_robin.c: fails counts
	// failures; accessed is the last failure; checked is when the server was
	// last tried while failed.
	fails    int
	accessed time.Time
	checked  time.Time
}

// weightScale multiplies configured weights, so that slow start can give a
// server a tenth of weight 1. Smooth WRR picks the same sequence for weights
// scaled by a constant.
const weightScale = 100

// balancer picks servers of one upstream: Nginx's smooth weighted round robin
// (or least_conn) over the usable primaries, then over the backups when no
// primary is usable. A server is usable when it is not down, not failed by
// passive health, its breaker admits the request and its active health check
// has not found it unhealthy. Below the panic threshold, health verdicts
// (passive and active) are ignored, open breakers are not.
//
// A balancer is safe for concurrent use.
type balancer struct {
	mu        sync.Mutex
	leastConn bool
	primary   []*peer
	backup    []*peer
	// lone is true for one primary and no backups: Nginx then ignores
	// max_fails entirely (the server is always tried).
	lone bool
	// panicPct is the panic threshold in percent; 0: off.
	panicPct int
	// slowStart is the weight ramp after a server comes back; 0: off.
	slowStart time.Duration
	// cand holds the candidates of the pick in progress.
	cand []*peer
}

func newBalancer(up *config.Upstream, poolFor func(addr string) *serverPool) *balancer {
	b := &balancer{
		leastConn: up.Balance == config.BalanceLeastConn,
		panicPct:  up.PanicThreshold,
		slowStart: up.SlowStart.Duration,
	}
	for _, s := range up.Servers {
		pool := poolFor(s.Addr)
		p := &peer{
			addr:     s.Addr,
			weight:   s.Weight,
			maxFails: *s.MaxFails,
			failTime: s.FailTimeout.Duration,
			maxConns: s.MaxConns,
			down:     s.Down,
			backup:   s.Backup,
			pool:     pool,
			guard:    guardOf(pool, up.Name, s.Addr),
		}
		p.guard.configure(up)
		if s.Backup {
			b.backup = append(b.backup, p)
		} else {
			b.primary = append(b.primary, p)
		}
	}
	b.lone = len(b.primary) == 1 && len(b.backup) == 0
	return b
}

// circuitOpen is what pick returns for a first attempt when servers are
// left out only because their breakers are open: try answers 503.
var circuitOpen = &peer{addr: "circuit-open"}

// pick returns the server for the next attempt, skipping those in tried,
// counts the request as in flight on it, and hands over the breaker's
// admission, which the attempt reports when it ends (peer.report). It
// returns nil when no server is usable (Nginx's "no live upstreams"), or
// circuitOpen when breakers refused every server.
func (b *balancer) pick(now time.Time, tried []*peer) (*peer, breaker.Ticket) {
	b.mu.Lock()
	defer b.mu.Unlock()
	healthy, total := b.survey(now)
	if b.panicPct > 0 && healthy*100 < b.panicPct*total && !b.anyUsable(b.backup, now, tried) {
		// Panic: too few healthy primaries and no backup to take over.
		if p, tk := b.choose(b.primary, now, tried, true, nil); p != nil {
			return p, tk
		}
	}
	b.countSheds(now)
	refused := false
	if p, tk := b.choose(b.primary, now, tried, false, &refused); p != nil {
		return p, tk
	}
	if p, tk := b.choose(b.backup, now, tried, false, &refused); p != nil {
		return p, tk
	}
	if refused && len(tried) == 0 {
		return circuitOpen, breaker.Ticket{}
	}
	return nil, breaker.Ticket{}
}

// choose picks among peers by smooth WRR or least_conn, admits the request
// through the winner's breaker (unless ignoreHealth) and commits the pick.
// A winner whose breaker refuses is left out and the choice made again;
// refused records that it happened.
func (b *balancer) choose(peers []*peer, now time.Time, tried []*peer, ignoreHealth bool, refused *bool) (*peer, breaker.Ticket) {
	var skipA [4]*peer
	skip := skipA[:0]
	for {
		best := b.candidates(peers, now, tried, skip, ignoreHealth, refused)
		if best == nil {
			return nil, breaker.Ticket{}
		}
		tk, ok := b.admit(best)
		if !ok {
			skip = append(skip, best)
			if refused != nil {
				*refused = true
			}
			continue
		}
		b.commit(best, now)
		best.active++
		return best, tk
	}
}

// candidates fills b.cand with the usable peers and returns the one smooth
// WRR (or least_conn) would pick, without changing any state.
func (b *balancer) candidates(peers []*peer, now time.Time, tried, skip []*peer, ignoreHealth bool, refused *bool) *peer {
	b.cand = b.cand[:0]
	for _, p := range peers {
		if !b.usable(p, now, tried, ignoreHealth, refused) || contains(skip, p) {
			continue
		}
		p.eff = b.effWeight(p, now)
		b.cand = append(b.cand, p)
	}
	if b.leastConn {
		b.leastConnTies()
	}
	var best *peer
	for _, p := range b.cand {
		if best == nil || p.current+p.eff > best.current+best.eff {
			best = p
		}
	}
	return best
}

// leastConnTies keeps in b.cand only the peers with the fewest in-flight
// requests relative to their weight; smooth WRR then breaks the tie, as
// ngx_http_upstream_least_conn_module does.
func (b *balancer) leastConnTies() {
	var first *peer
	for _, p := range b.cand {
		if first == nil || p.active*first.eff < first.active*p.eff {
			first = p
		}
	}
	tied := b.cand[:0]
	for _, p := range b.cand {
		if p.active*first.eff == first.active*p.eff {
			tied = append(tied, p)
		}
	}
	b.cand = tied
}

// commit applies smooth WRR's update for a pick of best among b.cand. A
// single least-loaded server is taken without touching the running weights:
// least_conn updates them only to break a tie.
func (b *balancer) commit(best *peer, now time.Time) {
	if !b.leastConn || len(b.cand) > 1 {
		total := 0
		for _, p := range b.cand {
			p.current += p.eff
			total += p.eff
		}
		best.current -= total
	}
	b.noteChecked(best, now)
}

func (b *balancer) usable(p *peer, now time.Time, tried []*peer, ignoreHealth bool, refused *bool) bool {
	if p.down || contains(tried, p) {
		return false
	}
	if p.maxConns > 0 && p.active >= p.maxConns {
		return false
	}
	if !ignoreHealth && (!b.lone && p.failed(now) || p.guard.unhealthy()) {
		return false
	}
	// Even in panic an open breaker keeps its server out: it is the one
	// signal that the server cannot take traffic now, and a lone server
	// must still be shed with 503 "circuit open".
	if brk := p.guard.breaker(); brk != nil && !brk.Ready(now) {
		if refused != nil {
			*refused = true
		}
		return false
	}
	return true
}

func (b *balancer) anyUsable(peers []*peer, now time.Time, tried []*peer) bool {
	for _, p := range peers {
		if b.usable(p, now, tried, false, nil) {
			return true
		}
	}
	return false
}

func contains(ps []*peer, p *peer) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// failed reports whether passive health has taken the server out:
// max_fails failures and the last one within fail_timeout.
func (p *peer) failed(now time.Time) bool {
	return p.maxFails > 0 && p.fails >= p.maxFails && sinceSeconds(now, p.checked) <= p.failTimeSec()
}

// sinceSeconds is now - then in whole seconds, as Nginx compares ngx_time()
// values: a server failed at 12.9s is back at 23.0s with fail_timeout 10s.
func sinceSeconds(now, then time.Time) int64 { return now.Unix() - then.Unix() }

func (p *peer) failTimeSec() int64 { return int64(p.failTime / time.Second) }

// noteChecked records that a server with failures was tried again after
// fail_timeout: Nginx sets checked = now so a success can reset fails.
func (b *balancer) noteChecked(p *peer, now time.Time) {
	if p.fails > 0 && sinceSeconds(now, p.checked) > p.failTimeSec() {
		p.checked = now
	}
}

// done ends one attempt on p. failed says whether the attempt counts as a
// failure for passive health (error, timeout, invalid header). The breaker
// hears of the attempt separately, through its ticket (peer.report).
func (b *balancer) done(p *peer, now time.Time, failed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p.active--
	if failed {
		p.fails++
		p.accessed = now
		p.checked = now
		return
	}
	// Nginx resets the count only when the server was re-checked after its
	// last failure: fail, success, fail within fail_timeout still adds up.
	if p.accessed.Before(p.checked) {
		p.fails = 0
	}
}

// peers returns every server of the upstream, primaries first.
func (b *balancer) peers() []*peer {
	out := make([]*peer, 0, len(b.primary)+len(b.backup))
	out = append(out, b.primary...)
	return append(out, b.backup...)
}

// size is the number of servers (Nginx's default number of tries).
func (b *balancer) size() int { return len(b.primary) + len(b.backup) }
