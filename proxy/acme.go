package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/tollgate-proxy/tollgate/config"
	"go.uber.org/zap"
)

// acmeManager obtains and renews the certificates of one HTTPS listener
// with ACME (tls.domains, tls.on_demand) through certmagic. Its cache
// holds the certificates handshakes are served from, and runs the
// background maintenance (renewal) until stop.
//
// Names in domains are managed by one certmagic config, on-demand names by
// a second one sharing the cache: certmagic renews the certificates of an
// on-demand config only at handshakes, never in the background, so a
// listener with both must keep its domains out of the on-demand config.
type acmeManager struct {
	domains  []string
	cache    *certmagic.Cache
	managed  *certmagic.Config // domains; nil when there are none
	onDemand *certmagic.Config // names on_demand permits; nil without on_demand
	issuers  []*certmagic.ACMEIssuer
}

// acmeTuning holds what tests change about ACME that the config file does
// not; the zero value is production's.
type acmeTuning struct {
	noHTTP01, noTLSALPN01 bool // turn one challenge type off
	// renewalWindowRatio is the share of a certificate's lifetime before
	// expiry in which it is renewed. Zero: certmagic's (1/3).
	renewalWindowRatio float64
}

// acmePorts are tollgate's own listeners that answer ACME challenges.
// certmagic is pointed at them so that its attempt to open a challenge
// listener finds the port taken and relies on tollgate's: it never opens
// a socket of its own.
type acmePorts struct {
	host    string // the HTTPS listener's host
	tlsPort int    // the HTTPS listener's port: TLS-ALPN-01
	// httpPort is the first plain listener's port: HTTP-01. Zero: no plain
	// listener, HTTP-01 off.
	httpPort int
}

// askTimeout bounds the wait for an on_demand.ask answer.
const askTimeout = 10 * time.Second

// newACMEManager builds the manager for one listener's tls block. Nothing
// is obtained before start.
func newACMEManager(t *config.ListenerTLS, ports acmePorts, log *zap.Logger, tune acmeTuning) (*acmeManager, error) {
	var roots *x509.CertPool
	if t.ACMECARoot != "" {
		pem, err := os.ReadFile(t.ACMECARoot)
		if err != nil {
			return nil, fmt.Errorf("acme_ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme_ca_root %s: no PEM certificate in it", t.ACMECARoot)
		}
	}
	m := &acmeManager{domains: t.Domains}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(c certmagic.Certificate) (*certmagic.Config, error) { return m.configFor(c.Names), nil },
		Logger:           log,
	})
	newConfig := func(od *certmagic.OnDemandConfig) *certmagic.Config {
		magic := certmagic.New(m.cache, certmagic.Config{
			RenewalWindowRatio: tune.renewalWindowRatio,
			OnDemand:           od,
			Logger:             log,
		})
		if t.Storage != "" {
			magic.Storage = &certmagic.FileStorage{Path: t.Storage}
		}
		iss := certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
			CA:                      orDefault(t.ACMECA, config.DefaultACMECA),
			Email:                   t.Email,
			Agreed:                  true, // configuring ACME is agreeing; documented
			TrustedRoots:            roots,
			DisableHTTPChallenge:    ports.httpPort == 0 || tune.noHTTP01,
			DisableTLSALPNChallenge: tune.noTLSALPN01,
			ListenHost:              ports.host,
			AltHTTPPort:             ports.httpPort,
			AltTLSALPNPort:          ports.tlsPort,
			Logger:                  log,
		})
		magic.Issuers = []certmagic.Issuer{iss}
		m.issuers = append(m.issuers, iss)
		return magic
	}
	if len(t.Domains) > 0 {
		m.managed = newConfig(nil)
	}
	if t.OnDemand != nil {
		m.onDemand = newConfig(&certmagic.OnDemandConfig{DecisionFunc: onDemandPolicy(t.OnDemand)})
	}
	return m, nil
}

// orDefault returns s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// configFor is the certmagic config that manages a certificate for names.
func (m *acmeManager) configFor(names []string) *certmagic.Config {
	if m.onDemand == nil {
		return m.managed
	}
	for _, n := range names {
		if m.isDomain(n) {
			return m.managed
		}
	}
	return m.onDemand
}

func (m *acmeManager) isDomain(name string) bool {
	return slices.ContainsFunc(m.domains, func(d string) bool { return strings.EqualFold(d, name) })
}

// tlsConfig is the listener's TLS configuration: certificates from the
// cache (obtained at the handshake for a name on_demand permits), and the
// acme-tls/1 protocol so the CA's TLS-ALPN-01 handshakes reach certmagic.
func (m *acmeManager) tlsConfig(http2 bool) *tls.Config {
	conf := serverTLS(http2, true)
	conf.GetCertificate = m.getCertificate
	return conf
}

func (m *acmeManager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.onDemand != nil && (m.managed == nil || !m.isDomain(strings.TrimSuffix(hello.ServerName, "."))) {
		return m.onDemand.GetCertificate(hello)
	}
	return m.managed.GetCertificate(hello)
}

// start loads or obtains the domains' certificates in the background.
// It fails only for problems found at once (an unusable storage).
func (m *acmeManager) start(ctx context.Context) error {
	if m.managed == nil {
		return nil
	}
	return m.managed.ManageAsync(ctx, m.domains)
}

// stop ends the background maintenance.
func (m *acmeManager) stop() { m.cache.Stop() }

// onDemandPolicy is certmagic's decision whether a name may get a
// certificate at handshake time: a name in allow may; another one only if
// ask answers 200 for it.
func onDemandPolicy(od *config.OnDemand) func(ctx context.Context, name string) error {
	return func(ctx context.Context, name string) error {
		if slices.ContainsFunc(od.Allow, func(a string) bool { return strings.EqualFold(a, name) }) {
			return nil
		}
		if od.Ask == "" {
			return fmt.Errorf("%q: %w", name, errOnDemandRefused)
		}
		return askOnDemand(ctx, od.Ask, name)
	}
}

// askOnDemand asks the on_demand.ask URL whether name may get a
// certificate: GET ask?domain=name, permitted on 200.
func askOnDemand(ctx context.Context, ask, name string) error {
	u, err := url.Parse(ask)
	if err != nil {
		return fmt.Errorf("on_demand ask: %w", err)
	}
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("on_demand ask: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("on_demand ask for %q: %w", name, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%q: ask answered %d: %w", name, resp.StatusCode, errOnDemandRefused)
	}
	return nil
}

// errOnDemandRefused is the answer for a name on_demand does not permit.
var errOnDemandRefused = errors.New("not permitted by on_demand")

// acmeState is the server's ACME managers, one per HTTPS listener with
// domains or on_demand, and the context their work runs under.
type acmeState struct {
	managers []*acmeManager
	ctx      context.Context
	cancel   context.CancelFunc
	stopped  sync.Once
}

// acmeListenerTLS builds the ACME manager of listener i and returns its
// TLS configuration. listeners are the bound sockets, in config order.
func (s *Server) acmeListenerTLS(cfg *config.Config, i int, listeners []net.Listener, tune acmeTuning) (*tls.Config, error) {
	if s.acme.ctx == nil {
		s.acme.ctx, s.acme.cancel = context.WithCancel(context.Background())
	}
	host, port, _ := net.SplitHostPort(listeners[i].Addr().String())
	ports := acmePorts{host: host}
	ports.tlsPort, _ = strconv.Atoi(port)
	for j, l := range cfg.Listen {
		if l.TLS == nil {
			_, p, _ := net.SplitHostPort(listeners[j].Addr().String())
			ports.httpPort, _ = strconv.Atoi(p)
			break
		}
	}
	m, err := newACMEManager(cfg.Listen[i].TLS, ports, zap.New(newSlogCore(s.log.Handler())), tune)
	if err != nil {
		return nil, err
	}
	s.acme.managers = append(s.acme.managers, m)
	return m.tlsConfig(cfg.Listen[i].HTTP2Enabled()), nil
}

// start starts every manager's work.
func (a *acmeState) start() error {
	for _, m := range a.managers {
		if err := m.start(a.ctx); err != nil {
			return fmt.Errorf("acme: %w", err)
		}
	}
	return nil
}

// stop cancels the managers' work and ends their maintenance. Stopping
// again does nothing.
func (a *acmeState) stop() {
	a.stopped.Do(func() {
		if a.cancel != nil {
			a.cancel()
		}
		for _, m := range a.managers {
			m.stop()
		}
	})
}

// sameTLS reports whether two configs' listeners have the same tls
// blocks. Certificates and ACME managers are set up at start only.
func sameTLS(a, b *config.Config) bool {
	if len(a.Listen) != len(b.Listen) {
		return false
	}
	for i := range a.Listen {
		if !reflect.DeepEqual(a.Listen[i].TLS, b.Listen[i].TLS) {
			return false
		}
	}
	return true
}
