package config

import (
	"reflect"
	"testing"
	"time"
)

func TestRetryDefaults(t *testing.T) {
	c := mustParse(t, minimal)
	r := c.Routes[0]
	if !reflect.DeepEqual(r.ProxyNextUpstream, []string{"error", "timeout"}) {
		t.Errorf("proxy_next_upstream = %q, want Nginx's [error timeout]", r.ProxyNextUpstream)
	}
	if r.ProxyNextUpstreamTries != 0 || r.ProxyNextUpstreamTimeout.Duration != 0 {
		t.Errorf("tries %d timeout %v, want 0 and 0 (Nginx)", r.ProxyNextUpstreamTries, r.ProxyNextUpstreamTimeout)
	}
	if r.RetryBodyLimit.Bytes != 64<<10 || r.RetryIdempotencyKey {
		t.Errorf("retry_body_limit %d idempotency key %v, want 64k and false", r.RetryBodyLimit.Bytes, r.RetryIdempotencyKey)
	}
	if r.RetryBackoff.Base.Duration != 25*time.Millisecond || r.RetryBackoff.Max.Duration != 250*time.Millisecond {
		t.Errorf("retry_backoff %v/%v, want 25ms/250ms", r.RetryBackoff.Base, r.RetryBackoff.Max)
	}
	b := c.Upstreams[0].RetryBudget
	if b == nil || *b.Percent != 20 || *b.MinPerSecond != 10 || b.Window.Duration != 10*time.Second {
		t.Errorf("retry_budget = %+v, want 20 %%, 10/s, 10s", b)
	}
}

func TestRetrySettings(t *testing.T) {
	c := mustParse(t, `
upstreams:
  - name: app
    servers:
      - addr: 127.0.0.1:3000
    retry_budget: {percent: 0, min_per_second: 0, window: 30s}
routes:
  - upstream: app
    proxy_next_upstream: [off]
    retry_body_limit: 0
  - path_prefix: /api/
    upstream: app
    proxy_next_upstream: [error, timeout, invalid_header, http_503, non_idempotent]
    proxy_next_upstream_tries: 2
    proxy_next_upstream_timeout: 1500ms
    retry_idempotency_key: on
    retry_backoff: {base: 10ms, max: 1s}
`)
	b := c.Upstreams[0].RetryBudget
	if *b.Percent != 0 || *b.MinPerSecond != 0 || b.Window.Duration != 30*time.Second {
		t.Errorf("retry_budget = %d %%, %d/s, %v; want the explicit zeros kept and 30s", *b.Percent, *b.MinPerSecond, b.Window)
	}
	off := c.Routes[0]
	if !reflect.DeepEqual(off.ProxyNextUpstream, []string{"off"}) || off.RetryBodyLimit.Bytes != 0 {
		t.Errorf("route 0: %q body limit %d, want [off] and an explicit 0", off.ProxyNextUpstream, off.RetryBodyLimit.Bytes)
	}
	api := c.Routes[1]
	if api.ProxyNextUpstreamTries != 2 || api.ProxyNextUpstreamTimeout.Duration != 1500*time.Millisecond ||
		!api.RetryIdempotencyKey || api.RetryBackoff.Base.Duration != 10*time.Millisecond || api.RetryBackoff.Max.Duration != time.Second {
		t.Errorf("route 1 = %+v", api)
	}
}

func TestRetryErrors(t *testing.T) {
	got := errorList(t, `
upstreams:
  - name: app
    servers:
      - addr: 127.0.0.1:3000
    retry_budget: {percent: 120, min_per_second: -1}
routes:
  - upstream: app
    proxy_next_upstream: [error, http_5xx]
  - path_prefix: /b/
    upstream: app
    proxy_next_upstream: [off, error]
    proxy_next_upstream_tries: -1
    retry_backoff: {base: 1s, max: 100ms}
`)
	assertErrors(t, got, []string{
		`t.yaml:6:29: upstreams[0].retry_budget.percent: percent must be from 0 to 100, got 120`,
		`t.yaml:6:50: upstreams[0].retry_budget.min_per_second: must not be negative, got -1`,
		`t.yaml:9:34: routes[0].proxy_next_upstream[1]: unknown condition "http_5xx" (did you mean "http_500"?)`,
		`t.yaml:12:26: routes[1].proxy_next_upstream: "off" cannot be combined with other conditions`,
		`t.yaml:13:32: routes[1].proxy_next_upstream_tries: must not be negative, got -1`,
		`t.yaml:14:36: routes[1].retry_backoff.max: max (100ms) is below base (1s)`,
	})
}
