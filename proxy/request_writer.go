package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
)

// forwarding is what tollgate adds to a request it forwards: who the client
// is and which request this is.
type forwarding struct {
	peerIP          string // TCP peer of the downstream connection
	clientIP        string // real client address (realip), for X-Real-IP
	proto           string // scheme of the downstream listener
	trustedPeer     bool   // the peer's X-Forwarded-Proto and request id are kept
	requestID       string
	requestIDHeader string // canonical form, e.g. X-Request-Id
}

// Headers tollgate sets itself on every forwarded request.
const (
	hdrXFF   = "X-Forwarded-For"
	hdrXFP   = "X-Forwarded-Proto"
	hdrXReal = "X-Real-Ip"
)

// writeRequestHead writes the request line and headers of r to bw as an
// HTTP/1.1 request for a backend. upgrade is the protocol of an Upgrade
// request, or "". Framing follows the parsed message, never the client's
// framing headers, so a smuggled Content-Length cannot slip through.
func writeRequestHead(bw *bufio.Writer, r *http.Request, f *forwarding, upgrade string) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(requestTarget(r))
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")

	named := connectionTokens(r.Header)
	var keyBuf [32]string
	keys := keyBuf[:0]
	for k := range r.Header {
		if skipHeader(k, named) || k == hdrXFF || k == hdrXReal || k == f.requestIDHeader {
			continue
		}
		if k == hdrXFP && !f.trustedPeer {
			continue
		}
		keys = append(keys, k)
	}
	// Map order is random; a stable order makes the wire reproducible.
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			writeHeader(bw, k, v)
		}
	}

	writeXFF(bw, r.Header[hdrXFF], f.peerIP)
	if !f.trustedPeer || r.Header.Get(hdrXFP) == "" {
		writeHeader(bw, hdrXFP, f.proto)
	}
	writeHeader(bw, "X-Real-IP", f.clientIP)
	writeHeader(bw, f.requestIDHeader, f.requestID)

	if upgrade != "" {
		bw.WriteString("Connection: Upgrade\r\n")
		writeHeader(bw, "Upgrade", upgrade)
	}
	if wantsTrailers(r.Header) {
		bw.WriteString("TE: trailers\r\n")
	}
	writeFraming(bw, r)
	bw.WriteString("\r\n")
}

// requestTarget is the request-target sent upstream: the client's own bytes
// when they are in origin form (as Nginx's proxy_pass without a URI), else
// the parsed form of an absolute-form target.
func requestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") || r.RequestURI == "*" {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

func writeFraming(bw *bufio.Writer, r *http.Request) {
	switch {
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		var num [20]byte
		bw.Write(strconv.AppendInt(num[:0], r.ContentLength, 10))
		bw.WriteString("\r\n")
	case r.ContentLength < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(r.Trailer) > 0 {
			names := make([]string, 0, len(r.Trailer))
			for k := range r.Trailer {
				names = append(names, k)
			}
			slices.Sort(names)
			writeHeader(bw, "Trailer", strings.Join(names, ", "))
		}
	case r.Header["Content-Length"] != nil:
		// An explicit "Content-Length: 0" is kept: some backends require
		// a length on POST and PUT.
		bw.WriteString("Content-Length: 0\r\n")
	}
}

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

func writeHeader(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// writeBody streams the request body of r, read from body (r.Body or a
// wrapper of it), to the backend, chunked when the client's was, with its
// trailers. It returns the error of whichever side failed, marked so the
// caller can tell the client's fault from the backend's.
func writeBody(bw *bufio.Writer, r *http.Request, body io.Reader, buf []byte) error {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	src := &sourceReader{r: body}
	if r.ContentLength > 0 {
		_, err := io.CopyBuffer(bw, io.LimitReader(src, r.ContentLength), buf)
		return src.blame(err)
	}
	cw := httputil.NewChunkedWriter(bw)
	if _, err := io.CopyBuffer(cw, src, buf); err != nil {
		return src.blame(err)
	}
	if err := cw.Close(); err != nil {
		return err
	}
	for k, vv := range r.Trailer {
		for _, v := range vv {
			writeHeader(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// sourceReader remembers a read error so that a failed copy can be blamed on
// the client (its body broke off) rather than on the backend.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

func (s *sourceReader) blame(err error) error {
	if err != nil && s.err != nil {
		return &clientBodyError{err: s.err}
	}
	return err
}

// clientBodyError is a failure to read the request body from the client.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "read request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }
