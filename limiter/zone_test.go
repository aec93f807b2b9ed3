package limiter

import (
	"fmt"
	"testing"
	"time"
	"unsafe"
)

// Rates as Nginx stores them (requests per second × 1000).
const (
	r10ps = 10000 // 10r/s
	r1ps  = 1000  // 1r/s
	r4pm  = 66    // 4r/m: 4000/60 truncated
)

// step is one request of a scenario and what must come of it.
type step struct {
	at     int64 // ms
	key    string
	status Status
	delay  int64 // ms
	excess int64 // thousandths, checked when status is not Passed
}

// repeat returns count copies of s.
func repeat(count int, s step) []step {
	out := make([]step, count)
	for i := range out {
		out[i] = s
	}
	return out
}

// run feeds the steps through Check with the given rules (every rule keyed
// by the step's key) and reports every difference.
func run(t *testing.T, rules []Rule, dryRun bool, steps []step) {
	t.Helper()
	for i, s := range steps {
		keys := make([][]byte, len(rules))
		for j := range keys {
			keys[j] = []byte(s.key)
		}
		d := Check(rules, keys, s.at, dryRun)
		if d.Status != s.status || d.Delay != time.Duration(s.delay)*time.Millisecond ||
			s.status != Passed && d.Excess != s.excess {
			t.Errorf("request %d at %dms key %q: got %v delay %v excess %d; want %v delay %dms excess %d",
				i+1, s.at, s.key, d.Status, d.Delay, d.Excess, s.status, s.delay, s.excess)
		}
	}
}

// newZoneStates returns a zone holding exactly n states, for eviction tests.
func newZoneStates(n int, rate int64) *Zone {
	z := NewZone("tiny", Key{}, 32<<10, rate)
	slots := int64(4)
	for slots*3/4 < int64(n) {
		slots *= 2
	}
	z.t = newTable(int64(n), slots)
	return z
}

// stateOf returns the stored excess and last of key, failing if absent.
func stateOf(t *testing.T, z *Zone, key string) (excess, last int64) {
	t.Helper()
	sk, h := z.t.makeKey([]byte(key))
	i, _ := z.t.find(&sk, h)
	if i < 0 {
		t.Fatalf("zone %s has no key %q", z.name, key)
	}
	return z.t.states[i].excess, z.t.states[i].last
}

func TestStateSize(t *testing.T) {
	if got := unsafe.Sizeof(state{}); got != 48 {
		t.Errorf("state is %d bytes; want 48", got)
	}
	z := NewZone("z", Key{}, 10<<20, r10ps)
	if z.Capacity() < 160000 {
		t.Errorf("a 10m zone holds %d states; want at least 160000", z.Capacity())
	}
	if per := float64(10<<20) / float64(z.Capacity()); per > 64 {
		t.Errorf("%.1f bytes per state; want at most 64", per)
	}
	t.Logf("10m zone: %d states, %.1f bytes each", z.Capacity(), float64(10<<20)/float64(z.Capacity()))
}

func TestCapacityWithinSize(t *testing.T) {
	for _, size := range []int64{32 << 10, 1 << 20, 10 << 20, 64 << 20, 1<<20 + 12345} {
		states, slots := capacityFor(size)
		if used := states*stateBytes + slots*slotBytes; used > size || states > slots*3/4 {
			t.Errorf("size %d: %d states and %d slots use %d bytes", size, states, slots, used)
		}
	}
}

// The worked example of the spec: 10r/s, burst=20, 25 requests at t=0.
func TestWorkedExample(t *testing.T) {
	delayed := func(from, to int) []step {
		var s []step
		for k := from; k <= to; k++ {
			s = append(s, step{key: "a", status: Delayed, delay: int64(k-1) * 100, excess: int64(k-1) * 1000})
		}
		return s
	}
	rejected := func(excess int64) []step {
		return repeat(4, step{key: "a", status: Rejected, excess: excess})
	}
	t.Run("default", func(t *testing.T) {
		z := NewZone("one", Key{}, 1<<20, r10ps)
		steps := append([]step{{key: "a", status: Passed}}, delayed(2, 21)...)
		steps = append(steps, rejected(21000)...)
		steps = append(steps, step{at: 1050, key: "a", status: Delayed, delay: 1050, excess: 10500})
		run(t, []Rule{{Zone: z, Burst: 20}}, false, steps)
	})
	t.Run("nodelay", func(t *testing.T) {
		z := NewZone("one", Key{}, 1<<20, r10ps)
		steps := repeat(21, step{key: "a", status: Passed})
		steps = append(steps, rejected(21000)...)
		steps = append(steps, step{at: 150, key: "a", status: Passed})
		run(t, []Rule{{Zone: z, Burst: 20, NoDelay: true}}, false, steps)
		if e, last := stateOf(t, z, "a"); e != 19500 || last != 150 {
			t.Errorf("after t=150: excess %d last %d; want 19500 150", e, last)
		}
	})
	t.Run("delay=8", func(t *testing.T) {
		z := NewZone("one", Key{}, 1<<20, r10ps)
		steps := repeat(9, step{key: "a", status: Passed})
		for k := 10; k <= 21; k++ {
			steps = append(steps, step{key: "a", status: Delayed, delay: int64(k-9) * 100, excess: int64(k-1) * 1000})
		}
		steps = append(steps, rejected(21000)...)
		run(t, []Rule{{Zone: z, Burst: 20, Delay: 8}}, false, steps)
	})
	t.Run("delay above burst acts as nodelay", func(t *testing.T) {
		z := NewZone("one", Key{}, 1<<20, r10ps)
		steps := append(repeat(3, step{key: "a", status: Passed}), step{key: "a", status: Rejected, excess: 3000})
		run(t, []Rule{{Zone: z, Burst: 2, Delay: 5}}, false, steps)
	})
	t.Run("no burst", func(t *testing.T) {
		z := NewZone("one", Key{}, 1<<20, r10ps)
		run(t, []Rule{{Zone: z}}, false, []step{
			{at: 0, key: "a", status: Passed},
			{at: 0, key: "a", status: Rejected, excess: 1000},
			{at: 99, key: "a", status: Rejected, excess: 10},
			{at: 100, key: "a", status: Passed},
			{at: 100, key: "b", status: Passed}, // keys are independent
		})
	})
}

// TestArithmetic pins Nginx's integer arithmetic at single steps.
func TestArithmetic(t *testing.T) {
	tests := []struct {
		name       string
		rate       int64
		burst      int
		excess     int64 // stored before the request
		last, at   int64
		wantStatus Status
		wantExcess int64 // stored after
		wantLast   int64
		wantDelay  int64
	}{
		{"drain floors", r4pm, 10, 5000, 1000, 1015, Delayed, 6000, 1015, 6000 * 1000 / r4pm},
		{"r/m rate truncated: 1s drains 66", r4pm, 10, 5000, 0, 1000, Delayed, 5934, 1000, 5934 * 1000 / r4pm},
		{"drain below zero clamps before the check", r10ps, 0, 3000, 0, 10000, Passed, 0, 10000, 0},
		{"drain beyond the stored excess eats into the request's 1000", r10ps, 5, 500, 0, 100, Delayed, 500, 100, 50},
		{"clamp comes after adding the request", r10ps, 5, 500, 0, 200, Passed, 0, 200, 0},
		{"same ms keeps last", r10ps, 5, 1000, 500, 500, Delayed, 2000, 500, 200},
		{"clock back under 60s: ms = 0, last kept", r10ps, 5, 1000, 500000, 450000, Delayed, 2000, 500000, 200},
		{"clock back exactly 60s: ms = 0", r10ps, 5, 1000, 500000, 440000, Delayed, 2000, 500000, 200},
		{"clock back over 60s: ms = 1, last moves back", r10ps, 5, 1000, 500000, 439999, Delayed, 1990, 439999, 199},
		{"rejection leaves the state", r1ps, 1, 1500, 0, 400, Rejected, 1500, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := NewZone("z", Key{}, 1<<20, tt.rate)
			Check([]Rule{{Zone: z}}, [][]byte{[]byte("k")}, tt.last, false)
			sk, h := z.t.makeKey([]byte("k"))
			i, _ := z.t.find(&sk, h)
			z.t.states[i].excess = tt.excess
			d := Check([]Rule{{Zone: z, Burst: tt.burst}}, [][]byte{[]byte("k")}, tt.at, false)
			e, last := stateOf(t, z, "k")
			if d.Status != tt.wantStatus || e != tt.wantExcess || last != tt.wantLast ||
				d.Delay != time.Duration(tt.wantDelay)*time.Millisecond {
				t.Errorf("got %v delay %v, stored excess %d last %d; want %v delay %dms, excess %d last %d",
					d.Status, d.Delay, e, last, tt.wantStatus, tt.wantDelay, tt.wantExcess, tt.wantLast)
			}
		})
	}
}

// At 4r/m (66 thousandths a second) a key hit every millisecond never
// drains: 66*1/1000 truncates to 0 and last moves on each time.
func TestSlowRateTruncation(t *testing.T) {
	z := NewZone("z", Key{}, 1<<20, r4pm)
	rule := []Rule{{Zone: z, Burst: 100, NoDelay: true}}
	for ms := int64(0); ms <= 50; ms++ {
		Check(rule, [][]byte{[]byte("k")}, ms, false)
	}
	if e, _ := stateOf(t, z, "k"); e != 50000 {
		t.Errorf("excess after 51 requests 1 ms apart: %d; want 50000 (no drain)", e)
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		rate   int64
		burst  int
		hits   []int64 // arrival ms; the last one is rejected
		wantMs int64
	}{
		{"10r/s right after the burst", r10ps, 2, []int64{0, 0, 0, 0}, 100},
		{"10r/s part way", r10ps, 2, []int64{0, 0, 0, 30}, 70},
		{"1r/s no burst", r1ps, 0, []int64{0, 250}, 750},
		{"4r/m rounds up", r4pm, 0, []int64{0, 1}, 15151}, // ceil(1000*1000/66) = 15152 ms after last (t=0)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := NewZone("z", Key{}, 1<<20, tt.rate)
			rules := []Rule{{Zone: z, Burst: tt.burst, NoDelay: true}}
			var d Decision
			for _, at := range tt.hits {
				d = Check(rules, [][]byte{[]byte("k")}, at, false)
			}
			if d.Status != Rejected || d.RetryAfter != time.Duration(tt.wantMs)*time.Millisecond {
				t.Fatalf("got %v retry %v; want Rejected retry %dms", d.Status, d.RetryAfter, tt.wantMs)
			}
			// Exact: one ms earlier is still rejected, then it passes.
			at := tt.hits[len(tt.hits)-1] + tt.wantMs
			if d := Check(rules, [][]byte{[]byte("k")}, at-1, false); d.Status != Rejected {
				t.Errorf("at %dms: %v; want Rejected", at-1, d.Status)
			}
			if d := Check(rules, [][]byte{[]byte("k")}, at, false); d.Status != Passed {
				t.Errorf("at %dms: %v; want Passed", at, d.Status)
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want int64
	}{{0, 0}, {time.Millisecond, 1}, {time.Second, 1}, {time.Second + time.Millisecond, 2}} {
		if got := (Decision{RetryAfter: tt.d}).RetryAfterSeconds(); got != tt.want {
			t.Errorf("RetryAfterSeconds(%v) = %d; want %d", tt.d, got, tt.want)
		}
	}
}

func TestStatusString(t *testing.T) {
	want := []string{"", "PASSED", "DELAYED", "REJECTED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN"}
	for s, w := range want {
		if got := Status(s).String(); got != w {
			t.Errorf("Status(%d) = %q; want %q", s, got, w)
		}
	}
	if got := fmt.Sprint(Status(9)); got != "Status(9)" {
		t.Errorf("Status(9) = %q", got)
	}
}

// SetRate keeps the states: a reload in Nginx changes the rate of a zone
// whose name and size stay, and the keys drain at the new rate from then on.
func TestSetRateKeepsState(t *testing.T) {
	z := NewZone("z", Key{}, 1<<20, r10ps)
	rule := []Rule{{Zone: z, Burst: 5, NoDelay: true}}
	k := [][]byte{[]byte("k")}
	for range 3 {
		Check(rule, k, 0, false)
	}
	z.SetRate(r1ps)
	if z.Rate() != r1ps {
		t.Fatalf("Rate = %d after SetRate(%d)", z.Rate(), r1ps)
	}
	// 2000 stored; 500 ms at 1r/s drains 500: 2000 - 500 + 1000.
	Check(rule, k, 500, false)
	if e, _ := stateOf(t, z, "k"); e != 2500 {
		t.Errorf("excess after SetRate = %d; want 2500 (state kept, drained at the new rate)", e)
	}
}
