package limiter

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// ConcurrencyMode selects how a Controller sets its limit.
type ConcurrencyMode uint8

const (
	// Gradient adapts the limit to the backend's latency and overload
	// answers (Envoy's gradient controller plus a loss signal).
	Gradient ConcurrencyMode = iota
	// Fixed holds the limit at ControllerConfig.FixedLimit.
	Fixed
)

// String returns the config name of the mode: "gradient" or "fixed".
func (m ConcurrencyMode) String() string {
	if m == Fixed {
		return "fixed"
	}
	return "gradient"
}

// Outcome is what a finished request tells the controller about the
// backend.
type Outcome uint8

const (
	// Success is a response with a non-error status (below 500, not 429):
	// its latency is a sample.
	Success Outcome = iota
	// Failed is a failure that says nothing about load (a refused connect,
	// a reset, a 500): the slot is freed, no sample is taken, so that fast
	// errors do not drag the latency estimates down.
	Failed
	// Overloaded is the backend saying it is overloaded: a 503 or 429, or
	// a try that timed out. It cuts the limit by ControllerConfig.Backoff.
	Overloaded
	// Dropped is a request the client gave up on: it says nothing.
	Dropped
)

// ControllerConfig configures a Controller. Zero values take the defaults
// named on each field.
type ControllerConfig struct {
	// Mode is Gradient (the zero value) or Fixed.
	Mode ConcurrencyMode
	// FixedLimit is the limit in Fixed mode. Zero: Initial.
	FixedLimit int
	// Min and Max bound the gradient limit. Defaults 3 and 1000 (Envoy's).
	// A Max below Min is raised to Min.
	Min, Max int
	// Initial is the limit to start from. Default 20, within [Min, Max].
	Initial int
	// Window is how often the limit is recomputed from the latency samples
	// taken since the last time. Default 100ms (Envoy's).
	Window time.Duration
	// Percentile of a window's samples is its sample RTT, in (0, 100].
	// Default 50, the median, as Envoy: a high percentile follows the bursts
	// of a backend near capacity and cuts the limit for queues that drain
	// on their own.
	Percentile float64
	// Buffer is the latency increase over minRTT that still counts as no
	// queueing, as a fraction of minRTT. Default 0.25. Negative: none.
	Buffer float64
	// MinRTTInterval is how often minRTT is measured again. Default 60s.
	MinRTTInterval time.Duration
	// MinRTTJitter spreads the re-measurements by ± this fraction of the
	// interval, so that several tollgates do not probe a shared backend at
	// the same instant. Default 0.15; at most 1. Negative: none.
	MinRTTJitter float64
	// Backoff multiplies the limit on an Overloaded outcome, at most once
	// per Window. Default 0.9; in (0, 1].
	Backoff float64
	// Rand returns numbers in [0, 1) for the jitter. Nil: math/rand/v2.
	Rand func() float64
}

// Defaults of ControllerConfig.
const (
	DefaultConcurrencyMin     = 3
	DefaultConcurrencyMax     = 1000
	DefaultConcurrencyInitial = 20
	DefaultConcurrencyWindow  = 100 * time.Millisecond
	DefaultPercentile         = 50
	DefaultBuffer             = 0.25
	DefaultMinRTTInterval     = 60 * time.Second
	DefaultMinRTTJitter       = 0.15
	DefaultBackoff            = 0.9
)

const (
	// probeGain is the latency drop that makes a minRTT measurement halve
	// the limit once more: a step whose latency fell below 0.9 of the
	// previous step's still drained a queue.
	probeGain = 0.9
	// probeSamples is how many samples a measurement step wants; it ends
	// at the first window close with that many, or after probeWindows
	// windows with what it has.
	probeSamples = 10
	probeWindows = 10
	// maxSamples bounds a window's samples; later ones in the same window
	// are not kept.
	maxSamples = 8192
	// growthUse is the share of the limit a window's peak in flight must
	// reach for the limit to grow. A limit the traffic does not reach says
	// nothing about the backend, and lets a load step through unchecked:
	// at half (Netflix's concurrency-limits rule) the limit idled at twice
	// the traffic's peak, and a step to 5× C sent that many requests to the
	// backend at once (bench/overload: settling in 0.5-1.4s; 0.4s at three
	// quarters, with no more shedding near capacity).
	growthUse = 0.75
)

func (c *ControllerConfig) withDefaults() ControllerConfig {
	d := *c
	setDefault(&d.Min, DefaultConcurrencyMin)
	setDefault(&d.Max, DefaultConcurrencyMax)
	d.Max = max(d.Max, d.Min)
	setDefault(&d.Initial, DefaultConcurrencyInitial)
	d.Initial = min(max(d.Initial, d.Min), d.Max)
	if d.FixedLimit <= 0 {
		d.FixedLimit = d.Initial
	}
	if d.Window <= 0 {
		d.Window = DefaultConcurrencyWindow
	}
	if d.Percentile <= 0 || d.Percentile > 100 {
		d.Percentile = DefaultPercentile
	}
	d.Buffer = orDefault(d.Buffer, DefaultBuffer)
	if d.MinRTTInterval <= 0 {
		d.MinRTTInterval = DefaultMinRTTInterval
	}
	d.MinRTTJitter = min(orDefault(d.MinRTTJitter, DefaultMinRTTJitter), 1)
	if d.Backoff <= 0 || d.Backoff > 1 {
		d.Backoff = DefaultBackoff
	}
	if d.Rand == nil {
		d.Rand = rand.Float64
	}
	return d
}

// orDefault is def for 0, and 0 for a negative f.
func orDefault(f, def float64) float64 {
	if f == 0 {
		return def
	}
	return max(f, 0)
}

func setDefault(n *int, def int) {
	if *n <= 0 {
		*n = def
	}
}

// Controller is a concurrency limit for one upstream: Acquire admits a
// request while fewer than Limit are in flight, Release ends it and tells
// how it went.
//
// In Gradient mode the limit follows Envoy's gradient controller. Every
// Window, the Percentile of the latencies of the successful requests that
// ended in the window is the sample RTT, and
//
//	gradient = clamp((minRTT·(1+Buffer)) / sampleRTT, 0.5, 2)
//	limit    = gradient·limit + √(gradient·limit), within [Min, Max]
//
// so the limit grows while latency stays within Buffer of minRTT and
// shrinks as a queue builds. Two rules keep it honest: the limit grows only
// when the window's peak in flight reached three quarters of it (a limit
// that traffic does not reach says nothing about the backend, and would let
// a load step through unchecked; Netflix's concurrency-limits has the same
// rule at one half), and not in a window where a loss cut it.
//
// minRTT is the lowest sample RTT seen since it was last measured, and is
// measured again every MinRTTInterval ± MinRTTJitter from live traffic, in
// steps: each step halves the limit in force and takes the Percentile of
// the latencies of requests that started during the step; while a step's
// latency is below 0.9 of the previous step's (the step before the first
// is the last window's sample RTT), a queue at the backend is still
// draining and the next step halves again, down to Min at most. The last
// step's latency (or the previous one, if lower) is the new minRTT; it may
// be higher than the old one (the backend got slower). The limit is then
// restored. A measurement at saturation usually takes two or three windows.
// The first measurement starts at once. Envoy pins the limit to its
// minimum for a fixed number of requests instead; without any measurement,
// a minRTT taken at saturation would ratchet the limit up.
//
// A loss signal beside the delay signal: an Overloaded outcome (a 503 or
// 429 from the backend, a try that timed out) multiplies the limit by
// Backoff, at most once per Window. Only Success outcomes give latency
// samples, so fast errors do not shrink minRTT.
//
// In Fixed mode the limit is FixedLimit; samples are still taken, and
// minRTT is the lowest sample RTT, for Snapshot.
//
// Time is a parameter: windows end at the first call at or after their
// end. A Controller is safe for concurrent use.
type Controller struct {
	mu  sync.Mutex
	cfg ControllerConfig

	limit    float64 // the gradient limit, before a measurement's cut
	inFlight int
	peak     int // most in flight during the window

	winStart  time.Time
	samples   []time.Duration // latencies of the window's successes
	sampleRTT time.Duration   // the last window's percentile; 0 before any
	minRTT    time.Duration   // 0 before any measurement
	cut       bool            // a loss cut the limit in this window
	lastCut   time.Time

	probing     bool    // minRTT is being measured
	probeLevel  float64 // share of the limit in force during the step
	probePrev   time.Duration
	probeStart  time.Time       // of the current step
	probe       []time.Duration // latencies of requests started since probeStart
	probeWindow int             // windows the step has lasted
	nextProbe   time.Time
}

// NewController returns a controller at cfg's Initial limit (FixedLimit in
// Fixed mode), starting its first minRTT measurement at now.
func NewController(cfg ControllerConfig, now time.Time) *Controller {
	c := &Controller{cfg: cfg.withDefaults(), winStart: now}
	c.limit = float64(c.cfg.Initial)
	if c.cfg.Mode == Gradient {
		c.startProbe(now)
	}
	return c
}

// Reconfigure applies a new configuration and keeps the state: requests in
// flight, the limit (moved into the new [Min, Max]) and minRTT. A change of
// mode starts over from Initial.
func (c *Controller) Reconfigure(cfg ControllerConfig, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.cfg
	c.cfg = cfg.withDefaults()
	switch {
	case c.cfg.Mode != old.Mode:
		c.limit = float64(c.cfg.Initial)
		c.probing = false
		if c.cfg.Mode == Gradient {
			c.startProbe(now)
		}
	case c.cfg.Mode == Gradient:
		c.limit = c.clamp(c.limit)
		if next := now.Add(c.jittered()); !c.probing && next.Before(c.nextProbe) {
			c.nextProbe = next
		}
	}
}

// Acquire admits a request if fewer than Limit are in flight, and counts
// it in flight. Every admitted request must be Released.
func (c *Controller) Acquire(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(now)
	if c.inFlight >= c.effective() {
		return false
	}
	c.inFlight++
	c.peak = max(c.peak, c.inFlight)
	return true
}

// Release ends a request admitted by Acquire at now; latency is its time to
// the response head (used only for Success).
func (c *Controller) Release(now time.Time, latency time.Duration, o Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(now)
	c.inFlight = max(c.inFlight-1, 0)
	switch o {
	case Success:
		if len(c.samples) < maxSamples {
			c.samples = append(c.samples, latency)
		}
		if c.probing && !now.Add(-latency).Before(c.probeStart) && len(c.probe) < maxSamples {
			c.probe = append(c.probe, latency)
		}
	case Overloaded:
		c.lose(now)
	}
}

// Limit returns the current limit on requests in flight.
func (c *Controller) Limit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.effective()
}

// InFlight returns the number of requests admitted and not yet released.
func (c *Controller) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight
}

// ControllerSnapshot is a Controller's state, for metrics and debugging.
type ControllerSnapshot struct {
	Mode      ConcurrencyMode
	Limit     int           // the limit in force (lowered while Probing)
	InFlight  int           // requests admitted, not yet released
	MinRTT    time.Duration // 0 before the first measurement
	SampleRTT time.Duration // the last window's percentile; 0 before any
	Probing   bool          // minRTT is being measured
}

// Snapshot returns the controller's state.
func (c *Controller) Snapshot() ControllerSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ControllerSnapshot{
		Mode: c.cfg.Mode, Limit: c.effective(), InFlight: c.inFlight,
		MinRTT: c.minRTT, SampleRTT: c.sampleRTT, Probing: c.probing,
	}
}

// effective is the limit in force: FixedLimit, the gradient limit, or a
// share of it during a minRTT measurement; never below Min (or 1).
func (c *Controller) effective() int {
	if c.cfg.Mode == Fixed {
		return c.cfg.FixedLimit
	}
	l := c.limit
	if c.probing {
		l *= c.probeLevel
	}
	return max(int(l), c.cfg.Min, 1)
}

func (c *Controller) clamp(l float64) float64 {
	return min(max(l, float64(c.cfg.Min)), float64(c.cfg.Max))
}

// jittered is MinRTTInterval ± MinRTTJitter.
func (c *Controller) jittered() time.Duration {
	f := 1 + c.cfg.MinRTTJitter*(2*c.cfg.Rand()-1)
	return time.Duration(float64(c.cfg.MinRTTInterval) * f)
}

func (c *Controller) startProbe(now time.Time) {
	c.probing, c.probeLevel, c.probePrev = true, 1, c.sampleRTT
	c.nextStep(now)
}

// nextStep starts a measurement step at half the previous step's limit.
func (c *Controller) nextStep(now time.Time) {
	c.probeLevel /= 2
	c.probeStart, c.probe, c.probeWindow = now, c.probe[:0], 0
}

// lose applies the loss signal: a multiplicative cut, once per window.
func (c *Controller) lose(now time.Time) {
	if c.cfg.Mode == Fixed || !c.lastCut.IsZero() && now.Sub(c.lastCut) < c.cfg.Window {
		return
	}
	c.limit = c.clamp(c.limit * c.cfg.Backoff)
	c.lastCut, c.cut = now, true
}

// advance ends the current window when now has reached its end. A gap
// without calls counts as one window.
func (c *Controller) advance(now time.Time) {
	if now.Sub(c.winStart) < c.cfg.Window {
		return
	}
	if len(c.samples) > 0 {
		c.sampleRTT = percentile(c.samples, c.cfg.Percentile)
	}
	switch {
	case c.cfg.Mode == Gradient:
		c.endWindow(now)
	case len(c.samples) > 0 && (c.minRTT == 0 || c.sampleRTT < c.minRTT):
		c.minRTT = c.sampleRTT // Fixed: the lowest sample RTT, for Snapshot
	}
	c.samples = c.samples[:0]
	c.peak, c.cut, c.winStart = c.inFlight, false, now
}

// endWindow runs the gradient and the minRTT measurement at a window's end.
func (c *Controller) endWindow(now time.Time) {
	if c.probing {
		c.measure(now)
		return
	}
	if len(c.samples) > 0 {
		if c.minRTT == 0 || c.sampleRTT < c.minRTT {
			c.minRTT = c.sampleRTT
		}
		c.update()
	}
	if !now.Before(c.nextProbe) {
		c.startProbe(now)
	}
}

// measure ends a minRTT measurement step when it has its samples: the
// next step halves the limit again while latency still falls notably.
func (c *Controller) measure(now time.Time) {
	c.probeWindow++
	if len(c.probe) < probeSamples && c.probeWindow < probeWindows {
		return
	}
	m := c.probePrev
	if len(c.probe) > 0 {
		m = percentile(c.probe, c.cfg.Percentile)
		falling := c.probePrev == 0 || float64(m) < probeGain*float64(c.probePrev)
		if falling && c.effective() > c.cfg.Min {
			c.probePrev = m
			c.nextStep(now)
			return
		}
		if c.probePrev > 0 {
			m = min(m, c.probePrev)
		}
	}
	if m > 0 {
		c.minRTT = m
	}
	c.probing, c.probe = false, c.probe[:0]
	c.nextProbe = now.Add(c.jittered())
}

// update is the gradient step of one window.
func (c *Controller) update() {
	g := 2.0 // a zero sample (a clock too coarse) means no queue at all
	if c.sampleRTT > 0 {
		g = min(max(float64(c.minRTT)*(1+c.cfg.Buffer)/float64(c.sampleRTT), 0.5), 2)
	}
	l := g * c.limit
	l += math.Sqrt(l)
	if l > c.limit && (c.cut || float64(c.peak) < c.limit*growthUse) {
		return // no growth: a loss this window, or traffic below the limit
	}
	c.limit = c.clamp(l)
}

// percentile returns the p-th percentile of d by nearest rank; it sorts d.
func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}
