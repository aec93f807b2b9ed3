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
)

var phaseNames = [...]string{"idle", "request_headers", "request_body", "connect",
	"response_headers", "response_body", "tunnel"}

func phaseName(p int32) string { return phaseNames[p] }

// trackedListener wraps every accepted connection in a dsConn, so that each
// downstream connection ends with one close record.
type trackedListener struct {
	net.Listener
	s *Server
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	return l.s.newDSConn(tc), nil
}

// dsConn is one downstream (edge ↔ tollgate) connection. It sees every read
// and write error, counts bytes, follows the phase the handler reports, and
// on Close classifies why the connection ended and emits the record.
//
// net/http reads from a second goroutine while a handler writes, so the
// counters are atomic and the error notes sit behind a mutex touched only
// when something fails.
type dsConn struct {
	tc      *net.TCPConn // not embedded: its ReadFrom would bypass Write
	s       *Server
	id      uint64
	created time.Time

	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	phase    atomic.Int32
	// wroteEarly is set when bytes are written while a request head is
	// still arriving: only net/http's own 4xx/5xx answers do that.
	wroteEarly atomic.Bool

	mu          sync.Mutex
	readErr     error
	readPhase   int32
	writeErr    error
	writePhase  int32
	readArmed   bool   // the read deadline is a real timeout, not an interrupt
	mark        string // a reason the handler decided
	markBy      string // initiator for the mark, when not the default
	cause       string // cause_conn_id for the mark
	requests    int
	requestID   string
	idleSince   time.Time
	reqStart    time.Time
	closeAsked  bool // the client sent "Connection: close"
	closeOnce   sync.Once
	tunnelFirst string // which side of a tunnel ended first
}

func (s *Server) newDSConn(tc *net.TCPConn) *dsConn {
	now := time.Now()
	return &dsConn{tc: tc, s: s, id: s.connIDs.Add(1), created: now, idleSince: now}
}

func (c *dsConn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *dsConn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *dsConn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// CloseWrite half-closes the connection (tunnels pass on an end of stream).
func (c *dsConn) CloseWrite() error { return c.tc.CloseWrite() }

// SyscallConn gives the raw socket, for TCP_INFO.
func (c *dsConn) SyscallConn() (syscall.RawConn, error) { return c.tc.SyscallConn() }

// connID is the record's conn_id: "d" for downstream, "u" for upstream.
func (c *dsConn) connID() string { return "d" + strconv.FormatUint(c.id, 10) }

func (c *dsConn) Read(p []byte) (int, error) {
	n, err := c.tc.Read(p)
	if n > 0 {
		c.bytesIn.Add(int64(n))
		c.phase.CompareAndSwap(phaseIdle, phaseRequestHeaders)
	}
	if err != nil {
		c.noteRead(err)
	}
	return n, err
}

func (c *dsConn) Write(p []byte) (int, error) {
	if c.phase.Load() == phaseRequestHeaders {
		c.wroteEarly.Store(true)
	}
	n, err := c.tc.Write(p)
	c.bytesOut.Add(int64(n))
	if err != nil {
		c.mu.Lock()
		c.writeErr, c.writePhase = err, c.phase.Load()
		c.mu.Unlock()
	}
	return n, err
}

func (c *dsConn) noteRead(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// net/http interrupts its background read with a past deadline when a
	// handler finishes; that is not how the connection ends.
	if isTimeout(err) && !c.readArmed {
		return
	}
	c.readErr, c.readPhase = err, c.phase.Load()
}

// SetReadDeadline notes whether a deadline is a timeout (in the future,
// tollgate's configured limits) or an interrupt (in the past, net/http's
// own way to stop a read): only the first kind names a close.
func (c *dsConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readArmed = !t.IsZero() && t.After(interruptBefore)
	c.mu.Unlock()
	return c.tc.SetReadDeadline(t)
}

func (c *dsConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.readArmed = !t.IsZero() && t.After(interruptBefore)
	c.mu.Unlock()
	return c.tc.SetDeadline(t)
}

// interruptBefore separates interrupts (deadlines set in the past, such as
// net/http's aLongTimeAgo) from timeouts without reading the clock.
var interruptBefore = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

// setPhase records where the current request is.
func (c *dsConn) setPhase(p int32) { c.phase.Store(p) }

// startRequest is called by the handler for each request on the connection.
func (c *dsConn) startRequest(requestID string, now time.Time, closeAsked bool) {
	c.mu.Lock()
	c.requests++
	c.requestID = requestID
	c.reqStart = now
	c.closeAsked = closeAsked
	c.mu.Unlock()
}

// endRequest is called when the handler returns.
func (c *dsConn) endRequest(now time.Time) {
	c.mu.Lock()
	c.idleSince = now
	c.mu.Unlock()
	c.phase.Store(phaseIdle)
}

// markClose records the reason a request decided for the connection's end
// (an upstream abort, a limit); cause is the conn_id on the other side.
func (c *dsConn) markClose(reason, initiator, cause string) {
	c.mu.Lock()
	if c.mark == "" {
		c.mark, c.markBy, c.cause = reason, initiator, cause
	}
	c.mu.Unlock()
}

// Close classifies the end of the connection, reads TCP_INFO while the
// socket still exists, closes it and emits the record. Only the first call
// does anything.
func (c *dsConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		rec := c.record()
		rec.TCP = readTCPInfo(c.tc)
		refineKind(rec)
		err = c.tc.Close()
		c.s.closes.add(rec)
	})
	return err
}

func (c *dsConn) record() *closeRecord {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	reason, initiator, phase, cause := c.classify()
	rec := &closeRecord{
		Time:        now,
		ConnID:      c.connID(),
		Side:        "downstream",
		Reason:      reason,
		Initiator:   initiator,
		Kind:        reasonTable[reason].kind,
		Phase:       phaseName(phase),
		Requests:    c.requests,
		AgeMs:       now.Sub(c.created).Milliseconds(),
		IdleMs:      now.Sub(c.idleSince).Milliseconds(),
		BytesIn:     c.bytesIn.Load(),
		BytesOut:    c.bytesOut.Load(),
		RequestID:   c.requestID,
		CauseConnID: cause,
		Peer:        c.RemoteAddr().String(),
		Local:       c.LocalAddr().String(),
	}
	if phase != phaseIdle && phase != phaseTunnel {
		rec.IdleMs = 0
	}
	if e := c.lastErr(); e != nil {
		rec.Error = e.Error()
		rec.Errno = errnoName(e)
	}
	if reason == reasonDSAbortBeforeResp && edgeTimeoutSuspected(now.Sub(c.reqStart)) {
		rec.EdgeTimeoutSuspected = true
	}
	return rec
}

func (c *dsConn) lastErr() error {
	if c.writeErr != nil {
		return c.writeErr
	}
	return c.readErr
}

// classify maps what the connection saw to one reason. Called with c.mu held.
// The order matters: a decision the handler made explains more than the
// error it caused; a write error explains more than the read that follows.
func (c *dsConn) classify() (reason, initiator string, phase int32, cause string) {
	phase = c.phase.Load()
	defaultBy := func(r string) string { return reasonTable[r].initiator }
	switch {
	case c.mark != "":
		by := c.markBy
		if by == "" {
			by = defaultBy(c.mark)
		}
		return c.mark, by, phase, c.cause
	case c.s.shuttingDown.Load():
		return reasonDSShutdown, byProxy, phase, ""
	case c.wroteEarly.Load():
		return reasonDSBadRequest, byProxy, phaseRequestHeaders, ""
	case c.writeErr != nil:
		r := reasonDSAbortResponse
		switch {
		case errors.Is(c.writeErr, syscall.ETIMEDOUT):
			r = reasonDSNetworkTimeout
		case isTimeout(c.writeErr):
			r = reasonDSWriteTimeout
		}
		return r, defaultBy(r), c.writePhase, ""
	case c.readErr != nil:
		r := readReason(c.readErr, c.readPhase)
		return r, defaultBy(r), c.readPhase, ""
	case c.closeAsked:
		// The client asked with "Connection: close": a keep-alive end the
		// peer chose, as us_keepalive_limit is for a backend.
		return reasonDSKeepaliveLimit, byPeer, phaseIdle, ""
	default:
		return reasonDSKeepaliveLimit, byProxy, phase, ""
	}
}

// readReason names a downstream read failure by the phase it happened in.
func readReason(err error, phase int32) string {
	reset := errors.Is(err, syscall.ECONNRESET)
	switch {
	case errors.Is(err, syscall.ETIMEDOUT):
		return reasonDSNetworkTimeout
	case isTimeout(err):
		switch phase {
		case phaseIdle:
			return reasonDSIdleTimeout
		case phaseRequestBody:
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
	case phase == phaseResponseBody:
		return reasonDSAbortResponse
	default:
		return reasonDSAbortBeforeResp
	}
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
		return "ETIMEDOUT_DEADLINE"
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

// edgeTimeoutSuspected reports whether a client abort came when Nginx's
// default proxy_read_timeout (60s) would have fired: then Nginx logged its
// own "upstream timed out" and answered 504.
func edgeTimeoutSuspected(elapsed time.Duration) bool {
	const edge = 60 * time.Second
	return elapsed > edge-time.Second && elapsed < edge+time.Second
}
