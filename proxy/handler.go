package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// requestState carries one request through the pipeline: what was tried,
// what the client got, and what the access log reports. Pooled.
type requestState struct {
	start     time.Time
	route     *route
	path      string
	fwd       forwarding
	status    int // status sent to (or logged for) the client
	attempts  []attempt
	attemptsA [4]attempt
	dsReason  string // close reason when this request ended the downstream conn
	dsBy      string // its initiator, when not the reason's default
	dsCause   string // cause_conn_id for dsReason
	keep      bool   // the connection may serve another request
	retrySkip string // why a failed request was not retried
	retryRun  retryRun
	buf       []byte
	exchange  exchange    // the current attempt's, kept here to spare an allocation
	extra     [1]h1.Field // tollgate's own response fields

	// limitReqStatus is Nginx's $limit_req_status ("PASSED", "REJECTED",
	// …); "" when no limit applied.
	limitReqStatus string

	// shed says why the overload gate shed the request
	// ("adaptive_concurrency/queue_full", …); "" when it did not.
	shed string
}

// attempt is one try of one upstream server, as Nginx's $upstream_addr and
// $upstream_status report it.
type attempt struct {
	addr     string
	status   int    // response status, or 0
	reason   string // close reason of a failed attempt
	duration time.Duration
}

const copyBufSize = 32 << 10

var statePool = sync.Pool{New: func() any {
	return &requestState{buf: make([]byte, copyBufSize)}
}}

func getState(now time.Time) *requestState {
	st := statePool.Get().(*requestState)
	st.start = now
	st.attempts = st.attemptsA[:0]
	return st
}

func putState(st *requestState) {
	buf := st.buf
	*st = requestState{buf: buf}
	statePool.Put(st)
}

// handle runs the pipeline for the request just read: route, forward,
// stream, log. It returns whether the connection may serve another request,
// or the reason it must close (with initiator and cause).
func (ss *session) handle(rt *runtime) (keep bool, reason, initiator, cause string) {
	s := ss.s
	req := &ss.req
	st := getState(time.Now())
	defer putState(st)
	s.metrics.inFlight.Inc()
	s.inFlight.Add(1)
	defer func() { s.metrics.inFlight.Dec(); s.inFlight.Add(-1) }()

	rt.fillForwarding(&st.fwd, req, ss, &s.ids)
	ss.conn.startRequest(st.fwd.requestID)
	st.keep = req.KeepAlive && rt.keepaliveTimeout > 0
	if rt.keepaliveReqs > 0 && ss.served >= rt.keepaliveReqs {
		st.keep = false
	}
	ss.rw.reset(ss.bw, ss.conn, rt.writeTimeout, req.Method == http.MethodHead, req.Minor, st.keep)

	st.path = req.Path()
	mp, ok := matchPath(st.path)
	if ok {
		st.route = rt.routes.match(req.Host, mp)
	}
	switch {
	case ss.answerACMEChallenge(st):
	case ss.redirectHTTPS && !strings.HasPrefix(mp, "/.well-known/acme-challenge/"):
		st.status = http.StatusPermanentRedirect
		ss.writeOwnResponse(st.status, h1.Field{Name: "Location", Value: httpsURL(req)})
	case !ok:
		ss.respondError(st, http.StatusBadRequest, "", "path above the root")
	case st.route == nil:
		ss.respondError(st, http.StatusNotFound, "", "no route")
	case rt.bodyLimit > 0 && req.ContentLength > rt.bodyLimit:
		// Before limit_req, as in Nginx (its find-config phase).
		ss.respondError(st, http.StatusRequestEntityTooLarge, "", "client_max_body_size")
	case ss.admit(rt, st):
		ss.forwardGuarded(rt, st) // forward, behind adaptive_concurrency (overload.go)
	}
	s.observe(ss, st)
	switch {
	case st.dsReason != "":
		return false, st.dsReason, st.dsBy, st.dsCause
	case ss.rw.err != nil:
		return false, writeFailure(ss.rw.err), "", ""
	case ss.rw.closeConn && !req.KeepAlive:
		// The client asked to close: a keep-alive end the peer chose, as
		// us_keepalive_limit is for a backend's "Connection: close".
		return false, reasonDSKeepaliveLimit, byPeer, ""
	case ss.rw.closeConn:
		return false, reasonDSKeepaliveLimit, "", ""
	}
	return true, "", "", ""
}

// forward tries the route's upstream servers until one answers or no further
// try is allowed (proxy_next_upstream, tries, timeout, budget), and streams
// the answer to the client.
func (ss *session) forward(rt *runtime, st *requestState) {
	up := st.route.upstream
	pol := &st.route.retry
	rr := &st.retryRun
	*rr = retryRun{start: time.Now()}
	rr.tried = rr.triedA[:0]
	ss.startKeeping(pol.bodyLimit)
	up.budget.noteRequest(rr.start)
	var last *failure
	for {
		p, tk := up.bal.pick(time.Now(), rr.tried)
		if p == nil {
			if last == nil {
				ss.respondError(st, http.StatusBadGateway, "destination_unavailable", "no live upstreams")
				return
			}
			ss.skipRetry(st, skipTriesExhausted)
			ss.respondFailure(st, last)
			return
		}
		f := ss.try(rt, st, rr, p, tk)
		if f == nil {
			if st.dsReason == reasonDSUpstreamAbort {
				// The backend failed after the head reached the client:
				// never retried, and the audit says why.
				ss.skipRetry(st, skipResponseStarted)
			}
			return // answered
		}
		if f.reason == reasonCancelledByDS {
			st.status = f.status // 499, or 408 for a body that timed out
			return
		}
		last = f
		if f.race && !rr.freeUsed && ss.safeToReplay(pol, f.sent) {
			// A keep-alive race: the backend closed the connection as
			// tollgate reused it. Sent again at once on a fresh
			// connection, without using a try (Nginx, Go's Transport).
			rr.freeUsed = true
			continue
		}
		if !f.approved {
			// A retry on a listed status was counted by retryOnStatus,
			// which asked mayRetry before dropping the response.
			rr.tries++
			rr.tried = append(rr.tried, p)
			f.cond = failureCond(f)
			if why := ss.mayRetry(st, rr, f.cond, f.sent); why != "" {
				ss.skipRetry(st, why)
				ss.respondFailure(st, f)
				return
			}
		}
		ss.s.metrics.retries.WithLabelValues(up.name, f.cond.name()).Inc()
		wait := f.wait
		if wait == 0 {
			wait = rr.backoff(pol, f)
		}
		rr.retries++
		if wait > 0 {
			time.Sleep(wait)
		}
	}
}

// safeToReplay reports whether a request may be sent again after a
// keep-alive race, without using up a try: a safe method or a request
// nothing of which reached the backend (Go's Transport), or one
// proxy_next_upstream would send again after an error (Nginx gives the
// race its try back, ngx_http_upstream_next: u->peer.tries++). A POST
// whose bytes went out is resent only under non_idempotent or an enabled
// Idempotency-Key.
func (ss *session) safeToReplay(pol *retryPolicy, sent bool) bool {
	if !ss.replayable() {
		return false
	}
	switch ss.req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return !sent || pol.conds&condError != 0 && !ss.sentNonIdempotent(pol, sent)
}

// skipRetry records why a failed request was not tried again.
func (ss *session) skipRetry(st *requestState, why string) {
	st.retrySkip = why
	ss.s.metrics.retrySkips.WithLabelValues(st.route.upstream.name, why).Inc()
}

// respondFailure answers the client for a failed attempt: the status and an
// RFC 9209 Proxy-Status naming the reason, never a reset.
func (ss *session) respondFailure(st *requestState, f *failure) {
	ss.respondError(st, f.status, f.proxyStatus, f.reason)
}

// respondError writes a small error response of tollgate's own.
func (ss *session) respondError(st *requestState, status int, proxyErr, details string) {
	st.status = status
	if ss.rw.wroteHead {
		return
	}
	id := h1.Field{Name: st.fwd.requestIDName, Value: st.fwd.requestID}
	if proxyErr == "" {
		ss.writeOwnResponse(status, id)
		return
	}
	ss.writeOwnResponse(status, id, h1.Field{Name: "Proxy-Status",
		Value: "tollgate; error=" + proxyErr + "; details=" + strconv.Quote(details)})
}

// writeOwnResponse writes a small answer of tollgate's own: the status, its
// reason phrase as a plain-text body, no-store, and the given fields
// (request id, Retry-After, Proxy-Status, …). Every refusal goes through it.
func (ss *session) writeOwnResponse(status int, extra ...h1.Field) {
	var fieldsA [8]h1.Field
	fields := append(fieldsA[:0],
		h1.Field{Name: "Content-Type", Value: "text/plain; charset=utf-8"},
		h1.Field{Name: "Cache-Control", Value: "no-store"})
	fields = append(fields, extra...)
	body := statusText(status) + "\n"
	ss.rw.writeHead(&headSpec{status: status, reason: statusText(status),
		contentLength: int64(len(body)), extra: fields})
	ss.rw.Write([]byte(body))
	ss.rw.finish(nil)
}

// statusText is the reason phrase for a status tollgate sends itself.
func statusText(status int) string {
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(status)
}

// nonIdempotent reports whether Nginx refuses to resend a method once it was
// sent (ngx_http_upstream.c: POST, LOCK, PATCH).
func nonIdempotent(method string) bool {
	return method == http.MethodPost || method == "LOCK" || method == http.MethodPatch
}
