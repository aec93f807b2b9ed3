package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests of this file drive one real fault per close reason of
// specs/close-reasons.md over loopback and assert the record tollgate wrote
// for it: reason, initiator, kind, phase and, where the spec says so, the
// cause link to the close on the other side.

// --- Downstream (edge ↔ tollgate) ---

func TestCloseDSIdleClosedByPeer(t *testing.T) {
	addr, _ := recordingBackend(t)
	p := startProxyWithCloses(t, upstreamYAML(addr))
	rc := idleClient(t, p.Addr, "/x")
	rc.c.Close()
	rec := p.expect(t, downstreamClose("ds_idle_closed_by_peer", "peer", "fin", "idle"))
	expectNoCause(t, rec)
	if rec.Requests != 1 || rec.Errno != "EOF" {
		t.Errorf("requests %d errno %q, want 1 EOF", rec.Requests, rec.Errno)
	}
}

func TestCloseDSIdleResetByPeer(t *testing.T) {
	addr, _ := recordingBackend(t)
	p := startProxyWithCloses(t, upstreamYAML(addr))
	rc := idleClient(t, p.Addr, "/x")
	resetConn(t, rc.c)
	rec := p.expect(t, downstreamClose("ds_idle_reset_by_peer", "peer", "rst", "idle"))
	if rec.Errno != "ECONNRESET" {
		t.Errorf("errno %q, want ECONNRESET", rec.Errno)
	}
}

// clientLeavings are the two ways a client leaves mid-request, with the
// kind its close record must say.
var clientLeavings = []struct {
	name  string
	leave func(*testing.T, *rawClient)
	kind  string
}{
	{"fin", func(_ *testing.T, rc *rawClient) { rc.c.Close() }, "fin"},
	{"rst", func(t *testing.T, rc *rawClient) { resetConn(t, rc.c) }, "rst"},
}

func TestCloseDSClientAbortBeforeResponse(t *testing.T) {
	for _, tt := range clientLeavings {
		t.Run(tt.name, func(t *testing.T) {
			addr, headSeen, _ := stallNotify(t)
			p := startProxyWithCloses(t, upstreamYAML(addr))
			rc := dialRaw(t, p.Addr)
			rc.send(t, "GET /wait HTTP/1.1\r\nHost: h\r\nX-Request-ID: abort-1\r\n\r\n")
			waitClosed(t, headSeen, "the backend gets the request")
			tt.leave(t, rc)

			ds := p.expect(t, downstreamClose("ds_client_abort_before_response", "peer", tt.kind, "response_headers"))
			expectNoCause(t, ds)
			us := p.expect(t, upstreamClose("us_cancelled_by_downstream", "proxy", "fin", "response_headers"))
			p.expectCause(t, us, ds.wantClose())
			if ds.RequestID != "abort-1" || us.RequestID != "abort-1" {
				t.Errorf("request_id downstream %q upstream %q, want abort-1 on both", ds.RequestID, us.RequestID)
			}
			if ds.EdgeTimeoutSuspected {
				t.Error("edge_timeout_suspected set for a client that left at once")
			}
			if a := p.accessFor(t, "/wait"); a.Status != 499 || a.DownstreamClose != "ds_client_abort_before_response" {
				t.Errorf("access log status %d downstream_close %q, want 499 ds_client_abort_before_response", a.Status, a.DownstreamClose)
			}
		})
	}
}

func TestCloseDSClientAbortRequestBody(t *testing.T) {
	for _, tt := range clientLeavings {
		t.Run(tt.name, func(t *testing.T) {
			addr, headSeen := headThenStall(t)
			p := startProxyWithCloses(t, upstreamYAML(addr))
			rc := dialRaw(t, p.Addr)
			rc.send(t, "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("a", 50))
			// The head reached the backend, so tollgate is reading the
			// body: the client's end cannot overtake the head.
			waitClosed(t, headSeen, "the backend gets the request head")
			tt.leave(t, rc)

			ds := p.expect(t, downstreamClose("ds_client_abort_request_body", "peer", tt.kind, "request_body"))
			us := p.expect(t, upstreamClose("us_cancelled_by_downstream", "proxy", "fin", "request_body"))
			p.expectCause(t, us, ds.wantClose())
			if ds.BytesIn < 50 {
				t.Errorf("bytes_in %d, want the head and 50 body bytes counted", ds.BytesIn)
			}
		})
	}
}

func TestCloseDSClientAbortResponse(t *testing.T) {
	addr, _ := endlessBackend(t)
	p := startProxyWithCloses(t, upstreamYAML(addr))
	rc := dialRaw(t, p.Addr)
	rc.send(t, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := rc.head("GET")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response head: %v %v, want 200", resp, err)
	}
	resetConn(t, rc.c)

	ds := p.expect(t, downstreamClose("ds_client_abort_response", "peer", "rst", "response_body"))
	if ds.Errno != "ECONNRESET" && ds.Errno != "EPIPE" {
		t.Errorf("errno %q, want ECONNRESET or EPIPE", ds.Errno)
	}
	us := p.expect(t, upstreamClose("us_cancelled_by_downstream", "proxy", "fin", "response_body"))
	p.expectCause(t, us, ds.wantClose())
}

func TestCloseDSIdleTimeout(t *testing.T) {
	addr, _ := recordingBackend(t)
	p := startProxyWithCloses(t, "keepalive_timeout: 200ms\n"+upstreamYAML(addr))
	rc := idleClient(t, p.Addr, "/x")
	awaitEOF(t, rc)
	rec := p.expect(t, downstreamClose("ds_idle_timeout", "proxy", "fin", "idle"))
	if rec.IdleMs < 200 {
		t.Errorf("idle_ms %d, want ≥ keepalive_timeout 200ms", rec.IdleMs)
	}
}

func TestCloseDSHeaderTimeout(t *testing.T) {
	addr, _ := recordingBackend(t)
	p := startProxyWithCloses(t, "client_header_timeout: 200ms\n"+upstreamYAML(addr))
	rc := dialRaw(t, p.Addr)
	rc.send(t, "GET /partial HTTP/1.1\r\nHost: h\r\n") // no blank line
	awaitEOF(t, rc)
	p.expect(t, downstreamClose("ds_header_timeout", "proxy", "timeout", "request_headers"))
}

func TestCloseDSBodyTimeout(t *testing.T) {
	addr, headSeen := headThenStall(t)
	p := startProxyWithCloses(t, "client_body_timeout: 200ms\n"+upstreamYAML(addr))
	rc := dialRaw(t, p.Addr)
	rc.send(t, "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
	waitClosed(t, headSeen, "the backend gets the request head")
	awaitEOF(t, rc)
	ds := p.expect(t, downstreamClose("ds_body_timeout", "proxy", "timeout", "request_body"))
	us := p.expect(t, upstreamClose("us_cancelled_by_downstream", "proxy", "fin", "request_body"))
	p.expectCause(t, us, ds.wantClose())
}

func TestCloseDSWriteTimeout(t *testing.T) {
	addr, writeFailed := endlessBackend(t)
	p := startProxyWithCloses(t, "send_timeout: 300ms\n"+upstreamYAML(addr))
	stuckClient(t, p.Addr, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	waitClosed(t, writeFailed, "the backend's writes fail after tollgate gave up on the client")
	ds := p.expect(t, downstreamClose("ds_write_timeout", "proxy", "timeout", "response_body"))
	us := p.expect(t, upstreamClose("us_cancelled_by_downstream", "proxy", "fin", "response_body"))
	p.expectCause(t, us, ds.wantClose())
}

func TestCloseDSBadRequest(t *testing.T) {
	addr, _ := recordingBackend(t)
	p := startProxyWithCloses(t, upstreamYAML(addr))
	rc := dialRaw(t, p.Addr)
	rc.send(t, "NOT A REQUEST\r\n\r\n")
	if resp, _ := rc.response(t, "GET"); resp.StatusCode != 400 {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	awaitEOF(t, rc)
	p.expect(t, downstreamClose("ds_bad_request", "proxy", "fin", "request_headers"))
}

func TestCloseDSUpstreamAbort(t *testing.T) {
	t.Run("closed during body", func(t *testing.T) {
		p := startProxyWithCloses(t, upstreamYAML(cutBody(t)))
		rc := dialRaw(t, p.Addr)
		rc.send(t, "GET /cut HTTP/1.1\r\nHost: h\r\n\r\n")
		awaitEOF(t, rc)
		ds := p.expect(t, downstreamClose("ds_upstream_abort", "proxy", "fin", "response_body"))
		us := p.expectCause(t, ds, upstreamClose("us_closed_during_body", "peer", "fin", "response_body"))
		expectNoCause(t, us)
	})
	t.Run("reset during body", func(t *testing.T) {
		addr, reset := resetMidBody(t)
		p := startProxyWithCloses(t, upstreamYAML(addr))
		rc := dialRaw(t, p.Addr)
		rc.send(t, "GET /reset HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := rc.head("GET")
		if err != nil {
			t.Fatal(err)
		}
		if got := readN(t, rc, 10); got != "0123456789" || resp.StatusCode != 200 {
			t.Fatalf("client got %d %q, want 200 and the first 10 body bytes", resp.StatusCode, got)
		}
		close(reset)
		awaitEOF(t, rc)
		ds := p.expect(t, downstreamClose("ds_upstream_abort", "proxy", "fin", "response_body"))
		p.expectCause(t, ds, upstreamClose("us_reset_during_body", "peer", "rst", "response_body"))
	})
}

func TestCloseDSKeepaliveLimit(t *testing.T) {
	t.Run("keepalive_requests", func(t *testing.T) {
		addr, _ := recordingBackend(t)
		p := startProxyWithCloses(t, "keepalive_requests: 2\n"+upstreamYAML(addr))
		rc := dialRaw(t, p.Addr)
		for i := range 2 {
			rc.send(t, "GET /n HTTP/1.1\r\nHost: h\r\n\r\n")
			resp, _ := rc.response(t, "GET")
			if resp.Close != (i == 1) {
				t.Errorf("response %d: Connection: close %v, want %v", i+1, resp.Close, i == 1)
			}
		}
		awaitEOF(t, rc)
		rec := p.expect(t, downstreamClose("ds_keepalive_limit", "proxy", "fin", "idle"))
		if rec.Requests != 2 {
			t.Errorf("requests %d, want 2", rec.Requests)
		}
	})
	t.Run("client Connection: close", func(t *testing.T) {
		addr, _ := recordingBackend(t)
		p := startProxyWithCloses(t, upstreamYAML(addr))
		rc := dialRaw(t, p.Addr)
		rc.send(t, "GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		rc.response(t, "GET")
		awaitEOF(t, rc)
		p.expect(t, downstreamClose("ds_keepalive_limit", "peer", "fin", "idle"))
	})
}

func TestCloseDSShutdown(t *testing.T) {
	addr, _ := recordingBackend(t)
	p := startProxyWithCloses(t, upstreamYAML(addr))
	rc := idleClient(t, p.Addr, "/x")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	awaitEOF(t, rc)
	p.expect(t, downstreamClose("ds_shutdown", "proxy", "fin", "idle"))
	// The pooled upstream connection closes with the server.
	p.expect(t, upstreamClose("us_server_drained", "proxy", "fin", "idle"))
}

func TestCloseDSTunnelClosed(t *testing.T) {
	addr, _, sawEOF := upgradeEchoBackend(t, "")
	p := startProxyWithCloses(t, upstreamYAML(addr))
	rc := dialRaw(t, p.Addr)
	rc.send(t, wsHandshake)
	if resp, err := rc.head("GET"); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v, want 101", resp, err)
	}
	rc.c.(interface{ CloseWrite() error }).CloseWrite()
	waitClosed(t, sawEOF, "the backend sees the client's end of stream")
	awaitEOF(t, rc)
	ds := p.expect(t, downstreamClose("ds_tunnel_closed", "peer", "fin", "tunnel"))
	us := p.expectCause(t, ds, upstreamClose("us_tunnel_closed", "peer", "fin", "tunnel"))
	expectNoCause(t, us)
}

// --- Upstream (tollgate ↔ backend) ---

// TestCloseUSBeforeHeaders covers the backend faults tollgate answers with
// 502/504 in place of a response.
func TestCloseUSBeforeHeaders(t *testing.T) {
	tests := []struct {
		name     string
		backend  func(testing.TB) string
		yaml     string
		status   int
		proxyErr string
		want     wantClose
	}{
		{"refused", refusingAddr, "", 502, "connection_refused",
			upstreamClose("us_connect_refused", "peer", "refused", "connect")},
		{"connect timeout", fullBacklogAddr, "proxy_connect_timeout: 200ms\n", 504, "connection_timeout",
			upstreamClose("us_connect_timeout", "network", "timeout", "connect")},
		{"unreachable", unreachableAddr, "", 502, "destination_unavailable",
			upstreamClose("us_connect_unreachable", "network", "error", "connect")},
		{"dns failure", unresolvableAddr, "", 502, "dns_error",
			upstreamClose("us_dns_failure", "network", "error", "connect")},
		{"reset before headers", resetBeforeHeaders, "", 502, "connection_terminated",
			upstreamClose("us_reset_before_headers", "peer", "rst", "response_headers")},
		{"closed before headers", acceptThenClose, "", 502, "connection_terminated",
			upstreamClose("us_closed_before_headers", "peer", "fin", "response_headers")},
		{"header timeout", stallingBackend, "proxy_read_timeout: 200ms\n", 504, "http_response_timeout",
			upstreamClose("us_header_timeout", "proxy", "timeout", "response_headers")},
		{"bad response", malformedResponse, "", 502, "http_protocol_error",
			upstreamClose("us_bad_response", "peer", "error", "response_headers")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxyWithCloses(t, tt.yaml+upstreamYAML(tt.backend(t)))
			failedGet(t, p, "/fail", tt.status, tt.proxyErr, tt.want.reason)
			rec := p.expect(t, tt.want)
			expectNoCause(t, rec)
			a := p.accessFor(t, "/fail")
			if rec.RequestID == "" || rec.RequestID != a.RequestID || a.UpstreamClose != tt.want.reason {
				t.Errorf("record request_id %q, access log request_id %q upstream_close %q; want the same id and %s",
					rec.RequestID, a.RequestID, a.UpstreamClose, tt.want.reason)
			}
			if tt.want.phase != "connect" && (rec.Reused == nil || *rec.Reused) {
				t.Errorf("reused %v, want false: a fresh connection", rec.Reused)
			}
		})
	}
}

func TestCloseUSReusedConnClosed(t *testing.T) {
	t.Run("GET retried", func(t *testing.T) {
		addr, seen := closeOnSecondRequest(t)
		p := startProxyWithCloses(t, upstreamYAML(addr))
		rc := dialRaw(t, p.Addr)
		for _, path := range []string{"/warm", "/race"} {
			rc.send(t, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
			if resp, body := rc.response(t, "GET"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("GET %s: %d %q, want 200 ok (the race retried on a fresh connection)", path, resp.StatusCode, body)
			}
		}
		for _, want := range []string{"GET /warm HTTP/1.1", "GET /race HTTP/1.1", "GET /race HTTP/1.1"} {
			if got := awaitSignal(t, seen, "a request at the backend"); got != want {
				t.Errorf("backend saw %q, want %q", got, want)
			}
		}
		rec := p.expect(t, upstreamClose("us_reused_conn_closed", "peer", "fin", "response_headers"))
		if rec.Reused == nil || !*rec.Reused || rec.WasIdleMs == nil {
			t.Errorf("reused %v was_idle_ms %v, want a reused connection with its idle time", rec.Reused, rec.WasIdleMs)
		}
		a := p.accessFor(t, "/race")
		if a.Status != 200 || a.UpstreamStatus != "502, 200" || a.UpstreamClose != "us_reused_conn_closed, -" {
			t.Errorf("access log %d upstream_status %q upstream_close %q; want 200 \"502, 200\" \"us_reused_conn_closed, -\"",
				a.Status, a.UpstreamStatus, a.UpstreamClose)
		}
	})
	t.Run("POST not retried", func(t *testing.T) {
		addr, seen := closeOnSecondRequest(t)
		p := startProxyWithCloses(t, upstreamYAML(addr))
		rc := dialRaw(t, p.Addr)
		rc.send(t, "GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
		rc.response(t, "GET")
		rc.send(t, "POST /post HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
		resp, _ := rc.response(t, "POST")
		want := `tollgate; error=connection_terminated; details="us_reused_conn_closed"`
		if resp.StatusCode != 502 || resp.Header.Get("Proxy-Status") != want {
			t.Errorf("POST: %d Proxy-Status %q, want 502 %q", resp.StatusCode, resp.Header.Get("Proxy-Status"), want)
		}
		awaitSignal(t, seen, "the warm-up request")
		awaitSignal(t, seen, "the POST at the backend")
		select {
		case s := <-seen:
			t.Errorf("backend saw %q after the failed POST: a POST whose bytes reached the backend was resent", s)
		default:
		}
		p.expect(t, upstreamClose("us_reused_conn_closed", "peer", "fin", "response_headers"))
		if a := p.accessFor(t, "/post"); a.Status != 502 || a.UpstreamStatus != "502" {
			t.Errorf("access log %d upstream_status %q, want 502 \"502\"", a.Status, a.UpstreamStatus)
		}
	})
}

func TestCloseUSBodyTimeout(t *testing.T) {
	p := startProxyWithCloses(t, "proxy_read_timeout: 200ms\n"+upstreamYAML(stallBody(t)))
	rc := dialRaw(t, p.Addr)
	rc.send(t, "GET /stall HTTP/1.1\r\nHost: h\r\n\r\n")
	awaitEOF(t, rc)
	ds := p.expect(t, downstreamClose("ds_upstream_abort", "proxy", "fin", "response_body"))
	p.expectCause(t, ds, upstreamClose("us_body_timeout", "proxy", "timeout", "response_body"))
}

func TestCloseUSIdleClosedByPeer(t *testing.T) {
	// The backend closes idle connections after 50ms; the next request
	// finds the FIN with takeIdle's peek and dials afresh.
	b, closed := trackedBackend(t, 50*time.Millisecond, nameHandler("one"))
	p := startProxyWithCloses(t, upstreamYAML(b.Addr))
	getN(t, p.URL+"/first", 1, "one")
	awaitSignal(t, closed, "the backend to close its idle connection")
	// tollgate's idle clock starts a little after the backend's: wait until
	// its connection is idle long enough to be peeked at before reuse, or
	// the request would race the FIN (us_reused_conn_closed, retried).
	pool := poolOf(p.testProxy, "app", 0)
	pool.mu.Lock()
	idleSince := pool.idle[0].idleSince
	pool.mu.Unlock()
	time.Sleep(time.Until(idleSince.Add(peekAfterIdle)))
	getN(t, p.URL+"/second", 1, "one")
	rec := p.expect(t, upstreamClose("us_idle_closed_by_peer", "peer", "fin", "idle"))
	if rec.IdleMs < 50 {
		t.Errorf("idle_ms %d, want ≥ 50 (the backend's idle timeout)", rec.IdleMs)
	}
	if n := p.count(t, "upstream", "us_reused_conn_closed"); n != 0 {
		t.Errorf("%d us_reused_conn_closed: the request raced the backend's close", n)
	}
}

func TestCloseUSIdleTimeout(t *testing.T) {
	addr, _ := recordingBackend(t)
	p := startProxyWithCloses(t, strings.Replace(upstreamYAML(addr), "    servers:", "    keepalive_timeout: 200ms\n    servers:", 1))
	getN(t, p.URL+"/x", 1, "ok")
	pool := poolOf(p.testProxy, "app", 0)
	pool.mu.Lock()
	var idleSince time.Time
	if len(pool.idle) == 1 { // else the server's own sweeper was first
		idleSince = pool.idle[0].idleSince
	}
	pool.mu.Unlock()
	if !idleSince.IsZero() {
		pool.sweep(idleSince.Add(200 * time.Millisecond))
	}
	p.expect(t, upstreamClose("us_idle_timeout", "proxy", "fin", "idle"))
}

// TestCloseUSLearnedIdleTimeout: a backend that announces "Keep-Alive:
// timeout=1" gets its idle connections retired before that second is up,
// so a request never races its close.
func TestCloseUSLearnedIdleTimeout(t *testing.T) {
	addr, _, _ := scriptedBackend(t, func(seenRequest) string {
		return "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok"
	})
	p := startProxyWithCloses(t, upstreamYAML(addr)) // upstream keepalive_timeout: 4s default
	getN(t, p.URL+"/x", 1, "ok")
	pool := poolOf(p.testProxy, "app", 0)
	pool.mu.Lock()
	if len(pool.idle) != 1 {
		pool.mu.Unlock()
		t.Fatalf("%d idle connections, want 1", len(pool.idle))
	}
	idleSince, learned := pool.idle[0].idleSince, pool.limitsNow().idleTimeout
	pool.mu.Unlock()
	if learned <= 0 || learned >= time.Second {
		t.Fatalf("idle timeout %v after Keep-Alive: timeout=1, want under 1s", learned)
	}
	pool.sweep(idleSince.Add(learned - time.Millisecond))
	if n := pool.idleCount(); n != 1 {
		t.Fatalf("sweep before the learned timeout left %d idle, want 1", n)
	}
	pool.sweep(idleSince.Add(learned))
	if n := pool.idleCount(); n != 0 {
		t.Fatalf("sweep at the learned timeout %v left %d idle, want 0", learned, n)
	}
	p.expect(t, upstreamClose("us_idle_timeout", "proxy", "fin", "idle"))
}

func TestCloseUSPoolOverflow(t *testing.T) {
	addr := barrierBackend(t, 2)
	p := startProxyWithCloses(t, strings.Replace(upstreamYAML(addr), "    servers:", "    keepalive: 1\n    servers:", 1))
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			code, body, err := fetch(newClient(t), p.URL+"/x")
			if err == nil && (code != 200 || body != "ok") {
				err = fmt.Errorf("%d %q, want 200 ok", code, body)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	p.expect(t, upstreamClose("us_pool_overflow", "proxy", "fin", "idle"))
	if n := poolOf(p.testProxy, "app", 0).idleCount(); n != 1 {
		t.Errorf("%d idle, want keepalive 1", n)
	}
}

func TestCloseUSKeepaliveLimit(t *testing.T) {
	t.Run("backend Connection: close", func(t *testing.T) {
		addr, _, _ := scriptedBackend(t, func(seenRequest) string {
			return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
		})
		p := startProxyWithCloses(t, upstreamYAML(addr))
		getN(t, p.URL+"/x", 1, "ok")
		p.expect(t, upstreamClose("us_keepalive_limit", "peer", "fin", "idle"))
	})
	t.Run("keepalive_requests", func(t *testing.T) {
		addr, _ := recordingBackend(t)
		p := startProxyWithCloses(t, strings.Replace(upstreamYAML(addr), "    servers:", "    keepalive_requests: 2\n    servers:", 1))
		getN(t, p.URL+"/x", 2, "ok")
		rec := p.expect(t, upstreamClose("us_keepalive_limit", "proxy", "fin", "idle"))
		if rec.Requests != 2 {
			t.Errorf("requests %d, want 2", rec.Requests)
		}
	})
}

func TestCloseUSServerDrained(t *testing.T) {
	a, _ := recordingBackend(t)
	b, _ := recordingBackend(t)
	p := startProxyWithCloses(t, upstreamYAML(a))
	getN(t, p.URL+"/x", 1, "ok")
	p.Reload(testConfig(t, upstreamYAML(b)))
	rec := p.expect(t, upstreamClose("us_server_drained", "proxy", "fin", "idle"))
	if rec.Server != a {
		t.Errorf("server %q, want the removed %s", rec.Server, a)
	}
}

// --- Outputs: metrics, /debug/closes, the record's JSON ---

func TestCloseMetric(t *testing.T) {
	p := startProxyWithCloses(t, upstreamYAML(refusingAddr(t)))
	labels := []string{"side", "upstream", "reason", "us_connect_refused", "initiator", "peer"}
	if v := promValue(t, scrape(t, p.testProxy), "tollgate_connection_closes_total", labels...); v != 0 {
		t.Fatalf("closes{us_connect_refused} = %v before any request", v)
	}
	for range 2 {
		failedGet(t, p, "/x", 502, "connection_refused", "us_connect_refused")
	}
	if v := promValue(t, scrape(t, p.testProxy), "tollgate_connection_closes_total", labels...); v != 2 {
		t.Errorf("closes{us_connect_refused, peer} = %v, want 2", v)
	}
}

func TestCloseDebugEndpoint(t *testing.T) {
	p := startCloseProxy(t, upstreamYAML(refusingAddr(t)), 5)
	// Each request leaves two records, in order: the refused connect, then
	// the client's close of its connection.
	for i := 1; i <= 3; i++ {
		rid := fmt.Sprintf("rid-%d", i)
		rc := dialRaw(t, p.Addr)
		rc.send(t, "GET /x HTTP/1.1\r\nHost: h\r\nX-Request-ID: "+rid+"\r\n\r\n")
		rc.response(t, "GET")
		rc.c.Close()
		p.awaitRecord(t, "downstream "+rid, func(r *closeRecord) bool { return r.Side == "downstream" && r.RequestID == rid })
	}
	for _, tt := range []struct {
		query string
		want  string
	}{
		// A ring of 5 keeps the last 5 of 6 records, oldest first.
		{"", "d:rid-1 u:rid-2 d:rid-2 u:rid-3 d:rid-3"},
		{"?side=upstream", "u:rid-2 u:rid-3"},
		{"?reason=ds_idle_closed_by_peer", "d:rid-1 d:rid-2 d:rid-3"},
		{"?request_id=rid-2", "u:rid-2 d:rid-2"},
		{"?side=downstream&request_id=rid-3", "d:rid-3"},
		{"?reason=us_connect_refused&request_id=rid-1", ""}, // evicted
		{"?request_id=nobody", ""},
	} {
		if got := strings.Join(getCloses(t, p, tt.query), " "); got != tt.want {
			t.Errorf("/debug/closes%s: %q, want %q", tt.query, got, tt.want)
		}
	}

	resp, err := http.Get(p.Admin + "/debug/closes/summary")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var summary map[string]map[string]int64
	if err := json.NewDecoder(resp.Body).Decode(&summary); err != nil {
		t.Fatal(err)
	}
	// Counts are since start, evicted records included.
	want := map[string]map[string]int64{
		"downstream": {"ds_idle_closed_by_peer": 3},
		"upstream":   {"us_connect_refused": 3},
	}
	if fmt.Sprint(summary) != fmt.Sprint(want) {
		t.Errorf("/debug/closes/summary = %v, want %v", summary, want)
	}
}

// TestCloseRecordJSON pins the record's field names, a public interface.
func TestCloseRecordJSON(t *testing.T) {
	p := startProxyWithCloses(t, upstreamYAML(cutBody(t)))
	rc := dialRaw(t, p.Addr)
	rc.send(t, "GET /cut HTTP/1.1\r\nHost: h\r\nX-Request-ID: json-1\r\n\r\n")
	awaitEOF(t, rc)
	p.awaitClose(t, "downstream", "ds_upstream_abort")
	for line := range strings.SplitSeq(strings.TrimSpace(p.closes.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["side"] != "upstream" {
			continue
		}
		for _, k := range []string{"time", "msg", "conn_id", "side", "reason", "initiator", "kind", "phase",
			"errno", "error", "tcp", "requests", "age_ms", "idle_ms", "bytes_in", "bytes_out", "reused",
			"request_id", "peer", "local", "upstream", "server"} {
			if _, ok := m[k]; !ok {
				t.Errorf("upstream record has no %q: %s", k, line)
			}
		}
		if m["msg"] != "close" || m["request_id"] != "json-1" || !strings.HasPrefix(m["conn_id"].(string), "u") {
			t.Errorf("msg %v request_id %v conn_id %v, want close json-1 u…", m["msg"], m["request_id"], m["conn_id"])
		}
		if tcp, _ := m["tcp"].(map[string]any); tcp["state"] != "CLOSE_WAIT" {
			t.Errorf("tcp %v, want state CLOSE_WAIT: the backend sent its FIN first", m["tcp"])
		}
	}
}

// TestCloseEdgeTimeoutSuspected: a client that gives up about when the
// edge's proxy_read_timeout fires is flagged, so the 504 Nginx logged
// itself can be told from a client that went away.
func TestCloseEdgeTimeoutSuspected(t *testing.T) {
	backend := stallingBackend(t)
	p := startProxyWithCloses(t, "edge_proxy_read_timeout: 2s\n"+upstreamYAML(backend))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(1500 * time.Millisecond) // inside (edge-1s, edge+1s)
	c.Close()
	rec := p.expect(t, downstreamClose(reasonDSAbortBeforeResp, byPeer, kindFIN, "response_headers"))
	if !rec.EdgeTimeoutSuspected {
		t.Errorf("record not flagged edge_timeout_suspected: %+v", rec)
	}
}

// TestCloseDSNetworkTimeout: a client that stops acknowledging (its window
// closed, as a vanished host looks to the kernel) is given up on by the
// kernel after tcp_user_timeout with ETIMEDOUT: ds_network_timeout, the
// network's doing, not tollgate's send_timeout.
func TestCloseDSNetworkTimeout(t *testing.T) {
	addr, writeFailed := endlessBackend(t)
	p := startProxyWithCloses(t, "tcp_user_timeout: 1s\nsend_timeout: 30s\n"+upstreamYAML(addr))
	stuckClient(t, p.Addr, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	waitClosed(t, writeFailed, "the backend's writes fail after the kernel gave up on the client")
	ds := p.expect(t, downstreamClose(reasonDSNetworkTimeout, byNetwork, kindTimeout, "response_body"))
	if ds.Errno != "ETIMEDOUT" {
		t.Errorf("errno %q, want ETIMEDOUT", ds.Errno)
	}
	us := p.expect(t, upstreamClose(reasonCancelledByDS, byProxy, kindFIN, "response_body"))
	p.expectCause(t, us, ds.wantClose())
}

// TestCloseUSNetworkTimeout: a backend that stops acknowledging a request
// body is given up on after the upstream's tcp_user_timeout: the client gets
// 504 with Proxy-Status connection_timeout, and the record says
// us_network_timeout.
func TestCloseUSNetworkTimeout(t *testing.T) {
	done := make(chan struct{})
	backend := rawBackend(t, func(c net.Conn) {
		c.(*net.TCPConn).SetReadBuffer(4096)
		<-done // never reads: its window closes
	})
	t.Cleanup(func() { close(done) }) // runs before rawBackend's cleanup waits
	yaml := strings.Replace(upstreamYAML(backend), "    servers:", "    tcp_user_timeout: 1s\n    servers:", 1)
	p := startProxyWithCloses(t, "proxy_send_timeout: 30s\nproxy_read_timeout: 30s\nclient_max_body_size: 0\n"+yaml)
	// A raw client sends the body in the background and reads the answer
	// meanwhile: tollgate answers before the body is through, and a client
	// that only reads after sending would see its own write fail first.
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 16 << 20
	go func() {
		io.WriteString(c, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size))
		chunk := []byte(strings.Repeat("x", 64<<10))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode != 504 || !strings.Contains(resp.Header.Get("Proxy-Status"), "error=connection_timeout") {
		t.Fatalf("status %d Proxy-Status %q, want 504 connection_timeout", resp.StatusCode, resp.Header.Get("Proxy-Status"))
	}
	rec := p.expect(t, upstreamClose(reasonNetworkTimeout, byNetwork, kindTimeout, "request_body"))
	if rec.Errno != "ETIMEDOUT" {
		t.Errorf("errno %q, want ETIMEDOUT", rec.Errno)
	}
}

// TestCloseDSConnLimit: a connection over max_connections (or over
// max_connections_per_ip for its address) gets its request answered 503
// with Connection: close and a Proxy-Status naming the cap, and its close is
// ds_conn_limit, not a reset.
func TestCloseDSConnLimit(t *testing.T) {
	for _, limit := range []string{"max_connections", "max_connections_per_ip"} {
		t.Run(limit, func(t *testing.T) {
			b := namedBackend(t, "ok")
			p := startProxyWithCloses(t, limit+": 1\n"+upstreamYAML(b.Addr))
			first, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			io.WriteString(first, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(first), nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("first connection: %v %v", resp, err)
			}
			resp, _ := rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			want := `tollgate; error=connection_limit_reached; details="` + limit + `"`
			if resp.StatusCode != 503 || !resp.Close || resp.Header.Get("Proxy-Status") != want {
				t.Fatalf("second connection: %d close=%v Proxy-Status %q", resp.StatusCode, resp.Close, resp.Header.Get("Proxy-Status"))
			}
			p.expect(t, downstreamClose(reasonDSConnLimit, byProxy, kindFIN, "idle"))
		})
	}
}
