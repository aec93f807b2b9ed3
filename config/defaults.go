package config

import (
	"fmt"
	"slices"
	"time"
)

// Defaults, as documented on each field. Most are Nginx's; the doc on the
// field says why when one is not.
const (
	DefaultListenAddr = "127.0.0.1:8080"
	DefaultAdminAddr  = "127.0.0.1:9901"
	// AdminOff as admin.addr disables the admin listener.
	AdminOff = "off"

	defaultTimeout           = 60 * time.Second // Nginx's client_*, send and proxy_* timeouts
	defaultKeepaliveTimeout  = 75 * time.Second
	defaultKeepaliveRequests = 1000
	defaultLargeHeaderSize   = 32 << 10
	defaultMaxBodySize       = 1 << 20
	// defaultEdgeConnsPerIP caps one client address's connections when
	// tollgate terminates TLS itself: browsers open 6 per host and HTTP/2
	// clients 1, so 256 leaves room for a NAT of many users while a
	// single host cannot hold every file descriptor.
	defaultEdgeConnsPerIP  = 256
	defaultShutdownTimeout = 30 * time.Second
	defaultRequestIDHeader = "X-Request-ID"
	defaultRealIPHeader    = "X-Real-IP"
	defaultRate            = 1000 // 1r/s

	defaultUpstreamKeepalive        = 32
	defaultUpstreamKeepaliveTimeout = 4 * time.Second
	defaultUpstreamKeepaliveTime    = time.Hour

	defaultWeight      = 1
	defaultMaxFails    = 1
	defaultFailTimeout = 10 * time.Second

	defaultPathPrefix       = "/"
	defaultLimitReqStatus   = 503
	defaultLimitReqLogLevel = "error"
)

// applyDefaults fills what the file left out. Where an explicit zero means
// something (no limit, no keep-alive, an error to report), only a key
// that was not written gets the default; elsewhere zero is the default.
func applyDefaults(c *Config, written nodeIndex) {
	if len(c.Listen) == 0 {
		c.Listen = []Listener{{Addr: DefaultListenAddr}}
	}
	setString(&c.Admin.Addr, DefaultAdminAddr)
	for _, t := range []struct {
		key string
		d   *Duration
		def time.Duration
	}{
		{"client_header_timeout", &c.ClientHeaderTimeout, defaultTimeout},
		{"client_body_timeout", &c.ClientBodyTimeout, defaultTimeout},
		{"send_timeout", &c.SendTimeout, defaultTimeout},
		{"keepalive_timeout", &c.KeepaliveTimeout, defaultKeepaliveTimeout},
		{"proxy_connect_timeout", &c.ProxyConnectTimeout, defaultTimeout},
		{"proxy_read_timeout", &c.ProxyReadTimeout, defaultTimeout},
		{"proxy_send_timeout", &c.ProxySendTimeout, defaultTimeout},
	} {
		if !written.has(t.key) {
			t.d.Duration = t.def
		}
	}
	if !written.has("keepalive_requests") {
		c.KeepaliveRequests = defaultKeepaliveRequests
	}
	setInt64(&c.LargeClientHeaderSize.Bytes, defaultLargeHeaderSize)
	if !written.has("max_connections_per_ip") && slices.ContainsFunc(c.Listen, func(l Listener) bool { return l.TLS != nil }) {
		c.MaxConnectionsPerIP = defaultEdgeConnsPerIP
	}
	if !written.has("client_max_body_size") {
		c.ClientMaxBodySize.Bytes = defaultMaxBodySize
	}
	setDuration(&c.ShutdownTimeout, defaultShutdownTimeout)
	setDuration(&c.EdgeProxyReadTimeout, defaultTimeout)
	setString(&c.RequestIDHeader, defaultRequestIDHeader)
	if c.RealIP != nil {
		setString(&c.RealIP.RealIPHeader, defaultRealIPHeader)
	}
	for i := range c.LimitReqZones {
		setInt64(&c.LimitReqZones[i].Rate.PerSecondMilli, defaultRate)
	}
	for i := range c.Upstreams {
		upstreamDefaults(&c.Upstreams[i], fmt.Sprintf("upstreams[%d]", i), written)
	}
	for i := range c.Routes {
		routeDefaults(&c.Routes[i], fmt.Sprintf("routes[%d]", i), written)
	}
}

func upstreamDefaults(u *Upstream, path string, written nodeIndex) {
	if u.Balance == "" {
		u.Balance = BalanceRoundRobin
	}
	retryBudgetDefaults(u)
	resilienceDefaults(u, path, written)
	adaptiveDefaults(u, path, written)
	setPointer(&u.Keepalive, defaultUpstreamKeepalive)
	setDuration(&u.KeepaliveTimeout, defaultUpstreamKeepaliveTimeout)
	if u.KeepaliveRequests == 0 {
		u.KeepaliveRequests = defaultKeepaliveRequests
	}
	setDuration(&u.KeepaliveTime, defaultUpstreamKeepaliveTime)
	for j := range u.Servers {
		s := &u.Servers[j]
		// An explicit weight: 0 stays, for validation to reject.
		if !written.has(fmt.Sprintf("%s.servers[%d].weight", path, j)) {
			s.Weight = defaultWeight
		}
		setPointer(&s.MaxFails, defaultMaxFails)
		setDuration(&s.FailTimeout, defaultFailTimeout)
	}
}

func routeDefaults(r *Route, path string, written nodeIndex) {
	if !written.has(path + ".path_prefix") {
		r.PathPrefix = defaultPathPrefix
	}
	// An explicit 0 or "" stays, for validation to reject.
	if !written.has(path + ".limit_req_status") {
		r.LimitReqStatus = defaultLimitReqStatus
	}
	if !written.has(path + ".limit_req_log_level") {
		r.LimitReqLogLevel = defaultLimitReqLogLevel
	}
	retryDefaults(r, path, written)
}

func setString(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

func setInt64(n *int64, def int64) {
	if *n == 0 {
		*n = def
	}
}

func setDuration(d *Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}

func setPointer(p **int, def int) {
	if *p == nil {
		*p = &def
	}
}
