package main

import (
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// record is one request as the load generator saw it. Latency runs from
// the request's scheduled send time, so a generator that falls behind
// counts against the system, not for it (no coordinated omission).
type record struct {
	at      time.Duration // scheduled send time from the scenario's start; negative in warm-up
	latency time.Duration
	status  int  // 0: no response (timeout or connection error)
	shed    bool // tollgate's own 503 (Proxy-Status connection_limit_reached)
	client  int  // 0 is the heavy client in the fair scenario
}

// loadGen sends an open-loop Poisson stream of GETs: arrivals do not wait
// for responses, so an overloaded system sees the full offered load (a
// closed-loop generator such as wrk slows down with the system instead).
type loadGen struct {
	url    string
	client *http.Client
	pick   func(r *rand.Rand) int // the client of an arrival
	ips    []string               // X-Real-IP by client

	mu      sync.Mutex
	records []record
	wg      sync.WaitGroup
}

func newLoadGen(url string, timeout time.Duration, clients int, pick func(*rand.Rand) int) *loadGen {
	tr := &http.Transport{MaxIdleConnsPerHost: 4096, IdleConnTimeout: 30 * time.Second, DisableCompression: true}
	g := &loadGen{url: url, client: &http.Client{Transport: tr, Timeout: timeout}, pick: pick}
	for i := range clients {
		g.ips = append(g.ips, "10."+strconv.Itoa(i>>16&255)+"."+strconv.Itoa(i>>8&255)+"."+strconv.Itoa(i&255))
	}
	return g
}

// run sends arrivals from -warmup to length at rate(t) requests per second
// (t from the scenario's start), calling events as their time comes, and
// waits for every response.
func (g *loadGen) run(warmup, length time.Duration, rate func(time.Duration) float64, events []event) []record {
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now().Add(warmup)
	next := -warmup
	for next < length {
		now := time.Since(start)
		for len(events) > 0 && events[0].at <= now {
			go events[0].do()
			events = events[1:]
		}
		for next <= now && next < length {
			g.send(start, next, g.pick(rng))
			r := rate(next)
			next += time.Duration(rng.ExpFloat64() / r * float64(time.Second))
		}
		time.Sleep(200 * time.Microsecond)
	}
	for _, e := range events {
		go e.do()
	}
	g.wg.Wait()
	g.client.CloseIdleConnections()
	return g.records
}

// event is something that happens to the backend during a scenario.
type event struct {
	at time.Duration
	do func()
}

func (g *loadGen) send(start time.Time, at time.Duration, client int) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		rec := record{at: at, client: client}
		req, _ := http.NewRequest("GET", g.url, nil)
		req.Header.Set("X-Real-IP", g.ips[client])
		resp, err := g.client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil {
				rec.status = resp.StatusCode
				rec.shed = strings.Contains(resp.Header.Get("Proxy-Status"), "connection_limit_reached")
			}
		}
		rec.latency = time.Since(start.Add(at))
		g.mu.Lock()
		g.records = append(g.records, rec)
		g.mu.Unlock()
	}()
}
