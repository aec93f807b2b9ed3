package proxy

import (
	"strings"

	"github.com/tollgate-proxy/tollgate/config"
)

// route is one configured route, resolved against its upstream.
type route struct {
	name     string // host+path_prefix, for logs and metrics
	host     string // lower-case; "" any; "*.x" a wildcard
	prefix   string
	upstream *upstream
	limits   *routeLimits // limit_req rules; nil: none
	retry    retryPolicy  // proxy_next_upstream rules
}

// routeTable matches requests to routes the way Nginx picks a server block
// by name and then a location by longest prefix: the most specific host
// group that names the request's host wins (exact, then the longest
// wildcard, then routes without a host), and within it the longest
// path_prefix. A host group with no matching prefix answers 404; it does not
// fall through to a less specific group, as Nginx does not.
type routeTable struct {
	exact    map[string][]*route // by host
	wildcard []*routeGroup       // longest suffix first
	anyHost  []*route
}

type routeGroup struct {
	suffix string // ".example.com"
	routes []*route
}

func newRouteTable(routes []*route) *routeTable {
	t := &routeTable{exact: map[string][]*route{}}
	groups := map[string]*routeGroup{}
	for _, rt := range routes {
		switch {
		case rt.host == "":
			t.anyHost = append(t.anyHost, rt)
		case strings.HasPrefix(rt.host, "*."):
			suffix := rt.host[1:]
			g := groups[suffix]
			if g == nil {
				g = &routeGroup{suffix: suffix}
				groups[suffix] = g
				t.wildcard = append(t.wildcard, g)
			}
			g.routes = append(g.routes, rt)
		default:
			t.exact[rt.host] = append(t.exact[rt.host], rt)
		}
	}
	// Longest suffix first: *.api.example.com beats *.example.com.
	for i := 1; i < len(t.wildcard); i++ {
		for j := i; j > 0 && len(t.wildcard[j].suffix) > len(t.wildcard[j-1].suffix); j-- {
			t.wildcard[j], t.wildcard[j-1] = t.wildcard[j-1], t.wildcard[j]
		}
	}
	return t
}

// match returns the route for a request's Host header and path, or nil.
func (t *routeTable) match(hostport, path string) *route {
	host := normalizeHost(hostport)
	if rs, ok := t.exact[host]; ok {
		return longestPrefix(rs, path)
	}
	for _, g := range t.wildcard {
		if len(host) > len(g.suffix) && strings.HasSuffix(host, g.suffix) {
			return longestPrefix(g.routes, path)
		}
	}
	return longestPrefix(t.anyHost, path)
}

func longestPrefix(rs []*route, path string) *route {
	var best *route
	for _, rt := range rs {
		if strings.HasPrefix(path, rt.prefix) && (best == nil || len(rt.prefix) > len(best.prefix)) {
			best = rt
		}
	}
	return best
}

// normalizeHost strips the port and a trailing dot and lower-cases, without
// allocating in the common already-lower-case case.
func normalizeHost(hostport string) string {
	host := stripPort(hostport)
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if 'A' <= host[i] && host[i] <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

func routeName(rc *config.Route) string {
	if rc.Host == "" {
		return rc.PathPrefix
	}
	return rc.Host + rc.PathPrefix
}

// stripPort removes a ":port" suffix and IPv6 brackets. net.SplitHostPort
// would allocate an error for the common Host without a port.
func stripPort(hostport string) string {
	if strings.HasPrefix(hostport, "[") {
		if end := strings.IndexByte(hostport, ']'); end > 0 {
			return hostport[1:end]
		}
		return hostport
	}
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && strings.IndexByte(hostport, ':') == i {
		return hostport[:i]
	}
	return hostport
}
