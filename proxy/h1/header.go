// Package h1 is tollgate's HTTP/1.1 codec: request and response heads parsed
// into reusable structs with their fields kept in wire order, and the body
// framings (Content-Length, chunked, close-delimited). It allocates one
// string per message head and nothing per field, which is what lets the proxy
// keep up with HAProxy on one core; net/http's codec allocates a map and a
// string per field.
//
// It follows RFC 9110 and RFC 9112, rejecting what a proxy must not pass on
// (conflicting lengths, obsolete line folding, bad field names), so that a
// request cannot mean one thing to tollgate and another to the backend.
package h1

import "strings"

// Field is one header field as it appeared on the wire.
type Field struct {
	Name  string
	Value string
}

// Header is a message's header fields in wire order. Lookups are
// case-insensitive; there are few fields, so a scan beats a map.
type Header []Field

// Get returns the value of the first field named name, or "".
func (h Header) Get(name string) string {
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			return h[i].Value
		}
	}
	return ""
}

// Has reports whether a field named name is present.
func (h Header) Has(name string) bool {
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			return true
		}
	}
	return false
}

// Values calls fn with the value of each field named name, in order.
func (h Header) Values(name string, fn func(string)) {
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			fn(h[i].Value)
		}
	}
}

// Count returns how many fields are named name.
func (h Header) Count(name string) int {
	n := 0
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			n++
		}
	}
	return n
}

// HasToken reports whether any field named name lists token in its
// comma-separated value (case-insensitive), as Connection and TE do.
func (h Header) HasToken(name, token string) bool {
	for i := range h {
		if strings.EqualFold(h[i].Name, name) && hasToken(h[i].Value, token) {
			return true
		}
	}
	return false
}

func hasToken(list, token string) bool {
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		if strings.EqualFold(strings.TrimSpace(item), token) {
			return true
		}
	}
	return false
}

// hopByHop are the fields that describe one connection, not the message
// (RFC 9110 §7.6.1, plus the de-facto Proxy-Connection and Keep-Alive), and
// the framing fields a proxy rewrites itself.
var hopByHop = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "TE", "Trailer",
	"Transfer-Encoding", "Upgrade", "Content-Length",
}

// IsHopByHop reports whether a field must not be forwarded as it is: a
// connection-level field, a framing field, or one named in the message's
// Connection header (RFC 9110 §7.6.1). To filter a whole message, build a
// HopFilter once instead: this scans the fields on every call.
func (h Header) IsHopByHop(name string) bool {
	f := h.HopFilter()
	return f.IsHopByHop(name)
}

// HopFilter tells the hop-by-hop fields of one message apart. Built once per
// message, it makes filtering linear in the number of fields: a head of
// thousands of fields must not cost thousands squared comparisons.
type HopFilter struct {
	conn  [4]string           // the Connection field values, the usual case
	n     int                 // how many of conn are used
	named map[string]struct{} // lower-cased tokens, when there are more fields
}

// HopFilter collects the message's Connection field values.
func (h Header) HopFilter() HopFilter {
	var f HopFilter
	for i := range h {
		if !strings.EqualFold(h[i].Name, "Connection") {
			continue
		}
		if f.n < len(f.conn) && f.named == nil {
			f.conn[f.n] = h[i].Value
			f.n++
			continue
		}
		if f.named == nil {
			f.named = map[string]struct{}{}
			for _, v := range f.conn[:f.n] {
				addTokens(f.named, v)
			}
		}
		addTokens(f.named, h[i].Value)
	}
	return f
}

func addTokens(set map[string]struct{}, list string) {
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		if item = strings.TrimSpace(item); item != "" {
			set[strings.ToLower(item)] = struct{}{}
		}
	}
}

// IsHopByHop reports whether the field name must not be forwarded.
func (f *HopFilter) IsHopByHop(name string) bool {
	for _, hb := range hopByHop {
		if strings.EqualFold(name, hb) {
			return true
		}
	}
	if f.named != nil {
		_, ok := f.named[strings.ToLower(name)]
		return ok
	}
	for _, v := range f.conn[:f.n] {
		if hasToken(v, name) {
			return true
		}
	}
	return false
}

// isTokenChar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool {
	return tokenTable[c]
}

var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validValue reports whether a field value has no CR, LF or NUL (RFC 9110
// §5.5): such bytes would let a value smuggle a second field.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}
