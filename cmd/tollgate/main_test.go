package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the tollgate command built once for the tests that run it as a
// process: signals, exit codes and stdout are what a user sees.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-cmd")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tollgate")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tollgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "tollgate ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	var errOut bytes.Buffer
	if code := run([]string{"frobnicate"}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestHelpForEachCommand(t *testing.T) {
	for _, cmd := range []string{"run", "proxy", "check", "demo"} {
		var errOut bytes.Buffer
		if code := run([]string{cmd, "--help"}, io.Discard, &errOut); code != 0 || !strings.Contains(errOut.String(), "Usage: tollgate "+cmd) {
			t.Errorf("%s --help: exit %d, %q", cmd, code, errOut.String())
		}
	}
}

func TestCheckListsEveryErrorWithPosition(t *testing.T) {
	path := writeFile(t, "bad.yaml", "upstreams:\n  - name: app\n    servers:\n      - addr: nope\n        weight: 0\nroutes:\n  - path_prefix: /\n    upstream: ap\nbogus: 1\n")
	var out, errOut bytes.Buffer
	code := run([]string{"check", "-c", path}, &out, &errOut)
	if code != 1 {
		t.Fatalf("check exit %d, want 1", code)
	}
	for _, want := range []string{
		path + ":4:15: upstreams[0].servers[0].addr",
		path + ":5:17: upstreams[0].servers[0].weight",
		path + ":8:15: routes[0].upstream: no upstream named \"ap\"",
		path + ":9:1: unknown field \"bogus\"",
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, errOut.String())
		}
	}
}

func TestCheckAcceptsShippedExamples(t *testing.T) {
	for _, path := range []string{"../../examples/sidecar/tollgate.yaml", "../../examples/demo/tollgate.yaml"} {
		var out, errOut bytes.Buffer
		if code := run([]string{"check", "-c", path}, &out, &errOut); code != 0 {
			t.Errorf("check %s: exit %d\n%s", path, code, errOut.String())
		}
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	path := writeFile(t, "bad.yaml", "listen: 3\n")
	cmd := exec.Command(binary, "run", "-c", path)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("run with a bad config: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(string(out), path+":1:9") {
		t.Errorf("output lacks the error position:\n%s", out)
	}
}

func TestProxyFlagsValidated(t *testing.T) {
	var errOut bytes.Buffer
	if code := run([]string{"proxy", "--to", "ftp://x"}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "want http://host:port") {
		t.Fatalf("exit %d, %q", code, errOut.String())
	}
}

// TestReloadOnSIGHUP runs tollgate as a process: SIGHUP with a valid file
// switches the backend; SIGHUP with a broken file is reported with its
// position and the running config stays; SIGTERM drains and exits 0.
func TestReloadOnSIGHUP(t *testing.T) {
	a := backendNamed(t, "a")
	b := backendNamed(t, "b")
	listen, admin := freeAddr(t), freeAddr(t)
	cfg := func(backend string) string {
		return fmt.Sprintf("listen:\n  - addr: %s\nadmin:\n  addr: %s\nupstreams:\n  - name: app\n    servers:\n      - addr: %s\nroutes:\n  - path_prefix: /\n    upstream: app\n", listen, admin, backend)
	}
	path := writeFile(t, "tollgate.yaml", cfg(a))
	p := startProcess(t, "run", "-c", path)
	waitFor(t, "http://"+listen+"/", "a")

	os.WriteFile(path, []byte(cfg(b)), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "http://"+listen+"/", "b")

	os.WriteFile(path, []byte(cfg(b)+"routes: oops\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitStderr(t, "reload rejected")
	if !strings.Contains(p.stderr(), path+":12:1") {
		t.Errorf("reload error lacks the position %s:12:1:\n%s", path, p.stderr())
	}
	if got := fetch(t, "http://"+listen+"/"); got != "b" {
		t.Errorf("after a rejected reload: %q, want the running config's backend b", got)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(10 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr())
	}
	if !strings.Contains(p.stdout(), `"msg":"access"`) || !strings.Contains(p.stdout(), `"msg":"close"`) {
		t.Errorf("stdout lacks access lines or close records:\n%s", p.stdout())
	}
}

type process struct {
	cmd            *exec.Cmd
	mu             sync.Mutex
	outBuf, errBuf bytes.Buffer
	done           chan error
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(binary, args...), done: make(chan error, 1)}
	p.cmd.Stdout = lockedWriter{&p.mu, &p.outBuf}
	p.cmd.Stderr = lockedWriter{&p.mu, &p.errBuf}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *process) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(d):
		return fmt.Errorf("still running after %v", d)
	}
}

func (p *process) stdout() string { p.mu.Lock(); defer p.mu.Unlock(); return p.outBuf.String() }
func (p *process) stderr() string { p.mu.Lock(); defer p.mu.Unlock(); return p.errBuf.String() }

func (p *process) waitStderr(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("stderr never said %q:\n%s", s, p.stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func backendNamed(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(bufio.NewReader(resp.Body))
	return string(b)
}

// waitFor polls url until it answers want (a started or reloaded tollgate).
func waitFor(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := fetch(t, url)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answered %q, want %q", url, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDemo runs `tollgate demo` as a newcomer would: the embedded backends
// answer through the proxy, and the switchboard makes one reset, which the
// proxy retries on another server.
func TestDemo(t *testing.T) {
	p := startProcess(t, "demo")
	waitFor(t, "http://127.0.0.1:9901/healthz", "ok\n")
	body := fetch(t, "http://127.0.0.1:8080/hello")
	if !strings.HasPrefix(body, "hello from b") {
		t.Fatalf("demo answered %q", body)
	}
	if got := fetch(t, "http://127.0.0.1:9902/set?server=b1&mode=reset"); got != "b1 is now reset\n" {
		t.Fatalf("switchboard: %q", got)
	}
	for i := 0; i < 6; i++ {
		if body := fetch(t, "http://127.0.0.1:8080/x"); !strings.HasPrefix(body, "hello from b2") {
			t.Fatalf("request %d with b1 resetting: %q, want b2's answer", i, body)
		}
	}
	if !strings.Contains(p.stderr(), "Try:") {
		t.Errorf("demo printed no help:\n%s", p.stderr())
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if err := p.wait(10 * time.Second); err != nil {
		t.Fatalf("demo exit: %v", err)
	}
}
