// Package breaker holds tollgate's per-server circuit breakers: a thin layer
// over github.com/sony/gobreaker/v2's TwoStepCircuitBreaker that adds what a
// proxy needs and gobreaker lacks.
//
// Two steps. Allow admits a request and returns a Ticket; Ticket.Done
// reports how the exchange ended once it really ended — after the response
// body streamed, not when the round trip returned.
//
// Trip conditions, any of which opens the breaker while it is closed:
//   - ConsecutiveFailures failures in a row;
//   - a failure ratio of at least FailureRatio over the rolling Window once
//     MinRequests calls completed in it;
//   - a slow-call ratio of at least SlowCallRatio over the same window
//     (calls whose time to the response head was SlowCallDuration or more).
//
// Slow calls. gobreaker only counts successes and failures and only asks
// ReadyToTrip after a failure, so the breaker keeps its own rolling window of
// timed calls and slow calls (same window, same ten buckets as gobreaker's).
// A slow call that otherwise succeeded is reported to gobreaker as a
// success, unless the slow-call condition now holds (or the breaker is half
// open): then it is reported as a failure, and ReadyToTrip, which reads the
// slow window too, opens the breaker with why "slow_call_ratio". So slow
// calls never inflate the failure ratio while they are below their own
// threshold, and a slow half-open probe fails the probe.
//
// Jitter. gobreaker's open timeout is one fixed value per breaker. Each
// Breaker draws its own, OpenDuration ± Jitter, from a generator seeded per
// instance, so the breakers of one server in several tollgate replicas (and
// of several servers tripped by one incident) do not all probe at the same
// instant.
//
// Exclusions. An Excluded outcome (the client cancelled, tollgate rejected
// the request itself) is neither a success nor a failure, as gobreaker's
// IsExcluded; in half-open it frees the probe slot it held.
//
// Transitions. gobreaker calls OnStateChange under its lock, where calling
// back into the breaker would deadlock. The breaker only records the
// transition there and hands it to Settings.OnTransition after the lock is
// released, in order, from the goroutine whose call caused it.
//
// Passive health with Nginx's max_fails/fail_timeout semantics is kept by the
// balancer in package proxy, which owns the per-peer counters Nginx defines.
package breaker
