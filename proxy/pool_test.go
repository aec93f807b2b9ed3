package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// failAfter bounds every wait for another goroutine or process in these
// tests. It is a failure deadline, never a measured duration.
const failAfter = 5 * time.Second

// poolOf returns the connection pool of server i of an upstream in the
// proxy's current configuration.
func poolOf(p *testProxy, upstream string, i int) *serverPool {
	return p.Server.rt.Load().upstreams[upstream].bal.peers()[i].pool
}

// trackedBackend is a Go HTTP backend that reports every connection it
// closes on closed. idle is its own IdleTimeout (zero: none).
func trackedBackend(t testing.TB, idle time.Duration, h http.Handler) (b *backend, closed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 1024)
	b = &backend{Addr: ln.Addr().String()}
	b.srv = &http.Server{Handler: h, IdleTimeout: idle, ConnState: func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			b.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			ch <- struct{}{}
		}
	}}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b, ch
}

func nameHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	})
}

// awaitSignal waits for one value on ch, failing the test after failAfter.
func awaitSignal[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(failAfter):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// scrape returns the admin listener's /metrics text.
func scrape(t testing.TB, p *testProxy) string {
	t.Helper()
	code, body := get(t, p.Admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d", code)
	}
	return body
}

// promValue returns the value of the sample of name whose labels include
// all of labels ("k", "v", ...), or 0 when there is none.
func promValue(t testing.TB, text, name string, labels ...string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		series := line[:sp]
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(series, labels[i]+"="+strconv.Quote(labels[i+1])) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return 0
}

// logEntries parses the access log written so far.
func logEntries(t testing.TB, p *testProxy) []map[string]any {
	t.Helper()
	p.settle(t)
	var out []map[string]any
	for line := range strings.SplitSeq(p.log.String(), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line is not JSON: %v\n%s", err, line)
		}
		out = append(out, m)
	}
	return out
}

func getN(t *testing.T, url string, n int, want string) {
	t.Helper()
	for i := range n {
		code, body := get(t, url)
		if code != http.StatusOK || body != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, code, body, want)
		}
	}
}

func TestPoolKeepAliveReuse(t *testing.T) {
	b := namedBackend(t, "one")
	p := startProxy(t, upstreamYAML(b.Addr))
	getN(t, p.URL+"/x", 50, "one")
	if n := b.conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for 50 sequential requests, want 1", n)
	}
	m := scrape(t, p)
	labels := []string{"upstream", "app", "server", b.Addr}
	if v := promValue(t, m, "tollgate_upstream_dials_total", labels...); v != 1 {
		t.Errorf("tollgate_upstream_dials_total = %v, want 1\n%s", v, m)
	}
	if v := promValue(t, m, "tollgate_upstream_connections_idle", labels...); v != 1 {
		t.Errorf("tollgate_upstream_connections_idle = %v, want 1", v)
	}
	if v := promValue(t, m, "tollgate_upstream_connections_open", labels...); v != 1 {
		t.Errorf("tollgate_upstream_connections_open = %v, want 1", v)
	}
}

func TestPoolKeepaliveZero(t *testing.T) {
	b := namedBackend(t, "one")
	p := startProxy(t, strings.Replace(upstreamYAML(b.Addr), "    servers:", "    keepalive: 0\n    servers:", 1))
	getN(t, p.URL+"/x", 10, "one")
	if n := b.conns.Load(); n != 10 {
		t.Errorf("keepalive 0: backend accepted %d connections for 10 requests, want 10", n)
	}
	pool := poolOf(p, "app", 0)
	if open, idle := pool.open.Load(), pool.idleCount(); open != 0 || idle != 0 {
		t.Errorf("keepalive 0: %d open, %d idle after the requests, want none", open, idle)
	}
	if v := promValue(t, scrape(t, p), "tollgate_connection_closes_total", "side", "upstream", "reason", reasonPoolOverflow); v != 10 {
		t.Errorf("closes{%s} = %v, want 10", reasonPoolOverflow, v)
	}
}

func TestPoolKeepaliveRequests(t *testing.T) {
	b := namedBackend(t, "one")
	p := startProxy(t, strings.Replace(upstreamYAML(b.Addr), "    servers:", "    keepalive_requests: 10\n    servers:", 1))
	getN(t, p.URL+"/x", 50, "one")
	if n := b.conns.Load(); n != 5 {
		t.Errorf("keepalive_requests 10: backend accepted %d connections for 50 requests, want 5", n)
	}
	if v := promValue(t, scrape(t, p), "tollgate_connection_closes_total", "side", "upstream", "reason", reasonKeepaliveLimit); v != 5 {
		t.Errorf("closes{%s} = %v, want 5", reasonKeepaliveLimit, v)
	}
	if open := poolOf(p, "app", 0).open.Load(); open != 0 {
		t.Errorf("%d connections open after each served its 10 requests, want 0", open)
	}
}

func TestPoolIdleTimeoutSweep(t *testing.T) {
	b, closed := trackedBackend(t, 0, nameHandler("one"))
	p := startProxy(t, upstreamYAML(b.Addr))
	getN(t, p.URL+"/x", 1, "one")
	pool := poolOf(p, "app", 0)
	pool.mu.Lock()
	if len(pool.idle) != 1 {
		pool.mu.Unlock()
		t.Fatalf("%d idle connections after one request, want 1", len(pool.idle))
	}
	idleSince, timeout := pool.idle[0].idleSince, pool.limits.idleTimeout
	pool.mu.Unlock()
	if timeout <= 0 {
		t.Fatalf("keepalive_timeout = %v, want the default", timeout)
	}

	pool.sweep(idleSince.Add(timeout - time.Nanosecond))
	if n := pool.idleCount(); n != 1 {
		t.Fatalf("sweep just before keepalive_timeout left %d idle, want 1", n)
	}
	pool.sweep(idleSince.Add(timeout))
	if n := pool.idleCount(); n != 0 {
		t.Fatalf("sweep at keepalive_timeout left %d idle, want 0", n)
	}
	awaitSignal(t, closed, "the backend to see the idle connection close")
	if open := pool.open.Load(); open != 0 {
		t.Errorf("%d open after the sweep, want 0", open)
	}
	if v := promValue(t, scrape(t, p), "tollgate_connection_closes_total", "side", "upstream", "reason", reasonIdleTimeout); v != 1 {
		t.Errorf("closes{%s} = %v, want 1", reasonIdleTimeout, v)
	}
	getN(t, p.URL+"/x", 1, "one")
	if n := b.conns.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2 (a new one after the sweep)", n)
	}
}

func TestPoolBackendClosesIdle(t *testing.T) {
	// The backend closes idle connections after 50ms, before tollgate's
	// keepalive_timeout: takeIdle's peek must see the FIN and dial afresh
	// instead of sending the request into a closed connection.
	b, closed := trackedBackend(t, 50*time.Millisecond, nameHandler("one"))
	p := startProxy(t, upstreamYAML(b.Addr))
	getN(t, p.URL+"/first", 1, "one")
	awaitSignal(t, closed, "the backend to close its idle connection")
	// tollgate's idle clock starts a little after the backend's: wait
	// until the pooled conn has idled long enough to be peeked at.
	pool := poolOf(p, "app", 0)
	pool.mu.Lock()
	idleSince := pool.idle[0].idleSince
	pool.mu.Unlock()
	time.Sleep(time.Until(idleSince.Add(peekAfterIdle + time.Millisecond)))
	getN(t, p.URL+"/second", 1, "one")

	m := scrape(t, p)
	if v := promValue(t, m, "tollgate_connection_closes_total", "side", "upstream", "reason", reasonIdleClosedByPeer); v != 1 {
		t.Errorf("closes{%s} = %v, want 1", reasonIdleClosedByPeer, v)
	}
	if v := promValue(t, m, "tollgate_connection_closes_total", "side", "upstream", "reason", reasonReusedConnClosed); v != 0 {
		t.Errorf("closes{%s} = %v, want 0: the request raced the backend's close", reasonReusedConnClosed, v)
	}
	for _, e := range logEntries(t, p) {
		if e["path"] == "/second" && (e["upstream_close"] != "" || e["upstream_addr"] != b.Addr) {
			t.Errorf("second request: upstream_addr %q upstream_close %q, want one clean attempt", e["upstream_addr"], e["upstream_close"])
		}
	}
	if n := b.conns.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
}

func TestPoolConcurrentBurst(t *testing.T) {
	const keepalive, workers, each = 4, 20, 20
	b := namedBackend(t, "one")
	p := startProxy(t, strings.Replace(upstreamYAML(b.Addr), "    servers:", fmt.Sprintf("    keepalive: %d\n    servers:", keepalive), 1))
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for range each {
				resp, err := c.Get(p.URL + "/x")
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "one" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q", resp.StatusCode, body))
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, workers*each, firstErr.Load())
	}
	pool := poolOf(p, "app", 0)
	open, idle := pool.open.Load(), pool.idleCount()
	if idle > keepalive || idle < 1 {
		t.Errorf("%d idle connections after the burst, want 1..%d", idle, keepalive)
	}
	if open != int64(idle) {
		t.Errorf("%d connections open but %d idle after the burst: leaked connections", open, idle)
	}
	if dials := pool.dials.Load(); dials != b.conns.Load() {
		t.Errorf("pool dialed %d, backend accepted %d", dials, b.conns.Load())
	}
}
