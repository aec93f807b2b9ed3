// Command tollgate is a reverse-proxy sidecar: it admits, protects, retries
// and explains every request between an edge (Nginx) and backend services.
//
// This file holds subcommands, flags, signal handling and wiring only; the
// logic lives in the proxy, config, limiter and breaker packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/proxy"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `tollgate — a reverse-proxy sidecar that explains every closed connection

Usage:
  tollgate run   [-c FILE]                    run with a config file (default ./tollgate.yaml)
  tollgate proxy --listen ADDR --to URL[,URL]  proxy without a config file
  tollgate check [-c FILE]                    validate a config file, list every error
  tollgate demo                               run demo backends behind a tollgate
  tollgate version                            print the version

Run "tollgate COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "proxy":
		return cmdProxy(rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "tollgate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tollgate: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

// newFlags returns a flag set whose --help prints the command's synopsis.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tollgate %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns an exit code when the command must stop
// (help asked for: 0, bad flags: 2).
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return 2, true
	}
	return 0, false
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "run [-c FILE]", stderr)
	path := fs.String("c", "tollgate.yaml", "config file")
	accessLog := fs.Bool("access-log", true, "write one JSON access log line per request to stdout")
	closeLog := fs.Bool("close-log", true, "write one JSON close record per connection close to stdout")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	log := newLogger(stderr)
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "tollgate: %s\n", err)
		return 1
	}
	reload := func() (*config.Config, error) { return config.Load(*path) }
	return serve(cfg, reload, outputs(*accessLog, *closeLog, stdout), log)
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "check [-c FILE]", stderr)
	path := fs.String("c", "tollgate.yaml", "config file")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	cfg, err := config.Load(*path)
	if err == nil {
		err = proxy.CheckConfig(cfg) // limit_req_zone keys
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s\n", err)
		return 1
	}
	for _, w := range config.Warnings(cfg) {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

// outputs sends the access log and close records, each turned on, to
// stdout as JSON lines.
func outputs(access, closes bool, stdout io.Writer) proxy.Options {
	var o proxy.Options
	if access {
		o.AccessLog = stdout
	}
	if closes {
		o.CloseLog = stdout
	}
	return o
}

func newLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(stderr, nil))
}

// serve runs a proxy until SIGTERM or SIGINT, reloading on SIGHUP. A config
// that fails to load at reload is reported and the running one kept.
func serve(cfg *config.Config, reload func() (*config.Config, error), opts proxy.Options, log *slog.Logger) int {
	opts.Log = log
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		log.Error("config rejected", "error", err.Error())
		return 1
	}
	if err := srv.Start(); err != nil {
		log.Error("start failed", "error", err)
		return 1
	}
	log.Info("tollgate started", "version", version, "listen", fmt.Sprint(srv.Addrs()), "admin", fmt.Sprint(srv.AdminAddr()))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if reload == nil {
				log.Warn("reload: no config file to reload")
				continue
			}
			next, err := reload()
			if err != nil {
				srv.ReloadFailed()
				log.Error("reload rejected; the running config stays", "error", err.Error())
				continue
			}
			if err := srv.Reload(next); err != nil {
				log.Error("reload rejected; the running config stays", "error", err.Error())
				continue
			}
			log.Info("reloaded", "config", next.Path)
			continue
		}
		break
	}
	log.Info("shutting down", "drain_timeout", cfg.ShutdownTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown cut in-flight requests", "error", err)
	}
	return 0
}
