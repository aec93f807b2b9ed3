package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nextUpstreamCase is one backend fault put behind real Nginx and behind
// tollgate, both with two servers (the faulty one first) and the same
// proxy_next_upstream settings.
type nextUpstreamCase struct {
	name   string
	first  func(testing.TB) string
	second func(testing.TB) string // nil: a healthy server
	method string
	body   string
	conds  []string // proxy_next_upstream; nil: the default (error timeout)
	tries  int      // proxy_next_upstream_tries
	single bool     // an upstream of the first server alone
	// firstNoFails sets max_fails 0 on the first server (passive health
	// off), so that only the second can be marked failed.
	firstNoFails bool
	warm         int // GETs first, so the request reuses a keep-alive connection

	// want is the outcome both must show.
	status   int
	attempts int
	// differs, when set, explains a known difference: tollgate must then
	// show tgStatus/tgAttempts, and Nginx the outcome above.
	differs    string
	tgStatus   int
	tgAttempts int
}

// badHeaderName answers a response whose header name holds a NUL byte:
// invalid for Nginx (NGX_HTTP_PARSE_INVALID_HEADER) and for tollgate.
func badHeaderName(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		if _, err := readRequestHead(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-B\x00d: 1\r\nContent-Length: 2\r\n\r\nok")
	})
}

var nextUpstreamCases = []nextUpstreamCase{
	{name: "refused GET", first: refusingAddr, method: "GET", status: 200, attempts: 2},
	{name: "reset GET", first: resetBeforeHeaders, method: "GET", status: 200, attempts: 2},
	{name: "closed GET", first: acceptThenClose, method: "GET", status: 200, attempts: 2},
	{name: "stall GET", first: stallingBackend, method: "GET", status: 200, attempts: 2},
	{name: "reset POST", first: resetBeforeHeaders, method: "POST", body: "data", status: 502, attempts: 1},
	{name: "refused POST", first: refusingAddr, method: "POST", body: "data", status: 200, attempts: 2},
	{name: "reset POST non_idempotent", first: resetBeforeHeaders, method: "POST", body: "data",
		conds: []string{"error", "timeout", "non_idempotent"}, status: 200, attempts: 2},
	{name: "reset PATCH", first: resetBeforeHeaders, method: "PATCH", body: "data", status: 502, attempts: 1},
	{name: "reset PUT", first: resetBeforeHeaders, method: "PUT", body: "data", status: 200, attempts: 2},
	{name: "503 listed", first: answeringStatus(503), method: "GET", conds: []string{"error", "http_503"}, status: 200, attempts: 2},
	{name: "503 not listed", first: answeringStatus(503), method: "GET", status: 503, attempts: 1},
	{name: "503 listed on both", first: answeringStatus(503), second: answeringStatus(503), method: "GET",
		conds: []string{"error", "http_503"}, status: 503, attempts: 2},
	{name: "503 listed POST", first: answeringStatus(503), method: "POST", body: "data",
		conds: []string{"error", "http_503"}, status: 503, attempts: 1},
	{name: "500 listed", first: answeringStatus(500), method: "GET", conds: []string{"http_500"}, status: 200, attempts: 2},
	{name: "429 listed", first: answeringStatus(429), method: "GET", conds: []string{"http_429"}, status: 200, attempts: 2},
	{name: "404 listed", first: answeringStatus(404), method: "GET", conds: []string{"error", "http_404"}, status: 200, attempts: 2},
	{name: "403 listed", first: answeringStatus(403), method: "GET", conds: []string{"http_403"}, status: 200, attempts: 2},
	{name: "tries 1 refused", first: refusingAddr, method: "GET", tries: 1, status: 502, attempts: 1},
	{name: "tries 1 503 listed", first: answeringStatus(503), method: "GET", conds: []string{"error", "http_503"}, tries: 1, status: 503, attempts: 1},
	{name: "off refused", first: refusingAddr, method: "GET", conds: []string{"off"}, status: 502, attempts: 1},
	{name: "bad header listed", first: badHeaderName, method: "GET", conds: []string{"error", "invalid_header"}, status: 200, attempts: 2},
	{name: "bad header not listed", first: badHeaderName, method: "GET", status: 502, attempts: 1},
	// The keep-alive race: the one server closes a reused connection as
	// the request arrives. A cached connection's error does not use up a
	// try (ngx_http_upstream_next: u->peer.tries++).
	{name: "keep-alive race tries 1", first: dropsReusedConn, single: true, method: "GET", tries: 1, warm: 1, status: 200, attempts: 2},
	{name: "keep-alive race POST", first: dropsReusedConn, single: true, method: "POST", body: "data", warm: 1, status: 502, attempts: 1},
	{name: "keep-alive race PUT tries 1", first: dropsReusedConn, single: true, method: "PUT", body: "data", tries: 1, warm: 1, status: 200, attempts: 2},
	{name: "keep-alive race POST non_idempotent", first: dropsReusedConn, single: true, method: "POST", body: "data",
		conds: []string{"error", "non_idempotent"}, tries: 1, warm: 1, status: 200, attempts: 2},
	{name: "keep-alive race off", first: dropsReusedConn, single: true, method: "GET", conds: []string{"off"}, warm: 1,
		status: 502, attempts: 1,
		differs: "tollgate resends a safe request after a keep-alive race even with off (as Go's Transport); " +
			"Nginx's tries++ for a cached connection still asks proxy_next_upstream",
		tgStatus: 200, tgAttempts: 2},
	// Two servers, each with a reused connection that races. Nginx does
	// not count the two cached errors as tries but has no server left
	// ("no live upstreams", a third entry named after the upstream);
	// tollgate resends once for free, then counts the second race.
	{name: "keep-alive race on both servers", first: dropsReusedConn, second: dropsReusedConn, method: "GET", tries: 1, warm: 2,
		status: 502, attempts: 2},
	// The second server was marked failed by the warm-up request (the
	// first has passive health off); the first times out.
	{name: "timeout, other server failed", first: stallingBackend, second: refusingAddr, firstNoFails: true, method: "GET", warm: 1,
		status: 502, attempts: 1,
		differs: "with no usable server left for a retry, Nginx answers 502 (no live upstreams); " +
			"tollgate answers for the last failure, here 504 for the timeout",
		tgStatus: 504, tgAttempts: 1},
	// Nginx logs $status 009 and $upstream_status 200: it sends the bytes
	// on as an HTTP/0.9 response, without a status line.
	{name: "non-HTTP status line", first: malformedResponse, method: "GET", conds: []string{"error", "invalid_header"},
		status: 9, attempts: 1,
		differs: "Nginx takes a response without an HTTP status line for HTTP/0.9 and passes it on " +
			"(ngx_http_proxy_process_status_line); tollgate treats it as invalid_header and retries",
		tgStatus: 200, tgAttempts: 2},
}

const retryNginxConf = nginxProcess + `error_log {{dir}}/error.log info;
events { worker_connections 64; }
http {
    log_format retry escape=json '{"request":"$request","status":"$status",'
        '"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status"}';
    access_log {{dir}}/access.log retry;
` + nginxTempPaths + `{{upstreams}}
    server {
        listen {{listen}};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 300ms;
{{locations}}
    }
}
`

// nginxNextUpstream renders c's proxy_next_upstream directives.
func (c *nextUpstreamCase) nginxDirectives() string {
	conds := "error timeout"
	if c.conds != nil {
		conds = strings.Join(c.conds, " ")
	}
	return fmt.Sprintf("proxy_next_upstream %s; proxy_next_upstream_tries %d;", conds, c.tries)
}

// tollgateRoute renders c's route settings.
func (c *nextUpstreamCase) tollgateRoute() string {
	var b strings.Builder
	if c.conds != nil {
		fmt.Fprintf(&b, "    proxy_next_upstream: [%s]\n", strings.Join(c.conds, ", "))
	}
	fmt.Fprintf(&b, "    proxy_next_upstream_tries: %d\n", c.tries)
	return b.String()
}

// runRetryNginx runs nginx on conf (placeholders {{dir}} and {{listen}})
// until the test ends, and returns its address and access log path.
func runRetryNginx(t testing.TB, conf string) (addr, accessLog string) {
	t.Helper()
	dir := t.TempDir()
	addr = freeLoopbackAddr(t)
	runNginxConf(t, dir, addr, strings.NewReplacer("{{dir}}", dir, "{{listen}}", addr).Replace(conf))
	return addr, filepath.Join(dir, "access.log")
}

// nginxRetryLine waits for Nginx's access log line of request ("GET /c1/x
// HTTP/1.1").
func nginxRetryLine(t testing.TB, accessLog, request string) (status int, upAddr, upStatus string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		b, _ := os.ReadFile(accessLog)
		for line := range strings.SplitSeq(string(b), "\n") {
			var l struct{ Request, Status, Upstream_addr, Upstream_status string }
			if line != "" && json.Unmarshal([]byte(line), &l) == nil && l.Request == request {
				status, _ = strconv.Atoi(l.Status)
				return status, l.Upstream_addr, l.Upstream_status
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no nginx access line for %q within %v:\n%s", request, waitLimit, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serverAttempts drops from Nginx's $upstream_addr and $upstream_status the
// entries of "no live upstreams", which name the upstream instead of a
// server: no server was tried.
func serverAttempts(addrs, statuses string) (string, string) {
	as, ss := strings.Split(addrs, ", "), strings.Split(statuses, ", ")
	if len(as) != len(ss) {
		return addrs, statuses
	}
	var keepA, keepS []string
	for i, a := range as {
		if strings.Contains(a, ":") {
			keepA, keepS = append(keepA, a), append(keepS, ss[i])
		}
	}
	return strings.Join(keepA, ", "), strings.Join(keepS, ", ")
}

// TestNextUpstreamAgainstNginx puts the same backend faults behind real
// Nginx and behind tollgate, each case an upstream of two servers with the
// same proxy_next_upstream settings, and compares the final status and the
// number of attempts ($upstream_addr entries).
func TestNextUpstreamAgainstNginx(t *testing.T) {
	requireBinary(t, "nginx")
	var ups, locs, tg strings.Builder
	tg.WriteString("proxy_read_timeout: 300ms\nupstreams:\n")
	var routes strings.Builder
	for i := range nextUpstreamCases {
		c := &nextUpstreamCases[i]
		first := c.first(t)
		servers := []string{first}
		switch {
		case c.single:
		case c.second != nil:
			servers = append(servers, c.second(t))
		default:
			good, _ := healthyCounting(t)
			servers = append(servers, good)
		}
		fmt.Fprintf(&ups, "    upstream c%d {", i)
		fmt.Fprintf(&tg, "  - name: c%d\n    servers:\n", i)
		for j, s := range servers {
			maxFails := 1
			if j == 0 && c.firstNoFails {
				maxFails = 0
			}
			fmt.Fprintf(&ups, " server %s max_fails=%d;", s, maxFails)
			fmt.Fprintf(&tg, "      - addr: %s\n        max_fails: %d\n", s, maxFails)
		}
		fmt.Fprintf(&ups, " keepalive 4; }\n")
		fmt.Fprintf(&locs, "        location /c%d/ { proxy_pass http://c%d; %s }\n", i, i, c.nginxDirectives())
		fmt.Fprintf(&routes, "  - path_prefix: /c%d/\n    upstream: c%d\n%s", i, i, c.tollgateRoute())
	}
	conf := strings.NewReplacer("{{upstreams}}", ups.String(), "{{locations}}", locs.String()).Replace(retryNginxConf)
	nginxAddr, accessLog := runRetryNginx(t, conf)
	p := startProxy(t, tg.String()+"routes:\n"+routes.String())

	for i := range nextUpstreamCases {
		c := &nextUpstreamCases[i]
		t.Run(c.name, func(t *testing.T) {
			path := fmt.Sprintf("/c%d/x", i)
			ask := func(base string) {
				client := newClient(t)
				for range c.warm {
					if resp, err := client.Get(base + fmt.Sprintf("/c%d/warm", i)); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
				var body io.Reader
				if c.body != "" {
					body = strings.NewReader(c.body)
				}
				req, _ := http.NewRequest(c.method, base+path, body)
				// The logs tell the outcome: a client may fail to read
				// what Nginx passes on as HTTP/0.9.
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			ask("http://" + nginxAddr)
			ask(p.URL)
			nStatus, nAddr, nUp := nginxRetryLine(t, accessLog, c.method+" "+path+" HTTP/1.1")
			nAddr, nUp = serverAttempts(nAddr, nUp)
			nAttempts := retryLine{UpstreamAddr: nAddr}.attempts()
			l := p.retryLog(t, path)
			t.Logf("nginx: %d %q %q | tollgate: %d %q %q %q", nStatus, nUp, nAddr, l.Status, l.UpstreamStatus, l.UpstreamAddr, l.RetrySkipped)

			if nStatus != c.status || nAttempts != c.attempts {
				t.Errorf("nginx: %d after %d attempts (%q), want %d after %d: the case's expectation is wrong",
					nStatus, nAttempts, nUp, c.status, c.attempts)
			}
			wantStatus, wantAttempts := c.status, c.attempts
			if c.differs != "" {
				wantStatus, wantAttempts = c.tgStatus, c.tgAttempts
				t.Logf("known difference: %s", c.differs)
			}
			if l.Status != wantStatus || l.attempts() != wantAttempts {
				t.Errorf("tollgate: %d after %d attempts (%q), want %d after %d",
					l.Status, l.attempts(), l.UpstreamStatus, wantStatus, wantAttempts)
			}
			if c.differs == "" && (l.UpstreamStatus != nUp || l.UpstreamAddr != nAddr) {
				t.Errorf("upstream_status %q upstream_addr %q; nginx %q %q", l.UpstreamStatus, l.UpstreamAddr, nUp, nAddr)
			}
		})
	}
}
