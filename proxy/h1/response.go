package h1

import (
	"bufio"
	"errors"
	"strings"
)

// Response is one response head from a backend. A connection reuses one
// Response: ReadResponse resets it.
type Response struct {
	Minor  int
	Status int
	Reason string
	Header Header
	// ContentLength is the body length; -1 when unknown (chunked, or
	// delimited by the connection closing).
	ContentLength int64
	Chunked       bool
	// KeepAlive says the backend allows another request on the connection.
	KeepAlive bool
	// NoBody is set for responses that never have a body: to HEAD, 1xx,
	// 204 and 304 (RFC 9112 §6.3).
	NoBody bool

	buf  []byte
	head string
}

// ReadResponse reads the next response head from br into resp, reading at
// most limit bytes of head; method is the request's, which decides whether
// a body follows. A malformed head is an *Error (Status 502).
func ReadResponse(br *bufio.Reader, limit int, method string, resp *Response) error {
	buf, err := readHead(br, limit, resp.buf, true)
	resp.buf = buf
	if err == ErrHeadTooLarge {
		return &Error{Status: 502, Reason: "response head too large"}
	}
	if err != nil {
		return err
	}
	*resp = Response{Header: resp.Header[:0], buf: resp.buf, head: string(buf)}
	line, rest, _ := strings.Cut(resp.head, "\n")
	if err := resp.parseStatusLine(strings.TrimSuffix(line, "\r")); err != nil {
		return err
	}
	if err := parseFields(rest, &resp.Header); err != nil {
		var he *Error
		if errors.As(err, &he) {
			return badResponse(he.Reason)
		}
		return badResponse(err.Error())
	}
	return resp.parseFraming(method)
}

func badResponse(reason string) error { return &Error{Status: 502, Reason: reason} }

// parseStatusLine parses "HTTP/1.x SSS reason".
func (resp *Response) parseStatusLine(line string) error {
	version, rest, ok := strings.Cut(line, " ")
	if !ok {
		return badResponse("malformed status line")
	}
	switch version {
	case "HTTP/1.1":
		resp.Minor = 1
	case "HTTP/1.0":
		resp.Minor = 0
	default:
		return badResponse("malformed status line")
	}
	code, reason, _ := strings.Cut(rest, " ")
	if len(code) != 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return badResponse("malformed status code")
	}
	resp.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if !validValue(reason) {
		return badResponse("malformed reason phrase")
	}
	resp.Reason = reason
	return nil
}

func (resp *Response) parseFraming(method string) error {
	h := resp.Header
	// "close" wins over "keep-alive" whatever the version (RFC 9112 §9.6).
	resp.KeepAlive = (resp.Minor == 1 || h.HasToken("Connection", "keep-alive")) &&
		!h.HasToken("Connection", "close")
	cl, err := contentLength(h)
	if err != nil {
		return badResponse("invalid or conflicting Content-Length")
	}
	resp.ContentLength = cl
	s := resp.Status
	if method == "HEAD" || s < 200 || s == 204 || s == 304 {
		resp.NoBody = true
		return nil
	}
	hasTE, chunked, only := transferChunked(h)
	if hasTE && resp.Minor == 0 {
		// RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message makes
		// its framing faulty; close the connection after it.
		resp.KeepAlive = false
	}
	switch {
	case hasTE && only:
		resp.Chunked, resp.ContentLength = true, -1
		if cl >= 0 {
			// Both framings: chunked wins, and the connection must not
			// be reused (RFC 9112 §6.1), in case the backend disagrees.
			resp.KeepAlive = false
		}
	case hasTE && chunked:
		// gzip, chunked: tollgate would have to pass a transfer coding
		// on without its field.
		return badResponse("unsupported transfer coding")
	case hasTE:
		// Another coding last: the body runs until the connection closes
		// (RFC 9112 §6.3).
		resp.ContentLength, resp.KeepAlive = -1, false
	case cl < 0:
		resp.KeepAlive = false // close-delimited
	}
	return nil
}
