package proxy

import (
	"encoding/json"
	"io"
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
	if !gateEventually(2*time.Second, func() bool { return g.ctl.Limit() >= 20 }) {
		t.Errorf("limit = %d 2s after the backend got fast, want ≥ 20", g.ctl.Limit())
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

// TestOverloadGatePolicy walks the shedding policy at fixed instants: a
// fixed limit of 2 and a queue of 2.
func TestOverloadGatePolicy(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newOverloadGate("app", config.AdaptiveConcurrency{
		Enabled: true, Mode: config.AdaptiveFixed, FixedLimit: 2,
		Window: config.Duration{Duration: 100 * time.Millisecond}, Queue: config.Ratio{Fraction: 1},
		QueueTimeout: config.Duration{Duration: time.Second},
	}, t0)
	key := func(s string) gateKey { return gateKey{s: s} }
	type arrival struct {
		cl *clientLoad
		w  *gateWaiter
	}
	now := t0
	arrive := func(who string, want string) arrival {
		t.Helper()
		cl, w, why, ok := g.arrive(now, key(who))
		got := "admitted"
		switch {
		case !ok:
			got = "shed " + shedNames[why]
		case w != nil:
			got = "queued"
		}
		if got != want {
			t.Fatalf("%s: %s, want %s", who, got, want)
		}
		return arrival{cl, w}
	}
	a1 := arrive("A", "admitted")
	arrive("A", "admitted")
	aq := arrive("A", "queued") // a lone client may fill the queue
	bq := arrive("B", "queued")
	arrive("A", "shed fair_share") // share (2+2)/2: A holds 3
	cq := arrive("C", "queued")     // the queue is full: A's queued request makes room
	if aq.w.state != waitEvicted || aq.w.why != shedFairShare {
		t.Errorf("A's queued request: state %d why %d, want evicted for fair_share", aq.w.state, aq.w.why)
	}
	// A slot frees: B and C have none in flight; the older, B, gets it.
	g.leave(t0, a1.cl, 20*time.Millisecond, limiter.Success)
	if bq.w.state != waitGranted || cq.w.state != waitQueued {
		t.Errorf("after a release: B %d, C %d; want B granted, C queued", bq.w.state, cq.w.state)
	}
	// 150ms later minRTT is 20ms (the window ended) and the queue has stood
	// since t0: at the next hand-out C, waiting 150ms > 5ms, is shed.
	now = t0.Add(150 * time.Millisecond)
	g.leave(now, bq.cl, 20*time.Millisecond, limiter.Success)
	if cq.w.state != waitEvicted || cq.w.why != shedQueueTimeout {
		t.Errorf("C in a standing queue: state %d why %d, want shed queue_timeout", cq.w.state, cq.w.why)
	}
	// A new queue is not standing before a window has passed.
	arrive("E", "admitted")
	fq := arrive("F", "queued")
	grant := func(at time.Duration) {
		g.mu.Lock()
		g.grantLocked(now.Add(at))
		g.mu.Unlock()
	}
	grant(20 * time.Millisecond)
	if fq.w.state != waitQueued {
		t.Errorf("F after 20ms: state %d, want still queued", fq.w.state)
	}
	grant(120 * time.Millisecond)
	if fq.w.state != waitEvicted || fq.w.why != shedQueueTimeout {
		t.Errorf("F in a queue standing 120ms: state %d why %d, want shed queue_timeout", fq.w.state, fq.w.why)
	}
	if v := g.view(); v.Clients != 2 || v.Queue != 0 || v.InFlight != 2 {
		t.Errorf("view %+v: want 2 clients (A, E), empty queue, 2 in flight", v)
	}
}
