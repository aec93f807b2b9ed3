package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// debianPackage names the package that installs a program the tests run,
// for the message of requireBinary.
var debianPackage = map[string]string{"nginx": "nginx-light", "pebble-challtestsrv": "pebble"}

// requireBinary returns the path of the first of names found in PATH or in
// /usr/sbin and /usr/local/sbin (root's tools). When none is installed the
// test fails under CI (env CI non-empty) and is skipped otherwise.
func requireBinary(t testing.TB, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	pkg := debianPackage[names[0]]
	if pkg == "" {
		pkg = names[0]
	}
	msg := fmt.Sprintf("%s not installed: run scripts/test.sh (apt-get install %s)", names[0], pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// freeLoopbackAddr returns a loopback address nothing listens on, for a
// program that must bind it itself.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// countingRelay forwards TCP connections to target and counts them: it
// shows how many connections a client opened to target.
func countingRelay(t testing.TB, target string) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = &atomic.Int64{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.(*net.TCPConn).CloseWrite() }()
		}
	}()
	return ln.Addr().String(), conns
}

// nginxProcess and nginxTempPaths are the parts every test nginx.conf
// shares: one foreground process, and every file under the test's dir.
const nginxProcess = `daemon off;
master_process off;
worker_processes 1;
pid {{dir}}/nginx.pid;
`

const nginxTempPaths = `    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;
`

const nginxConf = nginxProcess + `error_log {{dir}}/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
` + nginxTempPaths + `    client_max_body_size 2m;
    upstream tg {
        server {{upstream}};
        keepalive 8;
    }
    server {
        listen {{listen}};
        location / {
            proxy_pass http://tg;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
`

// startNginx runs nginx in the foreground with a temporary prefix, proxying
// to upstream, and returns its address. It is stopped when the test ends.
func startNginx(t testing.TB, upstream string) string {
	t.Helper()
	dir := t.TempDir()
	listen := freeLoopbackAddr(t)
	conf := strings.NewReplacer("{{dir}}", dir, "{{upstream}}", upstream, "{{listen}}", listen).Replace(nginxConf)
	runNginxConf(t, dir, listen, conf)
	return listen
}

// echoSeen is what the echo backend of the Nginx test reports.
type echoSeen struct {
	RequestID string `json:"request_id"`
	XFF       string `json:"xff"`
	Host      string `json:"host"`
	Length    int64  `json:"length"`
	SHA256    string `json:"sha256"`
}

func TestNginxInFront(t *testing.T) {
	requireBinary(t, "nginx")
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		json.NewEncoder(w).Encode(echoSeen{
			RequestID: r.Header.Get("X-Request-Id"),
			XFF:       strings.Join(r.Header.Values("X-Forwarded-For"), " | "),
			Host:      r.Host,
			Length:    n,
			SHA256:    hex.EncodeToString(h.Sum(nil)),
		})
	}))
	p := startProxy(t, upstreamYAML(backend.Addr))
	relay, downstreamConns := countingRelay(t, p.Addr)
	edge := "http://" + startNginx(t, relay)

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	do := func(method, path string, body []byte) echoSeen {
		t.Helper()
		req, err := http.NewRequest(method, edge+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: status %d through nginx → tollgate → backend\n%s", method, path, resp.StatusCode, raw)
		}
		var seen echoSeen
		if err := json.Unmarshal(raw, &seen); err != nil {
			t.Fatalf("%s %s: backend reply %q: %v", method, path, raw, err)
		}
		return seen
	}

	seen := do("GET", "/first", nil)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(seen.RequestID) {
		t.Errorf("backend saw X-Request-ID %q, want nginx's $request_id (32 hex digits)", seen.RequestID)
	}
	var logged string
	for _, e := range logEntries(t, p) {
		if e["path"] == "/first" {
			logged, _ = e["request_id"].(string)
		}
	}
	if logged != seen.RequestID {
		t.Errorf("tollgate logged request_id %q, backend saw %q: nginx is a trusted loopback peer, its id must be kept", logged, seen.RequestID)
	}
	// nginx appends the client, tollgate appends nginx: both are loopback.
	if seen.XFF != "127.0.0.1, 127.0.0.1" {
		t.Errorf("backend saw X-Forwarded-For %q, want \"127.0.0.1, 127.0.0.1\"", seen.XFF)
	}

	ids := map[string]bool{seen.RequestID: true}
	for i := range 20 {
		s := do("GET", fmt.Sprintf("/seq/%d", i), nil)
		if ids[s.RequestID] {
			t.Errorf("request %d: X-Request-ID %q repeated", i, s.RequestID)
		}
		ids[s.RequestID] = true
	}
	t.Logf("21 requests: %d nginx→tollgate connections, %d tollgate→backend", downstreamConns.Load(), backend.conns.Load())
	if n := downstreamConns.Load(); n > 2 {
		t.Errorf("nginx opened %d connections to tollgate for 21 sequential requests, want its keep-alive connection reused (≤ 2)", n)
	}
	if n := backend.conns.Load(); n > 2 {
		t.Errorf("tollgate opened %d connections to the backend for 21 sequential requests, want ≤ 2", n)
	}

	body := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(body)
	sum := sha256.Sum256(body)
	s := do("POST", "/upload", body)
	if s.Length != int64(len(body)) || s.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("1 MiB POST arrived as %d bytes, sha256 %s; want %d bytes, %x", s.Length, s.SHA256, len(body), sum)
	}
}

// runNginxConf runs nginx in the foreground on conf with prefix dir until
// the test ends, once it listens on listen.
func runNginxConf(t testing.TB, dir, listen, conf string) {
	t.Helper()
	bin := requireBinary(t, "nginx")
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	errLog := filepath.Join(dir, "error.log")
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", errLog)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitLimit):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(waitLimit)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(errLog)
			t.Fatalf("nginx exited at start:\n%s%s", out.String(), b)
		default:
		}
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s", listen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
