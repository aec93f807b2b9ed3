package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// h2Proxy runs tollgate with an HTTPS listener (extra is appended to the
// listener's YAML, rest after it) and returns an HTTP/2-only client that
// trusts its certificate.
func h2Proxy(t *testing.T, extra, rest string) (*closeProxy, *http.Client) {
	t.Helper()
	certFile, keyFile, pool := selfSigned(t)
	p := startProxyWithCloses(t, "listen:\n  - addr: 127.0.0.1:0\n"+extra+"    tls:\n      cert_file: "+certFile+
		"\n      key_file: "+keyFile+"\n"+rest)
	var protos http.Protocols
	protos.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: &protos}
	t.Cleanup(tr.CloseIdleConnections)
	return p, &http.Client{Transport: tr}
}

// TestHTTP2ToHTTP1Backend: an HTTP/2 client through tollgate reaches an
// HTTP/1.1 backend: Host from :authority, the target from :path, bodies of
// known and unknown length, cookies joined, forwarding fields set, and the
// response (with trailers) back over HTTP/2.
func TestHTTP2ToHTTP1Backend(t *testing.T) {
	addr, seen := scriptedBackendReply(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nX-Up: yes\r\n\r\n"+
		"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n")
	p, client := h2Proxy(t, "", upstreamYAML(addr))

	req, _ := http.NewRequest("POST", "https://"+p.Addr+"/up/load?q=1", io.MultiReader(strings.NewReader("part1-"), strings.NewReader("part2")))
	req.ContentLength = -1 // unknown length: DATA frames without content-length
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("got %s %d %q (%v), want HTTP/2 200 hello", resp.Proto, resp.StatusCode, body, err)
	}
	if resp.Header.Get("X-Up") != "yes" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("X-Up %q, trailer X-Sum %q: the backend's fields and trailer must reach the client",
			resp.Header.Get("X-Up"), resp.Trailer.Get("X-Sum"))
	}
	if resp.Header.Get("Transfer-Encoding") != "" || resp.Header.Get("Connection") != "" {
		t.Errorf("HTTP/1.1 framing fields leaked into the HTTP/2 response: %v", resp.Header)
	}
	got := nextSeen(t, seen)
	if got.Line != "POST /up/load?q=1 HTTP/1.1" || got.Header.Get("Host") != p.Addr {
		t.Errorf("backend saw %q Host %q", got.Line, got.Header.Get("Host"))
	}
	if !got.Chunked || got.Body != "part1-part2" {
		t.Errorf("body chunked=%v %q, want the unknown-length body chunked", got.Chunked, got.Body)
	}
	if got.Header.Get("Cookie") != "a=1; b=2" || len(got.Header["Cookie"]) != 1 {
		t.Errorf("Cookie fields %q, want one joined field (RFC 9113 §8.2.3)", got.Header["Cookie"])
	}
	if got.Header.Get("X-Forwarded-Proto") != "https" || got.Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("forwarding fields %q %q", got.Header.Get("X-Forwarded-Proto"), got.Header.Get("X-Forwarded-For"))
	}

	// A known length stays a Content-Length.
	resp, err = client.Post("https://"+p.Addr+"/sized", "text/plain", strings.NewReader("0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	got = nextSeen(t, seen)
	if got.Chunked || got.Header.Get("Content-Length") != "10" || got.Body != "0123456789" {
		t.Errorf("sized body: chunked=%v CL %q %q", got.Chunked, got.Header.Get("Content-Length"), got.Body)
	}
	if a := p.accessFor(t, "/sized"); a.Status != 200 {
		t.Errorf("access log status %d", a.Status)
	}
	if !strings.Contains(p.log.String(), `"protocol":"HTTP/2.0"`) {
		t.Errorf("access log does not say HTTP/2.0:\n%s", p.log.String())
	}
}

// scriptedBackendReply answers every request with the same raw reply.
func scriptedBackendReply(t *testing.T, reply string) (string, <-chan seenRequest) {
	addr, seen, _ := scriptedBackend(t, func(seenRequest) string { return reply })
	return addr, seen
}

// TestHTTP2StreamResetIsClientAbort: a client that resets its stream while
// the backend thinks gets the stream tagged ds_client_abort_before_response
// (with the backend connection's us_cancelled_by_downstream linked), and
// the connection itself goes on serving other streams.
func TestHTTP2StreamResetIsClientAbort(t *testing.T) {
	stall, headSeen := headThenStall(t)
	ok := namedBackend(t, "fine")
	p, client := h2Proxy(t, "", "upstreams:\n  - name: slow\n    servers: [{addr: "+stall+"}]\n"+
		"  - name: ok\n    servers: [{addr: "+ok.Addr+"}]\n"+
		"routes:\n  - path_prefix: /slow\n    upstream: slow\n  - path_prefix: /\n    upstream: ok\n")

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+p.Addr+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-headSeen:
	case <-time.After(waitLimit):
		t.Fatal("the backend never saw the request")
	}
	cancel() // RST_STREAM (CANCEL)
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error %v, want its own cancellation", err)
	}
	rec := p.expect(t, downstreamClose(reasonDSAbortBeforeResp, byPeer, kindRST, "response_headers"))
	if rec.Protocol != "h2" || rec.StreamOf == "" {
		t.Errorf("stream record protocol %q stream_of %q, want h2 and the connection's id", rec.Protocol, rec.StreamOf)
	}
	expectNoCause(t, rec)
	up := p.expect(t, upstreamClose(reasonCancelledByDS, byProxy, kindFIN, "response_headers"))
	if up.CauseConnID != rec.ConnID {
		t.Errorf("upstream cancellation names %q as its cause, want the stream %s", up.CauseConnID, rec.ConnID)
	}

	// The same connection serves the next stream.
	resp, err := client.Get("https://" + p.Addr + "/after")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "fine" {
		t.Errorf("next stream got %q", body)
	}
	for _, r := range p.records(t) {
		if r.ConnID == rec.StreamOf {
			t.Errorf("the connection closed (%s) with its stream: %+v", r.Reason, r)
		}
	}
}

// TestHTTP2BackendCutsBody: a backend that dies mid-body makes tollgate
// reset the stream (the client must not take a cut body for a whole one),
// tagged ds_upstream_abort and linked to the backend's close.
func TestHTTP2BackendCutsBody(t *testing.T) {
	addr, reset := resetMidBody(t)
	p, client := h2Proxy(t, "", upstreamYAML(addr))
	resp, err := client.Get("https://" + p.Addr + "/cut")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("first bytes: %v", err)
	}
	close(reset)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("the cut body read to a clean end, want a stream error")
	}
	rec := p.expect(t, downstreamClose(reasonDSUpstreamAbort, byProxy, kindRST, "response_body"))
	if rec.StreamOf == "" {
		t.Error("no stream_of on the stream's record")
	}
	p.expectCause(t, rec, upstreamClose(reasonResetDuringBody, byPeer, kindRST, "response_body"))
}

// TestHTTP2ConnectionCloses: the TCP connection under HTTP/2 keeps its own
// reasons: closed by the client when idle, and tollgate's idle timeout
// (keepalive_timeout, answered with GOAWAY).
func TestHTTP2ConnectionCloses(t *testing.T) {
	b := namedBackend(t, "x")
	p, client := h2Proxy(t, "", "keepalive_timeout: 300ms\n"+upstreamYAML(b.Addr))
	if code, _ := h2Get(t, client, "https://"+p.Addr+"/a"); code != 200 {
		t.Fatalf("status %d", code)
	}
	rec := p.expect(t, downstreamClose(reasonDSIdleTimeout, byProxy, kindFIN, "idle"))
	if rec.Protocol != "h2" || rec.StreamOf != "" || rec.Requests != 1 {
		t.Errorf("connection record protocol %q stream_of %q requests %d", rec.Protocol, rec.StreamOf, rec.Requests)
	}

	p2, client2 := h2Proxy(t, "", upstreamYAML(b.Addr))
	if code, _ := h2Get(t, client2, "https://"+p2.Addr+"/a"); code != 200 {
		t.Fatalf("status %d", code)
	}
	client2.Transport.(*http.Transport).CloseIdleConnections()
	rec = p2.expect(t, downstreamClose(reasonDSIdleClosedByPeer, byPeer, kindFIN, "idle"))
	if rec.Protocol != "h2" {
		t.Errorf("protocol %q", rec.Protocol)
	}
}

func h2Get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 {
		t.Fatalf("served over %s, want HTTP/2", resp.Proto)
	}
	return resp.StatusCode, string(body)
}

// TestHTTP2SamePipeline: limit_req and retries behave on HTTP/2 streams as
// on HTTP/1.1 requests: the second request over the rate is rejected, a
// refused server is retried on the next.
func TestHTTP2SamePipeline(t *testing.T) {
	b := namedBackend(t, "second")
	p, client := h2Proxy(t, "", "limit_req_zones:\n  - name: per_ip\n    key: $binary_remote_addr\n    size: 1m\n    rate: 1r/m\n"+
		"upstreams:\n  - name: app\n    servers: [{addr: "+refusingAddr(t)+"}, {addr: "+b.Addr+"}]\n"+
		"routes:\n  - path_prefix: /limited\n    upstream: app\n    limit_req: [{zone: per_ip}]\n"+
		"  - path_prefix: /\n    upstream: app\n")
	// Smooth round robin starts on the first server, which refuses.
	if code, body := h2Get(t, client, "https://"+p.Addr+"/retried"); code != 200 || body != "second" {
		t.Fatalf("got %d %q, want the refused server retried on the next", code, body)
	}
	if a := p.accessFor(t, "/retried"); a.UpstreamStatus != "502, 200" || a.UpstreamClose != "us_connect_refused, -" {
		t.Errorf("upstream_status %q upstream_close %q, want a refused try then the next server", a.UpstreamStatus, a.UpstreamClose)
	}
	codes := []int{}
	for range 2 {
		code, _ := h2Get(t, client, "https://"+p.Addr+"/limited")
		codes = append(codes, code)
	}
	if codes[0] != 200 || codes[1] != 503 {
		t.Errorf("limit_req statuses %v, want [200 503]", codes)
	}
}

// TestH2CPriorKnowledge: a plain listener with h2c serves HTTP/2 clients
// that start with the preface, and HTTP/1.1 clients as before (including
// a request shorter than the preface).
func TestH2CPriorKnowledge(t *testing.T) {
	b := namedBackend(t, "plain")
	p := startProxyWithCloses(t, "listen:\n  - addr: 127.0.0.1:0\n    h2c: true\n"+upstreamYAML(b.Addr))
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	if code, body := h2Get(t, &http.Client{Transport: tr}, p.URL+"/h2c"); code != 200 || body != "plain" {
		t.Fatalf("h2c: %d %q", code, body)
	}
	resp, body := rawRequest(t, p.Addr, "GET / HTTP/1.0\r\n\r\n")
	if resp.StatusCode != 200 || string(body) != "plain" {
		t.Fatalf("HTTP/1.0 on an h2c listener: %d %q", resp.StatusCode, body)
	}

	// Without h2c, the preface is a malformed HTTP/1.1 request.
	p2 := startProxy(t, upstreamYAML(b.Addr))
	c, err := net.Dial("tcp", p2.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, h2Preface)
	reply, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(reply), "HTTP/1.1 4") && !strings.HasPrefix(string(reply), "HTTP/1.1 5") {
		t.Errorf("preface on a plain listener answered %q, want an HTTP/1.1 error", reply)
	}
}

// TestHTTP2Off: http: false offers only HTTP/1.1 by ALPN.
func TestHTTP2Off(t *testing.T) {
	b := namedBackend(t, "one")
	certFile, keyFile, pool := selfSigned(t)
	p := startProxy(t, "listen:\n  - addr: 127.0.0.1:0\n    http2: false\n    tls:\n      cert_file: "+certFile+
		"\n      key_file: "+keyFile+"\n"+upstreamYAML(b.Addr))
	c, err := tls.Dial("tcp", p.Addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Errorf("ALPN chose %q, want http/1.1", got)
	}
}

// TestHTTP2BodyTimeout: a client that stops sending its request body gets
// client_body_timeout as on HTTP/1.1: 408 logged, the stream tagged
// ds_body_timeout, the connection kept.
func TestHTTP2BodyTimeout(t *testing.T) {
	addr, _ := recordingBackend(t)
	p, client := h2Proxy(t, "", "client_body_timeout: 200ms\n"+upstreamYAML(addr))
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", "https://"+p.Addr+"/upload", pr)
	req.ContentLength = 100
	go pw.Write([]byte("0123456789")) // then nothing
	resp, err := client.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	rec := p.expect(t, downstreamClose(reasonDSBodyTimeout, byProxy, kindTimeout, "request_body"))
	if rec.StreamOf == "" {
		t.Error("no stream_of")
	}
	if a := p.accessFor(t, "/upload"); a.Status != http.StatusRequestTimeout {
		t.Errorf("access status %d, want 408", a.Status)
	}
}

// TestHTTP2SlowReader: a client that stops reading (its flow-control window
// full) hits send_timeout as an HTTP/1.1 client does: the stream is
// tagged ds_write_timeout and reset, the connection kept.
func TestHTTP2SlowReader(t *testing.T) {
	big := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 512 { // 32 MiB, far beyond any window
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	p, client := h2Proxy(t, "", "send_timeout: 300ms\n"+upstreamYAML(big.Addr))
	resp, err := client.Get("https://" + p.Addr + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	rec := p.expect(t, downstreamClose(reasonDSWriteTimeout, byProxy, kindTimeout, "response_body"))
	if rec.StreamOf == "" || rec.Protocol != "h2" {
		t.Errorf("stream_of %q protocol %q", rec.StreamOf, rec.Protocol)
	}
}

// TestHTTP2GracefulShutdown: Shutdown sends GOAWAY and lets a stream in
// flight finish before the connection closes as ds_shutdown.
func TestHTTP2GracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	}))
	p, client := h2Proxy(t, "", upstreamYAML(b.Addr))
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get("https://" + p.Addr + "/long")
		if err != nil {
			done <- result{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(body), err}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond) // let GOAWAY go out while the stream is open
	close(release)
	if r := <-done; r.err != nil || r.body != "finished" {
		t.Fatalf("stream in flight at shutdown: %q %v, want it finished", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	p.expect(t, downstreamClose(reasonDSShutdown, byProxy, kindFIN, "idle"))
}

// TestHTTP2ProtocolError: a connection that breaks the HTTP/2 protocol is
// answered with GOAWAY and closed as ds_bad_request.
func TestHTTP2ProtocolError(t *testing.T) {
	b := namedBackend(t, "x")
	p := startProxyWithCloses(t, "listen:\n  - addr: 127.0.0.1:0\n    h2c: true\n"+upstreamYAML(b.Addr))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The preface, then a DATA frame on stream 0, which RFC 9113 §6.1
	// makes a connection error.
	io.WriteString(c, h2Preface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00"+"\x00\x00\x04\x00\x00\x00\x00\x00\x00ABCD")
	io.Copy(io.Discard, c)
	rec := p.expect(t, downstreamClose(reasonDSBadRequest, byProxy, kindFIN, "idle"))
	if rec.Protocol != "h2" {
		t.Errorf("protocol %q", rec.Protocol)
	}
}

// TestHTTP2DeadlinesEndWithStream: send_timeout stays armed after a
// stream's last write; it must not fire once the stream is over (its
// ResponseWriter is gone then).
func TestHTTP2DeadlinesEndWithStream(t *testing.T) {
	b := namedBackend(t, "ok")
	p, client := h2Proxy(t, "", "send_timeout: 50ms\nclient_body_timeout: 50ms\n"+upstreamYAML(b.Addr))
	for range 3 {
		if code, body := h2Get(t, client, "https://"+p.Addr+"/a"); code != 200 || body != "ok" {
			t.Fatalf("got %d %q", code, body)
		}
		resp, err := client.Post("https://"+p.Addr+"/b", "text/plain", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(200 * time.Millisecond) // past every deadline the streams armed
	if code, _ := h2Get(t, client, "https://"+p.Addr+"/after"); code != 200 {
		t.Fatalf("after the deadlines passed: %d", code)
	}
	for _, r := range p.records(t) {
		if r.StreamOf != "" {
			t.Errorf("a stream that ended normally has a close record: %+v", r)
		}
	}
}

// TestHTTP2OverConnectionCap: an HTTP/2 connection over max_connections
// cannot be answered in HTTP/1.1; it is closed, tagged ds_conn_limit.
func TestHTTP2OverConnectionCap(t *testing.T) {
	b := namedBackend(t, "ok")
	p, client := h2Proxy(t, "", "max_connections: 1\n"+upstreamYAML(b.Addr))
	if code, _ := h2Get(t, client, "https://"+p.Addr+"/first"); code != 200 {
		t.Fatalf("first connection: %d", code)
	}
	// A second client, so a second connection while the first is open.
	_, other := h2ClientFor(t, client)
	if resp, err := other.Get("https://" + p.Addr + "/second"); err == nil {
		resp.Body.Close()
		t.Fatalf("a connection over max_connections was served (%d), want it closed", resp.StatusCode)
	}
	rec := p.expect(t, downstreamClose(reasonDSConnLimit, byProxy, kindFIN, "idle"))
	if rec.Protocol != "h2" {
		t.Errorf("record protocol %q, want h2", rec.Protocol)
	}
}

// h2ClientFor is another HTTP/2 client with client's TLS settings and its
// own connections.
func h2ClientFor(t *testing.T, client *http.Client) (*http.Transport, *http.Client) {
	tr := client.Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return tr, &http.Client{Transport: tr}
}

// TestHTTP2BodyLimit: client_max_body_size holds on HTTP/2 streams, for a
// declared length and for a body of unknown length alike.
func TestHTTP2BodyLimit(t *testing.T) {
	b := namedBackend(t, "ok")
	p, client := h2Proxy(t, "", "client_max_body_size: 1k\n"+upstreamYAML(b.Addr))
	resp, err := client.Post("https://"+p.Addr+"/declared", "text/plain", strings.NewReader(strings.Repeat("x", 2048)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("declared 2k over a 1k limit: %d, want 413", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", "https://"+p.Addr+"/streamed", io.MultiReader(strings.NewReader(strings.Repeat("y", 2048))))
	req.ContentLength = -1
	resp, err = client.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("streamed 2k over a 1k limit: %d, want 413", resp.StatusCode)
		}
	}
	if a := p.accessFor(t, "/streamed"); a.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("access log status %d for the streamed body, want 413", a.Status)
	}
}
