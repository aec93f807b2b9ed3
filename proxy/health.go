package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// healthState is a server's active-health verdict.
//
// A server whose upstream has a health_check starts unknown. Unknown servers
// take traffic: the checks never hold requests back, and until a check has
// failed tollgate has no reason to (passive health and the breaker still
// guard them). The first round runs at once, so the verdict comes within
// the first check's timeout plus jitter. Readiness is stricter: only a
// verdict of healthy (or no checks at all) counts there.
type healthState int32

const (
	healthUnchecked healthState = iota // no health_check: counts as healthy
	healthUnknown                      // checked, no verdict yet
	healthHealthy                      // passes checks in a row passed
	healthUnhealthy                    // fails checks in a row failed
)

var healthNames = [...]string{"unchecked", "unknown", "healthy", "unhealthy"}

func (h healthState) String() string { return healthNames[h] }

// maxCheckBody is how much of a check's response body a body match reads.
const maxCheckBody = 64 << 10

// healthCheck is an upstream's health_check resolved for one server.
type healthCheck struct {
	target   string // host:port dialed
	request  string // the whole request, sent as it is
	interval time.Duration
	jitter   time.Duration
	timeout  time.Duration
	fails    int
	passes   int
	status   []config.StatusRange
	bodySub  string
	bodyRE   *regexp.Regexp
	cfg      config.HealthCheck // what it was resolved from
}

// resolveCheck resolves hc for the server at addr; hc was validated.
func resolveCheck(hc *config.HealthCheck, addr string) *healthCheck {
	target := addr
	if hc.Port > 0 {
		host, _, _ := net.SplitHostPort(addr)
		target = net.JoinHostPort(host, strconv.Itoa(hc.Port))
	}
	host := hc.Host
	if host == "" {
		host = addr
	}
	sub, re, _ := hc.BodyMatch()
	return &healthCheck{
		target: target,
		request: "GET " + hc.URI + " HTTP/1.1\r\nHost: " + host +
			"\r\nUser-Agent: tollgate-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
		interval: hc.Interval.Duration, jitter: hc.Jitter.Duration, timeout: hc.Timeout.Duration,
		fails: hc.Fails, passes: hc.Passes, status: hc.Status, bodySub: sub, bodyRE: re, cfg: *hc,
	}
}

// configureCheck applies an upstream's health_check (nil: none). The
// verdict survives a reload that keeps the check; a server that gains checks
// starts unknown, one that loses them is unchecked.
func (g *serverGuard) configureCheck(hc *config.HealthCheck) {
	if hc == nil {
		g.check.Store(nil)
		g.health.Store(int32(healthUnchecked))
		return
	}
	if cur := g.check.Load(); cur != nil && reflect.DeepEqual(cur.cfg, *hc) {
		return
	}
	g.check.Store(resolveCheck(hc, g.addr))
	g.health.CompareAndSwap(int32(healthUnchecked), int32(healthUnknown))
}

func (g *serverGuard) healthState() healthState { return healthState(g.health.Load()) }

// unhealthy reports whether active checks took the server out.
func (g *serverGuard) unhealthy() bool { return g.healthState() == healthUnhealthy }

// checkError is why a check failed, as its log line says.
type checkError struct{ why string }

func (e *checkError) Error() string { return e.why }

func checkFailed(format string, args ...any) error {
	return &checkError{fmt.Sprintf(format, args...)}
}

// checker runs one server's active health checks: loop on a timer, or
// runOnce, which tests call.
type checker struct {
	g      *serverGuard
	rng    *rand.Rand
	dialer net.Dialer
	// probe runs one check; nil: the real one over TCP.
	probe func(ctx context.Context, hc *healthCheck) error
}

func newChecker(g *serverGuard) *checker {
	return &checker{g: g, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// loop checks the server at once, then every interval ± jitter, until ctx
// ends or the server loses its health_check.
func (c *checker) loop(ctx context.Context) {
	var wait time.Duration
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		hc := c.g.check.Load()
		if hc == nil {
			return
		}
		c.runOnce(ctx, time.Now())
		wait = hc.interval
		if hc.jitter > 0 {
			wait += time.Duration(c.rng.Int64N(int64(2*hc.jitter+1))) - hc.jitter
		}
	}
}

// runOnce checks the server once and applies the verdict; it returns the
// server's health after it.
func (c *checker) runOnce(ctx context.Context, now time.Time) healthState {
	hc := c.g.check.Load()
	if hc == nil {
		return c.g.healthState()
	}
	probe := c.probe
	if probe == nil {
		probe = c.check
	}
	err := probe(ctx, hc)
	if ctx.Err() != nil {
		return c.g.healthState() // shut down mid-check: no verdict
	}
	return c.g.verdict(hc, err, now)
}

// check sends one GET on a new connection and judges the response.
func (c *checker) check(ctx context.Context, hc *healthCheck) error {
	ctx, cancel := context.WithTimeout(ctx, hc.timeout)
	defer cancel()
	conn, err := c.dialer.DialContext(ctx, "tcp", hc.target)
	if err != nil {
		return checkFailed("connect to %s: %v", hc.target, errors.Unwrap(err))
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// A shutdown cancels ctx: end the wait for the response at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	timedOut := func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
	if _, err := io.WriteString(conn, hc.request); err != nil {
		return checkFailed("send: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	switch {
	case err != nil && timedOut(err):
		return checkFailed("no response within %v", hc.timeout)
	case err != nil:
		return checkFailed("read response: %v", err)
	}
	defer resp.Body.Close()
	if !statusIn(resp.StatusCode, hc.status) {
		return checkFailed("status %d, want %s", resp.StatusCode, rangesString(hc.status))
	}
	if hc.bodySub == "" && hc.bodyRE == nil {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckBody))
	switch {
	case err != nil && timedOut(err):
		return checkFailed("body not read within %v", hc.timeout)
	case err != nil:
		return checkFailed("read body: %v", err)
	case hc.bodyRE != nil && !hc.bodyRE.Match(body):
		return checkFailed("body does not match ~ %s", hc.bodyRE)
	case hc.bodyRE == nil && !strings.Contains(string(body), hc.bodySub):
		return checkFailed("body does not contain %q", hc.bodySub)
	}
	return nil
}

func statusIn(status int, ranges []config.StatusRange) bool {
	for _, r := range ranges {
		if r.Contains(status) {
			return true
		}
	}
	return false
}

func rangesString(ranges []config.StatusRange) string {
	s := make([]string, len(ranges))
	for i, r := range ranges {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// verdict counts one check result and moves the server to healthy after
// passes passes in a row, to unhealthy after fails failures in a row. A
// change is logged as one line; a server turning unhealthy is drained.
func (g *serverGuard) verdict(hc *healthCheck, err error, now time.Time) healthState {
	g.checkMu.Lock()
	if err == nil {
		g.passes, g.fails = g.passes+1, 0
		g.lastCheck = "passed"
	} else {
		g.passes, g.fails = 0, g.fails+1
		g.lastCheck = err.Error()
	}
	from := g.healthState()
	to := from
	switch {
	case err == nil && from != healthHealthy && g.passes >= hc.passes:
		to = healthHealthy
	case err != nil && from != healthUnhealthy && g.fails >= hc.fails:
		to = healthUnhealthy
	}
	passes, fails, why := g.passes, g.fails, g.lastCheck
	if to != from {
		g.health.Store(int32(to))
	}
	g.checkMu.Unlock()
	if to == from {
		return to
	}
	log := g.log.Info
	if to == healthUnhealthy {
		log = g.log.Warn
	}
	log("health check", "upstream", g.upstream, "server", g.addr, "from", from.String(), "to", to.String(),
		"why", why, "passes", passes, "fails", fails, "at", now.UTC().Format(time.RFC3339Nano))
	if to == healthUnhealthy {
		g.drain()
	}
	return to
}

// healthChecks runs a checker loop for every server of the current runtime
// whose upstream has a health_check, from Start to Shutdown; a reload starts
// the loops of new servers and stops those of removed ones.
type healthChecks struct {
	mu      sync.Mutex
	started bool
	loops   map[*serverGuard]*checkLoop
	wg      sync.WaitGroup
}

type checkLoop struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs the checks of rt; Server.Start calls it.
func (h *healthChecks) start(rt *runtime) {
	h.mu.Lock()
	h.started = true
	h.mu.Unlock()
	h.sync(rt)
}

// sync makes the running loops those of rt's checked servers. Before start
// and after stop it does nothing.
func (h *healthChecks) sync(rt *runtime) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started {
		return
	}
	want := map[*serverGuard]bool{}
	for _, up := range rt.upstreams {
		for _, p := range up.bal.peers() {
			if p.guard.check.Load() != nil {
				want[p.guard] = true
			}
		}
	}
	for g, l := range h.loops {
		if !want[g] {
			l.cancel()
			delete(h.loops, g)
		}
	}
	if h.loops == nil {
		h.loops = map[*serverGuard]*checkLoop{}
	}
	for g := range want {
		if _, ok := h.loops[g]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		l := &checkLoop{cancel: cancel, done: make(chan struct{})}
		h.loops[g] = l
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer close(l.done)
			newChecker(g).loop(ctx)
		}()
	}
}

// running reports whether g's checks run.
func (h *healthChecks) running(g *serverGuard) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.loops[g]
	return ok
}

// stop ends every loop and waits for them; Server.Shutdown calls it.
func (h *healthChecks) stop() {
	h.mu.Lock()
	h.started = false
	for g, l := range h.loops {
		l.cancel()
		delete(h.loops, g)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// unready names an upstream without a healthy server when the config's
// readiness requires one, else "". /readyz answers 503 with it.
func (s *Server) unready() string {
	rt := s.rt.Load()
	if rt == nil || !rt.cfg.Readiness.RequireHealthyUpstreams {
		return ""
	}
	now := time.Now()
	for i := range rt.cfg.Upstreams {
		up := rt.upstreams[rt.cfg.Upstreams[i].Name]
		if up.bal.readyServers(now) == 0 {
			return "upstream " + up.name + " has no healthy server"
		}
	}
	return ""
}

// readyServers counts the servers that count for readiness: healthy, and
// with a verdict of healthy when checks run.
func (b *balancer) readyServers(now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, p := range b.peers() {
		st := p.guard.healthState()
		if b.healthy(p, now) && (st == healthHealthy || st == healthUnchecked) {
			n++
		}
	}
	return n
}
