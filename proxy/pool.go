package proxy

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// poolLimits are one upstream's keep-alive settings (Nginx's upstream
// keepalive, keepalive_timeout, keepalive_requests, keepalive_time).
type poolLimits struct {
	maxIdle     int           // idle conns kept; 0 = no pooling
	idleTimeout time.Duration // how long a conn may idle
	maxRequests int           // requests per conn
	maxLife     time.Duration // a conn's whole life
	userTimeout time.Duration // TCP_USER_TIMEOUT on dialed conns; 0: the kernel's
}

// serverPool keeps idle HTTP/1.1 connections to one backend server and dials
// new ones. tollgate owns this pool instead of using net/http.Transport so
// that it sees every connection's life (reuse, idle time, who closed it) and
// avoids the Transport's two goroutines per connection.
//
// The idle list is LIFO: the most recently used connection is reused first,
// so surplus connections age out instead of all staying lukewarm.
//
// A serverPool is safe for concurrent use.
type serverPool struct {
	upstream string
	addr     string
	dialer   net.Dialer
	hooks    *connHooks

	mu      sync.Mutex
	limits  poolLimits
	idle    []*upstreamConn
	retired bool // removed by reload: no new idle conns
	// guard is the server's breaker and health state (breakers.go), set by
	// Server.poolFor or on first use; guarded by mu.
	guard *serverGuard

	open  atomic.Int64 // connections currently open
	dials atomic.Int64 // connections ever dialed
	// learnedIdle is how long this backend lets a connection idle, as
	// learned from its "Keep-Alive: timeout=N" or from idle connections it
	// closed, less a margin; 0 while unknown. Connections are retired
	// before it, so a request never races the backend's own close.
	learnedIdle atomic.Int64
}

// limitsNow returns the limits with the idle timeout lowered to what was
// learned of the backend. Called with p.mu held.
func (p *serverPool) limitsNow() poolLimits {
	l := p.limits
	if learned := time.Duration(p.learnedIdle.Load()); learned > 0 && (l.idleTimeout <= 0 || learned < l.idleTimeout) {
		l.idleTimeout = learned
	}
	return l
}

// learnKeepAlive reads a response's Keep-Alive field ("timeout=5,
// max=100"): the backend closes connections idle for that long.
func (p *serverPool) learnKeepAlive(field string) {
	for field != "" {
		var item string
		item, field, _ = strings.Cut(field, ",")
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || !strings.EqualFold(k, "timeout") {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
			p.learnIdle(time.Duration(n) * time.Second)
		}
		return
	}
}

// learnIdleClose notes that the backend closed a connection after it idled
// for d: its idle timeout is at most d. Closes of connections idle for less
// than a second teach nothing: a backend restarting closes every connection
// at once, and learning from that would end pooling for good.
func (p *serverPool) learnIdleClose(d time.Duration) {
	if d >= time.Second {
		p.learnIdle(d)
	}
}

// learnIdle lowers the learned idle timeout to a fifth under the backend's
// (at least 100ms under), keeping the lowest seen.
func (p *serverPool) learnIdle(backend time.Duration) {
	retire := backend - max(backend/5, 100*time.Millisecond)
	if retire <= 0 {
		retire = backend / 2
	}
	for {
		cur := p.learnedIdle.Load()
		if cur > 0 && time.Duration(cur) <= retire {
			return
		}
		if p.learnedIdle.CompareAndSwap(cur, int64(retire)) {
			return
		}
	}
}

func newServerPool(upstream, addr string, limits poolLimits, hooks *connHooks) *serverPool {
	return &serverPool{upstream: upstream, addr: addr, limits: limits, hooks: hooks}
}

// setLimits applies a reloaded upstream's keep-alive settings.
func (p *serverPool) setLimits(l poolLimits) {
	p.mu.Lock()
	p.limits = l
	p.mu.Unlock()
}

// get returns an idle connection that is still usable, or dials a new one
// within connectTimeout.
func (p *serverPool) get(ctx context.Context, now time.Time, connectTimeout time.Duration) (*upstreamConn, error) {
	if c := p.takeIdle(now); c != nil {
		return c, nil
	}
	return p.dial(ctx, connectTimeout)
}

// takeIdle pops idle connections until one is fit for reuse, closing the
// expired ones and those the backend already closed.
func (p *serverPool) takeIdle(now time.Time) *upstreamConn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		limits := p.limitsNow()
		p.mu.Unlock()

		if why := c.expired(now, limits); why != "" {
			c.close(why)
			continue
		}
		// A connection idle for a moment cannot have met the backend's
		// idle timeout; only longer-idle ones are worth a syscall to check.
		if idle := now.Sub(c.idleSince); idle >= peekAfterIdle && !socketOpen(c.raw) {
			p.learnIdleClose(idle)
			c.phase = phaseIdle
			c.close(reasonIdleClosedByPeer)
			continue
		}
		c.reused = true
		c.wasIdle = now.Sub(c.idleSince)
		return c
	}
}

func (p *serverPool) dial(ctx context.Context, timeout time.Duration) (*upstreamConn, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	raw, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, &dialError{addr: p.addr, err: err}
	}
	tc, ok := raw.(*net.TCPConn)
	if !ok {
		raw.Close()
		return nil, &dialError{addr: p.addr, err: errors.New("not a TCP connection")}
	}
	p.mu.Lock()
	ut := p.limits.userTimeout
	p.mu.Unlock()
	setUserTimeout(tc, ut)
	p.open.Add(1)
	p.dials.Add(1)
	return newUpstreamConn(tc, p, p.hooks.nextID()), nil
}

// put returns a connection whose exchange ended cleanly. It is closed instead
// when the pool is full, retired, or the connection has served its quota.
func (p *serverPool) put(c *upstreamConn, now time.Time) {
	c.idleSince = now
	c.phase = phaseIdle
	// Clear the exchange's deadlines: a past one would fail the liveness
	// peek in takeIdle before it reaches the socket.
	c.raw.SetDeadline(time.Time{})
	p.mu.Lock()
	limits := p.limitsNow()
	why := c.expired(now, limits)
	switch {
	case why != "":
	case p.retired:
		why = reasonServerDrained
	case p.guard != nil && p.guard.draining():
		// Breaker open or unhealthy: a connection back from a request
		// that was in flight when the server was drained is not kept.
		why = reasonServerDrained
	case len(p.idle) >= limits.maxIdle:
		why = reasonPoolOverflow
	default:
		p.idle = append(p.idle, c)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c.close(why)
}

// sweep closes idle connections past their idle timeout or lifetime. The
// server calls it periodically; tests call it with a chosen now.
func (p *serverPool) sweep(now time.Time) {
	p.mu.Lock()
	limits := p.limitsNow()
	var expired []*upstreamConn
	kept := p.idle[:0]
	for _, c := range p.idle {
		if c.expired(now, limits) != "" {
			expired = append(expired, c)
		} else {
			kept = append(kept, c)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.mu.Unlock()
	for _, c := range expired {
		c.close(c.expired(now, limits))
	}
}

// retire closes every idle connection and keeps no new ones: the server left
// the configuration. In-flight exchanges finish and then close.
func (p *serverPool) retire() {
	p.mu.Lock()
	p.retired = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.close(reasonServerDrained)
	}
}

// closeIdle closes every idle connection (graceful shutdown).
func (p *serverPool) closeIdle(why string) {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.close(why)
	}
}

func (p *serverPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// expired names why c must not be used again, or returns "".
func (c *upstreamConn) expired(now time.Time, l poolLimits) string {
	switch {
	case l.maxIdle == 0:
		return reasonPoolOverflow
	case l.maxRequests > 0 && c.requests >= l.maxRequests:
		return reasonKeepaliveLimit
	case l.maxLife > 0 && now.Sub(c.created) >= l.maxLife:
		return reasonKeepaliveLimit
	case !c.idleSince.IsZero() && l.idleTimeout > 0 && now.Sub(c.idleSince) >= l.idleTimeout:
		return reasonIdleTimeout
	}
	return ""
}

// peekAfterIdle is the idle time after which a pooled connection is checked
// for a close by the backend before reuse. Backends close idle connections
// after a second or more (Node.js 5s, gunicorn 2s); under load connections
// idle for microseconds, and the check would cost a syscall per request.
const peekAfterIdle = 50 * time.Millisecond

// dialError is a failure to connect to a backend server.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return "dial " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }
