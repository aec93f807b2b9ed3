package proxy

import (
	"bufio"
	"io"
	"strings"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// respWriter writes one response to the client: the head with framing that
// fits the client (Content-Length, chunked for HTTP/1.1, close-delimited for
// HTTP/1.0), then the body under send_timeout. It reports write failures so
// the close gets its reason.
type respWriter struct {
	bw      *bufio.Writer
	conn    *dsConn
	timeout time.Duration // send_timeout, between two writes

	headOnly  bool // the request was HEAD: no body follows any head
	minor     int  // the client's HTTP/1.minor
	wroteHead bool
	status    int
	chunked   bool
	closeConn bool  // the response ends the connection
	bodyBytes int64 // body bytes written
	err       error // first write error
}

func (w *respWriter) reset(bw *bufio.Writer, conn *dsConn, timeout time.Duration, headOnly bool, minor int, keepAlive bool) {
	*w = respWriter{bw: bw, conn: conn, timeout: timeout, headOnly: headOnly, minor: minor, closeConn: !keepAlive}
}

// headSpec describes a response head to write.
type headSpec struct {
	status int
	reason string
	fields h1.Header // fields forwarded as they are
	// filter leaves out the hop-by-hop fields of fields (and those its
	// Connection names); skipName one more field, tollgate's own.
	filter   bool
	skipName string
	// contentLength is the body length; -1 unknown (chunked or
	// close-delimited downstream).
	contentLength int64
	noBody        bool // 204, 304, or an answer to HEAD: no body follows
	trailer       string
	extra         []h1.Field // tollgate's own fields
}

// writeHead writes the status line and fields; framing fields come from
// spec, never from the backend's, so a response is always framed the way
// tollgate sends it.
func (w *respWriter) writeHead(spec *headSpec) {
	w.wroteHead = true
	w.status = spec.status
	bw := w.bw
	h1.WriteStatusLine(bw, spec.status, spec.reason)
	hasDate := false
	var hop h1.HopFilter
	if spec.filter {
		hop = spec.fields.HopFilter()
	}
	for _, f := range spec.fields {
		if spec.filter && (hop.IsHopByHop(f.Name) || strings.EqualFold(f.Name, spec.skipName)) {
			continue
		}
		if !hasDate && len(f.Name) == 4 && (f.Name == "Date" || f.Name == "date") {
			hasDate = true
		}
		h1.WriteField(bw, f.Name, f.Value)
	}
	for _, f := range spec.extra {
		h1.WriteField(bw, f.Name, f.Value)
	}
	if !hasDate {
		h1.WriteField(bw, "Date", httpDate())
	}
	switch {
	case spec.noBody && spec.contentLength >= 0 && spec.status != 204 && spec.status/100 != 1:
		// HEAD and 304 keep the length the body would have.
		bw.WriteString("Content-Length: ")
		h1.WriteInt(bw, spec.contentLength)
		bw.WriteString("\r\n")
	case spec.noBody:
	case spec.contentLength >= 0:
		bw.WriteString("Content-Length: ")
		h1.WriteInt(bw, spec.contentLength)
		bw.WriteString("\r\n")
	case w.minor >= 1:
		w.chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if spec.trailer != "" {
			h1.WriteField(bw, "Trailer", spec.trailer)
		}
	default:
		w.closeConn = true // HTTP/1.0: the close ends the body
	}
	switch {
	case spec.status == 101:
		// The switch's own Connection: Upgrade is among spec.extra.
	case w.closeConn:
		bw.WriteString("Connection: close\r\n")
	case w.minor == 0:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if w.headOnly || spec.noBody {
		w.chunked = false
	}
}

// writeInformational writes a 1xx head (103 Early Hints) to an HTTP/1.1
// client; older clients get nothing (RFC 9110 §15.2).
func (w *respWriter) writeInformational(status int, reason string, fields h1.Header) {
	if w.minor < 1 {
		return
	}
	h1.WriteStatusLine(w.bw, status, reason)
	hop := fields.HopFilter()
	for _, f := range fields {
		if hop.IsHopByHop(f.Name) {
			continue
		}
		h1.WriteField(w.bw, f.Name, f.Value)
	}
	w.bw.WriteString("\r\n")
	w.flush()
}

// Write writes body bytes in the head's framing.
func (w *respWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.headOnly {
		return len(p), nil
	}
	w.arm()
	var err error
	if w.chunked {
		err = h1.WriteChunk(w.bw, p)
	} else {
		_, err = w.bw.Write(p)
	}
	if err != nil {
		w.err = err
		return 0, err
	}
	w.bodyBytes += int64(len(p))
	return len(p), nil
}

// finish ends the body (the last chunk with trailers) and flushes.
func (w *respWriter) finish(trailer h1.Header) error {
	if err := w.endBody(trailer); err != nil {
		return err
	}
	return w.flush()
}

// endBody ends the body (the last chunk with trailers) without flushing:
// the caller hands the upstream connection back first.
func (w *respWriter) endBody(trailer h1.Header) error {
	if w.err != nil {
		return w.err
	}
	if w.chunked {
		w.arm()
		if err := h1.WriteLastChunk(w.bw, trailer); err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

func (w *respWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	w.arm()
	if err := w.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

func (w *respWriter) arm() {
	if w.timeout > 0 {
		w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

var _ io.Writer = (*respWriter)(nil)
