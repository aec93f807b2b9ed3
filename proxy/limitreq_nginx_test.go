package proxy

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The limit_req differential test: the same zones and the same request
// schedule go to a real Nginx and to tollgate, each scenario from its own
// client address (X-Forwarded-For from the trusted loopback peer, for
// both), and every request must come out the same: status, Nginx's
// $limit_req_status (an add_header on Nginx, the access log on tollgate),
// and, when delayed, the delay within ±25 ms.
//
// Following specs/nginx-semantics.md ("Testing against Nginx"): connections
// are opened before a burst, a burst is written in one loop (1 ms apart, so
// that the order of arrival is defined on both sides), and later arrivals
// sit at half-interval points, never exactly k/rate after an accepted
// request.

// lrZone is one limit_req_zone of a scenario; its name is the scenario's
// name plus suffix.
type lrZone struct{ suffix, key, rate string }

// lrLimit is one limit_req of a scenario's location.
type lrLimit struct {
	zone         string // suffix of the zone
	burst, delay int
	nodelay      bool
}

// lrReq is one request: the client address it claims and an extra header
// line ("" for none).
type lrReq struct{ ip, header string }

// lrPhase is a burst of requests written at offset at from the start.
type lrPhase struct {
	at   time.Duration
	reqs []lrReq
}

type lrScenario struct {
	name   string
	zones  []lrZone
	limits []lrLimit
	status int // limit_req_status; 0: the default
	dryRun bool
	// gap separates the requests of a burst; 0: 1 ms. A scenario whose
	// outcome depends on the order of different clients' requests wants a
	// wider one, so that a scheduling hiccup cannot swap two.
	gap    time.Duration
	phases []lrPhase
	// want is Nginx's $limit_req_status per request in sending order ("-"
	// for unset), to check the scenario does what it claims on Nginx.
	want string
}

// burstOf is n identical requests from ip.
func burstOf(n int, ip string) []lrReq {
	out := make([]lrReq, n)
	for i := range out {
		out[i] = lrReq{ip: ip}
	}
	return out
}

func at(ms int, reqs []lrReq) lrPhase {
	return lrPhase{at: time.Duration(ms) * time.Millisecond, reqs: reqs}
}

// Abbreviations of want: P PASSED, D DELAYED, R REJECTED, d DELAYED_DRY_RUN,
// r REJECTED_DRY_RUN, - unset.
var lrStatusOf = map[byte]string{'P': "PASSED", 'D': "DELAYED", 'R': "REJECTED",
	'd': "DELAYED_DRY_RUN", 'r': "REJECTED_DRY_RUN", '-': ""}

var lrScenarios = []lrScenario{
	// The long ones first: scenarios start one after another (see
	// TestLimitReqAgainstNginx).
	{name: "truncation", zones: []lrZone{{"", "$binary_remote_addr", "4r/m"}}, limits: []lrLimit{{burst: 1, nodelay: true}},
		// 4r/m is stored as 66 thousandths a second: a request drains in
		// 15152 ms, not 15000. At 15075 ms an exact rate would pass.
		phases: []lrPhase{at(0, burstOf(3, "10.7.0.1")), at(15075, burstOf(1, "10.7.0.1")), at(15300, burstOf(1, "10.7.0.1"))},
		want:   "PPR R P"},
	{name: "perminute", zones: []lrZone{{"", "$binary_remote_addr", "30r/m"}}, limits: []lrLimit{{burst: 1, nodelay: true}},
		// 2 s a request: half an interval drains too little, 1.5 enough.
		phases: []lrPhase{at(0, burstOf(3, "10.6.0.1")), at(1000, burstOf(1, "10.6.0.1")), at(3000, burstOf(1, "10.6.0.1"))},
		want:   "PPR R P"},
	{name: "strict", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{}},
		// No burst: one passes, the rest are rejected; 1.5 intervals later
		// the bucket is empty again.
		phases: []lrPhase{at(0, burstOf(5, "10.1.0.1")), at(150, burstOf(1, "10.1.0.1"))},
		want:   "PRRRR P"},
	{name: "burst", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 5}},
		// burst=5 admits 6; the excess ones wait 100 ms apart.
		phases: []lrPhase{at(0, burstOf(8, "10.2.0.1"))},
		want:   "PDDDDDRR"},
	{name: "nodelay", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 5, nodelay: true}},
		phases: []lrPhase{at(0, burstOf(8, "10.3.0.1")), at(250, burstOf(1, "10.3.0.1"))},
		want:   "PPPPPPRR P"},
	{name: "delayn", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 6, delay: 2}},
		// delay=2: the first 3 pass at once, the next 4 wait.
		phases: []lrPhase{at(0, burstOf(9, "10.4.0.1"))},
		want:   "PPPDDDDRR"},
	{name: "drain", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 3}},
		// 6.5 intervals idle drain the bucket: the second burst starts over.
		phases: []lrPhase{at(0, burstOf(4, "10.5.0.1")), at(650, burstOf(5, "10.5.0.1"))},
		want:   "PDDD PDDDR"},
	{name: "twolimits",
		zones:  []lrZone{{"ip", "$binary_remote_addr", "10r/s"}, {"tenant", "$http_x_tenant", "10r/s"}},
		limits: []lrLimit{{zone: "ip", burst: 3, nodelay: true}, {zone: "tenant", nodelay: true}},
		gap:    10 * time.Millisecond,
		// The second t1 is rejected by the tenant zone and charges neither
		// zone, so the per-IP zone still admits t2..t4; t5 is its 5th.
		phases: []lrPhase{at(0, []lrReq{{"10.8.0.1", "X-Tenant: t1"}, {"10.8.0.1", "X-Tenant: t1"},
			{"10.8.0.1", "X-Tenant: t2"}, {"10.8.0.1", "X-Tenant: t3"}, {"10.8.0.1", "X-Tenant: t4"},
			{"10.8.0.1", "X-Tenant: t5"}})},
		want: "PRPPPR"},
	{name: "dryrun", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 2}}, dryRun: true,
		phases: []lrPhase{at(0, burstOf(5, "10.9.0.1"))},
		want:   "Pddrr"},
	{name: "status429", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 1, nodelay: true}}, status: 429,
		phases: []lrPhase{at(0, burstOf(4, "10.10.0.1"))},
		want:   "PPRR"},
	{name: "emptykey", zones: []lrZone{{"", "$http_x_api_key", "10r/s"}}, limits: []lrLimit{{}},
		phases: []lrPhase{at(0, []lrReq{{"10.11.0.1", ""}, {"10.11.0.1", ""}, {"10.11.0.1", ""},
			{"10.11.0.1", "X-Api-Key: k"}, {"10.11.0.1", "X-Api-Key: k"}, {"10.11.0.1", "X-Api-Key: k"}})},
		want: "---PRR"},
	{name: "twoclients", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 1, nodelay: true}},
		phases: []lrPhase{at(0, []lrReq{{"10.12.0.1", ""}, {"10.12.0.2", ""}, {"10.12.0.1", ""},
			{"10.12.0.2", ""}, {"10.12.0.1", ""}, {"10.12.0.2", ""}})},
		want: "PPPPRR"},
	{name: "worked", zones: []lrZone{{"", "$binary_remote_addr", "10r/s"}}, limits: []lrLimit{{burst: 20}},
		// The spec's worked example: request k waits (k-1)·100 ms, 22-25
		// are rejected.
		phases: []lrPhase{at(0, burstOf(25, "10.13.0.1"))},
		want:   "PDDDDDDDDDDDDDDDDDDDDRRRR"},
}

func (sc *lrScenario) zoneName(suffix string) string { return sc.name + suffix }

// nginxLocations writes the zones and location of every scenario.
func lrNginxConf(dir, listen string) string {
	var zones, locs strings.Builder
	for _, sc := range lrScenarios {
		for _, z := range sc.zones {
			fmt.Fprintf(&zones, "    limit_req_zone %s zone=%s:1m rate=%s;\n", z.key, sc.zoneName(z.suffix), z.rate)
		}
		fmt.Fprintf(&locs, "        location /%s/ {\n", sc.name)
		for _, l := range sc.limits {
			fmt.Fprintf(&locs, "            limit_req zone=%s", sc.zoneName(l.zone))
			if l.burst > 0 {
				fmt.Fprintf(&locs, " burst=%d", l.burst)
			}
			if l.delay > 0 {
				fmt.Fprintf(&locs, " delay=%d", l.delay)
			}
			if l.nodelay {
				locs.WriteString(" nodelay")
			}
			locs.WriteString(";\n")
		}
		if sc.status != 0 {
			fmt.Fprintf(&locs, "            limit_req_status %d;\n", sc.status)
		}
		if sc.dryRun {
			locs.WriteString("            limit_req_dry_run on;\n")
		}
		locs.WriteString("            add_header X-Limit-Req-Status $limit_req_status always;\n")
		locs.WriteString("            try_files /ok.txt =404;\n        }\n")
	}
	return strings.NewReplacer("{{dir}}", dir, "{{listen}}", listen, "{{zones}}", zones.String(),
		"{{locations}}", locs.String()).Replace(nginxProcess + `error_log {{dir}}/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
` + nginxTempPaths + `    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
{{zones}}    server {
        listen {{listen}};
        root {{dir}}/www;
{{locations}}    }
}
`)
}

// lrTollgateYAML is the same as a tollgate config.
func lrTollgateYAML(backend string) string {
	var b strings.Builder
	b.WriteString("real_ip:\n  set_real_ip_from: [127.0.0.1]\n  real_ip_header: X-Forwarded-For\n")
	fmt.Fprintf(&b, "upstreams:\n  - name: app\n    servers:\n      - addr: %s\n", backend)
	b.WriteString("limit_req_zones:\n")
	for _, sc := range lrScenarios {
		for _, z := range sc.zones {
			b.WriteString(zoneYAML(sc.zoneName(z.suffix), z.key, "1m", z.rate))
		}
	}
	b.WriteString("routes:\n  - path_prefix: /warm\n    upstream: app\n")
	for _, sc := range lrScenarios {
		fmt.Fprintf(&b, "  - path_prefix: /%s/\n    upstream: app\n    limit_req:\n", sc.name)
		for _, l := range sc.limits {
			fmt.Fprintf(&b, "      - zone: %s\n", sc.zoneName(l.zone))
			if l.burst > 0 {
				fmt.Fprintf(&b, "        burst: %d\n", l.burst)
			}
			if l.delay > 0 {
				fmt.Fprintf(&b, "        delay: %d\n", l.delay)
			}
			if l.nodelay {
				b.WriteString("        nodelay: true\n")
			}
		}
		if sc.status != 0 {
			fmt.Fprintf(&b, "    limit_req_status: %d\n", sc.status)
		}
		if sc.dryRun {
			b.WriteString("    limit_req_dry_run: true\n")
		}
	}
	return b.String()
}

// lrResult is what one request came to.
type lrResult struct {
	path    string
	tag     string // ip and header: requests with equal tags are interchangeable
	status  int
	lrs     string // $limit_req_status
	latency time.Duration
	err     error
}

// class is the request's outcome as compared: the status and
// $limit_req_status.
func (r lrResult) class() string {
	if r.err != nil {
		return "error"
	}
	return fmt.Sprint(r.status, " ", r.lrs)
}

// delayed reports whether the request was held (not in dry run).
func (r lrResult) delayed() bool { return r.lrs == "DELAYED" }

const (
	// lrDelayTolerance is how far the delays of a request on Nginx and on
	// tollgate may differ.
	lrDelayTolerance = 25 * time.Millisecond
	// lrStagger separates the starts of two bursts.
	lrStagger = 50 * time.Millisecond
)

// run sends the scenario to addr and returns the results in sending
// order. Each request has its own connection, opened before the first
// burst.
func (sc *lrScenario) run(addr string) []lrResult {
	var reqs []lrReq
	var paths []string
	for pi, ph := range sc.phases {
		for ri, rq := range ph.reqs {
			reqs = append(reqs, rq)
			paths = append(paths, fmt.Sprintf("/%s/p%dr%d", sc.name, pi, ri))
		}
	}
	res := make([]lrResult, len(reqs))
	conns := make([]net.Conn, len(reqs))
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			res[i].err = err
			continue
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		conns[i] = c
	}
	var wg sync.WaitGroup
	start := time.Now()
	i := 0
	for _, ph := range sc.phases {
		time.Sleep(time.Until(start.Add(ph.at)))
		for j := range ph.reqs {
			if j > 0 {
				time.Sleep(cmp.Or(sc.gap, time.Millisecond))
			}
			rq, r := reqs[i], &res[i]
			r.path, r.tag = paths[i], rq.ip+" "+rq.header
			c := conns[i]
			i++
			if c == nil {
				continue
			}
			extra := ""
			if rq.header != "" {
				extra = rq.header + "\r\n"
			}
			sent := time.Now()
			if _, err := io.WriteString(c, "GET "+r.path+" HTTP/1.1\r\nHost: lr.test\r\nX-Forwarded-For: "+rq.ip+"\r\n"+extra+"\r\n"); err != nil {
				r.err = err
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					r.err = err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r.latency = time.Since(sent)
				r.status = resp.StatusCode
				r.lrs = resp.Header.Get("X-Limit-Req-Status")
			}()
		}
	}
	wg.Wait()
	return res
}

// canonical orders interchangeable requests (equal tag, same phase) by
// outcome, so that which of two identical requests won a race does not
// matter: passed, then delayed by delay, then rejected; their places in
// sending order stay.
func (sc *lrScenario) canonical(res []lrResult) []lrResult {
	out := slices.Clone(res)
	rank := func(r lrResult) int {
		switch {
		case r.status != http.StatusOK, strings.HasPrefix(r.lrs, "REJECTED"):
			return 2
		case strings.HasPrefix(r.lrs, "DELAYED"):
			return 1
		}
		return 0
	}
	i := 0
	for _, ph := range sc.phases {
		groups := map[string][]int{}
		var order []string
		for j := range ph.reqs {
			tag := out[i+j].tag
			if _, ok := groups[tag]; !ok {
				order = append(order, tag)
			}
			groups[tag] = append(groups[tag], i+j)
		}
		for _, tag := range order {
			idx := groups[tag]
			vals := make([]lrResult, len(idx))
			for k, x := range idx {
				vals[k] = out[x]
			}
			slices.SortStableFunc(vals, func(a, b lrResult) int {
				if ra, rb := rank(a), rank(b); ra != rb {
					return ra - rb
				}
				return int(a.latency - b.latency)
			})
			for k, x := range idx {
				out[x] = vals[k]
			}
		}
		i += len(ph.reqs)
	}
	return out
}

func TestLimitReqAgainstNginx(t *testing.T) {
	requireBinary(t, "nginx")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "ok.txt"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ngAddr := freeLoopbackAddr(t)
	runNginxConf(t, dir, ngAddr, lrNginxConf(dir, ngAddr))
	addr, _ := pathBackend(t)
	tg := startLimitProxy(t, lrTollgateYAML(addr))

	lrWarmUp(t, tg.Addr)

	// Scenarios run concurrently, but their bursts start lrStagger apart,
	// Nginx's and tollgate's in turn, so that no two bursts compete for
	// the CPU: a busy Nginx reads the time late and delays short.
	type outcome struct{ ng, tg []lrResult }
	outcomes := make([]outcome, len(lrScenarios))
	var wg sync.WaitGroup
	for i := range lrScenarios {
		sc := &lrScenarios[i]
		wg.Add(2)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(2*i) * lrStagger)
			outcomes[i].ng = sc.run(ngAddr)
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(2*i+1) * lrStagger)
			outcomes[i].tg = sc.run(tg.Addr)
		}()
	}
	wg.Wait()
	logged := map[string]string{}
	for _, l := range tg.limitLog(t) {
		logged[l.Path] = l.LimitReqStatus
	}
	for i := range lrScenarios {
		sc := &lrScenarios[i]
		t.Run(sc.name, func(t *testing.T) {
			for k := range outcomes[i].tg {
				r := &outcomes[i].tg[k]
				r.lrs = logged[r.path]
			}
			ng, tgr := sc.canonical(outcomes[i].ng), sc.canonical(outcomes[i].tg)
			want := strings.ReplaceAll(sc.want, " ", "")
			if len(ng) != len(want) {
				t.Fatalf("scenario has %d requests, want lists %d", len(ng), len(want))
			}
			var table strings.Builder
			fmt.Fprintf(&table, "%-4s %-24s | %-32s | %-32s\n", "#", "client", "nginx", "tollgate")
			bad := false
			for k := range ng {
				n, g := ng[k], tgr[k]
				mark := ""
				wantLRS := lrStatusOf[want[k]]
				switch {
				case n.err != nil || g.err != nil:
					mark = fmt.Sprintf("  error: nginx %v, tollgate %v", n.err, g.err)
				case n.lrs != wantLRS:
					mark = fmt.Sprintf("  nginx is not %q: the scenario is wrong", wantLRS)
				case n.class() != g.class():
					mark = "  differs"
				case n.delayed() && (n.latency-g.latency > lrDelayTolerance || g.latency-n.latency > lrDelayTolerance):
					mark = "  delay differs by more than 25 ms"
				}
				bad = bad || mark != ""
				fmt.Fprintf(&table, "%-4d %-24s | %-3d %-17s %7.1fms | %-3d %-17s %7.1fms%s\n", k, n.tag,
					n.status, n.lrs, ms(n.latency), g.status, g.lrs, ms(g.latency), mark)
			}
			if bad {
				t.Errorf("tollgate and nginx differ:\n%s", table.String())
			} else {
				t.Logf("\n%s", table.String())
			}
		})
	}
}

// lrWarmUp fills tollgate's upstream pool, so that the first burst does not
// wait for connections to the backend (an unlimited route).
func lrWarmUp(t testing.TB, addr string) {
	t.Helper()
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + addr + "/warm")
			if err != nil {
				t.Errorf("warm-up: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
