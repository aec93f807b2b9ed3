package proxy

import "sync/atomic"

// Close reasons are a public interface (users alert on them): the codes of
// specs/close-reasons.md, kept exactly. reasonTable gives each its default
// initiator and kind; the classifier refines the kind from the error seen.
const (
	// Downstream (edge ↔ tollgate).
	reasonDSIdleClosedByPeer   = "ds_idle_closed_by_peer"
	reasonDSIdleResetByPeer    = "ds_idle_reset_by_peer"
	reasonDSAbortBeforeResp    = "ds_client_abort_before_response"
	reasonDSAbortRequestBody   = "ds_client_abort_request_body"
	reasonDSAbortResponse      = "ds_client_abort_response"
	reasonDSIdleTimeout        = "ds_idle_timeout"
	reasonDSHeaderTimeout      = "ds_header_timeout"
	reasonDSBodyTimeout        = "ds_body_timeout"
	reasonDSWriteTimeout       = "ds_write_timeout"
	reasonDSBadRequest         = "ds_bad_request"
	reasonDSConnLimit          = "ds_conn_limit"
	reasonDSUpstreamAbort      = "ds_upstream_abort"
	reasonDSKeepaliveLimit     = "ds_keepalive_limit"
	reasonDSShutdown           = "ds_shutdown"
	reasonDSNetworkTimeout     = "ds_network_timeout"
	reasonDSTLSHandshakeFailed = "ds_tls_handshake_failed"
	// reasonDSTunnelClosed ends an Upgrade tunnel (WebSocket); added to the
	// spec's set as us_tunnel_closed is, for the client's side.
	reasonDSTunnelClosed = "ds_tunnel_closed"

	// Upstream (tollgate ↔ backend).
	reasonConnectRefused     = "us_connect_refused"
	reasonConnectTimeout     = "us_connect_timeout"
	reasonConnectUnreachable = "us_connect_unreachable"
	reasonDNSFailure         = "us_dns_failure"
	reasonTLSFailure         = "us_tls_failure"
	reasonReusedConnClosed   = "us_reused_conn_closed"
	reasonResetBeforeHeaders = "us_reset_before_headers"
	reasonClosedBeforeHdrs   = "us_closed_before_headers"
	reasonHeaderTimeout      = "us_header_timeout"
	reasonResetDuringBody    = "us_reset_during_body"
	reasonClosedDuringBody   = "us_closed_during_body"
	reasonBodyTimeout        = "us_body_timeout"
	reasonBadResponse        = "us_bad_response"
	reasonIdleClosedByPeer   = "us_idle_closed_by_peer"
	reasonIdleTimeout        = "us_idle_timeout"
	reasonPoolOverflow       = "us_pool_overflow"
	reasonCancelledByDS      = "us_cancelled_by_downstream"
	reasonServerDrained      = "us_server_drained"
	reasonKeepaliveLimit     = "us_keepalive_limit"
	reasonNetworkTimeout     = "us_network_timeout"
	// reasonTunnelClosed ends an Upgrade tunnel (WebSocket) that finished
	// normally. Added to the spec's set: no code there fits a tunnel whose
	// sides both said goodbye.
	reasonTunnelClosed = "us_tunnel_closed"
	// reasonResponseDiscarded closes a connection whose response tollgate
	// dropped to retry elsewhere (proxy_next_upstream http_5xx) when its
	// body was too large to read off. Added: no code of the spec says
	// tollgate dropped a whole response on purpose.
	reasonResponseDiscarded = "us_response_discarded"
)

// Initiators and kinds of a close (specs/close-reasons.md).
const (
	byPeer    = "peer"
	byProxy   = "proxy"
	byNetwork = "network"

	kindFIN     = "fin"
	kindRST     = "rst"
	kindTimeout = "timeout"
	kindRefused = "refused"
	kindError   = "error"
)

// reasonDefaults is a reason's usual initiator and kind.
type reasonDefaults struct{ initiator, kind string }

var reasonTable = map[string]reasonDefaults{
	reasonDSIdleClosedByPeer:   {byPeer, kindFIN},
	reasonDSIdleResetByPeer:    {byPeer, kindRST},
	reasonDSAbortBeforeResp:    {byPeer, kindFIN},
	reasonDSAbortRequestBody:   {byPeer, kindFIN},
	reasonDSAbortResponse:      {byPeer, kindRST},
	reasonDSIdleTimeout:        {byProxy, kindFIN},
	reasonDSHeaderTimeout:      {byProxy, kindTimeout},
	reasonDSBodyTimeout:        {byProxy, kindTimeout},
	reasonDSWriteTimeout:       {byProxy, kindTimeout},
	reasonDSBadRequest:         {byProxy, kindFIN},
	reasonDSConnLimit:          {byProxy, kindFIN},
	reasonDSUpstreamAbort:      {byProxy, kindFIN},
	reasonDSKeepaliveLimit:     {byProxy, kindFIN},
	reasonDSShutdown:           {byProxy, kindFIN},
	reasonDSNetworkTimeout:     {byNetwork, kindTimeout},
	reasonDSTLSHandshakeFailed: {byPeer, kindError},
	reasonDSTunnelClosed:       {byPeer, kindFIN},

	reasonConnectRefused:     {byPeer, kindRefused},
	reasonConnectTimeout:     {byNetwork, kindTimeout},
	reasonConnectUnreachable: {byNetwork, kindError},
	reasonDNSFailure:         {byNetwork, kindError},
	reasonTLSFailure:         {byPeer, kindError},
	reasonReusedConnClosed:   {byPeer, kindFIN},
	reasonResetBeforeHeaders: {byPeer, kindRST},
	reasonClosedBeforeHdrs:   {byPeer, kindFIN},
	reasonHeaderTimeout:      {byProxy, kindTimeout},
	reasonResetDuringBody:    {byPeer, kindRST},
	reasonClosedDuringBody:   {byPeer, kindFIN},
	reasonBodyTimeout:        {byProxy, kindTimeout},
	reasonBadResponse:        {byPeer, kindError},
	reasonIdleClosedByPeer:   {byPeer, kindFIN},
	reasonIdleTimeout:        {byProxy, kindFIN},
	reasonPoolOverflow:       {byProxy, kindFIN},
	reasonCancelledByDS:      {byProxy, kindFIN},
	reasonServerDrained:      {byProxy, kindFIN},
	reasonKeepaliveLimit:     {byProxy, kindFIN},
	reasonNetworkTimeout:     {byNetwork, kindTimeout},
	reasonTunnelClosed:       {byPeer, kindFIN},
	reasonResponseDiscarded:  {byProxy, kindFIN},
}

// connHooks receives connection life events. The zero value ignores them.
type connHooks struct {
	ids             atomic.Uint64
	onUpstreamClose func(c *upstreamConn, rec *closeRecord)
}

// nextID numbers upstream connections.
func (h *connHooks) nextID() uint64 { return h.ids.Add(1) }

func (h *connHooks) upstreamClosed(c *upstreamConn, rec *closeRecord) {
	if h.onUpstreamClose != nil {
		h.onUpstreamClose(c, rec)
	}
}
