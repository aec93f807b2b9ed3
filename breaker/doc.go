// Package breaker holds tollgate's per-server circuit breakers
// (github.com/sony/gobreaker/v2, two-step) and passive health accounting.
// It is built in the health-checking issue; the balancer in proxy keeps
// Nginx's max_fails/fail_timeout accounting until then.
package breaker
