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
	h2c           bool            // plain listener: HTTP/2 with prior knowledge too
}

// serverALPN is the protocols an HTTPS listener offers in ALPN, in order
// of preference: HTTP/2 (unless the listener turns it off), HTTP/1.1, and
// with ACME the TLS-ALPN-01 challenge protocol (RFC 8737 §6), whose
// handshakes certmagic answers. Every HTTPS listener takes its list from
// here.
func serverALPN(http2, acme bool) []string {
	protos := make([]string, 0, 3)
	if http2 {
		protos = append(protos, "h2")
	}
	protos = append(protos, "http/1.1")
	if acme {
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	return protos
}

// serverTLS is the TLS policy of every HTTPS listener, static or ACME:
// TLS 1.2 at least (Go's default suites: AEAD with forward secrecy) and
// the protocols of serverALPN. The caller adds the certificate source.
func serverTLS(http2, acme bool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: serverALPN(http2, acme)}
}

// listenerTLS loads an HTTPS listener's static certificate. Listeners with
// ACME get their configuration from acmeManager.tlsConfig.
func listenerTLS(l config.Listener) (*tls.Config, error) {
	if l.TLS == nil {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(l.TLS.CertFile, l.TLS.KeyFile)
	if err != nil {
		return nil, err
	}
	conf := serverTLS(l.HTTP2Enabled(), false)
	conf.Certificates = []tls.Certificate{cert}
	return conf, nil
}

// negotiatedH2 reports whether the TLS handshake chose HTTP/2.
func (ss *session) negotiatedH2() bool {
	tc, ok := ss.wire.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}

// h2Preface opens every HTTP/2 connection (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sentH2Preface reports whether a client on an h2c listener opened with
// the HTTP/2 preface. It compares byte by byte as they arrive, so an
// HTTP/1.1 request shorter than the preface is told apart at its first
// differing byte rather than waited on.
func (ss *session) sentH2Preface() bool {
	if d := ss.s.rt.Load().headerTimeout; d > 0 {
		ss.conn.SetReadDeadline(time.Now().Add(d))
		defer ss.conn.SetReadDeadline(time.Time{})
	}
	for n := 1; n <= len(h2Preface); n++ {
		b, err := ss.br.Peek(n)
		if err != nil || b[n-1] != h2Preface[n-1] {
			return false
		}
	}
	return true
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
