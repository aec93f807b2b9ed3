package config

import (
	"fmt"
	"slices"
	"time"
)

// Next-upstream conditions, Nginx's proxy_next_upstream values.
var nextUpstreamConditions = []string{
	"error", "timeout", "invalid_header", "http_500", "http_502", "http_503",
	"http_504", "http_403", "http_404", "http_429", "non_idempotent", "off",
}

// Backoff is the pause between two attempts: full jitter, a random time in
// [0, min(max, base·2^n)) before the n-th retry (Envoy's default shape).
// A retry after a failed connect goes to another server at once.
type Backoff struct {
	// Base is the first retry's upper bound. Default 25ms. Zero: the
	// default.
	Base Duration `yaml:"base"`
	// Max caps the bound. Default 250ms. Zero: the default.
	Max Duration `yaml:"max"`
}

// RetryBudget caps retries to a share of requests over a window, with a
// floor, so a failing backend is not hit with a retry storm (Linkerd's
// budget: 20 %, 10 retries/s, 10 s).
type RetryBudget struct {
	// Percent is the share of requests that may be retries. Default 20.
	// Zero: only the floor applies.
	Percent *int `yaml:"percent"`
	// MinPerSecond is the floor: retries always allowed per second of the
	// window. Default 10.
	MinPerSecond *int `yaml:"min_per_second"`
	// Window is the span over which requests and retries are counted.
	// Default 10s. Zero: the default.
	Window Duration `yaml:"window"`
}

const (
	defaultRetryBodyLimit  = 64 << 10
	defaultBackoffBase     = 25 * time.Millisecond
	defaultBackoffMax      = 250 * time.Millisecond
	defaultBudgetPercent   = 20
	defaultBudgetMinPerSec = 10
	defaultBudgetWindow    = 10 * time.Second
)

func retryDefaults(r *Route, path string, written nodeIndex) {
	if !written.has(path + ".proxy_next_upstream") {
		r.ProxyNextUpstream = []string{"error", "timeout"}
	}
	if !written.has(path + ".retry_body_limit") {
		r.RetryBodyLimit.Bytes = defaultRetryBodyLimit
	}
	setDuration(&r.RetryBackoff.Base, defaultBackoffBase)
	setDuration(&r.RetryBackoff.Max, defaultBackoffMax)
}

func retryBudgetDefaults(u *Upstream) {
	if u.RetryBudget == nil {
		u.RetryBudget = &RetryBudget{}
	}
	b := u.RetryBudget
	setPointer(&b.Percent, defaultBudgetPercent)
	setPointer(&b.MinPerSecond, defaultBudgetMinPerSec)
	setDuration(&b.Window, defaultBudgetWindow)
}

func (v *validator) retry(path string, r Route) {
	for i, c := range r.ProxyNextUpstream {
		if !slices.Contains(nextUpstreamConditions, c) {
			v.errorf(fmt.Sprintf("%s.proxy_next_upstream[%d]", path, i),
				"unknown condition %q%s", c, didYouMean(c, nextUpstreamConditions))
		}
	}
	if slices.Contains(r.ProxyNextUpstream, "off") && len(r.ProxyNextUpstream) > 1 {
		v.errorf(path+".proxy_next_upstream", `"off" cannot be combined with other conditions`)
	}
	v.nonNegative(path+".proxy_next_upstream_tries", r.ProxyNextUpstreamTries)
	if r.RetryBackoff.Max.Duration < r.RetryBackoff.Base.Duration {
		v.errorf(path+".retry_backoff.max", "max (%v) is below base (%v)", r.RetryBackoff.Max, r.RetryBackoff.Base)
	}
}

func (v *validator) retryBudget(path string, b *RetryBudget) {
	if b == nil {
		return
	}
	if b.Percent != nil && (*b.Percent < 0 || *b.Percent > 100) {
		v.errorf(path+".retry_budget.percent", "percent must be from 0 to 100, got %d", *b.Percent)
	}
	if b.MinPerSecond != nil {
		v.nonNegative(path+".retry_budget.min_per_second", *b.MinPerSecond)
	}
}
