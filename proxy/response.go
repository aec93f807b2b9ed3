package proxy

import (
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// writeDeadliner is implemented by net/http's ResponseWriter; asserting it
// directly avoids allocating a ResponseController per request.
type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

// writeResponse streams a backend's response to the client. It reports
// whether the exchange ended cleanly, leaving the upstream connection fit for
// reuse; otherwise it has closed the connection with its reason.
func (s *Server) writeResponse(w http.ResponseWriter, r *http.Request, rt *runtime, st *requestState, resp *http.Response, c *upstreamConn) bool {
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		slices.Sort(names)
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	wd, _ := w.(writeDeadliner)
	armWrite(wd, rt.writeTimeout)
	st.status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)

	stream := resp.ContentLength < 0 || isEventStream(resp.Header)
	fl, _ := w.(http.Flusher)
	for {
		n, rerr := resp.Body.Read(st.buf)
		if n > 0 {
			armWrite(wd, rt.writeTimeout)
			if _, werr := w.Write(st.buf[:n]); werr != nil {
				c.close(reasonCancelledByDS)
				st.attempts[len(st.attempts)-1].reason = reasonCancelledByDS
				st.dsReason = writeFailReason(werr, rt.writeTimeout)
				return false
			}
			st.bytesOut += int64(n)
			// Flush when the backend has nothing more buffered, so data
			// reaches the client as the backend sends it (SSE, long
			// polls); a whole small response still goes out in one write.
			more := resp.ContentLength < 0 || st.bytesOut < resp.ContentLength
			if fl != nil && more && (stream || c.br.Buffered() == 0) {
				fl.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			reason := classifyBody(rerr, c)
			c.close(reason)
			st.attempts[len(st.attempts)-1].reason = reason
			if reason != reasonCancelledByDS {
				s.abortDownstream(w, st)
			}
			return false
		}
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return true
}

// abortDownstream ends the client connection after the backend broke off a
// response whose head was already sent: the only honest signal left is a
// truncated message, so the connection is closed without finishing it.
func (s *Server) abortDownstream(w http.ResponseWriter, st *requestState) {
	st.dsReason = "ds_upstream_abort"
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// writeFailReason names why a write to the client failed: tollgate's own
// send_timeout fired, or the client went away.
func writeFailReason(err error, timeout time.Duration) string {
	if timeout > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return "ds_write_timeout"
	}
	return "ds_client_abort_response"
}

func armWrite(wd writeDeadliner, timeout time.Duration) {
	if wd != nil && timeout > 0 {
		wd.SetWriteDeadline(time.Now().Add(timeout))
	}
}

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
}
