package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// testProxy is a running tollgate on loopback with its access log captured.
type testProxy struct {
	*Server
	URL   string // http://127.0.0.1:PORT
	Addr  string
	Admin string // http://127.0.0.1:PORT of the admin listener
	log   *syncBuffer
}

// startProxy runs tollgate with the given YAML (listen and admin are added
// on free loopback ports when absent) and stops it when the test ends.
func startProxy(t testing.TB, yaml string) *testProxy {
	t.Helper()
	tp, _ := runProxy(t, testConfig(t, yaml), Options{})
	return tp
}

// testConfig parses a test's YAML, adding listen and admin on free loopback
// ports when absent.
func testConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	if !strings.Contains(yaml, "listen:") {
		yaml = "listen:\n  - addr: 127.0.0.1:0\n" + yaml
	}
	if !strings.Contains(yaml, "admin:") {
		yaml = "admin:\n  addr: 127.0.0.1:0\n" + yaml
	}
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
}

// runProxy starts tollgate on cfg. A nil opts.Log discards operational
// logs; a nil opts.AccessLog is captured in the returned proxy's log. The
// returned shutdown runs Shutdown at most once; the test's cleanup calls it
// too, so a test that shut down itself is left alone.
func runProxy(t testing.TB, cfg *config.Config, opts Options) (*testProxy, func(context.Context) error) {
	t.Helper()
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	access, _ := opts.AccessLog.(*syncBuffer)
	if opts.AccessLog == nil {
		access = &syncBuffer{}
		opts.AccessLog = access
	}
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	var once sync.Once
	shutdown := func(ctx context.Context) error {
		err := errors.New("shutdown already called")
		once.Do(func() { err = s.Shutdown(ctx) })
		return err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdown(ctx)
	})
	tp := &testProxy{Server: s, Addr: s.Addrs()[0].String(), log: access}
	tp.URL = "http://" + tp.Addr
	if a := s.AdminAddr(); a != nil {
		tp.Admin = "http://" + a.String()
	}
	return tp, shutdown
}

// upstreamYAML is a minimal config proxying every path to the given servers.
func upstreamYAML(addrs ...string) string {
	var b strings.Builder
	b.WriteString("upstreams:\n  - name: app\n    servers:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "      - addr: %s\n", a)
	}
	b.WriteString("routes:\n  - path_prefix: /\n    upstream: app\n")
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for the access log's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// backend is a real HTTP server on loopback that counts the connections it
// accepted, so tests can assert keep-alive reuse.
type backend struct {
	Addr  string
	conns atomic.Int64
	srv   *http.Server
}

func startBackend(t testing.TB, h http.Handler) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{Addr: ln.Addr().String()}
	b.srv = &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			b.conns.Add(1)
		}
	}}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// namedBackend answers 200 with its name, for balancing tests.
func namedBackend(t testing.TB, name string) *backend {
	return startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
}

// rawBackend accepts TCP connections and hands each to fn: the fault modes
// below are built on it.
func rawBackend(t testing.TB, fn func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); fn(c) }()
		}
	}()
	return ln.Addr().String()
}

// refusingAddr is an address where nothing listens: connect is refused.
// The port stays bound (never listening) until the test ends, so the
// kernel cannot hand it to another listener meanwhile — a closed port
// could come back as the proxy's own, or nginx's.
func refusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// readRequestHead consumes one request head from a raw backend connection.
func readRequestHead(br *bufio.Reader) (*http.Request, error) {
	return http.ReadRequest(br)
}

// acceptThenClose accepts, reads the request head and closes with a FIN.
func acceptThenClose(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		readRequestHead(bufio.NewReader(c))
	})
}

// resetBeforeHeaders reads the request head and resets the connection.
func resetBeforeHeaders(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		readRequestHead(bufio.NewReader(c))
		c.(*net.TCPConn).SetLinger(0)
	})
}

// stallingBackend reads the request head and never answers, until the test
// ends or tollgate gives up.
func stallingBackend(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		readRequestHead(bufio.NewReader(c))
		io.Copy(io.Discard, c)
	})
}

// cutBody answers with a Content-Length of 1000 and closes after 10 bytes.
func cutBody(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		readRequestHead(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
	})
}

// malformedResponse answers with a status line that is not HTTP.
func malformedResponse(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		readRequestHead(bufio.NewReader(c))
		io.WriteString(c, "SMTP ready\r\n\r\n")
	})
}

// rawRequest sends bytes on a fresh connection to addr and returns the
// response, read until the server closes or a full response arrives.
func rawRequest(t testing.TB, addr, req string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body
}

// get performs a GET with a fresh client and returns status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// settle waits until no request is being handled, so every finished
// request's access log line is written: tollgate logs after the response
// went out, as Nginx does.
func (p *testProxy) settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Server.inFlight.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still in flight after 5s", p.Server.inFlight.Load())
		}
		time.Sleep(time.Millisecond)
	}
}
