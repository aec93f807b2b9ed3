package limiter

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	trustedLocal = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	peerLocal    = netip.MustParseAddr("127.0.0.1")
)

// TestRealIPNginxTable is the table of specs/nginx-semantics.md "realip",
// checked on nginx 1.22.1: peer 127.0.0.1, trusted 127.0.0.1/32 and 10/8.
func TestRealIPNginxTable(t *testing.T) {
	tests := []struct {
		xff     string
		off, on string // resolved client, recursive off and on
	}{
		{"1.1.1.1, 10.0.0.2", "10.0.0.2", "1.1.1.1"},
		{"10.0.0.3, 10.0.0.2", "10.0.0.2", "10.0.0.3"},
		{"garbage, 10.0.0.2", "10.0.0.2", "10.0.0.2"},
		{"1.1.1.1, bogus", "127.0.0.1", "127.0.0.1"},
		{"[2001:db8::1]:443, 10.0.0.2", "10.0.0.2", "2001:db8::1"},
		// Separators are ' ' and ',' in any mix; ports are dropped.
		{"1.1.1.1,10.0.0.2", "10.0.0.2", "1.1.1.1"},
		{"1.1.1.1 10.0.0.2 ,", "10.0.0.2", "1.1.1.1"},
		{"1.1.1.1:8080", "1.1.1.1", "1.1.1.1"},
		{"10.0.0.2:1234", "10.0.0.2", "10.0.0.2"},
		// tollgate unmaps; Nginx would show ::ffff:1.1.1.1 as $remote_addr.
		{"::ffff:1.1.1.1", "1.1.1.1", "1.1.1.1"},
		// "[v6]" needs a port (ngx_parse_addr_port).
		{"[2001:db8::7]", "127.0.0.1", "127.0.0.1"},
		{"1.1.1.1, [2001:db8::7]", "127.0.0.1", "127.0.0.1"},
		// Recursive on: the rightmost untrusted wins; past it nothing counts.
		{"2.2.2.2, 1.1.1.1, 10.0.0.2", "10.0.0.2", "1.1.1.1"},
		{"garbage, 1.1.1.1, 10.0.0.2", "10.0.0.2", "1.1.1.1"},
		{"", "127.0.0.1", "127.0.0.1"},
		{" , ", "127.0.0.1", "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.xff, func(t *testing.T) {
			for _, rec := range []struct {
				on   bool
				want string
			}{{false, tt.off}, {true, tt.on}} {
				r := NewRealIP(trustedLocal, "X-Forwarded-For", rec.on)
				if got := r.Client(peerLocal, []string{tt.xff}); got.String() != rec.want {
					t.Errorf("recursive=%v: Client = %s, want %s", rec.on, got, rec.want)
				}
			}
		})
	}
}

func TestRealIPUntrustedPeer(t *testing.T) {
	peer := netip.MustParseAddr("192.0.2.7")
	for _, rec := range []bool{false, true} {
		for _, header := range []string{"X-Forwarded-For", "X-Real-Ip"} {
			r := NewRealIP(trustedLocal, header, rec)
			if got := r.Client(peer, []string{"1.1.1.1, 10.0.0.2"}); got != peer {
				t.Errorf("%s recursive=%v: Client = %s, want the peer %s", header, rec, got, peer)
			}
		}
	}
	var zero RealIP
	if got := zero.Client(peerLocal, []string{"1.1.1.1"}); got != peerLocal {
		t.Errorf("zero RealIP: Client = %s, want the peer (trusts nobody)", got)
	}
}

func TestRealIPTrustedMappedPeer(t *testing.T) {
	r := NewRealIP(trustedLocal, "X-Forwarded-For", false)
	mapped := netip.MustParseAddr("::ffff:127.0.0.1")
	if !r.Trusted(mapped) {
		t.Fatal("::ffff:127.0.0.1 not trusted by 127.0.0.1/32")
	}
	if got := r.Client(mapped, []string{"1.1.1.1"}); got.String() != "1.1.1.1" {
		t.Errorf("Client = %s, want 1.1.1.1", got)
	}
}

func TestRealIPSeveralLines(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		off, on string
	}{
		// Non-recursive uses the last line only.
		{"last line wins", []string{"1.1.1.1", "2.2.2.2"}, "2.2.2.2", "2.2.2.2"},
		// Recursive continues into the previous line while all is trusted.
		{"walk into previous line", []string{"1.1.1.1, 10.0.0.5", "10.0.0.3, 10.0.0.2"}, "10.0.0.2", "1.1.1.1"},
		{"stop at untrusted in last line", []string{"1.1.1.1", "3.3.3.3, 10.0.0.2"}, "10.0.0.2", "3.3.3.3"},
		{"all trusted: leftmost", []string{"10.0.0.9", "10.0.0.2"}, "10.0.0.2", "10.0.0.9"},
		{"garbage in previous line keeps the last good", []string{"junk", "10.0.0.2"}, "10.0.0.2", "10.0.0.2"},
		{"garbage in last line: unchanged", []string{"1.1.1.1", "junk"}, "127.0.0.1", "127.0.0.1"},
		// An empty line stops the walk, keeping what later lines resolved
		// (all checked on nginx 1.22.1).
		{"empty last line", []string{"1.1.1.1", ""}, "127.0.0.1", "127.0.0.1"},
		{"empty middle line", []string{"1.1.1.1", "", "10.0.0.2"}, "10.0.0.2", "10.0.0.2"},
		{"separators-only middle line", []string{"1.1.1.1", ", ", "10.0.0.2"}, "10.0.0.2", "10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, rec := range []struct {
				on   bool
				want string
			}{{false, tt.off}, {true, tt.on}} {
				r := NewRealIP(trustedLocal, "X-Forwarded-For", rec.on)
				if got := r.Client(peerLocal, tt.lines); got.String() != rec.want {
					t.Errorf("recursive=%v: Client(%q) = %s, want %s", rec.on, tt.lines, got, rec.want)
				}
			}
		})
	}
}

func TestRealIPXRealIPFirstLineOnly(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		off, on string
	}{
		{"single value", []string{"1.1.1.1"}, "1.1.1.1", "1.1.1.1"},
		{"first line only", []string{"1.1.1.1", "2.2.2.2"}, "1.1.1.1", "1.1.1.1"},
		{"a list is walked like X-Forwarded-For", []string{"1.1.1.1, 10.0.0.2"}, "10.0.0.2", "1.1.1.1"},
		{"garbage: unchanged", []string{"not-an-ip", "2.2.2.2"}, "127.0.0.1", "127.0.0.1"},
		{"with port", []string{"[2001:db8::7]:80"}, "2001:db8::7", "2001:db8::7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, rec := range []struct {
				on   bool
				want string
			}{{false, tt.off}, {true, tt.on}} {
				r := NewRealIP(trustedLocal, "X-Real-Ip", rec.on)
				if got := r.Client(peerLocal, tt.lines); got.String() != rec.want {
					t.Errorf("recursive=%v: Client(%q) = %s, want %s", rec.on, tt.lines, got, rec.want)
				}
			}
		})
	}
}

func TestRealIPNoHeader(t *testing.T) {
	r := NewRealIP(trustedLocal, "X-Forwarded-For", true)
	if got := r.Client(peerLocal, nil); got != peerLocal {
		t.Errorf("Client without header = %s, want the peer", got)
	}
	if r.Header() != "X-Forwarded-For" {
		t.Errorf("Header() = %q", r.Header())
	}
}

// headerAddrs returns every address a token of lines parses to, parsed
// independently of parseAddrPort.
func headerAddrs(lines []string) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, line := range lines {
		for _, tok := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == ',' }) {
			if a, err := netip.ParseAddr(tok); err == nil {
				out[a.Unmap()] = true
			}
			if ap, err := netip.ParseAddrPort(tok); err == nil {
				out[ap.Addr().Unmap()] = true
			}
			if len(tok) > 2 && tok[0] == '[' && tok[len(tok)-1] == ']' {
				if a, err := netip.ParseAddr(tok[1 : len(tok)-1]); err == nil {
					out[a.Unmap()] = true
				}
			}
		}
	}
	return out
}

// FuzzRealIP checks that resolving never panics and always yields either
// the peer or an address written in the header.
func FuzzRealIP(f *testing.F) {
	for _, s := range []string{
		"1.1.1.1, 10.0.0.2", "10.0.0.3, 10.0.0.2", "garbage, 10.0.0.2", "1.1.1.1, bogus",
		"[2001:db8::1]:443, 10.0.0.2", "1.1.1.1\n10.0.0.2", ",,, ,", "[::1]", "[", "::ffff:10.0.0.1",
		"fe80::1%eth0, 10.0.0.2", "10.0.0.2:99999",
	} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(7))
	}
	f.Fuzz(func(t *testing.T, header string, mode uint8) {
		recursive := mode&1 != 0
		name := "X-Forwarded-For"
		if mode&2 != 0 {
			name = "X-Real-Ip"
		}
		peer := peerLocal
		if mode&4 != 0 {
			peer = netip.MustParseAddr("10.1.2.3")
		}
		if mode&8 != 0 {
			peer = netip.MustParseAddr("203.0.113.9") // untrusted
		}
		lines := strings.Split(header, "\n")
		r := NewRealIP(trustedLocal, name, recursive)
		got := r.Client(peer, lines)
		if got == peer {
			return
		}
		if !r.Trusted(peer) {
			t.Fatalf("untrusted peer %s: Client = %s, want the peer", peer, got)
		}
		if !headerAddrs(lines)[got] {
			t.Fatalf("Client(%s, %q) = %s: neither the peer nor an address of the header", peer, lines, got)
		}
	})
}
