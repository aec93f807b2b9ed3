package proxy

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// try runs one attempt on server p. It returns nil once the client has its
// answer, else the failure and whether another attempt is allowed.
func (ss *session) try(rt *runtime, st *requestState, p *peer, now time.Time) (*failure, retryKind) {
	bal := st.route.upstream.bal
	ss.conn.setPhase(phaseResponseHeaders)
	c, err := p.pool.get(context.Background(), now, rt.connectTimeout)
	if err != nil {
		f := classifyAttempt(err, nil)
		bal.done(p, time.Now(), f.serverFault)
		st.attempts = append(st.attempts, attempt{addr: p.addr, reason: f.reason, duration: time.Since(now)})
		ss.s.closes.add(dialRecord(p.pool, f.reason, err, st.fwd.requestID))
		// Nothing was sent: any request may go to the next server.
		return &f, retryNext
	}
	c.startExchange(rt.readTimeout, rt.sendTimeout, st.fwd.requestID, ss.conn)
	x := &st.exchange
	*x = exchange{c: c, req: &ss.req, body: reqBody{ss}, trailer: &ss.body.Trailer,
		fwd: &st.fwd, upgrade: ss.req.Upgrade, buf: st.buf, early: ss}
	if err := x.roundTrip(); err != nil {
		return ss.attemptFailed(st, p, c, x, err, now)
	}
	resp := &c.resp
	st.attempts = append(st.attempts, attempt{addr: p.addr, status: resp.Status, duration: time.Since(now)})
	if resp.Status == 101 && x.upgrade != "" {
		bal.done(p, time.Now(), false)
		ss.tunnel(st, c)
		return nil, retryNone
	}
	clean := ss.writeResponse(st, c)
	bal.done(p, time.Now(), false)
	switch {
	case !clean:
	case !resp.KeepAlive || x.bodyUnsent:
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
	return nil, retryNone
}

// attemptFailed closes the upstream connection of a failed attempt with its
// reason, and decides whether the request may be tried again.
func (ss *session) attemptFailed(st *requestState, p *peer, c *upstreamConn, x *exchange, err error, start time.Time) (*failure, retryKind) {
	bal := st.route.upstream.bal
	var cbe *clientBodyError
	if errors.As(err, &cbe) || errors.Is(err, errCancelled) {
		// The client went away (or its body broke off): the backend did
		// nothing wrong, and the upstream close says who caused it.
		dsReason := reasonDSAbortBeforeResp
		if cbe != nil {
			dsReason = readFailure(cbe.err, phaseRequestBody, false)
		}
		c.closeCaused(reasonCancelledByDS, ss.conn.connID())
		bal.done(p, time.Now(), false)
		st.attempts = append(st.attempts, attempt{addr: p.addr, reason: reasonCancelledByDS, duration: time.Since(start)})
		st.dsReason, st.dsCause = dsReason, ""
		return &failure{reason: reasonCancelledByDS, status: statusClientClosed}, retryNone
	}
	f := classifyAttempt(err, c)
	c.close(f.reason)
	race := f.reason == reasonReusedConnClosed
	if race {
		p.pool.learnIdleClose(c.wasIdle)
	}
	bal.done(p, time.Now(), f.serverFault && !race)
	st.attempts = append(st.attempts, attempt{addr: p.addr, reason: f.reason, duration: time.Since(start)})
	return &f, retryAfter(ss.req.Method, ss.req.HasBody(), x.sentBytes, race, st)
}

// retryAfter decides whether a request that failed before any response byte
// reached the client may be tried again, under Nginx's default
// proxy_next_upstream "error timeout": only a request whose body can be sent
// again (none) goes to the next server, and POST, LOCK and PATCH only if
// none of their bytes were sent.
func retryAfter(method string, hasBody, sent, race bool, st *requestState) retryKind {
	if hasBody || (sent && nonIdempotent(method)) {
		return retryNone
	}
	if race && !st.freeRetry {
		st.freeRetry = true
		return retryFree
	}
	return retryNext
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
