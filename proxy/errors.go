package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// failure is what one failed upstream attempt means: the close reason of the
// upstream connection, the response tollgate sends in its place, and whether
// it counts against the server's passive health.
type failure struct {
	reason      string // close reason code (specs/close-reasons.md)
	status      int    // response status when nothing reached the client yet
	proxyStatus string // RFC 9209 Proxy-Status error type
	serverFault bool   // counts as a failure for max_fails (error, timeout, invalid_header)
	timeout     bool   // Nginx's "timeout" condition, else "error"/"invalid_header"
	connect     bool   // the connection never opened: the next server is tried at once
	sent        bool   // some of the request reached the backend
	race        bool   // a reused keep-alive connection was found closed
	// approved is set for a response status listed in
	// proxy_next_upstream whose retry mayRetry already granted; cond
	// names the condition and wait a Retry-After to honour.
	approved bool
	cond     cond
	wait     time.Duration
}

// classifyAttempt maps an error of one upstream attempt to its failure. It
// is the one place that decides status and reason; see the tables in
// specs/close-reasons.md.
func classifyAttempt(err error, c *upstreamConn) failure {
	if errors.Is(err, errCancelled) || errors.Is(err, context.Canceled) {
		return failure{reason: reasonCancelledByDS, status: statusClientClosed, proxyStatus: "proxy_internal_error"}
	}
	var de *dialError
	if errors.As(err, &de) {
		f := classifyDial(de.err)
		f.connect = true
		return f
	}
	var re *responseError
	started := errors.As(err, &re) && re.started
	switch {
	case c != nil && c.deadlineFired:
		return failure{reason: reasonHeaderTimeout, status: http.StatusGatewayTimeout,
			proxyStatus: "http_response_timeout", serverFault: true, timeout: true}
	case errors.Is(err, syscall.ETIMEDOUT):
		return failure{reason: reasonNetworkTimeout, status: http.StatusGatewayTimeout,
			proxyStatus: "connection_timeout", serverFault: true, timeout: true}
	case started && !isConnError(err):
		return failure{reason: reasonBadResponse, status: http.StatusBadGateway,
			proxyStatus: "http_protocol_error", serverFault: true}
	case !started && c != nil && c.reused:
		return failure{reason: reasonReusedConnClosed, status: http.StatusBadGateway,
			proxyStatus: "connection_terminated", serverFault: true}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return failure{reason: reasonResetBeforeHeaders, status: http.StatusBadGateway,
			proxyStatus: "connection_terminated", serverFault: true}
	case isConnError(err):
		return failure{reason: reasonClosedBeforeHdrs, status: http.StatusBadGateway,
			proxyStatus: "connection_terminated", serverFault: true}
	default:
		return failure{reason: reasonBadResponse, status: http.StatusBadGateway,
			proxyStatus: "http_protocol_error", serverFault: true}
	}
}

func classifyDial(err error) failure {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return failure{reason: reasonConnectRefused, status: http.StatusBadGateway,
			proxyStatus: "connection_refused", serverFault: true}
	case errors.As(err, &dns):
		return failure{reason: reasonDNSFailure, status: http.StatusBadGateway,
			proxyStatus: "dns_error", serverFault: true}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return failure{reason: reasonConnectUnreachable, status: http.StatusBadGateway,
			proxyStatus: "destination_unavailable", serverFault: true}
	case errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return failure{reason: reasonConnectTimeout, status: http.StatusGatewayTimeout,
			proxyStatus: "connection_timeout", serverFault: true, timeout: true}
	default:
		return failure{reason: reasonConnectUnreachable, status: http.StatusBadGateway,
			proxyStatus: "destination_unavailable", serverFault: true}
	}
}

// classifyBody names why streaming a response body from the backend failed.
func classifyBody(err error, c *upstreamConn) string {
	switch {
	case errors.Is(err, errCancelled):
		return reasonCancelledByDS
	case c.deadlineFired:
		return reasonBodyTimeout
	case errors.Is(err, syscall.ECONNRESET):
		return reasonResetDuringBody
	case errors.Is(err, syscall.ETIMEDOUT):
		return reasonNetworkTimeout
	default:
		return reasonClosedDuringBody
	}
}

// statusClientClosed is Nginx's 499: the client closed the connection before
// the response. It is logged, never sent.
const statusClientClosed = 499

// isConnError reports whether err is a connection-level failure (EOF, reset,
// timeout, closed) rather than a malformed message.
func isConnError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
