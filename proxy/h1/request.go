package h1

import (
	"bufio"
	"strings"
)

// Request is one request head. A connection reuses one Request for all its
// requests: ReadRequest resets it.
type Request struct {
	Method string
	Target string // request-target exactly as sent
	Minor  int    // HTTP/1.Minor
	Header Header
	// Host is the Host field, or the authority of an absolute-form target
	// (RFC 9112 §3.2.2), as sent.
	Host string
	// ContentLength is the body length; -1 when the body is chunked.
	ContentLength int64
	Chunked       bool
	// KeepAlive says the client allows another request on the connection.
	KeepAlive      bool
	ExpectContinue bool
	// Upgrade is the protocol asked for with Connection: upgrade, or "".
	Upgrade string

	buf  []byte // head bytes, reused
	head string // the one allocation per request; fields slice it
}

// ReadRequest reads the next request head from br into r, reading at most
// limit bytes of head. It returns io.EOF when the connection closed cleanly
// between requests, *Error for a request to refuse (its Status says which
// response), or the read error.
func ReadRequest(br *bufio.Reader, limit int, r *Request) error {
	buf, err := readHead(br, limit, r.buf, true)
	r.buf = buf
	if err != nil {
		return err
	}
	*r = Request{Header: r.Header[:0], buf: r.buf, head: string(buf)}
	line, rest, _ := strings.Cut(r.head, "\n")
	if err := r.parseRequestLine(strings.TrimSuffix(line, "\r")); err != nil {
		return err
	}
	if err := parseFields(rest, &r.Header); err != nil {
		return err
	}
	return r.parseFraming()
}

// parseRequestLine parses "METHOD SP target SP HTTP/1.x".
func (r *Request) parseRequestLine(line string) error {
	method, rest, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" {
		return badRequest("malformed request line")
	}
	for i := 0; i < len(method); i++ {
		if !isTokenChar(method[i]) {
			return badRequest("invalid method")
		}
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return badRequest("invalid request target")
		}
	}
	// RFC 9112 §3.2: origin-form starts with "/", absolute-form with a
	// scheme (checked in parseHost), asterisk-form is OPTIONS only, and
	// authority-form CONNECT only, which tollgate does not tunnel. Any other
	// target would be routed as one path and sent upstream as "/".
	switch {
	case target[0] == '/':
	case target == "*" && method == "OPTIONS":
	case strings.Contains(target, "://"):
	default:
		return badRequest("invalid request target")
	}
	minor, err := parseVersion(version)
	if err != nil {
		return err
	}
	r.Method, r.Target, r.Minor = method, target, minor
	return nil
}

// parseFraming works out the body length, the host and the connection's
// fate, refusing what RFC 9112 says a server must refuse.
func (r *Request) parseFraming() error {
	h := r.Header
	if err := r.parseHost(); err != nil {
		return err
	}
	cl, err := contentLength(h)
	if err != nil {
		return err
	}
	hasTE, _, only := transferChunked(h)
	switch {
	case hasTE && r.Minor == 0:
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	case hasTE && !only:
		// Any coding but a lone chunked: Nginx answers 501 ("unknown
		// Transfer-Encoding"), as RFC 9112 §6.1 suggests for codings a
		// server does not implement.
		return &Error{Status: 501, Reason: "unsupported transfer coding"}
	case hasTE && cl >= 0:
		// The classic smuggling pair (CL.TE, TE.CL): RFC 9112 §6.1 lets a
		// server refuse it, and a proxy must, or a backend that believes
		// Content-Length reads the rest of the body as another request.
		// Nginx refuses it too (since 1.21.1).
		return badRequest("both Content-Length and Transfer-Encoding")
	case hasTE:
		r.Chunked, r.ContentLength = true, -1
	case cl >= 0:
		r.ContentLength = cl
	}
	// "close" wins over "keep-alive" whatever the version (RFC 9112 §9.6).
	r.KeepAlive = (r.Minor == 1 || h.HasToken("Connection", "keep-alive")) &&
		!h.HasToken("Connection", "close")
	if h.Has("Expect") {
		// Only a lone "100-continue" is understood (RFC 9110 §10.1.1);
		// an empty or second Expect field must not slip through unseen.
		if v := h.Get("Expect"); !strings.EqualFold(v, "100-continue") || h.Count("Expect") > 1 {
			return &Error{Status: 417, Reason: "unsupported expectation"}
		}
		r.ExpectContinue = r.Minor == 1 && r.ContentLength != 0
	}
	if up := h.Get("Upgrade"); up != "" && h.HasToken("Connection", "upgrade") {
		r.Upgrade = up
	}
	return nil
}

// parseHost takes the host from an absolute-form target or the Host field;
// HTTP/1.1 requires exactly one Host field (RFC 9112 §3.2).
func (r *Request) parseHost() error {
	n := r.Header.Count("Host")
	if n > 1 {
		return badRequest("more than one Host field")
	}
	if n == 0 && r.Minor == 1 {
		return badRequest("missing Host field")
	}
	r.Host = r.Header.Get("Host")
	for i := 0; i < len(r.Host); i++ {
		if c := r.Host[i]; c <= ' ' || c == '/' || c == '@' || c == 0x7f {
			return badRequest("invalid Host field")
		}
	}
	if scheme, rest, ok := strings.Cut(r.Target, "://"); ok && !strings.HasPrefix(r.Target, "/") {
		if !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
			return badRequest("unsupported scheme in request target")
		}
		authority, _, _ := strings.Cut(rest, "/")
		authority, _, _ = strings.Cut(authority, "?")
		if authority == "" || strings.IndexByte(authority, '@') >= 0 {
			return badRequest("invalid authority in request target")
		}
		r.Host = authority
	}
	return nil
}

// Path returns the path of the target (origin or absolute form), without the
// query; "*" for an asterisk-form OPTIONS.
func (r *Request) Path() string {
	// One parse of the target for both: the route is chosen on exactly
	// the path the backend is sent.
	t := r.OriginTarget()
	if i := strings.IndexByte(t, '?'); i >= 0 {
		t = t[:i]
	}
	return t
}

// OriginTarget returns the target in origin form (path and query), as sent
// upstream: absolute-form targets lose their scheme and authority.
func (r *Request) OriginTarget() string {
	t := r.Target
	if strings.HasPrefix(t, "/") || t == "*" {
		return t
	}
	if _, rest, ok := strings.Cut(t, "://"); ok {
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			if rest[i] == '?' {
				return "/" + rest[i:]
			}
			return rest[i:]
		}
	}
	return "/"
}

// HasBody reports whether a body follows the head.
func (r *Request) HasBody() bool { return r.ContentLength != 0 }
