package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func ptr(n int) *int { return &n }

func sec(n int) Duration { return Duration{time.Duration(n) * time.Second} }

// mustParse parses src with no environment and fails the test on error.
func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := parse("t.yaml", []byte(src), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return c
}

func noEnv(string) (string, bool) { return "", false }

// errorList parses src, which must fail, and returns its problems.
func errorList(t *testing.T, src string) []Error {
	t.Helper()
	_, err := parse("t.yaml", []byte(src), noEnv)
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("parse error = %v; want *Errors", err)
	}
	return errs.List
}

// assertErrors compares problems as printed, which covers every field.
func assertErrors(t *testing.T, got []Error, want []string) {
	t.Helper()
	var lines []string
	for _, e := range got {
		lines = append(lines, e.Error())
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

const minimal = `
upstreams:
  - name: app
    servers:
      - addr: 127.0.0.1:3000
routes:
  - upstream: app
`

func TestDefaults(t *testing.T) {
	got := mustParse(t, minimal)
	want := &Config{
		Listen: []Listener{{Addr: "127.0.0.1:8080"}},
		Admin:  Admin{Addr: "127.0.0.1:9901"},
		Upstreams: []Upstream{{
			Name:    "app",
			Balance: BalanceRoundRobin,
			Servers: []Server{{
				Addr:        "127.0.0.1:3000",
				Weight:      1,
				MaxFails:    ptr(1),
				FailTimeout: sec(10),
			}},
			Keepalive:         ptr(32),
			KeepaliveTimeout:  sec(4),
			KeepaliveRequests: 1000,
			KeepaliveTime:     sec(3600),
			RetryBudget:       &RetryBudget{Percent: ptr(20), MinPerSecond: ptr(10), Window: sec(10)},
			Breaker:           defaultBreaker(),
			PanicThreshold:    50,
		}},
		Routes: []Route{{
			PathPrefix:        "/",
			Upstream:          "app",
			LimitReqStatus:    503,
			LimitReqLogLevel:  "error",
			ProxyNextUpstream: []string{"error", "timeout"},
			RetryBodyLimit:    Size{64 << 10},
			RetryBackoff:      Backoff{Base: Duration{25 * time.Millisecond}, Max: Duration{250 * time.Millisecond}},
		}},
		ClientHeaderTimeout:   sec(60),
		ClientBodyTimeout:     sec(60),
		SendTimeout:           sec(60),
		KeepaliveTimeout:      sec(75),
		KeepaliveRequests:     1000,
		LargeClientHeaderSize: Size{32 << 10},
		ClientMaxBodySize:     Size{1 << 20},
		ProxyConnectTimeout:   sec(60),
		ProxyReadTimeout:      sec(60),
		ProxySendTimeout:      sec(60),
		ShutdownTimeout:       sec(30),
		EdgeProxyReadTimeout:  sec(60),
		RequestIDHeader:       "X-Request-ID",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

const full = `
listen:
  - addr: 127.0.0.1:8080
  - addr: :8081
admin:
  addr: "off"
real_ip:
  set_real_ip_from: [127.0.0.1, 10.1.0.0/8, "::1"]
  real_ip_header: X-Forwarded-For
  real_ip_recursive: on
limit_req_zones:
  - name: perip
    key: $binary_remote_addr
    size: 10m
    rate: 30r/m
  - name: global
    key: all
    size: 32k
upstreams:
  - name: app
    balance: least_conn
    keepalive: 0
    keepalive_timeout: 2s
    keepalive_requests: 50
    keepalive_time: 10m
    servers:
      - addr: 127.0.0.1:3000
        weight: 3
        max_fails: 0
        fail_timeout: 30s
        max_conns: 100
      - addr: backup.internal:3000
        backup: true
        down: false
routes:
  - host: "*.example.com"
    path_prefix: /api/
    upstream: app
    limit_req:
      - zone: global
        burst: 100
        nodelay: true
      - zone: perip
        burst: 20
        delay: 8
    limit_req_status: 429
    limit_req_dry_run: true
    limit_req_log_level: warn
client_header_timeout: 0
client_body_timeout: 1m
send_timeout: 500ms
keepalive_timeout: 0
keepalive_requests: 0
large_client_header_size: 64k
proxy_connect_timeout: 5s
proxy_read_timeout: 2m
proxy_send_timeout: 90
shutdown_timeout: 1m30s
request_id_header: X-Trace-ID
`

func TestFull(t *testing.T) {
	got := mustParse(t, full)
	want := &Config{
		Listen: []Listener{{Addr: "127.0.0.1:8080"}, {Addr: ":8081"}},
		Admin:  Admin{Addr: "off"},
		RealIP: &RealIP{
			SetRealIPFrom: []Prefix{
				{netip.MustParsePrefix("127.0.0.1/32")},
				{netip.MustParsePrefix("10.0.0.0/8")},
				{netip.MustParsePrefix("::1/128")},
			},
			RealIPHeader:    "X-Forwarded-For",
			RealIPRecursive: true,
		},
		LimitReqZones: []LimitReqZone{
			{Name: "perip", Key: "$binary_remote_addr", Size: Size{10 << 20}, Rate: Rate{500}},
			{Name: "global", Key: "all", Size: Size{32 << 10}, Rate: Rate{1000}},
		},
		Upstreams: []Upstream{{
			Name:    "app",
			Balance: BalanceLeastConn,
			Servers: []Server{
				{Addr: "127.0.0.1:3000", Weight: 3, MaxFails: ptr(0), FailTimeout: sec(30), MaxConns: 100},
				{Addr: "backup.internal:3000", Weight: 1, MaxFails: ptr(1), FailTimeout: sec(10), Backup: true},
			},
			Keepalive:         ptr(0),
			KeepaliveTimeout:  sec(2),
			KeepaliveRequests: 50,
			KeepaliveTime:     sec(600),
			RetryBudget:       &RetryBudget{Percent: ptr(20), MinPerSecond: ptr(10), Window: sec(10)},
			Breaker:           defaultBreaker(),
			PanicThreshold:    50,
		}},
		Routes: []Route{{
			Host:       "*.example.com",
			PathPrefix: "/api/",
			Upstream:   "app",
			LimitReq: []LimitReq{
				{Zone: "global", Burst: ptr(100), NoDelay: true},
				{Zone: "perip", Burst: ptr(20), Delay: ptr(8)},
			},
			LimitReqStatus:    429,
			LimitReqDryRun:    true,
			LimitReqLogLevel:  "warn",
			ProxyNextUpstream: []string{"error", "timeout"},
			RetryBodyLimit:    Size{64 << 10},
			RetryBackoff:      Backoff{Base: Duration{25 * time.Millisecond}, Max: Duration{250 * time.Millisecond}},
		}},
		ClientHeaderTimeout:   sec(0),
		ClientBodyTimeout:     sec(60),
		SendTimeout:           Duration{500 * time.Millisecond},
		KeepaliveTimeout:      sec(0),
		KeepaliveRequests:     0,
		LargeClientHeaderSize: Size{64 << 10},
		ClientMaxBodySize:     Size{1 << 20},
		ProxyConnectTimeout:   sec(5),
		ProxyReadTimeout:      sec(120),
		ProxySendTimeout:      sec(90),
		ShutdownTimeout:       sec(90),
		EdgeProxyReadTimeout:  sec(60),
		RequestIDHeader:       "X-Trace-ID",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if got.Admin.Enabled() {
		t.Error("admin addr off: Enabled() = true")
	}
	if u := got.Upstream("app"); u != &got.Upstreams[0] {
		t.Errorf("Upstream(app) = %p; want %p", u, &got.Upstreams[0])
	}
	if u := got.Upstream("nope"); u != nil {
		t.Errorf("Upstream(nope) = %v; want nil", u)
	}
	if z := got.Zone("global"); z != &got.LimitReqZones[1] {
		t.Errorf("Zone(global) = %p; want %p", z, &got.LimitReqZones[1])
	}
	if z := got.Zone("nope"); z != nil {
		t.Errorf("Zone(nope) = %v; want nil", z)
	}
	l := got.Routes[0].LimitReq
	if l[1].BurstOrZero() != 20 || l[1].DelayOrZero() != 8 || l[0].DelayOrZero() != 0 {
		t.Errorf("accessors: burst %d delay %d, %d; want 20 8 0", l[1].BurstOrZero(), l[1].DelayOrZero(), l[0].DelayOrZero())
	}
}

// TestZeroMeaning pins which explicit zeros are kept and which mean the
// default, as documented on each field.
func TestZeroMeaning(t *testing.T) {
	c := mustParse(t, minimal+`
shutdown_timeout: 0
large_client_header_size: 0
request_id_header: ""
send_timeout: 0
`)
	if c.ShutdownTimeout != sec(30) || c.LargeClientHeaderSize != (Size{32 << 10}) || c.RequestIDHeader != "X-Request-ID" {
		t.Errorf("zero-means-default fields = %v %v %q; want 30s 32k X-Request-ID", c.ShutdownTimeout, c.LargeClientHeaderSize, c.RequestIDHeader)
	}
	if c.SendTimeout != sec(0) {
		t.Errorf("send_timeout: 0 = %v; want 0 (no limit)", c.SendTimeout)
	}
}

func TestNullIsAbsent(t *testing.T) {
	c := mustParse(t, minimal+`
keepalive_timeout: ~
real_ip:
admin: null
`)
	if c.KeepaliveTimeout != sec(75) || c.RealIP != nil || c.Admin.Addr != DefaultAdminAddr {
		t.Errorf("null values = %v %v %q; want defaults", c.KeepaliveTimeout, c.RealIP, c.Admin.Addr)
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	c := mustParse(t, `
x-server: &srv
  weight: 5
  max_conns: 7
upstreams:
  - name: a
    servers:
      - <<: *srv
        addr: 127.0.0.1:1
        weight: 2
  - name: b
    servers: &servers
      - addr: 127.0.0.1:2
  - name: c
    servers: *servers
routes:
  - upstream: a
`)
	a := c.Upstreams[0].Servers[0]
	if a.Weight != 2 || a.MaxConns != 7 {
		t.Errorf("merged server weight %d max_conns %d; want 2 (own key wins) and 7 (merged)", a.Weight, a.MaxConns)
	}
	if got := c.Upstreams[2].Servers; len(got) != 1 || got[0].Addr != "127.0.0.1:2" {
		t.Errorf("aliased servers = %+v; want one at 127.0.0.1:2", got)
	}
}

func TestAliasBomb(t *testing.T) {
	// Each level merges the one below ten times: 10^9 keys if expanded.
	src := "x-a: &a {weight: 1}\n"
	for c := 'b'; c <= 'j'; c++ {
		src += fmt.Sprintf("x-%c: &%c {<<: [%s]}\n", c, c, strings.Repeat(fmt.Sprintf("*%c, ", c-1), 9)+fmt.Sprintf("*%c", c-1))
	}
	src += "upstreams: [{name: u, servers: [{<<: *j, addr: 127.0.0.1:1}]}]\nroutes: [{upstream: u}]\n"
	errs := errorList(t, src)
	want := Error{File: "t.yaml", Line: 1, Col: 10, Msg: "document too large or too deeply aliased (more than 100000 nodes)"}
	if !slices.Contains(errs, want) {
		t.Errorf("errors = %v; want %v among them", errs, want)
	}
}

func TestSelfAlias(t *testing.T) {
	// yaml.v3 builds a cyclic tree for this; decoding must still end.
	errs := errorList(t, "upstreams: &u [{name: a, servers: *u}]\n")
	if len(errs) == 0 {
		t.Fatal("no errors")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || c.Path != path {
		t.Fatalf("Load = %v, %v; want Path %s", c, err, path)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v; want fs.ErrNotExist", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(minimal+"listen: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	var e Error
	if !errors.As(err, &e) || e.File != bad || e.Line != 8 || e.Col != 9 || e.Path != "listen" {
		t.Errorf("Load(bad) = %v; want an Error at %s:8:9 listen", err, bad)
	}
}

// TestDocExample keeps the example in docs/config.md loadable.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(string(doc), "## Example\n\n```yaml\n")
	if !ok {
		t.Fatal("no example in docs/config.md")
	}
	example, _, _ = strings.Cut(example, "```")
	t.Setenv("APP_PORT", "3000")
	c, err := Parse("config.md", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Upstreams[0].Servers[0].Addr; got != "127.0.0.1:3000" {
		t.Errorf("server addr = %q; want 127.0.0.1:3000", got)
	}
}

// TestEdgeConnsPerIPDefault: a TLS listener (a standalone edge) caps each
// client address at 256 connections unless the file says otherwise; a
// sidecar behind an edge has no cap.
func TestEdgeConnsPerIPDefault(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want int
	}{
		{"listen: [{addr: ':8443', tls: {cert_file: c, key_file: k}}]\n", 256},
		{"listen: [{addr: ':8443', tls: {cert_file: c, key_file: k}}]\nmax_connections_per_ip: 0\n", 0},
		{"listen: [{addr: ':8080'}]\n", 0},
	} {
		c, err := Parse("t.yaml", []byte(tt.yaml+"upstreams: [{name: a, servers: [{addr: '127.0.0.1:1'}]}]\nroutes: [{upstream: a}]\n"))
		if err != nil {
			t.Fatalf("%s: %v", tt.yaml, err)
		}
		if c.MaxConnectionsPerIP != tt.want {
			t.Errorf("%s: max_connections_per_ip %d, want %d", tt.yaml, c.MaxConnectionsPerIP, tt.want)
		}
	}
}

// TestReadmeEdgeExample: the README's edge walkthrough config loads, with
// the edge defaults it promises.
func TestReadmeEdgeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "Write `/etc/tollgate/tollgate.yaml`:")
	if !ok {
		t.Fatal("no edge walkthrough in README.md")
	}
	_, example, _ := strings.Cut(rest, "```yaml\n")
	example, _, _ = strings.Cut(example, "```")
	lines := strings.Split(example, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "   ") // the list item's indent
	}
	c, err := Parse("README.md", []byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnectionsPerIP != 256 || c.ClientMaxBodySize.Bytes != 1<<20 || !c.Listen[1].HTTP2Enabled() {
		t.Errorf("edge defaults: max_connections_per_ip %d, client_max_body_size %d, http2 %v",
			c.MaxConnectionsPerIP, c.ClientMaxBodySize.Bytes, c.Listen[1].HTTP2Enabled())
	}
}
