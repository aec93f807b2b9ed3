package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// adaptiveYAML is one upstream "app" whose adaptive_concurrency block is
// block (indented as its keys), and a route.
func adaptiveYAML(block string) string {
	return "upstreams:\n  - name: app\n    servers:\n      - addr: 127.0.0.1:3000\n" +
		"    adaptive_concurrency:\n" + block + "routes:\n  - upstream: app\n"
}

func TestAdaptiveDefaults(t *testing.T) {
	if a := mustParse(t, minimal).Upstreams[0].AdaptiveConcurrency; a != nil {
		t.Errorf("adaptive_concurrency without a block = %+v, want nil (off)", a)
	}
	got := mustParse(t, adaptiveYAML("      enabled: true\n")).Upstreams[0].AdaptiveConcurrency
	want := &AdaptiveConcurrency{
		Enabled: true, Mode: AdaptiveGradient, Min: 3, Max: 1000, Initial: 20,
		Window: Duration{100 * time.Millisecond}, Percentile: 50, Buffer: Ratio{0.25},
		MinRTTInterval: sec(60), MinRTTJitter: Ratio{0.15}, Backoff: Ratio{0.9},
		Queue: Ratio{1}, QueueTimeout: Duration{50 * time.Millisecond},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults = %+v\nwant %+v", got, want)
	}
	// A low max pulls the default initial down with it.
	got = mustParse(t, adaptiveYAML("      enabled: true\n      max: 8\n")).Upstreams[0].AdaptiveConcurrency
	if got.Initial != 8 {
		t.Errorf("initial with max 8 = %d, want 8", got.Initial)
	}
}

func TestAdaptiveFull(t *testing.T) {
	got := mustParse(t, adaptiveYAML(`      enabled: on
      mode: fixed
      fixed_limit: 12
      min: 2
      max: 50
      initial: 10
      window: 250ms
      percentile: 99
      buffer: 0
      min_rtt_interval: 30s
      min_rtt_jitter: 0
      backoff: 50%
      queue: 0
      queue_timeout: 0
`)).Upstreams[0].AdaptiveConcurrency
	want := &AdaptiveConcurrency{
		Enabled: true, Mode: AdaptiveFixed, FixedLimit: 12, Min: 2, Max: 50, Initial: 10,
		Window: Duration{250 * time.Millisecond}, Percentile: 99, MinRTTInterval: sec(30),
		Backoff: Ratio{0.5},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestAdaptiveErrors(t *testing.T) {
	errs := errorList(t, adaptiveYAML(`      mode: fixed
      min: 0
      max: 10
      initial: 11
      percentile: 101
      backoff: 0
      window: 2s
      min_rtt_interval: 1s
      queue: 2
`))
	var lines []string
	for _, e := range errs {
		lines = append(lines, e.Error())
	}
	for _, want := range []string{
		"mode fixed needs fixed_limit",
		"min must be at least 1, got 0",
		"initial must be from min (0) to max (10), got 11",
		"percentile must be from 1 to 100, got 101",
		"backoff must be above 0",
		"min_rtt_interval (1s) is below window (2s)",
		`ratio "2" is out of range`,
	} {
		if !strings.Contains(strings.Join(lines, "\n"), want) {
			t.Errorf("no error %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if n := len(errs); n != 7 {
		t.Errorf("%d errors, want 7:\n%s", n, strings.Join(lines, "\n"))
	}
	assertErrors(t, errorList(t, adaptiveYAML("      mode: gradiant\n")), []string{
		`t.yaml:6:13: upstreams[0].adaptive_concurrency.mode: unknown mode "gradiant"; want gradient or fixed (did you mean "gradient"?)`,
	})
	assertErrors(t, errorList(t, adaptiveYAML("      enabled: true\n      max: 2\n")), []string{
		"t.yaml:7:12: upstreams[0].adaptive_concurrency.max: max (2) is below min (3)",
	})
}
