package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// expectContinueWait is how long tollgate waits for a backend's
// "100 Continue" before sending the body anyway (RFC 9110 §10.1.1 lets a
// client stop waiting; Go's Transport waits 1s too).
const expectContinueWait = time.Second

// exchange is one request/response round trip on an upstream connection.
type exchange struct {
	c          *upstreamConn
	r          *http.Request
	body       io.Reader // r's body under client_body_timeout
	fwd        *forwarding
	upgrade    string
	buf        []byte
	sentBytes  bool // some of the request reached the kernel: not replayable
	bodyUnsent bool // the backend answered before the body was sent
}

// roundTrip sends the request and reads the response head. The response body
// is left on c.br for the caller to stream.
func (x *exchange) roundTrip() (*http.Response, error) {
	c, r := x.c, x.r
	writeRequestHead(c.bw, r, x.fwd, x.upgrade)
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	if hasBody && expectsContinue(r) {
		return x.roundTripExpectContinue()
	}
	if hasBody {
		// The head goes out first so the backend can start on it while the
		// body streams.
		if err := x.flush(); err != nil {
			return nil, err
		}
		if err := writeBody(c.bw, r, x.body, x.buf); err != nil {
			return nil, err
		}
	}
	if err := x.flush(); err != nil {
		return nil, err
	}
	return x.readResponse()
}

// roundTripExpectContinue forwards "Expect: 100-continue" and reads the
// client's body only once the backend asked for it: a backend that answers
// 401 or 413 straight away spares the client sending a body nobody reads.
// net/http sends the client its own "100 Continue" on the first body read.
func (x *exchange) roundTripExpectContinue() (*http.Response, error) {
	c := x.c
	if err := x.flush(); err != nil {
		return nil, err
	}
	c.raw.SetReadDeadline(time.Now().Add(expectContinueWait))
	_, err := c.br.Peek(1)
	var ne net.Error
	switch {
	case err == nil:
		resp, err := x.readHead()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusContinue {
			x.bodyUnsent = true
			return resp, nil
		}
	case errors.As(err, &ne) && ne.Timeout() && !c.cancelled.Load():
		// The backend stays silent: send the body anyway.
		c.deadlineFired = false
	default:
		return nil, err
	}
	if err := writeBody(c.bw, x.r, x.body, x.buf); err != nil {
		return nil, err
	}
	if err := x.flush(); err != nil {
		return nil, err
	}
	return x.readResponse()
}

func (x *exchange) flush() error {
	if x.c.bw.Buffered() > 0 {
		x.sentBytes = true
	}
	return x.c.bw.Flush()
}

// readResponse reads response heads until a final one, skipping
// informational responses other than 101 Switching Protocols.
func (x *exchange) readResponse() (*http.Response, error) {
	for {
		resp, err := x.readHead()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
}

func (x *exchange) readHead() (*http.Response, error) {
	resp, err := http.ReadResponse(x.c.br, x.r)
	if err != nil {
		return nil, &responseError{err: err, started: x.c.exchangeIn > 0}
	}
	return resp, nil
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

// expectsContinue reports whether the client sent "Expect: 100-continue".
func expectsContinue(r *http.Request) bool {
	for _, v := range r.Header["Expect"] {
		if strings.EqualFold(strings.TrimSpace(v), "100-continue") {
			return true
		}
	}
	return false
}
