package proxy

import (
	"math"
	"slices"
	"time"
)

// Per-client accounting of an overload gate: how much each client asks
// for, and the max-min fair share of the upstream's throughput.

const (
	// rateTau is the time constant of the client and throughput rates: a
	// request counts 1 when it arrives and e^(-t/rateTau) t later, so a
	// rate is about the requests of the last second.
	rateTau = time.Second
	// rateForget is the rate below which a client holding nothing is
	// forgotten (about 3s after its last request).
	rateForget = 0.05
	// shareFactor: a client asking more than this many times its fair
	// share is over it. The margin keeps clients that ask about their
	// share (Poisson noise) from being shed for it.
	shareFactor = 2
	// maxTrackedClients bounds the per-client map; clients beyond it are
	// counted together as one, which then asks much and is shed first.
	maxTrackedClients = 4096
	// maxFreeClients bounds the entries kept for reuse.
	maxFreeClients = 64
)

// decayed is a count that decays exponentially with rateTau.
type decayed struct {
	v  float64
	at time.Time
}

func (d *decayed) value(now time.Time) float64 {
	if dt := now.Sub(d.at); dt > 0 {
		d.v *= math.Exp(-float64(dt) / float64(rateTau))
		d.at = now
	}
	return d.v
}

func (d *decayed) add(now time.Time, n float64) { d.v = d.value(now) + n }

// clientLoad is one client at a gate: what it asks for and what it holds.
type clientLoad struct {
	key      string
	asked    decayed // requests that arrived at the gate, admitted or not
	rate     float64 // asked, as of the client's last arrival or the last refresh
	inFlight int
	queued   int
}

func (c *clientLoad) holds() int { return c.inFlight + c.queued }

// gateKey names a client at the gate without allocating for a lookup: the
// limit_req key's bytes when b is not nil, else s.
type gateKey struct {
	b []byte
	s string
}

// clientLocked returns the client's entry, creating it.
func (g *overloadGate) clientLocked(k gateKey) *clientLoad {
	var cl *clientLoad
	if k.b != nil {
		cl = g.clients[string(k.b)]
	} else {
		cl = g.clients[k.s]
	}
	if cl != nil {
		return cl
	}
	if len(g.clients) >= maxTrackedClients {
		return &g.overflow
	}
	if n := len(g.free); n > 0 {
		cl, g.free = g.free[n-1], g.free[:n-1]
	} else {
		cl = &clientLoad{}
	}
	cl.key = k.s
	if k.b != nil {
		cl.key = string(k.b)
	}
	g.clients[cl.key] = cl
	return cl
}

// refreshLocked recomputes the fair share once per window: it decays every
// client's rate, forgets the clients that stopped, and water-fills the
// throughput over the rates (refreshing is O(clients log clients)).
func (g *overloadGate) refreshLocked(now time.Time) {
	if now.Sub(g.levelAt) < g.cfg.Window.Duration {
		return
	}
	g.levelAt = now
	rates := g.rates[:0]
	for key, cl := range g.clients {
		cl.rate = cl.asked.value(now)
		if cl.rate < rateForget && cl.holds() == 0 {
			delete(g.clients, key)
			if len(g.free) < maxFreeClients {
				*cl = clientLoad{}
				g.free = append(g.free, cl)
			}
			continue
		}
		rates = append(rates, cl.rate)
	}
	if g.overflow.rate = g.overflow.asked.value(now); g.overflow.rate >= rateForget || g.overflow.holds() > 0 {
		rates = append(rates, g.overflow.rate)
	}
	g.rates, g.active = rates, len(rates)
	g.level = waterLevel(rates, g.admitted.value(now))
}

// waterLevel is the max-min fair share of capacity among clients asking
// rates: the level at which every client asking less gets what it asks and
// every client asking more gets the level. +Inf when capacity covers every
// rate, or when there is no throughput yet to share. It sorts rates.
func waterLevel(rates []float64, capacity float64) float64 {
	if capacity <= 0 {
		return math.Inf(1)
	}
	slices.Sort(rates)
	left := capacity
	for i, r := range rates {
		share := left / float64(len(rates)-i)
		if r > share {
			return share
		}
		left -= r
	}
	return math.Inf(1)
}

// overShare reports whether a client asks more than shareFactor times its
// fair share while other clients are active: such a client is shed before
// anyone waits. A lone client is never over its share.
func (g *overloadGate) overShare(cl *clientLoad) bool {
	return g.active > 1 && cl.rate > shareFactor*g.level
}
