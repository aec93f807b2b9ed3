package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// expectContinueWait is how long tollgate waits for a backend's
// "100 Continue" before sending the body anyway (RFC 9110 §10.1.1 lets a
// client stop waiting; Go's Transport waits 1s too).
const expectContinueWait = time.Second

// maxResponseHead bounds a backend's response head (Nginx's
// proxy_buffer_size is 4k-8k; tollgate is more lenient).
const maxResponseHead = 64 << 10

// exchange is one request/response round trip on an upstream connection.
type exchange struct {
	c          *upstreamConn
	req        *h1.Request
	body       io.Reader  // the client's request body
	trailer    *h1.Header // its trailer fields, complete once body hit EOF
	fwd        *forwarding
	upgrade    string
	buf        []byte
	sentBytes  bool // some of the request reached the kernel: not replayable
	bodyUnsent bool // the backend answered before the body was sent
	// early receives 103 Early Hints heads to pass on; nil: dropped.
	early *session
}

// roundTrip sends the request and reads the final response head into
// x.c.resp. The response body is left on c.br for the caller to stream.
func (x *exchange) roundTrip() error {
	c, req := x.c, x.req
	writeRequestHead(c.bw, req, x.fwd, x.upgrade)
	if req.HasBody() && req.ExpectContinue {
		return x.roundTripExpectContinue()
	}
	if req.HasBody() {
		// The head goes out first so the backend can start on it while the
		// body streams.
		if err := x.flush(); err != nil {
			return err
		}
		c.phase = phaseRequestBody
		if err := writeBody(c.bw, req, x.body, x.trailer, x.buf); err != nil {
			return err
		}
	}
	if err := x.flush(); err != nil {
		return err
	}
	return x.readResponse()
}

// roundTripExpectContinue forwards "Expect: 100-continue" and reads the
// client's body only once the backend asked for it: a backend that answers
// 401 or 413 straight away spares the client sending a body nobody reads.
// The client gets its own "100 Continue" on the first body read.
func (x *exchange) roundTripExpectContinue() error {
	c := x.c
	if err := x.flush(); err != nil {
		return err
	}
	c.phase = phaseResponseHeaders
	waitUntil := time.Now().Add(expectContinueWait)
	for {
		c.readBy = waitUntil
		_, err := c.br.Peek(1)
		if isTimeout(err) && !c.cancelled.Load() {
			// The backend stays silent: send the body anyway.
			c.deadlineFired = false
			c.lastErr = nil
			break
		}
		if err != nil {
			return err
		}
		if err := x.readHead(); err != nil {
			return err
		}
		s := c.resp.Status
		if s == 100 {
			break
		}
		if s >= 200 || s == 101 {
			// A final answer before the body: the client never sends it.
			x.bodyUnsent = true
			return x.checkSwitch()
		}
		if s == 103 && x.early != nil {
			x.early.passEarlyHints(&c.resp)
		}
		// Other 1xx (102 Processing): keep waiting for 100 or the answer.
	}
	c.phase = phaseRequestBody
	if err := writeBody(c.bw, x.req, x.body, x.trailer, x.buf); err != nil {
		return err
	}
	if err := x.flush(); err != nil {
		return err
	}
	return x.readResponse()
}

func (x *exchange) flush() error {
	if x.c.bw.Buffered() > 0 {
		x.sentBytes = true
	}
	return x.c.bw.Flush()
}

// readResponse reads response heads until a final one (or 101 Switching
// Protocols), passing 103 Early Hints on and skipping other 1xx.
func (x *exchange) readResponse() error {
	x.c.phase = phaseResponseHeaders
	for {
		if err := x.readHead(); err != nil {
			return err
		}
		s := x.c.resp.Status
		if s >= 200 || s == 101 {
			return x.checkSwitch()
		}
		if s == 103 && x.early != nil {
			x.early.passEarlyHints(&x.c.resp)
		}
	}
}

// checkSwitch refuses a 101 nobody asked for: the connection now speaks
// something else and must reach neither the client nor the pool.
func (x *exchange) checkSwitch() error {
	if x.c.resp.Status == 101 && x.upgrade == "" {
		return &responseError{err: &h1.Error{Status: 502, Reason: "101 without an Upgrade request"}, started: true}
	}
	return nil
}

func (x *exchange) readHead() error {
	err := h1.ReadResponse(x.c.br, maxResponseHead, x.req.Method, &x.c.resp)
	if err != nil {
		return &responseError{err: err, started: x.c.exchangeIn > 0}
	}
	return nil
}

// responseError is a failure to read a response head. started says whether
// any of the response had arrived, which tells a keep-alive race (nothing
// arrived) from a broken response.
type responseError struct {
	err     error
	started bool
}

func (e *responseError) Error() string { return "read response: " + e.err.Error() }
func (e *responseError) Unwrap() error { return e.err }

// isProtocolError reports whether err is a malformed message rather than a
// connection failure.
func isProtocolError(err error) bool {
	var he *h1.Error
	return errors.As(err, &he) || errors.Is(err, h1.ErrBadChunk)
}
