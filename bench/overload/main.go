// Command overload measures tollgate's overload protection: a backend with
// a fixed capacity (N workers × service time S), an open-loop Poisson load
// generator, and tollgate in the same process between them, under three
// configs (no protection, a static limit of N, the adaptive limit) and a
// series of scenarios. It prints a Markdown table. See README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/proxy"
)

// params are the command line settings of a run.
type params struct {
	workers  int
	service  time.Duration
	step     time.Duration // length of each scenario's measured part
	warmup   time.Duration
	kill     time.Duration
	slo      time.Duration
	timeout  time.Duration
	queue    int // the backend's own queue
	clients  int // distinct client addresses of the uniform scenarios
	adaptive string
	trace    bool // print the settle bins of each scenario
}

// capacity is C = N/S in requests per second.
func (p params) capacity() float64 { return float64(p.workers) / p.service.Seconds() }

// scenario is a load shape and what happens to the backend meanwhile.
type scenario struct {
	name       string
	rate       func(t, step time.Duration) float64 // × C
	span       func(step time.Duration) (from, to time.Duration)
	events     func(b *capBackend, p params) []event
	capShare   float64                                // capacity in the span, × C
	settleFrom func(step time.Duration) time.Duration // nil: no settle time
	byCapacity bool                                   // settle on goodput (overload) rather than on success ratio
	fair       bool                                   // 10 light clients and one sending 10× as much
}

func whole(step time.Duration) (time.Duration, time.Duration)      { return 0, step }
func secondHalf(step time.Duration) (time.Duration, time.Duration) { return step / 2, step }
func half(step time.Duration) time.Duration                        { return step / 2 }

func steady(name string, x float64) scenario {
	return scenario{name: name, rate: func(time.Duration, time.Duration) float64 { return x }, span: whole, capShare: 1}
}

func scenarios() []scenario {
	return []scenario{
		steady("0.5×", 0.5), steady("0.9×", 0.9), steady("1×", 1), steady("2×", 2), steady("5×", 5),
		{name: "0.5×→5×", rate: func(t, step time.Duration) float64 {
			if t < step/2 {
				return 0.5
			}
			return 5
		}, span: secondHalf, capShare: 1, settleFrom: half, byCapacity: true},
		{name: "capacity halved (1×)", rate: func(time.Duration, time.Duration) float64 { return 1 },
			span: secondHalf, capShare: 0.5, settleFrom: half, byCapacity: true,
			events: func(b *capBackend, p params) []event {
				return []event{{at: p.step / 2, do: func() { b.pool.setWorkers(p.workers / 2) }}}
			}},
		{name: "backend killed (0.8×)", rate: func(time.Duration, time.Duration) float64 { return 0.8 },
			span: whole, capShare: 1, settleFrom: func(step time.Duration) time.Duration { return killAt(step) + killFor },
			events: func(b *capBackend, p params) []event {
				return []event{{at: killAt(p.step), do: b.kill},
					{at: killAt(p.step) + killFor, do: func() { b.restart() }}}
			}},
		{name: "fair: 10 light + 1 heavy (2×)", rate: func(time.Duration, time.Duration) float64 { return 2 },
			span: whole, capShare: 1, fair: true},
		// The same mix with the light clients at 0.75 C instead of 1 C.
		{name: "fair: 10 light + 1 heavy (1.5×)", rate: func(time.Duration, time.Duration) float64 { return 1.5 },
			span: whole, capShare: 1, fair: true},
	}
}

// killFor is set from -kill; the kill starts a quarter into the step.
var killFor time.Duration

func killAt(step time.Duration) time.Duration { return step / 4 }

func main() {
	var p params
	flag.IntVar(&p.workers, "workers", 10, "backend workers N")
	flag.DurationVar(&p.service, "service", 20*time.Millisecond, "backend service time S (capacity C = N/S)")
	flag.DurationVar(&p.step, "step", 30*time.Second, "measured length of each scenario")
	flag.DurationVar(&p.warmup, "warmup", time.Second, "unmeasured load before each scenario, at its initial rate")
	flag.DurationVar(&p.kill, "kill", 10*time.Second, "how long the backend is killed in the kill scenario")
	flag.DurationVar(&p.slo, "slo", 100*time.Millisecond, "latency SLO of goodput")
	flag.DurationVar(&p.timeout, "timeout", time.Second, "client timeout")
	flag.IntVar(&p.queue, "backend-queue", 512, "the backend's own queue; beyond it the backend answers 503")
	flag.IntVar(&p.clients, "clients", 1000, "distinct client addresses in the uniform scenarios")
	flag.StringVar(&p.adaptive, "adaptive", "enabled: true", "the adaptive_concurrency block of the adaptive config (YAML flow mapping body)")
	flag.BoolVar(&p.trace, "trace", false, "print the 100ms bins the settle time is read from")
	only := flag.String("scenarios", "", "comma-separated scenario name prefixes to run (default all)")
	configs := flag.String("configs", "none,static,adaptive", "configs to compare")
	flag.Parse()
	killFor = p.kill
	if p.kill >= p.step*3/4 {
		fmt.Fprintln(os.Stderr, "overload: -kill must be shorter than three quarters of -step")
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "C = %d workers / %v = %.0f req/s; %v per scenario; GOMAXPROCS %d\n",
		p.workers, p.service, p.capacity(), p.step, runtime.GOMAXPROCS(0))
	var results []result
	for _, sc := range scenarios() {
		if !selected(sc.name, *only) {
			continue
		}
		for _, cfg := range strings.Split(*configs, ",") {
			r, err := runOne(&sc, cfg, p)
			if err != nil {
				fmt.Fprintf(os.Stderr, "overload: %s / %s: %v\n", sc.name, cfg, err)
				os.Exit(1)
			}
			fmt.Fprintf(os.Stderr, "%-32s %-9s goodput %.2f p99 %.1fms shed %.2f%% (%s) limit %.0f minRTT %.1fms sampleRTT %.1fms\n",
				sc.name, cfg, r.goodput, msf(r.p99), 100*r.shed, r.shedBy, r.limit, r.minRTT, r.sampleRTT)
			results = append(results, r)
		}
	}
	fmt.Print(table(results))
	fmt.Print(targets(results))
}

func selected(name, only string) bool {
	if only == "" {
		return true
	}
	for _, s := range strings.Split(only, ",") {
		if strings.HasPrefix(name, s) {
			return true
		}
	}
	return false
}

// tollgateYAML is the config of one run; block is the upstream's
// adaptive_concurrency, if any. Passive health and breakers are off so
// that the table shows the overload protection alone.
func tollgateYAML(backend, cfg string, p params) (string, error) {
	block := ""
	switch cfg {
	case "none":
	case "static":
		block = fmt.Sprintf("    adaptive_concurrency: {enabled: true, mode: fixed, fixed_limit: %d}\n", p.workers)
	case "adaptive":
		block = "    adaptive_concurrency: {" + p.adaptive + "}\n"
	default:
		return "", fmt.Errorf("unknown config %q (none, static, adaptive)", cfg)
	}
	return `listen: [{addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0"}
real_ip: {set_real_ip_from: [127.0.0.1/32], real_ip_header: X-Real-IP}
upstreams:
  - name: app
    keepalive: 1024
    breaker: {enabled: false}
    servers: [{addr: "` + backend + `", max_fails: 0}]
` + block + `routes: [{path_prefix: /, upstream: app}]
`, nil
}

// runOne runs one scenario under one config with a fresh backend and a
// fresh tollgate.
func runOne(sc *scenario, cfg string, p params) (result, error) {
	b, err := startBackend(p.workers, p.service, p.queue)
	if err != nil {
		return result{}, err
	}
	defer b.stop(10 * time.Second)
	yaml, err := tollgateYAML(b.addr, cfg, p)
	if err != nil {
		return result{}, err
	}
	c, err := config.Parse("overload.yaml", []byte(yaml))
	if err != nil {
		return result{}, err
	}
	s, err := proxy.New(c, proxy.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return result{}, err
	}
	if err := s.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}()
	pick := func(*rand.Rand) int { return 0 }
	clients := 1
	if sc.fair {
		// Client 0 sends 10 of every 20 requests; clients 1-10 one each.
		clients, pick = 11, func(r *rand.Rand) int { return max(r.IntN(20)-9, 0) }
	} else if p.clients > 1 {
		clients, pick = p.clients, func(r *rand.Rand) int { return r.IntN(p.clients) }
	}
	gen := newLoadGen("http://"+s.Addrs()[0].String()+"/", p.timeout, clients, pick)
	var events []event
	if sc.events != nil {
		events = sc.events(b, p)
	}
	stop := make(chan struct{})
	limits := make(chan []limitSample, 1)
	go func() { limits <- sampleLimits("http://"+s.AdminAddr().String(), p.warmup, stop) }()
	rate := func(t time.Duration) float64 { return sc.rate(max(t, 0), p.step) * p.capacity() }
	recs := gen.run(p.warmup, p.step, rate, events)
	close(stop)
	r := analyze(sc, cfg, p, recs, <-limits)
	r.shedBy = shedReasons("http://" + s.AdminAddr().String())
	return r, nil
}

// shedReasons reads tollgate's shed counts by reason ("" without a gate).
func shedReasons(admin string) string {
	resp, err := http.Get(admin + "/debug/upstreams")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var ups []struct {
		Adaptive *struct {
			Shed map[string]uint64 `json:"shed"`
		} `json:"adaptive_concurrency"`
	}
	if json.NewDecoder(resp.Body).Decode(&ups) != nil || len(ups) == 0 || ups[0].Adaptive == nil {
		return ""
	}
	sh := ups[0].Adaptive.Shed
	return fmt.Sprintf("fair_share %d, queue_full %d, queue_timeout %d", sh["fair_share"], sh["queue_full"], sh["queue_timeout"])
}

// sampleLimits reads the adaptive limit from /debug/upstreams every 100ms
// until stop closes; times are from the scenario's start.
func sampleLimits(admin string, warmup time.Duration, stop <-chan struct{}) []limitSample {
	start := time.Now().Add(warmup)
	var out []limitSample
	t := time.NewTicker(bin)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return out
		case <-t.C:
		}
		resp, err := http.Get(admin + "/debug/upstreams")
		if err != nil {
			continue
		}
		var ups []struct {
			Adaptive *struct {
				Limit     int     `json:"limit"`
				MinRTT    float64 `json:"min_rtt_ms"`
				SampleRTT float64 `json:"sample_rtt_ms"`
			} `json:"adaptive_concurrency"`
		}
		json.NewDecoder(resp.Body).Decode(&ups)
		resp.Body.Close()
		if len(ups) > 0 && ups[0].Adaptive != nil {
			a := ups[0].Adaptive
			out = append(out, limitSample{at: time.Since(start), limit: a.Limit, minRTT: a.MinRTT, sampleRTT: a.SampleRTT})
		}
	}
}

// targets checks the targets against the adaptive config's rows.
func targets(rs []result) string {
	find := func(prefix string) *result {
		i := slices.IndexFunc(rs, func(r result) bool { return r.config == "adaptive" && strings.HasPrefix(r.scenario, prefix) })
		if i < 0 {
			return nil
		}
		return &rs[i]
	}
	var b strings.Builder
	b.WriteString("\nTargets (adaptive):\n")
	check := func(what string, ok bool, got string) {
		mark := "MISSED"
		if ok {
			mark = "met"
		}
		fmt.Fprintf(&b, "- %s: %s (%s)\n", what, got, mark)
	}
	if r := find("5×"); r != nil {
		check("goodput ≥ 95 % of C at 5×", r.goodput >= 0.95, fmt.Sprintf("%.1f %%", 100*r.goodput))
		if u := find("0.5×"); u != nil && u.scenario == "0.5×" {
			check("p99 of accepted at 5× ≤ 2× unloaded p99", r.p99 <= 2*u.p99,
				fmt.Sprintf("%.1f ms vs 2 × %.1f ms", msf(r.p99), msf(u.p99)))
		}
	}
	if r := find("0.9×"); r != nil {
		check("false shedding < 0.1 % at 0.9×", r.shed < 0.001, fmt.Sprintf("%.3f %%", 100*r.shed))
	}
	if r := find("0.5×→5×"); r != nil {
		check("convergence after the step < 0.5 s", r.settle >= 0 && r.settle < 500*time.Millisecond, fmt.Sprintf("%v", r.settle))
	}
	if r := find("fair"); r != nil {
		check("light clients ≥ 99 % success", r.light >= 0.99, fmt.Sprintf("%.2f %% (%.2f %% within the SLO)", 100*r.light, 100*r.lightSLO))
	}
	return b.String()
}
