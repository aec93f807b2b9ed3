package breaker

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Errors Allow returns when it refuses a call.
var (
	// ErrOpen: the breaker is open.
	ErrOpen = gobreaker.ErrOpenState
	// ErrTooManyProbes: the breaker is half-open and its probes are taken.
	ErrTooManyProbes = gobreaker.ErrTooManyRequests
)

// outcomeError is what a Ticket reports to gobreaker for a non-success
// outcome; one preallocated value per outcome, so reporting allocates
// nothing.
type outcomeError struct{ o Outcome }

func (e *outcomeError) Error() string { return e.o.String() }

var outcomeErrs = func() (errs [len(outcomeNames)]error) {
	for i := range errs {
		if Outcome(i) != Success {
			errs[i] = &outcomeError{Outcome(i)}
		}
	}
	return errs
}()

// errSlowCall reports a slow call that otherwise succeeded, when slowness
// is to count as a failure (see the package doc).
var errSlowCall = errors.New("slow call")

// Counts are a breaker's counts in its current state: gobreaker's, over
// the rolling window while closed, and the slow-call window's.
type Counts struct {
	Requests             uint32 `json:"requests"` // admitted, in flight included
	Successes            uint32 `json:"successes"`
	Failures             uint32 `json:"failures"`
	Exclusions           uint32 `json:"exclusions"`
	ConsecutiveSuccesses uint32 `json:"consecutive_successes"`
	ConsecutiveFailures  uint32 `json:"consecutive_failures"`
	TimedCalls           uint32 `json:"timed_calls"` // completed calls in the slow-call window
	SlowCalls            uint32 `json:"slow_calls"`
}

// Transition is one state change.
type Transition struct {
	Name     string
	From, To State
	// Why names the cause: consecutive_failures, failure_ratio,
	// slow_call_ratio (a trip); probe_failed:<outcome> (half-open to
	// open); open_duration_elapsed; probes_succeeded.
	Why string
	// Counts are, for a trip, the window's counts that tripped it; for a
	// failed probe, the probe's outcome is in Why and Counts are zero.
	Counts Counts
	// OpenFor is how long the breaker stays open, when To is open.
	OpenFor time.Duration
	At      time.Time
}

// Breaker is one server's circuit breaker. Its methods are safe for
// concurrent use.
type Breaker struct {
	s       Settings
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	openFor time.Duration
	slow    *slowWindow

	// Written only from gobreaker's callbacks, which run under its lock.
	tripWhy    string
	tripCounts Counts
	lastErr    error

	state     atomic.Int32 // State, mirrored for lock-free reads
	openUntil atomic.Int64 // unix nanoseconds; while open

	pendMu    sync.Mutex
	pending   []Transition
	npending  atomic.Int32
	deliverMu sync.Mutex
}

// New returns a closed Breaker with settings s.
func New(s Settings) *Breaker {
	s = s.normalized()
	b := &Breaker{s: s, openFor: jittered(s)}
	b.slow = newSlowWindow(s.Window, time.Now())
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:          s.Name,
		MaxRequests:   s.HalfOpenRequests,
		Interval:      s.Window,
		BucketPeriod:  max(s.Window/buckets, time.Nanosecond),
		Timeout:       b.openFor,
		ReadyToTrip:   b.readyToTrip,
		OnStateChange: b.onStateChange,
		IsSuccessful:  func(err error) bool { return err == nil },
		IsExcluded:    b.isExcluded,
	})
	return b
}

// jittered draws the breaker's open duration: OpenDuration ± Jitter.
func jittered(s Settings) time.Duration {
	if s.Jitter == 0 {
		return s.OpenDuration
	}
	seed := s.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	f := 1 + s.Jitter*(2*r.Float64()-1)
	return max(time.Duration(float64(s.OpenDuration)*f), time.Millisecond)
}

// Settings returns the breaker's settings, defaults filled in.
func (b *Breaker) Settings() Settings { return b.s }

// OpenDuration is this breaker's jittered open duration.
func (b *Breaker) OpenDuration() time.Duration { return b.openFor }

// Ticket is one admitted call. Its zero value is a call no breaker counts:
// Done does nothing.
type Ticket struct {
	b    *Breaker
	done func(error)
}

// Allow admits a call, or refuses it with ErrOpen or ErrTooManyProbes.
// Every admitted call must end with exactly one Ticket.Done.
func (b *Breaker) Allow() (Ticket, error) {
	done, err := b.cb.Allow()
	b.flush() // Allow may have moved the breaker from open to half-open
	if err != nil {
		return Ticket{}, err
	}
	return Ticket{b: b, done: done}, nil
}

// Done reports how the call ended; took is its time to the response head
// (or to the failure), which decides whether it was slow.
func (t Ticket) Done(o Outcome, took time.Duration) {
	if t.done == nil {
		return
	}
	b := t.b
	err := outcomeErrs[o]
	if o != Excluded && b.s.SlowCallDuration > 0 {
		slow := took >= b.s.SlowCallDuration
		calls, n := b.slow.add(time.Now(), slow)
		if slow && o == Success && (b.slowTrips(calls, n) || State(b.state.Load()) == StateHalfOpen) {
			err = errSlowCall
		}
	}
	t.done(err)
	b.flush()
}

// Ready reports, without taking a lock, whether Allow may admit a call
// now: the breaker is closed or half-open, or open past its duration. It
// never consumes a probe; Allow has the last word.
func (b *Breaker) Ready(now time.Time) bool {
	if State(b.state.Load()) == StateOpen {
		return now.UnixNano() >= b.openUntil.Load()
	}
	return true
}

// Closed reports, without taking a lock, whether the breaker is closed.
func (b *Breaker) Closed() bool { return State(b.state.Load()) == StateClosed }

// State returns the current state, moving an open breaker past its
// duration to half-open as gobreaker does.
func (b *Breaker) State() State {
	st := b.cb.State()
	b.flush()
	return st
}

// Counts returns the counts of the current state.
func (b *Breaker) Counts() Counts {
	c := b.cb.Counts()
	timed, slow := b.slow.counts(time.Now())
	return Counts{
		Requests: c.Requests, Successes: c.TotalSuccesses, Failures: c.TotalFailures,
		Exclusions: c.TotalExclusions, ConsecutiveSuccesses: c.ConsecutiveSuccesses,
		ConsecutiveFailures: c.ConsecutiveFailures, TimedCalls: timed, SlowCalls: slow,
	}
}

// slowTrips reports whether the slow-call condition holds for these totals.
func (b *Breaker) slowTrips(calls, slow uint32) bool {
	return b.s.SlowCallDuration > 0 && b.s.SlowCallRatio > 0 && calls > 0 &&
		calls >= b.s.MinRequests && float64(slow) >= b.s.SlowCallRatio*float64(calls)
}

// readyToTrip is gobreaker's ReadyToTrip: called under its lock after a
// failure while closed.
func (b *Breaker) readyToTrip(c gobreaker.Counts) bool {
	timed, slow := b.slow.counts(time.Now())
	calls := c.TotalSuccesses + c.TotalFailures
	why := ""
	switch {
	case b.s.ConsecutiveFailures > 0 && c.ConsecutiveFailures >= b.s.ConsecutiveFailures:
		why = "consecutive_failures"
	case b.s.FailureRatio > 0 && calls > 0 && calls >= b.s.MinRequests &&
		float64(c.TotalFailures) >= b.s.FailureRatio*float64(calls):
		why = "failure_ratio"
	case b.slowTrips(timed, slow):
		why = "slow_call_ratio"
	default:
		return false
	}
	b.tripWhy = why
	b.tripCounts = Counts{
		Requests: c.Requests, Successes: c.TotalSuccesses, Failures: c.TotalFailures,
		Exclusions: c.TotalExclusions, ConsecutiveSuccesses: c.ConsecutiveSuccesses,
		ConsecutiveFailures: c.ConsecutiveFailures, TimedCalls: timed, SlowCalls: slow,
	}
	return true
}

// isExcluded is gobreaker's IsExcluded. It is the first callback of every
// reported result, under gobreaker's lock: it keeps the result for the
// transition that may follow.
func (b *Breaker) isExcluded(err error) bool {
	b.lastErr = err
	return err == outcomeErrs[Excluded]
}

// onStateChange is gobreaker's OnStateChange, called under its lock: it
// records the transition for flush to deliver, and calls nothing back.
func (b *Breaker) onStateChange(_ string, from, to State) {
	now := time.Now()
	t := Transition{Name: b.s.Name, From: from, To: to, At: now}
	switch {
	case from == StateClosed && to == StateOpen:
		t.Why, t.Counts = b.tripWhy, b.tripCounts
	case from == StateHalfOpen && to == StateOpen:
		t.Why = "probe_failed"
		if b.lastErr != nil {
			t.Why += ":" + outcomeName(b.lastErr)
		}
	case to == StateHalfOpen:
		t.Why = "open_duration_elapsed"
	case to == StateClosed:
		t.Why = "probes_succeeded"
	}
	if to == StateOpen {
		t.OpenFor = b.openFor
		b.openUntil.Store(now.Add(b.openFor).UnixNano())
	}
	b.state.Store(int32(to))
	b.slow.reset(now)
	b.pendMu.Lock()
	b.pending = append(b.pending, t)
	b.npending.Add(1)
	b.pendMu.Unlock()
}

func outcomeName(err error) string {
	if err == errSlowCall {
		return "slow_call"
	}
	var oe *outcomeError
	if errors.As(err, &oe) {
		return oe.o.String()
	}
	return err.Error()
}

// flush delivers pending transitions to OnTransition, outside gobreaker's
// lock. One goroutine delivers at a time, in order; a caller that finds
// another delivering leaves its transition to it.
func (b *Breaker) flush() {
	for b.npending.Load() > 0 {
		if !b.deliverMu.TryLock() {
			return
		}
		for {
			b.pendMu.Lock()
			batch := b.pending
			b.pending = nil
			b.npending.Store(0)
			b.pendMu.Unlock()
			if len(batch) == 0 {
				break
			}
			if b.s.OnTransition != nil {
				for _, t := range batch {
					b.s.OnTransition(t)
				}
			}
		}
		b.deliverMu.Unlock()
	}
}
