package config

import (
	"fmt"
	"time"
)

// The keep-alive timeouts of the hops next to tollgate, by default. A
// connection idles on both ends of a hop; the end that closes later may
// reuse it just as the other end's close is in flight, and that request
// fails with a reset. So each hop's client side must give up first.
const (
	// nginxUpstreamKeepaliveTimeout is Nginx's upstream keepalive_timeout:
	// how long the edge keeps an idle connection to tollgate.
	nginxUpstreamKeepaliveTimeout = 60 * time.Second
	// nodeKeepAliveTimeout is Node.js's http.Server keepAliveTimeout: how
	// long a typical backend keeps an idle connection from tollgate.
	nodeKeepAliveTimeout = 5 * time.Second
)

// Warnings returns the settings in c that are valid but allow a keep-alive
// race with the edge in front or the backend behind, each with what to
// change. Nil when there are none.
func Warnings(c *Config) []string {
	var w []string
	if k := c.KeepaliveTimeout.Duration; k > 0 && k <= nginxUpstreamKeepaliveTimeout {
		w = append(w, fmt.Sprintf(
			"keepalive_timeout %v is not above Nginx's upstream keepalive_timeout (%v by default): "+
				"tollgate may close an idle connection just as the edge sends a request on it, "+
				"and the edge sees a reset or 502; raise keepalive_timeout above the edge's (the default is 75s)",
			c.KeepaliveTimeout, Duration{nginxUpstreamKeepaliveTimeout}))
	}
	for i, u := range c.Upstreams {
		if k := u.KeepaliveTimeout.Duration; k >= nodeKeepAliveTimeout && (u.Keepalive == nil || *u.Keepalive > 0) {
			w = append(w, fmt.Sprintf(
				"upstreams[%d] (%s): keepalive_timeout %v is not below Node.js's default keep-alive timeout (%v): "+
					"a backend may close an idle connection just as tollgate sends a request on it; "+
					"set it below the backend's keep-alive timeout (the default is 4s)",
				i, u.Name, u.KeepaliveTimeout, Duration{nodeKeepAliveTimeout}))
		}
	}
	return w
}
