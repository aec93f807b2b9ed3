package breaker

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder collects the transitions a breaker delivers.
type recorder struct {
	mu sync.Mutex
	ts []Transition
}

func (r *recorder) add(t Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ts = append(r.ts, t)
}

func (r *recorder) all() []Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Transition(nil), r.ts...)
}

// testSettings trips on 3 consecutive failures only, stays open exactly
// 10s and admits one probe.
func testSettings(rec *recorder) Settings {
	return Settings{
		Name:                "app/a",
		ConsecutiveFailures: 3,
		Window:              10 * time.Second,
		OpenDuration:        10 * time.Second,
		HalfOpenRequests:    1,
		OnTransition:        rec.add,
	}
}

// call runs one admitted call with outcome o, failing the test when the
// breaker refuses it.
func call(t *testing.T, b *Breaker, o Outcome, took time.Duration) {
	t.Helper()
	tk, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow: %v (state %v)", err, b.State())
	}
	tk.Done(o, took)
}

func TestBreakerConsecutiveFailuresTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		b := New(testSettings(rec))
		call(t, b, ConnectionFailure, 0)
		call(t, b, Timeout, 0)
		call(t, b, Success, 0) // resets the run
		call(t, b, ConnectFailure, 0)
		call(t, b, BadStatus, 0)
		if b.State() != StateClosed {
			t.Fatalf("state after 2 failures in a row = %v, want closed", b.State())
		}
		call(t, b, ConnectionFailure, 0)
		if st := b.State(); st != StateOpen {
			t.Fatalf("state after 3 failures in a row = %v, want open", st)
		}
		if _, err := b.Allow(); !errors.Is(err, ErrOpen) {
			t.Fatalf("Allow while open = %v, want ErrOpen", err)
		}
		if b.Ready(time.Now()) {
			t.Error("Ready while open = true")
		}
		ts := rec.all()
		if len(ts) != 1 || ts[0].From != StateClosed || ts[0].To != StateOpen || ts[0].Why != "consecutive_failures" {
			t.Fatalf("transitions = %+v, want one closed→open for consecutive_failures", ts)
		}
		if c := ts[0].Counts; c.ConsecutiveFailures != 3 || c.Failures != 5 || c.Successes != 1 {
			t.Errorf("trip counts = %+v, want 3 in a row, 5 failures, 1 success", c)
		}
		if ts[0].OpenFor != 10*time.Second {
			t.Errorf("OpenFor = %v, want 10s (no jitter)", ts[0].OpenFor)
		}
	})
}

func TestBreakerFailureRatio(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := testSettings(&recorder{})
		s.ConsecutiveFailures = 0
		s.FailureRatio = 0.5
		s.MinRequests = 10
		b := New(s)
		// 9 calls, 5 failures: over the ratio but under min_requests.
		for i := range 9 {
			o := Success
			if i%2 == 0 {
				o = ConnectionFailure
			}
			call(t, b, o, 0)
		}
		if b.State() != StateClosed {
			t.Fatalf("tripped under min_requests: %+v", b.Counts())
		}
		call(t, b, Timeout, 0) // 6 of 10
		if b.State() != StateOpen {
			t.Fatalf("6 failures of 10 with ratio 0.5: state %v, want open", b.State())
		}
	})
}

func TestBreakerWindowRolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := testSettings(&recorder{})
		s.ConsecutiveFailures = 0
		s.FailureRatio = 0.5
		s.MinRequests = 4
		b := New(s)
		for range 3 {
			call(t, b, ConnectionFailure, 0)
		}
		time.Sleep(11 * time.Second) // the failures age out of the 10s window
		call(t, b, Success, 0)
		call(t, b, Success, 0)
		call(t, b, Success, 0)
		call(t, b, ConnectionFailure, 0) // 1 of 4 in the window
		if b.State() != StateClosed {
			t.Fatalf("old failures counted: state %v, counts %+v", b.State(), b.Counts())
		}
	})
}

func TestBreakerHalfOpenProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		b := New(testSettings(rec))
		for range 3 {
			call(t, b, ConnectionFailure, 0)
		}
		time.Sleep(9 * time.Second)
		if _, err := b.Allow(); !errors.Is(err, ErrOpen) {
			t.Fatalf("Allow 9s into a 10s open = %v, want ErrOpen", err)
		}
		time.Sleep(1*time.Second + time.Millisecond)
		if !b.Ready(time.Now()) {
			t.Fatal("Ready after the open duration = false")
		}
		probe, err := b.Allow()
		if err != nil {
			t.Fatalf("probe refused: %v", err)
		}
		if b.State() != StateHalfOpen {
			t.Fatalf("state with a probe out = %v, want half-open", b.State())
		}
		if _, err := b.Allow(); !errors.Is(err, ErrTooManyProbes) {
			t.Fatalf("second call while the probe is out = %v, want ErrTooManyProbes", err)
		}
		probe.Done(Success, 0)
		if b.State() != StateClosed {
			t.Fatalf("state after a successful probe = %v, want closed", b.State())
		}
		var whys []string
		for _, tr := range rec.all() {
			whys = append(whys, tr.From.String()+">"+tr.To.String()+":"+tr.Why)
		}
		want := []string{"closed>open:consecutive_failures", "open>half-open:open_duration_elapsed", "half-open>closed:probes_succeeded"}
		if len(whys) != len(want) {
			t.Fatalf("transitions %q, want %q", whys, want)
		}
		for i := range want {
			if whys[i] != want[i] {
				t.Errorf("transition %d = %q, want %q", i, whys[i], want[i])
			}
		}
	})
}

func TestBreakerFailedProbeReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		b := New(testSettings(rec))
		for range 3 {
			call(t, b, ConnectionFailure, 0)
		}
		time.Sleep(10*time.Second + time.Millisecond)
		call(t, b, ConnectFailure, 0)
		if b.State() != StateOpen {
			t.Fatalf("state after a failed probe = %v, want open", b.State())
		}
		ts := rec.all()
		if last := ts[len(ts)-1]; last.Why != "probe_failed:connect_failure" {
			t.Errorf("why = %q, want probe_failed:connect_failure", last.Why)
		}
	})
}

func TestBreakerExclusionsNeverTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(testSettings(&recorder{}))
		for range 100 {
			call(t, b, Excluded, time.Hour)
		}
		if b.State() != StateClosed {
			t.Fatalf("exclusions tripped the breaker")
		}
		if c := b.Counts(); c.Failures != 0 || c.Successes != 0 || c.Exclusions != 100 {
			t.Errorf("counts = %+v, want 100 exclusions only", c)
		}
		// In half-open an excluded probe frees its slot for another.
		for range 3 {
			call(t, b, ConnectionFailure, 0)
		}
		time.Sleep(10*time.Second + time.Millisecond)
		call(t, b, Excluded, 0)
		if b.State() != StateHalfOpen {
			t.Fatalf("state after an excluded probe = %v, want half-open", b.State())
		}
		call(t, b, Success, 0)
		if b.State() != StateClosed {
			t.Fatalf("state after the next probe succeeded = %v, want closed", b.State())
		}
	})
}

func TestBreakerSlowCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s := testSettings(rec)
		s.SlowCallDuration = 100 * time.Millisecond
		s.SlowCallRatio = 0.5
		s.MinRequests = 4
		b := New(s)
		call(t, b, Success, 10*time.Millisecond)
		call(t, b, Success, 100*time.Millisecond) // slow: at the threshold
		call(t, b, Success, 20*time.Millisecond)
		if c := b.Counts(); c.SlowCalls != 1 || c.TimedCalls != 3 || c.Failures != 0 {
			t.Fatalf("counts = %+v, want 1 slow of 3, no failure", c)
		}
		// 2 slow of 4 with ratio 0.5 and min_requests 4: trips.
		call(t, b, Success, time.Second)
		if b.State() != StateOpen {
			t.Fatalf("state = %v, want open on slow calls", b.State())
		}
		if ts := rec.all(); len(ts) != 1 || ts[0].Why != "slow_call_ratio" || ts[0].Counts.SlowCalls != 2 {
			t.Fatalf("transitions = %+v, want one trip for slow_call_ratio with 2 slow calls", ts)
		}
		// A slow probe fails.
		time.Sleep(10*time.Second + time.Millisecond)
		call(t, b, Success, time.Second)
		if b.State() != StateOpen {
			t.Fatalf("state after a slow probe = %v, want open", b.State())
		}
		if ts := rec.all(); ts[len(ts)-1].Why != "probe_failed:slow_call" {
			t.Errorf("why = %q, want probe_failed:slow_call", ts[len(ts)-1].Why)
		}
	})
}

func TestBreakerSlowCallsBelowRatioAreSuccesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := testSettings(&recorder{})
		s.SlowCallDuration = 100 * time.Millisecond
		s.SlowCallRatio = 0.5
		s.MinRequests = 2
		b := New(s)
		// One call in three slow: under the 0.5 ratio at every step.
		for range 10 {
			call(t, b, Success, time.Millisecond)
			call(t, b, Success, time.Millisecond)
			call(t, b, Success, time.Second)
		}
		if b.State() != StateClosed {
			t.Fatalf("a third of calls slow tripped a 0.5 ratio")
		}
		if c := b.Counts(); c.Failures != 0 || c.SlowCalls != 10 {
			t.Errorf("counts = %+v, want 10 slow calls and no failure", c)
		}
	})
}

func TestBreakerJitter(t *testing.T) {
	s := Settings{OpenDuration: 30 * time.Second, Jitter: 0.2}
	seen := map[time.Duration]bool{}
	for range 50 {
		d := New(s).OpenDuration()
		if d < 24*time.Second || d > 36*time.Second {
			t.Fatalf("open duration %v outside 30s ± 20%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 breakers drew only %d distinct open durations", len(seen))
	}
	s.Seed = 42
	if a, b := New(s).OpenDuration(), New(s).OpenDuration(); a != b {
		t.Errorf("same seed, different durations: %v, %v", a, b)
	}
	s.Jitter = 0
	if d := New(s).OpenDuration(); d != 30*time.Second {
		t.Errorf("no jitter: %v, want 30s", d)
	}
}

func TestBreakerCallbackMayCallBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b *Breaker
		var got []State
		s := testSettings(nil)
		s.OnTransition = func(tr Transition) {
			// Under gobreaker's lock this would deadlock.
			got = append(got, b.State())
			_ = b.Counts()
		}
		b = New(s)
		for range 3 {
			call(t, b, ConnectionFailure, 0)
		}
		if len(got) != 1 || got[0] != StateOpen {
			t.Fatalf("callback saw %v, want [open]", got)
		}
	})
}

func TestBreakerZeroTicket(t *testing.T) {
	var tk Ticket
	tk.Done(ConnectionFailure, time.Hour) // must not panic
}

func TestDefaultSettings(t *testing.T) {
	s := DefaultSettings("x")
	if s.ConsecutiveFailures != 5 || s.FailureRatio != 0.5 || s.MinRequests != 20 || s.Window != 10*time.Second ||
		s.OpenDuration != 30*time.Second || s.Jitter != 0.2 || s.HalfOpenRequests != 1 || s.SlowCallDuration != 0 {
		t.Errorf("defaults = %+v", s)
	}
}
