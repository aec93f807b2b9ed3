package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns their paths and a pool trusting it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tollgate test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestHTTPSListener: an HTTPS listener with static certificate files serves
// requests over TLS 1.2+ (X-Forwarded-Proto https upstream), and a client
// that does not speak TLS gets its close tagged ds_tls_handshake_failed.
func TestHTTPSListener(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	proto := make(chan string, 1)
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto <- r.Header.Get("X-Forwarded-Proto")
		io.WriteString(w, "secure")
	}))
	p := startProxyWithCloses(t, "listen:\n  - addr: 127.0.0.1:0\n    tls:\n      cert_file: "+certFile+
		"\n      key_file: "+keyFile+"\n"+upstreamYAML(b.Addr))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + p.Addr + "/x")
	if err != nil {
		t.Fatalf("HTTPS GET: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "secure" || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("got %d %q over %v", resp.StatusCode, body, resp.TLS)
	}
	if got := <-proto; got != "https" {
		t.Errorf("X-Forwarded-Proto upstream = %q, want https", got)
	}

	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get("https://" + p.Addr + "/x"); err == nil {
		t.Error("a TLS 1.1 client was served, want the handshake refused")
	}

	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.Copy(io.Discard, c)
	c.Close()
	p.expect(t, downstreamClose(reasonDSTLSHandshakeFailed, byPeer, kindError, "idle"))
}

// TestRedirectHTTPS: a plain listener with redirect_https sends clients to
// the https URL (308, port dropped, query kept) but lets ACME HTTP-01
// challenges through to the route.
func TestRedirectHTTPS(t *testing.T) {
	b := namedBackend(t, "challenge")
	p := startProxy(t, "listen:\n  - addr: 127.0.0.1:0\n    redirect_https: true\n"+upstreamYAML(b.Addr))
	resp, _ := rawRequest(t, p.Addr, "GET /a/b?c=1 HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n")
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://shop.example/a/b?c=1" {
		t.Fatalf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := rawRequest(t, p.Addr, "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	if resp.StatusCode != 200 || string(body) != "challenge" {
		t.Fatalf("challenge: %d %q, want it proxied", resp.StatusCode, body)
	}
}
