// Package limiter decides who a client is and whether it may pass: the real
// client address (ngx_http_realip_module) and, later, limit_req zones and
// adaptive concurrency. It has no net/http in its engine.
package limiter

import (
	"net/netip"
	"strings"
)

// RealIP resolves a request's client address from a trusted proxy's header,
// exactly as ngx_http_realip_module (ngx_http_get_forwarded_addr in
// ngx_http_core_module.c): only a trusted peer's header counts; the
// rightmost address wins, or with recursive the rightmost untrusted one.
//
// The zero value trusts nobody. A RealIP is immutable and safe for
// concurrent use.
type RealIP struct {
	trusted   []netip.Prefix
	header    string // canonical header name, e.g. X-Forwarded-For
	recursive bool
}

// NewRealIP returns a resolver trusting the given prefixes, reading header
// (canonical form), walking it recursively or not.
func NewRealIP(trusted []netip.Prefix, header string, recursive bool) *RealIP {
	return &RealIP{trusted: trusted, header: header, recursive: recursive}
}

// Header is the canonical name of the header the resolver reads.
func (r *RealIP) Header() string { return r.header }

// Trusted reports whether addr is in set_real_ip_from.
func (r *RealIP) Trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range r.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Client returns the client address for a request from peer carrying the
// given lines of the configured header. X-Forwarded-For lines are walked
// last line first; for any other header only the first line counts, as
// Nginx keeps only the first.
func (r *RealIP) Client(peer netip.Addr, lines []string) netip.Addr {
	if len(lines) == 0 || !r.Trusted(peer) {
		return peer
	}
	if r.header != "X-Forwarded-For" {
		addr, _ := r.walk(peer, lines[0])
		return addr
	}
	addr := peer
	for i := len(lines) - 1; i >= 0; i-- {
		next, allTrusted := r.walk(addr, lines[i])
		addr = next
		if !r.recursive || !allTrusted {
			break
		}
	}
	return addr
}

// walk resolves one header line starting from addr (already trusted). It
// returns the resolved address and whether the walk consumed every token
// with each one trusted, so that the previous header line may continue it.
func (r *RealIP) walk(addr netip.Addr, line string) (netip.Addr, bool) {
	rest := line
	first := true
	for {
		if !first && !r.Trusted(addr) {
			return addr, false
		}
		tok, before, ok := lastToken(rest)
		if !ok {
			// An empty line ends the walk: Nginx fails to parse it and
			// keeps what the later lines resolved (checked on 1.22.1).
			return addr, false
		}
		parsed, good := parseAddrPort(tok)
		if !good {
			// Nginx keeps the last good address on a parse failure.
			return addr, false
		}
		addr = parsed
		first = false
		if !r.recursive {
			return addr, false
		}
		if before == "" {
			return addr, r.Trusted(addr)
		}
		rest = before
	}
}

// lastToken splits off the rightmost token of an address list, with ' ' and
// ',' as separators, as ngx_http_get_forwarded_addr_internal scans.
func lastToken(s string) (tok, before string, ok bool) {
	s = strings.TrimRight(s, " ,")
	if s == "" {
		return "", "", false
	}
	i := strings.LastIndexAny(s, " ,")
	return s[i+1:], strings.TrimRight(s[:max(i, 0)], " ,"), true
}

// parseAddrPort parses "addr", "ipv4:port" or "[ipv6]:port" as
// ngx_parse_addr_port does; "[ipv6]" without a port is rejected, as Nginx
// rejects it (checked on 1.22.1).
func parseAddrPort(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
