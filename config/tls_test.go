package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestListenerTLSACME(t *testing.T) {
	c := mustParse(t, minimal+`
listen:
  - addr: :443
    tls:
      domains: [shop.example.com, www.shop.example.com]
      acme_ca: https://acme-staging-v02.api.letsencrypt.org/directory
      acme_ca_root: /etc/tollgate/ca.pem
      email: ops@shop.example.com
      storage: /var/lib/tollgate
      on_demand: {allow: [a.example.com], ask: "http://127.0.0.1:9000/ask"}
`)
	want := &ListenerTLS{
		Domains:    []string{"shop.example.com", "www.shop.example.com"},
		ACMECA:     "https://acme-staging-v02.api.letsencrypt.org/directory",
		ACMECARoot: "/etc/tollgate/ca.pem",
		Email:      "ops@shop.example.com",
		Storage:    "/var/lib/tollgate",
		OnDemand:   &OnDemand{Allow: []string{"a.example.com"}, Ask: "http://127.0.0.1:9000/ask"},
	}
	if got := c.Listen[0].TLS; !reflect.DeepEqual(got, want) || !got.ACME() {
		t.Errorf("tls = %+v, want %+v", got, want)
	}
	static := mustParse(t, minimal+"listen: [{addr: ':443', tls: {cert_file: c.pem, key_file: k.pem}}]\n")
	if static.Listen[0].TLS.ACME() {
		t.Error("static files reported as ACME")
	}
}

func TestListenerTLSErrors(t *testing.T) {
	tests := []struct {
		name string
		tls  string
		want []string
	}{{
		name: "neither files nor domains",
		tls:  "{}",
		want: []string{
			`t.yaml:8:30: listen[0].tls.cert_file: a certificate file is required (or domains for automatic HTTPS)`,
			`t.yaml:8:30: listen[0].tls.key_file: a key file is required`,
		},
	}, {
		name: "files and domains",
		tls:  "{cert_file: c.pem, key_file: k.pem, domains: [a.example]}",
		want: []string{`t.yaml:8:30: listen[0].tls: cert_file/key_file and domains/on_demand exclude each other: use static files or ACME, not both`},
	}, {
		name: "ACME settings without domains",
		tls:  "{cert_file: c.pem, key_file: k.pem, email: a@b.example, storage: /tmp/x}",
		want: []string{
			`t.yaml:8:73: listen[0].tls.email: email applies to ACME only: set domains or on_demand, or remove it`,
			`t.yaml:8:95: listen[0].tls.storage: storage applies to ACME only: set domains or on_demand, or remove it`,
		},
	}, {
		name: "unbounded on_demand",
		tls:  "{on_demand: {}}",
		want: []string{`t.yaml:8:42: listen[0].tls.on_demand: on_demand needs allow (a list of names) or ask (a URL): unbounded on-demand certificates would let any client order certificates`},
	}, {
		name: "bad names and URLs",
		tls: "{domains: ['https://a.example', '*.b.example', a.example:443, c.example, C.example], acme_ca: 'http://ca.example/dir', " +
			"email: nobody, on_demand: {allow: ['bad name'], ask: '/ask'}}",
		want: []string{
			`t.yaml:8:41: listen[0].tls.domains[0]: invalid domain "https://a.example": want a DNS name such as shop.example.com (no scheme, port or path)`,
			`t.yaml:8:62: listen[0].tls.domains[1]: wildcard "*.b.example" needs the DNS-01 challenge, which tollgate does not solve: list the names`,
			`t.yaml:8:77: listen[0].tls.domains[2]: invalid domain "a.example:443": want a DNS name such as shop.example.com (no scheme, port or path)`,
			`t.yaml:8:103: listen[0].tls.domains[4]: "C.example" is already listed at listen[0].tls.domains[3]`,
			`t.yaml:8:124: listen[0].tls.acme_ca: invalid URL "http://ca.example/dir": want https://host/...`,
			`t.yaml:8:156: listen[0].tls.email: invalid email "nobody"`,
			`t.yaml:8:184: listen[0].tls.on_demand.allow[0]: invalid domain "bad name": want a DNS name such as shop.example.com (no scheme, port or path)`,
			`t.yaml:8:202: listen[0].tls.on_demand.ask: invalid URL "/ask": want http or https://host/...`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertErrors(t, errorList(t, minimal+"listen: [{addr: ':443', tls: "+tt.tls+"}]\n"), tt.want)
		})
	}
}

// TestH2COnTLSListener: h2c is for plain listeners; on a TLS listener the
// error names the key's position.
func TestH2COnTLSListener(t *testing.T) {
	_, err := Parse("t.yaml", []byte("listen:\n  - addr: ':8443'\n    h2c: true\n    tls: {cert_file: c.pem, key_file: k.pem}\n"+
		"upstreams: [{name: a, servers: [{addr: '127.0.0.1:1'}]}]\nroutes: [{upstream: a}]\n"))
	if err == nil || !strings.Contains(err.Error(), "t.yaml:3:10: listen[0].h2c: h2c is for plain listeners") {
		t.Fatalf("error %v, want the h2c key's position", err)
	}
}
