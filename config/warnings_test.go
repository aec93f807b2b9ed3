package config

import (
	"slices"
	"testing"
)

func TestWarnings(t *testing.T) {
	const downstream = "keepalive_timeout 1m is not above Nginx's upstream keepalive_timeout (1m by default): " +
		"tollgate may close an idle connection just as the edge sends a request on it, " +
		"and the edge sees a reset or 502; raise keepalive_timeout above the edge's (the default is 75s)"
	const upstream = "upstreams[0] (app): keepalive_timeout 5s is not below Node.js's default keep-alive timeout (5s): " +
		"a backend may close an idle connection just as tollgate sends a request on it; " +
		"set it below the backend's keep-alive timeout (the default is 4s)"
	tests := []struct {
		name  string
		extra string
		want  []string
	}{
		{"defaults are race-free", "", nil},
		{"downstream at the edge's timeout", "keepalive_timeout: 60s\n", []string{downstream}},
		{"downstream keep-alive off", "keepalive_timeout: 0\n", nil},
		{"downstream above the edge's", "keepalive_timeout: 61s\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Warnings(mustParse(t, minimal+tt.extra)); !slices.Equal(got, tt.want) {
				t.Errorf("Warnings = %q; want %q", got, tt.want)
			}
		})
	}
	ups := []struct {
		name string
		src  string
		want []string
	}{
		{"upstream at Node's timeout", "keepalive_timeout: 5s", []string{upstream}},
		{"upstream below Node's", "keepalive_timeout: 4999ms", nil},
		{"upstream pool off", "keepalive_timeout: 5s, keepalive: 0", nil},
	}
	for _, tt := range ups {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, "upstreams: [{name: app, servers: [{addr: 127.0.0.1:1}], "+tt.src+"}]\nroutes: [{upstream: app}]\n")
			if got := Warnings(c); !slices.Equal(got, tt.want) {
				t.Errorf("Warnings = %q; want %q", got, tt.want)
			}
		})
	}
}
