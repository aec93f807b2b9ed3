package proxy

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// observe records a finished request: metrics always, and one access log
// line when the access log is on.
func (s *Server) observe(ss *session, st *requestState) {
	req := &ss.req
	elapsed := time.Since(st.start)
	routeName, upName := "", ""
	if st.route != nil {
		routeName, upName = st.route.name, st.route.upstream.name
	}
	s.metrics.requests.WithLabelValues(routeName, upName, codeLabel(st.status)).Inc()
	s.metrics.duration.WithLabelValues(routeName).Observe(elapsed.Seconds())
	if s.access == nil {
		return
	}
	addrs, statuses, reasons := attemptFields(st.attempts)
	attrs := [...]slog.Attr{
		slog.String("request_id", st.fwd.requestID),
		slog.String("client", st.fwd.clientIP),
		slog.String("method", req.Method),
		slog.String("protocol", ss.protocol()),
		slog.String("host", req.Host),
		slog.String("path", st.path),
		slog.Int("status", st.status),
		slog.Int64("bytes", ss.rw.bodyBytes),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("route", routeName),
		slog.String("upstream_addr", addrs),
		slog.String("upstream_status", statuses),
		slog.String("upstream_close", reasons),
		slog.String("retry_skipped", st.retrySkip),
		slog.String("downstream_close", st.dsReason),
		slog.String("limit_req_status", st.limitReqStatus),
		slog.String("shed", st.shed),
	}
	s.access.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs[:]...)
}

// protocol is the client's protocol, as Nginx's $server_protocol.
func (ss *session) protocol() string {
	switch {
	case ss.isStream():
		return "HTTP/2.0"
	case ss.req.Minor == 0:
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// logBadRequest records a request refused before it could be parsed, as
// Nginx logs its 400s.
func (s *Server) logBadRequest(ss *session, status int, why string) {
	s.metrics.requests.WithLabelValues("", "", codeLabel(status)).Inc()
	if s.access == nil {
		return
	}
	s.access.LogAttrs(context.Background(), slog.LevelInfo, "access",
		slog.String("client", ss.peerText),
		slog.Int("status", status),
		slog.String("error", why),
		slog.String("downstream_close", reasonDSBadRequest))
}

// attemptFields formats the attempts as Nginx's $upstream_addr and
// $upstream_status do ("10.0.0.1:80, 10.0.0.2:80" and "502, 200"); a failed
// attempt shows its close reason in upstream_close and 502/504 in status.
func attemptFields(as []attempt) (addrs, statuses, reasons string) {
	switch len(as) {
	case 0:
		return "", "", ""
	case 1:
		return as[0].addr, attemptStatus(as[0]), as[0].reason
	}
	var a, st, rs strings.Builder
	anyReason := false
	for i, at := range as {
		if i > 0 {
			a.WriteString(", ")
			st.WriteString(", ")
			rs.WriteString(", ")
		}
		a.WriteString(at.addr)
		st.WriteString(attemptStatus(at))
		if at.reason != "" {
			anyReason = true
			rs.WriteString(at.reason)
		} else {
			rs.WriteString("-")
		}
	}
	if !anyReason {
		return a.String(), st.String(), ""
	}
	return a.String(), st.String(), rs.String()
}

func attemptStatus(at attempt) string {
	if at.status != 0 {
		return codeLabel(at.status)
	}
	if strings.Contains(at.reason, "timeout") {
		return "504"
	}
	return "502"
}
