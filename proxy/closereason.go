package proxy

// Close reasons are a public interface (users alert on them): the codes of
// ../shared/specs/close-reasons.md, kept exactly. The ones below are those
// the proxy core decides itself; the connection wrappers add the rest.
const (
	reasonIdleClosedByPeer   = "us_idle_closed_by_peer"
	reasonIdleTimeout        = "us_idle_timeout"
	reasonPoolOverflow       = "us_pool_overflow"
	reasonKeepaliveLimit     = "us_keepalive_limit"
	reasonServerDrained      = "us_server_drained"
	reasonCancelledByDS      = "us_cancelled_by_downstream"
	reasonConnectRefused     = "us_connect_refused"
	reasonConnectTimeout     = "us_connect_timeout"
	reasonConnectUnreachable = "us_connect_unreachable"
	reasonDNSFailure         = "us_dns_failure"
	reasonReusedConnClosed   = "us_reused_conn_closed"
	reasonResetBeforeHeaders = "us_reset_before_headers"
	reasonClosedBeforeHdrs   = "us_closed_before_headers"
	reasonHeaderTimeout      = "us_header_timeout"
	reasonResetDuringBody    = "us_reset_during_body"
	reasonClosedDuringBody   = "us_closed_during_body"
	reasonBodyTimeout        = "us_body_timeout"
	reasonBadResponse        = "us_bad_response"
	reasonNetworkTimeout     = "us_network_timeout"
	// reasonTunnelClosed ends an Upgrade tunnel that finished normally; the
	// spec has no code for it.
	reasonTunnelClosed = "us_tunnel_closed"
)

// connHooks receives connection life events. The zero value ignores them.
type connHooks struct {
	onUpstreamClose func(c *upstreamConn, reason string)
}

func (h *connHooks) upstreamClosed(c *upstreamConn, reason string) {
	if h != nil && h.onUpstreamClose != nil {
		h.onUpstreamClose(c, reason)
	}
}
