package proxy

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func proxyV2(cmd, fam byte, addrs []byte) string {
	h := append([]byte{}, proxyV2Sig...)
	h = append(h, 0x20|cmd, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(addrs)))
	return string(append(h, addrs...))
}

func TestReadProxyHeader(t *testing.T) {
	v4 := append(append([]byte{203, 0, 113, 9, 10, 0, 0, 1}, 0x1f, 0x90), 0x00, 0x50)
	v6 := make([]byte, 36)
	copy(v6, netip.MustParseAddr("2001:db8::7").AsSlice())
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"v1 tcp4", "PROXY TCP4 203.0.113.9 10.0.0.1 51000 80\r\nGET", "203.0.113.9", true},
		{"v1 tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\nGET", "2001:db8::7", true},
		{"v1 unknown", "PROXY UNKNOWN\r\nGET", "invalid IP", true},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n", "", false},
		{"v1 bad port", "PROXY TCP4 1.2.3.4 10.0.0.1 70000 80\r\n", "", false},
		{"v1 no CRLF", "PROXY TCP4 1.2.3.4 10.0.0.1 1 80\n", "", false},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n", "", false},
		{"v2 tcp4", proxyV2(1, 0x11, v4) + "GET", "203.0.113.9", true},
		{"v2 tcp6", proxyV2(1, 0x21, v6) + "GET", "2001:db8::7", true},
		{"v2 local", proxyV2(0, 0x00, nil) + "GET", "invalid IP", true},
		{"v2 tcp4 short", proxyV2(1, 0x11, v4[:8]), "", false},
		{"v2 bad command", proxyV2(5, 0x11, v4), "", false},
		{"not proxy", "GET / HTTP/1.1\r\n", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			addr, err := readProxyHeader(br)
			if (err == nil) != tt.ok || (tt.ok && addr.String() != tt.want) {
				t.Fatalf("readProxyHeader = %v, %v; want %q ok=%v", addr, err, tt.want, tt.ok)
			}
			if tt.ok && strings.HasSuffix(tt.in, "GET") {
				if rest, _ := io.ReadAll(br); string(rest) != "GET" {
					t.Errorf("left %q after the header, want GET", rest)
				}
			}
		})
	}
}

// TestProxyProtocolListener: a trusted balancer's PROXY header names the
// client for real_ip_header: proxy_protocol; an untrusted peer's header is
// just a malformed request (400); a trusted peer without one is closed.
func TestProxyProtocolListener(t *testing.T) {
	seen := make(chan string, 4)
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("X-Real-IP") + " | " + r.Header.Get("X-Forwarded-For")
	}))
	trusted := startProxy(t, "listen:\n  - addr: 127.0.0.1:0\n    proxy_protocol_from: [127.0.0.1]\n"+
		"real_ip:\n  set_real_ip_from: [127.0.0.1]\n  real_ip_header: proxy_protocol\n"+upstreamYAML(b.Addr))
	resp, _ := rawRequest(t, trusted.Addr, "PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("trusted PROXY: %d", resp.StatusCode)
	}
	if got := <-seen; got != "203.0.113.9 | 127.0.0.1" {
		t.Errorf("backend saw X-Real-IP | XFF = %q, want the PROXY address and the TCP peer", got)
	}

	c, err := net.Dial("tcp", trusted.Addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		t.Error("a trusted peer without a PROXY header got an answer, want the connection closed")
	}
	c.Close()

	untrusted := startProxy(t, "listen:\n  - addr: 127.0.0.1:0\n    proxy_protocol_from: [10.0.0.0/8]\n"+upstreamYAML(b.Addr))
	if resp, _ := rawRequest(t, untrusted.Addr, "PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 400 {
		t.Errorf("untrusted PROXY header: %d, want 400", resp.StatusCode)
	}
}

// FuzzReadProxyHeader: any bytes give an address or an error, never a panic.
func FuzzReadProxyHeader(f *testing.F) {
	f.Add("PROXY TCP4 203.0.113.9 10.0.0.1 51000 80\r\n")
	f.Add(proxyV2(1, 0x11, []byte{1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2}))
	f.Add(proxyV2(1, 0x21, make([]byte, 36)))
	f.Fuzz(func(t *testing.T, in string) {
		readProxyHeader(bufio.NewReader(strings.NewReader(in)))
	})
}

// TestConnsPerIPCountsProxyAddress: behind a balancer speaking PROXY
// protocol, max_connections_per_ip counts each client the header names,
// not the balancer: two clients each get a connection, a second one of the
// same client is refused.
func TestConnsPerIPCountsProxyAddress(t *testing.T) {
	b := namedBackend(t, "ok")
	p := startProxy(t, "listen:\n  - addr: 127.0.0.1:0\n    proxy_protocol_from: [127.0.0.1]\nmax_connections_per_ip: 1\n"+upstreamYAML(b.Addr))
	hold := func(client string) net.Conn {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "PROXY TCP4 "+client+" 127.0.0.1 51000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("client %s: %v", client, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("client %s: %d, want 200 (one connection each)", client, resp.StatusCode)
		}
		return c
	}
	hold("203.0.113.1")
	hold("203.0.113.2") // the same balancer address, another client
	resp, _ := rawRequest(t, p.Addr, "PROXY TCP4 203.0.113.1 127.0.0.1 51001 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 503 {
		t.Errorf("a second connection of 203.0.113.1: %d, want 503 max_connections_per_ip", resp.StatusCode)
	}
}
