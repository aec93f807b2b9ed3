package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopByHop lists the headers that describe one connection, not the message
// (RFC 9110 §7.6.1, plus the de-facto Proxy-Connection and Keep-Alive).
// They are never forwarded; tollgate writes its own framing headers.
var hopByHop = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true, // "TE: trailers" is re-added on purpose
	"Trailer":             true, // rewritten from the message's trailers
	"Transfer-Encoding":   true,
	"Upgrade":             true, // re-added for an Upgrade request
	"Content-Length":      true, // rewritten from the parsed length
}

// connectionTokens returns the header names listed in Connection headers:
// those are hop-by-hop too (RFC 9110 §7.6.1). It returns nil, without
// allocating, when there are none beyond keep-alive/close.
func connectionTokens(h http.Header) []string {
	var names []string
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			tok = textproto.TrimString(tok)
			if tok == "" || strings.EqualFold(tok, "close") || strings.EqualFold(tok, "keep-alive") {
				continue
			}
			names = append(names, textproto.CanonicalMIMEHeaderKey(tok))
		}
	}
	return names
}

// skipHeader reports whether a header must not be forwarded as it is.
func skipHeader(name string, named []string) bool {
	if hopByHop[name] {
		return true
	}
	for _, n := range named {
		if n == name {
			return true
		}
	}
	return false
}

// isUpgrade reports whether r asks to switch protocols (WebSocket, h2c, …)
// and returns the protocol asked for.
func isUpgrade(h http.Header) (string, bool) {
	up := h.Get("Upgrade")
	if up == "" {
		return "", false
	}
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(tok), "upgrade") {
				return up, true
			}
		}
	}
	return "", false
}

// wantsTrailers reports whether the client said it accepts trailers
// ("TE: trailers"); gRPC needs this forwarded.
func wantsTrailers(h http.Header) bool {
	for _, v := range h["Te"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(tok), "trailers") {
				return true
			}
		}
	}
	return false
}

// copyResponseHeader copies a backend's response headers to the client,
// leaving out hop-by-hop ones.
func copyResponseHeader(dst, src http.Header) {
	named := connectionTokens(src)
	for k, vv := range src {
		if k != "Content-Length" && skipHeader(k, named) {
			continue
		}
		dst[k] = vv
	}
}
