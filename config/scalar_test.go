package config

import (
	"net/netip"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"zero", "0", 0},
		{"bare number is seconds", "60", 60 * time.Second},
		{"seconds", "60s", 60 * time.Second},
		{"milliseconds", "500ms", 500 * time.Millisecond},
		{"minutes", "1m", time.Minute},
		{"combined", "1h30m", 90 * time.Minute},
		{"space between parts", "1h 30m", 90 * time.Minute},
		{"trailing number is seconds", "1h30", time.Hour + 30*time.Second},
		{"every small unit", "1d1h1m1s1ms", day + time.Hour + time.Minute + time.Second + time.Millisecond},
		{"week", "2w", 14 * day},
		{"month is 30d", "1M", 30 * day},
		{"year is 365d", "1y", 365 * day},
		{"year then month", "1y1M", 395 * day},
		{"unit without number adds 0 (Nginx)", "1hs", time.Hour},
		{"space then number (Nginx st_last)", "1 1", 2 * time.Second},
		{"number after seconds adds seconds (Nginx)", "1s 1", 2 * time.Second},
		{"leading space", " 5", 5 * time.Second},
		{"trailing space", "5 ", 5 * time.Second},
		{"largest", "106751d", 106751 * day},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if err != nil || got.Duration != tt.want {
				t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got.Duration, err, tt.want)
			}
		})
	}
}

func TestParseDurationErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `invalid time "": no number`},
		{"unit only", "s", `invalid time "s": no number`},
		{"go fraction", "1.5s", `invalid time "1.5s": fractions are not allowed (Nginx times are integers); use a smaller unit, e.g. 1500ms`},
		{"negative", "-1s", `invalid time "-1s": a time has no sign`},
		{"plus sign", "+1s", `invalid time "+1s": a time has no sign`},
		{"go unit", "1us", `invalid time "1us": unknown unit "u"; want ms, s, m, h, d, w, M or y`},
		{"upper S", "1S", `invalid time "1S": unknown unit "S"; want ms, s, m, h, d, w, M or y`},
		{"smallest first", "30m1h", `invalid time "30m1h": units must go from largest to smallest, each at most once (e.g. 1h30m)`},
		{"repeated unit", "1m1m", `invalid time "1m1m": units must go from largest to smallest, each at most once (e.g. 1h30m)`},
		{"ms before s", "1ms1s", `invalid time "1ms1s": units must go from largest to smallest, each at most once (e.g. 1h30m)`},
		{"space before unit", "10 s", `invalid time "10 s": units must go from largest to smallest, each at most once (e.g. 1h30m)`},
		{"beyond time.Duration", "300y", `invalid time "300y": too large`},
		{"digits overflow", "99999999999999999999", `invalid time "99999999999999999999": too large`},
		{"sum overflow", "106751d100000000s", `invalid time "106751d100000000s": too large`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseDuration(%q) = %v, %v; want error %s", tt.in, got.Duration, err, tt.want)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{500 * time.Millisecond, "500ms"},
		{1500 * time.Millisecond, "1s500ms"},
		{60 * time.Second, "1m"},
		{90 * time.Minute, "1h30m"},
		{75 * time.Second, "1m15s"},
		{49 * time.Hour, "2d1h"},
		{time.Millisecond + time.Microsecond, "1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			d := Duration{tt.in}
			if got := d.String(); got != tt.want {
				t.Fatalf("Duration(%v).String() = %q; want %q", tt.in, got, tt.want)
			}
			if back, err := ParseDuration(d.String()); err != nil || back.Duration != tt.in.Truncate(time.Millisecond) {
				t.Errorf("ParseDuration(%q) = %v, %v; want %v", d.String(), back.Duration, err, tt.in)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
	}{
		{"zero", "0", 0},
		{"bytes", "512", 512},
		{"k", "16k", 16 << 10},
		{"K", "16K", 16 << 10},
		{"m", "10m", 10 << 20},
		{"M", "10M", 10 << 20},
		{"g", "1g", 1 << 30},
		{"G", "2G", 2 << 30},
		{"max bytes", "9223372036854775807", 1<<63 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err != nil || got.Bytes != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got.Bytes, err, tt.want)
			}
		})
	}
}

func TestParseSizeErrors(t *testing.T) {
	const hint = "; want bytes or a number with k, m or g, e.g. 10m"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `invalid size "": no number` + hint},
		{"unit only", "k", `invalid size "k": no number` + hint},
		{"kb", "10kb", `invalid size "10kb": unexpected "k"` + hint},
		{"fraction", "1.5m", `invalid size "1.5m": unexpected "."` + hint},
		{"negative", "-1", `invalid size "-1": unexpected "-"` + hint},
		{"space", "10 m", `invalid size "10 m": unexpected " "` + hint},
		{"terabytes", "1t", `invalid size "1t": unexpected "t"` + hint},
		{"scaled overflow", "8589934592g", `invalid size "8589934592g": too large` + hint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want error %s", tt.in, got.Bytes, err, tt.want)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {32 << 10, "32k"}, {10 << 20, "10m"}, {1 << 30, "1g"}, {1<<20 + 1<<10, "1025k"},
	}
	for _, tt := range tests {
		if got := (Size{tt.in}).String(); got != tt.want {
			t.Errorf("Size{%d}.String() = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
	}{
		{"per second", "10r/s", 10000},
		{"per minute divisible", "30r/m", 500},
		{"per minute truncates", "4r/m", 66},
		{"one per minute", "1r/m", 16},
		{"sixty per minute is one per second", "60r/m", 1000},
		{"bare number is r/s (Nginx)", "10", 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if err != nil || got.PerSecondMilli != tt.want {
				t.Errorf("ParseRate(%q) = %d, %v; want %d", tt.in, got.PerSecondMilli, err, tt.want)
			}
		})
	}
}

func TestParseRateErrors(t *testing.T) {
	const hint = "; want requests per second or minute, e.g. 10r/s or 30r/m"
	tests := []struct {
		name, in, want string
	}{
		{"zero", "0r/s", `invalid rate "0r/s": must be at least 1` + hint},
		{"no number", "r/s", `invalid rate "r/s": no number` + hint},
		{"empty", "", `invalid rate "": no number` + hint},
		{"per hour", "10r/h", `invalid rate "10r/h": unexpected "r"` + hint},
		{"suffix is case sensitive", "10R/s", `invalid rate "10R/s": unexpected "R"` + hint},
		{"fraction", "1.5r/s", `invalid rate "1.5r/s": unexpected "."` + hint},
		{"negative", "-1r/s", `invalid rate "-1r/s": unexpected "-"` + hint},
		{"space", "10 r/s", `invalid rate "10 r/s": unexpected " "` + hint},
		{"overflow", "9223372036854776r/s", `invalid rate "9223372036854776r/s": too large` + hint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseRate(%q) = %d, %v; want error %s", tt.in, got.PerSecondMilli, err, tt.want)
			}
		})
	}
}

func TestRateString(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{10000, "10r/s"}, {1000, "1r/s"}, {500, "30r/m"}, {66, "4r/m"}, {16, "1r/m"}, {1, "0.001r/s"}, {0, "0.000r/s"},
	}
	for _, tt := range tests {
		if got := (Rate{tt.in}).String(); got != tt.want {
			t.Errorf("Rate{%d}.String() = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"127.0.0.1", "127.0.0.1/32"},
		{"::1", "::1/128"},
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"fd00::1/8", "fd00::/8"},
		{"0.0.0.0/0", "0.0.0.0/0"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePrefix(tt.in)
			if err != nil || got.Prefix != netip.MustParsePrefix(tt.want) || got.String() != tt.want {
				t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParsePrefixErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"10.0.0.0/33", `invalid CIDR "10.0.0.0/33"; want e.g. 10.0.0.0/8 or fd00::/8`},
		{"10.0.0/8", `invalid CIDR "10.0.0/8"; want e.g. 10.0.0.0/8 or fd00::/8`},
		{"localhost", `invalid address "localhost"; want an IP address or CIDR, e.g. 127.0.0.1 or 10.0.0.0/8`},
		{"fe80::1%eth0", `invalid address "fe80::1%eth0"; want an IP address or CIDR, e.g. 127.0.0.1 or 10.0.0.0/8`},
		{"", `invalid address ""; want an IP address or CIDR, e.g. 127.0.0.1 or 10.0.0.0/8`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePrefix(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParsePrefix(%q) = %v, %v; want error %s", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestBalance(t *testing.T) {
	tests := []struct {
		in      string
		want    Balance
		wantErr string
	}{
		{"round_robin", BalanceRoundRobin, ""},
		{"least_conn", BalanceLeastConn, ""},
		{"leastconn", "", `unknown balance "leastconn"; want round_robin or least_conn (did you mean "least_conn"?)`},
		{"ip_hash", "", `unknown balance "ip_hash"; want round_robin or least_conn`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var b Balance
			err := b.parseScalar(tt.in)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if b != tt.want || gotErr != tt.wantErr {
				t.Errorf("parse %q = %q, %q; want %q, %q", tt.in, b, gotErr, tt.want, tt.wantErr)
			}
		})
	}
}
