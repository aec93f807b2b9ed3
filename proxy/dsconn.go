package proxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Phases of a connection's life, as close records name them.
const (
	phaseIdle            int32 = iota // between requests
	phaseRequestHeaders               // a request head is arriving
	phaseRequestBody                  // the request body is being read
	phaseConnect                      // dialing a backend
	phaseResponseHeaders              // waiting for the response head
	phaseResponseBody                 // the response body is streaming
	phaseTunnel                       // an upgraded connection
	phaseQueue                        // held by limit_req's delay or the overload queue
)

var phaseNames = [...]string{"idle", "request_headers", "request_body", "connect",
	"response_headers", "response_body", "tunnel", "queue"}

func phaseName(p int32) string { return phaseNames[p] }

// dsConn is one downstream (edge ↔ tollgate) connection. It counts bytes,
// remembers the last read and write error (for the record's errno), follows
// the phase the session reports, and closes exactly once with the reason
// the session decided, emitting the close record.
//
// A session's goroutine drives it; a tunnel adds a second one, and
// Shutdown may close it from a third, so the shared fields are atomic or
// behind mu.
type dsConn struct {
	// nc carries the bytes: the TCP connection, or for an HTTP/2 stream
	// the in-memory HTTP/1.1 exchange (h2.go). tc is the TCP connection,
	// nil for a stream.
	nc      net.Conn
	tc      *net.TCPConn
	stream  *streamConn
	s       *Server
	id      uint64
	created time.Time

	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	phase    atomic.Int32
	idle     atomic.Bool // waiting between requests: Shutdown may close it

	mu        sync.Mutex
	lastErr   error
	requests  int
	requestID string
	idleSince time.Time
	closed    bool
	// edgeTimeout flags a client abort timed like the edge's own
	// proxy_read_timeout.
	edgeTimeout bool
	// protocol is "h2" for an HTTP/2 connection or stream, "" for HTTP/1.
	protocol string
	// streamReset says tollgate reset the stream (RST_STREAM): its
	// response could not be completed.
	streamReset bool
}

func (s *Server) newDSConn(tc *net.TCPConn) *dsConn {
	now := time.Now()
	return &dsConn{nc: tc, tc: tc, s: s, id: s.connIDs.Add(1), created: now, idleSince: now}
}

// newStreamDSConn is the dsConn of one HTTP/2 stream: a record of its own
// (when it ends badly) that names the connection it came on.
func (s *Server) newStreamDSConn(sc *streamConn) *dsConn {
	now := time.Now()
	return &dsConn{nc: sc, stream: sc, s: s, id: s.connIDs.Add(1), created: now, idleSince: now, protocol: "h2"}
}

// connID is the record's conn_id: "d" for downstream, "u" for upstream.
func (c *dsConn) connID() string { return "d" + strconv.FormatUint(c.id, 10) }

func (c *dsConn) Read(p []byte) (int, error) {
	n, err := c.nc.Read(p)
	c.bytesIn.Add(int64(n))
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

func (c *dsConn) Write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	c.bytesOut.Add(int64(n))
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

func (c *dsConn) noteErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

func (c *dsConn) LocalAddr() net.Addr                { return c.nc.LocalAddr() }
func (c *dsConn) RemoteAddr() net.Addr               { return c.nc.RemoteAddr() }
func (c *dsConn) SetDeadline(t time.Time) error      { return c.nc.SetDeadline(t) }
func (c *dsConn) SetReadDeadline(t time.Time) error  { return c.nc.SetReadDeadline(t) }
func (c *dsConn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// CloseWrite half-closes the connection (tunnels pass on an end of stream).
func (c *dsConn) CloseWrite() error {
	if c.tc == nil {
		return errors.New("tollgate: an HTTP/2 stream cannot half-close")
	}
	return c.tc.CloseWrite()
}

func (c *dsConn) setPhase(p int32) { c.phase.Store(p) }

// startRequest notes a request's id for the record.
func (c *dsConn) startRequest(requestID string) {
	c.mu.Lock()
	c.requests++
	c.requestID = requestID
	c.mu.Unlock()
}

// endRequest notes that the connection went idle.
func (c *dsConn) endRequest(now time.Time) {
	c.mu.Lock()
	c.idleSince = now
	c.mu.Unlock()
	c.phase.Store(phaseIdle)
}

// Close satisfies net.Conn. tollgate closes with closeWith and a reason; a
// Close from anywhere else is tagged ds_shutdown.
func (c *dsConn) Close() error {
	c.closeWith(reasonDSShutdown, "", "")
	return nil
}

// closeWith closes the connection for reason (initiator "" means the
// reason's default) and emits its record; cause is the conn_id on the other
// side that caused it. Only the first call counts.
func (c *dsConn) closeWith(reason, initiator, cause string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	rec := c.record(reason, initiator, cause)
	c.mu.Unlock()
	if c.tc != nil {
		rec.TCP = readTCPInfo(c.tc)
	}
	refineKind(rec)
	c.nc.Close()
	c.s.closes.add(rec)
}

// record builds the close record. Called with c.mu held.
func (c *dsConn) record(reason, initiator, cause string) *closeRecord {
	now := time.Now()
	def := reasonTable[reason]
	if initiator == "" {
		initiator = def.initiator
	}
	phase := c.phase.Load()
	rec := &closeRecord{
		Time:        now,
		ConnID:      c.connID(),
		Side:        "downstream",
		Reason:      reason,
		Initiator:   initiator,
		Kind:        def.kind,
		Phase:       phaseName(phase),
		Requests:    c.requests,
		AgeMs:       now.Sub(c.created).Milliseconds(),
		BytesIn:     c.bytesIn.Load(),
		BytesOut:    c.bytesOut.Load(),
		RequestID:   c.requestID,
		CauseConnID: cause,
		Peer:        c.nc.RemoteAddr().String(),
		Local:       c.nc.LocalAddr().String(),
		Protocol:    c.protocol,
	}
	if c.stream != nil {
		rec.StreamOf = c.stream.parent.connID()
		if c.streamReset && rec.Kind == kindFIN {
			// tollgate cut the stream with RST_STREAM, not an orderly end.
			rec.Kind = kindRST
		}
	}
	if phase == phaseIdle {
		rec.IdleMs = now.Sub(c.idleSince).Milliseconds()
	}
	if c.lastErr != nil {
		rec.Error = c.lastErr.Error()
		rec.Errno = errnoName(c.lastErr)
	}
	rec.EdgeTimeoutSuspected = c.edgeTimeout
	return rec
}

// peerGone reports whether the client has closed or reset the connection,
// without blocking: a non-blocking MSG_PEEK sees EOF or an error. Bytes
// waiting (a pipelined request) mean it is still there.
func (c *dsConn) peerGone() bool {
	if c.stream != nil {
		if !c.stream.gone() {
			return false
		}
		c.noteErr(errStreamReset) // the record's errno: a reset, as RST_STREAM is
		return true
	}
	return !socketOpen(c.tc)
}

// socketOpen peeks at a socket without blocking or consuming: false when the
// peer sent FIN or RST.
func socketOpen(sc syscall.Conn) bool {
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := true
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		case err != nil, n == 0:
			open = false
		}
		return true
	})
	return err == nil && open
}

// socketHasData reports whether unread bytes wait on the socket, without
// blocking or consuming them.
func socketHasData(sc syscall.Conn) bool {
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	has := false
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		has = err == nil && n > 0
		return true
	})
	return has
}

// refineKind sets fin or rst from what was actually seen: the errno, or the
// TCP state when the socket was read before closing.
func refineKind(rec *closeRecord) {
	if rec.Initiator != byPeer {
		return
	}
	switch {
	case rec.Errno == "ECONNRESET" || rec.Errno == "EPIPE":
		rec.Kind = kindRST
	case rec.Errno == "EOF" || (rec.TCP != nil && rec.TCP.State == "CLOSE_WAIT"):
		if rec.Kind == kindRST {
			rec.Kind = kindFIN
		}
	case rec.TCP != nil && rec.TCP.State == "CLOSE":
		// CLOSE is also where an orderly close ends (the peer's FIN read,
		// ours acknowledged, as after a tunnel): only without an EOF seen
		// does it mean an RST arrived.
		rec.Kind = kindRST
	}
}

// errnoName names the errno behind err (ECONNRESET, EPIPE, …), "EOF" for a
// clean end of stream, or "" when there is none.
func errnoName(err error) string {
	var en syscall.Errno
	switch {
	case errors.As(err, &en):
		if name, ok := errnoNames[en]; ok {
			return name
		}
		return "errno " + strconv.Itoa(int(en))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case isTimeout(err):
		return "deadline"
	}
	return ""
}

var errnoNames = map[syscall.Errno]string{
	syscall.ECONNRESET:   "ECONNRESET",
	syscall.EPIPE:        "EPIPE",
	syscall.ETIMEDOUT:    "ETIMEDOUT",
	syscall.ECONNREFUSED: "ECONNREFUSED",
	syscall.EHOSTUNREACH: "EHOSTUNREACH",
	syscall.ENETUNREACH:  "ENETUNREACH",
	syscall.ECONNABORTED: "ECONNABORTED",
}

// readFailure names a downstream read error by the phase it happened in.
func readFailure(err error, phase int32, firstRequest bool) string {
	reset := errors.Is(err, syscall.ECONNRESET)
	switch {
	case errors.Is(err, syscall.ETIMEDOUT):
		return reasonDSNetworkTimeout
	case isTimeout(err):
		switch {
		case phase == phaseIdle && !firstRequest:
			return reasonDSIdleTimeout
		case phase == phaseRequestBody:
			return reasonDSBodyTimeout
		default:
			return reasonDSHeaderTimeout
		}
	case phase == phaseIdle && reset:
		return reasonDSIdleResetByPeer
	case phase == phaseIdle:
		return reasonDSIdleClosedByPeer
	case phase == phaseRequestBody:
		return reasonDSAbortRequestBody
	default:
		return reasonDSAbortBeforeResp
	}
}

// writeFailure names a downstream write error.
func writeFailure(err error) string {
	switch {
	case errors.Is(err, syscall.ETIMEDOUT):
		return reasonDSNetworkTimeout
	case isTimeout(err):
		return reasonDSWriteTimeout
	default:
		return reasonDSAbortResponse
	}
}

// edgeTimeoutSuspected reports whether a client abort came when the edge's
// proxy_read_timeout would have fired (within a second either way): then
// Nginx logged its own "upstream timed out" and answered 504.
func edgeTimeoutSuspected(elapsed, edge time.Duration) bool {
	return edge > 0 && elapsed > edge-time.Second && elapsed < edge+time.Second
}

// flagEdgeTimeout marks the coming close record edge_timeout_suspected.
func (c *dsConn) flagEdgeTimeout() {
	c.mu.Lock()
	c.edgeTimeout = true
	c.mu.Unlock()
}
