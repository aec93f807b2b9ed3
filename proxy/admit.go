package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-proxy/tollgate/limiter"
	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// admission is a session's limit_req scratch space: the key buffers, reused
// by every request of the connection, and the request values the keys read.
// It is the limiter.KeySource of the request being admitted. A session
// allocates it on its first request to a limited route.
type admission struct {
	keys   [][]byte
	header h1.Header
	client netip.Addr
	server string
}

// RemoteAddr is the client address after realip ($remote_addr).
func (a *admission) RemoteAddr() netip.Addr { return a.client }

// ServerName is the matched route's host, or the request's Host without
// its port when the route matches any host ($server_name).
func (a *admission) ServerName() string { return a.server }

// Header is $http_<name>: the first field of that name, except that
// X-Forwarded-For and Cookie fields are joined as Nginx 1.22 joins them
// ("a, b" and "c=1; d=2", ngx_http_variable_headers_internal).
func (a *admission) Header(name string) string {
	var sep string
	switch {
	case strings.EqualFold(name, "X-Forwarded-For"):
		sep = ", "
	case strings.EqualFold(name, "Cookie"):
		sep = "; "
	default:
		return a.header.Get(name)
	}
	if a.header.Count(name) < 2 {
		return a.header.Get(name)
	}
	var b strings.Builder
	a.header.Values(name, func(v string) {
		if b.Len() > 0 {
			b.WriteString(sep)
		}
		b.WriteString(v)
	})
	return b.String()
}

// fill points the admission at the request being admitted.
func (a *admission) fill(ss *session, st *requestState) {
	a.header = ss.req.Header
	a.client = ss.peer
	if st.fwd.clientIP != ss.peerText {
		if c, err := netip.ParseAddr(st.fwd.clientIP); err == nil {
			a.client = c
		}
	}
	a.server = st.route.host
	if a.server == "" {
		a.server = normalizeHost(ss.req.Host)
	}
}

// admit applies the route's limit_req rules, as ngx_http_limit_req_handler
// does once the request head is read and before its body is. It reports
// whether the request goes on to the upstream. A rejected request is
// answered here; a delayed one waits here, holding no upstream connection,
// and is dropped if the client leaves meanwhile.
func (ss *session) admit(rt *runtime, st *requestState) bool {
	rl := st.route.limits
	if rl == nil {
		return true
	}
	s := ss.s
	a := ss.lim
	if a == nil {
		a = &admission{}
		ss.lim = a
	}
	a.fill(ss, st)
	a.keys = limiter.AppendKeys(a.keys, rl.rules, a)
	a.header = nil
	now := s.limits.nowMs()
	d := limiter.Check(rl.rules, a.keys, now, rl.dryRun)
	st.limitReqStatus = d.Status.String()
	if rt.realIP == nil {
		s.watchSharedKeys(rl, a.keys, now)
	}
	z := rl.deciding(d, a.keys)
	if z == nil {
		return true // every key was empty: no limit applied
	}
	z.total[d.Status].Inc()
	switch d.Status {
	case limiter.Rejected, limiter.RejectedDryRun:
		s.logLimit(st, rl, z, d, now)
		if d.Status == limiter.Rejected {
			ss.respondLimited(st, rl, z, d)
			return false
		}
	case limiter.Delayed, limiter.DelayedDryRun:
		s.logLimit(st, rl, z, d, now)
		if d.Status == limiter.Delayed {
			return ss.waitDelay(st, d.Delay)
		}
	}
	return true
}

// delayPoll is how often a delayed request checks that its client is still
// there.
const delayPoll = 100 * time.Millisecond

// waitDelay holds a delayed request for d, checking at least every
// delayPoll whether the client left, as Nginx does while a request sits in
// limit_req's timer (ngx_http_test_reading). It reports whether the
// request goes on. When the client left, the request ends as Nginx's 499
// and the connection closes with ds_client_abort_before_response.
func (ss *session) waitDelay(st *requestState, d time.Duration) bool {
	ss.conn.setPhase(phaseQueue)
	deadline := time.Now().Add(d)
	t := time.NewTimer(min(d, delayPoll))
	defer t.Stop()
	for {
		<-t.C
		if ss.conn.peerGone() {
			st.status = statusClientClosed
			st.dsReason = reasonDSAbortBeforeResp
			return false
		}
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		t.Reset(min(left, delayPoll))
	}
}

// respondLimited answers a request limit_req rejected: limit_req_status,
// Retry-After (RFC 9110 §10.2.3) from the bucket state, the RateLimit-Policy
// and RateLimit fields of draft-ietf-httpapi-ratelimit-headers-10 for the
// rejecting zone, and Proxy-Status naming it (RFC 9209).
func (ss *session) respondLimited(st *requestState, rl *routeLimits, z *limitZone, d limiter.Decision) {
	status := rl.status
	st.status = status
	if ss.rw.wroteHead {
		return
	}
	// A zone too full for a new key has no bucket to wait for: a second.
	retry := strconv.FormatInt(max(d.RetryAfterSeconds(), 1), 10)
	policy := ""
	for i, rz := range rl.zones {
		if rz == z {
			policy = rl.policy[i]
		}
	}
	name := sfString(z.Name())
	ss.writeOwnResponse(status,
		h1.Field{Name: st.fwd.requestIDName, Value: st.fwd.requestID},
		h1.Field{Name: "Retry-After", Value: retry},
		h1.Field{Name: "RateLimit-Policy", Value: policy},
		h1.Field{Name: "RateLimit", Value: name + ";r=0;t=" + retry},
		h1.Field{Name: "Proxy-Status", Value: "tollgate; error=http_request_denied; details=" +
			strconv.Quote("limit_req zone="+z.Name())})
}

// logLimit logs a rejection at limit_req_log_level or a delay one level
// lower, in Nginx's words, at most one line per zone per second; the next
// line says how many were held back. A zone without room for a new key
// logs Nginx's alert instead.
func (s *Server) logLimit(st *requestState, rl *routeLimits, z *limitZone, d limiter.Decision, now int64) {
	delayed := d.Status == limiter.Delayed || d.Status == limiter.DelayedDryRun
	level := rl.level
	switch {
	case d.AllocFailed:
		level = slog.LevelError // Nginx: alert
	case delayed:
		level = rl.delayLevel
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	held, ok := z.logAllowed(now)
	if !ok {
		return
	}
	dry := ""
	if rl.dryRun {
		dry = ", dry run"
	}
	var msg string
	switch e := d.Excess; {
	case d.AllocFailed:
		msg = fmt.Sprintf("could not allocate node in limit_req zone %q", z.Name())
	case delayed:
		// Nginx's delay line has a comma before "by"; its reject line none.
		msg = fmt.Sprintf("delaying request%s, excess: %d.%03d, by zone %q", dry, e/1000, e%1000, z.Name())
	default:
		msg = fmt.Sprintf("limiting requests%s, excess: %d.%03d by zone %q", dry, e/1000, e%1000, z.Name())
	}
	attrs := []slog.Attr{
		slog.String("zone", z.Name()),
		slog.String("client", st.fwd.clientIP),
		slog.String("route", st.route.name),
		slog.String("request_id", st.fwd.requestID),
	}
	if held > 0 {
		attrs = append(attrs, slog.Int64("suppressed", held))
	}
	s.log.LogAttrs(ctx, level, msg, attrs...)
}

// watchSharedKeys feeds the shared-key watch of each zone of the route
// keyed by the client address; it runs only while real_ip is not
// configured.
func (s *Server) watchSharedKeys(rl *routeLimits, keys [][]byte, now int64) {
	for i, z := range rl.zones {
		if !z.usesAddr || i >= len(keys) || len(keys[i]) == 0 {
			continue
		}
		r, tripped := z.watch.observe(keys[i], now)
		if !tripped {
			continue
		}
		z.sharedKey.Inc()
		if r.log {
			s.log.Warn(fmt.Sprintf("limit_req zone %q: one key made %d of %d requests within %ds and real_ip is not configured: "+
				"all clients probably share the address of the proxy in front (Nginx), and so one bucket; "+
				"configure real_ip (set_real_ip_from, real_ip_header X-Forwarded-For) so that each client gets its own",
				z.Name(), r.hits, r.total, sharedKeyWindow/1000),
				"zone", z.Name(), "key", displayKey(r.key, z.Key().IsBinaryRemoteAddr()))
		}
	}
}
