package limiter

import (
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

const win = 100 * time.Millisecond

// phase is a run of windows in which every request sees the same latency
// and outcome. load is how many requests start at each window's beginning;
// zero saturates the controller (requests start until Acquire refuses).
type phase struct {
	windows int
	latency time.Duration
	outcome Outcome
	load    int
}

// sim drives a Controller through phases at fixed instants: each window,
// the requests start 1ms after the window begins and end latency later,
// within the window. It records the limit in force at each window's start.
type sim struct {
	t      *testing.T
	c      *Controller
	now    time.Time
	limits []int
}

func newSim(t *testing.T, cfg ControllerConfig) *sim {
	t.Helper()
	cfg.Window = win
	return &sim{t: t, c: NewController(cfg, t0), now: t0}
}

func (s *sim) run(phases ...phase) *sim {
	s.t.Helper()
	for _, p := range phases {
		if p.latency >= win-2*time.Millisecond {
			s.t.Fatalf("latency %v does not fit a window", p.latency)
		}
		for range p.windows {
			start := s.now.Add(time.Millisecond)
			n := 0
			for (p.load == 0 || n < p.load) && n < 100000 && s.c.Acquire(start) {
				n++
			}
			s.limits = append(s.limits, s.c.Limit())
			for range n {
				s.c.Release(start.Add(p.latency), p.latency, p.outcome)
			}
			s.now = s.now.Add(win)
		}
	}
	return s
}

func (s *sim) last() int { return s.limits[len(s.limits)-1] }

func TestAdaptiveRisesWhenLatencyIsFlat(t *testing.T) {
	s := newSim(t, ControllerConfig{Initial: 20, Max: 500})
	s.run(phase{windows: 30, latency: 10 * time.Millisecond})
	// The first windows measure minRTT at half the limit; then the limit
	// grows every window (gradient 1.25 plus √limit) up to Max.
	if s.limits[0] != 10 {
		t.Errorf("limit during the first minRTT measurement = %d, want 10 (Initial/2)", s.limits[0])
	}
	for i := 3; i < len(s.limits); i++ {
		if s.limits[i] < s.limits[i-1] {
			t.Fatalf("limit fell from %d to %d at window %d with flat latency: %v", s.limits[i-1], s.limits[i], i, s.limits)
		}
	}
	if s.last() != 500 {
		t.Errorf("limit after 30 flat windows = %d, want Max 500: %v", s.last(), s.limits)
	}
	if got := s.c.Snapshot().MinRTT; got != 10*time.Millisecond {
		t.Errorf("minRTT = %v, want 10ms", got)
	}
}

func TestAdaptiveFallsWhenLatencyGrows(t *testing.T) {
	s := newSim(t, ControllerConfig{Initial: 20, Max: 200})
	s.run(phase{windows: 20, latency: 10 * time.Millisecond})
	top := s.last()
	s.run(phase{windows: 1, latency: 40 * time.Millisecond})
	s.run(phase{windows: 1, latency: 40 * time.Millisecond})
	// 40ms against minRTT 10ms·1.25: gradient clamped to 0.5.
	if want := int(float64(top)*0.5 + sqrtf(float64(top)*0.5)); s.last() != want {
		t.Errorf("limit after one slow window = %d, want %d (from %d)", s.last(), want, top)
	}
	s.run(phase{windows: 20, latency: 40 * time.Millisecond})
	if s.last() != 3 {
		t.Errorf("limit after 20 slow windows = %d, want Min 3: %v", s.last(), s.limits)
	}
	// Moderate queueing settles where gradient·limit + √(gradient·limit) =
	// limit, not at a bound.
	s.run(phase{windows: 40, latency: 15 * time.Millisecond})
	if l := s.last(); l <= 3 || l >= 200 {
		t.Errorf("limit at 1.5× minRTT = %d, want between the bounds", l)
	}
}

func sqrtf(x float64) float64 {
	r := x
	for range 50 {
		r = (r + x/r) / 2
	}
	return r
}

func TestAdaptiveCutsOnOverload(t *testing.T) {
	s := newSim(t, ControllerConfig{Initial: 20, Max: 100, Backoff: 0.5})
	s.run(phase{windows: 15, latency: 10 * time.Millisecond})
	before := s.last()
	if before != 100 {
		t.Fatalf("limit = %d, want 100", before)
	}
	// Many 503s in one window cut once, and the window does not grow.
	s.run(phase{windows: 1, latency: 10 * time.Millisecond, outcome: Overloaded})
	s.run(phase{windows: 1, latency: 10 * time.Millisecond, load: 1})
	if got := s.last(); got != 50 {
		t.Errorf("limit after a window of 503s = %d, want 50 (one cut by 0.5)", got)
	}
	s.run(phase{windows: 1, latency: 10 * time.Millisecond, outcome: Overloaded})
	s.run(phase{windows: 1, latency: 10 * time.Millisecond, load: 1})
	if got := s.last(); got != 25 {
		t.Errorf("limit after a second window of 503s = %d, want 25", got)
	}
	// Errors and overload answers are no latency samples: minRTT stays.
	if got := s.c.Snapshot().MinRTT; got != 10*time.Millisecond {
		t.Errorf("minRTT = %v, want 10ms", got)
	}
}

func TestAdaptiveFastErrorsAreNoSamples(t *testing.T) {
	s := newSim(t, ControllerConfig{Initial: 20, Max: 100})
	s.run(phase{windows: 15, latency: 10 * time.Millisecond})
	s.run(phase{windows: 10, latency: 100 * time.Microsecond, outcome: Failed})
	snap := s.c.Snapshot()
	if snap.MinRTT != 10*time.Millisecond || snap.SampleRTT != 10*time.Millisecond {
		t.Errorf("after fast errors minRTT %v, sampleRTT %v; want both 10ms", snap.MinRTT, snap.SampleRTT)
	}
	if snap.Limit != 100 {
		t.Errorf("limit = %d, want 100", snap.Limit)
	}
}

func TestAdaptiveStaysWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      ControllerConfig
		phases   []phase
		min, max int
	}{
		{"flat, max 40", ControllerConfig{Min: 5, Max: 40}, []phase{{windows: 50, latency: 5 * time.Millisecond}}, 5, 40},
		{"slow, min 5", ControllerConfig{Min: 5, Max: 40}, []phase{
			{windows: 10, latency: 5 * time.Millisecond}, {windows: 50, latency: 90 * time.Millisecond}}, 5, 40},
		{"overload, min 7", ControllerConfig{Min: 7, Max: 40, Backoff: 0.1}, []phase{
			{windows: 10, latency: 5 * time.Millisecond},
			{windows: 30, latency: 5 * time.Millisecond, outcome: Overloaded}}, 7, 40},
		{"initial above max", ControllerConfig{Min: 2, Max: 8, Initial: 50}, []phase{{windows: 20, latency: 5 * time.Millisecond}}, 2, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, tc.cfg).run(tc.phases...)
			for i, l := range s.limits {
				if l < tc.min || l > tc.max {
					t.Fatalf("window %d: limit %d outside [%d, %d]: %v", i, l, tc.min, tc.max, s.limits)
				}
			}
			if lo, hi := s.limits[len(s.limits)-1], tc.max; tc.name[:4] == "flat" && lo != hi {
				t.Errorf("flat latency ended at %d, want max %d", lo, hi)
			}
		})
	}
}

func TestAdaptiveNoGrowthBelowThreeQuartersOfTheLimit(t *testing.T) {
	s := newSim(t, ControllerConfig{Initial: 20, Max: 1000})
	// Twelve requests a window against a limit of 20 (60 %): latency is
	// flat, but the limit must not climb, or a load step would pass
	// unchecked (at the one-half rule it would have).
	s.run(phase{windows: 50, latency: 10 * time.Millisecond, load: 12})
	if s.last() != 20 {
		t.Errorf("limit = %d after 50 windows at 12 in flight, want 20 (unchanged)", s.last())
	}
	s.run(phase{windows: 50, latency: 10 * time.Millisecond, load: 15})
	if l := s.last(); l <= 20 || l > 2*15 {
		t.Errorf("limit = %d with 15 in flight, want above 20 and at most twice the use", l)
	}
}

func TestAdaptiveMinRTTJitter(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    float64
		want time.Duration // from the end of the first measurement
	}{
		{"low", 0, 8500 * time.Millisecond},
		{"middle", 0.5, 10 * time.Second},
		{"high", 0.999999, 11500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, ControllerConfig{Initial: 20, Max: 40, MinRTTInterval: 10 * time.Second,
				Rand: func() float64 { return tc.r }})
			// The first measurement (two steps: 10, then 5) ends where the
			// limit is back to 20; the next starts D later, where 40 is
			// halved.
			s.run(phase{windows: 200, latency: 10 * time.Millisecond})
			end, first := -1, -1
			for i, l := range s.limits {
				switch {
				case end < 0 && l >= 20:
					end = i
				case end >= 0 && first < 0 && l == 20 && s.limits[i-1] == 40:
					first = i
				}
			}
			got := time.Duration(first-end) * win
			if first < 0 || got < tc.want || got >= tc.want+win {
				t.Errorf("second measurement at window %d, %v after the first ended (window %d), want in [%v, %v): %v",
					first, got, end, tc.want, tc.want+win, s.limits)
			}
		})
	}
}

func TestAdaptiveMinRTTMeasuredAgainFromLiveTraffic(t *testing.T) {
	s := newSim(t, ControllerConfig{Initial: 20, Max: 60, MinRTTInterval: 3 * time.Second,
		Rand: func() float64 { return 0.5 }})
	s.run(phase{windows: 10, latency: 10 * time.Millisecond})
	if got := s.c.Snapshot().MinRTT; got != 10*time.Millisecond {
		t.Fatalf("minRTT = %v, want 10ms", got)
	}
	// The backend is now twice as slow at any load: the limit falls first,
	// then the next measurement takes the new minRTT and it recovers.
	s.run(phase{windows: 5, latency: 20 * time.Millisecond})
	low := s.last()
	if low >= 60 {
		t.Fatalf("limit %d did not fall on a 2× latency", low)
	}
	s.run(phase{windows: 30, latency: 20 * time.Millisecond})
	if got := s.c.Snapshot().MinRTT; got != 20*time.Millisecond {
		t.Errorf("minRTT after a measurement = %v, want 20ms", got)
	}
	if s.last() != 60 {
		t.Errorf("limit = %d after minRTT was measured again, want 60: %v", s.last(), s.limits)
	}
	// A lower sample between measurements lowers minRTT at once.
	s.run(phase{windows: 1, latency: 15 * time.Millisecond}, phase{windows: 1, latency: 15 * time.Millisecond})
	if got := s.c.Snapshot().MinRTT; got != 15*time.Millisecond {
		t.Errorf("minRTT = %v after a faster window, want 15ms", got)
	}
}

func TestAdaptivePercentile(t *testing.T) {
	s := newSim(t, ControllerConfig{Initial: 20, Percentile: 50})
	start := t0.Add(time.Millisecond)
	for range 10 {
		s.c.Acquire(start)
	}
	for i := range 10 {
		lat := time.Duration(i+1) * time.Millisecond
		s.c.Release(start.Add(lat), lat, Success)
	}
	s.c.Acquire(t0.Add(win + time.Millisecond))
	if got := s.c.Snapshot().SampleRTT; got != 5*time.Millisecond {
		t.Errorf("p50 of 1..10ms = %v, want 5ms", got)
	}
}

func TestAdaptiveFixed(t *testing.T) {
	c := NewController(ControllerConfig{Mode: Fixed, FixedLimit: 4, Window: win}, t0)
	for i := range 6 {
		if got, want := c.Acquire(t0), i < 4; got != want {
			t.Fatalf("Acquire #%d = %v, want %v", i+1, got, want)
		}
	}
	for i := range 4 {
		c.Release(t0.Add(time.Duration(i)*time.Second), time.Second, Overloaded)
	}
	if c.Limit() != 4 || c.InFlight() != 0 {
		t.Errorf("fixed: limit %d in flight %d, want 4 and 0", c.Limit(), c.InFlight())
	}
}

func TestAdaptiveReconfigureKeepsInFlight(t *testing.T) {
	c := NewController(ControllerConfig{Initial: 10, Window: win}, t0)
	for range 3 {
		c.Acquire(t0)
	}
	c.Reconfigure(ControllerConfig{Mode: Fixed, FixedLimit: 3, Window: win}, t0)
	if c.Acquire(t0) {
		t.Error("Acquire passed a fixed limit of 3 with 3 in flight")
	}
	c.Release(t0, 0, Dropped)
	if !c.Acquire(t0) {
		t.Error("Acquire refused with 2 of 3 in flight")
	}
	if c.InFlight() != 3 {
		t.Errorf("in flight = %d, want 3", c.InFlight())
	}
}

// TestAdaptiveSaturatedBackendModel runs the controller against a model of
// a backend with 10 workers × 10ms kept saturated: a window's latency is
// 10ms × max(1, in flight / 10). The limit settles near the equilibrium of
// the gradient (12.5 + √12.5 ≈ 16) and stays there across minRTT
// measurements, which drain the queue rather than ratchet minRTT up.
func TestAdaptiveSaturatedBackendModel(t *testing.T) {
	c := NewController(ControllerConfig{Initial: 40, Max: 60, Window: win, MinRTTInterval: 3 * time.Second,
		Rand: func() float64 { return 0.5 }}, t0)
	now := t0
	var limits []int
	for range 600 {
		start := now.Add(time.Millisecond)
		n := 0
		for c.Acquire(start) {
			n++
		}
		limits = append(limits, n)
		lat := time.Duration(max(1, float64(n)/10) * float64(10*time.Millisecond))
		for range n {
			c.Release(start.Add(lat), lat, Success)
		}
		now = now.Add(win)
	}
	if got := c.Snapshot().MinRTT; got != 10*time.Millisecond {
		t.Errorf("minRTT = %v, want 10ms", got)
	}
	high := 0
	for _, l := range limits[20:] {
		high = max(high, l)
	}
	if high < 12 || high > 20 {
		t.Errorf("limit after convergence reached %d, want about 16: %v", high, limits)
	}
}
