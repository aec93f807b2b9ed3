package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// fillForwarding works out who the client is and which request this is.
func (rt *runtime) fillForwarding(f *forwarding, req *h1.Request, ss *session, ids *requestIDs) {
	f.peerIP = ss.peerText
	f.proto = ss.proto
	f.trustedPeer = rt.trust.Trusted(ss.peer)
	f.requestIDName = rt.requestIDHeader
	f.clientIP = f.peerIP
	if rt.realIP != nil && rt.realIP.Header() == proxyProtocolHeader {
		// real_ip_header: proxy_protocol takes the balancer's word.
		if ss.proxyAddr.IsValid() && rt.trust.Trusted(ss.peer) {
			f.clientIP = ss.proxyAddr.String()
		}
	} else if rt.realIP != nil && rt.trust.Trusted(ss.peer) {
		var linesA [4]string
		lines := linesA[:0]
		name := rt.realIP.Header()
		for _, fl := range req.Header {
			if strings.EqualFold(fl.Name, name) {
				lines = append(lines, fl.Value)
			}
		}
		if client := rt.realIP.Client(ss.peer, lines); client != ss.peer {
			f.clientIP = client.String()
		}
	}
	f.requestID = ""
	if f.trustedPeer {
		if v := req.Header.Get(rt.requestIDHeader); validRequestID(v) {
			f.requestID = v
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
