package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/limiter"
)

// runtime is one loaded configuration, resolved for the data path. A request
// loads the current runtime once and uses it to the end, so a reload never
// changes the rules under a request in flight.
type runtime struct {
	cfg       *config.Config
	routes    *routeTable
	upstreams map[string]*upstream
	realIP    *limiter.RealIP // nil: real_ip not configured
	trust     *limiter.RealIP // whose X-Request-ID and X-Forwarded-Proto count
	zones     []*limitZone    // limit_req zones, in config order

	requestIDHeader  string // as configured, e.g. X-Request-ID
	connectTimeout   time.Duration
	readTimeout      time.Duration
	sendTimeout      time.Duration
	bodyTimeout      time.Duration
	writeTimeout     time.Duration // send_timeout, to the client
	headerTimeout    time.Duration // client_header_timeout
	keepaliveTimeout time.Duration // 0: no keep-alive
	keepaliveReqs    int
	headerLimit      int           // large_client_header_size
	bodyLimit        int64         // client_max_body_size; 0: none
	maxConns         int           // max_connections; 0: no cap
	maxConnsPerIP    int           // max_connections_per_ip; 0: no cap
	userTimeout      time.Duration // tcp_user_timeout on client conns
	edgeReadTimeout  time.Duration
}

// upstream is a configured upstream group.
type upstream struct {
	name   string
	bal    *balancer
	budget *retryBudget

	// adaptive is the upstream's adaptive_concurrency; nil: none. gate is
	// its overload gate, found on first use (overload.go).
	adaptive *config.AdaptiveConcurrency
	gate     gateRef
}

// loopback is whom tollgate trusts for X-Request-ID and X-Forwarded-Proto
// when real_ip is not configured: a sidecar's edge is on the same host.
var loopback = limiter.NewRealIP([]netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}, "X-Real-Ip", false)

// newRuntime resolves cfg. poolFor returns the connection pool of one server
// of one upstream, reusing the previous runtime's pool when it exists; zones
// are cfg's limit_req zones in config order (limitState.build).
func newRuntime(cfg *config.Config, poolFor func(up *config.Upstream, addr string) *serverPool, zones []*limitZone) *runtime {
	rt := &runtime{
		cfg:              cfg,
		upstreams:        map[string]*upstream{},
		trust:            loopback,
		requestIDHeader:  cfg.RequestIDHeader,
		connectTimeout:   cfg.ProxyConnectTimeout.Duration,
		readTimeout:      cfg.ProxyReadTimeout.Duration,
		sendTimeout:      cfg.ProxySendTimeout.Duration,
		bodyTimeout:      cfg.ClientBodyTimeout.Duration,
		writeTimeout:     cfg.SendTimeout.Duration,
		headerTimeout:    cfg.ClientHeaderTimeout.Duration,
		keepaliveTimeout: cfg.KeepaliveTimeout.Duration,
		keepaliveReqs:    cfg.KeepaliveRequests,
		headerLimit:      int(cfg.LargeClientHeaderSize.Bytes),
		bodyLimit:        cfg.ClientMaxBodySize.Bytes,
		maxConns:         cfg.MaxConnections,
		maxConnsPerIP:    cfg.MaxConnectionsPerIP,
		userTimeout:      cfg.TCPUserTimeout.Duration,
		edgeReadTimeout:  cfg.EdgeProxyReadTimeout.Duration,
	}
	if ri := cfg.RealIP; ri != nil {
		prefixes := make([]netip.Prefix, len(ri.SetRealIPFrom))
		for i, p := range ri.SetRealIPFrom {
			prefixes[i] = p.Prefix
		}
		rt.realIP = limiter.NewRealIP(prefixes, http.CanonicalHeaderKey(ri.RealIPHeader), ri.RealIPRecursive)
		rt.trust = rt.realIP
	}
	for i := range cfg.Upstreams {
		up := &cfg.Upstreams[i]
		rt.upstreams[up.Name] = &upstream{
			name:     up.Name,
			bal:      newBalancer(up, func(addr string) *serverPool { return poolFor(up, addr) }),
			budget:   newRetryBudget(up.RetryBudget),
			adaptive: up.AdaptiveConcurrency,
		}
	}
	routes := make([]*route, 0, len(cfg.Routes))
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		routes = append(routes, &route{
			name:     routeName(rc),
			host:     strings.ToLower(rc.Host),
			prefix:   rc.PathPrefix,
			upstream: rt.upstreams[rc.Upstream],
			limits:   newRouteLimits(cfg, rc, zones),
			retry:    newRetryPolicy(rc),
		})
	}
	rt.zones = zones
	rt.routes = newRouteTable(routes)
	return rt
}

// limitsOf returns an upstream's keep-alive pool settings.
func limitsOf(up *config.Upstream) poolLimits {
	return poolLimits{
		maxIdle:     *up.Keepalive,
		idleTimeout: up.KeepaliveTimeout.Duration,
		maxRequests: up.KeepaliveRequests,
		maxLife:     up.KeepaliveTime.Duration,
		userTimeout: up.TCPUserTimeout.Duration,
	}
}

// poolKey identifies a server's pool across reloads.
func poolKey(upstream, addr string) string { return upstream + "\x00" + addr }
