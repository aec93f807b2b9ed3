package breaker

import (
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is a breaker's state: closed (requests flow), open (requests are
// refused) or half-open (a few probes test the server). Its numeric values
// are the ones tollgate_circuit_breaker_state exports: 0, 1, 2.
type State = gobreaker.State

// The breaker states.
const (
	StateClosed   = gobreaker.StateClosed
	StateHalfOpen = gobreaker.StateHalfOpen
	StateOpen     = gobreaker.StateOpen
)

// Defaults, documented on Settings and in docs/config.md.
const (
	DefaultConsecutiveFailures = 5
	DefaultFailureRatio        = 0.5
	DefaultMinRequests         = 20
	DefaultWindow              = 10 * time.Second
	DefaultOpenDuration        = 30 * time.Second
	DefaultJitter              = 0.2
	DefaultHalfOpenRequests    = 1
	DefaultSlowCallRatio       = 0.5
)

// buckets is how many buckets the rolling window has: counts age out a
// tenth of the window at a time.
const buckets = 10

// Settings configure one Breaker. The zero value of a field means what its
// doc says; DefaultSettings returns tollgate's defaults.
type Settings struct {
	// Name identifies the breaker in transitions, e.g. "app/10.0.0.1:80".
	Name string

	// ConsecutiveFailures opens the breaker after this many failures in a
	// row. Zero: this condition is off. Default 5.
	ConsecutiveFailures uint32

	// FailureRatio opens the breaker when failures make up at least this
	// share (0-1] of the calls completed in Window, once there are
	// MinRequests of them. Zero: off. Default 0.5.
	FailureRatio float64

	// MinRequests is how many calls must complete in Window before
	// FailureRatio and SlowCallRatio apply. Zero: from the first call.
	// Default 20.
	MinRequests uint32

	// Window is the rolling window the ratios count over, in ten buckets.
	// Zero: the default, 10s.
	Window time.Duration

	// OpenDuration is how long the breaker stays open before it lets
	// probes through (half-open). Zero: the default, 30s.
	OpenDuration time.Duration

	// Jitter spreads OpenDuration by up to ± this share (0-1): each
	// Breaker draws its own open duration once, uniformly. Zero: none.
	// Default 0.2.
	Jitter float64

	// HalfOpenRequests is how many probes a half-open breaker admits at
	// once; that many successes in a row close it, one failure opens it
	// again. Zero: 1.
	HalfOpenRequests uint32

	// SlowCallDuration makes a call slow when its response head took this
	// long or longer. Zero: slow calls are not tracked. Default 0.
	SlowCallDuration time.Duration

	// SlowCallRatio opens the breaker when slow calls make up at least this
	// share (0-1] of the calls completed in Window, once there are
	// MinRequests of them. Only with SlowCallDuration. Zero: off.
	// Default 0.5.
	SlowCallRatio float64

	// Seed seeds the generator that draws the jittered open duration.
	// Zero: a random seed, different for every Breaker.
	Seed uint64

	// OnTransition, when set, receives each state change after the breaker
	// released its lock, in order; it may call the breaker.
	OnTransition func(Transition)
}

// DefaultSettings returns the documented defaults with name set.
func DefaultSettings(name string) Settings {
	return Settings{
		Name:                name,
		ConsecutiveFailures: DefaultConsecutiveFailures,
		FailureRatio:        DefaultFailureRatio,
		MinRequests:         DefaultMinRequests,
		Window:              DefaultWindow,
		OpenDuration:        DefaultOpenDuration,
		Jitter:              DefaultJitter,
		HalfOpenRequests:    DefaultHalfOpenRequests,
		SlowCallRatio:       DefaultSlowCallRatio,
	}
}

// normalized fills the zero fields that stand for a default.
func (s Settings) normalized() Settings {
	if s.Window <= 0 {
		s.Window = DefaultWindow
	}
	if s.OpenDuration <= 0 {
		s.OpenDuration = DefaultOpenDuration
	}
	if s.HalfOpenRequests == 0 {
		s.HalfOpenRequests = 1
	}
	s.Jitter = min(max(s.Jitter, 0), 1)
	return s
}

// Outcome is how one admitted call ended, as the breaker sees it.
type Outcome uint8

// The outcomes. Every outcome from ConnectFailure on is a failure.
const (
	// Success: a response that is not a failure status.
	Success Outcome = iota
	// Excluded: neither success nor failure — the client cancelled, or
	// tollgate itself ended the call.
	Excluded
	// ConnectFailure: the connection could not be opened (refused,
	// unreachable, connect timeout, DNS).
	ConnectFailure
	// ConnectionFailure: the backend reset or closed the connection before
	// or during the response.
	ConnectionFailure
	// Timeout: the backend did not answer in time.
	Timeout
	// BadResponse: the response was not valid HTTP.
	BadResponse
	// BadStatus: the response had a status listed as a failure.
	BadStatus
)

var outcomeNames = [...]string{"success", "excluded", "connect_failure", "connection_failure", "timeout", "bad_response", "bad_status"}

// String names the outcome, as logs print it.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Failure reports whether the outcome counts as a failure.
func (o Outcome) Failure() bool { return o >= ConnectFailure }
