package proxy

import (
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/limiter"
)

// capacityBackend has a fixed capacity, like a thread pool: a request takes
// one of the workers for the service time, and waits for one in the
// backend's own queue when all are busy. Capacity and service time can be
// changed while it runs. It records the most requests it held at once.
type capacityBackend struct {
	*backend
	workers atomic.Pointer[chan struct{}]
	service atomic.Int64 // ns
	held    atomic.Int64 // requests in the handler, queued or served
	peak    atomic.Int64
}

func startCapacityBackend(t *testing.T, workers int, service time.Duration) *capacityBackend {
	cb := &capacityBackend{}
	cb.set(workers, service)
	cb.backend = startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cb.held.Add(1)
		defer cb.held.Add(-1)
		for p := cb.peak.Load(); n > p && !cb.peak.CompareAndSwap(p, n); p = cb.peak.Load() {
		}
		sem := *cb.workers.Load()
		sem <- struct{}{}
		time.Sleep(time.Duration(cb.service.Load()))
		<-sem
		io.WriteString(w, "ok")
	}))
	return cb
}

func (cb *capacityBackend) set(workers int, service time.Duration) {
	sem := make(chan struct{}, workers)
	cb.workers.Store(&sem)
	cb.service.Store(int64(service))
}

// gate returns the overload gate of upstream "app".
func (p *testProxy) gate() *overloadGate {
	return p.Server.overload.gateOf(p.Server.rt.Load().upstreams["app"])
}

// hammer runs n closed-loop clients against url until stop closes; a shed
// client pauses 5ms before its next request. It returns counts by
// status once every client has stopped.
func hammer(t *testing.T, url string, n int, header http.Header, stop <-chan struct{}) <-chan map[int]int {
	tr := &http.Transport{MaxIdleConnsPerHost: n}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	out := make(chan map[int]int, 1)
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", url, nil)
				for k, v := range header {
					req.Header[k] = v
				}
				resp, err := client.Do(req)
				status := 0
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				counts[status]++
				mu.Unlock()
				if status != http.StatusOK {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	go func() { wg.Wait(); out <- counts }()
	return out
}

// gateEventually polls cond every millisecond for at most d.
func gateEventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func adaptiveProxy(t *testing.T, addr, block string) *testProxy {
	return startProxy(t, `real_ip:
  set_real_ip_from: [127.0.0.1]
upstreams:
  - name: app
    servers:
      - addr: `+addr+`
    adaptive_concurrency:
      enabled: true
`+block+`routes:
  - path_prefix: /
    upstream: app
`)
}

// TestOverloadCapsSaturatedBackend: 24 clients against a backend of 4
// workers × 25ms. The gradient limit keeps the backend's queue short (it
// never holds more than the limit in force), and the limit rises when the
// backend gets fast.
func TestOverloadCapsSaturatedBackend(t *testing.T) {
	cb := startCapacityBackend(t, 4, 25*time.Millisecond)
	p := adaptiveProxy(t, cb.Addr, "      max: 50\n      initial: 10\n      queue: 0\n")
	g := p.gate()
	var maxLimit atomic.Int64
	watchDone := make(chan struct{})
	stopWatch := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			if l := int64(g.ctl.Limit()); l > maxLimit.Load() {
				maxLimit.Store(l)
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(500 * time.Microsecond):
			}
		}
	}()

	stop := make(chan struct{})
	counts := hammer(t, p.URL, 24, nil, stop)
	time.Sleep(time.Second)
	saturated := g.view()
	peak := cb.peak.Load()
	close(stopWatch)
	<-watchDone
	if peak > maxLimit.Load()+1 || peak > 16 {
		t.Errorf("backend held %d requests at once; limit reached at most %d (24 clients)", peak, maxLimit.Load())
	}
	if saturated.Limit > 16 || saturated.Limit < 3 {
		t.Errorf("limit at saturation = %d, want about 7 (4 workers, latency within 1.8× minRTT)", saturated.Limit)
	}
	if saturated.MinRTT < 25 || saturated.MinRTT > 75 {
		t.Errorf("minRTT = %vms, want 25ms plus the proxy's own time", saturated.MinRTT)
	}

	cb.set(64, time.Millisecond)
	// Generous: under -race on two busy cores the windows come slower.
	if !gateEventually(6*time.Second, func() bool { return g.ctl.Limit() >= 20 }) {
		t.Errorf("limit = %d 6s after the backend got fast, want ≥ 20", g.ctl.Limit())
	}
	close(stop)
	c := <-counts
	if c[http.StatusOK] == 0 || c[http.StatusServiceUnavailable] == 0 || c[0] > 0 {
		t.Errorf("statuses %v: want 200s and 503s, no transport errors", c)
	}
	if v := g.view(); v.Shed["queue_full"] == 0 {
		t.Errorf("shed counts %v: want queue_full sheds (queue: 0)", v.Shed)
	}
}

// TestOverloadFairShedding: a heavy client (16 at once) and a light one (one
// at a time) share an upstream capped at 4; the light client is always
// served, the heavy one is shed.
func TestOverloadFairShedding(t *testing.T) {
	cb := startCapacityBackend(t, 4, 5*time.Millisecond)
	p := adaptiveProxy(t, cb.Addr, "      mode: fixed\n      fixed_limit: 4\n      queue: 100%\n      queue_timeout: 1s\n")
	stop := make(chan struct{})
	heavy := hammer(t, p.URL, 16, http.Header{"X-Real-Ip": {"10.0.0.1"}}, stop)
	g := p.gate()
	if !gateEventually(2*time.Second, func() bool { return g.view().Shed["queue_full"] > 0 }) {
		t.Fatal("the heavy client alone never filled the limit and the queue")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	const lightRequests = 60
	ok := 0
	var statuses []int
	for range lightRequests {
		req, _ := http.NewRequest("GET", p.URL+"/light", nil)
		req.Header.Set("X-Real-IP", "10.0.0.2")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if resp.StatusCode == http.StatusOK {
			ok++
		}
	}
	close(stop)
	h := <-heavy
	if ok < lightRequests {
		t.Errorf("light client: %d of %d succeeded (%v), want all", ok, lightRequests, statuses)
	}
	if h[http.StatusServiceUnavailable] == 0 || h[http.StatusOK] == 0 {
		t.Errorf("heavy client statuses %v: want some served and some shed", h)
	}
	if v := g.view(); v.Shed["fair_share"] == 0 {
		t.Errorf("no fair_share sheds while the light client was served: %v", v.Shed)
	}
	if peak := cb.peak.Load(); peak > 4 {
		t.Errorf("backend held %d at once, fixed limit 4", peak)
	}
}

// stallBackend holds every request until release is closed; entered gets
// one value per request that arrived.
func stallBackend(t *testing.T) (addr string, entered <-chan struct{}, release chan struct{}) {
	in := make(chan struct{}, 16)
	release = make(chan struct{})
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	}))
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return b.Addr, in, release
}

func TestOverloadShedResponse(t *testing.T) {
	addr, entered, release := stallBackend(t)
	p := adaptiveProxy(t, addr, "      mode: fixed\n      fixed_limit: 1\n      queue: 0\n")
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(p.URL + "/first")
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-entered
	resp, err := http.Get(p.URL + "/second")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("status %d over the limit, want 503", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Retry-After":  "1",
		"Proxy-Status": `tollgate; error=connection_limit_reached; details="adaptive concurrency"`,
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}

	// /debug/upstreams and /metrics show the gate while the first request
	// holds the only slot.
	r, err := http.Get(p.Admin + "/debug/upstreams")
	if err != nil {
		t.Fatal(err)
	}
	var ups []struct {
		Name     string    `json:"name"`
		Adaptive *gateView `json:"adaptive_concurrency"`
	}
	json.NewDecoder(r.Body).Decode(&ups)
	r.Body.Close()
	if len(ups) != 1 || ups[0].Adaptive == nil {
		t.Fatalf("/debug/upstreams: %+v, want the adaptive_concurrency state", ups)
	}
	if a := ups[0].Adaptive; a.Mode != "fixed" || a.Limit != 1 || a.InFlight != 1 || a.Shed["queue_full"] != 1 {
		t.Errorf("/debug/upstreams adaptive_concurrency = %+v", a)
	}
	_, metrics := get(t, p.Admin+"/metrics")
	for _, want := range []string{
		`tollgate_adaptive_limit{upstream="app"} 1`,
		`tollgate_adaptive_in_flight{upstream="app"} 1`,
		`tollgate_adaptive_queue_length{upstream="app"} 0`,
		`tollgate_adaptive_shed_total{reason="queue_full",upstream="app"} 1`,
		`tollgate_adaptive_min_rtt_seconds{upstream="app"}`,
		`tollgate_adaptive_sample_rtt_seconds{upstream="app"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	close(release)
	if s := <-first; s != 200 {
		t.Errorf("first request: %d, want 200", s)
	}
	p.settle(t)
	line := gateAccessLine(t, p, "/second")
	if line["shed"] != "adaptive_concurrency/queue_full" || line["status"] != float64(503) {
		t.Errorf("access log of the shed request: %v", line)
	}
	if line := gateAccessLine(t, p, "/first"); line["shed"] != "" {
		t.Errorf("access log of a served request says shed %q", line["shed"])
	}
}

// TestOverloadQueue: a queued request gets the slot when it frees, waits at
// most queue_timeout, and is dropped when its client leaves.
func TestOverloadQueue(t *testing.T) {
	addr, entered, release := stallBackend(t)
	p := adaptiveProxy(t, addr, "      mode: fixed\n      fixed_limit: 1\n      queue: 100%\n      queue_timeout: 100ms\n")
	g := p.gate()
	statuses := make(chan int, 2)
	getAsync := func(path string) {
		go func() {
			resp, err := http.Get(p.URL + path)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	getAsync("/first")
	<-entered

	// The queue holds one (100% of 1); it times out.
	start := time.Now()
	resp, err := http.Get(p.URL + "/timeout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if waited := time.Since(start); resp.StatusCode != 503 || waited < 90*time.Millisecond || waited > time.Second {
		t.Errorf("queued request: %d after %v, want 503 after about 100ms", resp.StatusCode, waited)
	}

	// A client that leaves while queued is dropped from the queue.
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
	if !gateEventually(time.Second, func() bool { return g.view().Queue == 1 }) {
		t.Fatal("the request never queued")
	}
	c.Close()
	if !gateEventually(time.Second, func() bool { return g.view().Queue == 0 }) {
		t.Fatal("the request of a client that left stayed queued")
	}

	// A queued request takes the slot the first one frees.
	getAsync("/queued")
	if !gateEventually(time.Second, func() bool { return g.view().Queue == 1 }) {
		t.Fatal("the request never queued")
	}
	release <- struct{}{} // the first request ends; /queued enters
	<-entered
	close(release)
	for range 2 {
		if s := <-statuses; s != 200 {
			t.Errorf("status %d, want 200 for /first and /queued", s)
		}
	}
	p.settle(t)
	if l := gateAccessLine(t, p, "/timeout"); l["shed"] != "adaptive_concurrency/queue_timeout" {
		t.Errorf("access log of the timed-out request: %v", l)
	}
	if l := gateAccessLine(t, p, "/gone"); l["status"] != float64(499) || l["shed"] != "" {
		t.Errorf("access log of the request whose client left: %v", l)
	}
}

// gateAccessLine returns the access log line of the request for path.
func gateAccessLine(t *testing.T, p *testProxy, path string) map[string]any {
	t.Helper()
	for _, l := range strings.Split(p.log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["path"] == path {
			return m
		}
	}
	t.Fatalf("no access log line for %s in:\n%s", path, p.log.String())
	return nil
}

// testGate is a gate with a fixed limit and a queue of the same size, for
// policy tests at fixed instants.
func testGate(limit int) *overloadGate {
	return newOverloadGate("app", config.AdaptiveConcurrency{
		Enabled: true, Mode: config.AdaptiveFixed, FixedLimit: limit,
		Window: config.Duration{Duration: 100 * time.Millisecond}, Queue: config.Ratio{Fraction: 1},
		QueueTimeout: config.Duration{Duration: time.Second},
	}, gateT0)
}

var gateT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// verdict names the outcome of arrive.
func verdict(w *gateWaiter, why shedReason, ok bool) string {
	switch {
	case !ok:
		return "shed " + shedNames[why]
	case w != nil:
		return "queued"
	}
	return "admitted"
}

// TestOverloadGateQueueOrder: a full queue sheds the queued request of the
// client asking the most; a freed slot goes to the client asking the least.
func TestOverloadGateQueueOrder(t *testing.T) {
	g := testGate(2)
	now := gateT0
	var waiters = map[string]*gateWaiter{}
	var holders []*clientLoad
	for i, step := range []struct{ who, want string }{
		{"A", "admitted"}, {"A", "admitted"},
		{"H", "queued"}, {"H", "queued"}, // a lone client may fill the queue
		{"H", "shed queue_full"}, // nobody asks less than twice as much as H
		{"L", "queued"},          // the queue is full: H, asking over twice L's rate, makes room
		{"H", "shed queue_full"}, // H asks more than everyone queued
	} {
		cl, w, why, ok := g.arrive(now, gateKey{s: step.who})
		if got := verdict(w, why, ok); got != step.want {
			t.Fatalf("step %d: %s %s, want %s", i, step.who, got, step.want)
		}
		if w != nil {
			waiters[step.who+string(rune('0'+i))] = w
		} else if ok {
			holders = append(holders, cl)
		}
	}
	if w := waiters["H3"]; w.state != waitEvicted || w.why != shedFairShare {
		t.Errorf("H's newest queued request: state %d why %d, want shed fair_share", w.state, w.why)
	}
	// A window later a slot frees: L asks no more than twice its fair
	// share, H more, so L goes first although H's request is older.
	now = now.Add(100 * time.Millisecond)
	g.mu.Lock()
	g.refreshLocked(now)
	g.mu.Unlock()
	g.leave(now, holders[0], time.Millisecond, limiter.Success)
	if waiters["L5"].state != waitGranted || waiters["H2"].state != waitQueued {
		t.Errorf("after a release: L %d, H %d; want L granted, H still queued", waiters["L5"].state, waiters["H2"].state)
	}
}

// TestOverloadGateFIFONearShare: clients within twice their fair share
// are served first come, first served, whatever their rates: near
// capacity, ordering by rates that differ by chance starves some.
func TestOverloadGateFIFONearShare(t *testing.T) {
	g := testGate(3)
	now := gateT0
	var held []*clientLoad
	for range 3 {
		a, _, _, _ := g.arrive(now, gateKey{s: "A"})
		held = append(held, a)
	}
	_, b1, _, _ := g.arrive(now, gateKey{s: "B"})
	_, b2, _, _ := g.arrive(now, gateKey{s: "B"})
	_, c, _, _ := g.arrive(now, gateKey{s: "C"})
	if b1 == nil || b2 == nil || c == nil {
		t.Fatal("B, B and C should all be queued")
	}
	// A window later: the fair share is 1/s (C asks 1, A and B split the
	// rest), and B, asking 2, is within twice it. Its older request goes
	// before C's although C asks less.
	now = now.Add(100 * time.Millisecond)
	g.mu.Lock()
	g.refreshLocked(now)
	g.mu.Unlock()
	g.leave(now, held[0], time.Millisecond, limiter.Success)
	if b1.state != waitGranted || c.state != waitQueued {
		t.Fatalf("first free slot: B's oldest %d, C %d; want B's granted (first come, first served)", b1.state, c.state)
	}
	g.leave(now, held[1], time.Millisecond, limiter.Success)
	if b2.state != waitGranted || c.state != waitQueued {
		t.Fatalf("second free slot: B's second %d, C %d; want B's granted", b2.state, c.state)
	}
}

// TestOverloadGateStandingQueue: a queue that stood a whole window keeps a
// request at most a quarter of minRTT.
func TestOverloadGateStandingQueue(t *testing.T) {
	g := testGate(2)
	now := gateT0
	a, _, _, _ := g.arrive(now, gateKey{s: "A"})
	g.leave(now, a, 20*time.Millisecond, limiter.Success) // a sample of 20ms
	a, _, _, _ = g.arrive(now, gateKey{s: "A"})
	a2, _, _, _ := g.arrive(now, gateKey{s: "A"})
	_, wb, _, _ := g.arrive(now, gateKey{s: "B"})
	_, wc, _, _ := g.arrive(now, gateKey{s: "C"})
	for _, who := range []string{"D", "E"} { // the queue is full: shed, so 7 arrived, 3 admitted
		if _, _, why, ok := g.arrive(now, gateKey{s: who}); ok || why != shedQueueFull {
			t.Fatalf("%s: want shed queue_full", who)
		}
	}
	// 150ms later A ends: the window ended, so minRTT is 20ms (the fixed
	// controller's lowest sample RTT). More requests arrived than were
	// admitted, the queue has stood since the start, and C asks more than
	// its fair share: B takes the free slot, and C, waiting 150ms > 5ms,
	// is shed rather than kept.
	now = now.Add(150 * time.Millisecond)
	g.mu.Lock()
	g.refreshLocked(now) // fair share 0.52/s: every client asks more
	g.mu.Unlock()
	g.leave(now, a, 20*time.Millisecond, limiter.Success)
	if wb.state != waitGranted || wc.state != waitEvicted || wc.why != shedQueueTimeout {
		t.Fatalf("standing queue: B %d, C %d (why %d); want B granted, C shed for queue_timeout", wb.state, wc.state, wc.why)
	}
	g.leave(now, a2, 20*time.Millisecond, limiter.Success)

	// A new queue is not standing before a window has passed.
	g = testGate(1)
	x, _, _, _ := g.arrive(now, gateKey{s: "X"})
	_, wx, _, _ := g.arrive(now, gateKey{s: "X"})
	g.mu.Lock()
	g.grantLocked(now.Add(20 * time.Millisecond))
	g.mu.Unlock()
	if wx.state != waitQueued {
		t.Errorf("after 20ms: state %d, want still queued", wx.state)
	}
	g.leave(now.Add(30*time.Millisecond), x, 20*time.Millisecond, limiter.Success)
	if wx.state != waitGranted {
		t.Errorf("after a release at 30ms: state %d, want granted", wx.state)
	}
}

func TestOverloadWaterLevel(t *testing.T) {
	rep := func(n int, r float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = r
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		rates    []float64
		capacity float64
		want     float64
	}{
		{"capacity covers all", []float64{1, 2, 3}, 6, math.Inf(1)},
		{"no throughput yet", []float64{1, 2}, 0, math.Inf(1)},
		{"equal clients", rep(1000, 2.5), 500, 0.5},
		{"10 light at C/10, a heavy at C", append(rep(10, 50), 500), 500, 500.0 / 11},
		{"10 light at 0.075C, a heavy at C", append(rep(10, 37.5), 500), 500, 125},
		{"one small, one large", []float64{10, 1000}, 100, 90},
	} {
		if got := waterLevel(tc.rates, tc.capacity); math.Abs(got-tc.want) > 1e-9 && got != tc.want {
			t.Errorf("%s: level %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestOverloadGateFairShare simulates 2s at fixed instants: a limit of 1,
// requests served in 10ms (capacity 100/s), a heavy client sending 200/s
// and a light one 20/s. The max-min fair share is 80/s: the heavy client,
// asking more than twice that, is shed for its share; the light one is
// always served.
func TestOverloadGateFairShare(t *testing.T) {
	g := testGate(1)
	type job struct {
		end time.Time
		cl  *clientLoad
	}
	var running []job
	var queued []*gateWaiter
	served, shed, fair := map[string]int{}, map[string]int{}, map[string]int{}
	start := func(now time.Time, cl *clientLoad) {
		served[cl.key]++
		running = append(running, job{now.Add(10 * time.Millisecond), cl})
	}
	for step := 0; step < 400; step++ {
		now := gateT0.Add(time.Duration(step) * 5 * time.Millisecond)
		for i := 0; i < len(running); {
			if j := running[i]; !j.end.After(now) {
				running = append(running[:i], running[i+1:]...)
				g.leave(now, j.cl, 10*time.Millisecond, limiter.Success)
				continue
			}
			i++
		}
		for i := 0; i < len(queued); {
			switch w := queued[i]; w.state {
			case waitGranted:
				start(now, w.cl)
			case waitEvicted:
				shed[w.cl.key]++
			default:
				i++
				continue
			}
			queued = append(queued[:i], queued[i+1:]...)
		}
		who := []string{"heavy"}
		if step%10 == 0 {
			who = append(who, "light")
		}
		for _, c := range who {
			cl, w, why, ok := g.arrive(now, gateKey{s: c})
			switch {
			case !ok:
				shed[c]++
				if why == shedFairShare {
					fair[c]++
				}
			case w != nil:
				queued = append(queued, w)
			default:
				start(now, cl)
			}
		}
	}
	if shed["light"] > 0 || served["light"] < 39 {
		t.Errorf("light client: %d served, %d shed; want all 40 served", served["light"], shed["light"])
	}
	if shed["heavy"] < 100 || served["heavy"] < 100 {
		t.Errorf("heavy client: %d served, %d shed; want it shed for the light client's share and served the rest",
			served["heavy"], shed["heavy"])
	}
	if fair["heavy"] == 0 {
		t.Errorf("the heavy client was never shed for its share (%d sheds)", shed["heavy"])
	}
	t.Logf("light: %d served; heavy: %d served, %d shed (%d for its share)", served["light"], served["heavy"], shed["heavy"], fair["heavy"])
}
