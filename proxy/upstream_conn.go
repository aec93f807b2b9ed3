package proxy

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// errCancelled is returned by an upstream read or write after the downstream
// client went away and tollgate abandoned the exchange.
var errCancelled = errors.New("exchange cancelled: downstream went away")

// clientCheckEvery is how often a wait for a backend looks whether the
// client is still there. tollgate serves a connection on one goroutine, with
// no reader watching the client meanwhile; a peek every so often notices a
// client that left, so the backend is not kept busy for nobody.
const clientCheckEvery = 250 * time.Millisecond

// upstreamConn is one pooled HTTP/1.1 connection to a backend server. Its
// Read and Write arm per-operation deadlines, which is how Nginx's
// proxy_read_timeout and proxy_send_timeout behave: between two reads, not
// for the whole response.
//
// One exchange at a time uses a conn, on the session's goroutine; cancel is
// the one method safe to call from another.
type upstreamConn struct {
	raw  *net.TCPConn
	pool *serverPool
	id   uint64
	br   *bufio.Reader
	bw   *bufio.Writer
	resp h1.Response // the current response head, reused
	body h1.Body     // the current response body, reused

	readTimeout  time.Duration
	writeTimeout time.Duration
	// client, when set, is the downstream connection waiting on this
	// exchange: long reads look whether it left.
	client    *dsConn
	cancelled atomic.Bool
	// readBy, when set, is the deadline of the next read instead of
	// proxy_read_timeout (the wait for "100 Continue").
	readBy time.Time
	// deadlineFired is set when a read or write failed on a deadline tollgate
	// armed, as opposed to one set to interrupt the exchange.
	deadlineFired bool

	phase      int32
	lastErr    error
	created    time.Time
	idleSince  time.Time     // when it last went idle; zero while fresh
	wasIdle    time.Duration // idle time before this exchange (reused conns)
	requests   int           // exchanges started on it
	exchangeIn int64         // bytes read during the current exchange
	bytesIn    int64
	bytesOut   int64
	reused     bool   // this exchange runs on a connection used before
	requestID  string // of the current or last exchange
	closed     bool
}

func newUpstreamConn(raw *net.TCPConn, pool *serverPool, id uint64) *upstreamConn {
	c := &upstreamConn{raw: raw, pool: pool, id: id, created: time.Now()}
	c.br = bufio.NewReaderSize(c, 4096)
	c.bw = bufio.NewWriterSize(writerFunc(c.write), 4096)
	return c
}

func (c *upstreamConn) connID() string { return "u" + strconv.FormatUint(c.id, 10) }

// Read reads from the backend under proxy_read_timeout, looking at the
// client every clientCheckEvery while the backend is silent.
func (c *upstreamConn) Read(p []byte) (int, error) {
	var deadline time.Time // of proxy_read_timeout; zero: none
	switch {
	case !c.readBy.IsZero():
		deadline, c.readBy = c.readBy, time.Time{}
	case c.readTimeout > 0:
		deadline = time.Now().Add(c.readTimeout)
	}
	for {
		next := deadline
		if c.client != nil {
			if check := time.Now().Add(clientCheckEvery); next.IsZero() || check.Before(next) {
				next = check
			}
		}
		c.raw.SetReadDeadline(next)
		// Checked after arming the deadline: cancel sets the flag before
		// its past deadline, so one of the two always wins.
		if c.cancelled.Load() {
			return 0, errCancelled
		}
		n, err := c.raw.Read(p)
		c.exchangeIn += int64(n)
		c.bytesIn += int64(n)
		if err == nil || n > 0 {
			return n, err
		}
		if isTimeout(err) && !c.cancelled.Load() && c.client != nil &&
			(deadline.IsZero() || time.Now().Before(deadline)) {
			if c.client.peerGone() {
				c.cancelled.Store(true)
				return 0, errCancelled
			}
			continue
		}
		return 0, c.noteErr(err)
	}
}

func (c *upstreamConn) write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		c.raw.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	if c.cancelled.Load() {
		return 0, errCancelled
	}
	n, err := c.raw.Write(p)
	c.bytesOut += int64(n)
	if err != nil {
		err = c.noteErr(err)
	}
	return n, err
}

// noteErr tells a deadline tollgate armed apart from the past deadline
// cancel uses to interrupt the exchange.
func (c *upstreamConn) noteErr(err error) error {
	if c.cancelled.Load() {
		return errCancelled
	}
	c.lastErr = err
	// Only a deadline tollgate armed: ETIMEDOUT from the kernel also
	// reports Timeout(), and is the network's doing (us_network_timeout).
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.deadlineFired = true
	}
	return err
}

// cancel interrupts a blocked read or write; the exchange then fails with
// errCancelled. Safe to call from any goroutine.
func (c *upstreamConn) cancel() {
	c.cancelled.Store(true)
	c.raw.SetDeadline(aLongTimeAgo)
}

// aLongTimeAgo is a deadline in the past: setting it interrupts a blocked
// read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// startExchange prepares the conn for one request/response exchange.
func (c *upstreamConn) startExchange(readTimeout, writeTimeout time.Duration, requestID string, client *dsConn) {
	c.readTimeout = readTimeout
	c.writeTimeout = writeTimeout
	c.client = client
	c.deadlineFired = false
	c.exchangeIn = 0
	c.requests++
	c.requestID = requestID
	c.phase = phaseRequestHeaders
}

// close closes the connection once, for the reason given.
func (c *upstreamConn) close(reason string) { c.closeCaused(reason, "") }

// closeCaused closes the connection once, for reason, naming the
// downstream connection whose end caused it.
func (c *upstreamConn) closeCaused(reason, cause string) {
	if c.closed {
		return
	}
	c.closed = true
	rec := c.record(reason, cause)
	rec.TCP = readTCPInfo(c.raw)
	refineKind(rec)
	c.raw.Close()
	c.pool.open.Add(-1)
	c.pool.hooks.upstreamClosed(c, rec)
}

func (c *upstreamConn) record(reason, cause string) *closeRecord {
	now := time.Now()
	def := reasonTable[reason]
	rec := &closeRecord{
		Time:        now,
		ConnID:      c.connID(),
		Side:        "upstream",
		Reason:      reason,
		Initiator:   def.initiator,
		Kind:        def.kind,
		Phase:       phaseName(c.phase),
		Requests:    c.requests,
		AgeMs:       now.Sub(c.created).Milliseconds(),
		BytesIn:     c.bytesIn,
		BytesOut:    c.bytesOut,
		RequestID:   c.requestID,
		CauseConnID: cause,
		Peer:        c.pool.addr,
		Local:       c.raw.LocalAddr().String(),
		Upstream:    c.pool.upstream,
		Server:      c.pool.addr,
	}
	reused := c.reused
	rec.Reused = &reused
	if c.reused {
		ms := c.wasIdle.Milliseconds()
		rec.WasIdleMs = &ms
	}
	if c.phase == phaseIdle && !c.idleSince.IsZero() {
		rec.IdleMs = now.Sub(c.idleSince).Milliseconds()
	}
	if c.lastErr != nil {
		rec.Error = c.lastErr.Error()
		rec.Errno = errnoName(c.lastErr)
	}
	if reason == reasonKeepaliveLimit && !c.resp.KeepAlive && c.requests > 0 {
		rec.Initiator = byPeer // the backend said "Connection: close"
	}
	return rec
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ syscall.Conn = (*net.TCPConn)(nil)
