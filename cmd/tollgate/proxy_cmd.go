package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/examples/demo"
)

func cmdProxy(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("proxy", "proxy --listen ADDR --to URL[,URL...]", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	to := fs.String("to", "", "backend URLs, comma-separated (http://host:port)")
	admin := fs.String("admin", "127.0.0.1:9901", `admin listener address, or "off"`)
	keepalive := fs.Int("keepalive", 32, "idle connections kept per backend server (0: none)")
	accessLog := fs.Bool("access-log", true, "write one JSON access log line per request to stdout")
	closeLog := fs.Bool("close-log", true, "write one JSON close record per connection close to stdout")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	cfg, err := proxyConfig(*listen, *to, *admin, *keepalive)
	if err != nil {
		fmt.Fprintf(stderr, "tollgate proxy: %s\n", err)
		return 2
	}
	return serve(cfg, nil, outputs(*accessLog, *closeLog, stdout), newLogger(stderr))
}

// proxyConfig builds the config of `tollgate proxy` through the config
// package itself, so flags get exactly the defaults and checks of a file.
func proxyConfig(listen, to, admin string, keepalive int) (*config.Config, error) {
	if to == "" {
		return nil, fmt.Errorf("--to is required")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  - addr: %q\nadmin:\n  addr: %q\nupstreams:\n  - name: backend\n    keepalive: %d\n    servers:\n", listen, admin, keepalive)
	for raw := range strings.SplitSeq(to, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("--to %q: want http://host:port", raw)
		}
		host := u.Host
		if u.Port() == "" {
			host += ":80"
		}
		fmt.Fprintf(&b, "      - addr: %q\n", host)
	}
	b.WriteString("routes:\n  - path_prefix: /\n    upstream: backend\n")
	return config.Parse("flags", []byte(b.String()))
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "demo", stderr)
	accessLog := fs.Bool("access-log", true, "write one JSON access log line per request to stdout")
	closeLog := fs.Bool("close-log", true, "write one JSON close record per connection close to stdout")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	cfg, err := config.Parse("demo/tollgate.yaml", demo.Config)
	if err != nil {
		fmt.Fprintf(stderr, "tollgate demo: embedded config: %s\n", err)
		return 1
	}
	var backends []*demo.Backend
	for i, s := range cfg.Upstreams[0].Servers {
		b, err := demo.Start(fmt.Sprintf("b%d", i+1), s.Addr)
		if err != nil {
			fmt.Fprintf(stderr, "tollgate demo: %s\n", err)
			return 1
		}
		defer b.Close()
		backends = append(backends, b)
	}
	const controlAddr = "127.0.0.1:9902"
	control := &http.Server{Addr: controlAddr, Handler: demo.NewControl(backends)}
	go control.ListenAndServe()
	defer control.Close()

	fmt.Fprintf(stderr, demoHelp, controlAddr, controlAddr, controlAddr, controlAddr)
	return serve(cfg, nil, outputs(*accessLog, *closeLog, stdout), newLogger(stderr))
}

const demoHelp = `tollgate demo: three backends (b1 weight 2, b2, b3 backup) behind tollgate.

  proxy     http://127.0.0.1:8080      admin  http://127.0.0.1:9901
  backends  127.0.0.1:3001-3003        switchboard http://%s

Try:
  curl -i 127.0.0.1:8080/                     # b1, b1, b2, … (smooth weighted round robin)
  curl '%s/set?server=b1&mode=reset'          # b1 resets connections:
  curl -i 127.0.0.1:8080/                     #   retried on b2, b1 marked failed for 10s
  curl '%s/set?server=b2&mode=hang'           # b2 hangs: 504 after proxy_read_timeout (5s)
  curl '%s'                                   # backends, modes (healthy slow 5xx reset hang), hits
  curl 127.0.0.1:9901/debug/upstreams         # balancer and pool state
  curl -s 127.0.0.1:9901/metrics | grep ^tollgate_

Access log lines (JSON) follow on stdout. Ctrl-C stops.

`
