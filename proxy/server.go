// Package proxy is tollgate's data path: listeners, the request pipeline,
// upstream balancing, the own HTTP/1.1 upstream connection pool, access log,
// metrics and the admin API.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// Options are the parts of a Server that do not come from the config file.
type Options struct {
	// Log receives operational messages (start, reload, warnings).
	// Nil: slog.Default().
	Log *slog.Logger
	// AccessLog receives one JSON line per request. Nil: no access log.
	AccessLog io.Writer
	// CloseLog receives one JSON line per connection close. Nil: none.
	CloseLog io.Writer
	// CloseRing is how many recent close records /debug/closes keeps.
	// Zero: 1000.
	CloseRing int

	// acme is what tests change about ACME (acme.go); zero in production.
	acme acmeTuning
}

// Server is a running tollgate: its listeners, its current configuration and
// the upstream connection pools that outlive reloads.
type Server struct {
	log     *slog.Logger
	access  *slog.Logger
	metrics *metrics
	hooks   connHooks
	ids     requestIDs
	connIDs atomic.Uint64
	closes  *closeLog

	shuttingDown atomic.Bool
	inFlight     atomic.Int64 // requests being handled, logged when back to 0

	rt atomic.Pointer[runtime]

	mu     sync.Mutex // guards pools, limits.zones and reloads
	pools  map[string]*serverPool
	limits limitState // limit_req zones that outlive reloads

	// overload holds the adaptive_concurrency gates (overload.go).
	overload overloadState

	// checks runs the active health checks (health.go).
	checks healthChecks

	// h2 serves the connections that speak HTTP/2 (h2.go).
	h2 *h2Front

	// acme manages the certificates of HTTPS listeners with ACME (acme.go).
	acme       acmeState
	acmeTuning acmeTuning

	listeners []net.Listener
	admin     *http.Server
	adminLn   net.Listener
	ready     atomic.Bool
	done      chan struct{}
	wg        sync.WaitGroup // accept loops and the sweeper

	connsMu  sync.Mutex
	conns    map[*dsConn]struct{} // downstream connections being served
	perIP    map[netip.Addr]int   // of them, how many each client address holds
	sessions sync.WaitGroup
}

// New builds a Server for cfg without opening any socket. It returns the
// problems CheckConfig finds in cfg.
func New(cfg *config.Config, opts Options) (*Server, error) {
	keys, err := zoneKeys(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:        opts.Log,
		acmeTuning: opts.acme,
		pools:      map[string]*serverPool{},
		done:       make(chan struct{}),
		conns:      map[*dsConn]struct{}{},
	}
	s.ids.prefix = newRequestIDs().prefix
	s.ids.n.Store(uint64(time.Now().UnixNano()))
	if s.log == nil {
		s.log = slog.Default()
	}
	if opts.AccessLog != nil {
		s.access = slog.New(slog.NewJSONHandler(opts.AccessLog, nil))
	}
	s.metrics = newMetrics(s)
	ring := opts.CloseRing
	if ring <= 0 {
		ring = 1000
	}
	s.closes = newCloseLog(opts.CloseLog, ring, s.metrics.connectionClosed)
	s.hooks.onUpstreamClose = func(_ *upstreamConn, rec *closeRecord) { s.closes.add(rec) }
	s.limits.epoch = time.Now()
	s.rt.Store(newRuntime(cfg, s.poolFor, s.limits.build(cfg, keys, s.metrics.limits)))
	return s, nil
}

// poolFor returns the pool of one server, creating it on first use. Called
// with s.mu held during reloads, and from New before any concurrency.
func (s *Server) poolFor(up *config.Upstream, addr string) *serverPool {
	key := poolKey(up.Name, addr)
	if p, ok := s.pools[key]; ok {
		p.setLimits(limitsOf(up))
		return p
	}
	p := newServerPool(up.Name, addr, limitsOf(up), &s.hooks)
	p.guard = newServerGuard(up.Name, addr, p, s.log)
	s.pools[key] = p
	return p
}

// Start opens the listeners and serves in the background. It returns once
// every listener is bound, or the first bind error. HTTPS listeners with
// ACME serve at once and obtain (or load from storage) their certificates
// in the background.
func (s *Server) Start() error {
	cfg := s.rt.Load().cfg
	for _, l := range cfg.Listen {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("listen %s: %w", l.Addr, err)
		}
		s.listeners = append(s.listeners, ln)
	}
	if cfg.Admin.Addr != "off" {
		ln, err := net.Listen("tcp", cfg.Admin.Addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("admin listen %s: %w", cfg.Admin.Addr, err)
		}
		s.adminLn = ln
		s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		s.serve(s.admin, ln)
	}
	var tlsConfs []*tls.Config
	for i := range s.listeners {
		var tc *tls.Config
		var err error
		if cfg.Listen[i].TLS.ACME() {
			tc, err = s.acmeListenerTLS(cfg, i, s.listeners, s.acmeTuning)
		} else {
			tc, err = listenerTLS(cfg.Listen[i])
		}
		if err != nil {
			s.acme.stop()
			s.closeListeners()
			return fmt.Errorf("listen %s: %w", cfg.Listen[i].Addr, err)
		}
		tlsConfs = append(tlsConfs, tc)
	}
	s.h2 = newH2Front(s, s.rt.Load())
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.h2.run() }()
	for i, ln := range s.listeners {
		s.wg.Add(1)
		go s.acceptLoop(ln, listenerOpts{pp: proxyProtocolFrom(cfg.Listen[i]), tls: tlsConfs[i],
			redirectHTTPS: cfg.Listen[i].RedirectHTTPS && tlsConfs[i] == nil,
			h2c:           cfg.Listen[i].H2C && tlsConfs[i] == nil})
	}
	// After the accept loops: certmagic's challenges need the listeners
	// answering.
	if err := s.acme.start(); err != nil {
		s.acme.stop()
		s.closeListeners()
		s.wg.Wait()
		return err
	}
	s.wg.Add(1)
	go s.sweepLoop()
	s.checks.start(s.rt.Load())
	s.ready.Store(true)
	for _, w := range config.Warnings(cfg) {
		s.log.Warn(w)
	}
	return nil
}

// acceptLoop serves each accepted connection on its own goroutine until the
// listener closes.
func (s *Server) acceptLoop(ln net.Listener, lo listenerOpts) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed", "addr", ln.Addr().String(), "error", err, "retry_in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		setUserTimeout(tc, s.rt.Load().userTimeout)
		s.sessions.Add(1)
		go func() {
			defer s.sessions.Done()
			s.serveConn(s.newDSConn(tc), lo)
		}()
	}
}

// track adds or removes a connection from the set Shutdown closes. Adding
// reports how many connections are open with this one.
func (s *Server) track(c *dsConn, add bool) (open int) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return len(s.conns)
}

// countClient adds or removes a connection of a client address (the peer,
// or the one a trusted PROXY protocol header gave) for
// max_connections_per_ip. Adding reports how many the client holds with
// this one.
func (s *Server) countClient(addr netip.Addr, add bool) (held int) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.perIP == nil {
		s.perIP = map[netip.Addr]int{}
	}
	if add {
		s.perIP[addr]++
	} else if s.perIP[addr]--; s.perIP[addr] <= 0 {
		delete(s.perIP, addr)
	}
	return s.perIP[addr]
}

// closeConns closes the tracked connections, only the idle ones unless all.
func (s *Server) closeConns(all bool) {
	s.connsMu.Lock()
	var victims []*dsConn
	for c := range s.conns {
		// An idle connection is claimed, so its session cannot start a
		// request that arrives just now; busy ones end after their
		// request (the session sees shuttingDown), or here when all.
		if c.idle.CompareAndSwap(true, false) || all {
			victims = append(victims, c)
		}
	}
	s.connsMu.Unlock()
	for _, c := range victims {
		c.closeWith(reasonDSShutdown, "", "")
	}
}

func (s *Server) serve(hs *http.Server, ln net.Listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener stopped", "addr", ln.Addr().String(), "error", err)
		}
	}()
}

// Addrs returns the bound addresses of the proxy listeners.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.listeners))
	for i, ln := range s.listeners {
		out[i] = ln.Addr()
	}
	return out
}

// AdminAddr returns the admin listener's address, or nil when it is off.
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

// Reload makes cfg the configuration for new requests. Requests in flight
// finish under the old one; pools of servers that stay are kept with their
// idle connections; pools of removed servers are drained. Listener addresses
// cannot change without a restart: such a change is logged and ignored.
// limit_req zones whose name, key and size stay keep their state. A config
// CheckConfig refuses is not applied: Reload returns the problems and
// counts a failed reload.
func (s *Server) Reload(cfg *config.Config) error {
	keys, err := zoneKeys(cfg)
	if err != nil {
		s.ReloadFailed()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.rt.Load()
	if !sameListeners(old.cfg, cfg) {
		s.log.Warn("reload: listen and admin addresses need a restart; keeping the current ones")
	} else if !sameTLS(old.cfg, cfg) {
		s.log.Warn("reload: listener tls settings (certificate files, ACME) need a restart; keeping the current certificates and ACME managers")
	}
	used := map[string]bool{}
	next := newRuntime(cfg, func(up *config.Upstream, addr string) *serverPool {
		used[poolKey(up.Name, addr)] = true
		return s.poolFor(up, addr)
	}, s.limits.build(cfg, keys, s.metrics.limits))
	s.rt.Store(next)
	s.checks.sync(next) // stops the checks of removed servers
	for key, p := range s.pools {
		if !used[key] {
			p.retire()
			delete(s.pools, key)
		}
	}
	s.metrics.reloads.WithLabelValues("ok").Inc()
	for _, w := range config.Warnings(cfg) {
		s.log.Warn(w)
	}
	return nil
}

// ReloadFailed counts a reload whose config was rejected.
func (s *Server) ReloadFailed() { s.metrics.reloads.WithLabelValues("error").Inc() }

func sameListeners(a, b *config.Config) bool {
	if a.Admin.Addr != b.Admin.Addr || len(a.Listen) != len(b.Listen) {
		return false
	}
	for i := range a.Listen {
		if a.Listen[i].Addr != b.Listen[i].Addr {
			return false
		}
	}
	return true
}

// Shutdown stops accepting, closes idle client connections, lets requests
// in flight finish until ctx ends, then closes what is left: connections
// mid-request, tunnels and pooled upstream connections. Each close is
// tagged ds_shutdown. ACME work in progress is cancelled and certmagic's
// background maintenance ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.shuttingDown.CompareAndSwap(false, true) {
		return errors.New("tollgate: already shut down")
	}
	s.ready.Store(false)
	for _, ln := range s.listeners {
		ln.Close()
	}
	if s.h2 != nil {
		go s.h2.shutdown(ctx)
	}
	finished := make(chan struct{})
	go func() { s.sessions.Wait(); close(finished) }()
	var err error
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		// Idle connections close at once; busy ones when their request
		// ends (the session sees shuttingDown) or, at the deadline, now.
		s.closeConns(false)
		select {
		case <-finished:
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			s.closeConns(true)
			<-finished
			break wait
		case <-tick.C:
		}
	}
	close(s.done)
	s.checks.stop()
	s.acme.stop()
	s.mu.Lock()
	for _, p := range s.pools {
		p.closeIdle(reasonServerDrained)
	}
	s.mu.Unlock()
	if s.admin != nil {
		s.admin.Close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) closeListeners() {
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.listeners = nil
	if s.adminLn != nil {
		s.adminLn.Close()
		s.adminLn = nil
	}
}

// sweepInterval is how often idle upstream connections are checked for
// expiry; expiry is also checked whenever a connection is taken.
const sweepInterval = 500 * time.Millisecond

func (s *Server) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.sweepOnce(now)
		}
	}
}

// sweepOnce closes expired idle connections of every pool.
func (s *Server) sweepOnce(now time.Time) {
	s.mu.Lock()
	pools := make([]*serverPool, 0, len(s.pools))
	for _, p := range s.pools {
		pools = append(pools, p)
	}
	s.mu.Unlock()
	for _, p := range pools {
		p.sweep(now)
	}
}
