package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// HTTP/2 downstream.
//
// Go's net/http speaks the protocol: framing, HPACK, flow control, and the
// defenses against its known floods (rapid reset, CONTINUATION, settings
// and ping floods), which are easy to get wrong and are kept up to date
// there. tollgate does not run a second request pipeline for it: each
// stream becomes a one-request session over an in-memory HTTP/1.1
// exchange (streamConn), so limit_req, adaptive concurrency, breakers,
// retries, the access log and close tagging are the same code on both
// protocols, and the stream's request is checked by the same strict
// HTTP/1.1 parser as any other.
//
// Close records: the TCP connection gets one when it ends, as on HTTP/1.1.
// A stream gets one of its own only when it ends badly (reset by the
// client, a timeout, a backend that broke off mid-body), with the same
// reasons an HTTP/1.1 connection would get and stream_of naming the
// connection. A stream that ends normally is not a close.

// h2MaxStreams is how many streams a client may have open at once on one
// connection (Nginx's http2_max_concurrent_streams is 128).
const h2MaxStreams = 128

// h2Front serves the connections that speak HTTP/2, after the session
// read their TLS handshake (ALPN "h2") or their h2c preface.
type h2Front struct {
	s     *Server
	srv   *http.Server
	queue *connQueue
}

func newH2Front(s *Server, rt *runtime) *h2Front {
	f := &h2Front{s: s, queue: newConnQueue()}
	var protos http.Protocols
	// The connections arrive decrypted (TLS ended in the session), so
	// they are served as HTTP/2 with prior knowledge.
	protos.SetUnencryptedHTTP2(true)
	f.srv = &http.Server{
		Handler:        f,
		Protocols:      &protos,
		IdleTimeout:    rt.keepaliveTimeout,
		MaxHeaderBytes: rt.headerLimit,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: h2MaxStreams,
			// A peer that stops answering is found by PING (RFC 9113
			// §6.7) rather than left to TCP.
			SendPingTimeout: time.Minute,
			PingTimeout:     15 * time.Second,
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, h2ConnKey{}, c)
		},
		ErrorLog: log.New(io.Discard, "", 0), // protocol errors end up in close records
	}
	return f
}

// run serves the queued connections until shutdown.
func (f *h2Front) run() {
	f.srv.Serve(f.queue)
}

// shutdown sends GOAWAY to every HTTP/2 connection and lets their streams
// finish; the caller's deadline closes what is left.
func (f *h2Front) shutdown(ctx context.Context) {
	f.srv.Shutdown(ctx)
}

type h2ConnKey struct{}

// idleSlack allows for the HTTP/2 server's idle timer firing a little
// before the idle time tollgate measures from its own stream ends.
const idleSlack = 50 * time.Millisecond

// h2Conn is a downstream connection handed to the HTTP/2 server: reads come
// through the session's reader (which may hold the preface already), and
// Close only tells the session the server is done, so the session closes
// the socket itself with the reason.
type h2Conn struct {
	net.Conn // the session's wire: TLS, or the plain connection
	r        *bufio.Reader
	ss       *session

	readErr    atomic.Pointer[error] // the last read error the HTTP/2 server saw
	active     atomic.Int32          // streams being served
	lastActive atomic.Int64          // unix nanos when the last stream ended
	closeOnce  sync.Once
	closed     chan struct{}
}

// Read notes the error the HTTP/2 server is given: with TLS, a client's
// close_notify ends the stream of bytes before any socket error.
func (c *h2Conn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil {
		c.readErr.Store(&err)
	}
	return n, err
}

func (c *h2Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// serveH2 hands the connection to the HTTP/2 server and waits until the
// server is done with it, then closes it with the reason.
func (ss *session) serveH2() {
	c := ss.conn
	c.protocol = "h2"
	// Not idle for Shutdown's sweep: an HTTP/2 connection drains with
	// GOAWAY instead (h2Front.shutdown).
	c.idle.Store(false)
	hc := &h2Conn{Conn: ss.wire, r: ss.br, ss: ss, closed: make(chan struct{})}
	hc.lastActive.Store(time.Now().UnixNano())
	if !ss.s.h2.queue.push(hc) {
		c.closeWith(reasonDSShutdown, "", "")
		return
	}
	<-hc.closed
	c.closeWith(hc.closeReason())
}

// closeReason names why the HTTP/2 server let go of the connection: what
// the client did, the server's idle timeout, shutdown, or (what is left)
// a protocol error the server answered with GOAWAY.
func (hc *h2Conn) closeReason() (reason, initiator, cause string) {
	ss := hc.ss
	var err error
	if p := hc.readErr.Load(); p != nil {
		err = *p
	}
	phase := phaseIdle
	if hc.active.Load() > 0 {
		phase = phaseResponseHeaders
	}
	ss.conn.setPhase(phase)
	idle := time.Since(time.Unix(0, hc.lastActive.Load()))
	switch {
	case ss.s.shuttingDown.Load():
		return reasonDSShutdown, "", ""
	case err != nil && !isTimeout(err):
		return readFailure(err, phase, false), "", ""
	case phase == phaseIdle && idle >= ss.s.h2.srv.IdleTimeout-idleSlack:
		return reasonDSIdleTimeout, "", ""
	}
	return reasonDSBadRequest, "", ""
}

// ServeHTTP serves one stream as a one-request session.
func (f *h2Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hc := r.Context().Value(h2ConnKey{}).(*h2Conn)
	hc.active.Add(1)
	defer func() {
		hc.lastActive.Store(time.Now().UnixNano())
		hc.active.Add(-1)
	}()
	parent := hc.ss
	sc := newStreamConn(parent.conn, w, r)
	c := f.s.newStreamDSConn(sc)
	ss := &session{s: f.s, conn: c, wire: c, peer: parent.peer, peerText: parent.peerText,
		proto: parent.proto, proxyAddr: parent.proxyAddr}
	ss.br = bufio.NewReaderSize(c, 4096)
	ss.bw = bufio.NewWriterSize(c, 4096)

	relayed := make(chan bool, 1)
	go func() { relayed <- sc.relay(w, r.Method) }()
	reason, initiator, cause := ss.serveOne()
	parent.conn.startRequest(c.requestIDNow())
	clean := streamEndedCleanly(reason)
	if clean {
		sc.pw.Close()
	} else {
		sc.pw.CloseWithError(errStreamReset)
	}
	complete := <-relayed
	// No deadline may fire once the handler returns: the stream's
	// ResponseWriter is gone then (send_timeout stays armed after the
	// last write).
	sc.readDL.stop()
	sc.writeDL.stop()
	if !clean {
		c.mu.Lock()
		c.streamReset = !complete
		c.mu.Unlock()
		c.closeWith(reason, initiator, cause)
	}
	if !complete {
		// The response broke off: reset the stream (RST_STREAM), so the
		// client cannot take a cut body for a whole one.
		panic(http.ErrAbortHandler)
	}
}

// streamEndedCleanly reports whether a stream's session ended without a
// fault: the reasons that end a keep-alive connection normally do not
// apply to a stream.
func streamEndedCleanly(reason string) bool {
	return reason == "" || reason == reasonDSKeepaliveLimit || reason == reasonDSShutdown
}

// requestIDNow is the id of the request the connection serves (or served
// last).
func (c *dsConn) requestIDNow() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requestID
}

// errStreamReset is what the session sees when the client reset the stream
// (or the connection went away): like a reset TCP connection, so the close
// gets the same client-abort reasons.
var errStreamReset = &net.OpError{Op: "read", Net: "h2", Err: os.NewSyscallError("read", syscall.ECONNRESET)}

// streamConn is one HTTP/2 stream as the session sees it: a connection
// that carries the request as HTTP/1.1 (head, then the body, chunked when
// its length is unknown) and takes the response as HTTP/1.1, which relay
// turns back into HTTP/2.
type streamConn struct {
	parent *dsConn
	ctx    context.Context // the stream's: done when the client resets it
	in     io.Reader       // the request: head, then body
	body   io.ReadCloser
	pr     *io.PipeReader // the response, read by relay
	pw     *io.PipeWriter
	rc     *http.ResponseController

	readDL, writeDL streamDeadline
	reset           atomic.Bool // the client went away
}

func newStreamConn(parent *dsConn, w http.ResponseWriter, r *http.Request) *streamConn {
	sc := &streamConn{parent: parent, ctx: r.Context(), body: r.Body, rc: http.NewResponseController(w)}
	sc.pr, sc.pw = io.Pipe()
	head := h1RequestHead(r)
	switch {
	case r.ContentLength < 0:
		sc.in = io.MultiReader(bytes.NewReader(head), &chunkEncoder{r: r.Body})
	case r.ContentLength > 0:
		sc.in = io.MultiReader(bytes.NewReader(head), io.LimitReader(r.Body, r.ContentLength))
	default:
		sc.in = bytes.NewReader(head)
	}
	// A deadline that fires breaks the stream: a read blocked in the body
	// or a write blocked on flow control cannot be interrupted otherwise.
	sc.readDL.onExpire = func() { r.Body.Close() }
	sc.writeDL.onExpire = func() {
		sc.pr.CloseWithError(os.ErrDeadlineExceeded)
		sc.rc.SetWriteDeadline(time.Unix(1, 0)) // unblocks relay's Write
	}
	return sc
}

// h1RequestHead writes an HTTP/2 request's head as HTTP/1.1: the target is
// :path, Host is :authority, cookies split across fields are joined (RFC
// 9113 §8.2.3), and the framing follows the body's known length. Fields
// come in name order: HTTP/2's field order is lost by net/http's map.
func h1RequestHead(r *http.Request) []byte {
	var b bytes.Buffer
	b.Grow(512)
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(r.RequestURI)
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(r.Host)
	b.WriteString("\r\n")
	for _, name := range slices.Sorted(maps.Keys(r.Header)) {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
			"Proxy-Connection", "Upgrade", "Expect":
			// Framing and connection fields are HTTP/1.1's own; HTTP/2
			// answers Expect: 100-continue itself.
			continue
		case "Cookie":
			writeHeadField(&b, name, strings.Join(r.Header[name], "; "))
			continue
		}
		for _, v := range r.Header[name] {
			writeHeadField(&b, name, v)
		}
	}
	switch {
	case r.ContentLength < 0:
		b.WriteString("Transfer-Encoding: chunked\r\n")
	case r.ContentLength > 0 || r.Header["Content-Length"] != nil:
		b.WriteString("Content-Length: ")
		b.WriteString(strconv.FormatInt(r.ContentLength, 10))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func writeHeadField(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	b.WriteString(": ")
	b.WriteString(value)
	b.WriteString("\r\n")
}

func (sc *streamConn) Read(p []byte) (int, error) {
	if sc.readDL.expired() {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := sc.in.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case sc.readDL.expired():
		err = os.ErrDeadlineExceeded
	case sc.gone():
		err = errStreamReset
	}
	return n, err
}

func (sc *streamConn) Write(p []byte) (int, error) {
	n, err := sc.pw.Write(p)
	switch {
	case err == nil:
	case sc.writeDL.expired():
		err = os.ErrDeadlineExceeded
	case errors.Is(err, io.ErrClosedPipe), errors.Is(err, syscall.ECONNRESET):
		err = errStreamReset
	}
	return n, err
}

// gone reports whether the client reset the stream or left.
func (sc *streamConn) gone() bool {
	return sc.reset.Load() || sc.ctx.Err() != nil
}

// Close ends the exchange; a response not yet complete is then cut, and
// relay resets the stream.
func (sc *streamConn) Close() error {
	sc.pw.CloseWithError(errStreamReset)
	sc.readDL.set(time.Time{})
	sc.writeDL.set(time.Time{})
	return nil
}

func (sc *streamConn) LocalAddr() net.Addr  { return sc.parent.LocalAddr() }
func (sc *streamConn) RemoteAddr() net.Addr { return sc.parent.RemoteAddr() }
func (sc *streamConn) SetDeadline(t time.Time) error {
	sc.readDL.set(t)
	sc.writeDL.set(t)
	return nil
}
func (sc *streamConn) SetReadDeadline(t time.Time) error  { sc.readDL.set(t); return nil }
func (sc *streamConn) SetWriteDeadline(t time.Time) error { sc.writeDL.set(t); return nil }

// relay reads the session's HTTP/1.1 response and writes it to the HTTP/2
// stream: 1xx heads (103 Early Hints) as informational responses, the
// head without HTTP/1.1's connection and framing fields, the body as it
// comes, flushed whenever the session has nothing more buffered, and
// trailers. It reports whether the whole response went out.
func (sc *streamConn) relay(w http.ResponseWriter, method string) bool {
	br := bufio.NewReaderSize(sc.pr, 4096)
	var resp h1.Response
	for {
		if err := h1.ReadResponse(br, 1<<20, method, &resp); err != nil {
			sc.abandon()
			return false
		}
		if resp.Status >= 200 {
			break
		}
		if resp.Status == http.StatusSwitchingProtocols {
			sc.abandon() // no upgrades over HTTP/2 (RFC 9113 §8.6)
			return false
		}
		h := w.Header()
		copyResponseFields(h, resp.Header)
		w.WriteHeader(resp.Status)
		clear(h)
	}
	copyResponseFields(w.Header(), resp.Header)
	w.WriteHeader(resp.Status)
	if resp.NoBody {
		return sc.flush()
	}
	var body h1.Body
	body.Reset(br, resp.ContentLength, resp.Chunked)
	buf := make([]byte, 16<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				sc.clientLeft()
				return false
			}
			if br.Buffered() == 0 && !sc.flush() {
				return false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			sc.abandon()
			return false
		}
	}
	for _, f := range body.Trailer {
		w.Header().Add(http.TrailerPrefix+f.Name, f.Value)
	}
	return true
}

func (sc *streamConn) flush() bool {
	if err := sc.rc.Flush(); err != nil {
		sc.clientLeft()
		return false
	}
	return true
}

// clientLeft notes that the client reset the stream (or the connection is
// gone): the session's next write fails as a client abort.
func (sc *streamConn) clientLeft() {
	sc.reset.Store(true)
	sc.pr.CloseWithError(errStreamReset)
}

// abandon stops reading a response that broke off on the session's side.
func (sc *streamConn) abandon() {
	sc.pr.CloseWithError(errStreamReset)
}

// copyResponseFields copies a response head's fields, leaving out those
// that belong to HTTP/1.1's connection and framing (RFC 9113 §8.2.2) but
// keeping Content-Length, which HTTP/2 carries too (a HEAD answer needs it).
func copyResponseFields(h http.Header, fields h1.Header) {
	hop := fields.HopFilter()
	for _, f := range fields {
		if hop.IsHopByHop(f.Name) && !strings.EqualFold(f.Name, "Content-Length") {
			continue
		}
		name := http.CanonicalHeaderKey(f.Name)
		h[name] = append(h[name], f.Value)
	}
}

// chunkEncoder frames a body of unknown length as HTTP/1.1 chunks.
type chunkEncoder struct {
	r       io.Reader
	pending []byte
	buf     []byte
	done    bool
}

func (e *chunkEncoder) Read(p []byte) (int, error) {
	for len(e.pending) == 0 {
		if e.done {
			return 0, io.EOF
		}
		if e.buf == nil {
			e.buf = make([]byte, 0, 16<<10+16)
		}
		data := e.buf[:cap(e.buf)][16 : 16+16<<10-16]
		n, err := e.r.Read(data)
		out := e.buf[:0]
		if n > 0 {
			out = strconv.AppendInt(out, int64(n), 16)
			out = append(out, "\r\n"...)
			out = append(out, data[:n]...) // may overlap: copy moves it down
			out = append(out, "\r\n"...)
		}
		switch {
		case err == io.EOF:
			out = append(out, "0\r\n\r\n"...)
			e.done = true
		case err != nil:
			return 0, err
		}
		e.pending = out
	}
	n := copy(p, e.pending)
	e.pending = e.pending[n:]
	return n, nil
}

// streamDeadline is a read or write deadline on a stream. Firing is final:
// it breaks the stream (onExpire), which is what a timeout does to a
// connection anyway.
type streamDeadline struct {
	mu       sync.Mutex // held while onExpire runs, so stop waits for it
	at       time.Time
	timer    *time.Timer
	fired    bool
	stopped  bool
	onExpire func()
}

// stop disarms the deadline for good; an onExpire under way has finished
// when it returns.
func (d *streamDeadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	if d.timer != nil {
		d.timer.Stop()
	}
}

func (d *streamDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = t
	switch {
	case d.fired || d.stopped:
	case t.IsZero():
		if d.timer != nil {
			d.timer.Stop()
		}
	case d.timer == nil:
		d.timer = time.AfterFunc(time.Until(t), d.fire)
	default:
		d.timer.Reset(time.Until(t))
	}
}

func (d *streamDeadline) fire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fired || d.stopped || d.at.IsZero() || time.Now().Before(d.at) {
		return
	}
	d.fired = true
	if d.onExpire != nil {
		d.onExpire()
	}
}

func (d *streamDeadline) expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fired
}

// connQueue is the listener the HTTP/2 server accepts from: sessions push
// the connections that negotiated HTTP/2.
type connQueue struct {
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the HTTP/2 server; false once it shut down.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.closeOnce.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{} }
