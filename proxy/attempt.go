package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-proxy/tollgate/breaker"
	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// try runs one attempt on server p. It returns nil once the client has its
// answer, else the failure, for forward to decide on another attempt.
func (ss *session) try(rt *runtime, st *requestState, rr *retryRun, p *peer, tk breaker.Ticket) *failure {
	if p == circuitOpen {
		ss.shedCircuitOpen(st)
		return nil
	}
	now := time.Now()
	bal := st.route.upstream.bal
	ss.conn.setPhase(phaseResponseHeaders)
	c, err := p.pool.get(context.Background(), now, rt.connectTimeout)
	if err != nil {
		f := classifyAttempt(err, nil)
		bal.done(p, time.Now(), f.serverFault)
		st.attempts = append(st.attempts, attempt{addr: p.addr, reason: f.reason, duration: time.Since(now)})
		p.report(tk, &st.attempts[len(st.attempts)-1])
		ss.s.closes.add(dialRecord(p.pool, f.reason, err, st.fwd.requestID))
		return &f
	}
	c.startExchange(rt.readTimeout, rt.sendTimeout, st.fwd.requestID, ss.conn)
	x := &st.exchange
	*x = exchange{c: c, req: &ss.req, body: ss.bodyForAttempt(), trailer: &ss.body.Trailer,
		fwd: &st.fwd, upgrade: ss.req.Upgrade, buf: st.buf, early: ss}
	if err := x.roundTrip(); err != nil {
		f := ss.attemptFailed(st, p, c, x, err, now)
		p.report(tk, &st.attempts[len(st.attempts)-1])
		return f
	}
	resp := &c.resp
	st.attempts = append(st.attempts, attempt{addr: p.addr, status: resp.Status, duration: time.Since(now)})
	if f := ss.retryOnStatus(st, rr, p, c); f != nil {
		p.report(tk, &st.attempts[len(st.attempts)-1])
		return f
	}
	if resp.Status == 101 && x.upgrade != "" {
		bal.done(p, time.Now(), false)
		p.report(tk, &st.attempts[len(st.attempts)-1])
		ss.tunnel(st, c)
		return nil
	}
	clean := ss.writeResponse(st, c)
	bal.done(p, time.Now(), false)
	p.report(tk, &st.attempts[len(st.attempts)-1]) // after the body: the exchange really ended
	switch {
	case !clean:
	case !resp.KeepAlive || x.bodyUnsent:
		// The exchange is over: the close comes between exchanges, in
		// phase idle, as when put retires a conn at keepalive_requests.
		c.phase, c.idleSince = phaseIdle, time.Now()
		c.close(reasonKeepaliveLimit)
	default:
		if ka := resp.Header.Get("Keep-Alive"); ka != "" {
			p.pool.learnKeepAlive(ka)
		}
		p.pool.put(c, time.Now())
	}
	// The last bytes go to the client once the upstream connection is
	// back in the pool, free for the next request.
	if err := ss.rw.flush(); err != nil && clean {
		st.dsReason = writeFailure(err)
	}
	return nil
}

// retryOnStatus handles a response whose status is listed in
// proxy_next_upstream (http_500, http_503, …): when another attempt is
// allowed, the response is dropped and the failure returned; otherwise it
// goes to the client as it is, and the server counts as a success (Nginx).
func (ss *session) retryOnStatus(st *requestState, rr *retryRun, p *peer, c *upstreamConn) *failure {
	resp := &c.resp
	cnd := statusCond(resp.Status)
	if cnd == 0 || st.route.retry.conds&cnd == 0 {
		return nil
	}
	var wait time.Duration
	if resp.Status == 503 || resp.Status == 429 {
		w, fits := retryAfterWait(resp.Header.Get("Retry-After"), &st.route.retry, rr)
		if !fits {
			ss.skipRetry(st, skipDeadlineExceeded)
			return nil
		}
		wait = w
	}
	// mayRetry sees this attempt counted, as forward counts a failed
	// one: a response on the last try goes to the client (Nginx retries
	// only while u->peer.tries > 1, ngx_http_upstream_test_next).
	rr.tries++
	rr.tried = append(rr.tried, p)
	if why := ss.mayRetry(st, rr, cnd, true); why != "" {
		ss.skipRetry(st, why)
		return nil
	}
	ss.discardResponse(c, p)
	// 403 and 404 retry but never mark the server failed (Nginx).
	st.route.upstream.bal.done(p, time.Now(), cnd != condHTTP403 && cnd != condHTTP404)
	return &failure{reason: "", status: resp.Status, approved: true, cond: cnd, wait: wait,
		proxyStatus: "http_response_status"}
}

// discardResponse drops a response tollgate will not pass on: a small body
// is read off so the connection can be reused, a larger one closes it.
func (ss *session) discardResponse(c *upstreamConn, p *peer) {
	resp := &c.resp
	if resp.NoBody {
		c.body.Reset(c.br, 0, false)
	} else {
		c.body.Reset(c.br, resp.ContentLength, resp.Chunked)
	}
	n, err := io.Copy(io.Discard, io.LimitReader(&c.body, maxDrain))
	if err == nil && n < maxDrain && c.body.Done() && resp.KeepAlive {
		p.pool.put(c, time.Now())
		return
	}
	c.close(reasonResponseDiscarded)
}

// attemptFailed closes the upstream connection of a failed attempt with its
// reason and returns the failure.
func (ss *session) attemptFailed(st *requestState, p *peer, c *upstreamConn, x *exchange, err error, start time.Time) *failure {
	bal := st.route.upstream.bal
	var cbe *clientBodyError
	if errors.As(err, &cbe) || errors.Is(err, errCancelled) {
		// The client went away (or its body broke off): the backend did
		// nothing wrong, and the upstream close says who caused it.
		dsReason, status := reasonDSAbortBeforeResp, statusClientClosed
		if cbe != nil {
			dsReason = readFailure(cbe.err, phaseRequestBody, false)
			if dsReason == reasonDSBodyTimeout {
				status = http.StatusRequestTimeout // Nginx logs 408
			}
		} else if edgeTimeoutSuspected(time.Since(st.start), ss.s.rt.Load().edgeReadTimeout) {
			ss.conn.flagEdgeTimeout()
		}
		c.closeCaused(reasonCancelledByDS, ss.conn.connID())
		bal.done(p, time.Now(), false)
		st.attempts = append(st.attempts, attempt{addr: p.addr, reason: reasonCancelledByDS, duration: time.Since(start)})
		st.dsReason, st.dsCause = dsReason, ""
		switch {
		case cbe != nil && errors.Is(cbe.err, h1.ErrBadChunk):
			// A malformed chunked body is the client's error, not its
			// leaving: answered 400 (Nginx: "client sent invalid chunked
			// body"), and the connection ends.
			status, st.dsReason = http.StatusBadRequest, reasonDSBadRequest
			ss.writeOwnResponse(status, h1.Field{Name: st.fwd.requestIDName, Value: st.fwd.requestID})
		case cbe != nil && errors.Is(cbe.err, errBodyTooLarge):
			// Nginx: "client intended to send too large chunked body".
			status, st.dsReason = http.StatusRequestEntityTooLarge, reasonDSBadRequest
			ss.writeOwnResponse(status, h1.Field{Name: st.fwd.requestIDName, Value: st.fwd.requestID})
		}
		return &failure{reason: reasonCancelledByDS, status: status}
	}
	f := classifyAttempt(err, c)
	c.close(f.reason)
	f.race = f.reason == reasonReusedConnClosed
	f.sent = x.sentBytes
	if f.race {
		p.pool.learnIdleClose(c.wasIdle)
	}
	bal.done(p, time.Now(), f.serverFault && !f.race)
	st.attempts = append(st.attempts, attempt{addr: p.addr, reason: f.reason, duration: time.Since(start)})
	return &f
}

// passEarlyHints forwards a backend's 103 Early Hints to the client.
func (ss *session) passEarlyHints(resp *h1.Response) {
	ss.rw.writeInformational(resp.Status, resp.Reason, resp.Header)
}

// dialRecord is the close record of a connection that never opened: a
// refused or timed-out connect still gets its line.
func dialRecord(p *serverPool, reason string, err error, requestID string) *closeRecord {
	def := reasonTable[reason]
	rec := &closeRecord{
		Time:      time.Now(),
		ConnID:    "u" + strconv.FormatUint(p.hooks.nextID(), 10),
		Side:      "upstream",
		Reason:    reason,
		Initiator: def.initiator,
		Kind:      def.kind,
		Phase:     phaseName(phaseConnect),
		Error:     err.Error(),
		Errno:     errnoName(err),
		RequestID: requestID,
		Peer:      p.addr,
		Upstream:  p.upstream,
		Server:    p.addr,
	}
	return rec
}
