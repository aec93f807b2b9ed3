package limiter

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// KeySource gives a Key the request values its variables name. The proxy
// implements it over its own request representation, so the engine needs no
// net/http.
type KeySource interface {
	// RemoteAddr is the client address after realip; the zero Addr stands
	// for a client without an IP address (a unix socket).
	RemoteAddr() netip.Addr
	// Header returns the value of the request header with the given
	// canonical name ("X-Api-Key") as Nginx's $http_<name> gives it, or ""
	// when the request has none.
	Header(canonicalName string) string
	// ServerName is the name of the matched server block ($server_name).
	ServerName() string
}

// Errors of ParseKey, wrapped in a *KeyError.
var (
	// ErrUnknownVariable: the key names a variable tollgate does not have.
	ErrUnknownVariable = errors.New("unknown variable")
	// ErrKeySyntax: a "$" not followed by a variable name, or an unclosed "${".
	ErrKeySyntax = errors.New("invalid variable name")
)

// KeyError is a problem in a limit_req_zone key, at byte Pos of Key.
type KeyError struct {
	Key string
	Pos int
	Var string // the variable as written, e.g. "$remote_user"; "" for syntax errors
	Err error  // ErrUnknownVariable or ErrKeySyntax
}

func (e *KeyError) Error() string {
	if e.Var != "" {
		return fmt.Sprintf("key %q: %v %s", e.Key, e.Err, e.Var)
	}
	return fmt.Sprintf("key %q at offset %d: %v", e.Key, e.Pos, e.Err)
}

func (e *KeyError) Unwrap() error { return e.Err }

type partKind uint8

const (
	partConst partKind = iota
	partBinaryRemoteAddr
	partRemoteAddr
	partHeader
	partServerName
)

type keyPart struct {
	kind partKind
	text string // constant text, or the canonical header name
}

// Key is a compiled limit_req_zone key: constant text and the variables
// $binary_remote_addr, $remote_addr, $http_<name> and $server_name, in any
// concatenation ("$binary_remote_addr:$http_x_api_key"). As in Nginx,
// variable names are case-insensitive, "${name}" delimits a name followed
// by name characters, and a key that evaluates to the empty string skips
// its limit.
//
// The zero Key always evaluates empty. A Key is immutable and safe for
// concurrent use.
type Key struct {
	src    string
	parts  []keyPart
	v6bits int // IPv6 prefix length for the address variables; 0: whole address
}

// ParseKey compiles a zone key. Unknown variables are errors (a *KeyError
// wrapping ErrUnknownVariable and naming the variable); Nginx refuses them
// at start-up too.
func ParseKey(s string) (Key, error) {
	k := Key{src: s}
	for i := 0; i < len(s); {
		if s[i] != '$' {
			j := strings.IndexByte(s[i:], '$')
			if j < 0 {
				j = len(s) - i
			}
			k.addConst(s[i : i+j])
			i += j
			continue
		}
		start := i
		name, next, ok := varName(s, i+1)
		if !ok {
			return Key{}, &KeyError{Key: s, Pos: start, Err: ErrKeySyntax}
		}
		part, ok := variable(strings.ToLower(name))
		if !ok {
			return Key{}, &KeyError{Key: s, Pos: start, Var: s[start:next], Err: ErrUnknownVariable}
		}
		k.parts = append(k.parts, part)
		i = next
	}
	return k, nil
}

// varName reads a variable name at s[i:] (just after the '$'), as
// ngx_http_script_compile does: "{name}" or a run of [A-Za-z0-9_].
func varName(s string, i int) (name string, next int, ok bool) {
	if i < len(s) && s[i] == '{' {
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", 0, false // Nginx: the closing bracket is missing
		}
		name = s[i+1 : i+j]
		return name, i + j + 1, name != "" && strings.IndexFunc(name, notNameRune) < 0
	}
	j := i
	for j < len(s) && isNameByte(s[j]) {
		j++
	}
	return s[i:j], j, j > i
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

func notNameRune(r rune) bool { return r >= 0x80 || !isNameByte(byte(r)) }

// variable resolves a lower-case variable name.
func variable(name string) (keyPart, bool) {
	switch name {
	case "binary_remote_addr":
		return keyPart{kind: partBinaryRemoteAddr}, true
	case "remote_addr":
		return keyPart{kind: partRemoteAddr}, true
	case "server_name":
		return keyPart{kind: partServerName}, true
	}
	// Nginx would take "$http_" and never find a header; refuse it instead.
	if h, ok := strings.CutPrefix(name, "http_"); ok && h != "" {
		return keyPart{kind: partHeader, text: headerName(h)}, true
	}
	return keyPart{}, false
}

// headerName turns the tail of $http_x_api_key into X-Api-Key. Nginx matches
// a header whose name, lower-cased with '-' read as '_', equals the tail
// (ngx_http_variable_unknown_header).
func headerName(tail string) string {
	b := []byte(tail)
	up := true
	for i, c := range b {
		switch {
		case c == '_':
			b[i], up = '-', true
			continue
		case up && c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
		up = false
	}
	return string(b)
}

func (k *Key) addConst(s string) {
	if n := len(k.parts); n > 0 && k.parts[n-1].kind == partConst {
		k.parts[n-1].text += s
		return
	}
	k.parts = append(k.parts, keyPart{kind: partConst, text: s})
}

// String returns the key as written.
func (k Key) String() string { return k.src }

// IsBinaryRemoteAddr reports whether the key is exactly $binary_remote_addr,
// so that its values are 4- or 16-byte addresses (Top prints them as such).
func (k Key) IsBinaryRemoteAddr() bool {
	return len(k.parts) == 1 && k.parts[0].kind == partBinaryRemoteAddr
}

// UsesRemoteAddr reports whether the key names the client address
// ($binary_remote_addr or $remote_addr): such a zone puts every client
// behind one proxy into one bucket unless realip resolves the client.
func (k Key) UsesRemoteAddr() bool {
	for _, p := range k.parts {
		if p.kind == partBinaryRemoteAddr || p.kind == partRemoteAddr {
			return true
		}
	}
	return false
}

// WithIPv6Prefix returns k keying IPv6 clients of $binary_remote_addr and
// $remote_addr by their first bits bits (64: one key per /64), so a client
// cannot dodge a per-address limit by hopping through its own prefix. bits
// 0 or 128 (or out of range) keys by the whole address, as Nginx does.
// IPv4 clients are unaffected.
func (k Key) WithIPv6Prefix(bits int) Key {
	if bits <= 0 || bits >= 128 {
		bits = 0
	}
	k.v6bits = bits
	return k
}

// IPv6Prefix is the prefix length set by WithIPv6Prefix; 0: whole address.
func (k Key) IPv6Prefix() int { return k.v6bits }

// Append appends the key's value for a request to dst and returns the
// extended buffer. It allocates only to grow dst.
//
// $binary_remote_addr is 4 bytes for IPv4 (IPv4-mapped IPv6 addresses
// count as IPv4: tollgate's dual-stack listeners report them) and 16 for
// IPv6; $remote_addr is the address in text. A client without an IP
// address gives "unix:" for both, as Nginx does for a unix socket.
func (k Key) Append(dst []byte, src KeySource) []byte {
	for i := range k.parts {
		p := &k.parts[i]
		switch p.kind {
		case partConst:
			dst = append(dst, p.text...)
		case partBinaryRemoteAddr:
			dst = k.appendAddr(dst, src.RemoteAddr(), true)
		case partRemoteAddr:
			dst = k.appendAddr(dst, src.RemoteAddr(), false)
		case partHeader:
			dst = append(dst, src.Header(p.text)...)
		case partServerName:
			dst = append(dst, src.ServerName()...)
		}
	}
	return dst
}

func (k Key) appendAddr(dst []byte, a netip.Addr, binary bool) []byte {
	if !a.IsValid() {
		return append(dst, "unix:"...)
	}
	a = a.Unmap().WithZone("")
	if a.Is6() && k.v6bits != 0 {
		a = netip.PrefixFrom(a, k.v6bits).Masked().Addr()
	}
	if !binary {
		return a.AppendTo(dst)
	}
	if a.Is4() {
		b := a.As4()
		return append(dst, b[:]...)
	}
	b := a.As16()
	return append(dst, b[:]...)
}
