package proxy

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tollgate-proxy/tollgate/config"
)

// cond is one proxy_next_upstream condition.
type cond uint16

const (
	condError cond = 1 << iota
	condTimeout
	condInvalidHeader
	condHTTP500
	condHTTP502
	condHTTP503
	condHTTP504
	condHTTP403
	condHTTP404
	condHTTP429
	condNonIdempotent
)

var condNames = map[string]cond{
	"error": condError, "timeout": condTimeout, "invalid_header": condInvalidHeader,
	"http_500": condHTTP500, "http_502": condHTTP502, "http_503": condHTTP503,
	"http_504": condHTTP504, "http_403": condHTTP403, "http_404": condHTTP404,
	"http_429": condHTTP429, "non_idempotent": condNonIdempotent,
}

// statusCond is the condition a response status meets, or 0.
func statusCond(status int) cond {
	switch status {
	case 500:
		return condHTTP500
	case 502:
		return condHTTP502
	case 503:
		return condHTTP503
	case 504:
		return condHTTP504
	case 403:
		return condHTTP403
	case 404:
		return condHTTP404
	case 429:
		return condHTTP429
	}
	return 0
}

// failureCond is the condition a failed attempt meets: timeout, bad
// response (invalid_header) or error.
func failureCond(f *failure) cond {
	switch {
	case f.timeout:
		return condTimeout
	case f.reason == reasonBadResponse:
		return condInvalidHeader
	}
	return condError
}

func (c cond) name() string {
	for n, v := range condNames {
		if v == c {
			return n
		}
	}
	return "error"
}

// retryPolicy is a route's proxy_next_upstream rules, resolved.
type retryPolicy struct {
	conds       cond
	tries       int           // 0: no cap beyond the servers
	timeout     time.Duration // 0: none
	bodyLimit   int64
	idemKey     bool
	backoffBase time.Duration
	backoffMax  time.Duration
}

func newRetryPolicy(r *config.Route) retryPolicy {
	p := retryPolicy{
		tries:       r.ProxyNextUpstreamTries,
		timeout:     r.ProxyNextUpstreamTimeout.Duration,
		bodyLimit:   r.RetryBodyLimit.Bytes,
		idemKey:     r.RetryIdempotencyKey,
		backoffBase: r.RetryBackoff.Base.Duration,
		backoffMax:  r.RetryBackoff.Max.Duration,
	}
	for _, n := range r.ProxyNextUpstream {
		p.conds |= condNames[n]
	}
	return p
}

// Reasons a failed attempt was not retried, as the access log and metrics
// name them.
const (
	skipNotIdempotent    = "not_idempotent"
	skipBodyTooLarge     = "body_too_large"
	skipBudgetExhausted  = "budget_exhausted"
	skipTriesExhausted   = "tries_exhausted"
	skipDeadlineExceeded = "deadline_exceeded"
	skipResponseStarted  = "response_started"
	skipConditionNotSet  = "condition_not_listed"
)

// retryRun is the retry bookkeeping of one request.
type retryRun struct {
	start    time.Time
	tries    int // attempts that used up a try
	retries  int // retries made (for backoff)
	tried    []*peer
	triedA   [8]*peer
	freeUsed bool // the one keep-alive-race retry was used
}

// mayRetry decides whether a request whose attempt failed with condition c
// may go to another server, and returns "" or why not. sent says some of
// the request reached the backend; rr.tried already holds the failed
// server. A yes takes a token from the budget.
func (ss *session) mayRetry(st *requestState, rr *retryRun, c cond, sent bool) string {
	pol := &st.route.retry
	up := st.route.upstream
	switch {
	case pol.conds&c == 0:
		return skipConditionNotSet
	case ss.rw.wroteHead:
		return skipResponseStarted
	case ss.sentNonIdempotent(pol, sent):
		return skipNotIdempotent
	case !ss.replayable():
		return skipBodyTooLarge
	case pol.tries > 0 && rr.tries >= pol.tries,
		len(rr.tried) >= up.bal.size(), len(rr.tried) >= len(rr.triedA):
		return skipTriesExhausted
	case pol.timeout > 0 && time.Since(rr.start) >= pol.timeout:
		return skipDeadlineExceeded
	case !up.budget.allow(time.Now()):
		return skipBudgetExhausted
	}
	return ""
}

// sentNonIdempotent reports whether Nginx's rule forbids sending the
// request again: a POST, LOCK or PATCH some of which reached the backend,
// unless non_idempotent is listed or the route honours the request's
// Idempotency-Key.
func (ss *session) sentNonIdempotent(pol *retryPolicy, sent bool) bool {
	return sent && nonIdempotent(ss.req.Method) && pol.conds&condNonIdempotent == 0 &&
		!(pol.idemKey && ss.req.Header.Has("Idempotency-Key"))
}

// backoff is the pause before the next attempt: full jitter in
// [0, min(max, base·2^n)) (Envoy's), none after a failed connect, since the
// next attempt goes to another server.
func (rr *retryRun) backoff(pol *retryPolicy, f *failure) time.Duration {
	if f.connect || pol.backoffBase <= 0 {
		return 0
	}
	bound := pol.backoffBase << min(rr.retries, 16)
	if bound > pol.backoffMax || bound <= 0 {
		bound = pol.backoffMax
	}
	return rand.N(bound)
}

// retryAfterWait reads a 503 or 429 answer's Retry-After (seconds or an
// HTTP date) and reports how long to wait, and whether that fits the
// request's deadline (proxy_next_upstream_timeout, or one second without
// one, since a client waits behind the pause).
func retryAfterWait(value string, pol *retryPolicy, rr *retryRun) (time.Duration, bool) {
	if value == "" {
		return 0, true
	}
	var wait time.Duration
	if n, err := strconv.Atoi(value); err == nil && n >= 0 {
		wait = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(value); err == nil {
		wait = max(time.Until(t), 0)
	} else {
		return 0, true
	}
	limit := time.Second
	if pol.timeout > 0 {
		limit = pol.timeout - time.Since(rr.start)
	}
	return wait, wait <= limit
}

// retryBudget caps retries to a share of requests over a sliding window,
// with a floor per second (Linkerd's budget). It counts in ten buckets, so
// a check costs a few additions under a lock.
//
// A retryBudget is safe for concurrent use.
type retryBudget struct {
	mu       sync.Mutex
	percent  int64
	floor    int64 // retries always allowed per window
	width    int64 // bucket width, ns
	buckets  [10]budgetBucket
	disabled bool
}

type budgetBucket struct {
	slot    int64 // which width-slot of time this bucket holds
	reqs    int64
	retries int64
}

func newRetryBudget(b *config.RetryBudget) *retryBudget {
	window := b.Window.Duration
	return &retryBudget{
		percent: int64(*b.Percent),
		floor:   int64(*b.MinPerSecond) * int64(window/time.Second),
		width:   int64(window) / 10,
	}
}

func (b *retryBudget) bucket(now time.Time) *budgetBucket {
	slot := now.UnixNano() / b.width
	bk := &b.buckets[slot%int64(len(b.buckets))]
	if bk.slot != slot {
		*bk = budgetBucket{slot: slot}
	}
	return bk
}

// noteRequest counts a request (first attempts only).
func (b *retryBudget) noteRequest(now time.Time) {
	b.mu.Lock()
	b.bucket(now).reqs++
	b.mu.Unlock()
}

// allow takes a retry from the budget if one is left.
func (b *retryBudget) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.bucket(now)
	oldest := cur.slot - int64(len(b.buckets)) + 1
	var reqs, retries int64
	for i := range b.buckets {
		if bk := &b.buckets[i]; bk.slot >= oldest {
			reqs += bk.reqs
			retries += bk.retries
		}
	}
	if retries >= b.floor+reqs*b.percent/100 {
		return false
	}
	cur.retries++
	return true
}
