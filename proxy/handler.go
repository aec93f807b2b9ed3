package proxy

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// requestState carries one request through the pipeline: what was tried,
// what the client got, and what the access log reports. Pooled.
type requestState struct {
	start     time.Time
	route     *route
	fwd       forwarding
	status    int   // status sent to (or logged for) the client
	bytesOut  int64 // response body bytes written to the client
	attempts  []attempt
	attemptsA [4]attempt
	dsReason  string    // close reason when this request ended the downstream conn
	freeRetry bool      // the one keep-alive-race retry was used
	body      io.Reader // request body to forward, under client_body_timeout
	buf       []byte
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

// ServeHTTP admits, routes and proxies one request, then logs it. It reads
// top to bottom; each step lives in its own file.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := s.rt.Load()
	st := getState(time.Now())
	defer putState(st)
	dc := downstreamFrom(r.Context())
	dc.requests++

	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()

	rt.fillForwarding(&st.fwd, r, dc, &s.ids)
	w.Header()["X-Request-Id"] = []string{st.fwd.requestID}

	st.route = rt.routes.match(r.Host, r.URL.Path)
	if st.route == nil {
		s.respondError(w, st, http.StatusNotFound, "", "no route")
	} else {
		if rt.keepaliveReqs > 0 && dc.requests >= rt.keepaliveReqs {
			w.Header()["Connection"] = []string{"close"}
			st.dsReason = "ds_keepalive_limit"
		}
		st.body = withBodyTimeout(w, r, rt.bodyTimeout)
		s.forward(w, r, rt, st)
	}
	s.observe(r, st)
}

// forward tries the route's upstream servers until one answers or no further
// try is allowed, and streams the answer to the client.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, rt *runtime, st *requestState) {
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
				s.respondError(w, st, http.StatusBadGateway, "destination_unavailable", "no live upstreams")
				return
			}
			s.respondFailure(w, st, last)
			return
		}
		f, retry := s.try(w, r, rt, st, p, now)
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
			s.respondFailure(w, st, f)
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

// try runs one attempt on server p. It returns nil once the client has its
// answer, else the failure and whether another attempt is allowed.
func (s *Server) try(w http.ResponseWriter, r *http.Request, rt *runtime, st *requestState, p *peer, now time.Time) (*failure, retryKind) {
	bal := st.route.upstream.bal
	c, err := p.pool.get(r.Context(), now, rt.connectTimeout)
	if err != nil {
		f := classifyAttempt(err, nil)
		bal.done(p, time.Now(), f.serverFault)
		st.attempts = append(st.attempts, attempt{addr: p.addr, reason: f.reason, duration: time.Since(now)})
		s.metrics.upstreamClose(f.reason)
		// Nothing was sent: any request may go to the next server.
		return &f, retryNext
	}
	c.startExchange(rt.readTimeout, rt.sendTimeout)
	stop := context.AfterFunc(r.Context(), c.cancel)
	upgrade, _ := isUpgrade(r.Header)
	x := exchange{c: c, r: r, body: st.body, fwd: &st.fwd, upgrade: upgrade, buf: st.buf}
	resp, err := x.roundTrip()
	if err != nil {
		stop()
		f := classifyAttempt(err, c)
		c.close(f.reason)
		race := f.reason == reasonReusedConnClosed
		bal.done(p, time.Now(), f.serverFault && !race)
		st.attempts = append(st.attempts, attempt{addr: p.addr, reason: f.reason, duration: time.Since(now)})
		return &f, retryAfter(r, &x, race, st)
	}
	st.attempts = append(st.attempts, attempt{addr: p.addr, status: resp.StatusCode, duration: time.Since(now)})
	if resp.StatusCode == http.StatusSwitchingProtocols && upgrade != "" {
		stop()
		bal.done(p, time.Now(), false)
		s.tunnel(w, st, resp, c)
		return nil, retryNone
	}
	clean := s.writeResponse(w, r, rt, st, resp, c)
	stop()
	bal.done(p, time.Now(), false)
	switch {
	case !clean:
	case resp.Close || x.bodyUnsent:
		c.close(reasonKeepaliveLimit)
	default:
		p.pool.put(c, time.Now())
	}
	return nil, retryNone
}

// retryAfter decides whether a request that failed before any response byte
// reached the client may be tried again, under Nginx's default
// proxy_next_upstream "error timeout": only a request whose body can be sent
// again (none, or not read yet) goes to the next server.
func retryAfter(r *http.Request, x *exchange, race bool, st *requestState) retryKind {
	replayable := r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody
	if !replayable || (x.sentBytes && nonIdempotent(r.Method)) {
		return retryNone
	}
	if race && !st.freeRetry {
		st.freeRetry = true
		return retryFree
	}
	return retryNext
}

// respondFailure answers the client for a failed attempt: the status and an
// RFC 9209 Proxy-Status naming the reason, never a reset.
func (s *Server) respondFailure(w http.ResponseWriter, st *requestState, f *failure) {
	s.respondError(w, st, f.status, f.proxyStatus, f.reason)
}

// respondError writes a small error response of tollgate's own.
func (s *Server) respondError(w http.ResponseWriter, st *requestState, status int, proxyErr, details string) {
	st.status = status
	h := w.Header()
	if proxyErr != "" {
		h["Proxy-Status"] = []string{"tollgate; error=" + proxyErr + "; details=" + strconv.Quote(details)}
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Cache-Control"] = []string{"no-store"}
	body := http.StatusText(status) + "\n"
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	n, _ := w.Write([]byte(body))
	st.bytesOut += int64(n)
}

// nonIdempotent reports whether Nginx refuses to resend a method once it was
// sent (ngx_http_upstream.c: POST, LOCK, PATCH).
func nonIdempotent(method string) bool {
	return method == http.MethodPost || method == "LOCK" || method == http.MethodPatch
}
