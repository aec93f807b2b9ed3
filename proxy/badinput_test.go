package proxy

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestBadRequestsAnswered sends malformed requests: each gets its 4xx/5xx
// from tollgate, none reaches the backend, and tollgate keeps serving.
func TestBadRequestsAnswered(t *testing.T) {
	var hits atomic.Int64
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "fine")
	}))
	p := startProxy(t, "large_client_header_size: 4k\n"+upstreamYAML(b.Addr))
	tests := []struct {
		name   string
		req    string
		status int
	}{
		{"malformed request line", "GARBAGE\r\n\r\n", 400},
		{"request line without version", "GET /\r\nHost: h\r\n\r\n", 400},
		{"space in header name", "GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400},
		{"conflicting lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"header over large_client_header_size", "GET /big HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("x", 6000) + "\r\n\r\n", 431},
		{"unsupported transfer-encoding", "POST /te HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, p.Addr, tt.req)
			if resp.StatusCode != tt.status {
				t.Errorf("got %d %q, want %d", resp.StatusCode, body, tt.status)
			}
			if code, body := get(t, p.URL+"/after"); code != 200 || body != "fine" {
				t.Fatalf("next request: got %d %q, want 200 \"fine\"", code, body)
			}
		})
	}
	if n := hits.Load(); n != int64(len(tests)) {
		t.Fatalf("backend served %d requests, want %d: a bad request got through", n, len(tests))
	}
	resp, _ := rawRequest(t, p.Addr, "GET /near HTTP/1.1\r\nHost: h\r\nX-Big: "+strings.Repeat("x", 3000)+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("a 3000-byte header under the 4k limit got %d, want 200", resp.StatusCode)
	}
}

// TestRetries checks proxy_next_upstream's default "error timeout": a
// request goes to the next server when it can be sent again (nothing was
// sent, or nothing that cannot be resent), never after a body went out or a
// non-idempotent request was sent.
func TestRetries(t *testing.T) {
	tests := []struct {
		name       string
		first      func(testing.TB) string
		method     string
		body       string
		status     int
		upStatus   string
		upClose    string
		secondHits int64
	}{
		{"GET after refused", refusingAddr, "GET", "", 200, "502, 200", "us_connect_refused, -", 1},
		{"GET after reset", resetBeforeHeaders, "GET", "", 200, "502, 200", "us_reset_before_headers, -", 1},
		{"POST with body after refused", refusingAddr, "POST", "data", 200, "502, 200", "us_connect_refused, -", 1},
		{"POST with body after reset", resetBeforeHeaders, "POST", "data", 502, "502", "us_reset_before_headers", 0},
		{"POST without body after reset", resetBeforeHeaders, "POST", "", 502, "502", "us_reset_before_headers", 0},
		// PUT is idempotent and its small body was kept: sent again (Nginx,
		// which buffers request bodies, does the same).
		{"PUT with body after reset", resetBeforeHeaders, "PUT", "data", 200, "502, 200", "us_reset_before_headers, -", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int64
			good := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				b, _ := io.ReadAll(r.Body)
				io.WriteString(w, "good:"+string(b))
			}))
			first := tt.first(t)
			p := startProxy(t, upstreamYAML(first, good.Addr))
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, _ := http.NewRequest(tt.method, p.URL+"/retry", body)
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("client got %d %q, want %d", resp.StatusCode, got, tt.status)
			}
			if tt.status == 200 && string(got) != "good:"+tt.body {
				t.Errorf("client got %q, want the good server's %q", got, "good:"+tt.body)
			}
			if n := hits.Load(); n != tt.secondHits {
				t.Errorf("second server got %d requests, want %d", n, tt.secondHits)
			}
			a := p.accessFor(t, "/retry")
			wantAddr := first
			if tt.secondHits > 0 {
				wantAddr += ", " + good.Addr
			}
			if a.UpstreamStatus != tt.upStatus || a.UpstreamClose != tt.upClose || a.UpstreamAddr != wantAddr {
				t.Errorf("access log upstream_status %q upstream_close %q upstream_addr %q;\nwant %q %q %q",
					a.UpstreamStatus, a.UpstreamClose, a.UpstreamAddr, tt.upStatus, tt.upClose, wantAddr)
			}
		})
	}
}
