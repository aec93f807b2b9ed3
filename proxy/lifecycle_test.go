package proxy

import (
	"context"
	"errors"
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

// startOwnedProxy is startProxy for tests that call Shutdown themselves:
// its cleanup shuts the server down only if the test did not (a second
// Shutdown returns an error).
func startOwnedProxy(t *testing.T, yaml string) (*testProxy, func(context.Context) error) {
	t.Helper()
	return runProxy(t, testConfig(t, yaml), Options{})
}

// fetch does one GET with c, for goroutines that must not call t.Fatal.
func fetch(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestReloadUnderLoad(t *testing.T) {
	const workers, warmup, after = 4, 20, 200
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	p := startProxy(t, upstreamYAML(a.Addr))
	oldPool := poolOf(p, "app", 0)

	var reloaded atomic.Bool
	var failures, wrong atomic.Int64
	var firstProblem atomic.Value
	problem := func(s string) { firstProblem.CompareAndSwap(nil, s) }
	var warm, done sync.WaitGroup
	warm.Add(workers)
	for range workers {
		done.Go(func() {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			sent, sentAfter := 0, 0
			for sentAfter < after {
				isAfter := reloaded.Load() // read before the request is sent
				code, body, err := fetch(c, p.URL+"/")
				if err != nil || code != http.StatusOK {
					failures.Add(1)
					problem(fmt.Sprintf("%d %q %v", code, body, err))
				} else if isAfter && body != "b" {
					wrong.Add(1)
					problem("after the reload a request reached " + body)
				}
				if sent++; sent == warmup {
					warm.Done()
				}
				if isAfter {
					sentAfter++
				}
				if sent > 100_000 {
					problem("runaway worker")
					return
				}
			}
		})
	}
	warm.Wait()
	p.Reload(testConfig(t, upstreamYAML(b.Addr)))
	reloaded.Store(true)
	done.Wait()

	if n := failures.Load(); n != 0 {
		t.Errorf("%d requests failed across the reload; first: %v", n, firstProblem.Load())
	}
	if n := wrong.Load(); n != 0 {
		t.Errorf("%d requests sent after Reload returned reached the old backend; first: %v", n, firstProblem.Load())
	}
	if b.conns.Load() == 0 {
		t.Error("the new backend got no connection")
	}
	// The removed server's pool is retired: nothing idles, nothing leaks.
	if open, idle := oldPool.open.Load(), oldPool.idleCount(); open != 0 || idle != 0 {
		t.Errorf("removed server's pool: %d open, %d idle, want none", open, idle)
	}
}

func TestReloadKeepsPoolOfStayingServer(t *testing.T) {
	a := namedBackend(t, "a")
	b := namedBackend(t, "b")
	p := startProxy(t, upstreamYAML(a.Addr))
	getN(t, p.URL+"/", 1, "a")
	before := poolOf(p, "app", 0)

	// Same server, another upstream and route, changed pool limits.
	next := testConfig(t, `
upstreams:
  - name: app
    keepalive_timeout: 7s
    servers:
      - addr: `+a.Addr+`
  - name: other
    servers:
      - addr: `+b.Addr+`
routes:
  - path_prefix: /
    upstream: app
  - path_prefix: /other/
    upstream: other
`)
	p.Reload(next)
	if after := poolOf(p, "app", 0); after != before {
		t.Fatal("the staying server got a new pool")
	}
	getN(t, p.URL+"/", 3, "a")
	getN(t, p.URL+"/other/x", 1, "b")
	if n := a.conns.Load(); n != 1 {
		t.Errorf("staying server accepted %d connections, want 1: its idle connection was not kept", n)
	}
	if got := before.limits.idleTimeout; got != 7*time.Second {
		t.Errorf("reloaded keepalive_timeout = %v, want 7s", got)
	}
	if v := promValue(t, scrape(t, p), "tollgate_upstream_dials_total", "upstream", "app", "server", a.Addr); v != 1 {
		t.Errorf("dials to the staying server = %v, want 1", v)
	}
}

func TestReloadDrainsRemovedServer(t *testing.T) {
	a, closed := trackedBackend(t, 0, nameHandler("a"))
	b := namedBackend(t, "b")
	p := startProxy(t, upstreamYAML(a.Addr))
	getN(t, p.URL+"/", 1, "a")
	p.Reload(testConfig(t, upstreamYAML(b.Addr)))
	awaitSignal(t, closed, "the removed server's idle connection to close")
	if v := promValue(t, scrape(t, p), "tollgate_connection_closes_total", "side", "upstream", "reason", reasonServerDrained); v != 1 {
		t.Errorf("closes{%s} = %v, want 1", reasonServerDrained, v)
	}
	getN(t, p.URL+"/", 1, "b")
	if v := promValue(t, scrape(t, p), "tollgate_config_reloads_total", "result", "ok"); v != 1 {
		t.Errorf("tollgate_config_reloads_total{result=ok} = %v, want 1", v)
	}
}

// admitted reports whether a TCP connection to addr is accepted.
func admitted(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// eventually polls cond until it holds, failing the test after failAfter.
// For state another goroutine changes without telling (a flag, a closed
// listener); the deadline only bounds a failure.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(failAfter)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func statusOf(t testing.TB, url string) int {
	t.Helper()
	code, _ := get(t, url)
	return code
}

func TestShutdownDrainsInFlight(t *testing.T) {
	entered := make(chan string, 1)
	release := make(chan struct{})
	b := gateBackend(t, "slow", entered, release)
	p, shutdown := startOwnedProxy(t, upstreamYAML(b.Addr))
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)

	if code := statusOf(t, p.Admin+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after Start = %d, want 200", code)
	}
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{}}
		code, body, err := fetch(c, p.URL+"/")
		res <- result{code, body, err}
	}()
	awaitSignal(t, entered, "the request at the backend")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), failAfter)
		defer cancel()
		shut <- shutdown(ctx)
	}()
	eventually(t, "/readyz to answer 503 during shutdown", func() bool {
		return statusOf(t, p.Admin+"/readyz") == http.StatusServiceUnavailable
	})
	if code := statusOf(t, p.Admin+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during shutdown = %d, want 200 (liveness is the process only)", code)
	}
	eventually(t, "the listener to refuse new connections", func() bool { return !admitted(p.Addr) })
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case r := <-res:
		t.Fatalf("the in-flight request ended early: %d %q %v", r.code, r.body, r.err)
	default:
	}

	open()
	r := awaitSignal(t, res, "the in-flight request")
	if r.err != nil || r.code != http.StatusOK || r.body != "slow" {
		t.Errorf("in-flight request: %d %q %v, want 200 slow", r.code, r.body, r.err)
	}
	if err := awaitSignal(t, shut, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
}

// blockingBackend reads a request head, reports it on headSeen and never
// answers; it reports on closed when tollgate closes the connection.
func blockingBackend(t testing.TB) (addr string, headSeen, closed <-chan struct{}) {
	seen, gone := make(chan struct{}, 8), make(chan struct{}, 8)
	addr = rawBackend(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		var head []byte
		for !strings.Contains(string(head), "\r\n\r\n") {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			head = append(head, buf[:n]...)
		}
		seen <- struct{}{}
		io.Copy(io.Discard, c)
		gone <- struct{}{}
	})
	return addr, seen, gone
}

func TestShutdownTimeout(t *testing.T) {
	addr, headSeen, closed := blockingBackend(t)
	p, shutdown := startOwnedProxy(t, upstreamYAML(addr))
	res := make(chan error, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{}}
		_, _, err := fetch(c, p.URL+"/")
		res <- err
	}()
	awaitSignal(t, headSeen, "the request at the backend")

	const grace = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- shutdown(ctx) }()
	err := awaitSignal(t, shut, "Shutdown to give up after its context")
	if elapsed := time.Since(start); elapsed < grace {
		t.Errorf("Shutdown returned after %v, before its %v context ended", elapsed, grace)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if err := awaitSignal(t, res, "the stuck request to end"); err == nil {
		t.Error("the stuck request got a response; want its connection closed")
	}
	awaitSignal(t, closed, "tollgate to close the stuck upstream connection")
}
