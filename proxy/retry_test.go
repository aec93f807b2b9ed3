package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// retrySetup is tollgate's config for one retry test: one upstream "app" of
// servers, one route "/" with the retry settings in route (YAML lines of
// the route), and top-level settings in top.
type retrySetup struct {
	servers  []string
	server   string // YAML lines added to every server, e.g. "max_fails: 0"
	upstream string // YAML lines added to the upstream, e.g. a retry_budget
	route    string
	top      string
}

func (s retrySetup) yaml() string {
	var b strings.Builder
	b.WriteString("upstreams:\n  - name: app\n    servers:\n")
	for _, a := range s.servers {
		fmt.Fprintf(&b, "      - addr: %s\n", a)
		writeRetryLines(&b, "        ", s.server)
	}
	writeRetryLines(&b, "    ", s.upstream)
	b.WriteString("routes:\n  - path_prefix: /\n    upstream: app\n")
	writeRetryLines(&b, "    ", s.route)
	writeRetryLines(&b, "", s.top)
	return b.String()
}

func writeRetryLines(b *strings.Builder, indent, lines string) {
	for l := range strings.SplitSeq(lines, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			b.WriteString(indent + l + "\n")
		}
	}
}

// retryLine is one access log line with the retry audit fields.
type retryLine struct {
	Path            string `json:"path"`
	Method          string `json:"method"`
	Status          int    `json:"status"`
	UpstreamAddr    string `json:"upstream_addr"`
	UpstreamStatus  string `json:"upstream_status"`
	UpstreamClose   string `json:"upstream_close"`
	RetrySkipped    string `json:"retry_skipped"`
	DownstreamClose string `json:"downstream_close"`
}

// attempts is the number of upstream attempts the line lists.
func (l retryLine) attempts() int {
	if l.UpstreamAddr == "" {
		return 0
	}
	return strings.Count(l.UpstreamAddr, ", ") + 1
}

// retryLog waits for the access log line of the request to path.
func (p *testProxy) retryLog(t testing.TB, path string) retryLine {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		for line := range strings.SplitSeq(p.log.String(), "\n") {
			var l retryLine
			if line != "" && json.Unmarshal([]byte(line), &l) == nil && l.Path == path {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for %s within %v; log:\n%s", path, waitLimit, p.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serverFails returns the passive-health failure count of the server at
// addr, as /debug/upstreams shows it.
func (p *testProxy) serverFails(t testing.TB, addr string) int {
	t.Helper()
	code, body := get(t, p.Admin+"/debug/upstreams")
	if code != http.StatusOK {
		t.Fatalf("/debug/upstreams: %d", code)
	}
	var ups []upstreamView
	if err := json.Unmarshal([]byte(body), &ups); err != nil {
		t.Fatalf("/debug/upstreams: %v\n%s", err, body)
	}
	for _, u := range ups {
		for _, s := range u.Servers {
			if s.Addr == addr {
				return s.Fails
			}
		}
	}
	t.Fatalf("/debug/upstreams has no server %s:\n%s", addr, body)
	return 0
}

// healthyCounting answers 200 "good:" plus the request body, and counts the
// requests it served.
func healthyCounting(t testing.TB) (addr string, hits *atomic.Int64) {
	hits = &atomic.Int64{}
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, "good:"+string(body))
	}))
	return b.Addr, hits
}

// answeringStatus answers every request with status, the body "backend
// <status>" and the header fields given as name, value pairs.
func answeringStatus(status int, fields ...string) func(testing.TB) string {
	return func(t testing.TB) string {
		b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			for i := 0; i+1 < len(fields); i += 2 {
				w.Header().Set(fields[i], fields[i+1])
			}
			w.WriteHeader(status)
			fmt.Fprintf(w, "backend %d", status)
		}))
		return b.Addr
	}
}

// dropsReusedConn answers the first request of each connection with a
// keep-alive 200 and closes the connection, unanswered, once the second
// request has arrived: a backend closing an idle connection just as the
// proxy reuses it.
func dropsReusedConn(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := range 2 {
			req, err := readRequestHead(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if i == 0 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nserved")
			}
		}
	})
}

// retryResult is what the client got for one request.
type retryResult struct {
	status  int
	body    string
	bodyErr error // reading the body failed (a truncated response)
	elapsed time.Duration
}

// retryReq makes one request with its own connection; header is name, value
// pairs.
func retryReq(t testing.TB, method, url, body string, header ...string) retryResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	return retryResult{status: resp.StatusCode, body: string(b), bodyErr: rerr, elapsed: time.Since(start)}
}

// TestRetryConditions sends one GET to a first server failing one way and a
// second healthy one, and checks the answer, the attempts, the retry
// metric, and whether the first server was counted as failed: skipped by
// the next requests (max_fails 1) for error, timeout, invalid_header and a
// listed 5xx/429, tried again for 403/404 (ngx_http_upstream_next:
// NGX_PEER_NEXT for 403/404, NGX_PEER_FAILED otherwise).
func TestRetryConditions(t *testing.T) {
	tests := []struct {
		name     string
		first    func(testing.TB) string
		route    string
		top      string
		upStatus string
		upClose  string
		cond     string // tollgate_retries_total condition
		marked   bool
	}{
		{"error/refused", refusingAddr, "", "", "502, 200", "us_connect_refused, -", "error", true},
		{"error/reset", resetBeforeHeaders, "", "", "502, 200", "us_reset_before_headers, -", "error", true},
		{"error/closed", acceptThenClose, "", "", "502, 200", "us_closed_before_headers, -", "error", true},
		{"timeout/read", stallingBackend, "", "proxy_read_timeout: 200ms", "504, 200", "us_header_timeout, -", "timeout", true},
		{"timeout/connect", fullBacklogAddr, "", "proxy_connect_timeout: 200ms", "504, 200", "us_connect_timeout, -", "timeout", true},
		{"invalid_header", malformedResponse, "proxy_next_upstream: [error, timeout, invalid_header]", "", "502, 200", "us_bad_response, -", "invalid_header", true},
		{"http_500", answeringStatus(500), "proxy_next_upstream: [error, http_500]", "", "500, 200", "", "http_500", true},
		{"http_502", answeringStatus(502), "proxy_next_upstream: [error, http_502]", "", "502, 200", "", "http_502", true},
		{"http_503", answeringStatus(503), "proxy_next_upstream: [error, http_503]", "", "503, 200", "", "http_503", true},
		{"http_504", answeringStatus(504), "proxy_next_upstream: [error, http_504]", "", "504, 200", "", "http_504", true},
		{"http_429", answeringStatus(429), "proxy_next_upstream: [error, http_429]", "", "429, 200", "", "http_429", true},
		{"http_403", answeringStatus(403), "proxy_next_upstream: [error, http_403]", "", "403, 200", "", "http_403", false},
		{"http_404", answeringStatus(404), "proxy_next_upstream: [error, http_404]", "", "404, 200", "", "http_404", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, hits := healthyCounting(t)
			first := tt.first(t)
			p := startProxy(t, retrySetup{servers: []string{first, good}, route: tt.route, top: tt.top}.yaml())

			r := retryReq(t, "GET", p.URL+"/one", "")
			if r.status != 200 || r.body != "good:" {
				t.Errorf("client got %d %q, want 200 from the second server", r.status, r.body)
			}
			l := p.retryLog(t, "/one")
			if want := first + ", " + good; l.UpstreamAddr != want || l.UpstreamStatus != tt.upStatus || l.UpstreamClose != tt.upClose {
				t.Errorf("upstream_addr %q upstream_status %q upstream_close %q; want %q %q %q",
					l.UpstreamAddr, l.UpstreamStatus, l.UpstreamClose, want, tt.upStatus, tt.upClose)
			}
			if l.RetrySkipped != "" {
				t.Errorf("retry_skipped %q on a retried request", l.RetrySkipped)
			}
			if n := promValue(t, scrape(t, p), "tollgate_retries_total", "upstream", "app", "condition", tt.cond); n != 1 {
				t.Errorf("tollgate_retries_total{condition=%q} = %v, want 1", tt.cond, n)
			}

			wantFails := 0
			if tt.marked {
				wantFails = 1
			}
			if n := p.serverFails(t, first); n != wantFails {
				t.Errorf("first server has %d fails after the retry, want %d", n, wantFails)
			}
			// Round robin over two servers sends one of the next two
			// requests to the first server, unless it is failed.
			var next []string
			for _, path := range []string{"/two", "/three"} {
				if r := retryReq(t, "GET", p.URL+path, ""); r.status != 200 {
					t.Errorf("%s: %d %q, want 200", path, r.status, r.body)
				}
				next = append(next, p.retryLog(t, path).UpstreamAddr)
			}
			triedAgain := strings.Contains(strings.Join(next, " | "), first)
			if triedAgain == tt.marked {
				t.Errorf("next requests went to %q: first server tried again = %v, want %v", next, triedAgain, !tt.marked)
			}
			if want := int64(3); hits.Load() != want {
				t.Errorf("second server served %d requests, want %d", hits.Load(), want)
			}
		})
	}
}

// TestRetryNotListed checks that a response status not listed in
// proxy_next_upstream goes to the client as the backend sent it, and the
// server counts as a success; and that a listed status on the last try
// is passed on as well (ngx_http_upstream_test_next retries only while
// u->peer.tries > 1).
func TestRetryNotListed(t *testing.T) {
	tests := []struct {
		name     string
		second   func(testing.TB) string // nil: a healthy server
		route    string
		status   int
		upStatus string
		skipped  string
	}{
		{"503 not listed", nil, "", 503, "503", ""},
		{"500 not listed", nil, "proxy_next_upstream: [error, timeout, http_503]", 500, "500", ""},
		{"429 not listed", nil, "proxy_next_upstream: [error, http_500, http_503]", 429, "429", ""},
		{"503 listed on both servers", answeringStatus(503), "proxy_next_upstream: [error, http_503]", 503, "503, 503", "tries_exhausted"},
		{"503 listed with tries 1", nil, "proxy_next_upstream: [error, http_503]\nproxy_next_upstream_tries: 1", 503, "503", "tries_exhausted"},
		{"503 listed, off", nil, "proxy_next_upstream: [off]", 503, "503", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := answeringStatus(tt.status)(t)
			second, _ := healthyCounting(t)
			if tt.second != nil {
				second = tt.second(t)
			}
			p := startProxy(t, retrySetup{servers: []string{first, second}, route: tt.route}.yaml())
			r := retryReq(t, "GET", p.URL+"/x", "")
			want := fmt.Sprintf("backend %d", tt.status)
			if r.status != tt.status || r.body != want {
				t.Errorf("client got %d %q, want the backend's own %d %q", r.status, r.body, tt.status, want)
			}
			l := p.retryLog(t, "/x")
			if l.UpstreamStatus != tt.upStatus || l.RetrySkipped != tt.skipped {
				t.Errorf("upstream_status %q retry_skipped %q, want %q %q", l.UpstreamStatus, l.RetrySkipped, tt.upStatus, tt.skipped)
			}
			// The server whose response was passed on counts a success;
			// one whose listed status was dropped for a retry a failure.
			if tt.second != nil {
				if n := p.serverFails(t, first); n != 1 {
					t.Errorf("first server has %d fails, want 1: its 503 was retried", n)
				}
				first = second
			}
			if n := p.serverFails(t, first); n != 0 {
				t.Errorf("server %s has %d fails, want 0: a response passed on counts as a success", first, n)
			}
		})
	}
}

// TestRetryNonIdempotent checks Nginx's rule for POST, LOCK and PATCH (not
// sent again once any of them reached the backend, unless non_idempotent),
// tollgate's Idempotency-Key opt-in, and the replay limit on bodies.
func TestRetryNonIdempotent(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 256) // 4 KiB
	tests := []struct {
		name    string
		first   func(testing.TB) string
		route   string
		method  string
		body    string
		header  []string
		status  int
		skipped string
	}{
		{"POST after reset", resetBeforeHeaders, "", "POST", "data", nil, 502, "not_idempotent"},
		{"POST without body after reset", resetBeforeHeaders, "", "POST", "", nil, 502, "not_idempotent"},
		{"PATCH after reset", resetBeforeHeaders, "", "PATCH", "data", nil, 502, "not_idempotent"},
		{"LOCK after reset", resetBeforeHeaders, "", "LOCK", "data", nil, 502, "not_idempotent"},
		{"POST after refused connect", refusingAddr, "", "POST", "data", nil, 200, ""},
		{"POST after reset, non_idempotent", resetBeforeHeaders, "proxy_next_upstream: [error, timeout, non_idempotent]", "POST", "data", nil, 200, ""},
		{"POST 503 listed", answeringStatus(503), "proxy_next_upstream: [error, http_503]", "POST", "data", nil, 503, "not_idempotent"},
		{"POST 503 listed, non_idempotent", answeringStatus(503), "proxy_next_upstream: [error, http_503, non_idempotent]", "POST", "data", nil, 200, ""},
		{"POST Idempotency-Key", resetBeforeHeaders, "retry_idempotency_key: true", "POST", "data", []string{"Idempotency-Key", "k1"}, 200, ""},
		{"POST Idempotency-Key not enabled", resetBeforeHeaders, "", "POST", "data", []string{"Idempotency-Key", "k1"}, 502, "not_idempotent"},
		{"POST enabled without key", resetBeforeHeaders, "retry_idempotency_key: true", "POST", "data", nil, 502, "not_idempotent"},
		{"PUT 4k body", resetBeforeHeaders, "", "PUT", big, nil, 200, ""},
		{"PUT 4k body over retry_body_limit 1k", resetBeforeHeaders, "retry_body_limit: 1k", "PUT", big, nil, 502, "body_too_large"},
		{"PUT 4k body over limit, refused connect", refusingAddr, "retry_body_limit: 1k", "PUT", big, nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, hits := healthyCounting(t)
			first := tt.first(t)
			p := startProxy(t, retrySetup{servers: []string{first, good}, route: tt.route}.yaml())
			r := retryReq(t, tt.method, p.URL+"/x", tt.body, tt.header...)
			if r.status != tt.status {
				t.Errorf("client got %d %q, want %d", r.status, r.body, tt.status)
			}
			l := p.retryLog(t, "/x")
			wantAttempts, wantHits := 1, int64(0)
			if tt.status == 200 {
				wantAttempts, wantHits = 2, 1
				if r.body != "good:"+tt.body {
					t.Errorf("second server got a body of %d bytes, want the client's %d intact", len(r.body)-5, len(tt.body))
				}
			}
			if l.attempts() != wantAttempts || l.RetrySkipped != tt.skipped {
				t.Errorf("attempts %q (%s), retry_skipped %q; want %d attempts, %q",
					l.UpstreamAddr, l.UpstreamStatus, l.RetrySkipped, wantAttempts, tt.skipped)
			}
			if hits.Load() != wantHits {
				t.Errorf("second server got %d requests, want %d", hits.Load(), wantHits)
			}
			if tt.skipped != "" {
				if n := promValue(t, scrape(t, p), "tollgate_retries_skipped_total", "upstream", "app", "reason", tt.skipped); n != 1 {
					t.Errorf("tollgate_retries_skipped_total{reason=%q} = %v, want 1", tt.skipped, n)
				}
			}
		})
	}
}

// TestRetryResponseStarted checks that a failure after the response head
// went to the client is not retried: the client's connection is closed
// (ds_upstream_abort) and the audit says why there was no retry.
func TestRetryResponseStarted(t *testing.T) {
	good, hits := healthyCounting(t)
	first := cutBody(t)
	p := startProxy(t, retrySetup{servers: []string{first, good}}.yaml())
	r := retryReq(t, "GET", p.URL+"/cut", "")
	if r.status != 200 || r.bodyErr == nil || r.body != "0123456789" {
		t.Errorf("client got %d %q (body error %v), want 200 with a truncated body", r.status, r.body, r.bodyErr)
	}
	l := p.retryLog(t, "/cut")
	if l.UpstreamAddr != first || l.UpstreamClose != "us_closed_during_body" || l.DownstreamClose != "ds_upstream_abort" {
		t.Errorf("upstream_addr %q upstream_close %q downstream_close %q; want %q us_closed_during_body ds_upstream_abort",
			l.UpstreamAddr, l.UpstreamClose, l.DownstreamClose, first)
	}
	if l.RetrySkipped != "response_started" {
		t.Errorf("retry_skipped %q, want response_started", l.RetrySkipped)
	}
	if hits.Load() != 0 {
		t.Errorf("second server got %d requests, want none", hits.Load())
	}
}

// TestNextUpstreamLimits checks proxy_next_upstream_tries,
// proxy_next_upstream_timeout and off.
func TestNextUpstreamLimits(t *testing.T) {
	tests := []struct {
		name     string
		servers  func(t testing.TB) []string
		route    string
		top      string
		status   int
		upStatus string
		skipped  string
		minTime  time.Duration
	}{
		{"tries 2 of three failing", threeRetryServers(refusingAddr), "proxy_next_upstream_tries: 2", "", 502, "502, 502", "tries_exhausted", 0},
		{"no tries cap: every server", threeRetryServers(refusingAddr), "", "", 502, "502, 502, 502", "tries_exhausted", 0},
		// 200ms per stalled attempt: the third would start after the
		// 300ms of proxy_next_upstream_timeout.
		{"timeout 300ms", threeRetryServers(stallingBackend), "proxy_next_upstream_timeout: 300ms", "proxy_read_timeout: 200ms", 504, "504, 504", "deadline_exceeded", 400 * time.Millisecond},
		{"off", func(t testing.TB) []string {
			good, _ := healthyCounting(t)
			return []string{refusingAddr(t), good}
		}, "proxy_next_upstream: [off]", "", 502, "502", "condition_not_listed", 0},
		{"invalid_header not listed", func(t testing.TB) []string {
			good, _ := healthyCounting(t)
			return []string{malformedResponse(t), good}
		}, "", "", 502, "502", "condition_not_listed", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, retrySetup{servers: tt.servers(t), route: tt.route, top: tt.top}.yaml())
			r := retryReq(t, "GET", p.URL+"/x", "")
			if r.status != tt.status {
				t.Errorf("client got %d %q, want %d", r.status, r.body, tt.status)
			}
			l := p.retryLog(t, "/x")
			if l.UpstreamStatus != tt.upStatus || l.RetrySkipped != tt.skipped {
				t.Errorf("upstream_status %q retry_skipped %q; want %q %q", l.UpstreamStatus, l.RetrySkipped, tt.upStatus, tt.skipped)
			}
			// Each attempt goes to a server not tried before.
			seen := map[string]bool{}
			for a := range strings.SplitSeq(l.UpstreamAddr, ", ") {
				if seen[a] {
					t.Errorf("upstream_addr %q tries %s twice", l.UpstreamAddr, a)
				}
				seen[a] = true
			}
			if r.elapsed < tt.minTime || r.elapsed > tt.minTime+2*time.Second {
				t.Errorf("took %v, want at least %v", r.elapsed, tt.minTime)
			}
		})
	}
}

func threeRetryServers(fault func(testing.TB) string) func(testing.TB) []string {
	return func(t testing.TB) []string { return []string{fault(t), fault(t), fault(t)} }
}

// TestRetryToBackup checks that a retry goes to a backup server when the
// primaries are used up, as Nginx's tries count primaries and backups.
func TestRetryToBackup(t *testing.T) {
	good, hits := healthyCounting(t)
	first := refusingAddr(t)
	p := startProxy(t, "upstreams:\n  - name: app\n    servers:\n      - addr: "+first+
		"\n      - addr: "+good+"\n        backup: true\nroutes:\n  - path_prefix: /\n    upstream: app\n")
	if r := retryReq(t, "GET", p.URL+"/x", ""); r.status != 200 || hits.Load() != 1 {
		t.Errorf("client got %d %q, want 200 from the backup", r.status, r.body)
	}
	if l := p.retryLog(t, "/x"); l.UpstreamAddr != first+", "+good || l.UpstreamStatus != "502, 200" {
		t.Errorf("upstream_addr %q upstream_status %q, want the primary then the backup", l.UpstreamAddr, l.UpstreamStatus)
	}
}

// TestRetryAfter checks that a 503's Retry-After is waited out before the
// retry when it fits proxy_next_upstream_timeout, and that the 503 goes to
// the client when it does not.
func TestRetryAfter(t *testing.T) {
	route := "proxy_next_upstream: [error, http_503]\nproxy_next_upstream_timeout: 2s"
	t.Run("1s fits", func(t *testing.T) {
		good, hits := healthyCounting(t)
		first := answeringStatus(503, "Retry-After", "1")(t)
		p := startProxy(t, retrySetup{servers: []string{first, good}, route: route}.yaml())
		r := retryReq(t, "GET", p.URL+"/x", "")
		if r.status != 200 || hits.Load() != 1 {
			t.Errorf("client got %d %q, want 200 from the second server", r.status, r.body)
		}
		if r.elapsed < 900*time.Millisecond || r.elapsed > 3*time.Second {
			t.Errorf("took %v, want Retry-After's 1s waited out", r.elapsed)
		}
		if l := p.retryLog(t, "/x"); l.UpstreamStatus != "503, 200" {
			t.Errorf("upstream_status %q, want \"503, 200\"", l.UpstreamStatus)
		}
	})
	t.Run("30s does not fit", func(t *testing.T) {
		good, hits := healthyCounting(t)
		first := answeringStatus(503, "Retry-After", "30")(t)
		p := startProxy(t, retrySetup{servers: []string{first, good}, route: route}.yaml())
		r := retryReq(t, "GET", p.URL+"/x", "")
		if r.status != 503 || r.body != "backend 503" || hits.Load() != 0 {
			t.Errorf("client got %d %q, want the backend's 503", r.status, r.body)
		}
		if r.elapsed > 500*time.Millisecond {
			t.Errorf("took %v, want an answer at once", r.elapsed)
		}
		if l := p.retryLog(t, "/x"); l.UpstreamStatus != "503" || l.RetrySkipped != "deadline_exceeded" {
			t.Errorf("upstream_status %q retry_skipped %q, want \"503\" deadline_exceeded", l.UpstreamStatus, l.RetrySkipped)
		}
	})
}

// TestRetryKeepAliveRace checks that a request that finds its reused
// keep-alive connection closed by the backend is sent again on a new
// connection without using up a try, and without marking the server, when
// it is safe to send again.
func TestRetryKeepAliveRace(t *testing.T) {
	tests := []struct {
		name     string
		route    string
		method   string
		header   []string
		status   int
		upStatus string
		skipped  string
	}{
		{"GET, tries 1", "proxy_next_upstream_tries: 1", "GET", nil, 200, "502, 200", ""},
		// A POST whose bytes went out on the reused connection is not
		// sent again: the backend may have acted on it.
		{"POST", "", "POST", nil, 502, "502", "not_idempotent"},
		{"POST with Idempotency-Key, not enabled", "", "POST", []string{"Idempotency-Key", "k"}, 502, "502", "not_idempotent"},
		{"POST with Idempotency-Key, enabled", "retry_idempotency_key: true", "POST", []string{"Idempotency-Key", "k"}, 200, "502, 200", ""},
		{"POST, non_idempotent", "proxy_next_upstream: [error, non_idempotent]", "POST", nil, 200, "502, 200", ""},
		// PUT and DELETE are resent as proxy_next_upstream error would
		// (Nginx), still without using up the one try.
		{"PUT, tries 1", "proxy_next_upstream_tries: 1", "PUT", nil, 200, "502, 200", ""},
		{"DELETE, tries 1", "proxy_next_upstream_tries: 1", "DELETE", nil, 200, "502, 200", ""},
		{"PUT, off", "proxy_next_upstream: [off]", "PUT", nil, 502, "502", "condition_not_listed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend := dropsReusedConn(t)
			p := startProxy(t, retrySetup{servers: []string{backend}, route: tt.route}.yaml())
			client := newClient(t)
			do := func(method, path string) (int, string) {
				var body io.Reader
				if method == "POST" || method == "PUT" {
					body = strings.NewReader("data")
				}
				req, _ := http.NewRequest(method, p.URL+path, body)
				for i := 0; i+1 < len(tt.header); i += 2 {
					req.Header.Set(tt.header[i], tt.header[i+1])
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if code, body := do("GET", "/warm"); code != 200 || body != "served" {
				t.Fatalf("/warm: %d %q, want 200 \"served\"", code, body)
			}
			if code, body := do(tt.method, "/race"); code != tt.status {
				t.Errorf("%s on a reused connection the backend closed: %d %q, want %d", tt.method, code, body, tt.status)
			}
			l := p.retryLog(t, "/race")
			wantClose := "us_reused_conn_closed"
			if tt.status == 200 {
				wantClose += ", -"
			}
			if l.UpstreamStatus != tt.upStatus || l.UpstreamClose != wantClose || l.RetrySkipped != tt.skipped {
				t.Errorf("upstream_status %q upstream_close %q retry_skipped %q; want %q %q %q",
					l.UpstreamStatus, l.UpstreamClose, l.RetrySkipped, tt.upStatus, wantClose, tt.skipped)
			}
			if n := p.serverFails(t, backend); n != 0 {
				t.Errorf("server has %d fails after a keep-alive race, want 0", n)
			}
		})
	}
}

// loadResult counts what a load of requests came to.
type loadResult struct {
	reqs, attempts, exhausted, not502 int
	elapsed                           time.Duration
}

func (r loadResult) amplification() float64 { return float64(r.attempts) / float64(r.reqs) }

// loadAllRefusing sends workers × perWorker GETs to tollgate in front of two
// servers that both refuse connections, and counts requests, attempts and
// budget refusals from the access log.
func loadAllRefusing(t *testing.T, server, upstream string, workers, perWorker int) (*testProxy, loadResult) {
	servers := []string{refusingAddr(t), refusingAddr(t)}
	p := startProxy(t, retrySetup{servers: servers, server: server, upstream: upstream}.yaml())
	start := time.Now()
	var wg sync.WaitGroup
	var not502 atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := newClient(t)
			for range perWorker {
				resp, err := client.Get(p.URL + "/load")
				if err != nil {
					not502.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				// 502 from a refused attempt, or 503 "circuit open" once
				// the breakers shed.
				if resp.StatusCode != 502 && resp.StatusCode != 503 {
					not502.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	r := loadResult{elapsed: time.Since(start), not502: int(not502.Load())}
	for _, e := range logEntries(t, p) {
		if e["path"] != "/load" {
			continue
		}
		r.reqs++
		r.attempts += retryLine{UpstreamAddr: e["upstream_addr"].(string)}.attempts()
		if e["retry_skipped"] == "budget_exhausted" {
			r.exhausted++
		}
	}
	if r.not502 != 0 {
		t.Errorf("%d requests did not get 502", r.not502)
	}
	if r.reqs != workers*perWorker {
		t.Fatalf("access log has %d requests, want %d", r.reqs, workers*perWorker)
	}
	return p, r
}

// TestRetryBudgetUnderLoad sends requests from a few workers to an upstream
// whose every server refuses connections, with passive health off so each
// request tries, and counts the attempts: retries stay within the default
// budget (20 % of requests plus 10 per second over a 10s window). The
// amplification (attempts ÷ requests) is logged; with max_fails 1 it is
// logged too, passive health then stopping attempts altogether.
func TestRetryBudgetUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	// Passive health and breakers off: every request tries, so the budget
	// alone bounds the retries.
	p, r := loadAllRefusing(t, "max_fails: 0", "breaker: {enabled: false}", 4, 250)
	retries := r.attempts - r.reqs
	// The floor is 10/s over the 10s window; the window slides by 1s
	// buckets, so a run of elapsed time spans ceil((elapsed+1s)/10s)
	// windows' floors at most.
	windows := int((r.elapsed + time.Second + 10*time.Second - 1) / (10 * time.Second))
	bound := r.reqs*20/100 + 100*windows
	t.Logf("max_fails 0: %d requests, %d attempts, %d retries (bound %d), %d budget_exhausted in %v: amplification %.3f",
		r.reqs, r.attempts, retries, bound, r.exhausted, r.elapsed.Round(time.Millisecond), r.amplification())
	if retries > bound {
		t.Errorf("%d retries for %d requests, over the budget of %d", retries, r.reqs, bound)
	}
	// Every request wanted one retry: the budget, not luck, stopped them.
	if retries < r.reqs*20/100 || retries+r.exhausted != r.reqs {
		t.Errorf("%d retries and %d budget_exhausted for %d requests: want the budget used (≥ %d) and every other request refused a retry",
			retries, r.exhausted, r.reqs, r.reqs*20/100)
	}
	m := scrape(t, p)
	if n := promValue(t, m, "tollgate_retries_skipped_total", "upstream", "app", "reason", "budget_exhausted"); int(n) != r.exhausted {
		t.Errorf("tollgate_retries_skipped_total{reason=budget_exhausted} = %v, access log says %d", n, r.exhausted)
	}
	if n := promValue(t, m, "tollgate_retries_total", "upstream", "app", "condition", "error"); int(n) != retries {
		t.Errorf("tollgate_retries_total{condition=error} = %v, access log says %d", n, retries)
	}

	// The defaults: max_fails 1 marks both servers failed (panic then
	// tries them anyway), until the breakers open and shed with 503
	// "circuit open": far fewer attempts than requests. (Nginx would answer
	// "no live upstreams" without an attempt.)
	_, r = loadAllRefusing(t, "", "", 4, 250)
	windows = int((r.elapsed + time.Second + 10*time.Second - 1) / (10 * time.Second))
	t.Logf("defaults (max_fails 1, panic_threshold 50): %d requests, %d attempts in %v: amplification %.3f",
		r.reqs, r.attempts, r.elapsed.Round(time.Millisecond), r.amplification())
	if retries := r.attempts - r.reqs; retries > r.reqs*20/100+100*windows {
		t.Errorf("defaults: %d retries for %d requests, over the budget of %d", retries, r.reqs, r.reqs*20/100+100*windows)
	}
}

func newTestBudget(percent, perSecond int, window time.Duration) *retryBudget {
	return newRetryBudget(&config.RetryBudget{Percent: &percent, MinPerSecond: &perSecond,
		Window: config.Duration{Duration: window}})
}

// TestRetryBudget steps a budget of 20 % plus 1/s over 10s (floor 10) through
// a fixed clock, across the rollover of its one-second buckets.
func TestRetryBudget(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	b := newTestBudget(20, 1, 10*time.Second)
	steps := []struct {
		name     string
		at       time.Duration
		requests int
		retries  int // asked for
		allowed  int
	}{
		{"floor without requests", 0, 0, 12, 10},
		{"50 requests add 10", 500 * time.Millisecond, 50, 12, 10},
		{"still inside the window", 9*time.Second + 999*time.Millisecond, 0, 1, 0},
		// At 10s the first bucket (slot of t0) leaves the window: its 20
		// retries and 50 requests no longer count.
		{"first bucket rolled out", 10 * time.Second, 0, 12, 10},
		{"5 requests add 1", 10*time.Second + 100*time.Millisecond, 5, 2, 1},
		{"a whole window later", 25 * time.Second, 0, 11, 10},
	}
	for _, s := range steps {
		for range s.requests {
			b.noteRequest(at(s.at))
		}
		got := 0
		for range s.retries {
			if b.allow(at(s.at)) {
				got++
			}
		}
		if got != s.allowed {
			t.Errorf("%s: %d of %d retries allowed, want %d", s.name, got, s.retries, s.allowed)
		}
	}

	zero := newTestBudget(0, 0, 10*time.Second)
	for range 100 {
		zero.noteRequest(t0)
	}
	if zero.allow(t0) {
		t.Error("a budget of 0 % and no floor allowed a retry")
	}
}

// TestRetryBackoff checks the full-jitter bounds: the pause before the n-th
// retry is in [0, min(max, base·2^n)), and none after a failed connect.
func TestRetryBackoff(t *testing.T) {
	pol := &retryPolicy{backoffBase: 25 * time.Millisecond, backoffMax: 250 * time.Millisecond}
	for n := range 40 {
		bound := min(pol.backoffMax, pol.backoffBase<<min(n, 20))
		rr := &retryRun{retries: n}
		var top time.Duration
		for range 2000 {
			d := rr.backoff(pol, &failure{})
			if d < 0 || d >= bound {
				t.Fatalf("retry %d: backoff %v outside [0, %v)", n, d, bound)
			}
			top = max(top, d)
		}
		if top < bound/2 {
			t.Errorf("retry %d: largest of 2000 backoffs %v, want draws spread up to %v", n, top, bound)
		}
		if d := rr.backoff(pol, &failure{connect: true}); d != 0 {
			t.Errorf("retry %d after a failed connect: backoff %v, want 0", n, d)
		}
	}
}

// TestRetryAfterWait checks how a Retry-After value is read and whether it
// fits the request's deadline.
func TestRetryAfterWait(t *testing.T) {
	withTimeout := &retryPolicy{timeout: 2 * time.Second}
	none := &retryPolicy{}
	rr := &retryRun{start: time.Now()}
	tests := []struct {
		value string
		pol   *retryPolicy
		wait  time.Duration
		fits  bool
	}{
		{"", withTimeout, 0, true},
		{"1", withTimeout, time.Second, true},
		{"30", withTimeout, 30 * time.Second, false},
		{"1", none, time.Second, true},
		{"2", none, 2 * time.Second, false},
		{"soon", withTimeout, 0, true},
		{"-1", withTimeout, 0, true},
		{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), withTimeout, 0, true},
	}
	for _, tt := range tests {
		wait, fits := retryAfterWait(tt.value, tt.pol, rr)
		if wait != tt.wait || fits != tt.fits {
			t.Errorf("Retry-After %q (timeout %v): wait %v fits %v, want %v %v", tt.value, tt.pol.timeout, wait, fits, tt.wait, tt.fits)
		}
	}
}
