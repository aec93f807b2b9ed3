package config

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// minZoneSize is the smallest limit_req_zone Nginx accepts: 8 pages of 4k
// (ngx_shared_memory_add, "zone is too small").
const minZoneSize = 32 << 10

// validator checks a decoded, defaulted Config, collecting every problem
// at the position of the node it concerns.
type validator struct {
	file    string
	written nodeIndex
	invalid map[string]bool // paths already reported by the decoder
	errs    []Error
}

// validate returns every problem in c. written locates paths in the file;
// it tells an explicit zero from an absent key where that matters.
// Problems at invalid paths are left out: the decoder reported those.
func validate(c *Config, file string, written nodeIndex, invalid map[string]bool) []Error {
	v := &validator{file: file, written: written, invalid: invalid}
	v.listeners(c)
	if c.RealIP != nil {
		v.realIP(c.RealIP)
	}
	v.nonNegative("keepalive_requests", c.KeepaliveRequests)
	v.headerName("request_id_header", c.RequestIDHeader)
	v.zones(c.LimitReqZones)
	v.upstreams(c.Upstreams)
	v.routes(c)
	return v.errs
}

func (v *validator) errorf(path, format string, args ...any) {
	for p := path; ; p = parentPath(p) {
		if v.invalid[p] {
			return // the decoder reported this value or one it is part of
		}
		if p == "" {
			break
		}
	}
	line, col := v.written.pos(path)
	v.errs = append(v.errs, Error{File: v.file, Line: line, Col: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) listeners(c *Config) {
	v.nonNegative("max_connections", c.MaxConnections)
	v.nonNegative("max_connections_per_ip", c.MaxConnectionsPerIP)
	seen := map[string]string{}
	for i, l := range c.Listen {
		path := fmt.Sprintf("listen[%d].addr", i)
		if l.TLS != nil {
			v.listenerTLS(fmt.Sprintf("listen[%d].tls", i), l.TLS)
			if l.H2C {
				v.errorf(fmt.Sprintf("listen[%d].h2c", i), "h2c is for plain listeners: a TLS listener offers HTTP/2 by ALPN (http2)")
			}
		}
		if v.hostPort(path, l.Addr, listenAddr) {
			if first, dup := seen[l.Addr]; dup {
				v.errorf(path, "%s is already listened on by %s", l.Addr, first)
			}
			seen[l.Addr] = path
		}
	}
	if c.Admin.Addr != AdminOff {
		v.hostPort("admin.addr", c.Admin.Addr, listenAddr)
	}
}

// addrKind says where an address is used: a listener may have an empty host
// (all interfaces) and port 0 (a free port, chosen at start: for tests and
// for `tollgate proxy --listen :0`); a server address needs both.
type addrKind int

const (
	listenAddr addrKind = iota
	serverAddr
)

// hostPort checks a host:port with a numeric port.
func (v *validator) hostPort(path, addr string, kind addrKind) bool {
	needHost := kind == serverAddr
	if addr == "" {
		v.errorf(path, "an address is required (host:port)")
		return false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, "invalid address %q: want host:port, e.g. 127.0.0.1:8080 or [::1]:8080", addr)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 && kind == serverAddr || n < 0 || n > 65535 {
		want := "a number from 1 to 65535"
		if kind == listenAddr {
			want = "a number from 0 (any free port) to 65535"
		}
		v.errorf(path, "invalid port %q in %q: want %s", port, addr, want)
		return false
	}
	if needHost && host == "" {
		v.errorf(path, "address %q has no host", addr)
		return false
	}
	return true
}

func (v *validator) realIP(r *RealIP) {
	if len(r.SetRealIPFrom) == 0 {
		v.errorf("real_ip.set_real_ip_from", "list at least one trusted address or CIDR")
	}
	v.headerName("real_ip.real_ip_header", r.RealIPHeader)
}

// headerName checks an HTTP field name: one or more token characters
// (RFC 9110 §5.1).
func (v *validator) headerName(path, name string) {
	ok := name != ""
	for i := 0; i < len(name) && ok; i++ {
		c := name[i]
		ok = c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
	}
	if !ok {
		v.errorf(path, "invalid header name %q", name)
	}
}

func (v *validator) nonNegative(path string, n int) {
	if n < 0 {
		v.errorf(path, "must not be negative, got %d", n)
	}
}

func (v *validator) zones(zones []LimitReqZone) {
	seen := map[string]string{}
	for i, z := range zones {
		path := fmt.Sprintf("limit_req_zones[%d]", i)
		v.uniqueName(path, z.Name, "limit_req_zone", seen)
		if z.Key == "" {
			v.errorf(path+".key", "a key is required, e.g. $binary_remote_addr")
		}
		switch {
		case !v.written.has(path + ".size"):
			v.errorf(path+".size", "a size is required, e.g. 10m")
		case z.Size.Bytes < minZoneSize:
			v.errorf(path+".size", "zone size %s is too small; Nginx's minimum is 32k", z.Size)
		}
		if z.IPv6Prefix < 0 || z.IPv6Prefix > 128 {
			v.errorf(path+".ipv6_prefix", "ipv6_prefix must be from 0 to 128, got %d", z.IPv6Prefix)
		}
	}
}

// uniqueName checks that the name at path+".name" is present and unused;
// seen maps names to the path of their first use.
func (v *validator) uniqueName(path, name, what string, seen map[string]string) {
	switch first, dup := seen[name]; {
	case name == "":
		v.errorf(path+".name", "a name is required")
	case dup:
		v.errorf(path+".name", "%s %q is already defined at %s", what, name, first)
	default:
		seen[name] = path
	}
}

func (v *validator) upstreams(ups []Upstream) {
	if len(ups) == 0 {
		v.errorf("upstreams", "at least one upstream is required")
	}
	seen := map[string]string{}
	for i, u := range ups {
		path := fmt.Sprintf("upstreams[%d]", i)
		v.uniqueName(path, u.Name, "upstream", seen)
		v.nonNegative(path+".keepalive", *u.Keepalive)
		v.nonNegative(path+".keepalive_requests", u.KeepaliveRequests)
		v.retryBudget(path, u.RetryBudget)
		v.resilience(path, &u)
		v.adaptive(path, u.AdaptiveConcurrency)
		primary := 0
		for j, s := range u.Servers {
			v.server(fmt.Sprintf("%s.servers[%d]", path, j), s)
			if !s.Backup {
				primary++
			}
		}
		if primary == 0 {
			v.errorf(path+".servers", "at least one server that is not a backup is required")
		}
	}
}

func (v *validator) server(path string, s Server) {
	v.hostPort(path+".addr", s.Addr, serverAddr)
	if s.Weight < 1 {
		v.errorf(path+".weight", "weight must be at least 1, got %d", s.Weight)
	}
	v.nonNegative(path+".max_fails", *s.MaxFails)
	v.nonNegative(path+".max_conns", s.MaxConns)
}

// logLevels are the levels limit_req_log_level takes, as in Nginx.
var logLevels = []string{"info", "notice", "warn", "error"}

func (v *validator) routes(c *Config) {
	if len(c.Routes) == 0 {
		v.errorf("routes", "at least one route is required")
	}
	var names []string
	for _, u := range c.Upstreams {
		names = append(names, u.Name)
	}
	seen := map[string]string{} // host + path_prefix → first route
	for i, r := range c.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		v.host(path+".host", r.Host)
		if !strings.HasPrefix(r.PathPrefix, "/") {
			v.errorf(path+".path_prefix", "path_prefix must start with /, got %q", r.PathPrefix)
		}
		key := strings.ToLower(r.Host) + " " + r.PathPrefix
		if first, dup := seen[key]; dup {
			v.errorf(path, "same host and path_prefix as %s", first)
		} else {
			seen[key] = path
		}
		switch {
		case r.Upstream == "":
			v.errorf(path+".upstream", "an upstream is required")
		case c.Upstream(r.Upstream) == nil:
			v.errorf(path+".upstream", "no upstream named %q%s", r.Upstream, didYouMean(r.Upstream, names))
		}
		v.limitReqs(c, path, r.LimitReq)
		v.retry(path, r)
		if r.LimitReqStatus < 400 || r.LimitReqStatus > 599 {
			v.errorf(path+".limit_req_status", "status must be from 400 to 599, got %d", r.LimitReqStatus)
		}
		if !slices.Contains(logLevels, r.LimitReqLogLevel) {
			v.errorf(path+".limit_req_log_level", "unknown log level %q; want info, notice, warn or error", r.LimitReqLogLevel)
		}
	}
}

// host allows a name or a leading "*." wildcard, nothing fancier.
func (v *validator) host(path, host string) {
	if strings.Contains(strings.TrimPrefix(host, "*."), "*") || strings.ContainsAny(host, " /") {
		v.errorf(path, "invalid host %q: want a name, or *. and a name", host)
	}
}

func (v *validator) limitReqs(c *Config, route string, limits []LimitReq) {
	var zones []string
	for _, z := range c.LimitReqZones {
		zones = append(zones, z.Name)
	}
	used := map[string]string{}
	for j, l := range limits {
		path := fmt.Sprintf("%s.limit_req[%d]", route, j)
		switch first, dup := used[l.Zone]; {
		case l.Zone == "":
			v.errorf(path+".zone", "a zone is required")
		case c.Zone(l.Zone) == nil:
			v.errorf(path+".zone", "no limit_req_zone named %q%s", l.Zone, didYouMean(l.Zone, zones))
		case dup:
			// Nginx: limit_req zone=z is duplicate.
			v.errorf(path+".zone", "zone %q is already limited by %s", l.Zone, first)
		default:
			used[l.Zone] = path
		}
		// Nginx rejects burst=0 and delay=0 (ngx_http_limit_req).
		if l.Burst != nil && *l.Burst <= 0 {
			v.errorf(path+".burst", "burst must be positive, got %d (leave it out for no burst)", *l.Burst)
		}
		if l.Delay != nil && *l.Delay <= 0 {
			v.errorf(path+".delay", "delay must be positive, got %d (leave it out to delay every excess request)", *l.Delay)
		}
		if l.Delay != nil && l.NoDelay {
			v.errorf(path+".delay", "delay and nodelay cannot be used together: nodelay passes every request within burst at once, delay passes only the first ones")
		}
	}
}
