package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/limiter"
)

// errProxyHeader is a missing or malformed PROXY protocol header.
var errProxyHeader = errors.New("broken PROXY protocol header")

// proxyV2Sig opens every PROXY protocol v2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// readProxyHeader reads a PROXY protocol header (v1 text or v2 binary, as
// HAProxy's spec defines them) from br and returns the client address it
// carries. A v2 LOCAL header (a health check from the balancer itself) and
// a v1 UNKNOWN carry none: the returned address is then invalid.
func readProxyHeader(br *bufio.Reader) (netip.Addr, error) {
	sig, err := br.Peek(len(proxyV2Sig))
	if err == nil && bytes.Equal(sig, proxyV2Sig) {
		return readProxyV2(br)
	}
	if p, err := br.Peek(6); err != nil || string(p) != "PROXY " {
		return netip.Addr{}, errProxyHeader
	}
	return readProxyV1(br)
}

// readProxyV1 parses "PROXY TCP4 src dst sport dport\r\n" (at most 107
// bytes, the spec's bound).
func readProxyV1(br *bufio.Reader) (netip.Addr, error) {
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) > 107 || !bytes.HasSuffix(line, []byte("\r\n")) {
		return netip.Addr{}, errProxyHeader
	}
	f := strings.Fields(string(line[:len(line)-2]))
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		return netip.Addr{}, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return netip.Addr{}, errProxyHeader
	}
	src, err := netip.ParseAddr(f[2])
	if err != nil || src.Is4() != (f[1] == "TCP4") {
		return netip.Addr{}, errProxyHeader
	}
	if _, err := netip.ParseAddr(f[3]); err != nil {
		return netip.Addr{}, errProxyHeader
	}
	for _, port := range f[4:] {
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return netip.Addr{}, errProxyHeader
		}
	}
	return src, nil
}

// readProxyV2 parses the binary header: signature, version and command,
// family, length, addresses, then TLVs (skipped).
func readProxyV2(br *bufio.Reader) (netip.Addr, error) {
	head, err := br.Peek(16)
	if err != nil {
		return netip.Addr{}, errProxyHeader
	}
	verCmd, fam := head[12], head[13]
	n := int(binary.BigEndian.Uint16(head[14:16]))
	if verCmd>>4 != 2 || n > 512 {
		return netip.Addr{}, errProxyHeader
	}
	buf, err := br.Peek(16 + n)
	if err != nil {
		return netip.Addr{}, errProxyHeader
	}
	body := buf[16:]
	defer br.Discard(16 + n)
	switch verCmd & 0xf {
	case 0: // LOCAL: the balancer speaking for itself
		return netip.Addr{}, nil
	case 1: // PROXY
	default:
		return netip.Addr{}, errProxyHeader
	}
	switch fam {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return netip.Addr{}, errProxyHeader
		}
		return netip.AddrFrom4([4]byte(body[0:4])), nil
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return netip.Addr{}, errProxyHeader
		}
		return netip.AddrFrom16([16]byte(body[0:16])).Unmap(), nil
	case 0x00: // UNSPEC
		return netip.Addr{}, nil
	}
	return netip.Addr{}, errProxyHeader
}

// proxyProtocolHeader is real_ip_header's value (canonicalised) that takes
// the client address from the PROXY protocol header, as Nginx's.
const proxyProtocolHeader = "Proxy_protocol"

// proxyProtocolFrom is whom a listener expects PROXY protocol headers from,
// or nil when it expects none.
func proxyProtocolFrom(l config.Listener) *limiter.RealIP {
	if len(l.ProxyProtocolFrom) == 0 {
		return nil
	}
	prefixes := make([]netip.Prefix, len(l.ProxyProtocolFrom))
	for i, p := range l.ProxyProtocolFrom {
		prefixes[i] = p.Prefix
	}
	return limiter.NewRealIP(prefixes, "", false)
}
