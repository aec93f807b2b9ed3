package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// closesNginxConf is Nginx in front of tollgate as the README recommends:
// X-Request-ID from $request_id, an access log that carries $request_id,
// $connection (the *N of error.log lines) and tollgate's Proxy-Status, and
// error.log at info so that client-side lines show too.
const closesNginxConf = nginxProcess + `error_log {{dir}}/error.log info;
events { worker_connections 64; }
http {
    log_format join escape=json '{"connection":"$connection","request_id":"$request_id",'
        '"status":"$status","request":"$request","upstream_status":"$upstream_status",'
        '"proxy_status":"$upstream_http_proxy_status"}';
    access_log {{dir}}/access.log join;
` + nginxTempPaths + `    upstream tg {
        server {{upstream}};
        keepalive 8;
    }
    server {
        listen {{listen}};
        proxy_read_timeout 10s;
        location / {
            proxy_pass http://tg;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header Host $host;
        }
    }
}
`

// edgeNginx is a running Nginx whose logs the test reads.
type edgeNginx struct {
	URL       string
	errorLog  string
	accessLog string
}

// startEdgeNginx runs Nginx with closesNginxConf in front of upstream, in
// the foreground with a temporary prefix, until the test ends.
func startEdgeNginx(t testing.TB, upstream string) *edgeNginx {
	t.Helper()
	dir := t.TempDir()
	listen := freeLoopbackAddr(t)
	conf := strings.NewReplacer("{{dir}}", dir, "{{upstream}}", upstream, "{{listen}}", listen).Replace(closesNginxConf)
	runNginxConf(t, dir, listen, conf)
	return &edgeNginx{URL: "http://" + listen, errorLog: filepath.Join(dir, "error.log"), accessLog: filepath.Join(dir, "access.log")}
}

func (n *edgeNginx) errors() string {
	b, _ := os.ReadFile(n.errorLog)
	return string(b)
}

// nginxAccess is one line of the join log_format.
type nginxAccess struct {
	Connection     string `json:"connection"`
	RequestID      string `json:"request_id"`
	Status         string `json:"status"`
	Request        string `json:"request"`
	UpstreamStatus string `json:"upstream_status"`
	ProxyStatus    string `json:"proxy_status"`
}

// accessFor waits for Nginx's access log line of request (e.g. "GET /x
// HTTP/1.1"): Nginx writes it once the request is finalized.
func (n *edgeNginx) accessFor(t testing.TB, request string) nginxAccess {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		b, _ := os.ReadFile(n.accessLog)
		for line := range strings.SplitSeq(string(b), "\n") {
			if line == "" {
				continue
			}
			var a nginxAccess
			if err := json.Unmarshal([]byte(line), &a); err != nil {
				t.Fatalf("nginx access line is not JSON: %v\n%s", err, line)
			}
			if a.Request == request {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no nginx access line for %q within %v:\n%s", request, waitLimit, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// errorLine is one parsed Nginx error.log line (specs/close-reasons.md,
// "Nginx error.log line format").
type errorLine struct {
	Level, Conn, Message, Request string
}

var errorLineRE = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: \*(\d+) (.*?), client: .*?(?:, request: "([^"]*)")?(?:, upstream: .*)?$`)

// errorLines returns the error.log lines about request at level.
func (n *edgeNginx) errorLines(request, level string) []errorLine {
	var out []errorLine
	for line := range strings.SplitSeq(n.errors(), "\n") {
		m := errorLineRE.FindStringSubmatch(line)
		if m != nil && m[1] == level && m[4] == request {
			out = append(out, errorLine{Level: m[1], Conn: m[2], Message: m[3], Request: m[4]})
		}
	}
	return out
}

// awaitErrorLine waits for Nginx's error.log line of level about request.
func (n *edgeNginx) awaitErrorLine(t testing.TB, request, level string) errorLine {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if lines := n.errorLines(request, level); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no [%s] line for %q in nginx's error.log within %v:\n%s", level, request, waitLimit, n.errors())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// faultRoutesYAML routes /NAME/… to an upstream NAME of one server each.
func faultRoutesYAML(servers map[string]string) string {
	var ups, routes strings.Builder
	for name, addr := range servers {
		fmt.Fprintf(&ups, "  - name: %s\n    servers:\n      - addr: %s\n", name, addr)
		fmt.Fprintf(&routes, "  - path_prefix: /%s/\n    upstream: %s\n", name, name)
	}
	return "upstreams:\n" + ups.String() + "routes:\n" + routes.String()
}

// TestClosesBehindNginx puts a real Nginx in front of tollgate and has
// tollgate proxy to a faulty backend per route. For each fault it checks
// tollgate's close record, what Nginx logged (error.log line, or access log
// status and Proxy-Status when tollgate answered cleanly), and that both
// join on the request id Nginx generated.
func TestClosesBehindNginx(t *testing.T) {
	requireBinary(t, "nginx")
	// tollgate's proxy_read_timeout is shorter than Nginx's (10s): on a
	// stalled backend tollgate answers 504 before Nginx would time out.
	p := startProxyWithCloses(t, "proxy_read_timeout: 200ms\n"+faultRoutesYAML(map[string]string{
		"refuse": refusingAddr(t),
		"reset":  resetBeforeHeaders(t),
		"stall":  stallingBackend(t),
		"cut":    cutBody(t),
	}))
	edge := startEdgeNginx(t, p.Addr)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(edge.accessLog)
			t.Logf("nginx error.log:\n%s\nnginx access.log:\n%s\ntollgate closes:\n%s", edge.errors(), b, p.closes.String())
		}
	})
	client := newClient(t)

	clean := []struct {
		path, reason, proxyErr string
		status                 int
	}{
		{"/refuse/x", "us_connect_refused", "connection_refused", 502},
		{"/reset/x", "us_reset_before_headers", "connection_terminated", 502},
		{"/stall/x", "us_header_timeout", "http_response_timeout", 504},
	}
	for _, tt := range clean {
		t.Run(tt.reason, func(t *testing.T) {
			resp, err := client.Get(edge.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("client got %d through nginx, want tollgate's %d", resp.StatusCode, tt.status)
			}
			request := "GET " + tt.path + " HTTP/1.1"
			na := edge.accessFor(t, request)
			wantPS := fmt.Sprintf("tollgate; error=%s; details=%q", tt.proxyErr, tt.reason)
			if na.Status != fmt.Sprint(tt.status) || na.UpstreamStatus != fmt.Sprint(tt.status) || na.ProxyStatus != wantPS {
				t.Errorf("nginx logged status %s upstream_status %s proxy_status %q; want %d %d %q",
					na.Status, na.UpstreamStatus, na.ProxyStatus, tt.status, tt.status, wantPS)
			}
			// tollgate answered: Nginx has nothing to complain about.
			if lines := edge.errorLines(request, "error"); len(lines) != 0 {
				t.Errorf("nginx logged %q for a clean %d from tollgate", lines[0].Message, tt.status)
			}
			rec := p.awaitRecord(t, "of request "+na.RequestID, func(r *closeRecord) bool { return r.RequestID == na.RequestID })
			if rec.Side != "upstream" || rec.Reason != tt.reason {
				t.Errorf("tollgate record for nginx's request_id %s: %s %s, want upstream %s", na.RequestID, rec.Side, rec.Reason, tt.reason)
			}
			if a := p.accessFor(t, tt.path); a.RequestID != na.RequestID || a.UpstreamClose != tt.reason {
				t.Errorf("tollgate access line request_id %q upstream_close %q, want nginx's %q and %s", a.RequestID, a.UpstreamClose, na.RequestID, tt.reason)
			}
		})
	}

	t.Run("ds_upstream_abort", func(t *testing.T) {
		resp, err := client.Get(edge.URL + "/cut/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "0123456789" {
			t.Errorf("client got %d %q, want 200 and the 10 bytes before the cut", resp.StatusCode, body)
		}
		request := "GET /cut/x HTTP/1.1"
		el := edge.awaitErrorLine(t, request, "error")
		if el.Message != "upstream prematurely closed connection while reading upstream" {
			t.Errorf("nginx error.log: %q, want \"upstream prematurely closed connection while reading upstream\"", el.Message)
		}
		// Join: error.log *N → access log $connection → $request_id →
		// tollgate's records.
		na := edge.accessFor(t, request)
		if na.Connection != el.Conn {
			t.Fatalf("nginx access line of %q is on connection %s, the error line on *%s", request, na.Connection, el.Conn)
		}
		if na.Status != "200" || na.UpstreamStatus != "200" {
			t.Errorf("nginx logged status %s upstream_status %s, want 200 200 (a truncated body)", na.Status, na.UpstreamStatus)
		}
		ds := p.awaitRecord(t, "downstream of request "+na.RequestID, func(r *closeRecord) bool {
			return r.Side == "downstream" && r.RequestID == na.RequestID
		})
		downstreamClose("ds_upstream_abort", "proxy", "fin", "response_body").check(t, ds)
		us := p.expectCause(t, ds, upstreamClose("us_closed_during_body", "peer", "fin", "response_body"))
		if us.RequestID != na.RequestID {
			t.Errorf("upstream record request_id %q, want nginx's %q", us.RequestID, na.RequestID)
		}
	})
}
