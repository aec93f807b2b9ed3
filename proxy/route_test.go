package proxy

import (
	"net/http"
	"strings"
	"testing"
)

func TestRouteTableMatch(t *testing.T) {
	table := newRouteTable([]*route{
		{name: "exact", host: "api.example.com", prefix: "/"},
		{name: "exact-v1", host: "api.example.com", prefix: "/v1/"},
		{name: "exact-v1-users", host: "api.example.com", prefix: "/v1/users"},
		{name: "wild", host: "*.example.com", prefix: "/"},
		{name: "wild-api", host: "*.api.example.com", prefix: "/"},
		{name: "only-admin", host: "only.example.com", prefix: "/admin/"},
		{name: "wild-admin", host: "*.corp.test", prefix: "/admin/"},
		{name: "any", host: "", prefix: "/"},
		{name: "any-static", host: "", prefix: "/static/"},
		{name: "v6", host: "::1", prefix: "/"},
	})
	tests := []struct {
		host, path string
		want       string // route name, "" for no match
	}{
		// Exact beats wildcard beats any host.
		{"api.example.com", "/", "exact"},
		{"www.example.com", "/", "wild"},
		{"other.org", "/", "any"},
		// Longest prefix wins within a host group.
		{"api.example.com", "/v1/", "exact-v1"},
		{"api.example.com", "/v1/users/7", "exact-v1-users"},
		{"api.example.com", "/v1/user", "exact-v1"},
		{"api.example.com", "/v2/users", "exact"},
		{"other.org", "/static/app.js", "any-static"},
		{"other.org", "/static", "any"}, // a prefix, not a directory
		// Paths are case-sensitive, hosts are not.
		{"api.example.com", "/V1/", "exact"},
		{"API.Example.COM", "/v1/", "exact-v1"},
		// Port and trailing dot are ignored.
		{"api.example.com:8080", "/v1/", "exact-v1"},
		{"API.EXAMPLE.COM:443", "/", "exact"},
		{"api.example.com.", "/", "exact"},
		{"WWW.Example.com:80", "/", "wild"},
		{"[::1]:8080", "/", "v6"},
		{"[::1]", "/", "v6"},
		// The longest wildcard wins; a wildcard needs a subdomain.
		{"x.api.example.com", "/", "wild-api"},
		{"a.b.example.com", "/", "wild"},
		{"example.com", "/", "any"},
		{"notexample.com", "/", "any"},
		// A host group without a matching prefix does not fall through.
		{"only.example.com", "/admin/users", "only-admin"},
		{"only.example.com", "/other", ""},
		{"ONLY.example.com:8443", "/", ""},
		{"x.corp.test", "/", ""},
		// No Host at all: the any-host routes.
		{"", "/static/x", "any-static"},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			got := ""
			if rt := table.match(tt.host, tt.path); rt != nil {
				got = rt.name
			}
			if got != tt.want {
				t.Errorf("match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestRouteTableNoAnyHost(t *testing.T) {
	table := newRouteTable([]*route{{name: "exact", host: "a.test", prefix: "/"}})
	if rt := table.match("b.test", "/"); rt != nil {
		t.Errorf("match(b.test) = %q, want nil", rt.name)
	}
}

func TestNormalizeHostNoAlloc(t *testing.T) {
	for _, h := range []string{"api.example.com", "api.example.com:8080", "[::1]:80"} {
		if n := testing.AllocsPerRun(100, func() { normalizeHost(h) }); n != 0 {
			t.Errorf("normalizeHost(%q): %v allocs, want 0", h, n)
		}
	}
}

func TestRouteNotFoundEndToEnd(t *testing.T) {
	b := namedBackend(t, "admin")
	anyB := namedBackend(t, "any")
	p := startProxy(t, `
upstreams:
  - name: admin
    servers:
      - addr: `+b.Addr+`
  - name: any
    servers:
      - addr: `+anyB.Addr+`
routes:
  - host: only.example.com
    path_prefix: /admin/
    upstream: admin
  - path_prefix: /
    upstream: any
`)
	tests := []struct {
		host, path string
		code       int
		body       string
	}{
		{"only.example.com", "/admin/x", 200, "admin"},
		{"ONLY.example.com:80", "/admin/x", 200, "admin"},
		{"only.example.com", "/other", 404, ""},
		{"elsewhere.test", "/other", 200, "any"},
	}
	for _, tt := range tests {
		req := "GET " + tt.path + " HTTP/1.1\r\nHost: " + tt.host + "\r\nConnection: close\r\n\r\n"
		resp, body := rawRequest(t, p.Addr, req)
		if resp.StatusCode != tt.code {
			t.Errorf("%s%s: status %d, want %d", tt.host, tt.path, resp.StatusCode, tt.code)
		}
		if tt.body != "" && string(body) != tt.body {
			t.Errorf("%s%s: body %q, want %q", tt.host, tt.path, body, tt.body)
		}
		if tt.code == http.StatusNotFound && resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("404 without X-Request-Id")
		}
	}
	if b.conns.Load() != 1 || anyB.conns.Load() != 1 {
		t.Errorf("backend conns admin=%d any=%d, want 1 each (the 404 reached no backend)", b.conns.Load(), anyB.conns.Load())
	}
	p.settle(t)
	if !strings.Contains(p.log.String(), `"status":404`) {
		t.Errorf("access log has no 404 line:\n%s", p.log.String())
	}
}
