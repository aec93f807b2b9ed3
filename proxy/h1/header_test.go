package h1

import (
	"slices"
	"testing"
)

// sampleHeader has repeated names in mixed case, a list-valued Connection and
// an empty value, so every lookup has something to get wrong.
var sampleHeader = Header{
	{"Host", "example.com"},
	{"Accept", "text/html"},
	{"x-multi", "one"},
	{"X-Multi", "two"},
	{"X-MULTI", "three"},
	{"Connection", "keep-alive, X-Hop"},
	{"connection", " Upgrade ,"},
	{"TE", "trailers, deflate;q=0.5"},
	{"Empty", ""},
}

func TestHeaderLookups(t *testing.T) {
	tests := []struct {
		name      string
		field     string
		wantGet   string
		wantHas   bool
		wantCount int
		wantVals  []string
	}{
		{"exact case", "Host", "example.com", true, 1, []string{"example.com"}},
		{"lower case", "host", "example.com", true, 1, []string{"example.com"}},
		{"upper case", "ACCEPT", "text/html", true, 1, []string{"text/html"}},
		{"repeated, first wins Get", "X-Multi", "one", true, 3, []string{"one", "two", "three"}},
		{"repeated, mixed query case", "x-mUlTi", "one", true, 3, []string{"one", "two", "three"}},
		{"two Connection fields", "CONNECTION", "keep-alive, X-Hop", true, 2, []string{"keep-alive, X-Hop", " Upgrade ,"}},
		{"present with empty value", "empty", "", true, 1, []string{""}},
		{"absent", "Cookie", "", false, 0, nil},
		{"prefix of a name is not the name", "X-Mult", "", false, 0, nil},
		{"name with a suffix is not the name", "Hosts", "", false, 0, nil},
		{"empty name", "", "", false, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := sampleHeader
			if got := h.Get(tt.field); got != tt.wantGet {
				t.Errorf("Get(%q) = %q, want %q", tt.field, got, tt.wantGet)
			}
			if got := h.Has(tt.field); got != tt.wantHas {
				t.Errorf("Has(%q) = %v, want %v", tt.field, got, tt.wantHas)
			}
			if got := h.Count(tt.field); got != tt.wantCount {
				t.Errorf("Count(%q) = %d, want %d", tt.field, got, tt.wantCount)
			}
			var vals []string
			h.Values(tt.field, func(v string) { vals = append(vals, v) })
			if !slices.Equal(vals, tt.wantVals) {
				t.Errorf("Values(%q) = %q, want %q", tt.field, vals, tt.wantVals)
			}
		})
	}
}

func TestHeaderNilIsEmpty(t *testing.T) {
	var h Header
	if h.Get("Host") != "" || h.Has("Host") || h.Count("Host") != 0 || h.HasToken("Connection", "close") || h.IsHopByHop("X-Foo") {
		t.Error("nil Header reports a field")
	}
	h.Values("Host", func(string) { t.Error("Values called fn on a nil Header") })
}

func TestHeaderHasToken(t *testing.T) {
	tests := []struct {
		name  string
		h     Header
		field string
		token string
		want  bool
	}{
		{"single", Header{{"Connection", "close"}}, "Connection", "close", true},
		{"case-insensitive token", Header{{"Connection", "Close"}}, "Connection", "CLOSE", true},
		{"case-insensitive name", Header{{"connection", "close"}}, "CONNECTION", "close", true},
		{"in a list", Header{{"Connection", "keep-alive, close"}}, "Connection", "close", true},
		{"list with OWS", Header{{"Connection", "a ,\tclose\t, b"}}, "Connection", "close", true},
		{"second field", Header{{"Connection", "keep-alive"}, {"Connection", "upgrade"}}, "Connection", "upgrade", true},
		{"empty list members", Header{{"Connection", ",,close,,"}}, "Connection", "close", true},
		{"substring is not a token", Header{{"Connection", "closed"}}, "Connection", "close", false},
		{"token inside a longer one", Header{{"Connection", "not-close"}}, "Connection", "close", false},
		{"other field", Header{{"X-Connection", "close"}}, "Connection", "close", false},
		{"absent", Header{{"Host", "h"}}, "Connection", "close", false},
		{"empty value", Header{{"Connection", ""}}, "Connection", "close", false},
		{"TE trailers", Header{{"TE", "deflate, trailers"}}, "te", "trailers", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.h.HasToken(tt.field, tt.token); got != tt.want {
				t.Errorf("%v.HasToken(%q, %q) = %v, want %v", tt.h, tt.field, tt.token, got, tt.want)
			}
		})
	}
}

func TestHeaderIsHopByHop(t *testing.T) {
	tests := []struct {
		name  string
		h     Header
		field string
		want  bool
	}{
		{"Connection", nil, "Connection", true},
		{"Proxy-Connection", nil, "proxy-connection", true},
		{"Keep-Alive", nil, "KEEP-ALIVE", true},
		{"TE", nil, "te", true},
		{"Trailer", nil, "Trailer", true},
		{"Transfer-Encoding", nil, "transfer-encoding", true},
		{"Upgrade", nil, "Upgrade", true},
		{"Content-Length is rewritten", nil, "Content-Length", true},
		{"end-to-end field", nil, "Content-Type", false},
		{"Trailers is not Trailer", nil, "Trailers", false},
		{"named in Connection", Header{{"Connection", "close, X-Foo"}}, "X-Foo", true},
		{"named in Connection, other case", Header{{"Connection", "close, X-Foo"}}, "x-foo", true},
		{"named in a second Connection field", Header{{"Connection", "close"}, {"CONNECTION", " x-bar "}}, "X-Bar", true},
		{"not named in Connection", Header{{"Connection", "close, X-Foo"}}, "X-Food", false},
		{"other field listing it", Header{{"Vary", "X-Foo"}}, "X-Foo", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.h.IsHopByHop(tt.field); got != tt.want {
				t.Errorf("%v.IsHopByHop(%q) = %v, want %v", tt.h, tt.field, got, tt.want)
			}
		})
	}
}

func TestTokenAndValueChars(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		wantToken := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
			b != 0 && slices.Contains([]byte("!#$%&'*+-.^_`|~"), b)
		if got := isTokenChar(b); got != wantToken {
			t.Errorf("isTokenChar(%#x) = %v, want %v (RFC 9110 §5.6.2)", b, got, wantToken)
		}
		wantValue := b != '\r' && b != '\n' && b != 0
		if got := validValue(string([]byte{'a', b, 'b'})); got != wantValue {
			t.Errorf("validValue with %#x = %v, want %v", b, got, wantValue)
		}
	}
}

// TestHopFilterManyConnectionFields: with more Connection fields than the
// filter keeps inline, every named field is still hop-by-hop.
func TestHopFilterManyConnectionFields(t *testing.T) {
	var h Header
	for _, n := range []string{"A", "B", "C", "D", "E", "F"} {
		h = append(h, Field{Name: "Connection", Value: "x-" + n})
	}
	f := h.HopFilter()
	for _, n := range []string{"X-A", "x-f", "Connection", "transfer-encoding"} {
		if !f.IsHopByHop(n) {
			t.Errorf("%s not hop-by-hop", n)
		}
	}
	if f.IsHopByHop("X-G") {
		t.Error("X-G hop-by-hop")
	}
}
