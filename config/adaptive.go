package config

import (
	"fmt"
	"time"
)

// AdaptiveConcurrency limits the requests in flight to an upstream (all its
// servers together) with a limit that follows the upstream's latency and
// overload answers; requests over the limit wait in a short queue or are
// shed with 503. See docs/config.md "adaptive_concurrency" and the
// Controller type of package limiter for the algorithm.
//
// Off unless Enabled. The other fields are checked even while it is off.
type AdaptiveConcurrency struct {
	// Enabled turns the limit on. Default false: shedding 503s is a
	// behaviour to opt into, per upstream.
	Enabled bool `yaml:"enabled"`
	// Mode is gradient (default: the limit adapts) or fixed (the limit is
	// FixedLimit).
	Mode AdaptiveMode `yaml:"mode"`
	// FixedLimit is the limit in fixed mode. Required there, at least 1;
	// ignored in gradient mode.
	FixedLimit int `yaml:"fixed_limit"`
	// Min is the lowest the gradient limit goes. Default 3 (Envoy). At
	// least 1.
	Min int `yaml:"min"`
	// Max is the highest it goes. Default 1000 (Envoy). At least Min.
	Max int `yaml:"max"`
	// Initial is the limit at start. Default 20, within [Min, Max].
	Initial int `yaml:"initial"`
	// Window is how often the limit is recomputed from the latencies seen
	// since. Default 100ms (Envoy). Zero: the default.
	Window Duration `yaml:"window"`
	// Percentile of a window's latencies is its sample: 1 to 100. Default
	// 50 (Envoy's).
	Percentile int `yaml:"percentile"`
	// Buffer is the latency growth over minRTT still taken as no queueing:
	// 0.25 or 25%. Default 0.25 (Envoy). Zero: none.
	Buffer Ratio `yaml:"buffer"`
	// MinRTTInterval is how often minRTT is measured again (the limit is
	// halved for the measurement). Default 60s (Envoy). Zero: the default.
	// At least Window.
	MinRTTInterval Duration `yaml:"min_rtt_interval"`
	// MinRTTJitter spreads the measurements by ± this share of
	// MinRTTInterval. Default 0.15 (Envoy). Zero: none.
	MinRTTJitter Ratio `yaml:"min_rtt_jitter"`
	// Backoff multiplies the limit when the upstream answers 503 or 429 or
	// a try times out, at most once per Window. Default 0.9. Above 0.
	Backoff Ratio `yaml:"backoff"`
	// Queue bounds the requests waiting for a slot, as a share of the
	// current limit (rounded up): 0.5 or 50%. Default 1 (as many as the
	// limit; queue_timeout is the tighter bound). Zero: no queue, a request
	// over the limit is shed at once.
	Queue Ratio `yaml:"queue"`
	// QueueTimeout is the longest a request waits in the queue before it
	// is shed. Default 50ms. Zero: no queue.
	QueueTimeout Duration `yaml:"queue_timeout"`
}

// AdaptiveMode names how an adaptive_concurrency limit is set.
type AdaptiveMode string

const (
	// AdaptiveGradient adapts the limit (default).
	AdaptiveGradient AdaptiveMode = "gradient"
	// AdaptiveFixed holds it at fixed_limit.
	AdaptiveFixed AdaptiveMode = "fixed"
)

func (m *AdaptiveMode) parseScalar(s string) error {
	switch v := AdaptiveMode(s); v {
	case AdaptiveGradient, AdaptiveFixed:
		*m = v
		return nil
	}
	return fmt.Errorf("unknown mode %q; want gradient or fixed%s",
		s, didYouMean(s, []string{string(AdaptiveGradient), string(AdaptiveFixed)}))
}

// String returns the mode's config name.
func (m AdaptiveMode) String() string { return string(m) }

const (
	defaultAdaptiveMin          = 3
	defaultAdaptiveMax          = 1000
	defaultAdaptiveInitial      = 20
	defaultAdaptiveWindow       = 100 * time.Millisecond
	defaultAdaptivePercentile   = 50
	defaultAdaptiveBuffer       = 0.25
	defaultAdaptiveMinRTT       = 60 * time.Second
	defaultAdaptiveJitter       = 0.15
	defaultAdaptiveBackoff      = 0.9
	defaultAdaptiveQueue        = 1
	defaultAdaptiveQueueTimeout = 50 * time.Millisecond
)

// adaptiveDefaults fills an adaptive_concurrency block that was written; an
// upstream without one keeps nil (off). Explicit zeros stay: for the ratios
// and queue_timeout they mean none, elsewhere validation rejects them.
func adaptiveDefaults(u *Upstream, path string, written nodeIndex) {
	a := u.AdaptiveConcurrency
	if a == nil {
		return
	}
	path += ".adaptive_concurrency."
	if a.Mode == "" {
		a.Mode = AdaptiveGradient
	}
	for _, f := range []struct {
		key string
		n   *int
		def int
	}{
		{"min", &a.Min, defaultAdaptiveMin},
		{"max", &a.Max, defaultAdaptiveMax},
		{"initial", &a.Initial, defaultAdaptiveInitial},
		{"percentile", &a.Percentile, defaultAdaptivePercentile},
	} {
		if !written.has(path + f.key) {
			*f.n = f.def
		}
	}
	// Initial follows a Max or Min written below or above its default.
	if !written.has(path + "initial") {
		a.Initial = min(max(a.Initial, a.Min), max(a.Max, a.Min))
	}
	for _, f := range []struct {
		key string
		r   *Ratio
		def float64
	}{
		{"buffer", &a.Buffer, defaultAdaptiveBuffer},
		{"min_rtt_jitter", &a.MinRTTJitter, defaultAdaptiveJitter},
		{"backoff", &a.Backoff, defaultAdaptiveBackoff},
		{"queue", &a.Queue, defaultAdaptiveQueue},
	} {
		if !written.has(path + f.key) {
			f.r.Fraction = f.def
		}
	}
	setDuration(&a.Window, defaultAdaptiveWindow)
	setDuration(&a.MinRTTInterval, defaultAdaptiveMinRTT)
	if !written.has(path + "queue_timeout") {
		a.QueueTimeout.Duration = defaultAdaptiveQueueTimeout
	}
}

// adaptive checks an upstream's adaptive_concurrency block, enabled or not.
func (v *validator) adaptive(path string, a *AdaptiveConcurrency) {
	if a == nil {
		return
	}
	path += ".adaptive_concurrency"
	if a.Mode == AdaptiveFixed && a.FixedLimit < 1 {
		if v.written.has(path + ".fixed_limit") {
			v.errorf(path+".fixed_limit", "fixed_limit must be at least 1, got %d", a.FixedLimit)
		} else {
			v.errorf(path+".mode", "mode fixed needs fixed_limit (the most requests in flight)")
		}
	}
	v.nonNegative(path+".fixed_limit", a.FixedLimit)
	if a.Min < 1 {
		v.errorf(path+".min", "min must be at least 1, got %d", a.Min)
	}
	if a.Max < a.Min {
		v.errorf(path+".max", "max (%d) is below min (%d)", a.Max, a.Min)
	} else if a.Initial < a.Min || a.Initial > a.Max {
		v.errorf(path+".initial", "initial must be from min (%d) to max (%d), got %d", a.Min, a.Max, a.Initial)
	}
	if a.Percentile < 1 || a.Percentile > 100 {
		v.errorf(path+".percentile", "percentile must be from 1 to 100, got %d", a.Percentile)
	}
	if a.Backoff.Fraction <= 0 {
		v.errorf(path+".backoff", "backoff must be above 0 (the limit is multiplied by it), got %v", a.Backoff)
	}
	if a.MinRTTInterval.Duration < a.Window.Duration {
		v.errorf(path+".min_rtt_interval", "min_rtt_interval (%v) is below window (%v)", a.MinRTTInterval, a.Window)
	}
}
