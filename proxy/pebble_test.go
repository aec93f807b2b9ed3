package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// pebbleCA is a running pebble (Let's Encrypt's test ACME server) with
// pebble-challtestsrv as its DNS server, resolving every name to
// 127.0.0.1: the CA validates challenges against tollgate's listeners on
// loopback.
type pebbleCA struct {
	DirURL   string         // ACME directory, for acme_ca
	CAFile   string         // PEM of pebble's own HTTPS certificate, for acme_ca_root
	Roots    *x509.CertPool // the root pebble issues under
	stopOnce sync.Once
	procs    []*exec.Cmd
}

// startPebble runs pebble validating HTTP-01 on httpPort and TLS-ALPN-01 on
// tlsPort of 127.0.0.1, and stops it when the test ends.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebbleCA {
	t.Helper()
	pebbleBin := requireBinary(t, "pebble")
	challBin := requireBinary(t, "pebble-challtestsrv")
	certFile, keyFile, pool := selfSigned(t)
	dns, mgmt := freeLoopbackAddr(t), freeLoopbackAddr(t)
	listen, pebbleMgmt := freeLoopbackAddr(t), freeLoopbackAddr(t)
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": pebbleMgmt,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
	}})
	confFile := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	ca := &pebbleCA{DirURL: "https://" + listen + "/dir", CAFile: certFile}
	t.Cleanup(ca.stop)
	ca.run(t, exec.Command(challBin, "-dns01", dns, "-management", mgmt, "-http01", "", "-https01", "",
		"-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""))
	waitListening(t, mgmt)
	pebble := exec.Command(pebbleBin, "-config", confFile, "-dnsserver", dns)
	// No random validation delay, no nonce rejections: fast and steady.
	pebble.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	ca.run(t, pebble)

	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(ca.DirURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := client.Get("https://" + pebbleMgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble root: %v", err)
	}
	root, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ca.Roots = x509.NewCertPool()
	if !ca.Roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: no PEM certificate in %q", root)
	}
	return ca
}

// run starts a process whose output is shown only if the test fails.
func (ca *pebbleCA) run(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	ca.procs = append(ca.procs, cmd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
}

// stop ends pebble and its DNS server; the CA is unreachable afterwards.
func (ca *pebbleCA) stop() {
	ca.stopOnce.Do(func() {
		for _, p := range ca.procs {
			p.Process.Kill()
			p.Wait()
		}
	})
}

// waitListening waits until addr accepts TCP connections.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// portOf returns the port of a host:port.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("port of %q: %v %v", addr, err, err2)
	}
	return n
}

// servedCert handshakes with addr for name and returns the certificate
// served, verified against roots. The handshake may wait for an on-demand
// order, hence the generous timeout.
func servedCert(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 20 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitCert waits until addr serves a verified certificate for name whose
// serial is not notSerial (nil: any), and returns it.
func waitCert(t *testing.T, addr, name string, roots *x509.CertPool, notSerial []byte) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cert, err := servedCert(addr, name, roots)
		if err == nil && !bytes.Equal(cert.SerialNumber.Bytes(), notSerial) {
			return cert
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new certificate for %s on %s after 30s: %v", name, addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// acmeYAML is a config with a plain listener (redirecting to https when
// redirect) and an HTTPS listener getting its certificates from ca, tls
// settings beyond those in extraTLS (indented as keys of tls).
func acmeYAML(plain, secure string, redirect bool, ca *pebbleCA, storage, extraTLS, backend string) string {
	return fmt.Sprintf(`listen:
  - addr: %s
    redirect_https: %t
  - addr: %s
    tls:
      acme_ca: %s
      acme_ca_root: %s
      email: ops@test.example
      storage: %s
%s
%s`, plain, redirect, secure, ca.DirURL, ca.CAFile, storage, extraTLS, upstreamYAML(backend))
}
