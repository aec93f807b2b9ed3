package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startLoggedProxy is startProxy with tollgate's operational log captured,
// for the breaker and health transition lines.
func startLoggedProxy(t testing.TB, yaml string) (*testProxy, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	tp, _ := runProxy(t, testConfig(t, yaml), Options{Log: logs.logger()})
	return tp, logs
}

// breakerYAML is one upstream "app" over servers (YAML mapping lines
// without the "- "), passive health off so only the breaker acts, with the
// given upstream-level lines, and a route.
func breakerYAML(upstream string, servers ...string) string {
	var b strings.Builder
	b.WriteString("upstreams:\n  - name: app\n")
	b.WriteString(upstream)
	b.WriteString("    servers:\n")
	for _, s := range servers {
		b.WriteString("      - {" + s + ", max_fails: 0}\n")
	}
	b.WriteString("routes:\n  - path_prefix: /\n    upstream: app\n")
	return b.String()
}

// breakerState reads server addr's breaker from /debug/upstreams.
func breakerState(t testing.TB, p *testProxy, addr string) (state string, counts map[string]int) {
	t.Helper()
	_, body := get(t, p.Admin+"/debug/upstreams")
	var ups []struct {
		Servers []struct {
			Addr    string
			Breaker struct {
				State  string
				Counts map[string]int
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &ups); err != nil {
		t.Fatal(err)
	}
	for _, s := range ups[0].Servers {
		if s.Addr == addr {
			return s.Breaker.State, s.Breaker.Counts
		}
	}
	t.Fatalf("no server %s in /debug/upstreams", addr)
	return "", nil
}

func TestBreakerOpensOnResetsAndShedsToOther(t *testing.T) {
	var resetConns atomic.Int64
	resetter := rawBackend(t, func(c net.Conn) {
		resetConns.Add(1)
		readRequestHead(bufio.NewReader(c))
		c.(*net.TCPConn).SetLinger(0)
	})
	ok := namedBackend(t, "ok")
	p, logs := startLoggedProxy(t, breakerYAML("    breaker: {consecutive_failures: 3, open_duration: 1h}\n",
		"addr: "+resetter, "addr: "+ok.Addr))
	// Every request is answered: a reset before headers goes to ok.
	for i := range 12 {
		if code, body := get(t, p.URL+"/"); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if n := resetConns.Load(); n != 3 {
		t.Errorf("the resetting backend got %d connections, want 3 (then its breaker opened)", n)
	}
	if st, c := breakerState(t, p, resetter); st != "open" {
		t.Errorf("breaker %s counts %v, want open", st, c)
	}
	lines := logs.lines(t, "circuit breaker")
	if len(lines) != 1 {
		t.Fatalf("%d breaker log lines, want 1:\n%s", len(lines), logs.String())
	}
	l := lines[0]
	if l["server"] != resetter || l["upstream"] != "app" || l["from"] != "closed" || l["to"] != "open" ||
		l["why"] != "consecutive_failures" || l["consecutive_failures"] != 3.0 || l["failures"] != 3.0 || l["level"] != "WARN" {
		t.Errorf("breaker line = %v", l)
	}
	m := scrape(t, p)
	for _, want := range []string{
		`tollgate_circuit_breaker_state{server="` + resetter + `",upstream="app"} 2`,
		`tollgate_circuit_breaker_transitions_total{server="` + resetter + `",to="open",upstream="app"} 1`,
		`tollgate_upstream_server_healthy{server="` + resetter + `",upstream="app"} 0`,
		`tollgate_upstream_server_healthy{server="` + ok.Addr + `",upstream="app"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(m, `tollgate_circuit_breaker_shed_total{server="`+resetter+`",upstream="app"}`) ||
		strings.Contains(m, `tollgate_circuit_breaker_shed_total{server="`+resetter+`",upstream="app"} 0`) {
		t.Errorf("no sheds counted for the open breaker")
	}
}

// switchable answers 200 "up" or, while failing is set, 500 "down".
func switchable(t testing.TB) (*backend, *atomic.Bool) {
	var failing atomic.Bool
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(500)
			io.WriteString(w, "down")
			return
		}
		io.WriteString(w, "up")
	}))
	return b, &failing
}

// circuitOpenGet does a GET that tollgate must shed: 503 with the circuit
// open Proxy-Status.
func circuitOpenGet(t testing.TB, p *testProxy) {
	t.Helper()
	resp, err := http.Get(p.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	want := `tollgate; error=destination_unavailable; details="circuit open"`
	if resp.StatusCode != 503 || resp.Header.Get("Proxy-Status") != want {
		t.Fatalf("got %d Proxy-Status %q, want 503 %q", resp.StatusCode, resp.Header.Get("Proxy-Status"), want)
	}
}

func TestBreakerCircuitOpenHalfOpenClose(t *testing.T) {
	b, failing := switchable(t)
	failing.Store(true)
	p, logs := startLoggedProxy(t, breakerYAML(
		"    panic_threshold: 0\n    breaker: {consecutive_failures: 2, failure_statuses: [500], open_duration: 300ms, jitter: 0}\n",
		"addr: "+b.Addr))
	for range 2 { // a listed status counts as a failure; the client gets it
		if code, body := get(t, p.URL+"/"); code != 500 || body != "down" {
			t.Fatalf("%d %q, want the backend's 500", code, body)
		}
	}
	conns := b.conns.Load()
	circuitOpenGet(t, p)
	circuitOpenGet(t, p)
	if b.conns.Load() != conns {
		t.Error("a shed request reached the backend")
	}
	// Still failing when the breaker half-opens: the probe fails, it opens again.
	waitFor(t, "the probe to fail", func() bool {
		code, _ := get(t, p.URL+"/")
		return code == 500
	})
	if st, _ := breakerState(t, p, b.Addr); st != "open" {
		t.Fatalf("after a failed probe the breaker is %s, want open", st)
	}
	failing.Store(false)
	// The next probe succeeds and closes it.
	waitFor(t, "a successful probe", func() bool {
		code, _ := get(t, p.URL+"/")
		return code == 200
	})
	if st, _ := breakerState(t, p, b.Addr); st != "closed" {
		t.Fatalf("after a successful probe the breaker is %s, want closed", st)
	}
	for range 5 {
		if code, body := get(t, p.URL+"/"); code != 200 || body != "up" {
			t.Fatalf("after closing: %d %q", code, body)
		}
	}
	var seq []string
	for _, l := range logs.lines(t, "circuit breaker") {
		seq = append(seq, l["to"].(string)+":"+l["why"].(string))
	}
	want := "open:consecutive_failures half-open:open_duration_elapsed open:probe_failed:bad_status " +
		"half-open:open_duration_elapsed closed:probes_succeeded"
	if got := strings.Join(seq, " "); got != want {
		t.Errorf("transitions:\n%s\nwant:\n%s", got, want)
	}
}

// stallEach reads each request head, reports it on heads and never answers.
func stallEach(t testing.TB) (addr string, heads <-chan struct{}) {
	ch := make(chan struct{}, 16)
	addr = rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readRequestHead(br); err != nil {
			return
		}
		ch <- struct{}{}
		io.Copy(io.Discard, br)
	})
	return addr, ch
}

func TestBreakerClientCancellationsDoNotTrip(t *testing.T) {
	addr, heads := stallEach(t)
	p := startProxy(t, breakerYAML("    panic_threshold: 0\n    breaker: {consecutive_failures: 2, open_duration: 1h}\n", "addr: "+addr))
	for i := range 3 {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /cancel HTTP/1.1\r\nHost: h\r\n\r\n")
		awaitSignal(t, heads, "the request at the backend")
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // the client gives up: tollgate cancels the exchange
		waitFor(t, "the cancellation to be counted", func() bool {
			_, counts := breakerState(t, p, addr)
			return counts["exclusions"] == i+1
		})
	}
	st, counts := breakerState(t, p, addr)
	if st != "closed" || counts["failures"] != 0 {
		t.Errorf("after 3 client cancellations: breaker %s counts %v, want closed without failures", st, counts)
	}
}

func TestBreakerSlowCallsTrip(t *testing.T) {
	slow := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(60 * time.Millisecond)
		io.WriteString(w, "slow")
	}))
	fast := namedBackend(t, "fast")
	p, logs := startLoggedProxy(t, breakerYAML(
		"    breaker: {consecutive_failures: 0, failure_ratio: 0, min_requests: 3, slow_call_duration: 50ms, slow_call_ratio: 0.5, open_duration: 1h}\n",
		"addr: "+slow.Addr, "addr: "+fast.Addr))
	// Slow calls succeed for the client; the third one trips the breaker.
	for range 6 {
		if code, _ := get(t, p.URL+"/"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if st, c := breakerState(t, p, slow.Addr); st != "open" {
		t.Fatalf("slow server's breaker %s counts %v, want open", st, c)
	}
	lines := logs.lines(t, "circuit breaker")
	if len(lines) != 1 || lines[0]["why"] != "slow_call_ratio" || lines[0]["slow_calls"] != 3.0 {
		t.Fatalf("breaker lines %v, want one trip for slow_call_ratio after 3 slow calls", lines)
	}
	if st, _ := breakerState(t, p, fast.Addr); st != "closed" {
		t.Errorf("fast server's breaker %s", st)
	}
	for range 4 {
		if _, body := get(t, p.URL+"/"); body != "fast" {
			t.Fatalf("request reached %q with the slow server's breaker open", body)
		}
	}
}

func TestBreakerOpenDrainsIdleConns(t *testing.T) {
	b, failing := switchable(t)
	p := startProxy(t, breakerYAML("    panic_threshold: 0\n    breaker: {consecutive_failures: 2, failure_statuses: [500], open_duration: 1h}\n",
		"addr: "+b.Addr))
	get(t, p.URL+"/") // leaves an idle pooled connection
	failing.Store(true)
	get(t, p.URL+"/")
	get(t, p.URL+"/") // opens the breaker: the idle connection is drained
	waitFor(t, "the drained connection's close record", func() bool {
		_, body := get(t, p.Admin+"/debug/closes?reason="+reasonServerDrained)
		return strings.Contains(body, b.Addr)
	})
}
