package main

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// workerPool is a backend's capacity: workers requests are served at once,
// each for the service time; the others wait in FIFO order in a queue of
// at most maxQueue, as in a thread pool, and beyond it are refused with 503.
// Capacity does not depend on the CPU. A waiting request is served even if
// its client left, as a thread pool does, which is what makes an
// unprotected backend collapse.
type workerPool struct {
	mu       sync.Mutex
	workers  int
	service  time.Duration
	busy     int
	waiting  []chan struct{}
	maxQueue int
}

// acquire takes a worker, waiting in the queue if needed; false means the
// queue was full.
func (p *workerPool) acquire() bool {
	p.mu.Lock()
	if p.busy < p.workers && len(p.waiting) == 0 {
		p.busy++
		p.mu.Unlock()
		return true
	}
	if len(p.waiting) >= p.maxQueue {
		p.mu.Unlock()
		return false
	}
	ch := make(chan struct{})
	p.waiting = append(p.waiting, ch)
	p.mu.Unlock()
	<-ch
	return true
}

func (p *workerPool) release() {
	p.mu.Lock()
	p.busy--
	p.wakeLocked()
	p.mu.Unlock()
}

// wakeLocked gives free workers to waiting requests, oldest first.
func (p *workerPool) wakeLocked() {
	for p.busy < p.workers && len(p.waiting) > 0 {
		p.busy++
		close(p.waiting[0])
		p.waiting = p.waiting[1:]
	}
}

func (p *workerPool) serviceTime() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.service
}

// setWorkers changes the capacity; requests being served finish first.
func (p *workerPool) setWorkers(n int) {
	p.mu.Lock()
	p.workers = n
	p.wakeLocked()
	p.mu.Unlock()
}

// idle reports whether no request is served or waiting.
func (p *workerPool) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.busy == 0 && len(p.waiting) == 0
}

// capBackend is the HTTP server in front of a workerPool, on a fixed
// loopback address so that it can be killed and started again.
type capBackend struct {
	addr string
	pool *workerPool
	mu   sync.Mutex
	srv  *http.Server
}

func startBackend(workers int, service time.Duration, maxQueue int) (*capBackend, error) {
	b := &capBackend{pool: &workerPool{workers: workers, service: service, maxQueue: maxQueue}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b.addr = ln.Addr().String()
	b.serve(ln)
	return b, nil
}

func (b *capBackend) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !b.pool.acquire() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		time.Sleep(b.pool.serviceTime())
		b.pool.release()
		io.WriteString(w, "ok\n")
	})
}

func (b *capBackend) serve(ln net.Listener) {
	srv := &http.Server{Handler: b.handler(), ReadHeaderTimeout: 10 * time.Second}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go srv.Serve(ln)
}

// kill closes the listener and every connection: connects are refused
// until restart.
func (b *capBackend) kill() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// restart listens again on the same address.
func (b *capBackend) restart() error {
	var ln net.Listener
	var err error
	for range 50 { // the port may linger a moment after the close
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			b.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// stop kills the backend and waits (at most limit) for its queue to drain.
func (b *capBackend) stop(limit time.Duration) {
	b.kill()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline) && !b.pool.idle(); {
		time.Sleep(10 * time.Millisecond)
	}
}
