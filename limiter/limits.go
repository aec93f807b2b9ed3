package limiter

import (
	"math"
	"strconv"
	"time"
)

// Status is Nginx's $limit_req_status for a request.
type Status uint8

// The values of Status, numbered as Nginx numbers them.
const (
	Unset          Status = iota // no limit applied: every key was empty
	Passed                       // passed at once
	Delayed                      // passed after Decision.Delay
	Rejected                     // rejected with limit_req_status
	DelayedDryRun                // would have been delayed (dry run: passed at once)
	RejectedDryRun               // would have been rejected (dry run: passed at once)
)

var statusNames = [...]string{"", "PASSED", "DELAYED", "REJECTED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN"}

// String returns the $limit_req_status value: "PASSED", "DELAYED",
// "REJECTED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN", or "" for Unset.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Rule is one limit_req of a route.
type Rule struct {
	// Zone is the limit_req_zone. A nil Zone skips the rule.
	Zone *Zone
	// Burst is how many requests above the rate a key may have in flight:
	// burst N admits N+1 requests at once. Zero: none. Negative: zero.
	Burst int
	// Delay is the excess that passes at once: with delay D the first D+1
	// requests of a burst pass, the rest wait. Zero: every excess request
	// waits. A Delay above Burst acts as NoDelay.
	Delay int
	// NoDelay passes every request within Burst at once; Delay is ignored.
	NoDelay bool
}

// burstMilli and delayMilli are limit->burst and limit->delay: ×1000, and
// nodelay as NGX_MAX_INT_T_VALUE / 1000 * 1000 (ngx_http_limit_req).
func (r *Rule) burstMilli() int64 { return int64(max(r.Burst, 0)) * 1000 }

func (r *Rule) delayMilli() int64 {
	if r.NoDelay {
		return math.MaxInt64 / 1000 * 1000
	}
	return int64(max(r.Delay, 0)) * 1000
}

// Decision is the outcome of Check for one request.
type Decision struct {
	// Status is the $limit_req_status value.
	Status Status
	// Delay is how long to hold the request before passing it on: nonzero
	// only when Status is Delayed. Whole milliseconds, floored as Nginx's
	// (excess - delay*1000) * 1000 / rate.
	Delay time.Duration
	// Zone is the zone that rejected the request (Rejected,
	// RejectedDryRun), or whose delay applies (Delayed, DelayedDryRun): the
	// zone the log line names. Nil for Passed and Unset.
	Zone *Zone
	// Excess is that zone's excess for the request, in thousandths of a
	// request, as Nginx logs it ("excess: 10.500").
	Excess int64
	// RetryAfter, for a rejection by a full burst, is the least time after
	// which the same key's next request passes the rejecting zone, if the
	// key sends nothing else meanwhile: whole ms, (Excess - burst*1000) *
	// 1000 / rate rounded up (exactly, with Nginx's truncation of drained
	// thousandths). Other zones of the route may still reject it then.
	// Zero otherwise. For a Retry-After header, see RetryAfterSeconds.
	RetryAfter time.Duration
	// AllocFailed reports a rejection because the zone had no room for a new
	// key even after evicting (Nginx's alert "could not allocate node").
	AllocFailed bool
}

// RetryAfterSeconds is RetryAfter in whole seconds rounded up, for a
// Retry-After header (RFC 9110 §10.2.3): 0 when RetryAfter is 0.
func (d Decision) RetryAfterSeconds() int64 {
	return int64((d.RetryAfter + time.Second - 1) / time.Second)
}

// maxKeyLen is the longest key Nginx looks up; a longer one skips its limit
// with an error log (ngx_http_limit_req_handler).
const maxKeyLen = 65535

// Check applies a route's limit_req rules to one request, as
// ngx_http_limit_req_handler and ngx_http_limit_req_account do. keys[i] is
// rules[i].Zone's key evaluated for the request (see AppendKeys); a
// missing, empty or longer than 65535-byte key skips its rule.
//
// In config order: rules before the last are only checked, and pin their
// states; the last is charged as it is checked. The first rule whose burst
// would be exceeded rejects the request, and no zone is charged for it
// (states created by earlier rules stay, fully drained). If all pass, the
// earlier rules are charged, recomputed at nowMs without a new check (Nginx
// recomputes at ngx_current_msec, which is the same instant within one
// event-loop turn), and the request waits for the largest per-rule delay;
// ties go to the later rule. With dryRun, states change just the same but
// nothing is delayed or rejected.
//
// Check allocates nothing for up to 8 rules.
func Check(rules []Rule, keys [][]byte, nowMs int64, dryRun bool) Decision {
	var pinBuf [8]int32
	pins := pinBuf[:0]
	if len(rules) > len(pinBuf) {
		pins = make([]int32, 0, len(rules))
	}
	res := lookupResult{rc: rcDeclined}
	limit := -1 // Nginx's limit: the rule being looked at
	for n := range rules {
		pins = append(pins, -1)
		limit = n
		r := &rules[n]
		if r.Zone == nil || n >= len(keys) || len(keys[n]) == 0 || len(keys[n]) > maxKeyLen {
			continue
		}
		res = r.Zone.lookup(keys[n], nowMs, r.burstMilli(), n == len(rules)-1)
		if res.rc == rcAgain {
			pins[n] = res.idx
			continue
		}
		if res.rc != rcOK {
			return reject(rules, pins[:n], limit, res, dryRun)
		}
	}
	if res.rc == rcDeclined {
		return Decision{}
	}
	if res.rc == rcAgain {
		res.excess = 0 // the last rule's key was empty
	}
	return account(rules, pins, limit, res.excess, nowMs, dryRun)
}

// reject unpins the states the earlier rules pinned (ngx_http_limit_req_unlock).
func reject(rules []Rule, pins []int32, limit int, res lookupResult, dryRun bool) Decision {
	for i, p := range pins {
		if p >= 0 {
			rules[i].Zone.unpin(p)
		}
	}
	d := Decision{Status: Rejected, Zone: rules[limit].Zone, Excess: res.excess, AllocFailed: res.rc == rcError}
	if res.rc == rcBusy {
		d.RetryAfter = time.Duration(res.retry) * time.Millisecond
	}
	if dryRun {
		d.Status = RejectedDryRun
	}
	return d
}

// account charges the pinned states of the earlier rules and picks the
// largest delay (ngx_http_limit_req_account). limit is the last
// rule and excess the request's excess there.
func account(rules []Rule, pins []int32, limit int, excess, now int64, dryRun bool) Decision {
	var maxDelay int64
	if d := rules[limit].delayMilli(); excess > d {
		maxDelay = (excess - d) * 1000 / rules[limit].Zone.Rate()
	}
	for n := len(pins) - 1; n >= 0; n-- {
		if pins[n] < 0 {
			continue
		}
		r := &rules[n]
		e := r.Zone.charge(pins[n], now)
		if d := r.delayMilli(); e > d {
			if delay := (e - d) * 1000 / r.Zone.Rate(); delay > maxDelay {
				maxDelay, excess, limit = delay, e, n
			}
		}
	}
	switch {
	case maxDelay == 0:
		return Decision{Status: Passed}
	case dryRun:
		return Decision{Status: DelayedDryRun, Zone: rules[limit].Zone, Excess: excess}
	}
	return Decision{
		Status: Delayed,
		Delay:  time.Duration(maxDelay) * time.Millisecond,
		Zone:   rules[limit].Zone,
		Excess: excess,
	}
}

// AppendKeys evaluates each rule's zone key for a request into keys,
// reusing the buffers keys already holds, and returns keys. With keys kept
// per connection or in a sync.Pool, it allocates nothing once warm.
func AppendKeys(keys [][]byte, rules []Rule, src KeySource) [][]byte {
	for len(keys) < len(rules) {
		keys = append(keys, nil)
	}
	keys = keys[:len(rules)]
	for i := range rules {
		keys[i] = keys[i][:0]
		if rules[i].Zone != nil {
			keys[i] = rules[i].Zone.key.Append(keys[i], src)
		}
	}
	return keys
}
