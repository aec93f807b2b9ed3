package config

import (
	"slices"
	"testing"
)

func TestEnvExpansion(t *testing.T) {
	t.Setenv("TG_PORT", "3000")
	t.Setenv("TG_WEIGHT", "3")
	t.Setenv("TG_EMPTY", "")
	t.Setenv("TG_YAML", "x\n- y: [z]") // stays one string: no YAML injection
	c, err := Parse("t.yaml", []byte(`
upstreams:
  - name: app${TG_EMPTY}
    servers:
      - addr: "127.0.0.1:${TG_PORT}"
        weight: ${TG_WEIGHT}
limit_req_zones:
  - name: z
    key: ${TG_YAML}|$binary_remote_addr$${TG_PORT}
    size: 1m
routes:
  - upstream: app
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Upstreams[0].Servers[0]
	if c.Upstreams[0].Name != "app" || s.Addr != "127.0.0.1:3000" || s.Weight != 3 {
		t.Errorf("expanded upstream = %q %q %d; want app 127.0.0.1:3000 3", c.Upstreams[0].Name, s.Addr, s.Weight)
	}
	// The variable's text stays one string, $${ is a literal ${, a bare $
	// is left alone.
	if got, want := c.LimitReqZones[0].Key, "x\n- y: [z]|$binary_remote_addr${TG_PORT}"; got != want {
		t.Errorf("key = %q; want %q", got, want)
	}
}

func TestEnvErrors(t *testing.T) {
	t.Setenv("TG_SET", "ok")
	tests := []struct {
		name string
		src  string
		want []string
	}{{
		name: "plain scalar",
		src:  minimal + "request_id_header: X-${TG_UNSET}\n",
		want: []string{`t.yaml:8:22: request_id_header: environment variable "TG_UNSET" is not set (write $${ for a literal ${)`},
	}, {
		name: "second reference on the line",
		src:  minimal + "request_id_header: ${TG_SET}-${TG_UNSET}\n",
		want: []string{`t.yaml:8:30: request_id_header: environment variable "TG_UNSET" is not set (write $${ for a literal ${)`},
	}, {
		name: "after an escape",
		src:  minimal + "request_id_header: $${TG_UNSET}${TG_UNSET}\n",
		want: []string{`t.yaml:8:32: request_id_header: environment variable "TG_UNSET" is not set (write $${ for a literal ${)`},
	}, {
		name: "double quoted",
		src:  minimal + "admin: {addr: \"127.0.0.1:${TG_UNSET}\"}\n",
		want: []string{`t.yaml:8:26: admin.addr: environment variable "TG_UNSET" is not set (write $${ for a literal ${)`},
	}, {
		name: "block scalar",
		src:  minimal + "request_id_header: |\n  one\n  two ${TG_UNSET}\n",
		want: []string{`t.yaml:10:7: request_id_header: environment variable "TG_UNSET" is not set (write $${ for a literal ${)`},
	}, {
		name: "in a list",
		src:  minimal + "real_ip:\n  set_real_ip_from: [10.0.0.0/8, \"${TG_UNSET}\"]\n",
		want: []string{`t.yaml:9:35: real_ip.set_real_ip_from[1]: environment variable "TG_UNSET" is not set (write $${ for a literal ${)`},
	}, {
		name: "invalid name",
		src:  minimal + "request_id_header: ${1X}\n",
		want: []string{`t.yaml:8:20: request_id_header: invalid environment variable name "1X" in ${...}`},
	}, {
		name: "unterminated",
		src:  minimal + "request_id_header: a${TG_SET\n",
		want: []string{`t.yaml:8:21: request_id_header: unterminated "${" (write $${ for a literal ${)`},
	}, {
		name: "not expanded in keys",
		src:  minimal + "${TG_SET}: 1\n",
		want: []string{`t.yaml:8:1: unknown field "${TG_SET}"`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.src))
			var got []string
			if errs, ok := err.(*Errors); ok {
				for _, e := range errs.List {
					got = append(got, e.Error())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors = %q (%v)\nwant %q", got, err, tt.want)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	var got []string
	for tok := range tokens("a$${b}${C}$x${") {
		got = append(got, []string{"text", "escape", "ref", "badname", "unterminated"}[tok.kind]+":"+"a$${b}${C}$x${"[tok.start:tok.end])
	}
	want := []string{"text:a", "escape:$${", "text:b}", "ref:${C}", "text:$x", "unterminated:${"}
	if !slices.Equal(got, want) {
		t.Errorf("tokens = %q; want %q", got, want)
	}
}
