package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// session serves the requests of one downstream connection, one at a time,
// on the connection's own goroutine. It owns the HTTP/1.1 codec of the
// connection, so it knows at every moment why the connection would end.
type session struct {
	s        *Server
	conn     *dsConn
	br       *bufio.Reader
	bw       *bufio.Writer
	req      h1.Request
	body     h1.Body
	rw       respWriter
	peer     netip.Addr
	peerText string
	proto    string // "http" (or "https" on a TLS listener)
	served   int

	redirectHTTPS bool // a plain listener that sends clients to https

	// wire is the client connection the codec reads and writes: the
	// dsConn itself, or TLS over it on an HTTPS listener.
	wire net.Conn

	sentContinue bool
	bodyErr      error // the client's request body broke off

	lim *admission // limit_req key buffers (admit.go); nil until needed

	// proxyAddr is the client address a trusted balancer sent in its
	// PROXY protocol header; invalid when there was none.
	proxyAddr netip.Addr

	// The request body as read so far, kept to send again on a retry
	// while it fits the route's retry_body_limit.
	consumed  int64 // body bytes read from the client
	kept      []byte
	keepLimit int64
	keepLost  bool // the body outgrew the limit: it cannot be replayed
}

// isStream reports whether the session serves one HTTP/2 stream (h2.go)
// rather than a connection.
func (ss *session) isStream() bool { return ss.conn.stream != nil }

// maxDrain bounds how much of an unread request body tollgate reads to keep
// a connection after answering without it (a refused upload).
const maxDrain = 256 << 10

// serveConn runs a session until the connection ends, and gives the close
// its reason.
func (s *Server) serveConn(c *dsConn, lo listenerOpts) {
	ss := &session{s: s, conn: c, proto: "http", wire: c, redirectHTTPS: lo.redirectHTTPS}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		ss.peer = ap.Addr().Unmap()
		ss.peerText = ss.peer.String()
	}
	open := s.track(c, true)
	defer s.track(c, false)
	if lo.pp != nil && lo.pp.Trusted(ss.peer) && !ss.readProxyProtocol(bufio.NewReaderSize(c, 1024)) {
		return
	}
	// Behind a load balancer that speaks PROXY protocol, the client is
	// the address it names, not the balancer.
	client := ss.peer
	if ss.proxyAddr.IsValid() {
		client = ss.proxyAddr
	}
	fromPeer := s.countClient(client, true)
	defer s.countClient(client, false)
	if lo.tls != nil && !ss.handshake(lo.tls) {
		return
	}
	ss.br = bufio.NewReaderSize(ss.wire, 4096)
	ss.bw = bufio.NewWriterSize(ss.wire, 4096)
	h2 := ss.negotiatedH2() || lo.h2c && ss.sentH2Preface()
	rt := s.rt.Load()
	over := ""
	switch {
	case rt.maxConns > 0 && open > rt.maxConns:
		over = "max_connections"
	case rt.maxConnsPerIP > 0 && fromPeer > rt.maxConnsPerIP:
		over = "max_connections_per_ip"
	}
	switch {
	case over != "" && h2:
		// No HTTP/1.1 answer fits an HTTP/2 client: it gets the close.
		s.logBadRequest(ss, 503, over+" reached")
		c.protocol = "h2"
		c.closeWith(reasonDSConnLimit, "", "")
		return
	case over != "":
		ss.refuseOverCap(over)
		return
	case h2:
		ss.serveH2()
		return
	}
	for {
		reason, initiator, cause := ss.serveOne()
		if reason != "" {
			if reason == reasonDSBadRequest || reason == reasonDSKeepaliveLimit {
				ss.linger()
			}
			c.closeWith(reason, initiator, cause)
			return
		}
	}
}

// serveOne waits for, reads and answers one request. It returns the reason
// to close the connection, or "" to wait for the next request.
func (ss *session) serveOne() (reason, initiator, cause string) {
	rt := ss.s.rt.Load()
	c := ss.conn
	if err := ss.waitRequest(rt); err != nil {
		if ss.s.shuttingDown.Load() && !ss.isStream() {
			return reasonDSShutdown, "", ""
		}
		return readFailure(err, phaseIdle, ss.served == 0), "", ""
	}
	// The request uses the config current when it arrived, not the one
	// current when the connection went idle.
	rt = ss.s.rt.Load()
	if !c.idle.CompareAndSwap(true, false) {
		// Shutdown claimed the idle connection first and is closing it.
		return reasonDSShutdown, "", ""
	}
	c.setPhase(phaseRequestHeaders)
	if d := rt.headerTimeout; d > 0 {
		c.SetReadDeadline(time.Now().Add(d))
	}
	err := h1.ReadRequest(ss.br, rt.headerLimit, &ss.req)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		var he *h1.Error
		if errors.As(err, &he) {
			ss.answerBadRequest(rt, he)
			return reasonDSBadRequest, "", ""
		}
		return readFailure(err, phaseRequestHeaders, ss.served == 0), "", ""
	}
	ss.served++
	ss.sentContinue, ss.bodyErr = false, nil
	ss.body.Reset(ss.br, ss.req.ContentLength, ss.req.Chunked)

	keep, why, by, cause := ss.handle(rt)
	if why != "" && why != reasonDSKeepaliveLimit {
		// A failure keeps the phase it happened in for the close record
		// (request_body, response_body, tunnel, …): only a request that
		// ended cleanly leaves the connection idle.
		return why, by, cause
	}
	c.endRequest(time.Now())
	switch {
	case why != "":
		return why, by, cause
	case !keep:
		return reasonDSKeepaliveLimit, "", ""
	case ss.isStream():
		return "", "", "" // a stream serves one request
	case ss.s.shuttingDown.Load():
		return reasonDSShutdown, "", ""
	}
	if !ss.drainBody() {
		return reasonDSKeepaliveLimit, "", ""
	}
	c.idle.Store(true)
	return "", "", ""
}

// waitRequest waits for the first byte of the next request under
// keepalive_timeout (client_header_timeout for a connection's first).
func (ss *session) waitRequest(rt *runtime) error {
	c := ss.conn
	c.idle.Store(true)
	c.setPhase(phaseIdle)
	wait := rt.keepaliveTimeout
	if ss.served == 0 {
		wait = rt.headerTimeout
	}
	if wait > 0 {
		c.SetReadDeadline(time.Now().Add(wait))
	}
	if ss.s.shuttingDown.Load() && !ss.isStream() {
		// A stream that arrived before GOAWAY is still served.
		return net.ErrClosed
	}
	_, err := ss.br.Peek(1)
	return err
}

// readProxyProtocol reads the PROXY protocol header a trusted balancer
// opens the connection with, under client_header_timeout. A broken or
// missing header closes the connection (ds_bad_request), as Nginx does.
func (ss *session) readProxyProtocol(br *bufio.Reader) bool {
	if d := ss.s.rt.Load().headerTimeout; d > 0 {
		ss.conn.SetReadDeadline(time.Now().Add(d))
	}
	addr, err := readProxyHeader(br)
	if err == nil && br.Buffered() > 0 {
		// The client's first bytes came with the header: keep them.
		ss.wire = &prefixConn{dsConn: ss.conn, r: io.MultiReader(bytes.NewReader(drainBuffered(br)), ss.conn)}
	}
	ss.conn.SetReadDeadline(time.Time{})
	if err != nil {
		ss.conn.closeWith(reasonDSBadRequest, "", "")
		return false
	}
	ss.proxyAddr = addr
	return true
}

// lingerTime bounds how long a closing connection reads off what the client
// still sends (Nginx's lingering_timeout is 5s).
const lingerTime = 2 * time.Second

// linger half-closes and reads off what the client still sends before the
// connection closes: closing a socket with unread input makes the kernel
// send RST, which can destroy the answer just written (a 400, a 413, the
// last keep-alive response) before the client reads it. Nginx's
// lingering_close does the same.
func (ss *session) linger() {
	if ss.conn.tc == nil || ss.br.Buffered() == 0 && !socketHasData(ss.conn.tc) {
		return
	}
	ss.conn.CloseWrite()
	ss.conn.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, io.LimitReader(ss.br, maxDrain))
}

// refuseOverCap answers a connection over max_connections: its first
// request gets 503 with Connection: close, so the client sees an answer
// rather than a reset (the request head is read first: closing with unread
// input would make the kernel send RST).
func (ss *session) refuseOverCap(limit string) {
	rt := ss.s.rt.Load()
	if d := rt.headerTimeout; d > 0 {
		ss.conn.SetReadDeadline(time.Now().Add(d))
	}
	if err := h1.ReadRequest(ss.br, rt.headerLimit, &ss.req); err == nil {
		ss.rw.reset(ss.bw, ss.conn, rt.writeTimeout, ss.req.Method == "HEAD", ss.req.Minor, false)
		ss.writeOwnResponse(503,
			h1.Field{Name: "Retry-After", Value: "1"},
			h1.Field{Name: "Proxy-Status", Value: `tollgate; error=connection_limit_reached; details="` + limit + `"`})
		ss.linger()
	}
	ss.s.logBadRequest(ss, 503, limit+" reached")
	ss.conn.closeWith(reasonDSConnLimit, "", "")
}

// answerBadRequest answers a request tollgate cannot parse with its status
// and closes, as Nginx does; the connection cannot be trusted for another.
func (ss *session) answerBadRequest(rt *runtime, he *h1.Error) {
	status := he.Status
	ss.rw.reset(ss.bw, ss.conn, rt.writeTimeout, false, 1, false)
	ss.writeOwnResponse(status)
	ss.s.logBadRequest(ss, status, he.Reason)
}

// drainBody reads what is left of a request body the answer did not need,
// so the connection can serve the next request; a large or stalled rest
// ends the connection instead.
func (ss *session) drainBody() bool {
	if !ss.req.HasBody() || ss.body.Done() {
		return true
	}
	if ss.bodyErr != nil || ss.req.ExpectContinue && !ss.sentContinue {
		// The client never sent the body (it waited for 100 Continue), or
		// it broke off: the connection is out of step.
		return false
	}
	ss.conn.SetReadDeadline(time.Now().Add(time.Second))
	defer ss.conn.SetReadDeadline(time.Time{})
	n, err := io.Copy(io.Discard, io.LimitReader(&ss.body, maxDrain))
	return err == nil && n < maxDrain && ss.body.Done()
}

// errBodyTooLarge cuts off a request body longer than client_max_body_size.
var errBodyTooLarge = errors.New("request body larger than client_max_body_size")

// reqBody is the request body as the pipeline reads it: client_body_timeout
// armed before each read, and "100 Continue" sent before the first read to
// a client that waits for it.
type reqBody struct{ ss *session }

func (b reqBody) Read(p []byte) (int, error) {
	ss := b.ss
	rt := ss.s.rt.Load()
	if ss.req.ExpectContinue && !ss.sentContinue && !ss.rw.wroteHead {
		ss.sentContinue = true
		ss.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := ss.rw.flush(); err != nil {
			return 0, err
		}
	}
	ss.conn.setPhase(phaseRequestBody)
	if rt.bodyTimeout > 0 {
		ss.conn.SetReadDeadline(time.Now().Add(rt.bodyTimeout))
	}
	n, err := ss.body.Read(p)
	ss.keep(p[:n])
	if rt.bodyLimit > 0 && ss.consumed > rt.bodyLimit {
		// A chunked body grew past client_max_body_size (a declared
		// length was refused before anything was read).
		err = errBodyTooLarge
	}
	if err != nil {
		ss.conn.SetReadDeadline(time.Time{})
		if err != io.EOF {
			ss.bodyErr = err
		}
	}
	return n, err
}

// startKeeping prepares to keep up to limit bytes of the request body for a
// replay.
func (ss *session) startKeeping(limit int64) {
	ss.consumed, ss.kept, ss.keepLimit, ss.keepLost = 0, ss.kept[:0], limit, false
	if cap(ss.kept) > 1<<20 {
		ss.kept = nil // do not hold a large buffer on an idle connection
	}
}

func (ss *session) keep(p []byte) {
	ss.consumed += int64(len(p))
	if ss.keepLost || len(p) == 0 {
		return
	}
	if int64(len(ss.kept)+len(p)) > ss.keepLimit {
		ss.keepLost, ss.kept = true, ss.kept[:0]
		return
	}
	ss.kept = append(ss.kept, p...)
}

// replayable reports whether the request can be sent again: nothing of its
// body was read yet, or all that was read is kept.
func (ss *session) replayable() bool {
	return ss.consumed == 0 || !ss.keepLost
}

// bodyForAttempt is the request body for the next attempt: the kept bytes
// first, then the rest from the client.
func (ss *session) bodyForAttempt() io.Reader {
	if ss.consumed == 0 {
		return reqBody{ss}
	}
	return &replayReader{kept: ss.kept, rest: reqBody{ss}}
}

// replayReader reads the kept body bytes, then the rest from the client
// (which keeps keeping them).
type replayReader struct {
	kept []byte
	rest reqBody
}

func (r *replayReader) Read(p []byte) (int, error) {
	if len(r.kept) > 0 {
		n := copy(p, r.kept)
		r.kept = r.kept[n:]
		return n, nil
	}
	return r.rest.Read(p)
}
