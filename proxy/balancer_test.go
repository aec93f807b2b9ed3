package proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tollgate-proxy/tollgate/breaker"
	"github.com/tollgate-proxy/tollgate/config"
)

// t0 is the fixed instant balancer tests count from: a whole second, so
// offsets in whole seconds line up with Nginx's ngx_time().
var t0 = time.Unix(1_700_000_000, 0)

// srv is a config.Server with Nginx's defaults (weight 1, max_fails 1,
// fail_timeout 10s) unless the test sets them.
func srv(addr string, edit ...func(*config.Server)) config.Server {
	one := 1
	s := config.Server{Addr: addr, Weight: 1, MaxFails: &one, FailTimeout: config.Duration{Duration: 10 * time.Second}}
	for _, e := range edit {
		e(&s)
	}
	return s
}

func weight(w int) func(*config.Server)   { return func(s *config.Server) { s.Weight = w } }
func maxFails(n int) func(*config.Server) { return func(s *config.Server) { s.MaxFails = &n } }
func maxConns(n int) func(*config.Server) { return func(s *config.Server) { s.MaxConns = n } }
func isBackup(s *config.Server)           { s.Backup = true }
func isDown(s *config.Server)             { s.Down = true }
func failTimeout(d time.Duration) func(*config.Server) {
	return func(s *config.Server) { s.FailTimeout.Duration = d }
}

// testBalancer builds a balancer over servers without any pool.
func testBalancer(balance config.Balance, servers ...config.Server) *balancer {
	up := &config.Upstream{Name: "app", Balance: balance, Servers: servers}
	return newBalancer(up, func(string) *serverPool { return nil })
}

// pickSeq picks n times at now, ending each attempt with a success, and
// returns the addresses picked ("-" for no live upstreams).
func pickSeq(b *balancer, now time.Time, n int) string {
	var sb strings.Builder
	for range n {
		p := pickKeep(b, now, nil)
		if p == nil {
			sb.WriteString("-")
			continue
		}
		sb.WriteString(p.addr)
		b.done(p, now, false)
	}
	return sb.String()
}

func TestBalancerSmoothWeightedRoundRobin(t *testing.T) {
	tests := []struct {
		name    string
		servers []config.Server
		want    string
	}{
		// The sequence of ngx_http_upstream_get_peer for 5,1,1, twice.
		{"nginx 5,1,1", []config.Server{srv("a", weight(5)), srv("b"), srv("c")}, "aabacaa" + "aabacaa"},
		{"equal", []config.Server{srv("a"), srv("b"), srv("c")}, "abcabc"},
		{"2,1", []config.Server{srv("a", weight(2)), srv("b")}, "abaaba"},
		{"down skipped", []config.Server{srv("a", weight(5), isDown), srv("b"), srv("c")}, "bcbc"},
		{"all down", []config.Server{srv("a", isDown), srv("b", isDown)}, "--"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBalancer(config.BalanceRoundRobin, tt.servers...)
			if got := pickSeq(b, t0, len(tt.want)); got != tt.want {
				t.Errorf("picks = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBalancerDownNeverPicked(t *testing.T) {
	b := testBalancer(config.BalanceRoundRobin, srv("a", weight(100), isDown), srv("b"), srv("x", isBackup))
	if got := pickSeq(b, t0, 50); strings.ContainsAny(got, "ax") {
		t.Errorf("picks = %q: a down server or a needless backup was picked", got)
	}
	lc := testBalancer(config.BalanceLeastConn, srv("a", isDown), srv("b"))
	if got := pickSeq(lc, t0, 10); got != strings.Repeat("b", 10) {
		t.Errorf("least_conn picks = %q, want only b", got)
	}
}

func TestBalancerBackup(t *testing.T) {
	tests := []struct {
		name    string
		servers []config.Server
		prep    func(b *balancer) // puts the primaries out of use
		want    string
	}{
		{"primaries healthy", []config.Server{srv("a"), srv("b"), srv("x", isBackup)}, nil, "ababab"},
		{"primaries down", []config.Server{srv("a", isDown), srv("b", isDown), srv("x", isBackup), srv("y", isBackup)}, nil, "xyxy"},
		{"primary failed", []config.Server{srv("a"), srv("x", isBackup)}, func(b *balancer) {
			p := pickKeep(b, t0, nil)
			b.done(p, t0, true)
		}, "xxxx"},
		{"one primary failed, one left", []config.Server{srv("a"), srv("b"), srv("x", isBackup)}, func(b *balancer) {
			p := pickKeep(b, t0, nil) // a
			b.done(p, t0, true)
		}, "bbbb"},
		{"primary at max_conns", []config.Server{srv("a", maxConns(1)), srv("x", isBackup)}, func(b *balancer) {
			pickKeep(b, t0, nil) // held, never done
		}, "xxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBalancer(config.BalanceRoundRobin, tt.servers...)
			if tt.prep != nil {
				tt.prep(b)
			}
			if got := pickSeq(b, t0.Add(time.Second), len(tt.want)); got != tt.want {
				t.Errorf("picks = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBalancerMaxConns(t *testing.T) {
	b := testBalancer(config.BalanceRoundRobin, srv("a", weight(5), maxConns(1)), srv("b"))
	first := pickKeep(b, t0, nil)
	if first == nil || first.addr != "a" {
		t.Fatalf("first pick = %v, want a", first)
	}
	// a is at its cap: smooth WRR would pick it again, max_conns skips it.
	for i := range 3 {
		p := pickKeep(b, t0, nil)
		if p == nil || p.addr != "b" {
			t.Fatalf("pick %d with a at max_conns = %v, want b", i, p)
		}
		b.done(p, t0, false)
	}
	b.done(first, t0, false)
	if p := pickKeep(b, t0, nil); p == nil || p.addr != "a" {
		t.Fatalf("pick after a's request ended = %v, want a", p)
	}
}

func TestBalancerMaxConnsLoneServer(t *testing.T) {
	// Nginx's single-server path ignores max_fails but not max_conns.
	b := testBalancer(config.BalanceRoundRobin, srv("a", maxConns(2)))
	p1, p2 := pickKeep(b, t0, nil), pickKeep(b, t0, nil)
	if p1 == nil || p2 == nil {
		t.Fatal("two picks under max_conns 2 failed")
	}
	if p := pickKeep(b, t0, nil); p != nil {
		t.Fatalf("third pick over max_conns 2 = %s, want no live upstreams", p.addr)
	}
	b.done(p1, t0, false)
	if p := pickKeep(b, t0, nil); p == nil {
		t.Fatal("pick after one request ended = nil, want a")
	}
}

// healthStep is one attempt at t0+at: the server expected (a primary "a"
// with backup "x", so "x" means a was out), then the attempt's outcome.
type healthStep struct {
	at   time.Duration
	want string
	fail bool
}

func TestBalancerPassiveHealth(t *testing.T) {
	s := time.Second
	tests := []struct {
		name    string
		primary config.Server
		steps   []healthStep
	}{
		{"max_fails 1 (default)", srv("a"), []healthStep{
			{0, "a", true},
			{1 * s, "x", false},
			{10 * s, "x", false}, // now - checked == fail_timeout: still failed
			{11 * s, "a", false}, // tried again after fail_timeout
			{12 * s, "a", false}, // and the success reset it
		}},
		{"max_fails 2: two failures", srv("a", maxFails(2)), []healthStep{
			{0, "a", true},
			{1 * s, "a", true},
			{2 * s, "x", false},
			{11 * s, "x", false},
			{12 * s, "a", true}, // retried after fail_timeout and failed again
			{13 * s, "x", false},
			{22 * s, "x", false},
			{23 * s, "a", false},
			{24 * s, "a", true}, // the success reset fails: one failure is not enough
			{25 * s, "a", false},
		}},
		// The counter is not a sliding window: a success resets fails only
		// when accessed < checked, i.e. after a re-check (RR free_peer).
		{"max_fails 2: fail, success, fail", srv("a", maxFails(2)), []healthStep{
			{0, "a", true},
			{1 * s, "a", false},
			{2 * s, "a", true},
			{3 * s, "x", false},
			{12 * s, "x", false},
			{13 * s, "a", false},
			{14 * s, "a", true},
			{15 * s, "a", false},
		}},
		{"max_fails 2: failures apart by more than fail_timeout still add up", srv("a", maxFails(2)), []healthStep{
			{0, "a", true},
			{30 * s, "a", true}, // Nginx: fails is 2 now, the first one was never forgiven
			{31 * s, "x", false},
		}},
		{"max_fails 0: passive health off", srv("a", maxFails(0)), []healthStep{
			{0, "a", true},
			{1 * s, "a", true},
			{2 * s, "a", true},
			{3 * s, "a", false},
		}},
		{"fail_timeout 3s", srv("a", failTimeout(3*s)), []healthStep{
			{0, "a", true},
			{3 * s, "x", false},
			{4 * s, "a", false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBalancer(config.BalanceRoundRobin, tt.primary, srv("x", isBackup, maxFails(0)))
			for _, st := range tt.steps {
				now := t0.Add(st.at)
				p := pickKeep(b, now, nil)
				if p == nil || p.addr != st.want {
					t.Fatalf("t+%v: picked %v, want %s", st.at, p, st.want)
				}
				b.done(p, now, st.fail)
			}
		})
	}
}

func TestBalancerLoneServerIgnoresMaxFails(t *testing.T) {
	b := testBalancer(config.BalanceRoundRobin, srv("a"))
	for i := range 5 {
		now := t0.Add(time.Duration(i) * time.Second)
		p := pickKeep(b, now, nil)
		if p == nil {
			t.Fatalf("pick %d: no live upstreams; a lone server must ignore max_fails", i)
		}
		b.done(p, now, true)
	}
	// With a backup it is no longer alone: max_fails applies.
	b = testBalancer(config.BalanceRoundRobin, srv("a"), srv("x", isBackup))
	p := pickKeep(b, t0, nil)
	b.done(p, t0, true)
	if p := pickKeep(b, t0, nil); p == nil || p.addr != "x" {
		t.Fatalf("after a failed, pick = %v, want backup x", p)
	}
	// A lone server that is down is never picked.
	b = testBalancer(config.BalanceRoundRobin, srv("a", isDown))
	if p := pickKeep(b, t0, nil); p != nil {
		t.Fatalf("lone down server picked")
	}
}

func TestBalancerAllFailedNoLiveUpstreams(t *testing.T) {
	b := testBalancer(config.BalanceRoundRobin, srv("a"), srv("b"))
	for range 2 {
		p := pickKeep(b, t0, nil)
		b.done(p, t0, true)
	}
	if p := pickKeep(b, t0.Add(time.Second), nil); p != nil {
		t.Fatalf("both failed, picked %s; want no live upstreams", p.addr)
	}
}

func TestBalancerTriedExcluded(t *testing.T) {
	b := testBalancer(config.BalanceRoundRobin, srv("a", weight(5)), srv("b"), srv("x", isBackup))
	a := pickKeep(b, t0, nil)
	if a.addr != "a" {
		t.Fatalf("first pick %s, want a", a.addr)
	}
	bb := pickKeep(b, t0, []*peer{a})
	if bb == nil || bb.addr != "b" {
		t.Fatalf("pick with a tried = %v, want b", bb)
	}
	x := pickKeep(b, t0, []*peer{a, bb})
	if x == nil || x.addr != "x" {
		t.Fatalf("pick with both primaries tried = %v, want backup x", x)
	}
	if p := pickKeep(b, t0, []*peer{a, bb, x}); p != nil {
		t.Fatalf("pick with every server tried = %s, want nil", p.addr)
	}
	lc := testBalancer(config.BalanceLeastConn, srv("a"), srv("b"))
	first := pickKeep(lc, t0, nil)
	lc.done(first, t0, false)
	for range 3 {
		if p := pickKeep(lc, t0, []*peer{first}); p == nil || p == first {
			t.Fatalf("least_conn pick with %s tried = %v", first.addr, p)
		} else {
			lc.done(p, t0, false)
		}
	}
}

func TestBalancerLeastConn(t *testing.T) {
	b := testBalancer(config.BalanceLeastConn, srv("a", weight(2)), srv("b"), srv("c"))
	held := map[string]int{}
	pick := func() *peer {
		t.Helper()
		p := pickKeep(b, t0, nil)
		if p == nil {
			t.Fatal("no live upstreams")
		}
		held[p.addr]++
		return p
	}
	// All idle: a three-way tie, broken by smooth WRR (a has weight 2).
	var got strings.Builder
	var ps []*peer
	for range 3 {
		p := pick()
		ps = append(ps, p)
		got.WriteString(p.addr)
	}
	// 1st: tie a,b,c → WRR picks a. 2nd: a has 1/2, b,c 0 → tie b,c → b.
	// 3rd: c has 0 → c.
	if got.String() != "abc" {
		t.Fatalf("first picks = %q, want abc", got.String())
	}
	// Now a 1/2, b 1/1, c 1/1: a has the fewest relative to its weight.
	if p := pick(); p.addr != "a" {
		t.Fatalf("4th pick = %s, want a (1 of weight 2)", p.addr)
	}
	// a 2/2, b 1/1, c 1/1: a three-way tie again.
	for _, p := range ps {
		if p.addr == "b" {
			b.done(p, t0, false) // b 0/1: fewest
		}
	}
	if p := pick(); p.addr != "b" {
		t.Fatalf("pick after b finished = %s, want b", p.addr)
	}
}

func TestBalancerLeastConnTieIsWeighted(t *testing.T) {
	// Every request ends before the next: always a tie, so the sequence is
	// exactly smooth WRR's.
	b := testBalancer(config.BalanceLeastConn, srv("a", weight(5)), srv("b"), srv("c"))
	if got, want := pickSeq(b, t0, 14), "aabacaaaabacaa"; got != want {
		t.Errorf("picks = %q, want %q", got, want)
	}
}

func TestBalancerLeastConnBackupAndMaxConns(t *testing.T) {
	b := testBalancer(config.BalanceLeastConn, srv("a", maxConns(1)), srv("x", isBackup))
	a := pickKeep(b, t0, nil)
	if a == nil || a.addr != "a" {
		t.Fatalf("first pick = %v, want a", a)
	}
	if p := pickKeep(b, t0, nil); p == nil || p.addr != "x" {
		t.Fatalf("pick with a at max_conns = %v, want backup x", p)
	}
}

func TestBalancerFailTimeoutWholeSeconds(t *testing.T) {
	b := testBalancer(config.BalanceRoundRobin, srv("a"), srv("x", isBackup))
	failAt := t0.Add(100 * time.Millisecond) // ngx_time() = t0
	p := pickKeep(b, failAt, nil)
	b.done(p, failAt, true)
	// At t0+10.5s ngx_time() - checked = 10 <= fail_timeout: still failed.
	if p := pickKeep(b, t0.Add(10500*time.Millisecond), nil); p == nil || p.addr != "x" {
		t.Fatalf("at +10.5s picked %v, want backup x (a failed through second 10)", p)
	}
}

// weightedYAML is one upstream "app" with the given server entries (YAML
// mappings without the leading "- ") and a route for every path.
func weightedYAML(servers ...string) string {
	var sb strings.Builder
	sb.WriteString("upstreams:\n  - name: app\n    servers:\n")
	for _, s := range servers {
		for i, line := range strings.Split(s, "\n") {
			if i == 0 {
				sb.WriteString("      - " + line + "\n")
			} else {
				sb.WriteString("        " + line + "\n")
			}
		}
	}
	sb.WriteString("routes:\n  - path_prefix: /\n    upstream: app\n")
	return sb.String()
}

func TestBalancingEndToEndNginxSequence(t *testing.T) {
	a, b, c := namedBackend(t, "a"), namedBackend(t, "b"), namedBackend(t, "c")
	p := startProxy(t, weightedYAML("addr: "+a.Addr+"\nweight: 5", "addr: "+b.Addr, "addr: "+c.Addr))
	var got strings.Builder
	for range 14 {
		code, body := get(t, p.URL+"/")
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		got.WriteString(body)
	}
	if want := "aabacaa" + "aabacaa"; got.String() != want {
		t.Errorf("backends in order = %q, want Nginx's %q", got.String(), want)
	}
}

func TestBackupEndToEnd(t *testing.T) {
	t.Run("primary healthy", func(t *testing.T) {
		pr, bk := namedBackend(t, "p"), namedBackend(t, "x")
		p := startProxy(t, weightedYAML("addr: "+pr.Addr, "addr: "+bk.Addr+"\nbackup: true"))
		getN(t, p.URL+"/", 10, "p")
		if bk.conns.Load() != 0 {
			t.Errorf("backup got %d connections while the primary was healthy", bk.conns.Load())
		}
	})
	t.Run("primary down", func(t *testing.T) {
		pr, bk := namedBackend(t, "p"), namedBackend(t, "x")
		p := startProxy(t, weightedYAML("addr: "+pr.Addr+"\ndown: true", "addr: "+bk.Addr+"\nbackup: true"))
		getN(t, p.URL+"/", 5, "x")
		if pr.conns.Load() != 0 {
			t.Errorf("down primary got %d connections", pr.conns.Load())
		}
	})
	t.Run("primary refusing", func(t *testing.T) {
		dead, bk := refusingAddr(t), namedBackend(t, "x")
		p := startProxy(t, weightedYAML("addr: "+dead, "addr: "+bk.Addr+"\nbackup: true"))
		getN(t, p.URL+"/first", 1, "x")
		getN(t, p.URL+"/second", 1, "x")
		seen := map[string]bool{}
		for _, e := range logEntries(t, p) {
			seen[e["path"].(string)] = true
			switch e["path"] {
			case "/first":
				// Retried on the backup after the refused connect.
				if e["upstream_addr"] != dead+", "+bk.Addr || e["upstream_status"] != "502, 200" ||
					e["upstream_close"] != reasonConnectRefused+", -" {
					t.Errorf("first: upstream_addr %q status %q close %q, want the refused primary then the backup",
						e["upstream_addr"], e["upstream_status"], e["upstream_close"])
				}
			case "/second":
				// The primary is failed for fail_timeout: straight to the backup.
				if e["upstream_addr"] != bk.Addr {
					t.Errorf("second: upstream_addr %q, want only the backup", e["upstream_addr"])
				}
			}
		}
		if !seen["/first"] || !seen["/second"] {
			t.Fatalf("access log lacks the requests:\n%s", p.log.String())
		}
	})
}

// gateBackend answers with its name after the test closes release, and
// reports on entered when a request arrives.
func gateBackend(t testing.TB, name string, entered chan<- string, release <-chan struct{}) *backend {
	return startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- name
		<-release
		io.WriteString(w, name)
	}))
}

func TestMaxConnsEndToEnd(t *testing.T) {
	entered := make(chan string, 2)
	release := make(chan struct{})
	a := gateBackend(t, "a", entered, release)
	b := gateBackend(t, "b", entered, release)
	p := startProxy(t, weightedYAML("addr: "+a.Addr+"\nweight: 5\nmax_conns: 1", "addr: "+b.Addr))
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open) // before the proxy's shutdown, also when the test fails early

	results := make(chan string, 2)
	fetch := func() {
		resp, err := http.Get(p.URL + "/")
		if err != nil {
			results <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		results <- strconv.Itoa(resp.StatusCode) + " " + string(body)
	}
	go fetch()
	if got := awaitSignal(t, entered, "the first request at a backend"); got != "a" {
		t.Fatalf("first request went to %s, want a (weight 5)", got)
	}
	// a is at max_conns 1: smooth WRR would pick it again, the cap skips it.
	go fetch()
	if got := awaitSignal(t, entered, "the second request at a backend"); got != "b" {
		t.Fatalf("second request went to %s while a was at max_conns, want b", got)
	}
	open()
	for range 2 {
		if got := awaitSignal(t, results, "a response"); !strings.HasPrefix(got, "200 ") {
			t.Errorf("response %q, want 200", got)
		}
	}
	if code, body := get(t, p.URL+"/"); code != 200 || body != "a" {
		t.Errorf("after both finished: %d %q, want a again", code, body)
	}
}

// resilientBalancer builds a balancer over servers with the upstream
// settings edit applies (breaker, panic threshold, slow start).
func resilientBalancer(edit func(*config.Upstream), servers ...config.Server) *balancer {
	up := &config.Upstream{Name: "app", Balance: config.BalanceRoundRobin, Servers: servers}
	edit(up)
	return newBalancer(up, func(string) *serverPool { return nil })
}

// quickBreaker opens after two failures in a row and stays open exactly 10s.
func quickBreaker() *config.Breaker {
	return &config.Breaker{Enabled: true, ConsecutiveFailures: 2, Window: config.Duration{Duration: 10 * time.Second},
		OpenDuration: config.Duration{Duration: 10 * time.Second}, HalfOpenRequests: 1, FailureStatuses: []int{503}}
}

func peerNamed(b *balancer, addr string) *peer {
	for _, p := range b.peers() {
		if p.addr == addr {
			return p
		}
	}
	panic("no peer " + addr)
}

// attemptOn runs one attempt as try does: pick, begin, done, report.
func attemptOn(t *testing.T, b *balancer, now time.Time, a attempt) string {
	t.Helper()
	p := pickKeep(b, now, nil)
	switch p {
	case nil:
		return "-"
	case circuitOpen:
		return "503"
	}
	tk := takeTicket(p)
	b.done(p, now, a.reason != "")
	a.addr = p.addr
	p.report(tk, &a)
	return p.addr
}

func TestBalancerPanicThreshold(t *testing.T) {
	four := []config.Server{srv("a"), srv("b"), srv("c"), srv("d")}
	tests := []struct {
		name      string
		threshold int
		unhealthy string
		backup    bool
		want      string
	}{
		{"3 of 4 unhealthy: panic, route to all", 50, "abc", false, "abcdabcd"},
		{"panic off: the survivor only", 0, "abc", false, "dddddddd"},
		{"2 of 4 unhealthy: at the threshold, no panic", 50, "ab", false, "cdcdcdcd"},
		{"all unhealthy: panic", 50, "abcd", false, "abcdabcd"},
		{"all unhealthy, panic off: no live upstreams", 0, "abcd", false, "--------"},
		{"a usable backup comes before panic", 50, "abc", true, "dddddddd"},
		{"all primaries unhealthy with a backup: the backup", 50, "abcd", true, "xxxxxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servers := append([]config.Server(nil), four...)
			if tt.backup {
				servers = append(servers, srv("x", isBackup))
			}
			b := resilientBalancer(func(u *config.Upstream) { u.PanicThreshold = tt.threshold }, servers...)
			for _, r := range tt.unhealthy {
				peerNamed(b, string(r)).guard.health.Store(int32(healthUnhealthy))
			}
			if got := pickSeq(b, t0, len(tt.want)); got != tt.want {
				t.Errorf("picks = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBalancerPanicIgnoresPassiveHealth(t *testing.T) {
	b := resilientBalancer(func(u *config.Upstream) { u.PanicThreshold = 50 }, srv("a"), srv("b"))
	for range 2 {
		p := pickKeep(b, t0, nil)
		b.done(p, t0, true)
	}
	// Both failed: Nginx says no live upstreams; panic routes to both.
	if got := pickSeq(b, t0.Add(time.Second), 4); strings.Count(got, "a") != 2 || strings.Count(got, "b") != 2 {
		t.Errorf("picks with both failed = %q, want a and b alternating", got)
	}
}

func TestBalancerSlowStart(t *testing.T) {
	s := time.Second
	b := resilientBalancer(func(u *config.Upstream) { u.SlowStart.Duration = 10 * s }, srv("a"), srv("b"))
	a := peerNamed(b, "a")
	if w := b.effWeight(a, t0); w != weightScale {
		t.Fatalf("weight before any recovery = %d, want full %d", w, weightScale)
	}
	a.guard.health.Store(int32(healthUnhealthy))
	pickSeq(b, t0, 1) // a seen out
	a.guard.health.Store(int32(healthHealthy))
	back := t0.Add(s)
	pickSeq(b, back, 1) // a seen back: the ramp starts
	for _, st := range []struct {
		at   time.Duration
		want int
	}{{0, 10}, {5 * s, 55}, {9 * s, 91}, {10 * s, 100}, {time.Hour, 100}} {
		if w := b.effWeight(a, back.Add(st.at)); w != st.want {
			t.Errorf("effective weight %v after recovery = %d, want %d", st.at, w, st.want)
		}
	}
	// Smooth WRR over one cycle gives each server exactly its share.
	for _, st := range []struct {
		at     time.Duration
		aPicks int
		cycle  int
	}{{0, 10, 110}, {5 * s, 55, 155}, {10 * s, 100, 200}} {
		got := pickSeq(b, back.Add(st.at), st.cycle)
		if n := strings.Count(got, "a"); n != st.aPicks {
			t.Errorf("%v after recovery: a got %d of %d picks, want %d", st.at, n, st.cycle, st.aPicks)
		}
	}
}

func TestBalancerSlowStartAfterBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resilientBalancer(func(u *config.Upstream) {
			u.Breaker = quickBreaker()
			u.SlowStart.Duration = 20 * time.Second
		}, srv("a", maxFails(0)), srv("b", maxFails(0)))
		a := peerNamed(b, "a")
		for range 4 { // a fails twice (round robin alternates)
			attemptOn(t, b, time.Now(), attempt{reason: reasonResetBeforeHeaders})
		}
		if a.guard.closed() {
			t.Fatal("a's breaker did not open")
		}
		time.Sleep(10*time.Second + time.Millisecond)
		// Half-open: still out for slow start, then the probe closes it.
		for !a.guard.closed() {
			attemptOn(t, b, time.Now(), attempt{status: 200})
		}
		attemptOn(t, b, time.Now(), attempt{status: 200}) // the pick that sees it back
		if w := b.effWeight(a, time.Now()); w != 10 {
			t.Errorf("weight right after the breaker closed = %d, want 10 (a tenth)", w)
		}
		time.Sleep(20 * time.Second)
		if w := b.effWeight(a, time.Now()); w != weightScale {
			t.Errorf("weight after slow_start = %d, want %d", w, weightScale)
		}
	})
}

func TestBalancerBreakerShedsToOtherServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resilientBalancer(func(u *config.Upstream) { u.Breaker = quickBreaker() },
			srv("a", maxFails(0)), srv("b", maxFails(0)))
		a := peerNamed(b, "a")
		fail := attempt{reason: reasonResetBeforeHeaders}
		ok := attempt{status: 200}
		if got := attemptOn(t, b, time.Now(), fail) + attemptOn(t, b, time.Now(), ok) + attemptOn(t, b, time.Now(), fail); got != "aba" {
			t.Fatalf("picks = %q, want aba", got)
		}
		if a.guard.breaker().State() != breaker.StateOpen {
			t.Fatalf("a's breaker = %v after two failures, want open", a.guard.breaker().State())
		}
		var got strings.Builder
		for range 6 {
			got.WriteString(attemptOn(t, b, time.Now(), ok))
		}
		if got.String() != "bbbbbb" {
			t.Errorf("picks while a is open = %q, want only b", got.String())
		}
		if n := a.guard.shed.Load(); n != 6 {
			t.Errorf("shed = %d, want 6", n)
		}
		time.Sleep(10*time.Second + time.Millisecond)
		// Half-open: the first pick of a is its one probe; while the probe
		// is out, a is refused and b takes the rest.
		var probe *peer
		for probe == nil {
			if p := pickKeep(b, time.Now(), nil); p == a {
				probe = p
			} else {
				b.done(p, time.Now(), false)
				p.report(takeTicket(p), &ok)
			}
		}
		tk := takeTicket(probe)
		for range 3 {
			if p := pickKeep(b, time.Now(), nil); p != peerNamed(b, "b") {
				t.Fatalf("pick with a's probe out = %v, want b", p)
			} else {
				b.done(p, time.Now(), false)
				p.report(takeTicket(p), &ok)
			}
		}
		b.done(probe, time.Now(), false)
		probe.report(tk, &ok)
		if st := a.guard.breaker().State(); st != breaker.StateClosed {
			t.Fatalf("after a successful probe a's breaker = %v, want closed", st)
		}
		if got := attemptOn(t, b, time.Now(), ok) + attemptOn(t, b, time.Now(), ok); !strings.Contains(got, "a") {
			t.Errorf("picks after closing = %q, want a back", got)
		}
	})
}

func TestBalancerCircuitOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resilientBalancer(func(u *config.Upstream) { u.Breaker = quickBreaker() }, srv("a"))
		a := peerNamed(b, "a")
		attemptOn(t, b, time.Now(), attempt{status: 503})
		attemptOn(t, b, time.Now(), attempt{status: 503}) // a listed status: failures
		if got := attemptOn(t, b, time.Now(), attempt{status: 200}); got != "503" {
			t.Fatalf("pick with the only breaker open = %q, want circuit open", got)
		}
		if p := pickKeep(b, time.Now(), []*peer{a}); p != nil {
			t.Fatalf("retry pick with the only breaker open = %v, want nil (the last failure answers)", p.addr)
		}
		// Panic ignores health verdicts, never an open breaker: a lone
		// server whose breaker opened is still shed.
		b = resilientBalancer(func(u *config.Upstream) { u.Breaker = quickBreaker(); u.PanicThreshold = 50 }, srv("a"))
		attemptOn(t, b, time.Now(), attempt{reason: reasonConnectRefused})
		attemptOn(t, b, time.Now(), attempt{reason: reasonConnectRefused})
		if got := attemptOn(t, b, time.Now(), attempt{status: 200}); got != "503" {
			t.Fatalf("pick in panic = %q, want circuit open: panic does not override a breaker", got)
		}
	})
}

func TestBalancerExclusionsDoNotTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resilientBalancer(func(u *config.Upstream) { u.Breaker = quickBreaker() }, srv("a", maxFails(0)))
		for _, reason := range []string{reasonCancelledByDS, reasonReusedConnClosed, reasonCancelledByDS, reasonReusedConnClosed} {
			attemptOn(t, b, time.Now(), attempt{reason: reason})
		}
		brk := peerNamed(b, "a").guard.breaker()
		if st, c := brk.State(), brk.Counts(); st != breaker.StateClosed || c.Exclusions != 4 || c.Failures != 0 {
			t.Errorf("breaker %v counts %+v, want closed with 4 exclusions", st, c)
		}
	})
}

func TestReasonOutcome(t *testing.T) {
	for reason, want := range map[string]breaker.Outcome{
		reasonConnectRefused: breaker.ConnectFailure, reasonConnectTimeout: breaker.ConnectFailure,
		reasonResetBeforeHeaders: breaker.ConnectionFailure, reasonResetDuringBody: breaker.ConnectionFailure,
		reasonClosedBeforeHdrs: breaker.ConnectionFailure, reasonHeaderTimeout: breaker.Timeout,
		reasonBodyTimeout: breaker.Timeout, reasonBadResponse: breaker.BadResponse,
		reasonCancelledByDS: breaker.Excluded, reasonReusedConnClosed: breaker.Excluded,
		reasonServerDrained: breaker.Excluded,
	} {
		if got := reasonOutcome(reason); got != want {
			t.Errorf("reasonOutcome(%s) = %v, want %v", reason, got, want)
		}
	}
}

// ticketStash keeps the breaker admissions of test picks until the test
// reports them, as try does in the proxy.
var ticketStash = struct {
	sync.Mutex
	m map[*peer][]breaker.Ticket
}{m: map[*peer][]breaker.Ticket{}}

// pickKeep picks as the proxy does and keeps the ticket for takeTicket.
func pickKeep(b *balancer, now time.Time, tried []*peer) *peer {
	p, tk := b.pick(now, tried)
	if p != nil && p != circuitOpen {
		ticketStash.Lock()
		ticketStash.m[p] = append(ticketStash.m[p], tk)
		ticketStash.Unlock()
	}
	return p
}

// takeTicket returns the last ticket kept for p.
func takeTicket(p *peer) breaker.Ticket {
	ticketStash.Lock()
	defer ticketStash.Unlock()
	ts := ticketStash.m[p]
	if len(ts) == 0 {
		return breaker.Ticket{}
	}
	tk := ts[len(ts)-1]
	ticketStash.m[p] = ts[:len(ts)-1]
	return tk
}
