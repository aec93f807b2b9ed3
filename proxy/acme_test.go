package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// httpsGet fetches https://name/x from addr, verifying against roots.
func httpsGet(t *testing.T, addr, name string, roots *x509.CertPool) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	resp, err := client.Get("https://" + name + "/x")
	if err != nil {
		t.Fatalf("GET https://%s/x: %v", name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestACMEChallenges obtains a certificate from pebble with one challenge
// type at a time and serves HTTPS with it: HTTP-01 answered by the plain
// listener (with and without redirect_https), TLS-ALPN-01 by the HTTPS
// listener itself.
func TestACMEChallenges(t *testing.T) {
	tests := []struct {
		name     string
		tune     acmeTuning
		redirect bool
		http01   bool // the CA fetched the challenge from the plain listener
	}{
		{name: "http-01", tune: acmeTuning{noTLSALPN01: true}, http01: true},
		{name: "http-01 behind redirect_https", tune: acmeTuning{noTLSALPN01: true}, redirect: true, http01: true},
		{name: "tls-alpn-01", tune: acmeTuning{noHTTP01: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := namedBackend(t, "secure")
			plain, secure := freeLoopbackAddr(t), freeLoopbackAddr(t)
			ca := startPebble(t, portOf(t, plain), portOf(t, secure))
			cfg := testConfig(t, acmeYAML(plain, secure, tt.redirect, ca, t.TempDir(), "      domains: [test.example]", b.Addr))
			p, _ := runProxy(t, cfg, Options{acme: tt.tune})

			cert := waitCert(t, secure, "test.example", ca.Roots, nil)
			if cert.Subject.CommonName != "test.example" && !slices.Contains(cert.DNSNames, "test.example") {
				t.Errorf("certificate names %v, want test.example", cert.DNSNames)
			}
			if code, body := httpsGet(t, secure, "test.example", ca.Roots); code != 200 || body != "secure" {
				t.Errorf("HTTPS: %d %q", code, body)
			}
			p.settle(t)
			answered := strings.Contains(p.log.String(), `"path":"/.well-known/acme-challenge/`)
			if answered != tt.http01 {
				t.Errorf("HTTP-01 challenge in the access log: %v, want %v\n%s", answered, tt.http01, p.log.String())
			}
			if tt.redirect {
				resp, _ := rawRequest(t, plain, "GET /a HTTP/1.1\r\nHost: test.example\r\n\r\n")
				if resp.StatusCode != http.StatusPermanentRedirect {
					t.Errorf("plain request: %d, want the redirect still", resp.StatusCode)
				}
			}
		})
	}
}

// TestACMERenewalAndStorage: the maintenance round renews a certificate in
// its renewal window (a new serial is served); certmagic's log lines reach
// tollgate's log; a reload with changed ACME settings keeps the running
// manager and warns; and a second server on the same storage serves the
// stored certificate with the CA gone, so it ordered nothing.
func TestACMERenewalAndStorage(t *testing.T) {
	b := namedBackend(t, "secure")
	plain, secure := freeLoopbackAddr(t), freeLoopbackAddr(t)
	ca := startPebble(t, portOf(t, plain), portOf(t, secure))
	storage := t.TempDir()
	yaml := acmeYAML(plain, secure, false, ca, storage, "      domains: [test.example]", b.Addr)
	logs := &logBuffer{}
	// A window as long as the lifetime: every certificate is due.
	p, shutdown := runProxy(t, testConfig(t, yaml), Options{Log: logs.logger(), acme: acmeTuning{renewalWindowRatio: 1}})
	first := waitCert(t, secure, "test.example", ca.Roots, nil)

	if err := p.acme.managers[0].cache.RenewManagedCertificates(context.Background()); err != nil {
		t.Fatalf("maintenance round: %v", err)
	}
	renewed := waitCert(t, secure, "test.example", ca.Roots, first.SerialNumber.Bytes())
	obtained, renewedLines := logs.lines(t, "certificate obtained successfully"), logs.lines(t, "certificate renewed successfully")
	if len(obtained) != 1 || obtained[0]["component"] != "certmagic.obtain" || len(renewedLines) != 1 {
		t.Errorf("certmagic's obtain and renew lines in tollgate's log: %v %v\n%s", obtained, renewedLines, logs.String())
	}
	if strings.Contains(logs.String(), `"level":"DEBUG"`) {
		t.Error("certmagic's debug lines reached an info-level log")
	}

	if err := p.Reload(testConfig(t, strings.Replace(yaml, "ops@test.example", "new@test.example", 1))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if len(logs.lines(t, "reload: listener tls settings (certificate files, ACME) need a restart; keeping the current certificates and ACME managers")) != 1 {
		t.Errorf("no restart warning for changed ACME settings:\n%s", logs.String())
	}
	if cert, err := servedCert(secure, "test.example", ca.Roots); err != nil || !bytes.Equal(cert.SerialNumber.Bytes(), renewed.SerialNumber.Bytes()) {
		t.Errorf("after reload: %v, want the renewed certificate still served", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	ca.stop()
	runProxy(t, testConfig(t, yaml), Options{})
	again := waitCert(t, secure, "test.example", ca.Roots, nil)
	if !bytes.Equal(again.SerialNumber.Bytes(), renewed.SerialNumber.Bytes()) {
		t.Errorf("after restart serial %x, want the stored %x", again.SerialNumber, renewed.SerialNumber)
	}
}

// TestACMEOnDemand: a name in on_demand.allow gets a certificate at its
// first handshake without asking; another name is asked about and gets
// one if the ask URL answers 200; a refused name fails the handshake.
func TestACMEOnDemand(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	ask := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("domain")
		mu.Lock()
		asked = append(asked, name)
		mu.Unlock()
		if name != "asked.example" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	b := namedBackend(t, "secure")
	plain, secure := freeLoopbackAddr(t), freeLoopbackAddr(t)
	ca := startPebble(t, portOf(t, plain), portOf(t, secure))
	extra := "      on_demand:\n        allow: [allowed.example]\n        ask: http://" + ask.Addr + "/ask"
	runProxy(t, testConfig(t, acmeYAML(plain, secure, false, ca, t.TempDir(), extra, b.Addr)), Options{})

	for _, name := range []string{"allowed.example", "asked.example"} {
		cert, err := servedCert(secure, name, ca.Roots)
		if err != nil {
			t.Fatalf("%s: handshake: %v", name, err)
		}
		if !slices.Contains(cert.DNSNames, name) {
			t.Errorf("%s: certificate for %v", name, cert.DNSNames)
		}
		if code, body := httpsGet(t, secure, name, ca.Roots); code != 200 || body != "secure" {
			t.Errorf("%s: HTTPS %d %q", name, code, body)
		}
	}
	if _, err := servedCert(secure, "refused.example", ca.Roots); err == nil {
		t.Error("refused.example got a certificate")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(asked, "asked.example") || !slices.Contains(asked, "refused.example") || slices.Contains(asked, "allowed.example") {
		t.Errorf("ask consulted for %v, want asked.example and refused.example, not allowed.example", asked)
	}
}

// TestSlogCore: certmagic's zap entries arrive in tollgate's slog handler
// with their logger name and fields, at the handler's level.
func TestSlogCore(t *testing.T) {
	logs := &logBuffer{}
	zl := zap.New(newSlogCore(logs.logger().Handler())).Named("obtain").With(zap.String("identifier", "a.example"))
	zl.Debug("dropped")
	zl.Warn("will retry", zap.Error(errors.New("boom")), zap.Duration("retry_in", time.Minute))
	got := logs.lines(t, "will retry")
	if len(got) != 1 || strings.Contains(logs.String(), "dropped") {
		t.Fatalf("lines:\n%s", logs.String())
	}
	want := map[string]any{"level": "WARN", "component": "certmagic.obtain", "identifier": "a.example", "error": "boom", "retry_in": "1m0s"}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("%s = %v, want %v", k, got[0][k], v)
		}
	}
}

// TestACMEStartErrors: an ACME listener whose CA roots cannot be used
// stops the start with the reason, and nothing stays bound.
func TestACMEStartErrors(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	addr := freeLoopbackAddr(t)
	yaml := "listen:\n  - addr: " + addr + "\n    tls:\n      domains: [test.example]\n      acme_ca_root: " + notPEM +
		"\n      storage: " + t.TempDir() + "\n" + upstreamYAML("127.0.0.1:1")
	s, err := New(testConfig(t, yaml), Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start()
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("start: %v, want the acme_ca_root problem", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listener left bound after the failed start: %v", err)
	}
	ln.Close()
}
