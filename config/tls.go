package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// listenerTLS checks that a tls block chooses one source of certificates:
// static files, or ACME (domains and/or on_demand), and that the ACME
// settings are usable.
func (v *validator) listenerTLS(path string, t *ListenerTLS) {
	static := t.CertFile != "" || t.KeyFile != ""
	switch {
	case static && t.ACME():
		v.errorf(path, "cert_file/key_file and domains/on_demand exclude each other: use static files or ACME, not both")
		return
	case !t.ACME():
		if t.CertFile == "" {
			v.errorf(path+".cert_file", "a certificate file is required (or domains for automatic HTTPS)")
		}
		if t.KeyFile == "" {
			v.errorf(path+".key_file", "a key file is required")
		}
		acmeOnly := []struct{ key, value string }{
			{"acme_ca", t.ACMECA}, {"acme_ca_root", t.ACMECARoot}, {"email", t.Email}, {"storage", t.Storage}}
		for _, f := range acmeOnly {
			if f.value != "" {
				v.errorf(path+"."+f.key, "%s applies to ACME only: set domains or on_demand, or remove it", f.key)
			}
		}
		return
	}
	v.domainNames(path+".domains", t.Domains)
	if t.ACMECA != "" {
		v.absoluteURL(path+".acme_ca", t.ACMECA, "https")
	}
	if t.Email != "" && !strings.Contains(t.Email, "@") {
		v.errorf(path+".email", "invalid email %q", t.Email)
	}
	if od := t.OnDemand; od != nil {
		if len(od.Allow) == 0 && od.Ask == "" {
			v.errorf(path+".on_demand", "on_demand needs allow (a list of names) or ask (a URL): unbounded on-demand certificates would let any client order certificates")
		}
		v.domainNames(path+".on_demand.allow", od.Allow)
		if od.Ask != "" {
			v.absoluteURL(path+".on_demand.ask", od.Ask, "http", "https")
		}
	}
}

// domainNames checks names for ACME certificates: plain DNS names, each
// once. Wildcards need the DNS-01 challenge, which tollgate does not solve.
func (v *validator) domainNames(path string, names []string) {
	seen := map[string]int{}
	for i, name := range names {
		p := fmt.Sprintf("%s[%d]", path, i)
		if first, dup := seen[strings.ToLower(name)]; dup {
			v.errorf(p, "%q is already listed at %s[%d]", name, path, first)
			continue
		}
		seen[strings.ToLower(name)] = i
		switch {
		case strings.HasPrefix(name, "*."):
			v.errorf(p, "wildcard %q needs the DNS-01 challenge, which tollgate does not solve: list the names", name)
		case !dnsName(name):
			v.errorf(p, "invalid domain %q: want a DNS name such as shop.example.com (no scheme, port or path)", name)
		}
	}
}

// dnsName reports whether s is a DNS name of letters, digits, hyphens and
// dots (RFC 1123 §2.1), with no empty label.
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// absoluteURL checks an absolute URL with one of the given schemes.
func (v *validator) absoluteURL(path, raw string, schemes ...string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || !slices.Contains(schemes, u.Scheme) {
		v.errorf(path, "invalid URL %q: want %s://host/...", raw, strings.Join(schemes, " or "))
	}
}
