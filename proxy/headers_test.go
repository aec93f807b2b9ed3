package proxy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestHopByHopRequestHeaders checks that headers describing the client's
// connection, and those it names in Connection, never reach the backend,
// while "TE: trailers" and tollgate's own framing do.
func TestHopByHopRequestHeaders(t *testing.T) {
	addr, seen := recordingBackend(t)
	p := startProxy(t, upstreamYAML(addr))
	tests := []struct {
		name    string
		headers string // header lines sent, each with its CRLF
		body    string
		absent  []string
		want    map[string][]string // exact lines at the backend
	}{
		{
			name:    "connection close names a header",
			headers: "Connection: close, X-Secret\r\nX-Secret: s\r\nX-Kept: k\r\n",
			absent:  []string{"Connection", "X-Secret"},
			want:    map[string][]string{"X-Kept": {"k"}},
		},
		{
			name:    "several named, any case, any spacing",
			headers: "Connection: keep-alive, x-a,X-B ,\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n",
			absent:  []string{"Connection", "X-A", "X-B"},
			want:    map[string][]string{"X-C": {"3"}},
		},
		{
			name:    "keep-alive and proxy-connection",
			headers: "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n",
			absent:  []string{"Keep-Alive", "Proxy-Connection", "Connection"},
		},
		{
			name:    "te trailers kept",
			headers: "TE: trailers\r\n",
			want:    map[string][]string{"Te": {"trailers"}},
		},
		{
			name:    "te reduced to trailers",
			headers: "TE: deflate, trailers\r\n",
			want:    map[string][]string{"Te": {"trailers"}},
		},
		{
			name:    "te without trailers dropped",
			headers: "TE: gzip\r\n",
			absent:  []string{"Te"},
		},
		{
			name:    "upgrade without connection upgrade",
			headers: "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nConnection: HTTP2-Settings\r\n",
			absent:  []string{"Upgrade", "Connection", "Http2-Settings"},
		},
		{
			name:    "transfer-encoding is tollgate's own",
			headers: "Transfer-Encoding: chunked\r\n",
			body:    "1\r\nx\r\n0\r\n\r\n",
			want:    map[string][]string{"Transfer-Encoding": {"chunked"}},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			c.send(t, fmt.Sprintf("POST /hop/%d HTTP/1.1\r\nHost: h\r\n%s\r\n%s", i, tt.headers, tt.body))
			if resp, body := c.response(t, "POST"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("client got %d %q", resp.StatusCode, body)
			}
			s := nextSeen(t, seen)
			for _, name := range tt.absent {
				if v := s.header(name); v != nil {
					t.Errorf("%s reached the backend: %q\n%s", name, v, s)
				}
			}
			for name, want := range tt.want {
				if got := s.header(name); !slices.Equal(got, want) {
					t.Errorf("backend saw %s %q, want %q\n%s", name, got, want, s)
				}
			}
		})
	}
}

// TestHopByHopResponseHeaders checks the same on the way back: the
// backend's connection headers, and those it names in Connection, never
// reach the client.
func TestHopByHopResponseHeaders(t *testing.T) {
	addr, _, _ := scriptedBackend(t, func(seenRequest) string {
		return "HTTP/1.1 200 OK\r\n" +
			"Connection: X-Internal\r\n" +
			"X-Internal: 1\r\n" +
			"Keep-Alive: timeout=5, max=100\r\n" +
			"Proxy-Connection: keep-alive\r\n" +
			"Upgrade: h2c\r\n" +
			"X-Public: 1\r\n" +
			"Content-Length: 2\r\n\r\nok"
	})
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.send(t, "GET /hop HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := c.response(t, "GET")
	if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("X-Public") != "1" {
		t.Fatalf("client got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	for _, name := range []string{"Connection", "X-Internal", "Keep-Alive", "Proxy-Connection", "Upgrade"} {
		if v := resp.Header[name]; v != nil {
			t.Errorf("%s reached the client: %q", name, v)
		}
	}
}

// TestBackendConnectionCloseStaysUpstream checks that a backend closing its
// connection after each response does not close the client's.
func TestBackendConnectionCloseStaysUpstream(t *testing.T) {
	addr, _, conns := scriptedBackend(t, func(seenRequest) string {
		return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"
	})
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	for i := range 3 {
		c.send(t, "GET /close HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, body := c.response(t, "GET")
		if resp.StatusCode != 200 || body != "bye" || resp.Close {
			t.Fatalf("request %d: got %d %q close=%v, want 200 \"bye\" on a kept connection", i, resp.StatusCode, body, resp.Close)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("backend accepted %d connections, want 3 (one per Connection: close)", n)
	}
}

// TestForwardedHeaders checks X-Forwarded-For, X-Forwarded-Proto, X-Real-IP
// and Host as the backend sees them, with and without real_ip, and the
// client address in the access log.
func TestForwardedHeaders(t *testing.T) {
	realIP := func(from, header string, recursive bool) string {
		return fmt.Sprintf("real_ip:\n  set_real_ip_from: [%s]\n  real_ip_header: %s\n  real_ip_recursive: %v\n", from, header, recursive)
	}
	tests := []struct {
		name     string
		yaml     string // extra top-level config
		host     string // Host header; "h" when empty
		headers  string
		wantXFF  string
		wantXFP  string
		wantReal string
	}{
		{
			name:    "defaults",
			wantXFF: "127.0.0.1", wantXFP: "http", wantReal: "127.0.0.1",
		},
		{
			name:    "incoming lines joined and the peer appended",
			headers: "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n",
			wantXFF: "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1", wantXFP: "http", wantReal: "127.0.0.1",
		},
		{
			name:    "proto from trusted loopback kept",
			headers: "X-Forwarded-Proto: https\r\n",
			wantXFF: "127.0.0.1", wantXFP: "https", wantReal: "127.0.0.1",
		},
		{
			name:    "proto from untrusted peer replaced",
			yaml:    realIP("10.0.0.0/8", "X-Forwarded-For", false),
			headers: "X-Forwarded-Proto: https\r\n",
			wantXFF: "127.0.0.1", wantXFP: "http", wantReal: "127.0.0.1",
		},
		{
			name:    "client's X-Real-IP replaced",
			headers: "X-Real-IP: 6.6.6.6\r\n",
			wantXFF: "127.0.0.1", wantXFP: "http", wantReal: "127.0.0.1",
		},
		{
			name:    "recursive stops at the first untrusted address",
			yaml:    realIP("127.0.0.1/32", "X-Forwarded-For", true),
			headers: "X-Forwarded-For: 1.1.1.1, 10.0.0.2\r\n",
			wantXFF: "1.1.1.1, 10.0.0.2, 127.0.0.1", wantXFP: "http", wantReal: "10.0.0.2",
		},
		{
			name:    "recursive walks past trusted addresses",
			yaml:    realIP("127.0.0.1/32, 10.0.0.0/8", "X-Forwarded-For", true),
			headers: "X-Forwarded-For: 1.1.1.1, 10.0.0.2\r\n",
			wantXFF: "1.1.1.1, 10.0.0.2, 127.0.0.1", wantXFP: "http", wantReal: "1.1.1.1",
		},
		{
			name:    "non-recursive takes the last address",
			yaml:    realIP("127.0.0.1/32, 10.0.0.0/8", "X-Forwarded-For", false),
			headers: "X-Forwarded-For: 1.1.1.1, 10.0.0.2\r\n",
			wantXFF: "1.1.1.1, 10.0.0.2, 127.0.0.1", wantXFP: "http", wantReal: "10.0.0.2",
		},
		{
			name:    "real_ip_header X-Real-IP",
			yaml:    realIP("127.0.0.1/32", "X-Real-IP", false),
			headers: "X-Real-IP: 9.9.9.9\r\n",
			wantXFF: "127.0.0.1", wantXFP: "http", wantReal: "9.9.9.9",
		},
		{
			name:    "header from an untrusted peer ignored",
			yaml:    realIP("10.0.0.0/8", "X-Forwarded-For", true),
			headers: "X-Forwarded-For: 1.1.1.1\r\n",
			wantXFF: "1.1.1.1, 127.0.0.1", wantXFP: "http", wantReal: "127.0.0.1",
		},
		{
			name:    "host passed exactly",
			host:    "Example.COM:8080",
			wantXFF: "127.0.0.1", wantXFP: "http", wantReal: "127.0.0.1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, seen := recordingBackend(t)
			p := startProxy(t, tt.yaml+upstreamYAML(addr))
			host := tt.host
			if host == "" {
				host = "h"
			}
			c := dialRaw(t, p.Addr)
			c.send(t, "GET /fwd HTTP/1.1\r\nHost: "+host+"\r\n"+tt.headers+"\r\n")
			if resp, body := c.response(t, "GET"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("client got %d %q", resp.StatusCode, body)
			}
			s := nextSeen(t, seen)
			for name, want := range map[string]string{
				"Host":              host,
				"X-Forwarded-For":   tt.wantXFF,
				"X-Forwarded-Proto": tt.wantXFP,
				"X-Real-Ip":         tt.wantReal,
			} {
				if got := s.header(name); !slices.Equal(got, []string{want}) {
					t.Errorf("backend saw %s %q, want exactly %q\n%s", name, got, want, s)
				}
			}
			if a := p.accessFor(t, "/fwd"); a.Client != tt.wantReal || a.Host != host {
				t.Errorf("access log client %q host %q, want %q %q", a.Client, a.Host, tt.wantReal, host)
			}
		})
	}
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestRequestID checks the X-Request-ID the backend, the client and the
// access log see: the trusted edge's when valid, else a generated one.
func TestRequestID(t *testing.T) {
	trustOnly10 := "real_ip:\n  set_real_ip_from: [10.0.0.0/8]\n"
	long := strings.Repeat("a", 200)
	maxID := strings.Repeat("b", 128)
	tests := []struct {
		name    string
		yaml    string
		headers string
		keep    string // the id everyone must see, or "" for a generated one
	}{
		{name: "generated when absent"},
		{name: "kept from trusted loopback", headers: "X-Request-ID: edge-42.abc\r\n", keep: "edge-42.abc"},
		{name: "128 characters kept", headers: "X-Request-ID: " + maxID + "\r\n", keep: maxID},
		{name: "first of two lines kept", headers: "X-Request-ID: first\r\nX-Request-ID: second\r\n", keep: "first"},
		{name: "regenerated when it has a space", headers: "X-Request-ID: has space\r\n"},
		{name: "regenerated when 200 characters", headers: "X-Request-ID: " + long + "\r\n"},
		{name: "regenerated when it has a quote", headers: "X-Request-ID: a\"b\r\n"},
		{name: "regenerated from a peer real_ip does not trust", yaml: trustOnly10, headers: "X-Request-ID: edge-42\r\n"},
	}
	generated := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, seen := recordingBackend(t)
			p := startProxy(t, tt.yaml+upstreamYAML(addr))
			c := dialRaw(t, p.Addr)
			c.send(t, "GET /id HTTP/1.1\r\nHost: h\r\n"+tt.headers+"\r\n")
			resp, _ := c.response(t, "GET")
			s := nextSeen(t, seen)
			ids := s.header("X-Request-Id")
			if len(ids) != 1 {
				t.Fatalf("backend saw X-Request-ID %q, want one line\n%s", ids, s)
			}
			id := ids[0]
			if tt.keep != "" && id != tt.keep {
				t.Fatalf("backend saw id %q, want the edge's %q", id, tt.keep)
			}
			if tt.keep == "" {
				if !generatedID.MatchString(id) {
					t.Fatalf("backend saw id %q, want 32 lower-case hex digits", id)
				}
				if generated[id] {
					t.Fatalf("id %q generated twice", id)
				}
				generated[id] = true
			}
			if got := resp.Header["X-Request-Id"]; !slices.Equal(got, []string{id}) {
				t.Errorf("client got X-Request-ID %q, want %q", got, id)
			}
			if a := p.accessFor(t, "/id"); a.RequestID != id {
				t.Errorf("access log request_id %q, want %q", a.RequestID, id)
			}
		})
	}
}

// TestRequestTargetExact checks that the request target reaches the backend
// as the client sent it: no normalising of dot segments, slashes or
// escapes. An absolute-form target goes out in origin form with its
// authority as Host (RFC 9112 §3.2.2).
func TestRequestTargetExact(t *testing.T) {
	addr, seen := recordingBackend(t)
	p := startProxy(t, upstreamYAML(addr))
	tests := []struct {
		name, target, wantTarget, wantHost string
	}{
		{"dot segments and escaped slash", "/a/../b?x=%2F&y=1", "", ""},
		{"double slashes and dot", "//double//slash/./x", "", ""},
		{"escapes and params", "/%7Euser/a%20b;p=1?q=a+b&r=%zz", "", ""},
		{"empty query", "/x?", "", ""},
		{"encoded dots", "/caf%C3%A9/%2e%2e/%2E", "", ""},
		{"absolute form", "http://other.example/abs?x=1", "/abs?x=1", "other.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantHost := tt.wantTarget, tt.wantHost
			if want == "" {
				want, wantHost = tt.target, "h"
			}
			c := dialRaw(t, p.Addr)
			c.send(t, "GET "+tt.target+" HTTP/1.1\r\nHost: h\r\n\r\n")
			if resp, body := c.response(t, "GET"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("client got %d %q", resp.StatusCode, body)
			}
			s := nextSeen(t, seen)
			if s.Line != "GET "+want+" HTTP/1.1" {
				t.Errorf("backend saw %q, want %q", s.Line, "GET "+want+" HTTP/1.1")
			}
			if got := s.header("Host"); !slices.Equal(got, []string{wantHost}) {
				t.Errorf("backend saw Host %q, want %q", got, wantHost)
			}
		})
	}
}
