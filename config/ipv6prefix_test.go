package config

import "testing"

func TestIPv6Prefix(t *testing.T) {
	const zones = "routes: [{upstream: app}]\nupstreams: [{name: app, servers: [{addr: 127.0.0.1:3000}]}]\n"
	c := mustParse(t, zones+"limit_req_zones: [{name: z, key: $binary_remote_addr, size: 1m, ipv6_prefix: 64}]\n")
	if got := c.LimitReqZones[0].IPv6Prefix; got != 64 {
		t.Errorf("ipv6_prefix = %d; want 64", got)
	}
	if got := mustParse(t, zones+"limit_req_zones: [{name: z, key: k, size: 1m}]\n").LimitReqZones[0].IPv6Prefix; got != 0 {
		t.Errorf("default ipv6_prefix = %d; want 0", got)
	}
	assertErrors(t, errorList(t, zones+"limit_req_zones: [{name: z, key: k, size: 1m, ipv6_prefix: 129}, {name: y, key: k, size: 1m, ipv6_prefix: -1}]\n"), []string{
		`t.yaml:3:60: limit_req_zones[0].ipv6_prefix: ipv6_prefix must be from 0 to 128, got 129`,
		`t.yaml:3:107: limit_req_zones[1].ipv6_prefix: ipv6_prefix must be from 0 to 128, got -1`,
	})
}
