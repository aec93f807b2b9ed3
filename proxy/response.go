package proxy

import (
	"io"
	"strings"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// writeResponse streams the backend's response (head in c.resp, body on
// c.br) to the client. It reports whether the exchange ended cleanly,
// leaving the upstream connection fit for reuse; otherwise it has closed the
// connection with its reason and set the downstream one's.
func (ss *session) writeResponse(st *requestState, c *upstreamConn) bool {
	resp := &c.resp
	st.status = resp.Status
	st.extra[0] = h1.Field{Name: st.fwd.requestIDName, Value: st.fwd.requestID}
	ss.rw.writeHead(&headSpec{
		status:        resp.Status,
		reason:        resp.Reason,
		fields:        resp.Header,
		filter:        true,
		skipName:      st.fwd.requestIDName,
		contentLength: resp.ContentLength,
		noBody:        resp.NoBody,
		trailer:       resp.Header.Get("Trailer"),
		extra:         st.extra[:],
	})
	if resp.NoBody {
		c.body.Reset(c.br, 0, false)
	} else {
		c.body.Reset(c.br, resp.ContentLength, resp.Chunked)
	}
	c.phase = phaseResponseBody
	ss.conn.setPhase(phaseResponseBody)
	stream := resp.ContentLength < 0 || isEventStream(resp.Header)
	for {
		n, rerr := c.body.Read(st.buf)
		if n > 0 {
			if _, werr := ss.rw.Write(st.buf[:n]); werr != nil {
				return ss.clientLeft(st, c, werr)
			}
			// Flush when the backend has nothing more buffered, so data
			// reaches the client as the backend sends it (SSE, long
			// polls); a whole small response still goes out in one write.
			if !c.body.Done() && (stream || c.br.Buffered() == 0) {
				if werr := ss.rw.flush(); werr != nil {
					return ss.clientLeft(st, c, werr)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			reason := reasonClosedDuringBody
			if isProtocolError(rerr) {
				reason = reasonBadResponse
			} else {
				reason = classifyBody(rerr, c)
			}
			st.attempts[len(st.attempts)-1].reason = reason
			c.close(reason)
			ss.rw.flush()
			st.dsReason, st.dsCause = reasonDSUpstreamAbort, c.connID()
			return false
		}
	}
	if err := ss.rw.endBody(c.body.Trailer); err != nil {
		return ss.clientLeft(st, c, err)
	}
	if !resp.NoBody && resp.ContentLength < 0 && !resp.Chunked {
		// The backend's close ended the body.
		c.close(reasonKeepaliveLimit)
		return false
	}
	return true
}

// clientLeft handles a failed write to the client mid-response: the
// upstream connection is abandoned, and its record names the client's close
// as the cause.
func (ss *session) clientLeft(st *requestState, c *upstreamConn, werr error) bool {
	st.dsReason = writeFailure(werr)
	st.attempts[len(st.attempts)-1].reason = reasonCancelledByDS
	c.closeCaused(reasonCancelledByDS, ss.conn.connID())
	return false
}

func isEventStream(h h1.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
}
