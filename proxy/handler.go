package proxy

import (
	"net/http"
	"strconv"
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
	freeRetry bool   // the one keep-alive-race retry was used
	buf       []byte
	exchange  exchange    // the current attempt's, kept here to spare an allocation
	extra     [1]h1.Field // tollgate's own response fields
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
	st.keep = req.KeepAlive && !req.MustClose && rt.keepaliveTimeout > 0
	if rt.keepaliveReqs > 0 && ss.served >= rt.keepaliveReqs {
		st.keep = false
	}
	ss.rw.reset(ss.bw, ss.conn, rt.writeTimeout, req.Method == http.MethodHead, req.Minor, st.keep)

	st.path = req.Path()
	st.route = rt.routes.match(req.Host, st.path)
	if st.route == nil {
		ss.respondError(st, http.StatusNotFound, "", "no route")
	} else {
		ss.forward(rt, st)
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
// try is allowed, and streams the answer to the client.
func (ss *session) forward(rt *runtime, st *requestState) {
	bal := st.route.upstream.bal
	var triedA [8]*peer
	tried := triedA[:0]
	maxTries := bal.size()
	var last *failure
	for {
		now := time.Now()
		p := bal.pick(now, tried)
		if p == nil {
			if last == nil {
				ss.respondError(st, http.StatusBadGateway, "destination_unavailable", "no live upstreams")
				return
			}
			ss.respondFailure(st, last)
			return
		}
		f, retry := ss.try(rt, st, p, now)
		if f == nil {
			return // answered
		}
		if f.reason == reasonCancelledByDS {
			st.status = statusClientClosed
			return
		}
		last = f
		switch {
		case retry == retryFree:
			// A keep-alive race does not use up a try (Nginx).
		case retry == retryNext && len(tried) < maxTries-1 && len(tried) < len(triedA)-1:
			tried = append(tried, p)
		default:
			ss.respondFailure(st, f)
			return
		}
	}
}

// retryKind says whether a failed attempt may be repeated.
type retryKind int

const (
	retryNone retryKind = iota
	retryNext           // on another server, using up a try
	retryFree           // a keep-alive race: again, without using a try
)

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
	extra := [...]h1.Field{
		{Name: "Content-Type", Value: "text/plain; charset=utf-8"},
		{Name: "Cache-Control", Value: "no-store"},
		{Name: st.fwd.requestIDName, Value: st.fwd.requestID},
		{Name: "Proxy-Status", Value: "tollgate; error=" + proxyErr + "; details=" + strconv.Quote(details)},
	}
	fields := extra[:]
	if proxyErr == "" {
		fields = extra[:3]
	}
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
