package proxy

import (
	"sync"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// peer is one upstream server as the balancer sees it: its configuration,
// its share of the smooth weighted round robin, its in-flight count (for
// max_conns and least_conn) and Nginx's passive-health counters.
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

	pool *serverPool // pooled connections; shared across reloads

	current int // smooth WRR running weight (RR:521-596)
	active  int // requests in flight to this server

	// Passive health, ngx_http_upstream_round_robin.c: fails counts
	// failures; accessed is the last failure; checked is when the server was
	// last tried while failed.
	fails    int
	accessed time.Time
	checked  time.Time
}

// balancer picks servers of one upstream: Nginx's smooth weighted round robin
// (or least_conn) over the primaries, then over the backups when no primary
// is usable.
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
}

func newBalancer(up *config.Upstream, poolFor func(addr string) *serverPool) *balancer {
	b := &balancer{leastConn: up.Balance == config.BalanceLeastConn}
	for _, s := range up.Servers {
		p := &peer{
			addr:     s.Addr,
			weight:   s.Weight,
			maxFails: *s.MaxFails,
			failTime: s.FailTimeout.Duration,
			maxConns: s.MaxConns,
			down:     s.Down,
			backup:   s.Backup,
			pool:     poolFor(s.Addr),
		}
		if s.Backup {
			b.backup = append(b.backup, p)
		} else {
			b.primary = append(b.primary, p)
		}
	}
	b.lone = len(b.primary) == 1 && len(b.backup) == 0
	return b
}

// pick returns the server for the next attempt, skipping those in tried,
// and counts the request as in flight on it. It returns nil when no server
// is usable: Nginx's "no live upstreams".
func (b *balancer) pick(now time.Time, tried []*peer) *peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pickFrom(b.primary, now, tried)
	if p == nil {
		p = b.pickFrom(b.backup, now, tried)
	}
	if p != nil {
		p.active++
	}
	return p
}

func (b *balancer) pickFrom(peers []*peer, now time.Time, tried []*peer) *peer {
	if b.leastConn {
		return b.pickLeastConn(peers, now, tried)
	}
	var best *peer
	total := 0
	for _, p := range peers {
		if !b.usable(p, now, tried) {
			continue
		}
		p.current += p.weight
		total += p.weight
		if best == nil || p.current > best.current {
			best = p
		}
	}
	if best == nil {
		return nil
	}
	best.current -= total
	b.noteChecked(best, now)
	return best
}

// pickLeastConn picks the usable server with the fewest in-flight requests
// relative to its weight; ties go to smooth weighted round robin among the
// tied servers, as ngx_http_upstream_least_conn_module does.
func (b *balancer) pickLeastConn(peers []*peer, now time.Time, tried []*peer) *peer {
	var first *peer
	tied := 0
	for _, p := range peers {
		if !b.usable(p, now, tried) {
			continue
		}
		switch {
		case first == nil || p.active*first.weight < first.active*p.weight:
			first, tied = p, 1
		case p.active*first.weight == first.active*p.weight:
			tied++
		}
	}
	if tied <= 1 {
		if first != nil {
			b.noteChecked(first, now)
		}
		return first
	}
	var best *peer
	total := 0
	for _, p := range peers {
		if !b.usable(p, now, tried) || p.active*first.weight != first.active*p.weight {
			continue
		}
		p.current += p.weight
		total += p.weight
		if best == nil || p.current > best.current {
			best = p
		}
	}
	best.current -= total
	b.noteChecked(best, now)
	return best
}

func (b *balancer) usable(p *peer, now time.Time, tried []*peer) bool {
	if p.down {
		return false
	}
	for _, t := range tried {
		if t == p {
			return false
		}
	}
	if p.maxConns > 0 && p.active >= p.maxConns {
		return false
	}
	return b.lone || !p.failed(now)
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
// failure for passive health (error, timeout, invalid header).
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
