package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"
)

// downstreamConn is what tollgate knows about one client connection. The
// connection's own goroutine serves its HTTP/1.1 requests one at a time, so
// the fields need no lock.
type downstreamConn struct {
	id       uint64
	peer     netip.Addr
	peerText string // peer address without port, as sent in X-Forwarded-For
	proto    string // "http" or "https"
	requests int
}

type downstreamKey struct{}

// connContext is http.Server.ConnContext: it attaches the connection's state
// to every request's context.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	dc := &downstreamConn{id: s.connIDs.Add(1), proto: "http"}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		dc.peer = ap.Addr().Unmap()
		dc.peerText = dc.peer.String()
	}
	return context.WithValue(ctx, downstreamKey{}, dc)
}

func downstreamFrom(ctx context.Context) *downstreamConn {
	if dc, ok := ctx.Value(downstreamKey{}).(*downstreamConn); ok {
		return dc
	}
	return &downstreamConn{proto: "http"} // a handler called outside a server (tests)
}

// fillForwarding works out who the client is and which request this is.
func (rt *runtime) fillForwarding(f *forwarding, r *http.Request, dc *downstreamConn, ids *requestIDs) {
	f.peerIP = dc.peerText
	f.proto = dc.proto
	f.trustedPeer = rt.trust.Trusted(dc.peer)
	f.requestIDHeader = rt.requestIDHeader
	f.clientIP = f.peerIP
	if rt.realIP != nil {
		if lines := r.Header[rt.realIP.Header()]; len(lines) > 0 {
			if client := rt.realIP.Client(dc.peer, lines); client != dc.peer {
				f.clientIP = client.String()
			}
		}
	}
	f.requestID = ""
	if f.trustedPeer {
		if v := r.Header[rt.requestIDHeader]; len(v) > 0 && validRequestID(v[0]) {
			f.requestID = v[0]
		}
	}
	if f.requestID == "" {
		f.requestID = ids.next()
	}
}

// validRequestID accepts ids of up to 128 visible ASCII characters, so an
// accepted id cannot break a log line or a header.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f || id[i] == '"' || id[i] == '\\' {
			return false
		}
	}
	return true
}

// requestIDs generates request ids in the form of Nginx's $request_id (32 hex
// digits): a random per-process prefix and a counter, unique without a
// syscall per request.
type requestIDs struct {
	prefix [8]byte
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	ids := &requestIDs{}
	rand.Read(ids.prefix[:])
	ids.n.Store(uint64(time.Now().UnixNano()))
	return ids
}

func (ids *requestIDs) next() string {
	var raw [16]byte
	copy(raw[:8], ids.prefix[:])
	binary.BigEndian.PutUint64(raw[8:], ids.n.Add(1))
	var out [32]byte
	hex.Encode(out[:], raw[:])
	return string(out[:])
}

// bodyTimeoutReader arms client_body_timeout before each read of a request
// body: the limit is between two reads, not for the whole body (Nginx).
type bodyTimeoutReader struct {
	body    interface{ Read([]byte) (int, error) }
	rd      interface{ SetReadDeadline(time.Time) error }
	timeout time.Duration
}

func (b *bodyTimeoutReader) Read(p []byte) (int, error) {
	b.rd.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.body.Read(p)
	if err != nil {
		// Clear it: net/http's background read that watches for the client
		// leaving must not trip over a stale deadline.
		b.rd.SetReadDeadline(time.Time{})
	}
	return n, err
}

// withBodyTimeout returns r's body under client_body_timeout when it has one.
// r.Body itself is left as net/http made it: net/http checks its type when
// the response starts. An unread *expectContinueReader makes it close the
// connection after the response; any other unread body it first drains,
// which for a refused "Expect: 100-continue" request means waiting for a
// body the client never sends, so the response never left.
func withBodyTimeout(w http.ResponseWriter, r *http.Request, timeout time.Duration) io.Reader {
	rd, ok := w.(interface{ SetReadDeadline(time.Time) error })
	if !ok || timeout <= 0 || r.Body == nil || r.Body == http.NoBody {
		return r.Body
	}
	return &bodyTimeoutReader{body: r.Body, rd: rd, timeout: timeout}
}
