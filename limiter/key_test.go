package limiter

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// fakeSource is a KeySource over fixed values.
type fakeSource struct {
	addr    netip.Addr
	headers map[string]string
	server  string
}

func (f *fakeSource) RemoteAddr() netip.Addr    { return f.addr }
func (f *fakeSource) Header(name string) string { return f.headers[name] }
func (f *fakeSource) ServerName() string        { return f.server }

func TestKeyAppend(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.7")
	v6 := netip.MustParseAddr("2001:db8:1:2:3:4:5:6")
	src := func(a netip.Addr) *fakeSource {
		return &fakeSource{addr: a, server: "api.example.com",
			headers: map[string]string{"X-Api-Key": "k123", "X-Forwarded-For": "1.1.1.1"}}
	}
	tests := []struct {
		name   string
		key    string
		prefix int
		addr   netip.Addr
		want   string
	}{
		{"binary IPv4", "$binary_remote_addr", 0, v4, "\xc0\x00\x02\x07"},
		{"binary IPv4-mapped counts as IPv4", "$binary_remote_addr", 0, netip.MustParseAddr("::ffff:192.0.2.7"), "\xc0\x00\x02\x07"},
		{"binary IPv6", "$binary_remote_addr", 0, v6, string(v6.AsSlice())},
		{"binary IPv6 zone dropped", "$binary_remote_addr", 0, v6.WithZone("eth0"), string(v6.AsSlice())},
		{"binary IPv6 /64", "$binary_remote_addr", 64, v6, string(netip.MustParseAddr("2001:db8:1:2::").AsSlice())},
		{"binary IPv6 /56", "$binary_remote_addr", 56, netip.MustParseAddr("2001:db8:1:2ff::1"), string(netip.MustParseAddr("2001:db8:1:200::").AsSlice())},
		{"prefix leaves IPv4 alone", "$binary_remote_addr", 64, v4, "\xc0\x00\x02\x07"},
		{"prefix 128 is the whole address", "$binary_remote_addr", 128, v6, string(v6.AsSlice())},
		{"text IPv4", "$remote_addr", 0, v4, "192.0.2.7"},
		{"text IPv6", "$remote_addr", 0, v6, "2001:db8:1:2:3:4:5:6"},
		{"text IPv6 /64", "$remote_addr", 64, v6, "2001:db8:1:2::"},
		{"no IP address (unix socket)", "$binary_remote_addr|$remote_addr", 0, netip.Addr{}, "unix:|unix:"},
		{"header", "$http_x_api_key", 0, v4, "k123"},
		{"header case-insensitive variable", "$HTTP_X_Api_KEY", 0, v4, "k123"},
		{"known header", "$http_x_forwarded_for", 0, v4, "1.1.1.1"},
		{"missing header is empty", "$http_authorization", 0, v4, ""},
		{"server name", "$server_name", 0, v4, "api.example.com"},
		{"constant", "global", 0, v4, "global"},
		{"concatenation", "$binary_remote_addr:$http_x_api_key", 0, v4, "\xc0\x00\x02\x07:k123"},
		{"braces", "${http_x_api_key}_x$remote_addr", 0, v4, "k123_x192.0.2.7"},
		{"name ends at a non-name byte", "$remote_addr-$server_name.", 0, v4, "192.0.2.7-api.example.com."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKey(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			k = k.WithIPv6Prefix(tt.prefix)
			if got := k.Append(nil, src(tt.addr)); string(got) != tt.want {
				t.Errorf("Append = %q; want %q", got, tt.want)
			}
			if k.String() != tt.key {
				t.Errorf("String = %q; want %q", k.String(), tt.key)
			}
		})
	}
}

func TestParseKeyErrors(t *testing.T) {
	tests := []struct {
		key     string
		err     error
		variant string
	}{
		{"$foo", ErrUnknownVariable, "$foo"},
		{"$binary_remote_addr:$remote_user", ErrUnknownVariable, "$remote_user"},
		{"${request_uri}", ErrUnknownVariable, "${request_uri}"},
		{"$http_", ErrUnknownVariable, "$http_"},
		{"$1", ErrUnknownVariable, "$1"},
		{"$", ErrKeySyntax, ""},
		{"a$:b", ErrKeySyntax, ""},
		{"${remote_addr", ErrKeySyntax, ""},
		{"${}", ErrKeySyntax, ""},
		{"${remote-addr}", ErrKeySyntax, ""},
	}
	for _, tt := range tests {
		_, err := ParseKey(tt.key)
		var ke *KeyError
		if !errors.Is(err, tt.err) || !errors.As(err, &ke) || ke.Var != tt.variant {
			t.Errorf("ParseKey(%q) = %v; want %v naming %q", tt.key, err, tt.err, tt.variant)
			continue
		}
		if tt.variant != "" && !strings.Contains(err.Error(), tt.variant) {
			t.Errorf("error %q does not name %s", err, tt.variant)
		}
	}
}

func TestKeyAppendAllocs(t *testing.T) {
	k, err := ParseKey("$binary_remote_addr:$remote_addr:$http_x_api_key:$server_name")
	if err != nil {
		t.Fatal(err)
	}
	k = k.WithIPv6Prefix(64)
	src := &fakeSource{addr: netip.MustParseAddr("2001:db8::1"), server: "s",
		headers: map[string]string{"X-Api-Key": "v"}}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = k.Append(buf[:0], src) }); n != 0 {
		t.Errorf("Append allocates %.0f times; want 0", n)
	}
	z := NewZone("z", k, 1<<20, r10ps)
	rules := []Rule{{Zone: z, Burst: 5}, {Zone: z, Burst: 5}}
	keys := AppendKeys(nil, rules, src)
	if n := testing.AllocsPerRun(100, func() { keys = AppendKeys(keys, rules, src) }); n != 0 {
		t.Errorf("AppendKeys allocates %.0f times; want 0", n)
	}
	if !bytes.Equal(keys[0], k.Append(nil, src)) || len(keys) != 2 {
		t.Errorf("AppendKeys = %q", keys)
	}
}

func TestZeroKeyIsEmpty(t *testing.T) {
	if got := (Key{}).Append(nil, &fakeSource{}); len(got) != 0 {
		t.Errorf("zero Key appends %q", got)
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"$binary_remote_addr", "$binary_remote_addr:$http_x_api_key",
		"${http_a}b", "const", "$", "${", "${x}", "a$b$c", "$server_name$remote_addr", "$http_"} {
		f.Add(s)
	}
	src := &fakeSource{addr: netip.MustParseAddr("192.0.2.1"), server: "srv",
		headers: map[string]string{"A": "va"}}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != s || ke.Pos < 0 || ke.Pos >= len(s) || s[ke.Pos] != '$' {
				t.Fatalf("ParseKey(%q): malformed error %v", s, err)
			}
			return
		}
		if k.String() != s {
			t.Fatalf("String = %q; want %q", k.String(), s)
		}
		got := k.Append(nil, src)
		if !strings.Contains(s, "$") && string(got) != s {
			t.Fatalf("constant key %q appends %q", s, got)
		}
		if again := k.Append([]byte("p"), src); string(again[1:]) != string(got) {
			t.Fatalf("Append is not deterministic or ignores dst: %q vs %q", again, got)
		}
	})
}

func TestKeyUsesRemoteAddr(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want bool
	}{
		{"$binary_remote_addr", true},
		{"$remote_addr:$http_x_api_key", true},
		{"${REMOTE_ADDR}x", true},
		{"$http_x_api_key", false},
		{"$server_name", false},
		{"const", false},
	} {
		k, err := ParseKey(tt.key)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.UsesRemoteAddr(); got != tt.want {
			t.Errorf("ParseKey(%q).UsesRemoteAddr() = %v; want %v", tt.key, got, tt.want)
		}
	}
}
