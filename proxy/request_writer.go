package proxy

import (
	"bufio"
	"io"
	"strings"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// forwarding is what tollgate adds to a request it forwards: who the client
// is and which request this is.
type forwarding struct {
	peerIP        string // TCP peer of the downstream connection
	clientIP      string // real client address (realip), for X-Real-IP
	proto         string // scheme of the downstream listener
	trustedPeer   bool   // the peer's X-Forwarded-Proto and request id are kept
	requestID     string
	requestIDName string // the configured header name, e.g. X-Request-ID
}

// writeRequestHead writes the request line and fields of req to bw as an
// HTTP/1.1 request for a backend, fields in the client's order. upgrade is
// the protocol of an Upgrade request, or "". Framing follows the parsed
// message, never the client's framing fields, so a smuggled Content-Length
// cannot slip through.
func writeRequestHead(bw *bufio.Writer, req *h1.Request, f *forwarding, upgrade string) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.OriginTarget())
	bw.WriteString(" HTTP/1.1\r\n")
	h1.WriteField(bw, "Host", req.Host)

	var xff []string
	var xffA [4]string
	xff = xffA[:0]
	hasXFP := false
	hop := req.Header.HopFilter()
	for _, fl := range req.Header {
		name := fl.Name
		switch {
		case strings.EqualFold(name, "Host"), hop.IsHopByHop(name),
			strings.EqualFold(name, hdrXReal), strings.EqualFold(name, f.requestIDName):
			continue
		case strings.EqualFold(name, hdrXFF):
			xff = append(xff, fl.Value)
			continue
		case strings.EqualFold(name, hdrXFP):
			if !f.trustedPeer {
				continue
			}
			hasXFP = true
		}
		h1.WriteField(bw, name, fl.Value)
	}

	writeXFF(bw, xff, f.peerIP)
	if !hasXFP {
		h1.WriteField(bw, hdrXFP, f.proto)
	}
	h1.WriteField(bw, hdrXReal, f.clientIP)
	h1.WriteField(bw, f.requestIDName, f.requestID)

	if upgrade != "" {
		bw.WriteString("Connection: Upgrade\r\n")
		h1.WriteField(bw, "Upgrade", upgrade)
	}
	if req.Header.HasToken("TE", "trailers") {
		// gRPC and others need to know trailers are welcome.
		bw.WriteString("TE: trailers\r\n")
	}
	switch {
	case req.Chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if t := req.Header.Get("Trailer"); t != "" {
			h1.WriteField(bw, "Trailer", t)
		}
	case req.ContentLength > 0 || req.Header.Has("Content-Length"):
		// An explicit "Content-Length: 0" is kept: some backends require
		// a length on POST and PUT.
		bw.WriteString("Content-Length: ")
		h1.WriteInt(bw, req.ContentLength)
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// Headers tollgate sets itself on every forwarded request.
const (
	hdrXFF   = "X-Forwarded-For"
	hdrXFP   = "X-Forwarded-Proto"
	hdrXReal = "X-Real-IP"
)

// writeXFF appends the peer to the incoming X-Forwarded-For, as Nginx's
// $proxy_add_x_forwarded_for; several incoming lines are joined in order.
func writeXFF(bw *bufio.Writer, prior []string, peer string) {
	bw.WriteString("X-Forwarded-For: ")
	for _, v := range prior {
		bw.WriteString(v)
		bw.WriteString(", ")
	}
	bw.WriteString(peer)
	bw.WriteString("\r\n")
}

// writeBody streams the request body to the backend in the framing the head
// announced, chunked with its trailers when the client's was chunked. It
// tells a failure to read from the client apart from one to write upstream.
func writeBody(bw *bufio.Writer, req *h1.Request, body io.Reader, trailer *h1.Header, buf []byte) error {
	if !req.HasBody() {
		return nil
	}
	for {
		n, rerr := body.Read(buf)
		var werr error
		if req.Chunked {
			werr = h1.WriteChunk(bw, buf[:n])
		} else {
			_, werr = bw.Write(buf[:n])
		}
		// Each piece goes on at once: a client that pauses mid-body (a
		// stream, an upload awaiting the backend's reaction) must not
		// have its last bytes held in tollgate's buffer meanwhile.
		if werr == nil && n > 0 && rerr == nil {
			werr = bw.Flush()
		}
		if werr != nil {
			return werr
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &clientBodyError{err: rerr}
		}
	}
	if req.Chunked {
		return h1.WriteLastChunk(bw, *trailer)
	}
	return nil
}

// clientBodyError is a failure to read the request body from the client.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "read request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }
