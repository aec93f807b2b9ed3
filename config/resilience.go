package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"
)

// Breaker configures the circuit breaker of every server of an upstream
// (package breaker). A breaker is on unless Enabled is false, so an upstream
// without a breaker block is protected with the defaults below.
type Breaker struct {
	// Enabled turns the breakers on. Default true.
	Enabled bool `yaml:"enabled"`
	// ConsecutiveFailures opens a server's breaker after this many failures
	// in a row. Default 5. Zero: this condition is off.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// FailureRatio opens it when failures make up at least this share of
	// the calls in Window, once MinRequests completed there: 0.5 or 50%.
	// Default 0.5. Zero: this condition is off.
	FailureRatio Ratio `yaml:"failure_ratio"`
	// MinRequests is how many calls must complete in Window before the
	// failure and slow-call ratios apply. Default 20. Zero: from the first.
	MinRequests int `yaml:"min_requests"`
	// Window is the rolling window of the ratios, aged out a tenth at a
	// time. Default 10s. Zero: the default. At least 100ms.
	Window Duration `yaml:"window"`
	// OpenDuration is how long an open breaker refuses requests before it
	// lets probes through. Default 30s. Zero: the default.
	OpenDuration Duration `yaml:"open_duration"`
	// Jitter spreads OpenDuration by up to ± this share, drawn once per
	// breaker, so breakers tripped together do not probe together.
	// Default 0.2 (± 20 %). Zero: no jitter. Below 1.
	Jitter Ratio `yaml:"jitter"`
	// HalfOpenRequests is how many probes a half-open breaker admits; that
	// many successes close it, one failure opens it again. Default 1.
	HalfOpenRequests int `yaml:"half_open_requests"`
	// SlowCallDuration makes a call slow when its response head took this
	// long or longer. Default 0: slow calls do not trip the breaker (what is
	// slow depends on the service, and timeouts already count as failures).
	SlowCallDuration Duration `yaml:"slow_call_duration"`
	// SlowCallRatio opens the breaker when slow calls make up at least this
	// share of the calls in Window (with MinRequests). Only with
	// SlowCallDuration. Default 0.5.
	SlowCallRatio Ratio `yaml:"slow_call_ratio"`
	// FailureStatuses are the response statuses that count as failures.
	// Connect errors, resets, timeouts and invalid responses always do.
	// Default [502, 503, 504]. Empty list: no status counts.
	FailureStatuses []int `yaml:"failure_statuses"`
}

// HealthCheck configures active health checks of every server of an
// upstream: a GET on its own short-lived connection per round, never on the
// request pool.
type HealthCheck struct {
	// URI is the path (and query) requested. Default "/".
	URI string `yaml:"uri"`
	// Interval is the time between two checks of a server. Default 5s
	// (Nginx Plus). Zero: the default.
	Interval Duration `yaml:"interval"`
	// Jitter shifts each wait by a random amount within ± Jitter, so the
	// checks of many servers spread out. Default a tenth of Interval.
	// Zero: none. Below Interval.
	Jitter Duration `yaml:"jitter"`
	// Timeout bounds one check: connect, request and response. Default 2s,
	// or Interval when that is shorter. Zero: the default. At most Interval.
	Timeout Duration `yaml:"timeout"`
	// Fails is how many failed checks in a row mark a server unhealthy.
	// Default 1 (Nginx Plus). At least 1.
	Fails int `yaml:"fails"`
	// Passes is how many passed checks in a row mark it healthy. Default 1
	// (Nginx Plus). At least 1.
	Passes int `yaml:"passes"`
	// Status lists the statuses that pass: "200", "200-399". Default
	// ["200-399"] (Nginx Plus).
	Status []StatusRange `yaml:"status"`
	// Body, when set, must occur in the first 64k of the response body: a
	// substring, or a regular expression (Go syntax) after "~ ", as in an
	// Nginx Plus match block. Empty: the body is not read.
	Body string `yaml:"body"`
	// Host is the Host header sent. Default: the server's addr.
	Host string `yaml:"host"`
	// Port is checked instead of the server's own. Default 0: the
	// server's port.
	Port int `yaml:"port"`
}

// Readiness configures what /readyz requires besides a started process.
// /healthz never depends on backends.
type Readiness struct {
	// RequireHealthyUpstreams makes /readyz answer 503 while an upstream
	// has no healthy server: not down, not failed by passive health, its
	// breaker not open, and its active checks passed (a server whose checks
	// have no verdict yet does not count). Default false.
	RequireHealthyUpstreams bool `yaml:"require_healthy_upstreams"`
}

// Ratio is a share from 0 to 1, written as a number ("0.5") or a percentage
// ("50%").
type Ratio struct{ Fraction float64 }

// ParseRatio parses a ratio: a number from 0 to 1, or a percentage from 0%
// to 100%.
func ParseRatio(s string) (Ratio, error) {
	num, scale := s, 1.0
	if rest, ok := strings.CutSuffix(s, "%"); ok {
		num, scale = rest, 100
	}
	f, err := strconv.ParseFloat(num, 64)
	switch {
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(num, "xXpP_") || num != strings.TrimSpace(num):
		return Ratio{}, fmt.Errorf("invalid ratio %q: want a number from 0 to 1 or a percentage, e.g. 0.5 or 50%%", s)
	case f < 0 || f > scale:
		return Ratio{}, fmt.Errorf("ratio %q is out of range: want 0 to 1, or 0%% to 100%%", s)
	}
	return Ratio{f / scale}, nil
}

func (r *Ratio) parseScalar(s string) (err error) {
	*r, err = ParseRatio(s)
	return err
}

// String prints the ratio as a number: "0.5".
func (r Ratio) String() string { return strconv.FormatFloat(r.Fraction, 'g', -1, 64) }

// StatusRange is an HTTP status or an inclusive range of them: "200",
// "200-399".
type StatusRange struct{ Lo, Hi int }

// ParseStatusRange parses "200" or "200-399", statuses from 100 to 599.
func ParseStatusRange(s string) (StatusRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, errA := atoi(lo)
	b, errB := atoi(hi)
	switch {
	case errA != nil || errB != nil:
		return StatusRange{}, fmt.Errorf("invalid status %q: want a status or a range, e.g. 200 or 200-399", s)
	case a < 100 || b > 599 || a > b:
		return StatusRange{}, fmt.Errorf("invalid status range %q: want statuses from 100 to 599, low to high", s)
	}
	return StatusRange{int(a), int(b)}, nil
}

func (r *StatusRange) parseScalar(s string) (err error) {
	*r, err = ParseStatusRange(s)
	return err
}

// Contains reports whether status is in the range.
func (r StatusRange) Contains(status int) bool { return status >= r.Lo && status <= r.Hi }

// String prints "200" or "200-399".
func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}

// BodyMatch returns the body condition: a substring, or a compiled regular
// expression when Body starts with "~ ". Both are empty without a condition.
func (h *HealthCheck) BodyMatch() (substring string, re *regexp.Regexp, err error) {
	if expr, ok := strings.CutPrefix(h.Body, "~ "); ok {
		re, err = regexp.Compile(expr)
		return "", re, err
	}
	return h.Body, nil, nil
}

// Resilience defaults, documented on the fields above.
const (
	defaultBreakerConsecutive = 5
	defaultBreakerRatio       = 0.5
	defaultBreakerMinRequests = 20
	defaultBreakerWindow      = 10 * time.Second
	defaultBreakerOpen        = 30 * time.Second
	defaultBreakerJitter      = 0.2
	defaultBreakerProbes      = 1
	defaultSlowCallRatio      = 0.5
	defaultPanicThreshold     = 50

	defaultCheckURI      = "/"
	defaultCheckInterval = 5 * time.Second
	defaultCheckTimeout  = 2 * time.Second
	defaultCheckFails    = 1
	defaultCheckPasses   = 1

	minBreakerWindow = 100 * time.Millisecond
)

// defaultFailureStatuses are the statuses that count as breaker failures
// unless failure_statuses is written: a gateway's own "the backend is not
// there" answers.
var defaultFailureStatuses = []int{502, 503, 504}

// resilienceDefaults fills an upstream's breaker, health_check and
// panic_threshold. path is the upstream's ("upstreams[0]").
func resilienceDefaults(u *Upstream, path string, written nodeIndex) {
	if !written.has(path + ".panic_threshold") {
		u.PanicThreshold = defaultPanicThreshold
	}
	if u.Breaker == nil {
		u.Breaker = &Breaker{}
	}
	b, bp := u.Breaker, path+".breaker."
	unwritten := func(key string) bool { return !written.has(bp + key) }
	if unwritten("enabled") {
		b.Enabled = true
	}
	if unwritten("consecutive_failures") {
		b.ConsecutiveFailures = defaultBreakerConsecutive
	}
	if unwritten("failure_ratio") {
		b.FailureRatio.Fraction = defaultBreakerRatio
	}
	if unwritten("min_requests") {
		b.MinRequests = defaultBreakerMinRequests
	}
	setDuration(&b.Window, defaultBreakerWindow)
	setDuration(&b.OpenDuration, defaultBreakerOpen)
	if unwritten("jitter") {
		b.Jitter.Fraction = defaultBreakerJitter
	}
	if unwritten("half_open_requests") {
		b.HalfOpenRequests = defaultBreakerProbes
	}
	if unwritten("slow_call_ratio") {
		b.SlowCallRatio.Fraction = defaultSlowCallRatio
	}
	if unwritten("failure_statuses") {
		b.FailureStatuses = append([]int(nil), defaultFailureStatuses...)
	}
	if h := u.HealthCheck; h != nil {
		healthCheckDefaults(h, path+".health_check.", written)
	}
}

func healthCheckDefaults(h *HealthCheck, hp string, written nodeIndex) {
	setString(&h.URI, defaultCheckURI)
	setDuration(&h.Interval, defaultCheckInterval)
	if !written.has(hp + "jitter") {
		h.Jitter.Duration = h.Interval.Duration / 10
	}
	setDuration(&h.Timeout, min(defaultCheckTimeout, h.Interval.Duration))
	if !written.has(hp + "fails") {
		h.Fails = defaultCheckFails
	}
	if !written.has(hp + "passes") {
		h.Passes = defaultCheckPasses
	}
	if !written.has(hp + "status") {
		h.Status = []StatusRange{{200, 399}}
	}
}

// resilience validates an upstream's breaker, health_check, slow_start and
// panic_threshold.
func (v *validator) resilience(path string, u *Upstream) {
	if u.PanicThreshold < 0 || u.PanicThreshold > 100 {
		v.errorf(path+".panic_threshold", "panic_threshold is a percentage from 0 to 100, got %d", u.PanicThreshold)
	}
	if b := u.Breaker; b != nil {
		v.breaker(path+".breaker", b)
	}
	if h := u.HealthCheck; h != nil {
		v.healthCheck(path+".health_check", h)
	}
}

func (v *validator) breaker(path string, b *Breaker) {
	v.nonNegative(path+".consecutive_failures", b.ConsecutiveFailures)
	v.nonNegative(path+".min_requests", b.MinRequests)
	if b.Window.Duration < minBreakerWindow {
		v.errorf(path+".window", "window must be at least %v, got %v", Duration{minBreakerWindow}, b.Window)
	}
	if b.Jitter.Fraction >= 1 {
		v.errorf(path+".jitter", "jitter must be below 1 (100%%), got %v", b.Jitter)
	}
	if b.HalfOpenRequests < 1 {
		v.errorf(path+".half_open_requests", "half_open_requests must be at least 1, got %d", b.HalfOpenRequests)
	}
	seen := map[int]bool{}
	for i, s := range b.FailureStatuses {
		p := fmt.Sprintf("%s.failure_statuses[%d]", path, i)
		switch {
		case s < 400 || s > 599:
			v.errorf(p, "a failure status must be from 400 to 599, got %d", s)
		case seen[s]:
			v.errorf(p, "status %d is listed twice", s)
		}
		seen[s] = true
	}
	slowOn := b.SlowCallDuration.Duration > 0 && b.SlowCallRatio.Fraction > 0
	if b.Enabled && b.ConsecutiveFailures == 0 && b.FailureRatio.Fraction == 0 && !slowOn {
		v.errorf(path, "nothing can open this breaker: consecutive_failures and failure_ratio are 0 and slow calls are off; write enabled: false to turn it off")
	}
}

func (v *validator) healthCheck(path string, h *HealthCheck) {
	if u, err := url.ParseRequestURI(h.URI); err != nil || !strings.HasPrefix(h.URI, "/") || u.Fragment != "" ||
		strings.ContainsAny(h.URI, " \r\n") {
		v.errorf(path+".uri", "invalid uri %q: want a path starting with /, e.g. /healthz", h.URI)
	}
	if h.Jitter.Duration >= h.Interval.Duration {
		v.errorf(path+".jitter", "jitter (%v) must be below interval (%v)", h.Jitter, h.Interval)
	}
	if h.Timeout.Duration > h.Interval.Duration {
		v.errorf(path+".timeout", "timeout (%v) must not exceed interval (%v)", h.Timeout, h.Interval)
	}
	if h.Fails < 1 {
		v.errorf(path+".fails", "fails must be at least 1, got %d", h.Fails)
	}
	if h.Passes < 1 {
		v.errorf(path+".passes", "passes must be at least 1, got %d", h.Passes)
	}
	if len(h.Status) == 0 {
		v.errorf(path+".status", "list at least one status or range, e.g. [200-399]")
	}
	if _, _, err := h.BodyMatch(); err != nil {
		var re *syntax.Error
		msg := err.Error()
		if errors.As(err, &re) {
			msg = re.Code.String() + ": " + re.Expr
		}
		v.errorf(path+".body", "invalid regular expression: %s", msg)
	}
	if h.Host != "" && strings.ContainsAny(h.Host, " \r\n/") {
		v.errorf(path+".host", "invalid host %q", h.Host)
	}
	if h.Port < 0 || h.Port > 65535 {
		v.errorf(path+".port", "port must be from 1 to 65535, got %d", h.Port)
	}
}
