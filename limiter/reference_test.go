package limiter

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// Nginx's limit_req with nodelay is a token bucket: with used = excess/1000
// + 1 after a request, Nginx's excess' = max(0, excess - drained + 1000)
// is the bucket's used' = max(0, used - drained) + 1, and "excess > burst"
// is "used > burst+1". So golang.org/x/time/rate, an independent
// implementation, configured with limit = rate and capacity burst+1, must
// pass and reject the same requests.
//
// Where they may differ: rate.Limiter computes tokens in float64 seconds,
// so a request landing exactly on a boundary (whole ms, whole r/s: often)
// can fall either way. A disagreement is tolerated only if the reference's
// tokens are within tie of 1, float64 rounding at an exact boundary (far
// inside 1 ms: 1 ms is 0.001 tokens at 1r/s, a whole token at 1000r/s);
// then the reference follows the engine's decision and goes on. The
// comparison holds for whole r/s rates: r/m rates lose the remainder of
// rate*ms/1000 at every charge (a quirk the step tables cover), so Nginx
// drifts from an ideal bucket.

// tie bounds the float64 error of rate.Limiter's token count.
const tie = 1e-9

// compareResult counts the decisions of one comparison.
type compareResult struct {
	requests, rejected, tolerated, bad int
	firstBad                           string
}

// compare runs one random schedule of arrivals for one key through an
// engine rule and through ref, a rate.Limiter for refRate r/s with
// capacity refCap.
func compare(rng *rand.Rand, engineRate int64, burst int, refRate float64, refCap int) compareResult {
	z := NewZone("ref", Key{}, 1<<20, engineRate)
	rules := []Rule{{Zone: z, Burst: burst, NoDelay: true}}
	key := [][]byte{[]byte("k")}
	ref := rate.NewLimiter(rate.Limit(refRate), refCap)
	epoch := time.Unix(1_700_000_000, 0)
	interval := int(1000 / refRate)

	var res compareResult
	now := int64(rng.IntN(1 << 20))
	for range 400 {
		switch r := rng.IntN(20); {
		case r < 3: // a burst at the same instant
		case r < 4: // idle long enough to drain the bucket
			now += int64(interval*(refCap+1) + rng.IntN(3*interval+1))
		case r < 14: // faster than the rate
			now += int64(rng.IntN(interval + 1))
		default: // around the rate
			now += int64(rng.IntN(2*interval + 2))
		}
		at := epoch.Add(time.Duration(now) * time.Millisecond)
		engine := Check(rules, key, now, false).Status == Passed
		tokens := ref.TokensAt(at)
		reference := tokens >= 1
		res.requests++
		if !engine {
			res.rejected++
		}
		switch {
		case engine == reference:
			if engine && !ref.AllowN(at, 1) {
				res.bad++ // cannot happen: tokens >= 1
			}
		case math.Abs(tokens-1) <= tie:
			res.tolerated++
			if engine {
				ref.ReserveN(at, 1) // follow the engine: take the token anyway
			}
		default:
			res.bad++
			if res.firstBad == "" {
				res.firstBad = fmt.Sprintf("%dms (engine passed: %v, reference tokens %.4f)", now, engine, tokens)
			}
		}
	}
	return res
}

func TestAgainstRateLimiter(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 8))
	var total compareResult
	for schedule := range 300 {
		rps := []int{1, 2, 5, 10, 20, 50, 100, 1000}[rng.IntN(8)]
		burst := rng.IntN(21)
		res := compare(rng, int64(rps)*1000, burst, float64(rps), burst+1)
		if res.bad > 0 {
			t.Errorf("schedule %d (%dr/s burst=%d): %d of %d decisions differ from rate.Limiter; first at %s",
				schedule, rps, burst, res.bad, res.requests, res.firstBad)
		}
		total.requests += res.requests
		total.rejected += res.rejected
		total.tolerated += res.tolerated
	}
	// The schedules must exercise both outcomes, and boundaries must stay rare.
	if total.rejected < total.requests/10 || total.rejected > total.requests*9/10 {
		t.Errorf("%d of %d requests rejected: schedules do not exercise the limit", total.rejected, total.requests)
	}
	if total.tolerated > total.requests/100 {
		t.Errorf("%d of %d decisions only agree within 1 ms; want under 1%%", total.tolerated, total.requests)
	}
	t.Logf("%d requests, %d rejected, %d boundary ties tolerated", total.requests, total.rejected, total.tolerated)
}

// TestReferenceComparisonCanFail checks that the comparison catches an
// engine configured one burst or one r/s away from the reference.
func TestReferenceComparisonCanFail(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 9))
	for _, tt := range []struct {
		name        string
		engineRate  int64
		burst       int
		refRate     float64
		refCapacity int
	}{
		{"burst off by one", 10000, 5, 10, 5},
		{"rate 10 vs 11 r/s", 10000, 5, 11, 6},
		{"rate 1.000 vs 1.001 r/s", 1000, 2, 1.001, 3},
	} {
		bad := 0
		for range 20 {
			bad += compare(rng, tt.engineRate, tt.burst, tt.refRate, tt.refCapacity).bad
		}
		if bad == 0 {
			t.Errorf("%s: no disagreement found", tt.name)
		}
	}
}
