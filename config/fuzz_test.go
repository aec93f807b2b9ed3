package config

import (
	"errors"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{minimal, full, broken, "", "a: &a [*a]", "x: ${Y}", "<<: {a: 1}", "- [", "upstreams: [{<<: [{name: a}], servers: *x}]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse("f.yaml", data, noEnv)
		if err != nil {
			var errs *Errors
			if !errors.As(err, &errs) || len(errs.List) == 0 || c != nil {
				t.Fatalf("parse = %v, %v; want nil and a non-empty *Errors", c, err)
			}
			return
		}
		// A config that loads is complete: the proxy relies on it.
		if len(c.Upstreams) == 0 || len(c.Routes) == 0 || len(c.Listen) == 0 {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
		for _, r := range c.Routes {
			if c.Upstream(r.Upstream) == nil {
				t.Fatalf("route to unknown upstream %q accepted", r.Upstream)
			}
		}
		for _, u := range c.Upstreams {
			if u.Keepalive == nil {
				t.Fatal("nil keepalive after defaults")
			}
			for _, s := range u.Servers {
				if s.MaxFails == nil || s.Weight < 1 {
					t.Fatalf("server %+v after defaults", s)
				}
			}
		}
	})
}

// The scalar fuzzers check that whatever parses prints back to a string
// that parses to the same value.

func FuzzDuration(f *testing.F) {
	for _, s := range []string{"0", "60", "500ms", "1h30m", "1h 30m", "1y1M1w1d1h1m1s1ms", "1.5s", "-1", "1hs", "5 5", "106751d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d.Duration < 0 {
			t.Fatalf("ParseDuration(%q) = %v; negative", s, d.Duration)
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v; String %q parses to %v, %v", s, d.Duration, d, back.Duration, err)
		}
	})
}

func FuzzSize(f *testing.F) {
	for _, s := range []string{"0", "512", "16k", "10M", "1g", "k", "10kb", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		z, err := ParseSize(s)
		if err != nil {
			return
		}
		if z.Bytes < 0 {
			t.Fatalf("ParseSize(%q) = %d; negative", s, z.Bytes)
		}
		back, err := ParseSize(z.String())
		if err != nil || back != z {
			t.Fatalf("ParseSize(%q) = %d; String %q parses to %d, %v", s, z.Bytes, z, back.Bytes, err)
		}
	})
}

func FuzzRate(f *testing.F) {
	for _, s := range []string{"10r/s", "30r/m", "4r/m", "1r/m", "10", "0r/s", "r/s", "9223372036854775r/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r.PerSecondMilli < 16 {
			t.Fatalf("ParseRate(%q) = %d; below 1r/m", s, r.PerSecondMilli)
		}
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %d; String %q parses to %d, %v", s, r.PerSecondMilli, r, back.PerSecondMilli, err)
		}
	})
}
