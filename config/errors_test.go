package config

import (
	"errors"
	"testing"
)

// broken has one or more problems on most lines; every one must be
// reported, at the offending node.
const broken = `listen:
  - addr: 127.0.0.1:80800
limit_req_zones:
  - name: perip
    key: $binary_remote_addr
    size: 16k
    rate: 10r/h
upstreams:
  - name: app
    servers:
      - addr: 127.0.0.1:3000
        weight: abc
        max_fails: -1
      - addr: 127.0.0.1:3001
        backup: yes
  - name: app
    servers:
      - addr: localhost
        backup: true
routes:
  - upstream: api
    path_prefix: api
    limit_req:
      - zone: perip
        burst: 0
        delay: 5
        nodelay: true
    limit_req_status: 200
    limit_req_log_level: debug
  - upstream: app
    path_prefix: api
keepalive_timeout: 1.5s
unknown_key: 1
`

func TestBrokenConfig(t *testing.T) {
	assertErrors(t, errorList(t, broken), []string{
		`t.yaml:2:11: listen[0].addr: invalid port "80800" in "127.0.0.1:80800": want a number from 0 (any free port) to 65535`,
		`t.yaml:6:11: limit_req_zones[0].size: zone size 16k is too small; Nginx's minimum is 32k`,
		`t.yaml:7:11: limit_req_zones[0].rate: invalid rate "10r/h": unexpected "r"; want requests per second or minute, e.g. 10r/s or 30r/m`,
		`t.yaml:12:17: upstreams[0].servers[0].weight: expected an integer, got "abc"`,
		`t.yaml:13:20: upstreams[0].servers[0].max_fails: must not be negative, got -1`,
		`t.yaml:15:17: upstreams[0].servers[1].backup: expected true or false, got "yes"`,
		`t.yaml:16:11: upstreams[1].name: upstream "app" is already defined at upstreams[0]`,
		`t.yaml:18:7: upstreams[1].servers: at least one server that is not a backup is required`,
		`t.yaml:18:15: upstreams[1].servers[0].addr: invalid address "localhost": want host:port, e.g. 127.0.0.1:8080 or [::1]:8080`,
		`t.yaml:21:15: routes[0].upstream: no upstream named "api" (did you mean "app"?)`,
		`t.yaml:22:18: routes[0].path_prefix: path_prefix must start with /, got "api"`,
		`t.yaml:25:16: routes[0].limit_req[0].burst: burst must be positive, got 0 (leave it out for no burst)`,
		`t.yaml:26:16: routes[0].limit_req[0].delay: delay and nodelay cannot be used together: nodelay passes every request within burst at once, delay passes only the first ones`,
		`t.yaml:28:23: routes[0].limit_req_status: status must be from 400 to 599, got 200`,
		`t.yaml:29:26: routes[0].limit_req_log_level: unknown log level "debug"; want info, notice, warn or error`,
		`t.yaml:30:5: routes[1]: same host and path_prefix as routes[0]`,
		`t.yaml:31:18: routes[1].path_prefix: path_prefix must start with /, got "api"`,
		`t.yaml:32:20: keepalive_timeout: invalid time "1.5s": fractions are not allowed (Nginx times are integers); use a smaller unit, e.g. 1500ms`,
		`t.yaml:33:1: unknown field "unknown_key"`,
	})
}

func TestErrorsAs(t *testing.T) {
	_, err := Parse("t.yaml", []byte(broken))
	var list *Errors
	if !errors.As(err, &list) || len(list.List) != 19 {
		t.Fatalf("errors.As(*Errors) on %v", err)
	}
	var first Error
	if !errors.As(err, &first) || first != list.List[0] {
		t.Errorf("errors.As(Error) = %v; want %v", first, list.List[0])
	}
	want := Error{File: "t.yaml", Line: 2, Col: 11, Path: "listen[0].addr", Msg: `invalid port "80800" in "127.0.0.1:80800": want a number from 0 (any free port) to 65535`}
	if first != want {
		t.Errorf("first = %#v; want %#v", first, want)
	}
}

func TestMoreErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{{
		name: "unknown top-level field with suggestion",
		src:  minimal + "listn: []\n",
		want: []string{`t.yaml:8:1: unknown field "listn" (did you mean "listen"?)`},
	}, {
		name: "unknown nested field with suggestion",
		src:  "upstreams:\n  - name: a\n    servers:\n      - addr: 127.0.0.1:1\n        weigth: 2\nroutes: [{upstream: a}]\n",
		want: []string{`t.yaml:5:9: upstreams[0].servers[0]: unknown field "weigth" (did you mean "weight"?)`},
	}, {
		name: "unknown field without suggestion",
		src:  minimal + "admin: {foo: 1}\n",
		want: []string{`t.yaml:8:9: admin: unknown field "foo"`},
	}, {
		name: "x- keys only at top level",
		src:  minimal + "x-anchors: 1\nadmin: {x-foo: 1}\n",
		want: []string{`t.yaml:9:9: admin: unknown field "x-foo"`},
	}, {
		name: "duplicate field",
		src:  minimal + "admin:\n  addr: 127.0.0.1:1\n  addr: 127.0.0.1:2\n",
		want: []string{`t.yaml:10:3: admin: duplicate field "addr" (first at 9:3)`},
	}, {
		name: "empty file",
		src:  "",
		want: []string{`t.yaml: upstreams: at least one upstream is required`, `t.yaml: routes: at least one route is required`},
	}, {
		name: "not a mapping",
		src:  "- a\n",
		want: []string{`t.yaml:1:1: expected a mapping, got a list`},
	}, {
		name: "yaml syntax error",
		src:  minimal + "send_timeout: 3\n port: 4\n",
		want: []string{`t.yaml:9: invalid YAML: mapping values are not allowed in this context`},
	}, {
		name: "unknown anchor",
		src:  minimal + "send_timeout: *nope\n",
		want: []string{`t.yaml: invalid YAML: unknown anchor 'nope' referenced`},
	}, {
		name: "two documents",
		src:  minimal + "---\nlisten: []\n",
		want: []string{`t.yaml:8:1: a config file holds one YAML document, found another`},
	}, {
		name: "list where a mapping goes",
		src:  minimal + "admin: [a]\n",
		want: []string{`t.yaml:8:8: admin: expected a mapping, got a list`},
	}, {
		name: "mapping where a scalar goes",
		src:  minimal + "send_timeout: {a: 1}\n",
		want: []string{`t.yaml:8:15: send_timeout: expected a scalar, got a mapping`},
	}, {
		name: "integer out of range",
		src:  minimal + "keepalive_requests: 99999999999999999999\n",
		want: []string{`t.yaml:8:21: keepalive_requests: integer 99999999999999999999 is out of range`},
	}, {
		name: "missing required fields",
		src:  "limit_req_zones: [{rate: 1r/s}]\nupstreams: [{servers: [{weight: 2}]}]\nroutes: [{limit_req: [{burst: 1}]}]\nreal_ip: {}\n",
		want: []string{
			`t.yaml:1:19: limit_req_zones[0].name: a name is required`,
			`t.yaml:1:19: limit_req_zones[0].key: a key is required, e.g. $binary_remote_addr`,
			`t.yaml:1:19: limit_req_zones[0].size: a size is required, e.g. 10m`,
			`t.yaml:2:13: upstreams[0].name: a name is required`,
			`t.yaml:2:24: upstreams[0].servers[0].addr: an address is required (host:port)`,
			`t.yaml:3:10: routes[0].upstream: an upstream is required`,
			`t.yaml:3:23: routes[0].limit_req[0].zone: a zone is required`,
			`t.yaml:4:10: real_ip.set_real_ip_from: list at least one trusted address or CIDR`,
		},
	}, {
		name: "explicit zeros that Nginx rejects",
		src:  "upstreams: [{name: a, servers: [{addr: 127.0.0.1:1, weight: 0}]}]\nroutes: [{upstream: a, limit_req_status: 0, limit_req: [{zone: z, delay: 0}]}]\nlimit_req_zones: [{name: z, key: k, size: 1m}]\n",
		want: []string{
			`t.yaml:1:61: upstreams[0].servers[0].weight: weight must be at least 1, got 0`,
			`t.yaml:2:42: routes[0].limit_req_status: status must be from 400 to 599, got 0`,
			`t.yaml:2:74: routes[0].limit_req[0].delay: delay must be positive, got 0 (leave it out to delay every excess request)`,
		},
	}, {
		name: "duplicates and references",
		src: minimal + `listen: [{addr: "127.0.0.1:1"}, {addr: "127.0.0.1:1"}]
limit_req_zones: [{name: z, key: k, size: 1m}, {name: z, key: k, size: 1m}]
admin: {addr: "localhost"}
request_id_header: "X Id"
`,
		want: []string{
			`t.yaml:8:40: listen[1].addr: 127.0.0.1:1 is already listened on by listen[0].addr`,
			`t.yaml:9:55: limit_req_zones[1].name: limit_req_zone "z" is already defined at limit_req_zones[0]`,
			`t.yaml:10:15: admin.addr: invalid address "localhost": want host:port, e.g. 127.0.0.1:8080 or [::1]:8080`,
			`t.yaml:11:20: request_id_header: invalid header name "X Id"`,
		},
	}, {
		name: "same zone twice in a route, unknown zone, bad host",
		src: "limit_req_zones: [{name: perip, key: k, size: 1m}]\nupstreams: [{name: a, servers: [{addr: 127.0.0.1:1}]}]\n" +
			"routes: [{host: 'a.*.com', upstream: a, limit_req: [{zone: perip}, {zone: perip}, {zone: peirp}]}]\n",
		want: []string{
			`t.yaml:3:17: routes[0].host: invalid host "a.*.com": want a name, or *. and a name`,
			`t.yaml:3:75: routes[0].limit_req[1].zone: zone "perip" is already limited by routes[0].limit_req[0]`,
			`t.yaml:3:90: routes[0].limit_req[2].zone: no limit_req_zone named "peirp" (did you mean "perip"?)`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertErrors(t, errorList(t, tt.src), tt.want)
		})
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "f", Line: 1, Col: 2, Path: "p", Msg: "m"}, "f:1:2: p: m"},
		{Error{File: "f", Line: 1, Msg: "m"}, "f:1: m"},
		{Error{Line: 1, Col: 2, Path: "p", Msg: "m"}, "1:2: p: m"},
		{Error{Msg: "m"}, "m"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q; want %q", tt.e, got, tt.want)
		}
	}
	list := &Errors{List: []Error{{File: "f", Line: 1, Col: 1, Msg: "a"}, {File: "f", Line: 2, Col: 1, Msg: "b"}}}
	if got := list.Error(); got != "f:1:1: a\nf:2:1: b" {
		t.Errorf("Errors.Error() = %q", got)
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"weight", "max_fails", "max_conns", "backup"}
	tests := []struct{ in, want string }{
		{"weigth", "weight"},
		{"max_conn", "max_conns"},
		{"maxfails", "max_fails"},
		{"backups", "backup"},
		{"foo", ""},
		{"x", ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.in, names); got != tt.want {
			t.Errorf("suggest(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
