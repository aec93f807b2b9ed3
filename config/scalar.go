package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// scalarParser is implemented by the types that decode from one YAML scalar
// with their own syntax. The decoder calls it with the scalar's text after
// ${NAME} expansion.
type scalarParser interface {
	parseScalar(s string) error
}

// Time steps in the order ngx_parse_time requires them: each unit may
// appear once, largest first (src/core/ngx_parse.c).
const (
	stStart = iota
	stYear
	stMonth
	stWeek
	stDay
	stHour
	stMin
	stSec
	stMsec
	stLast
)

// maxMillis is the largest time a time.Duration holds, in milliseconds
// (about 292 years). Nginx's own limit is higher, but nothing needs more.
const maxMillis = math.MaxInt64 / int64(time.Millisecond)

// ParseDuration parses an Nginx time the way ngx_parse_time does:
// integers with units y (365d), M (30d), w, d, h, m, s, ms, largest unit
// first and each at most once ("1h30m", "1h 30m"); a bare number, or a
// trailing number after other units, counts seconds ("90", "1m30").
// Fractions and signs are errors, as in Nginx.
//
// Nginx accepts y and M only in second-valued directives and ms only in
// millisecond-valued ones; tollgate has a single Duration type and accepts
// the union.
func ParseDuration(s string) (Duration, error) {
	ms, err := parseMillis(s)
	if err != nil {
		return Duration{}, fmt.Errorf("invalid time %q: %w", s, err)
	}
	return Duration{time.Duration(ms) * time.Millisecond}, nil
}

// timeUnit returns the step and size in milliseconds of the unit starting
// s[i], and how many bytes it spans; ok is false for an unknown unit.
func timeUnit(s string, i int) (step int, scale int64, n int, ok bool) {
	const sec, day = 1000, 86400 * 1000
	switch s[i] {
	case 'y':
		return stYear, 365 * day, 1, true
	case 'M':
		return stMonth, 30 * day, 1, true
	case 'w':
		return stWeek, 7 * day, 1, true
	case 'd':
		return stDay, day, 1, true
	case 'h':
		return stHour, 3600 * sec, 1, true
	case 'm':
		if i+1 < len(s) && s[i+1] == 's' {
			return stMsec, 1, 2, true
		}
		return stMin, 60 * sec, 1, true
	case 's':
		return stSec, sec, 1, true
	case ' ':
		// A space ends a bare number, which then counts seconds; nothing
		// may follow it but more spaces (ngx_parse_time's st_last).
		return stLast, sec, 1, true
	}
	return 0, 0, 0, false
}

// parseMillis is ngx_parse_time in millisecond mode, with y and M allowed.
func parseMillis(s string) (int64, error) {
	var total, value int64
	step, digits := stStart, false
	for i := 0; i < len(s); {
		if c := s[i]; c >= '0' && c <= '9' {
			if value > (maxMillis-int64(c-'0'))/10 {
				return 0, errors.New("too large")
			}
			value = value*10 + int64(c-'0')
			digits = true
			i++
			continue
		}
		st, scale, n, ok := timeUnit(s, i)
		if !ok {
			return 0, badTimeChar(s, i)
		}
		// Nginx rejects a repeated or out-of-order unit, and a space after
		// seconds; "1m s" is fine, as in Nginx (the s adds 0).
		if step >= st || (st == stLast && step >= stSec) {
			return 0, errors.New("units must go from largest to smallest, each at most once (e.g. 1h30m)")
		}
		step = st
		if value > (maxMillis-total)/scale {
			return 0, errors.New("too large")
		}
		total += value * scale
		value = 0
		for i += n; i < len(s) && s[i] == ' '; i++ {
		}
	}
	if !digits {
		return 0, errors.New("no number")
	}
	if value > (maxMillis-total)/1000 {
		return 0, errors.New("too large")
	}
	return total + value*1000, nil
}

// badTimeChar explains an unexpected byte in a time.
func badTimeChar(s string, i int) error {
	switch s[i] {
	case '.', ',':
		return errors.New("fractions are not allowed (Nginx times are integers); use a smaller unit, e.g. 1500ms")
	case '-', '+':
		return errors.New("a time has no sign")
	}
	return fmt.Errorf("unknown unit %q; want ms, s, m, h, d, w, M or y", s[i:i+1])
}

func (d *Duration) parseScalar(s string) (err error) {
	*d, err = ParseDuration(s)
	return err
}

// String prints d as Nginx would read it back, largest unit first:
// "1h30m", "1s500ms", "0s". Anything below a millisecond is dropped.
func (d Duration) String() string {
	ms := d.Milliseconds()
	if ms == 0 {
		return "0s"
	}
	var b strings.Builder
	if ms < 0 {
		b.WriteByte('-') // cannot come from ParseDuration; keep it visible
		ms = -ms
	}
	for _, u := range []struct {
		name string
		ms   int64
	}{{"d", 86400e3}, {"h", 3600e3}, {"m", 60e3}, {"s", 1e3}, {"ms", 1}} {
		if ms >= u.ms {
			b.WriteString(strconv.FormatInt(ms/u.ms, 10))
			b.WriteString(u.name)
			ms %= u.ms
		}
	}
	return b.String()
}

// ParseSize parses an Nginx size the way ngx_parse_size does: a number of
// bytes, optionally followed by k, m or g (either case, powers of 1024).
// Nothing else is accepted: no "kb", no spaces, no sign, no fraction.
func ParseSize(s string) (Size, error) {
	scale := int64(1)
	num := s
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			scale = 1 << 10
		case 'm', 'M':
			scale = 1 << 20
		case 'g', 'G':
			scale = 1 << 30
		}
		if scale != 1 {
			num = s[:len(s)-1]
		}
	}
	n, err := atoi(num)
	if err == nil && n > math.MaxInt64/scale {
		err = errors.New("too large")
	}
	if err != nil {
		return Size{}, fmt.Errorf("invalid size %q: %w; want bytes or a number with k, m or g, e.g. 10m", s, err)
	}
	return Size{n * scale}, nil
}

func (z *Size) parseScalar(s string) (err error) {
	*z, err = ParseSize(s)
	return err
}

// String prints z in the largest unit that divides it exactly: "10m",
// "16k", "1000".
func (z Size) String() string {
	switch b := z.Bytes; {
	case b != 0 && b%(1<<30) == 0:
		return strconv.FormatInt(b>>30, 10) + "g"
	case b != 0 && b%(1<<20) == 0:
		return strconv.FormatInt(b>>20, 10) + "m"
	case b != 0 && b%(1<<10) == 0:
		return strconv.FormatInt(b>>10, 10) + "k"
	default:
		return strconv.FormatInt(b, 10)
	}
}

// atoi is ngx_atoi: one or more decimal digits and nothing else.
func atoi(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("no number")
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("unexpected %q", s[i:i+1])
		}
		if n > (math.MaxInt64-int64(c-'0'))/10 {
			return 0, errors.New("too large")
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// ParseRate parses a limit_req_zone rate as Nginx does
// (ngx_http_limit_req_zone, LR:903-939): a positive integer followed by
// "r/s" or "r/m"; a bare number means r/s, as in Nginx. The suffix is case
// sensitive. The result keeps Nginx's integer arithmetic, rate*1000/scale,
// so "4r/m" is 66 thousandths per second, not 66.67.
func ParseRate(s string) (Rate, error) {
	num, scale := s, int64(1)
	if rest, ok := strings.CutSuffix(s, "r/s"); ok {
		num = rest
	} else if rest, ok := strings.CutSuffix(s, "r/m"); ok {
		num, scale = rest, 60
	}
	n, err := atoi(num)
	switch {
	case err != nil:
	case n == 0:
		err = errors.New("must be at least 1")
	case n > math.MaxInt64/1000:
		err = errors.New("too large")
	}
	if err != nil {
		return Rate{}, fmt.Errorf("invalid rate %q: %w; want requests per second or minute, e.g. 10r/s or 30r/m", s, err)
	}
	return Rate{n * 1000 / scale}, nil
}

func (r *Rate) parseScalar(s string) (err error) {
	*r, err = ParseRate(s)
	return err
}

// String prints r as the shortest Nginx rate that parses back to it:
// "10r/s" when r is whole requests per second, else "Nr/m" ("4r/m" for
// 66). A value no rate string produces prints as decimal r/s.
func (r Rate) String() string {
	v := r.PerSecondMilli
	if v > 0 && v%1000 == 0 {
		return strconv.FormatInt(v/1000, 10) + "r/s"
	}
	// The smallest n with n*1000/60 >= v; it is the answer if equal.
	if v > 0 && v <= math.MaxInt64/60 {
		if n := (v*60 + 999) / 1000; n*1000/60 == v {
			return strconv.FormatInt(n, 10) + "r/m"
		}
	}
	return fmt.Sprintf("%d.%03dr/s", v/1000, v%1000)
}

// ParsePrefix parses an address ("127.0.0.1", "::1"), taken as a single
// host prefix (/32, /128), or a CIDR ("10.0.0.0/8"). Host bits of a CIDR
// are cleared ("10.1.2.3/8" is 10.0.0.0/8), as Nginx does after warning
// "low address bits are meaningless". Unlike Nginx's set_real_ip_from,
// host names and "unix:" are not accepted.
func ParsePrefix(s string) (Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Prefix{}, fmt.Errorf("invalid CIDR %q; want e.g. 10.0.0.0/8 or fd00::/8", s)
		}
		return Prefix{p.Masked()}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return Prefix{}, fmt.Errorf("invalid address %q; want an IP address or CIDR, e.g. 127.0.0.1 or 10.0.0.0/8", s)
	}
	return Prefix{netip.PrefixFrom(a, a.BitLen())}, nil
}

func (p *Prefix) parseScalar(s string) (err error) {
	*p, err = ParsePrefix(s)
	return err
}

// String prints p in CIDR form, "127.0.0.1/32"; set_real_ip_from accepts it.
func (p Prefix) String() string { return p.Prefix.String() }

func (b *Balance) parseScalar(s string) error {
	switch v := Balance(s); v {
	case BalanceRoundRobin, BalanceLeastConn:
		*b = v
		return nil
	}
	return fmt.Errorf("unknown balance %q; want round_robin or least_conn%s",
		s, didYouMean(s, []string{string(BalanceRoundRobin), string(BalanceLeastConn)}))
}

// String returns the balance's config name.
func (b Balance) String() string { return string(b) }
