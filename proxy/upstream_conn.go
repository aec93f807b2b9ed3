package proxy

import (
	"bufio"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// errCancelled is returned by an upstream read or write after the downstream
// request went away and tollgate abandoned the exchange.
var errCancelled = errors.New("exchange cancelled: downstream went away")

// aLongTimeAgo is a deadline in the past: setting it interrupts a blocked
// read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// upstreamConn is one pooled HTTP/1.1 connection to a backend server. Its
// Read and Write arm per-operation deadlines, which is how Nginx's
// proxy_read_timeout and proxy_send_timeout behave: between two reads, not
// for the whole response.
//
// One exchange at a time uses a conn; only cancel may be called from another
// goroutine.
type upstreamConn struct {
	raw  net.Conn
	pool *serverPool
	br   *bufio.Reader
	bw   *bufio.Writer

	readTimeout  time.Duration
	writeTimeout time.Duration
	cancelled    atomic.Bool
	// deadlineFired is set when a read or write failed on a deadline tollgate
	// armed, as opposed to one set to interrupt the exchange.
	deadlineFired bool

	created    time.Time
	idleSince  time.Time     // when it last went idle; zero while fresh
	wasIdle    time.Duration // idle time before this exchange (reused conns)
	requests   int           // exchanges started on it
	exchangeIn int64         // bytes read during the current exchange
	reused     bool          // this exchange runs on a connection used before
	closed     bool
}

func newUpstreamConn(raw net.Conn, pool *serverPool) *upstreamConn {
	c := &upstreamConn{raw: raw, pool: pool, created: time.Now()}
	c.br = bufio.NewReaderSize(c, 4096)
	c.bw = bufio.NewWriterSize(writerFunc(c.write), 4096)
	return c
}

// Read reads from the backend under proxy_read_timeout.
func (c *upstreamConn) Read(p []byte) (int, error) {
	if c.readTimeout > 0 {
		c.raw.SetReadDeadline(time.Now().Add(c.readTimeout))
	}
	// Checked after arming the deadline: cancel sets the flag before its
	// past deadline, so one of the two always wins.
	if c.cancelled.Load() {
		return 0, errCancelled
	}
	n, err := c.raw.Read(p)
	c.exchangeIn += int64(n)
	if err != nil {
		err = c.noteErr(err)
	}
	return n, err
}

func (c *upstreamConn) write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		c.raw.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	if c.cancelled.Load() {
		return 0, errCancelled
	}
	n, err := c.raw.Write(p)
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
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
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

// startExchange prepares the conn for one request/response exchange.
func (c *upstreamConn) startExchange(readTimeout, writeTimeout time.Duration) {
	c.readTimeout = readTimeout
	c.writeTimeout = writeTimeout
	c.deadlineFired = false
	c.exchangeIn = 0
	c.requests++
}

// close closes the connection once, for the reason given.
func (c *upstreamConn) close(reason string) {
	if c.closed {
		return
	}
	c.closed = true
	c.raw.Close()
	c.pool.open.Add(-1)
	c.pool.hooks.upstreamClosed(c, reason)
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
