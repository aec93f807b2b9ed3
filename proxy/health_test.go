package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// healthBackend serves its health endpoint with a status and body the test
// switches, and counts the checks and their connections.
type healthBackend struct {
	*backend
	status atomic.Int32
	body   atomic.Value // string
	checks atomic.Int64
	mu     sync.Mutex
	last   *http.Request
}

func newHealthBackend(t testing.TB) *healthBackend {
	hb := &healthBackend{}
	hb.status.Store(200)
	hb.body.Store("ok")
	hb.backend = startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			hb.checks.Add(1)
			hb.mu.Lock()
			hb.last = r
			hb.mu.Unlock()
			w.WriteHeader(int(hb.status.Load()))
			io.WriteString(w, hb.body.Load().(string))
			return
		}
		io.WriteString(w, "app")
	}))
	return hb
}

func (hb *healthBackend) lastCheck() *http.Request {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return hb.last
}

// checkConfig is a validated-looking health_check with fails 2, passes 3.
func checkConfig(edit ...func(*config.HealthCheck)) *config.HealthCheck {
	hc := &config.HealthCheck{URI: "/healthz", Interval: config.Duration{Duration: time.Second},
		Timeout: config.Duration{Duration: time.Second}, Fails: 2, Passes: 3,
		Status: []config.StatusRange{{Lo: 200, Hi: 399}}}
	for _, e := range edit {
		e(hc)
	}
	return hc
}

// logBuffer is a JSON logger whose lines the test reads.
type logBuffer struct{ syncBuffer }

func (lb *logBuffer) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(lb, nil)) }

// lines returns the logged lines whose msg is msg.
func (lb *logBuffer) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(lb.String(), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// checkedGuard is a guard of the server at addr with hc configured.
func checkedGuard(addr string, hc *config.HealthCheck, log *slog.Logger) (*serverGuard, *checker) {
	g := newServerGuard("app", addr, nil, log)
	g.configureCheck(hc)
	return g, newChecker(g)
}

func TestHealthCheckDownAfterFailsUpAfterPasses(t *testing.T) {
	hb := newHealthBackend(t)
	var logs logBuffer
	g, c := checkedGuard(hb.Addr, checkConfig(), logs.logger())
	ctx := context.Background()
	if st := g.healthState(); st != healthUnknown {
		t.Fatalf("state before any check = %v, want unknown", st)
	}
	steps := []struct {
		status int
		want   healthState
	}{
		{200, healthUnknown}, {200, healthUnknown}, {200, healthHealthy}, // passes 3
		{500, healthHealthy}, {500, healthUnhealthy}, // fails 2
		{500, healthUnhealthy},
		{200, healthUnhealthy}, {200, healthUnhealthy}, {503, healthUnhealthy}, // a failure restarts the count
		{200, healthUnhealthy}, {200, healthUnhealthy}, {302, healthHealthy}, // 3xx passes by default
	}
	for i, st := range steps {
		hb.status.Store(int32(st.status))
		if got := c.runOnce(ctx, time.Now()); got != st.want {
			t.Fatalf("round %d (status %d): %v, want %v", i, st.status, got, st.want)
		}
	}
	// Every round on its own connection, with Host and Connection: close.
	if n, want := hb.conns.Load(), int64(len(steps)); n != want {
		t.Errorf("checks used %d connections for %d rounds, want one each", n, want)
	}
	r := hb.lastCheck()
	if r.Method != http.MethodGet || r.Host != hb.Addr || !r.Close || r.UserAgent() != "tollgate-health-check" {
		t.Errorf("check request: %s Host %q close %v UA %q", r.Method, r.Host, r.Close, r.UserAgent())
	}
	// One log line per verdict change: unknown→healthy→unhealthy→healthy.
	lines := logs.lines(t, "health check")
	var seq []string
	for _, l := range lines {
		seq = append(seq, fmt.Sprint(l["from"], ">", l["to"]))
	}
	if got := strings.Join(seq, " "); got != "unknown>healthy healthy>unhealthy unhealthy>healthy" {
		t.Fatalf("verdict log lines: %s", got)
	}
	if why := lines[1]["why"]; why != "status 500, want 200-399" || lines[1]["server"] != hb.Addr || lines[1]["fails"] != 2.0 {
		t.Errorf("unhealthy line = %v", lines[1])
	}
}

func TestHealthCheckBodyMatch(t *testing.T) {
	hb := newHealthBackend(t)
	tests := []struct {
		name, match, body string
		pass              bool
	}{
		{"substring found", "ok", `{"status":"ok"}`, true},
		{"substring missing", `"ok"`, `{"status":"degraded"}`, false},
		{"regex matches", `~ "status":\s*"(ok|warn)"`, `{"status": "warn"}`, true},
		{"regex does not match", `~ ^ready$`, "ready\n\nnot", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hb.body.Store(tt.body)
			_, c := checkedGuard(hb.Addr, checkConfig(func(h *config.HealthCheck) { h.Body = tt.match }), nil)
			err := c.check(context.Background(), c.g.check.Load())
			if (err == nil) != tt.pass {
				t.Errorf("check = %v, want pass %v", err, tt.pass)
			}
		})
	}
}

func TestHealthCheckStatusRanges(t *testing.T) {
	hb := newHealthBackend(t)
	ranges := []config.StatusRange{{Lo: 200, Hi: 200}, {Lo: 204, Hi: 299}}
	for status, pass := range map[int]bool{200: true, 204: true, 299: true, 201: false, 302: false, 500: false} {
		hb.status.Store(int32(status))
		_, c := checkedGuard(hb.Addr, checkConfig(func(h *config.HealthCheck) { h.Status = ranges }), nil)
		if err := c.check(context.Background(), c.g.check.Load()); (err == nil) != pass {
			t.Errorf("status %d: check = %v, want pass %v", status, err, pass)
		}
	}
}

func TestHealthCheckTimeout(t *testing.T) {
	addr, headSeen, _ := stallNotify(t)
	_, c := checkedGuard(addr, checkConfig(func(h *config.HealthCheck) {
		h.Timeout.Duration = 200 * time.Millisecond
		h.Fails = 1
	}), nil)
	done := make(chan healthState, 1)
	go func() { done <- c.runOnce(context.Background(), time.Now()) }()
	awaitSignal(t, headSeen, "the check's request at the stalling backend")
	if st := awaitSignal(t, done, "the check to time out"); st != healthUnhealthy {
		t.Fatalf("state after a timed-out check = %v, want unhealthy", st)
	}
	if got := c.g.lastCheck; got != "no response within 200ms" {
		t.Errorf("why = %q", got)
	}
	// A refused connect fails too.
	_, c = checkedGuard(refusingAddr(t), checkConfig(func(h *config.HealthCheck) { h.Fails = 1 }), nil)
	if st := c.runOnce(context.Background(), time.Now()); st != healthUnhealthy {
		t.Errorf("refused: %v, want unhealthy", st)
	}
	if !strings.HasPrefix(c.g.lastCheck, "connect to ") {
		t.Errorf("refused: why = %q", c.g.lastCheck)
	}
}

func TestHealthCheckSeparatePortAndHost(t *testing.T) {
	hb := newHealthBackend(t)
	_, port, _ := net.SplitHostPort(hb.Addr)
	server := refusingAddr(t) // the server's own port refuses: only the check port works
	var n int
	fmt.Sscan(port, &n)
	_, c := checkedGuard(server, checkConfig(func(h *config.HealthCheck) {
		h.Port, h.Host, h.Passes = n, "health.internal", 1
	}), nil)
	if st := c.runOnce(context.Background(), time.Now()); st != healthHealthy {
		t.Fatalf("check on the separate port: %v (%s), want healthy", st, c.g.lastCheck)
	}
	if r := hb.lastCheck(); r.Host != "health.internal" {
		t.Errorf("Host = %q, want health.internal", r.Host)
	}
}

func TestHealthCheckLoopInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newServerGuard("app", "127.0.0.1:1", nil, nil)
		g.configureCheck(checkConfig(func(h *config.HealthCheck) {
			h.Interval.Duration, h.Jitter.Duration = 5*time.Second, 500*time.Millisecond
		}))
		var mu sync.Mutex
		var times []time.Time
		snapshot := func() []time.Time { mu.Lock(); defer mu.Unlock(); return append([]time.Time(nil), times...) }
		c := newChecker(g)
		c.probe = func(ctx context.Context, hc *healthCheck) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		start := time.Now()
		go func() { c.loop(ctx); close(done) }()
		synctest.Wait()
		if first := snapshot(); len(first) != 1 || !first[0].Equal(start) {
			t.Fatalf("first check at %v, want at once", first)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		at := snapshot()
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < 4500*time.Millisecond || gap > 5500*time.Millisecond {
				t.Errorf("gap %d = %v, want 5s ± 500ms", i, gap)
			}
		}
		if len(at) < 11 || len(at) > 14 {
			t.Errorf("%d checks in a minute at 5s ± 0.5s", len(at))
		}
		if g.healthState() != healthHealthy {
			t.Errorf("state = %v after passing checks, want healthy", g.healthState())
		}
		cancel()
		<-done
		// Removing the health_check ends the loop on its own too.
		g.configureCheck(nil)
		if g.healthState() != healthUnchecked {
			t.Errorf("state without checks = %v, want unchecked", g.healthState())
		}
	})
}

// healthYAML is an upstream "app" over addrs with a fast health_check on
// /healthz, and a route.
func healthYAML(extra string, addrs ...string) string {
	var b strings.Builder
	b.WriteString("upstreams:\n  - name: app\n    health_check: {uri: /healthz, interval: 50ms, timeout: 50ms, fails: 1, passes: 1}\n")
	b.WriteString(extra)
	b.WriteString("    servers:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "      - addr: %s\n", a)
	}
	b.WriteString("routes:\n  - path_prefix: /\n    upstream: app\n")
	return b.String()
}

// waitHealth waits until the proxy's server addr has health want.
func waitHealth(t testing.TB, p *testProxy, addr string, want healthState) *serverGuard {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		for _, peer := range p.rt.Load().upstreams["app"].bal.peers() {
			if peer.addr == addr && peer.guard.healthState() == want {
				return peer.guard
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not %v within %v", addr, want, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealthCheckUnhealthyGetsNoTrafficAndIsDrained(t *testing.T) {
	good, bad := newHealthBackend(t), newHealthBackend(t)
	p := startProxy(t, healthYAML("", good.Addr, bad.Addr))
	waitHealth(t, p, bad.Addr, healthHealthy)
	for range 4 { // both serve and leave an idle pooled connection
		get(t, p.URL+"/")
	}
	if bad.conns.Load() < 2 {
		t.Fatalf("bad backend had %d connections", bad.conns.Load())
	}
	bad.status.Store(500)
	waitHealth(t, p, bad.Addr, healthUnhealthy)
	before := bad.checks.Load()
	appConns := bad.conns.Load() - before // checks use a connection each
	for i := range 10 {
		if code, body := get(t, p.URL+"/"); code != 200 || body != "app" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if n := bad.conns.Load() - bad.checks.Load(); n != appConns {
		t.Errorf("the unhealthy server got %d new request connections", n-appConns)
	}
	code, body := get(t, p.Admin+"/debug/closes?reason="+reasonServerDrained)
	if code != 200 || !strings.Contains(body, bad.Addr) {
		t.Errorf("no us_server_drained close for the unhealthy server's idle conn: %s", body)
	}
	bad.status.Store(200)
	waitHealth(t, p, bad.Addr, healthHealthy)
}

func TestHealthCheckReloadStopsChecker(t *testing.T) {
	a, b := newHealthBackend(t), newHealthBackend(t)
	p := startProxy(t, healthYAML("", a.Addr, b.Addr))
	gb := waitHealth(t, p, b.Addr, healthHealthy)
	if !p.checks.running(gb) {
		t.Fatal("b's checker is not running")
	}
	cfg, err := config.Parse("reload.yaml", []byte("admin:\n  addr: 127.0.0.1:0\nlisten:\n  - addr: "+p.Addr+"\n"+healthYAML("", a.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if p.checks.running(gb) {
		t.Fatal("b's checker still runs after b left the config")
	}
	// Let a round or two pass: b gets no more checks, a does.
	n, na := b.checks.Load(), a.checks.Load()
	waitFor(t, "a's next checks", func() bool { return a.checks.Load() >= na+2 })
	if got := b.checks.Load(); got > n+1 { // at most one that was in flight
		t.Errorf("b got %d checks after its removal", got-n)
	}
}

// waitFor polls cond until it holds, failing after waitLimit.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealthUnknownTakesTraffic(t *testing.T) {
	g := newServerGuard("app", "a", nil, nil)
	g.configureCheck(checkConfig())
	b := resilientBalancer(func(*config.Upstream) {}, srv("a"))
	peerNamed(b, "a").guard = g
	if got := pickSeq(b, t0, 2); got != "aa" {
		t.Errorf("unknown server picks = %q, want it used until a verdict", got)
	}
}

func TestReadyzRequiresHealthyUpstreams(t *testing.T) {
	hb := newHealthBackend(t)
	hb.status.Store(503)
	p := startProxy(t, "readiness: {require_healthy_upstreams: true}\n"+healthYAML("", hb.Addr))
	waitHealth(t, p, hb.Addr, healthUnhealthy)
	code, body := get(t, p.Admin+"/readyz")
	if code != 503 || !strings.Contains(body, "upstream app has no healthy server") {
		t.Errorf("/readyz = %d %q, want 503 naming the upstream", code, body)
	}
	if code, _ := get(t, p.Admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d: liveness must not depend on backends", code)
	}
	hb.status.Store(200)
	waitHealth(t, p, hb.Addr, healthHealthy)
	if code, _ := get(t, p.Admin+"/readyz"); code != 200 {
		t.Errorf("/readyz with a healthy server = %d, want 200", code)
	}
	// Without the readiness rule, backends never make tollgate unready.
	hb2 := newHealthBackend(t)
	hb2.status.Store(503)
	p2 := startProxy(t, healthYAML("", hb2.Addr))
	waitHealth(t, p2, hb2.Addr, healthUnhealthy)
	if code, _ := get(t, p2.Admin+"/readyz"); code != 200 {
		t.Errorf("/readyz without the rule = %d, want 200", code)
	}
}

func TestDebugUpstreamsShowsHealthAndBreaker(t *testing.T) {
	hb := newHealthBackend(t)
	p := startProxy(t, healthYAML("    slow_start: 10s\n", hb.Addr))
	waitHealth(t, p, hb.Addr, healthHealthy)
	get(t, p.URL+"/")
	code, body := get(t, p.Admin+"/debug/upstreams")
	if code != 200 {
		t.Fatalf("/debug/upstreams = %d", code)
	}
	var ups []struct {
		Servers []struct {
			Addr            string  `json:"addr"`
			Health          string  `json:"health"`
			Available       bool    `json:"available"`
			EffectiveWeight float64 `json:"effective_weight"`
			Active          int     `json:"active"`
			Idle            int     `json:"conns_idle"`
			Breaker         *struct {
				State  string         `json:"state"`
				Counts map[string]int `json:"counts"`
			} `json:"breaker"`
		} `json:"servers"`
	}
	if err := json.Unmarshal([]byte(body), &ups); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	s := ups[0].Servers[0]
	if s.Health != "healthy" || !s.Available || s.EffectiveWeight != 1 || s.Breaker == nil ||
		s.Breaker.State != "closed" || s.Breaker.Counts["successes"] != 1 || s.Idle != 1 {
		t.Errorf("server view = %+v (breaker %+v)\n%s", s, s.Breaker, body)
	}
	m := scrape(t, p)
	for _, want := range []string{
		`tollgate_upstream_server_healthy{server="` + hb.Addr + `",upstream="app"} 1`,
		`tollgate_circuit_breaker_state{server="` + hb.Addr + `",upstream="app"} 0`,
		`tollgate_circuit_breaker_shed_total{server="` + hb.Addr + `",upstream="app"} 0`,
		`tollgate_circuit_breaker_transitions_total{server="` + hb.Addr + `",to="open",upstream="app"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
