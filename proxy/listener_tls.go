package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/limiter"
	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// listenerOpts is what a listener asks of each of its connections.
type listenerOpts struct {
	pp            *limiter.RealIP // PROXY protocol expected from these peers; nil: none
	tls           *tls.Config     // HTTPS; nil: plain HTTP
	redirectHTTPS bool            // answer plain requests with 308 to https
}

// serverALPN is the protocols an HTTPS listener offers in ALPN, in order
// of preference: HTTP/1.1, and with ACME the TLS-ALPN-01 challenge
// protocol (RFC 8737 §6), whose handshakes certmagic answers. Every HTTPS
// listener takes its list from here.
func serverALPN(acme bool) []string {
	protos := []string{"http/1.1"}
	if acme {
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	return protos
}

// listenerTLS loads an HTTPS listener's static certificate: TLS 1.2 at
// least, the protocols of serverALPN. Listeners with ACME get theirs from
// acmeManager.tlsConfig.
func listenerTLS(l config.Listener) (*tls.Config, error) {
	if l.TLS == nil {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(l.TLS.CertFile, l.TLS.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   serverALPN(false),
	}, nil
}

// handshake runs the TLS handshake under client_header_timeout; a failure
// closes the connection as ds_tls_handshake_failed.
func (ss *session) handshake(conf *tls.Config) bool {
	tc := tls.Server(ss.wire, conf)
	if d := ss.s.rt.Load().headerTimeout; d > 0 {
		ss.conn.SetDeadline(time.Now().Add(d))
	}
	err := tc.Handshake()
	ss.conn.SetDeadline(time.Time{})
	if err != nil {
		ss.conn.noteErr(err)
		ss.conn.closeWith(reasonDSTLSHandshakeFailed, "", "")
		return false
	}
	ss.wire, ss.proto = tc, "https"
	return true
}

// prefixConn is the client connection with bytes already read (behind a
// PROXY protocol header) served first.
type prefixConn struct {
	*dsConn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// drainBuffered returns a copy of what br holds buffered.
func drainBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return append([]byte(nil), b...)
}

var _ net.Conn = (*prefixConn)(nil)

// httpsURL is the request's URL over https on the default port, as Nginx's
// "return 308 https://$host$request_uri".
func httpsURL(req *h1.Request) string {
	host := stripPort(req.Host)
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 literal
	}
	return "https://" + host + req.OriginTarget()
}
