package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// killableBackend is a backend that can die mid-load: kill closes its
// listener and resets every connection at once. Its responses come in two
// halves 20ms apart, so at any instant some of them are mid-body; kill
// reports how many were (headers and half the body sent, the rest never
// will be): those are the requests in flight on it at its death that no
// retry can save.
type killableBackend struct {
	addr string
	ln   net.Listener
	wg   sync.WaitGroup

	mu      sync.Mutex
	dead    bool
	conns   map[net.Conn]bool // open connections
	midBody map[net.Conn]bool // response started, not finished
	served  atomic.Int64
}

const killableBody = "kkkkkkkkkkKKKKKKKKKK" // two halves of 10 bytes

func newKillableBackend(t testing.TB) *killableBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &killableBackend{addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}, midBody: map[net.Conn]bool{}}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !k.track(c) {
				continue
			}
			k.wg.Add(1)
			go func() { defer k.wg.Done(); k.serve(c) }()
		}
	}()
	t.Cleanup(func() { k.kill(); k.wg.Wait() })
	return k
}

func (k *killableBackend) track(c net.Conn) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		return false
	}
	k.conns[c] = true
	return true
}

// serve answers keep-alive requests: /healthz at once, anything else in two
// halves. Every write happens under mu, so kill sees a consistent state.
func (k *killableBackend) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		if req.URL.Path == "/healthz" {
			if !k.write(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", false) {
				return
			}
			return
		}
		head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(killableBody))
		if !k.write(c, head+killableBody[:10], true) {
			return
		}
		time.Sleep(20 * time.Millisecond)
		if !k.write(c, killableBody[10:], false) {
			return
		}
		k.served.Add(1)
	}
}

// write sends s unless the backend is dead, and records whether the
// connection is now mid-body.
func (k *killableBackend) write(c net.Conn, s string, mid bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return false
	}
	if _, err := io.WriteString(c, s); err != nil {
		return false
	}
	if mid {
		k.midBody[c] = true
	} else {
		delete(k.midBody, c)
	}
	return true
}

// kill closes the listener and resets every connection; it returns how
// many responses were cut mid-body.
func (k *killableBackend) kill() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return 0
	}
	k.dead = true
	k.ln.Close()
	for c := range k.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	return len(k.midBody)
}

// TestResilienceEndToEnd runs a bounded load over three backends: one is
// killed under load, one answers 500 to every request (while its health
// endpoint says ok: only the breaker can catch it), one is slow. Retries,
// the breakers and the health checks must keep every request of the load
// whole, except the responses the killed backend had half sent when it
// died.
func TestResilienceEndToEnd(t *testing.T) {
	killed := newKillableBackend(t)
	var errors500 atomic.Int64
	broken := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			io.WriteString(w, "ok") // a lying health check
			return
		}
		errors500.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "broken")
	}))
	slow := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			time.Sleep(10 * time.Millisecond)
		}
		io.WriteString(w, "slow")
	}))
	// Passive health is off (max_fails: 0) so the breakers and checks do
	// the work; 500s are retried (proxy_next_upstream http_500) and count
	// for the breaker. With three servers one survivor is 33 %: the panic
	// threshold sits below that, or panic mode would send traffic back to
	// the broken servers.
	yaml := `upstreams:
  - name: app
    panic_threshold: 30
    breaker: {failure_statuses: [500, 502, 503, 504]}
    health_check: {uri: /healthz, interval: 100ms, timeout: 100ms, fails: 1, passes: 1}
    servers:
      - {addr: ` + killed.addr + `, max_fails: 0}
      - {addr: ` + broken.Addr + `, max_fails: 0}
      - {addr: ` + slow.Addr + `, max_fails: 0}
routes:
  - path_prefix: /
    upstream: app
    proxy_next_upstream: [error, timeout, http_500]
`
	p, logs := startLoggedProxy(t, yaml)
	for _, addr := range []string{killed.addr, broken.Addr, slow.Addr} {
		waitHealth(t, p, addr, healthHealthy)
	}

	const workers, perWorker = 4, 300
	var (
		done      atomic.Int64
		mu        sync.Mutex
		failures  []string
		bodies    = map[string]int{}
		killAt    = int64(workers * perWorker / 3)
		killOnce  sync.Once
		inFlight  int
		killedRan = make(chan struct{})
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			for i := range perWorker {
				body, err := fetchWhole(client, fmt.Sprintf("%s/w%d/%d", p.URL, w, i))
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					bodies[body]++
				}
				mu.Unlock()
				if done.Add(1) == killAt {
					killOnce.Do(func() { inFlight = killed.kill(); close(killedRan) })
				}
			}
		}()
	}
	wg.Wait()
	<-killedRan

	t.Logf("killed backend: %d responses cut mid-body at its death (served %d whole); "+
		"broken backend answered %d 500s; client bodies %v; failures %d",
		inFlight, killed.served.Load(), errors500.Load(), bodies, len(failures))
	if len(failures) > inFlight {
		t.Errorf("%d requests failed, more than the %d in flight on the killed backend at its death:\n%s",
			len(failures), inFlight, strings.Join(failures, "\n"))
	}
	for _, f := range failures {
		if !strings.Contains(f, "cut after") {
			t.Errorf("a failure that is not a response cut mid-body: %s", f)
		}
	}
	if bodies["broken"] != 0 || len(bodies) > 2 {
		t.Errorf("clients got bodies %v, want only the killed and the slow backend's", bodies)
	}
	if n := errors500.Load(); n < 5 || n > 10 {
		t.Errorf("the broken backend answered %d requests; its breaker should open after 5", n)
	}
	if st, _ := breakerState(t, p, broken.Addr); st != "open" {
		t.Errorf("broken backend's breaker is %s, want open", st)
	}
	waitHealth(t, p, killed.addr, healthUnhealthy)
	var trips []string
	for _, l := range logs.lines(t, "circuit breaker") {
		if l["to"] == "open" {
			trips = append(trips, fmt.Sprint(l["server"], " ", l["why"]))
		}
	}
	if !hasString(trips, broken.Addr+" consecutive_failures") {
		t.Errorf("breaker trips %q lack the broken backend's", trips)
	}
}

// fetchWhole GETs url and returns the whole body of a 200, or why not.
func fetchWhole(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return "", fmt.Errorf("%s: %d, body cut after %q: %v", url, resp.StatusCode, body, err)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("%s: status %d %q (%s)", url, resp.StatusCode, body, resp.Header.Get("Proxy-Status"))
	}
	return string(body), nil
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
