package breaker

import (
	"sync"
	"time"
)

// slowWindow counts timed calls and slow calls over a rolling window of ten
// buckets, the same shape as gobreaker's rolling counts: a bucket ages out
// whole, a tenth of the window at a time.
//
// A slowWindow is safe for concurrent use. Its lock is taken inside
// gobreaker's (from ReadyToTrip and OnStateChange) and never the other way
// round.
type slowWindow struct {
	mu      sync.Mutex
	period  time.Duration // one bucket
	start   time.Time     // when bucket 0 began
	age     int64         // buckets elapsed since start: the current one
	buckets [buckets]slowBucket
	total   slowBucket
}

type slowBucket struct{ calls, slow uint32 }

func newSlowWindow(window time.Duration, now time.Time) *slowWindow {
	w := &slowWindow{period: max(window/buckets, time.Nanosecond)}
	w.reset(now)
	return w
}

// reset empties the window; the breaker calls it on every state change, as
// gobreaker clears its counts.
func (w *slowWindow) reset(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.start, w.age = now, 0
	w.buckets = [buckets]slowBucket{}
	w.total = slowBucket{}
}

// roll drops the buckets that aged out by now. Called with w.mu held.
func (w *slowWindow) roll(now time.Time) {
	age := int64(now.Sub(w.start) / w.period)
	if age <= w.age {
		return
	}
	if age-w.age >= buckets {
		w.buckets = [buckets]slowBucket{}
		w.total = slowBucket{}
		w.age = age
		return
	}
	for w.age < age {
		w.age++
		b := &w.buckets[w.age%buckets]
		w.total.calls -= b.calls
		w.total.slow -= b.slow
		*b = slowBucket{}
	}
}

// add counts one completed call and returns the window's totals.
func (w *slowWindow) add(now time.Time, slow bool) (calls, slowCalls uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now)
	b := &w.buckets[w.age%buckets]
	b.calls++
	w.total.calls++
	if slow {
		b.slow++
		w.total.slow++
	}
	return w.total.calls, w.total.slow
}

// counts returns the window's totals at now.
func (w *slowWindow) counts(now time.Time) (calls, slowCalls uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now)
	return w.total.calls, w.total.slow
}
