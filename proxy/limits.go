package proxy

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/limiter"
)

// limitZone is one limit_req_zone as the server keeps it: the engine's zone
// and what tollgate adds around it. It outlives the runtimes that use it
// while its name, key and size stay (see limitState.build).
type limitZone struct {
	*limiter.Zone
	// total holds tollgate_limit_req_total{zone, status}, indexed by
	// limiter.Status, so that counting a request formats no label.
	total [limiter.RejectedDryRun + 1]prometheus.Counter
	// sharedKey is tollgate_limit_req_shared_key_warnings_total{zone}.
	sharedKey prometheus.Counter
	// usesAddr: the key names the client address, so the shared-key
	// watch applies (see sharedKeyWatch).
	usesAddr bool

	logNext    atomic.Int64 // ms before which the zone logs no limit_req line
	suppressed atomic.Int64 // lines held back since the last one logged
	watch      sharedKeyWatch
}

// logEvery is the least time between two limit_req log lines of one zone,
// so that a flood of rejections cannot flood the log.
const logEvery = 1000 // ms

// logAllowed reports whether the zone may log a limit_req line at now (ms),
// at most one per logEvery; when it may, it also returns how many lines
// were held back since the last one.
func (z *limitZone) logAllowed(now int64) (suppressed int64, ok bool) {
	next := z.logNext.Load()
	if now < next || !z.logNext.CompareAndSwap(next, now+logEvery) {
		z.suppressed.Add(1)
		return 0, false
	}
	return z.suppressed.Swap(0), true
}

// limitState is the server's limit_req state that outlives reloads: the
// zones by name, and the monotonic clock their times are read from.
type limitState struct {
	epoch time.Time             // time 0 of nowMs; carries a monotonic reading
	zones map[string]*limitZone // guarded by Server.mu
}

// nowMs is the limit_req clock: ms since the server was created, from the
// monotonic clock, so a wall-clock step never drains or fills a bucket.
func (ls *limitState) nowMs() int64 { return time.Since(ls.epoch).Milliseconds() }

// build returns cfg's zones in config order. A zone whose name, key (with
// its ipv6_prefix) and size are unchanged keeps its state and takes the new
// rate, as Nginx keeps a shared zone of the same name and size across a
// reload; any other is a new, empty zone. (Nginx refuses a reload that
// changes a zone's key; tollgate starts the zone afresh.) Zones cfg no
// longer declares are forgotten. keys are the compiled keys of
// zoneKeys(cfg). Called with Server.mu held, or before any concurrency.
func (ls *limitState) build(cfg *config.Config, keys []limiter.Key, m *limitMetrics) []*limitZone {
	next := make(map[string]*limitZone, len(keys))
	out := make([]*limitZone, len(keys))
	for i := range cfg.LimitReqZones {
		zc := &cfg.LimitReqZones[i]
		z := ls.zones[zc.Name]
		if z != nil && sameKey(z.Key(), keys[i]) && z.Size() == zc.Size.Bytes {
			z.SetRate(zc.Rate.PerSecondMilli)
		} else {
			z = m.newZone(limiter.NewZone(zc.Name, keys[i], zc.Size.Bytes, zc.Rate.PerSecondMilli))
		}
		next[zc.Name] = z
		out[i] = z
	}
	ls.zones = next
	return out
}

func sameKey(a, b limiter.Key) bool {
	return a.String() == b.String() && a.IPv6Prefix() == b.IPv6Prefix()
}

// CheckConfig reports the problems in cfg that only the proxy sees, as
// *config.Errors: limit_req_zone keys that name unknown variables or are
// malformed (config cannot import the limiter that compiles them).
// config.Load has checked everything else. New and Reload refuse such a
// config; `tollgate check` reports it.
func CheckConfig(cfg *config.Config) error {
	_, err := zoneKeys(cfg)
	return err
}

// zoneKeys compiles the key of every limit_req_zone of cfg, in config
// order, or returns every problem found.
func zoneKeys(cfg *config.Config) ([]limiter.Key, error) {
	keys := make([]limiter.Key, len(cfg.LimitReqZones))
	var errs []config.Error
	for i, zc := range cfg.LimitReqZones {
		k, err := limiter.ParseKey(zc.Key)
		if err != nil {
			errs = append(errs, config.Error{File: cfg.Path,
				Path: fmt.Sprintf("limit_req_zones[%d].key", i), Msg: err.Error()})
			continue
		}
		keys[i] = k.WithIPv6Prefix(zc.IPv6Prefix)
	}
	if len(errs) > 0 {
		return nil, &config.Errors{List: errs}
	}
	return keys, nil
}

// routeLimits are a route's limit_req rules, resolved for the data path.
type routeLimits struct {
	rules  []limiter.Rule
	zones  []*limitZone // zones[i] holds rules[i].Zone
	policy []string     // RateLimit-Policy of zones[i]
	status int          // limit_req_status
	dryRun bool
	// level logs rejections, delayLevel delays (limit_req_log_level).
	level, delayLevel slog.Level
}

// newRouteLimits resolves rc's limit_req rules against the runtime's zones
// (config order); nil when the route has none.
func newRouteLimits(cfg *config.Config, rc *config.Route, zones []*limitZone) *routeLimits {
	if len(rc.LimitReq) == 0 {
		return nil
	}
	rl := &routeLimits{status: rc.LimitReqStatus, dryRun: rc.LimitReqDryRun}
	rl.level, rl.delayLevel = logLevels(rc.LimitReqLogLevel)
	for _, l := range rc.LimitReq {
		var z *limitZone
		for i := range cfg.LimitReqZones {
			if cfg.LimitReqZones[i].Name == l.Zone {
				z = zones[i]
			}
		}
		if z == nil {
			continue // config.Load refuses an unknown zone
		}
		rl.rules = append(rl.rules, limiter.Rule{Zone: z.Zone,
			Burst: l.BurstOrZero(), Delay: l.DelayOrZero(), NoDelay: l.NoDelay})
		rl.zones = append(rl.zones, z)
		rl.policy = append(rl.policy, ratePolicy(z.Name(), z.Rate()))
	}
	return rl
}

// levelNotice is Nginx's notice, between info and warn.
const levelNotice = slog.LevelInfo + 2

// logLevels maps limit_req_log_level to the levels of rejections and
// delays. Delays log one level lower, but never below info
// (ngx_http_limit_req_merge_conf: info stays info).
func logLevels(name string) (reject, delay slog.Level) {
	switch name {
	case "info":
		return slog.LevelInfo, slog.LevelInfo
	case "notice":
		return levelNotice, slog.LevelInfo
	case "warn":
		return slog.LevelWarn, levelNotice
	}
	return slog.LevelError, slog.LevelWarn
}

// ratePolicy is the RateLimit-Policy item of a zone
// (draft-ietf-httpapi-ratelimit-headers-10 §3): the zone's name as a
// String, q the requests per window of w seconds. Nginx's rate is a leaky
// bucket in thousandths of a request per second; the policy states that
// sustained rate, exactly when it can: whole r/s as q=N;w=1, exact r/m as
// q=N;w=60. An r/m rate Nginx truncated (4r/m is 66 thousandths a second)
// gets the closer of q=⌊rate·60⌋;w=60 and q=1;w=⌈1/rate⌉, both just below
// the real rate (4r/m: q=1;w=16). The burst is not in the policy: the
// draft has no parameter for it.
func ratePolicy(zone string, rateMilli int64) string {
	q, w := rateMilli/1000, int64(1)
	switch {
	case rateMilli%1000 == 0:
	case rateMilli*60%1000 == 0:
		q, w = rateMilli*60/1000, 60
	default:
		q, w = rateMilli*60/1000, 60
		// One request per ⌈1000/rate⌉ s, if that states more of the rate.
		if w1 := (1000 + rateMilli - 1) / rateMilli; q*w1 < w {
			q, w = 1, w1
		}
	}
	return sfString(zone) + ";q=" + strconv.FormatInt(q, 10) + ";w=" + strconv.FormatInt(w, 10)
}

// sfString writes s as a Structured Field String (RFC 9651 §3.3.3):
// quoted, with '"' and '\' escaped; bytes outside printable ASCII, which
// a String cannot hold, become '?'.
func sfString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// deciding returns the zone a decision is counted and logged under: the
// zone that rejected or delayed the request, else the last zone whose key
// applied (the one Nginx charged as it checked), or nil when none did.
func (rl *routeLimits) deciding(d limiter.Decision, keys [][]byte) *limitZone {
	if d.Zone != nil {
		for _, z := range rl.zones {
			if z.Zone == d.Zone {
				return z
			}
		}
	}
	for i := len(rl.zones) - 1; i >= 0; i-- {
		if i < len(keys) && len(keys[i]) > 0 {
			return rl.zones[i]
		}
	}
	return nil
}
