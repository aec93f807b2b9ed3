package config

import (
	"reflect"
	"testing"
	"time"
)

// defaultBreaker is the breaker every upstream gets when it writes none.
func defaultBreaker() *Breaker {
	return &Breaker{
		Enabled:             true,
		ConsecutiveFailures: 5,
		FailureRatio:        Ratio{0.5},
		MinRequests:         20,
		Window:              sec(10),
		OpenDuration:        sec(30),
		Jitter:              Ratio{0.2},
		HalfOpenRequests:    1,
		SlowCallRatio:       Ratio{0.5},
		FailureStatuses:     []int{502, 503, 504},
	}
}

// upstreamWith is one upstream "app" with the given extra YAML (indented
// as upstream keys) and a route.
func upstreamWith(extra string) string {
	return "upstreams:\n  - name: app\n    servers:\n      - addr: 127.0.0.1:3000\n" + extra +
		"routes:\n  - upstream: app\n"
}

func TestResilienceDefaults(t *testing.T) {
	c := mustParse(t, upstreamWith("    health_check:\n      uri: /healthz\n"))
	u := c.Upstreams[0]
	if !reflect.DeepEqual(u.Breaker, defaultBreaker()) {
		t.Errorf("breaker = %+v\nwant %+v", u.Breaker, defaultBreaker())
	}
	want := &HealthCheck{
		URI: "/healthz", Interval: sec(5), Jitter: Duration{500 * time.Millisecond}, Timeout: sec(2),
		Fails: 1, Passes: 1, Status: []StatusRange{{200, 399}},
	}
	if !reflect.DeepEqual(u.HealthCheck, want) {
		t.Errorf("health_check = %+v\nwant %+v", u.HealthCheck, want)
	}
	if u.PanicThreshold != 50 || u.SlowStart.Duration != 0 {
		t.Errorf("panic_threshold %d slow_start %v, want 50 and 0", u.PanicThreshold, u.SlowStart)
	}
	if c.Readiness.RequireHealthyUpstreams {
		t.Error("readiness requires healthy upstreams by default")
	}
	// A short interval shortens the default timeout with it.
	c = mustParse(t, upstreamWith("    health_check: {interval: 1s}\n"))
	if h := c.Upstreams[0].HealthCheck; h.Timeout.Duration != time.Second || h.Jitter.Duration != 100*time.Millisecond {
		t.Errorf("interval 1s: timeout %v jitter %v, want 1s and 100ms", h.Timeout, h.Jitter)
	}
}

func TestResilienceFull(t *testing.T) {
	c := mustParse(t, `readiness:
  require_healthy_upstreams: true
`+upstreamWith(`    slow_start: 30s
    panic_threshold: 0
    breaker:
      enabled: on
      consecutive_failures: 0
      failure_ratio: 25%
      min_requests: 0
      window: 1m
      open_duration: 5s
      jitter: 0
      half_open_requests: 3
      slow_call_duration: 800ms
      slow_call_ratio: 0.9
      failure_statuses: [500, 502, 429]
    health_check:
      uri: /health?deep=1
      interval: 10s
      jitter: 0
      timeout: 10s
      fails: 3
      passes: 2
      status: [200, 204-299]
      body: "~ \"status\":\\s*\"ok\""
      host: health.internal
      port: 9000
`))
	u := c.Upstreams[0]
	wantB := &Breaker{
		Enabled: true, FailureRatio: Ratio{0.25}, Window: sec(60), OpenDuration: sec(5),
		HalfOpenRequests: 3, SlowCallDuration: Duration{800 * time.Millisecond}, SlowCallRatio: Ratio{0.9},
		FailureStatuses: []int{500, 502, 429},
	}
	if !reflect.DeepEqual(u.Breaker, wantB) {
		t.Errorf("breaker = %+v\nwant %+v", u.Breaker, wantB)
	}
	wantH := &HealthCheck{
		URI: "/health?deep=1", Interval: sec(10), Timeout: sec(10), Fails: 3, Passes: 2,
		Status: []StatusRange{{200, 200}, {204, 299}}, Body: `~ "status":\s*"ok"`, Host: "health.internal", Port: 9000,
	}
	if !reflect.DeepEqual(u.HealthCheck, wantH) {
		t.Errorf("health_check = %+v\nwant %+v", u.HealthCheck, wantH)
	}
	if u.PanicThreshold != 0 || u.SlowStart.Duration != 30*time.Second || !c.Readiness.RequireHealthyUpstreams {
		t.Errorf("panic_threshold %d slow_start %v readiness %+v", u.PanicThreshold, u.SlowStart, c.Readiness)
	}
	sub, re, err := u.HealthCheck.BodyMatch()
	if err != nil || sub != "" || re == nil || !re.MatchString(`{"status": "ok"}`) {
		t.Errorf("BodyMatch = %q, %v, %v; want a regexp matching", sub, re, err)
	}
}

func TestResilienceDisabledBreaker(t *testing.T) {
	// Off needs no trip condition; empty failure_statuses is allowed.
	c := mustParse(t, upstreamWith("    breaker: {enabled: false, consecutive_failures: 0, failure_ratio: 0, failure_statuses: []}\n"))
	if b := c.Upstreams[0].Breaker; b.Enabled || len(b.FailureStatuses) != 0 {
		t.Errorf("breaker = %+v, want disabled with no failure statuses", b)
	}
}

func TestResilienceErrors(t *testing.T) {
	src := `upstreams:
  - name: app
    servers:
      - addr: 127.0.0.1:3000
    panic_threshold: 101
    breaker:
      consecutive_failures: 0
      failure_ratio: 0
      window: 50ms
      jitter: 100%
      half_open_requests: 0
      failure_ratio_x: 1
      failure_statuses: [200, 503, 503]
    health_check:
      uri: health
      interval: 1s
      jitter: 1s
      timeout: 2s
      fails: 0
      passes: 0
      status: [600, 399-200, abc]
      body: "~ ("
      port: 70000
  - name: other
    servers:
      - addr: 127.0.0.1:3001
    breaker:
      failure_ratio: 1.5
      slow_call_ratio: half
routes:
  - upstream: app
`
	assertErrors(t, errorList(t, src), []string{
		`t.yaml:5:22: upstreams[0].panic_threshold: panic_threshold is a percentage from 0 to 100, got 101`,
		`t.yaml:7:7: upstreams[0].breaker: nothing can open this breaker: consecutive_failures and failure_ratio are 0 and slow calls are off; write enabled: false to turn it off`,
		`t.yaml:9:15: upstreams[0].breaker.window: window must be at least 100ms, got 50ms`,
		`t.yaml:10:15: upstreams[0].breaker.jitter: jitter must be below 1 (100%), got 1`,
		`t.yaml:11:27: upstreams[0].breaker.half_open_requests: half_open_requests must be at least 1, got 0`,
		`t.yaml:12:7: upstreams[0].breaker: unknown field "failure_ratio_x" (did you mean "failure_ratio"?)`,
		`t.yaml:13:26: upstreams[0].breaker.failure_statuses[0]: a failure status must be from 400 to 599, got 200`,
		`t.yaml:13:36: upstreams[0].breaker.failure_statuses[2]: status 503 is listed twice`,
		`t.yaml:15:12: upstreams[0].health_check.uri: invalid uri "health": want a path starting with /, e.g. /healthz`,
		`t.yaml:17:15: upstreams[0].health_check.jitter: jitter (1s) must be below interval (1s)`,
		`t.yaml:18:16: upstreams[0].health_check.timeout: timeout (2s) must not exceed interval (1s)`,
		`t.yaml:19:14: upstreams[0].health_check.fails: fails must be at least 1, got 0`,
		`t.yaml:20:15: upstreams[0].health_check.passes: passes must be at least 1, got 0`,
		`t.yaml:21:16: upstreams[0].health_check.status[0]: invalid status range "600": want statuses from 100 to 599, low to high`,
		`t.yaml:21:21: upstreams[0].health_check.status[1]: invalid status range "399-200": want statuses from 100 to 599, low to high`,
		`t.yaml:21:30: upstreams[0].health_check.status[2]: invalid status "abc": want a status or a range, e.g. 200 or 200-399`,
		`t.yaml:22:13: upstreams[0].health_check.body: invalid regular expression: missing closing ): (`,
		`t.yaml:23:13: upstreams[0].health_check.port: port must be from 1 to 65535, got 70000`,
		`t.yaml:28:22: upstreams[1].breaker.failure_ratio: ratio "1.5" is out of range: want 0 to 1, or 0% to 100%`,
		`t.yaml:29:24: upstreams[1].breaker.slow_call_ratio: invalid ratio "half": want a number from 0 to 1 or a percentage, e.g. 0.5 or 50%`,
	})
}

func TestParseRatio(t *testing.T) {
	for in, want := range map[string]float64{"0": 0, "0.5": 0.5, "1": 1, "50%": 0.5, "12.5%": 0.125, "100%": 1, "0%": 0} {
		got, err := ParseRatio(in)
		if err != nil || got.Fraction != want {
			t.Errorf("ParseRatio(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-0.1", "1.01", "101%", "NaN", "inf", "0x1p-1", " 0.5", "50 %", "%", "1_0%"} {
		if _, err := ParseRatio(in); err == nil {
			t.Errorf("ParseRatio(%q) succeeded", in)
		}
	}
}

func TestParseStatusRange(t *testing.T) {
	for in, want := range map[string]StatusRange{"200": {200, 200}, "200-399": {200, 399}, "100-599": {100, 599}} {
		got, err := ParseStatusRange(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseStatusRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "2xx", "99", "600", "300-200", "200-", "-200", "200-300-400", "+200"} {
		if _, err := ParseStatusRange(in); err == nil {
			t.Errorf("ParseStatusRange(%q) succeeded", in)
		}
	}
	r := StatusRange{200, 399}
	if !r.Contains(200) || !r.Contains(399) || r.Contains(400) || r.Contains(199) {
		t.Error("Contains is not inclusive of exactly 200-399")
	}
}
