package proxy

import (
	"net/http"
	"testing"
)

func TestMatchPath(t *testing.T) {
	tests := []struct {
		raw, want string
		ok        bool
	}{
		{"/", "/", true},
		{"/api/v1/items", "/api/v1/items", true},
		{"/./admin", "/admin", true},
		{"//admin", "/admin", true},
		{"/a//b///c", "/a/b/c", true},
		{"/a/b/../admin/", "/a/admin/", true},
		{"/%61dmin", "/admin", true},
		{"/a/%2e%2e/admin", "/admin", true},
		{"/a/.", "/a/", true},
		{"/a/..", "/", true},
		{"/%zz", "/%zz", true},
		{"/..", "", false},
		{"/a/../../etc", "", false},
		{"*", "*", true},
	}
	for _, tt := range tests {
		got, ok := matchPath(tt.raw)
		if got != tt.want || ok != tt.ok {
			t.Errorf("matchPath(%q) = %q, %v; want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { matchPath("/api/v1/items?x") }); n != 0 {
		t.Errorf("clean path: %v allocs, want 0", n)
	}
}

// TestRouteCannotBeDodged: a request for "/./admin" or "//admin" takes the
// /admin route (and its limits), not the catch-all, while the backend still
// gets the target exactly as sent.
func TestRouteCannotBeDodged(t *testing.T) {
	admin, other := namedBackend(t, "admin"), namedBackend(t, "other")
	p := startProxy(t, "upstreams:\n  - name: admin\n    servers:\n      - addr: "+admin.Addr+
		"\n  - name: other\n    servers:\n      - addr: "+other.Addr+
		"\nroutes:\n  - path_prefix: /admin\n    upstream: admin\n  - path_prefix: /\n    upstream: other\n")
	for _, path := range []string{"/admin", "/./admin", "//admin", "/x/../admin", "/%61dmin"} {
		resp, body := rawRequest(t, p.Addr, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp.StatusCode != http.StatusOK || string(body) != "admin" {
			t.Errorf("GET %s: %d %q, want the admin route", path, resp.StatusCode, body)
		}
	}
	if resp, _ := rawRequest(t, p.Addr, "GET /../etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 400 {
		t.Errorf("GET /../etc/passwd: %d, want 400", resp.StatusCode)
	}
}
