// Package config defines tollgate's YAML configuration: the schema, its
// defaults, and strict loading with file:line:col errors.
//
// Names follow Nginx wherever Nginx has the concept, so an Nginx user
// recognises every knob. Defaults are Nginx's except where a field's doc says
// otherwise (and why).
//
// Loading is strict: unknown and duplicate keys, mistyped values and broken
// references are errors, all reported at once as *Errors, each with its
// file:line:col. Values may use ${NAME} for an environment variable ($${
// for a literal ${). A key written as null or with no value counts as not
// written. Top-level keys starting with "x-" are ignored, to hold YAML
// anchors. docs/config.md is the reference for users.
package config

import (
	"net/netip"
	"time"
)

// Config is one whole tollgate.yaml. Load returns it with every default
// applied and every reference checked; the proxy never sees a partial one.
type Config struct {
	// Listen lists the plain HTTP listeners. Default: one on 127.0.0.1:8080.
	Listen []Listener `yaml:"listen"`

	// Admin is the admin listener (/healthz /readyz /metrics /debug/...).
	Admin Admin `yaml:"admin"`

	// RealIP takes the client address from trusted proxies as
	// ngx_http_realip_module does. Nil: the TCP peer is the client.
	RealIP *RealIP `yaml:"real_ip"`

	// LimitReqZones are the limit_req_zone declarations routes refer to.
	LimitReqZones []LimitReqZone `yaml:"limit_req_zones"`

	// Upstreams are the named groups of backend servers. At least one.
	Upstreams []Upstream `yaml:"upstreams"`

	// Routes map requests to upstreams, like Nginx locations: the route
	// whose host matches and whose path_prefix is longest wins. At least one.
	Routes []Route `yaml:"routes"`

	// ClientHeaderTimeout bounds reading one whole request header.
	// Default 60s (Nginx). Zero: no limit.
	ClientHeaderTimeout Duration `yaml:"client_header_timeout"`

	// ClientBodyTimeout bounds the wait between two reads of a request body
	// (not the whole body). Default 60s (Nginx). Zero: no limit.
	ClientBodyTimeout Duration `yaml:"client_body_timeout"`

	// SendTimeout bounds the wait between two writes to the client.
	// Default 60s (Nginx). Zero: no limit.
	SendTimeout Duration `yaml:"send_timeout"`

	// KeepaliveTimeout is how long an idle client connection is kept open
	// between requests. Default 75s (Nginx), which is above Nginx's upstream
	// keepalive_timeout (60s): the edge always closes an idle connection
	// before tollgate does, so the edge never reuses one tollgate is closing.
	// Zero: no keep-alive, every connection closes after one response.
	KeepaliveTimeout Duration `yaml:"keepalive_timeout"`

	// KeepaliveRequests is the most requests served on one client
	// connection; the response to the last one carries Connection: close.
	// Default 1000 (Nginx). Zero: no limit.
	KeepaliveRequests int `yaml:"keepalive_requests"`

	// LargeClientHeaderSize bounds the request line plus all request
	// headers; a larger request gets 431. Default 32k (Nginx's
	// large_client_header_buffers 4 8k). Zero: the default.
	LargeClientHeaderSize Size `yaml:"large_client_header_size"`

	// ClientMaxBodySize bounds a request body: a larger Content-Length
	// is answered 413 before anything is forwarded, and a chunked body
	// that grows past it is cut off with 413 (Nginx:
	// client_max_body_size). Default 1m (Nginx). Zero: no limit.
	ClientMaxBodySize Size `yaml:"client_max_body_size"`

	// ProxyConnectTimeout bounds establishing a connection to a backend.
	// Default 60s (Nginx). Zero: no limit.
	ProxyConnectTimeout Duration `yaml:"proxy_connect_timeout"`

	// ProxyReadTimeout bounds the wait between two reads from a backend,
	// including the wait for response headers. Default 60s (Nginx).
	// Zero: no limit.
	ProxyReadTimeout Duration `yaml:"proxy_read_timeout"`

	// ProxySendTimeout bounds the wait between two writes to a backend.
	// Default 60s (Nginx). Zero: no limit.
	ProxySendTimeout Duration `yaml:"proxy_send_timeout"`

	// TCPUserTimeout bounds how long data sent to a client may stay
	// unacknowledged before the kernel gives up on the connection
	// (TCP_USER_TIMEOUT; HAProxy's tcp-ut): a client that vanished without
	// a FIN or RST is noticed then, as ds_network_timeout. Default 0: the
	// kernel's own (about 15 minutes of retransmissions).
	TCPUserTimeout Duration `yaml:"tcp_user_timeout"`

	// MaxConnections caps the client connections served at once. A
	// connection over the cap gets its first request answered 503 with
	// Connection: close (close reason ds_conn_limit), never a reset.
	// Default 0: no cap.
	MaxConnections int `yaml:"max_connections"`

	// MaxConnectionsPerIP caps the client connections one peer address
	// holds at once (Nginx's limit_conn on $binary_remote_addr), answered
	// as max_connections is. Counted by the PROXY protocol address on a
	// listener that takes one. For an internet-facing listener; behind an
	// edge every connection comes from the edge, so leave it off there.
	// Default 256 when a listener has tls (a standalone edge), else 0.
	// Zero: no cap.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`

	// EdgeProxyReadTimeout is the edge's own proxy_read_timeout (Nginx's
	// default 60s). A client that gives up on a request after about that
	// long is most likely the edge timing out: its close record is flagged
	// edge_timeout_suspected, and Nginx logged "upstream timed out" and
	// answered 504 itself. Default 60s. Zero: the default.
	EdgeProxyReadTimeout Duration `yaml:"edge_proxy_read_timeout"`

	// ShutdownTimeout is how long a graceful shutdown waits for in-flight
	// requests before closing what is left. Default 30s. Zero: the default.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`

	// RequestIDHeader names the request-id header: accepted from trusted
	// peers (see TrustedPeer), generated otherwise, passed upstream and
	// logged. Default X-Request-ID. Empty: the default.
	RequestIDHeader string `yaml:"request_id_header"`

	// Readiness configures what /readyz requires (resilience.go). Default:
	// only a started process.
	Readiness Readiness `yaml:"readiness"`

	// Path is the file this config was loaded from; empty for built-ins.
	Path string `yaml:"-"`
}

// Listener is one downstream listener.
type Listener struct {
	// Addr is host:port to listen on; an empty host listens on all
	// interfaces. Required.
	Addr string `yaml:"addr"`
	// ProxyProtocolFrom lists the sources (addresses, CIDRs) that must
	// open each connection with a PROXY protocol header (v1 or v2), as a
	// load balancer in front does; its client address is then the
	// connection's, for real_ip_header: proxy_protocol (Nginx's listen
	// ... proxy_protocol). Other peers speak plain HTTP: a header from
	// them is a malformed request. Empty: no PROXY protocol.
	ProxyProtocolFrom []Prefix `yaml:"proxy_protocol_from"`
	// TLS makes the listener HTTPS. Nil: plain HTTP.
	TLS *ListenerTLS `yaml:"tls"`
	// RedirectHTTPS answers every request on this plain listener with a
	// 308 to the same URL over https, except ACME HTTP-01 challenges
	// (/.well-known/acme-challenge/), which an ACME client must reach.
	// Default false.
	RedirectHTTPS bool `yaml:"redirect_https"`
	// HTTP2 offers HTTP/2 by ALPN on a TLS listener; HTTP/1.1 is always
	// offered too. Default true; false: HTTP/1.1 only.
	HTTP2 *bool `yaml:"http2"`
	// H2C accepts HTTP/2 with prior knowledge (cleartext, RFC 9113 §3.3)
	// on a plain listener, next to HTTP/1.1: for a trusted edge that
	// speaks h2c to its upstreams. Default false. The HTTP/1.1 Upgrade:
	// h2c dance is not supported (RFC 9113 deprecates it).
	H2C bool `yaml:"h2c"`
}

// HTTP2Enabled reports whether a TLS listener offers HTTP/2.
func (l Listener) HTTP2Enabled() bool { return l.HTTP2 == nil || *l.HTTP2 }

// ListenerTLS is an HTTPS listener's certificate: static files, or
// certificates obtained and renewed automatically over ACME (domains,
// on_demand). TLS 1.2 is the minimum; Go's default cipher suites (AEAD with
// forward secrecy) are used.
type ListenerTLS struct {
	// CertFile is the PEM certificate chain. Required with key_file unless
	// domains or on_demand is set; not allowed with them.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key. Required with cert_file.
	KeyFile string `yaml:"key_file"`

	// Domains are the names to obtain and renew certificates for over ACME
	// (HTTP-01 on a plain listener, TLS-ALPN-01 on this one). Setting it
	// (or on_demand) agrees to the CA's subscriber agreement. Empty: none
	// managed up front.
	Domains []string `yaml:"domains"`
	// ACMECA is the ACME directory URL. Empty: Let's Encrypt production
	// (DefaultACMECA). Only with domains or on_demand.
	ACMECA string `yaml:"acme_ca"`
	// ACMECARoot is a PEM file of roots to trust when talking to the ACME
	// server, for a private CA (pebble, step-ca). Empty: the system roots.
	ACMECARoot string `yaml:"acme_ca_root"`
	// Email is the ACME account's contact, for expiry notices. Empty: an
	// account without contact.
	Email string `yaml:"email"`
	// Storage is the directory holding ACME accounts, keys and
	// certificates; it must survive restarts (in a container: a volume,
	// e.g. /var/lib/tollgate), or every start orders new certificates and
	// runs into the CA's rate limits. Empty: certmagic's default under the
	// user's data directory ($XDG_DATA_HOME/certmagic, else
	// ~/.local/share/certmagic).
	Storage string `yaml:"storage"`
	// OnDemand obtains a certificate during the first handshake for a name
	// not in domains, if allow or ask permits it. Nil: only domains.
	OnDemand *OnDemand `yaml:"on_demand"`
}

// ACME reports whether the listener's certificates come from ACME.
func (t *ListenerTLS) ACME() bool {
	return t != nil && (len(t.Domains) > 0 || t.OnDemand != nil)
}

// DefaultACMECA is the ACME directory used when acme_ca is not set.
const DefaultACMECA = "https://acme-v02.api.letsencrypt.org/directory"

// OnDemand bounds which names may get a certificate at handshake time. It
// is never unbounded: anyone can send any name in a ClientHello, and each
// one would cost an ACME order against the CA's rate limits. At least one
// of Allow and Ask is required.
type OnDemand struct {
	// Allow lists the names that get a certificate without asking.
	Allow []string `yaml:"allow"`
	// Ask is a URL consulted for a name not in Allow: GET ask?domain=NAME,
	// where 200 permits the certificate and anything else refuses it.
	// Empty: only Allow.
	Ask string `yaml:"ask"`
}

// Admin is the admin listener.
type Admin struct {
	// Addr is host:port of the admin listener. Default 127.0.0.1:9901.
	// "off" (AdminOff) disables it.
	Addr string `yaml:"addr"`
}

// RealIP mirrors ngx_http_realip_module.
type RealIP struct {
	// SetRealIPFrom lists trusted addresses and CIDRs. A request from any
	// other peer keeps the peer as its client address. Required, non-empty.
	SetRealIPFrom []Prefix `yaml:"set_real_ip_from"`

	// RealIPHeader names the header carrying the client address.
	// Default X-Real-IP (Nginx). X-Forwarded-For or any header name.
	RealIPHeader string `yaml:"real_ip_header"`

	// RealIPRecursive walks the header right to left past trusted
	// addresses, as Nginx's real_ip_recursive on. Default false (Nginx).
	RealIPRecursive bool `yaml:"real_ip_recursive"`
}

// LimitReqZone mirrors Nginx's limit_req_zone.
type LimitReqZone struct {
	// Name identifies the zone in routes. Required, unique.
	Name string `yaml:"name"`
	// Key is the variable (or concatenation) that names a client:
	// $binary_remote_addr, $remote_addr, $http_<name>, $server_name,
	// constant text. Required.
	Key string `yaml:"key"`
	// Size bounds the zone's memory; a full zone evicts the least recently
	// used key. Required (Nginx requires it too), at least 32k.
	Size Size `yaml:"size"`
	// Rate is requests per second ("10r/s") or per minute ("30r/m").
	// Default 1r/s (Nginx).
	Rate Rate `yaml:"rate"`
	// IPv6Prefix keys $binary_remote_addr/$remote_addr of IPv6 clients by
	// this prefix length, e.g. 64; 0: the whole address (Nginx). 0-128.
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// Balance names an upstream's server selection policy.
type Balance string

const (
	// BalanceRoundRobin is Nginx's smooth weighted round robin (default).
	BalanceRoundRobin Balance = "round_robin"
	// BalanceLeastConn picks the server with the fewest active requests
	// relative to its weight, as Nginx's least_conn.
	BalanceLeastConn Balance = "least_conn"
)

// Upstream is a named group of backend servers.
type Upstream struct {
	// Name identifies the upstream in routes. Required, unique.
	Name string `yaml:"name"`

	// Balance is round_robin (default) or least_conn.
	Balance Balance `yaml:"balance"`

	// Servers of the group. At least one that is not a backup.
	Servers []Server `yaml:"servers"`

	// TCPUserTimeout bounds how long data sent to a backend may stay
	// unacknowledged (TCP_USER_TIMEOUT): a backend host that vanished is
	// noticed then, as us_network_timeout. Default 0: the kernel's own.
	TCPUserTimeout Duration `yaml:"tcp_user_timeout"`

	// RetryBudget caps the retries of requests to this upstream. Default:
	// 20 % of requests plus 10 per second over 10s.
	RetryBudget *RetryBudget `yaml:"retry_budget"`

	// AdaptiveConcurrency limits the requests in flight to the upstream,
	// adaptively, with a short queue and 503 shedding (adaptive.go). Nil
	// (not written) or enabled: false: no limit.
	AdaptiveConcurrency *AdaptiveConcurrency `yaml:"adaptive_concurrency"`

	// Breaker configures a circuit breaker per server (resilience.go). On
	// with its defaults when not written. Never nil after Load; nil (in
	// code-built configs) means no breakers.
	Breaker *Breaker `yaml:"breaker"`

	// HealthCheck turns on active health checks of every server. Nil: no
	// active checks.
	HealthCheck *HealthCheck `yaml:"health_check"`

	// SlowStart ramps a server's weight linearly from a tenth to its full
	// weight over this time after it comes back (breaker closed, health
	// check or passive health recovered), as Nginx Plus slow_start.
	// Default 0: off.
	SlowStart Duration `yaml:"slow_start"`

	// PanicThreshold is a percentage: when fewer of the non-down primary
	// servers are healthy and no backup can take the traffic, requests go
	// to all of them regardless of health and breakers rather than
	// overload the survivors or fail (Envoy's panic threshold). Default 50.
	// Zero: off, Nginx's behaviour.
	PanicThreshold int `yaml:"panic_threshold"`

	// Keepalive is the most idle connections kept per server. Default 32
	// (Nginx has no pool unless configured; a sidecar always wants one).
	// Zero: no pooling, each connection closes after one response. Never
	// nil after Load.
	Keepalive *int `yaml:"keepalive"`

	// KeepaliveTimeout is how long a pooled connection may idle. Default 4s,
	// not Nginx's 60s: tollgate must retire an idle connection before the
	// backend does (Node.js closes after 5s), or a request races the
	// backend's close. Zero: the default.
	KeepaliveTimeout Duration `yaml:"keepalive_timeout"`

	// KeepaliveRequests is the most requests sent on one backend
	// connection. Default 1000 (Nginx). Zero: the default.
	KeepaliveRequests int `yaml:"keepalive_requests"`

	// KeepaliveTime bounds a backend connection's whole life. Default 1h
	// (Nginx). Zero: the default.
	KeepaliveTime Duration `yaml:"keepalive_time"`
}

// Server is one backend server of an upstream.
type Server struct {
	// Addr is host:port. Required.
	Addr string `yaml:"addr"`
	// Weight for balancing. Default 1. Zero is an error (Nginx).
	Weight int `yaml:"weight"`
	// MaxFails failures within FailTimeout mark the server failed for
	// FailTimeout. Default 1 (Nginx). Zero: passive health off. Never nil
	// after Load.
	MaxFails *int `yaml:"max_fails"`
	// FailTimeout is the failure window and the time a failed server is
	// skipped. Default 10s (Nginx). Zero: the default (Nginx would take
	// 0; use max_fails: 0 to turn passive health off).
	FailTimeout Duration `yaml:"fail_timeout"`
	// Backup servers get requests only when no primary is usable.
	Backup bool `yaml:"backup"`
	// Down marks the server permanently unavailable.
	Down bool `yaml:"down"`
	// MaxConns caps concurrent requests to the server; at the cap it is
	// skipped (no queue, as open-source Nginx). Zero: no cap.
	MaxConns int `yaml:"max_conns"`
}

// Route maps requests to an upstream, like an Nginx location.
type Route struct {
	// Host matches the request's Host (port ignored, case-insensitive).
	// "*.example.com" matches any subdomain. Empty: any host.
	Host string `yaml:"host"`
	// PathPrefix matches the start of the request path. Default "/".
	PathPrefix string `yaml:"path_prefix"`
	// Upstream names the upstream that serves the route. Required.
	Upstream string `yaml:"upstream"`
	// LimitReq lists the limit_req rules applied, in order.
	LimitReq []LimitReq `yaml:"limit_req"`
	// LimitReqStatus is the status of rejected requests. Default 503
	// (Nginx); 400-599.
	LimitReqStatus int `yaml:"limit_req_status"`
	// LimitReqDryRun accounts as usual but never delays or rejects.
	LimitReqDryRun bool `yaml:"limit_req_dry_run"`
	// ProxyNextUpstream lists when a failed attempt goes to the next server,
	// as Nginx's proxy_next_upstream: error, timeout, invalid_header,
	// http_500, http_502, http_503, http_504, http_403, http_404,
	// http_429, non_idempotent, or off. Default [error, timeout] (Nginx).
	ProxyNextUpstream []string `yaml:"proxy_next_upstream"`
	// ProxyNextUpstreamTries caps attempts, the first included. Default 0:
	// no cap beyond the number of servers (Nginx).
	ProxyNextUpstreamTries int `yaml:"proxy_next_upstream_tries"`
	// ProxyNextUpstreamTimeout bounds the time from the first attempt
	// within which another may start. Default 0: no limit (Nginx).
	ProxyNextUpstreamTimeout Duration `yaml:"proxy_next_upstream_timeout"`
	// RetryBodyLimit is how much of a request body is kept to send again
	// on a retry; a longer body streams and is not retried. Default 64k
	// (Linkerd's). Zero: bodies are never kept, so requests with a body are
	// retried only when none of it was read.
	RetryBodyLimit Size `yaml:"retry_body_limit"`
	// RetryIdempotencyKey makes a POST or PATCH that carries an
	// Idempotency-Key header as retryable as a GET. Default false.
	RetryIdempotencyKey bool `yaml:"retry_idempotency_key"`
	// RetryBackoff is the jittered pause between attempts.
	RetryBackoff Backoff `yaml:"retry_backoff"`
	// LimitReqLogLevel is the level of rejection logs (info, notice, warn,
	// error); delays log one level lower. Default error (Nginx).
	LimitReqLogLevel string `yaml:"limit_req_log_level"`
}

// LimitReq is one limit_req rule of a route.
type LimitReq struct {
	// Zone names a limit_req_zone. Required.
	Zone string `yaml:"zone"`
	// Burst is the excess allowed above the rate. Default 0 (nil after
	// Load; see BurstOrZero); an explicit 0 is an error (Nginx).
	Burst *int `yaml:"burst"`
	// NoDelay passes excess requests within burst at once.
	NoDelay bool `yaml:"nodelay"`
	// Delay passes the first Delay excess requests at once and delays the
	// rest. Default 0 (delay every excess request); an explicit 0 is an
	// error, and so is delay together with nodelay.
	Delay *int `yaml:"delay"`
}

// Prefix is an address or CIDR ("10.0.0.0/8", "127.0.0.1", "::1").
type Prefix struct{ netip.Prefix }

// Duration is an Nginx time: "500ms", "60s", "1m", "1h30m", "1d"; a bare
// number means seconds. See ParseDuration for the exact syntax.
type Duration struct{ time.Duration }

// Size is an Nginx size: "512", "16k", "10m", "1g" (case-insensitive), bytes.
type Size struct{ Bytes int64 }

// Rate is an Nginx limit_req rate, stored as Nginx stores it: requests per
// second × 1000, truncated ("30r/m" → 500, "4r/m" → 66). A bare number
// means r/s, as in Nginx.
type Rate struct{ PerSecondMilli int64 }
