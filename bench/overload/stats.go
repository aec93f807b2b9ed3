package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// result is one scenario under one config, over the scenario's measured
// span.
type result struct {
	scenario, config string
	offered          float64       // offered load, × C
	goodput          float64       // 2xx within the SLO per second, × the capacity in the span
	p50, p99         time.Duration // of accepted (2xx) requests
	shed, errs       float64       // shares of the requests: tollgate's 503s; every other failure
	limit            float64       // median adaptive limit sampled in the span; 0: none
	minRTT           float64       // its median minRTT, ms
	sampleRTT        float64       // its median sample RTT (time to the response head), ms
	settle           time.Duration // convergence or recovery time; -1: never
	hasSettle        bool
	light, lightSLO  float64 // fair scenario: light clients' 2xx share, and within the SLO
	hasLight         bool
	shedBy           string // tollgate's shed counts by reason, whole run
	n                int
}

// limitSample is the adaptive limit at one instant of a run.
type limitSample struct {
	at                time.Duration
	limit             int
	minRTT, sampleRTT float64 // ms
}

// analyze computes a scenario's result from its records.
func analyze(sc *scenario, cfg string, p params, recs []record, limits []limitSample) result {
	from, to := sc.span(p.step)
	capacity := p.capacity() * sc.capShare
	r := result{scenario: sc.name, config: cfg, settle: -1}
	var accepted []time.Duration
	good, light, lightOK, lightSLO := 0, 0, 0, 0
	for _, rec := range recs {
		if rec.at < from || rec.at >= to {
			continue
		}
		r.n++
		ok := rec.status >= 200 && rec.status < 300
		inSLO := ok && rec.latency <= p.slo
		switch {
		case ok:
			accepted = append(accepted, rec.latency)
		case rec.shed:
			r.shed++
		default:
			r.errs++
		}
		if inSLO {
			good++
		}
		if sc.fair && rec.client != 0 {
			light++
			if ok {
				lightOK++
			}
			if inSLO {
				lightSLO++
			}
		}
	}
	secs := (to - from).Seconds()
	r.offered = float64(r.n) / secs / p.capacity()
	r.goodput = float64(good) / secs / capacity
	if r.n > 0 {
		r.shed /= float64(r.n)
		r.errs /= float64(r.n)
	}
	if len(accepted) > 0 {
		slices.Sort(accepted)
		r.p50 = accepted[len(accepted)/2]
		r.p99 = accepted[min(len(accepted)*99/100, len(accepted)-1)]
	}
	if light > 0 {
		r.hasLight, r.light, r.lightSLO = true, float64(lightOK)/float64(light), float64(lightSLO)/float64(light)
	}
	r.limit = median(limits, from, to, func(x limitSample) float64 { return float64(x.limit) })
	r.minRTT = median(limits, from, to, func(x limitSample) float64 { return x.minRTT })
	r.sampleRTT = median(limits, from, to, func(x limitSample) float64 { return x.sampleRTT })
	if sc.settleFrom != nil {
		r.hasSettle = true
		r.settle = settleTime(recs, p, sc, capacity)
	}
	return r
}

// median is the median of f over the samples in [from, to); 0 without any.
func median(s []limitSample, from, to time.Duration, f func(limitSample) float64) float64 {
	var in []float64
	for _, x := range s {
		if x.at >= from && x.at < to && x.limit > 0 {
			in = append(in, f(x))
		}
	}
	if len(in) == 0 {
		return 0
	}
	slices.Sort(in)
	return in[len(in)/2]
}

const bin = 100 * time.Millisecond

// settleTime is the time from the scenario's mark (a load step, a
// capacity change, the backend's restart) to the start of the first 1s
// run of 100ms bins that are all fine. When the scenario overloads, bins
// are by completion time, and a bin is fine when the goodput of the 300ms
// ending with it is at least 90 % of the capacity and the median latency
// of the requests accepted in the bin is at most 1.2 × the steady median
// (that of the run's last second): the system reached its steady state.
// (A bin holds about C/10 accepted requests, too few for a tail
// percentile; and its goodput alone swings by ±10 % in the steady state,
// as the backend's workers finish in clumps across bin edges, so a
// one-bin goodput threshold failed steady bins about once in 30 and the
// first "1s of fine bins" then came seconds after the system had
// settled.) Otherwise bins are by send time, and a bin is fine when 90 %
// of its requests got a 2xx within the SLO. -1: never within the run.
func settleTime(recs []record, p params, sc *scenario, capacity float64) time.Duration {
	mark := sc.settleFrom(p.step)
	_, to := sc.span(p.step)
	nb := int((to - mark) / bin)
	good, offered := make([]float64, nb), make([]float64, nb)
	accepted := make([][]time.Duration, nb)
	var steady []time.Duration
	for _, rec := range recs {
		ok := rec.status >= 200 && rec.status < 300
		t := rec.at
		if sc.byCapacity {
			t += rec.latency // completion
		}
		if ok && t >= to-time.Second && t < to {
			steady = append(steady, rec.latency)
		}
		i := int((t - mark) / bin)
		if t < mark || i >= nb {
			continue
		}
		offered[i]++
		if ok {
			accepted[i] = append(accepted[i], rec.latency)
			if rec.latency <= p.slo {
				good[i]++
			}
		}
	}
	slices.Sort(steady)
	var steadyP50 time.Duration
	if len(steady) > 0 {
		steadyP50 = steady[len(steady)/2]
	}
	const smooth = 3 // bins of goodput averaged
	median := func(i int) time.Duration {
		a := accepted[i]
		if len(a) == 0 {
			return 0
		}
		slices.Sort(a)
		return a[len(a)/2]
	}
	rolling := func(i int) float64 {
		sum, n := 0.0, 0
		for j := max(i-smooth+1, 0); j <= i; j++ {
			sum, n = sum+good[j], n+1
		}
		return sum / float64(n)
	}
	fine := func(i int) bool {
		if !sc.byCapacity {
			return offered[i] > 0 && good[i] >= 0.9*offered[i]
		}
		return rolling(i) >= 0.9*capacity*bin.Seconds() && len(accepted[i]) > 0 && median(i) <= steadyP50*12/10
	}
	if p.trace {
		for i := range min(nb, 40) {
			fmt.Fprintf(os.Stderr, "%s: bin %2d good %3.0f (300ms mean %5.1f, need %4.1f) p50 %6.1fms (steady %.1fms) fine %v\n",
				sc.name, i, good[i], rolling(i), 0.9*capacity*bin.Seconds(), msf(median(i)), msf(steadyP50), fine(i))
		}
	}
	const run = 10
	for i := 0; i+run <= nb; i++ {
		all := true
		for j := i; j < i+run && all; j++ {
			all = fine(j)
		}
		if all {
			return time.Duration(i) * bin
		}
	}
	return -1
}

// table prints the results as Markdown.
func table(rs []result) string {
	var b strings.Builder
	b.WriteString("| scenario | config | offered ×C | goodput ×C | p50 ms | p99 ms | shed % | errors % | limit | settle | light ok % (in SLO) |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rs {
		limit, settle, light := "–", "–", "–"
		if r.limit > 0 {
			limit = fmt.Sprintf("%.0f", r.limit)
		}
		if r.hasSettle {
			settle = "never"
			if r.settle >= 0 {
				settle = fmt.Sprintf("%.1fs", r.settle.Seconds())
			}
		}
		if r.hasLight {
			light = fmt.Sprintf("%.2f (%.2f)", 100*r.light, 100*r.lightSLO)
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f | %s | %s | %s |\n",
			r.scenario, r.config, r.offered, r.goodput, msf(r.p50), msf(r.p99), 100*r.shed, 100*r.errs, limit, settle, light)
	}
	return b.String()
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
