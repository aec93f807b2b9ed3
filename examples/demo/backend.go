// Package demo is what `tollgate demo` runs behind the proxy: a few HTTP
// backends on loopback whose behaviour can be switched at run time, so a
// newcomer can watch tollgate balance, fail over and explain failures.
package demo

import (
	_ "embed"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is the tollgate configuration the demo runs (tollgate.yaml here).
//
//go:embed tollgate.yaml
var Config []byte

// Mode is how a demo backend answers.
type Mode string

// The behaviours a demo backend can be switched to.
const (
	Healthy Mode = "healthy" // 200 at once
	Slow    Mode = "slow"    // 200 after SlowDelay
	Error   Mode = "5xx"     // 500
	Reset   Mode = "reset"   // TCP reset instead of a response
	Hang    Mode = "hang"    // never answers; holds the request
)

// Modes lists every mode, for help texts.
var Modes = []Mode{Healthy, Slow, Error, Reset, Hang}

// SlowDelay is how long a slow backend takes.
const SlowDelay = 2 * time.Second

// Backend is one demo server.
type Backend struct {
	Name string
	Addr string
	mode atomic.Value // Mode
	hits atomic.Int64
	srv  *http.Server
}

// Start listens on addr and serves in the background.
func Start(name, addr string) (*Backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo backend %s: %w", name, err)
	}
	b := &Backend{Name: name, Addr: ln.Addr().String()}
	b.mode.Store(Healthy)
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go b.srv.Serve(ln)
	return b, nil
}

// SetMode switches the backend's behaviour.
func (b *Backend) SetMode(m Mode) { b.mode.Store(m) }

// Mode returns the current behaviour.
func (b *Backend) Mode() Mode { return b.mode.Load().(Mode) }

// Close stops the backend.
func (b *Backend) Close() error { return b.srv.Close() }

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	switch b.Mode() {
	case Slow:
		select {
		case <-time.After(SlowDelay):
		case <-r.Context().Done():
			return
		}
	case Error:
		http.Error(w, b.Name+": simulated failure", http.StatusInternalServerError)
		return
	case Reset:
		resetConn(w)
		return
	case Hang:
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hello from %s (%s %s, request id %s)\n", b.Name, r.Method, r.URL.Path, r.Header.Get("X-Request-Id"))
}

// resetConn drops the client connection with a TCP RST: linger 0, then
// close, the way a crashing backend looks from outside.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Control serves the switchboard: GET / lists backends and modes;
// GET /set?server=NAME&mode=MODE switches one.
type Control struct {
	mu       sync.Mutex
	backends map[string]*Backend
}

// NewControl returns a switchboard for the given backends.
func NewControl(bs []*Backend) *Control {
	c := &Control{backends: map[string]*Backend{}}
	for _, b := range bs {
		c.backends[b.Name] = b
	}
	return c
}

func (c *Control) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.URL.Path == "/set" {
		name, mode := r.URL.Query().Get("server"), Mode(r.URL.Query().Get("mode"))
		b, ok := c.backends[name]
		if !ok || !validMode(mode) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "usage: /set?server=NAME&mode=MODE (modes: %s)\n", modeList())
			return
		}
		b.SetMode(mode)
		fmt.Fprintf(w, "%s is now %s\n", name, mode)
		return
	}
	names := make([]string, 0, len(c.backends))
	for n := range c.backends {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b := c.backends[n]
		fmt.Fprintf(w, "%s %s mode=%s hits=%d\n", b.Name, b.Addr, b.Mode(), b.hits.Load())
	}
	fmt.Fprintf(w, "modes: %s\n", modeList())
}

func validMode(m Mode) bool {
	for _, x := range Modes {
		if x == m {
			return true
		}
	}
	return false
}

func modeList() string {
	s := make([]string, len(Modes))
	for i, m := range Modes {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}
