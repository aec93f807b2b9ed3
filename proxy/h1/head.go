package h1

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
)

// Error is a message tollgate must refuse. For a request it carries the
// status to answer (400, 431, 501, 505, 417); for a response from a backend
// it marks a protocol error (502 to the client, us_bad_response).
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return "http: " + e.Reason }

func badRequest(reason string) error { return &Error{Status: 400, Reason: reason} }

// ErrHeadTooLarge is a message head over the configured limit.
var ErrHeadTooLarge = &Error{Status: 431, Reason: "message head too large"}

// readHead reads one message head (start line and fields, up to the empty
// line) into buf, bounded by limit bytes. It returns io.EOF when the
// connection ended cleanly before the first byte, io.ErrUnexpectedEOF when
// it ended inside the head. Leading empty lines are skipped before a start
// line (RFC 9112 §2.2), counting towards limit so that a stream of them
// cannot keep the reader busy for ever; a trailer section has none, so there
// an empty first line ends it.
//
// A line longer than br's buffer arrives in pieces; only a whole line can
// be the empty line that ends the head (RFC 9112 §2.1), never the "\r\n"
// left of a long one, or the fields after it would be read as the body.
func readHead(br *bufio.Reader, limit int, buf []byte, startLine bool) ([]byte, error) {
	buf = buf[:0]
	skipped := 0   // bytes of empty lines skipped before the start line
	lineStart := 0 // where in buf the line being read starts
	for {
		piece, err := br.ReadSlice('\n')
		if skipped+len(buf)+len(piece) > limit {
			return buf, ErrHeadTooLarge
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			buf = append(buf, piece...)
			continue
		case errors.Is(err, io.EOF) && len(buf) == 0 && len(piece) == 0:
			return buf, io.EOF
		case errors.Is(err, io.EOF):
			return buf, io.ErrUnexpectedEOF
		default:
			return buf, err
		}
		buf = append(buf, piece...)
		line := buf[lineStart:]
		empty := len(line) == 1 || len(line) == 2 && line[0] == '\r'
		switch {
		case empty && startLine && lineStart == 0:
			skipped += len(line) // an empty line before the start line
			buf = buf[:0]
		case empty:
			return buf, nil
		default:
			lineStart = len(buf)
		}
	}
}

// splitLines calls fn for each line of head (without its line ending),
// stopping at the empty line that ends the head.
func splitLines(head string, fn func(line string) error) error {
	for head != "" {
		i := strings.IndexByte(head, '\n')
		if i < 0 {
			return badRequest("unterminated line")
		}
		line := head[:i]
		head = head[i+1:]
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			return nil
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return nil
}

// parseFields parses the field lines after the start line into h.
func parseFields(lines string, h *Header) error {
	return splitLines(lines, func(line string) error {
		if line[0] == ' ' || line[0] == '\t' {
			// Obsolete line folding (RFC 9112 §5.2): a server must reject it
			// or unfold it; a proxy that unfolds differently from the
			// backend invites smuggling.
			return badRequest("obsolete line folding")
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return badRequest("malformed header field")
		}
		name := line[:colon]
		for i := 0; i < len(name); i++ {
			if !isTokenChar(name[i]) {
				return badRequest("invalid header field name")
			}
		}
		value := strings.Trim(line[colon+1:], " \t")
		if !validValue(value) {
			return badRequest("invalid header field value")
		}
		*h = append(*h, Field{Name: name, Value: value})
		return nil
	})
}

// parseVersion parses "HTTP/1.0" or "HTTP/1.1" and returns the minor version.
// Another HTTP version is 505; anything else 400.
func parseVersion(v string) (int, error) {
	switch v {
	case "HTTP/1.1":
		return 1, nil
	case "HTTP/1.0":
		return 0, nil
	}
	if len(v) == 8 && strings.HasPrefix(v, "HTTP/") && v[6] == '.' && isDigit(v[5]) && isDigit(v[7]) {
		return 0, &Error{Status: 505, Reason: "HTTP version not supported"}
	}
	return 0, badRequest("malformed HTTP version")
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// contentLength parses the Content-Length fields of h: all must carry the
// same valid decimal length (RFC 9110 §8.6; "5, 5" counts as one value).
// It returns -1 when there is none.
func contentLength(h Header) (int64, error) {
	n := int64(-1)
	var bad bool
	h.Values("Content-Length", func(v string) {
		// An empty field is no length at all, not an absent one (RFC 9112
		// §6.3 item 5: an invalid Content-Length is an unrecoverable error).
		for more := true; more; {
			var item string
			item, v, more = strings.Cut(v, ",")
			item = strings.TrimSpace(item)
			m, ok := parseLength(item)
			if !ok || n >= 0 && m != n {
				bad = true
				return
			}
			n = m
		}
	})
	if bad {
		return 0, badRequest("invalid or conflicting Content-Length")
	}
	return n, nil
}

func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// transferChunked inspects Transfer-Encoding: present reports whether the
// field exists, chunked whether chunked is its final coding, and only
// whether chunked is the only coding (tollgate decodes no other).
func transferChunked(h Header) (present, chunked, only bool) {
	var codings []string
	h.Values("Transfer-Encoding", func(v string) {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			if item = strings.TrimSpace(item); item != "" {
				codings = append(codings, item)
			}
		}
	})
	if len(codings) == 0 {
		return h.Has("Transfer-Encoding"), false, false
	}
	chunked = strings.EqualFold(codings[len(codings)-1], "chunked")
	return true, chunked, chunked && len(codings) == 1
}
