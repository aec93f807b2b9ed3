package proxy

import "strings"

// matchPath is the path routes are matched on, normalised as Nginx does
// before it picks a location (ngx_http_parse_complex_uri): %XX decoded,
// runs of slashes merged, "." and ".." segments resolved. The backend still
// gets the target byte for byte; only the route choice sees this form, so
// "/./admin" or "//admin" cannot slip past the /admin route and its limits.
// ok is false for a path that climbs above the root, which Nginx answers 400.
func matchPath(raw string) (path string, ok bool) {
	if !needsNormalising(raw) {
		return raw, true
	}
	decoded := percentDecode(raw)
	segs := make([]string, 0, 8)
	for seg := range strings.SplitSeq(decoded, "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(segs) == 0 {
				return "", false
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
	}
	out := "/" + strings.Join(segs, "/")
	if last := decoded[len(decoded)-1]; (last == '/' || strings.HasSuffix(decoded, "/.") || strings.HasSuffix(decoded, "/..")) && out != "/" {
		out += "/"
	}
	return out, true
}

// needsNormalising reports whether raw has anything matchPath would change,
// so the common clean path costs one scan and no allocation.
func needsNormalising(raw string) bool {
	if raw == "" || raw[0] != '/' {
		return false // "*" and the like are matched as they are
	}
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '%':
			return true
		case '/':
			if i+1 < len(raw) && (raw[i+1] == '/' || raw[i+1] == '.') {
				return true
			}
		}
	}
	return false
}

// percentDecode decodes %XX escapes; a malformed escape stays as it is.
func percentDecode(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhexByte(s[i+1])<<4 | unhexByte(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhexByte(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
