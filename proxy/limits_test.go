package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// limitProxy is a running tollgate whose operational log (slog JSON, debug
// level and up) is captured as well as its access log.
type limitProxy struct {
	*testProxy
	oplog *syncBuffer
}

func startLimitProxy(t testing.TB, yaml string) *limitProxy {
	t.Helper()
	oplog := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(oplog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tp, _ := runProxy(t, testConfig(t, yaml), Options{Log: logger})
	return &limitProxy{testProxy: tp, oplog: oplog}
}

// pathBackend answers 200 "ok" and records the paths it served, in order.
func pathBackend(t testing.TB) (addr string, seen func() []string) {
	var mu sync.Mutex
	var paths []string
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	return b.Addr, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(paths)
	}
}

// limitYAML is a config with the given limit_req_zones list (YAML items)
// and one catch-all route with the given limit settings.
func limitYAML(backend, zones, route string) string {
	return fmt.Sprintf("upstreams:\n  - name: app\n    servers:\n      - addr: %s\n"+
		"limit_req_zones:\n%s"+
		"routes:\n  - path_prefix: /\n    upstream: app\n%s", backend, zones, route)
}

// zoneYAML is one limit_req_zones item.
func zoneYAML(name, key, size, rate string) string {
	return fmt.Sprintf("  - name: %s\n    key: %q\n    size: %s\n    rate: %s\n", name, key, size, rate)
}

// limitResult is one response as a limit test looks at it.
type limitResult struct {
	status  int
	header  http.Header
	elapsed time.Duration
}

// send writes one GET with extra header lines on rc and reads the answer.
func send(t testing.TB, rc *rawClient, path string, extra ...string) limitResult {
	t.Helper()
	start := time.Now()
	rc.send(t, "GET "+path+" HTTP/1.1\r\nHost: limits.test\r\n"+strings.Join(extra, "")+"\r\n")
	resp, _ := rc.response(t, "GET")
	return limitResult{status: resp.StatusCode, header: resp.Header, elapsed: time.Since(start)}
}

// limitLine is the part of an access log line limit tests read.
type limitLine struct {
	Path            string `json:"path"`
	Status          int    `json:"status"`
	LimitReqStatus  string `json:"limit_req_status"`
	DownstreamClose string `json:"downstream_close"`
}

// limitLog returns the access log lines in order, once no request is in
// flight.
func (p *limitProxy) limitLog(t testing.TB) []limitLine {
	t.Helper()
	p.settle(t)
	var out []limitLine
	for line := range strings.SplitSeq(p.log.String(), "\n") {
		if line == "" {
			continue
		}
		var l limitLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("access log line is not JSON: %v\n%s", err, line)
		}
		out = append(out, l)
	}
	return out
}

// limitStatuses returns each logged request's limit_req_status, in order.
func (p *limitProxy) limitStatuses(t testing.TB) []string {
	var out []string
	for _, l := range p.limitLog(t) {
		out = append(out, l.LimitReqStatus)
	}
	return out
}

// opLines returns the operational log lines whose message contains substr.
func (p *limitProxy) opLines(substr string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(p.oplog.String(), "\n") {
		m := map[string]any{}
		if json.Unmarshal([]byte(line), &m) == nil && strings.Contains(fmt.Sprint(m["msg"]), substr) {
			out = append(out, m)
		}
	}
	return out
}

// metric returns the value of one series in /metrics, or "" when absent.
func (p *limitProxy) metric(t testing.TB, series string) string {
	t.Helper()
	_, body := get(t, p.Admin+"/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

func statuses(rs []limitResult) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.status
	}
	return out
}

// At 30r/m (one request per 2 s) with burst=3 nodelay, a burst passes
// exactly 4 (burst+1) at once and rejects the rest with Retry-After, the
// RateLimit fields and Proxy-Status; rejected requests never reach the
// backend.
func TestLimitBurstNodelayReject(t *testing.T) {
	addr, seen := pathBackend(t)
	p := startLimitProxy(t, limitYAML(addr, zoneYAML("perip", "$binary_remote_addr", "1m", "30r/m"),
		"    limit_req:\n      - zone: perip\n        burst: 3\n        nodelay: true\n"))
	rc := dialRaw(t, p.Addr)
	var got []limitResult
	for i := range 6 {
		got = append(got, send(t, rc, fmt.Sprintf("/r%d", i)))
	}
	if want := []int{200, 200, 200, 200, 503, 503}; !slices.Equal(statuses(got), want) {
		t.Fatalf("statuses %v; want %v", statuses(got), want)
	}
	for _, r := range got[:4] {
		if r.elapsed > time.Second {
			t.Errorf("a nodelay request took %v", r.elapsed)
		}
		if r.header.Get("Retry-After") != "" || r.header.Get("RateLimit") != "" {
			t.Errorf("a passed request carries limit headers: %v", r.header)
		}
	}
	// The 5th request comes at excess ≈ 4000 against burst 3000: 1000
	// thousandths above, 2 s at 500 thousandths a second (less the few ms
	// since the first request, rounded up to whole seconds).
	h := got[4].header
	for name, want := range map[string]string{
		"Retry-After":      "2",
		"RateLimit-Policy": `"perip";q=30;w=60`,
		"RateLimit":        `"perip";r=0;t=2`,
		"Proxy-Status":     `tollgate; error=http_request_denied; details="limit_req zone=perip"`,
		"Cache-Control":    "no-store",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q; want %q", name, got, want)
		}
	}
	if paths := seen(); !slices.Equal(paths, []string{"/r0", "/r1", "/r2", "/r3"}) {
		t.Errorf("backend saw %v; want only the 4 passed requests", paths)
	}
	if st := p.limitStatuses(t); !slices.Equal(st, []string{"PASSED", "PASSED", "PASSED", "PASSED", "REJECTED", "REJECTED"}) {
		t.Errorf("limit_req_status %v", st)
	}
	if v := p.metric(t, `tollgate_limit_req_total{status="REJECTED",zone="perip"}`); v != "2" {
		t.Errorf("tollgate_limit_req_total REJECTED = %q; want 2", v)
	}
	if v := p.metric(t, `tollgate_limit_req_total{status="PASSED",zone="perip"}`); v != "4" {
		t.Errorf("tollgate_limit_req_total PASSED = %q; want 4", v)
	}
	if v := p.metric(t, `tollgate_limit_req_zone_keys{zone="perip"}`); v != "1" {
		t.Errorf("tollgate_limit_req_zone_keys = %q; want 1", v)
	}
	if v := p.metric(t, `tollgate_limit_req_zone_evictions_total{zone="perip"}`); v != "0" {
		t.Errorf("tollgate_limit_req_zone_evictions_total = %q; want 0", v)
	}
	if v := p.metric(t, `tollgate_limit_req_zone_capacity{zone="perip"}`); v == "" || v == "0" {
		t.Errorf("tollgate_limit_req_zone_capacity = %q", v)
	}
	// One log line for the two rejections: the second falls within a
	// second of the first.
	lines := p.opLines("limiting requests")
	if len(lines) != 1 {
		t.Fatalf("%d 'limiting requests' lines; want 1 (one per zone per second):\n%s", len(lines), p.oplog.String())
	}
	// Excess 4000 less what drained in the few ms the burst took.
	re := regexp.MustCompile(`^limiting requests, excess: (3\.9\d\d|4\.000) by zone "perip"$`)
	if msg := fmt.Sprint(lines[0]["msg"]); !re.MatchString(msg) || lines[0]["level"] != "ERROR" {
		t.Errorf("log line %v; want Nginx's `limiting requests, excess: 4.000 by zone \"perip\"` at error", lines[0])
	}
}

func TestLimitCustomStatus(t *testing.T) {
	addr, _ := pathBackend(t)
	p := startLimitProxy(t, limitYAML(addr, zoneYAML("z", "$binary_remote_addr", "32k", "6r/m"),
		"    limit_req:\n      - zone: z\n    limit_req_status: 429\n    limit_req_log_level: warn\n"))
	rc := dialRaw(t, p.Addr)
	first, second := send(t, rc, "/a"), send(t, rc, "/b")
	if first.status != 200 || second.status != 429 {
		t.Fatalf("statuses %d %d; want 200 429", first.status, second.status)
	}
	// 6r/m: 100 thousandths a second; excess 1000 above burst 0 → 10 s.
	if ra, rl := second.header.Get("Retry-After"), second.header.Get("RateLimit"); ra != "10" || rl != `"z";r=0;t=10` {
		t.Errorf("Retry-After %q, RateLimit %q; want 10 and \"z\";r=0;t=10", ra, rl)
	}
	if pol := second.header.Get("RateLimit-Policy"); pol != `"z";q=6;w=60` {
		t.Errorf("RateLimit-Policy %q", pol)
	}
	if lines := p.opLines("limiting requests"); len(lines) != 1 || lines[0]["level"] != "WARN" {
		t.Errorf("limit_req_log_level warn: got %v", lines)
	}
}

// Dry run accounts as usual and logs what it would have done, but passes
// every request at once, without limit headers.
func TestLimitDryRun(t *testing.T) {
	addr, seen := pathBackend(t)
	p := startLimitProxy(t, limitYAML(addr, zoneYAML("z", "$binary_remote_addr", "32k", "30r/m"),
		"    limit_req:\n      - zone: z\n        burst: 1\n    limit_req_dry_run: true\n"))
	rc := dialRaw(t, p.Addr)
	for i := range 4 {
		r := send(t, rc, fmt.Sprintf("/d%d", i))
		if r.status != 200 || r.elapsed > time.Second {
			t.Errorf("request %d: %d after %v; want 200 at once", i, r.status, r.elapsed)
		}
		for _, h := range []string{"Retry-After", "RateLimit", "RateLimit-Policy", "Proxy-Status"} {
			if v := r.header.Get(h); v != "" {
				t.Errorf("request %d: dry run sent %s: %q", i, h, v)
			}
		}
	}
	if n := len(seen()); n != 4 {
		t.Errorf("backend saw %d requests; want 4", n)
	}
	want := []string{"PASSED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN", "REJECTED_DRY_RUN"}
	if st := p.limitStatuses(t); !slices.Equal(st, want) {
		t.Errorf("limit_req_status %v; want %v", st, want)
	}
	re := regexp.MustCompile(`^delaying request, dry run, excess: (0\.9\d\d|1\.000), by zone "z"$`)
	if lines := p.opLines("dry run"); len(lines) != 1 || !re.MatchString(fmt.Sprint(lines[0]["msg"])) {
		t.Errorf("dry-run log lines %v; want one delaying line (the rejection falls in the same second)", lines)
	}
}

// Two limits: the first only checked, the last charged; a request one of
// them rejects charges neither, so the per-IP zone still has room later.
func TestLimitTwoLimits(t *testing.T) {
	addr, _ := pathBackend(t)
	zones := zoneYAML("perip", "$binary_remote_addr", "32k", "30r/m") + zoneYAML("perkey", "$http_x_api_key", "32k", "30r/m")
	p := startLimitProxy(t, limitYAML(addr, zones,
		"    limit_req:\n      - zone: perip\n        burst: 2\n        nodelay: true\n      - zone: perkey\n        nodelay: true\n"))
	rc := dialRaw(t, p.Addr)
	var got []limitResult
	for i, key := range []string{"k1", "k1", "k2", "k3", "k4"} {
		got = append(got, send(t, rc, fmt.Sprintf("/t%d", i), "X-Api-Key: "+key+"\r\n"))
	}
	if want := []int{200, 503, 200, 200, 503}; !slices.Equal(statuses(got), want) {
		t.Fatalf("statuses %v; want %v (a rejected request must charge no zone)", statuses(got), want)
	}
	for i, zone := range map[int]string{1: "perkey", 4: "perip"} {
		want := `tollgate; error=http_request_denied; details="limit_req zone=` + zone + `"`
		if ps := got[i].header.Get("Proxy-Status"); ps != want {
			t.Errorf("request %d Proxy-Status %q; want %q", i, ps, want)
		}
		if rl := got[i].header.Get("RateLimit"); !strings.HasPrefix(rl, `"`+zone+`";r=0;t=`) {
			t.Errorf("request %d RateLimit %q; want the rejecting zone %s", i, rl, zone)
		}
	}
}

// A key that evaluates empty skips its limit: no X-Api-Key, no limit, and
// no $limit_req_status.
func TestLimitEmptyKeySkips(t *testing.T) {
	addr, _ := pathBackend(t)
	p := startLimitProxy(t, limitYAML(addr, zoneYAML("key", "$http_x_api_key", "32k", "30r/m"),
		"    limit_req:\n      - zone: key\n"))
	rc := dialRaw(t, p.Addr)
	for i := range 3 {
		if r := send(t, rc, fmt.Sprintf("/none%d", i)); r.status != 200 {
			t.Fatalf("request without X-Api-Key: %d; want 200", r.status)
		}
	}
	a, b := send(t, rc, "/k1", "X-Api-Key: secret\r\n"), send(t, rc, "/k2", "x-api-key: secret\r\n")
	c := send(t, rc, "/k3", "X-Api-Key: other\r\n")
	if a.status != 200 || b.status != 503 || c.status != 200 {
		t.Errorf("with $http_x_api_key: %d %d %d; want 200 503 200", a.status, b.status, c.status)
	}
	want := []string{"", "", "", "PASSED", "REJECTED", "PASSED"}
	if st := p.limitStatuses(t); !slices.Equal(st, want) {
		t.Errorf("limit_req_status %q; want %q", st, want)
	}
}

// Behind a trusted loopback peer, X-Forwarded-For names the client: two
// clients sharing the peer get their own buckets, and the zone holds their
// addresses (checked through /debug/limits).
func TestLimitRealIPKeys(t *testing.T) {
	addr, _ := pathBackend(t)
	yaml := "real_ip:\n  set_real_ip_from: [127.0.0.1]\n  real_ip_header: X-Forwarded-For\n" +
		limitYAML(addr, zoneYAML("perip", "$binary_remote_addr", "32k", "30r/m"), "    limit_req:\n      - zone: perip\n")
	p := startLimitProxy(t, yaml)
	rc := dialRaw(t, p.Addr)
	xff := func(v string) string { return "X-Forwarded-For: " + v + "\r\n" }
	got := []limitResult{
		send(t, rc, "/a1", xff("192.0.2.1")),
		send(t, rc, "/b1", xff("192.0.2.2")),
		send(t, rc, "/a2", xff("192.0.2.1")),
		send(t, rc, "/a3", xff("203.0.113.9, 192.0.2.1")), // rightmost wins: 192.0.2.1
		send(t, rc, "/b2", xff("192.0.2.2")),
		send(t, rc, "/c1", xff("192.0.2.3")),
	}
	if want := []int{200, 200, 503, 503, 503, 200}; !slices.Equal(statuses(got), want) {
		t.Errorf("statuses %v; want %v", statuses(got), want)
	}
	var zones []zoneView
	_, body := get(t, p.Admin+"/debug/limits")
	if err := json.Unmarshal([]byte(body), &zones); err != nil || len(zones) != 1 {
		t.Fatalf("/debug/limits: %v\n%s", err, body)
	}
	var keys []string
	for _, k := range zones[0].Top {
		keys = append(keys, k.Key)
	}
	slices.Sort(keys)
	if want := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}; !slices.Equal(keys, want) {
		t.Errorf("zone keys %v; want %v (never the peer 127.0.0.1)", keys, want)
	}
}

// GET /debug/limits shows each zone's settings, occupancy and top keys.
func TestLimitDebugEndpoint(t *testing.T) {
	addr, _ := pathBackend(t)
	zones := zoneYAML("a", "$binary_remote_addr", "64k", "4r/m") + zoneYAML("b", "$http_x_api_key", "1m", "10r/s")
	p := startLimitProxy(t, limitYAML(addr, zones,
		"    limit_req:\n      - zone: a\n        burst: 5\n        nodelay: true\n      - zone: b\n        burst: 9\n        nodelay: true\n"))
	rc := dialRaw(t, p.Addr)
	for range 3 {
		send(t, rc, "/", "X-Api-Key: alpha\r\n")
	}
	send(t, rc, "/", "X-Api-Key: beta\r\n")
	_, body := get(t, p.Admin+"/debug/limits?top=1")
	var got []zoneView
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("/debug/limits: %v\n%s", err, body)
	}
	if len(got) != 2 {
		t.Fatalf("%d zones; want 2:\n%s", len(got), body)
	}
	a, b := got[0], got[1]
	if a.Name != "a" || a.Key != "$binary_remote_addr" || a.Size != 64<<10 || a.Rate != "4r/m" ||
		a.Len != 1 || a.Capacity <= 0 || a.Evictions != 0 {
		t.Errorf("zone a: %+v", a)
	}
	// 4 requests at 66 thousandths a second, within ms: excess ≈ 3.
	if len(a.Top) != 1 || a.Top[0].Key != "127.0.0.1" || a.Top[0].Excess < 2.9 || a.Top[0].Excess > 3 {
		t.Errorf("zone a top %+v; want 127.0.0.1 with excess ≈ 3", a.Top)
	}
	if b.Name != "b" || b.Rate != "10r/s" || b.Len != 2 || len(b.Top) != 1 || b.Top[0].Key != "alpha" {
		t.Errorf("zone b: %+v; want 2 keys, alpha on top", b)
	}
	if _, body := get(t, p.Admin+"/debug/limits?top=x"); !strings.Contains(body, "top") {
		t.Errorf("?top=x: %q", body)
	}
}

// A delayed request passes after about the computed delay: at 10r/s with
// burst=5, three requests at once complete about 0, 100 and 200 ms apart.
func TestLimitDelayedPasses(t *testing.T) {
	addr, seen := pathBackend(t)
	p := startLimitProxy(t, limitYAML(addr, zoneYAML("z", "$binary_remote_addr", "32k", "10r/s"),
		"    limit_req:\n      - zone: z\n        burst: 5\n"))
	conns := []*rawClient{dialRaw(t, p.Addr), dialRaw(t, p.Addr), dialRaw(t, p.Addr)}
	start := time.Now()
	done := make(chan time.Duration, len(conns))
	for i, rc := range conns {
		rc.send(t, fmt.Sprintf("GET /x%d HTTP/1.1\r\nHost: limits.test\r\n\r\n", i))
	}
	for _, rc := range conns {
		go func() {
			resp, err := rc.head("GET")
			if err != nil || resp.StatusCode != 200 {
				done <- -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			done <- time.Since(start)
		}()
	}
	var at []time.Duration
	for range conns {
		at = append(at, <-done)
	}
	slices.Sort(at)
	// Nginx's delay is (excess*1000/rate) ms, floored; arrivals are ms
	// apart, so the 2nd waits a little under 100 ms, the 3rd under 200.
	for i, lo := range []time.Duration{0, 70 * time.Millisecond, 170 * time.Millisecond} {
		if at[i] < lo || at[i] > lo+700*time.Millisecond {
			t.Errorf("completion %d at %v; want about %v (completions %v)", i, at[i], lo, at)
		}
	}
	if n := len(seen()); n != 3 {
		t.Errorf("backend saw %d requests; want 3", n)
	}
	st := p.limitStatuses(t)
	slices.Sort(st)
	if want := []string{"DELAYED", "DELAYED", "PASSED"}; !slices.Equal(st, want) {
		t.Errorf("limit_req_status %v; want %v", st, want)
	}
	if lines := p.opLines("delaying request"); len(lines) != 1 || lines[0]["level"] != "WARN" {
		t.Errorf("delay log lines %v; want one at warn (one below error)", lines)
	}
}

// A client that leaves during its delay: the backend never sees the
// request, the access log says 499, and the connection closes as
// ds_client_abort_before_response, noticed within the poll interval.
func TestLimitClientLeavesDuringDelay(t *testing.T) {
	addr, seen := pathBackend(t)
	p := startLimitProxy(t, limitYAML(addr, zoneYAML("z", "$binary_remote_addr", "32k", "1r/s"),
		"    limit_req:\n      - zone: z\n        burst: 5\n"))
	rc := dialRaw(t, p.Addr)
	if r := send(t, rc, "/first"); r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	quitter := dialRaw(t, p.Addr)
	quitter.send(t, "GET /delayed HTTP/1.1\r\nHost: limits.test\r\n\r\n") // waits ~1 s
	time.Sleep(150 * time.Millisecond)
	left := time.Now()
	quitter.c.Close()
	line := p.accessFor(t, "/delayed")
	if noticed := time.Since(left); noticed > 700*time.Millisecond {
		t.Errorf("the client's leaving was noticed after %v; want within the 100 ms poll (plus slack)", noticed)
	}
	if line.Status != statusClientClosed || line.DownstreamClose != reasonDSAbortBeforeResp {
		t.Errorf("access log %+v; want 499 and %s", line, reasonDSAbortBeforeResp)
	}
	time.Sleep(1200 * time.Millisecond) // past the delay it would have had
	if paths := seen(); !slices.Equal(paths, []string{"/first"}) {
		t.Errorf("backend saw %v; want only /first", paths)
	}
	for _, l := range p.limitLog(t) {
		if l.Path == "/delayed" && l.LimitReqStatus != "DELAYED" {
			t.Errorf("limit_req_status of the dropped request %q; want DELAYED", l.LimitReqStatus)
		}
	}
}

// A zone keeps its state across a reload when name, key and size stay,
// taking a new rate; a new size or key starts it afresh. A key tollgate
// cannot compile is refused by New, by Reload (keeping the running config)
// and by CheckConfig.
func TestLimitZoneReload(t *testing.T) {
	addr, _ := pathBackend(t)
	route := "    limit_req:\n      - zone: z\n"
	cfgWith := func(key, size, rate string) string {
		return limitYAML(addr, zoneYAML("z", key, size, rate), route)
	}
	p := startLimitProxy(t, cfgWith("$binary_remote_addr", "32k", "6r/m"))
	rc := dialRaw(t, p.Addr)
	expect := func(step string, want int) {
		t.Helper()
		if r := send(t, rc, "/"+step); r.status != want {
			t.Errorf("%s: %d; want %d", step, r.status, want)
		}
	}
	expect("first", 200)
	expect("second", 503)
	zoneBefore := p.rt.Load().zones[0]

	if err := p.Reload(testConfig(t, cfgWith("$binary_remote_addr", "32k", "3r/m"))); err != nil {
		t.Fatal(err)
	}
	if z := p.rt.Load().zones[0]; z != zoneBefore || z.Rate() != 50 {
		t.Errorf("same name, key, size: zone replaced or rate %d not taken", z.Rate())
	}
	expect("after-rate-reload", 503)

	if err := p.Reload(testConfig(t, cfgWith("$binary_remote_addr", "64k", "3r/m"))); err != nil {
		t.Fatal(err)
	}
	expect("after-size-reload", 200)
	expect("after-size-reload-2", 503)
	if err := p.Reload(testConfig(t, cfgWith("$remote_addr", "64k", "3r/m"))); err != nil {
		t.Fatal(err)
	}
	expect("after-key-reload", 200)

	bad := testConfig(t, cfgWith("$remote_user", "64k", "3r/m"))
	err := p.Reload(bad)
	if err == nil || !strings.Contains(err.Error(), "limit_req_zones[0].key") || !strings.Contains(err.Error(), "$remote_user") {
		t.Errorf("Reload with an unknown key variable: %v; want a config error at limit_req_zones[0].key", err)
	}
	if p.rt.Load().cfg == bad {
		t.Error("a refused reload was applied")
	}
	expect("after-bad-reload", 503)
	if v := p.metric(t, `tollgate_config_reloads_total{result="error"}`); v != "1" {
		t.Errorf("failed reloads counted %q; want 1", v)
	}
	if _, err := New(bad, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}); err == nil {
		t.Error("New accepted an unknown key variable")
	}
	var ce *config.Errors
	if err := CheckConfig(bad); !errors.As(err, &ce) || len(ce.List) != 1 || ce.List[0].Path != "limit_req_zones[0].key" {
		t.Errorf("CheckConfig: %v; want one config error at limit_req_zones[0].key", err)
	}
}

// Without real_ip, a zone keyed by the client address that sees one key
// make most requests warns once that every client shares the edge's
// bucket; with real_ip configured it stays quiet.
func TestLimitSharedKeyWarning(t *testing.T) {
	addr, _ := pathBackend(t)
	body := limitYAML(addr, zoneYAML("perip", "$binary_remote_addr", "32k", "1000r/s"),
		"    limit_req:\n      - zone: perip\n        burst: 1000\n        nodelay: true\n")
	for _, tt := range []struct {
		name   string
		realIP string
		want   int
	}{
		{"no real_ip", "", 1},
		{"real_ip", "real_ip:\n  set_real_ip_from: [10.0.0.0/8]\n", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startLimitProxy(t, tt.realIP+body)
			rc := dialRaw(t, p.Addr)
			for i := range sharedKeyMin + 20 {
				if r := send(t, rc, fmt.Sprintf("/s%d", i)); r.status != 200 {
					t.Fatalf("request %d: %d", i, r.status)
				}
			}
			lines := p.opLines("real_ip is not configured")
			if len(lines) != tt.want {
				t.Fatalf("%d shared-key warnings; want %d:\n%s", len(lines), tt.want, p.oplog.String())
			}
			if tt.want > 0 && (lines[0]["level"] != "WARN" || lines[0]["key"] != "127.0.0.1") {
				t.Errorf("warning %v; want level WARN naming key 127.0.0.1", lines[0])
			}
			if v := p.metric(t, `tollgate_limit_req_shared_key_warnings_total{zone="perip"}`); v != fmt.Sprint(tt.want) {
				t.Errorf("tollgate_limit_req_shared_key_warnings_total = %q; want %d", v, tt.want)
			}
		})
	}
}
