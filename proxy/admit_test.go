package proxy

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/tollgate-proxy/tollgate/config"
	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

func TestLimitRatePolicy(t *testing.T) {
	for _, tt := range []struct {
		rate string
		want string
	}{
		{"10r/s", `"z";q=10;w=1`},
		{"1r/s", `"z";q=1;w=1`},
		{"30r/m", `"z";q=30;w=60`}, // 500 thousandths: exact per minute
		{"90r/m", `"z";q=90;w=60`},
		{"6r/m", `"z";q=6;w=60`},
		{"4r/m", `"z";q=1;w=16`},    // 66: 3.96/min; 1 per 16 s is closer than 3 per minute
		{"1r/m", `"z";q=1;w=63`},    // 16: one per 62.5 s
		{"2r/m", `"z";q=1;w=31`},    // 33
		{"100r/m", `"z";q=99;w=60`}, // 1666: 99.96/min
	} {
		r, err := config.ParseRate(tt.rate)
		if err != nil {
			t.Fatal(err)
		}
		if got := ratePolicy("z", r.PerSecondMilli); got != tt.want {
			t.Errorf("%s (%d): %s; want %s", tt.rate, r.PerSecondMilli, got, tt.want)
		}
	}
	if got := sfString(`a"b\c` + "\x01é"); got != `"a\"b\\c???"` {
		t.Errorf("sfString: %s", got)
	}
}

func TestLimitLogLevels(t *testing.T) {
	for _, tt := range []struct {
		name          string
		reject, delay slog.Level
	}{
		{"info", slog.LevelInfo, slog.LevelInfo}, // Nginx: info stays info
		{"notice", levelNotice, slog.LevelInfo},
		{"warn", slog.LevelWarn, levelNotice},
		{"error", slog.LevelError, slog.LevelWarn},
	} {
		if r, d := logLevels(tt.name); r != tt.reject || d != tt.delay {
			t.Errorf("%s: %v/%v; want %v/%v", tt.name, r, d, tt.reject, tt.delay)
		}
	}
}

// logAllowed lets one line a second through per zone and counts the rest.
func TestLimitLogThrottle(t *testing.T) {
	var z limitZone
	steps := []struct {
		now      int64
		ok       bool
		withheld int64
	}{
		{0, true, 0}, {1, false, 0}, {999, false, 0}, {1000, true, 2}, {1500, false, 0}, {5000, true, 1},
	}
	for _, s := range steps {
		held, ok := z.logAllowed(s.now)
		if ok != s.ok || held != s.withheld {
			t.Errorf("at %d ms: ok %v held %d; want %v %d", s.now, ok, held, s.ok, s.withheld)
		}
	}
}

// The shared-key watch trips once per window when one key makes more than
// half of at least sharedKeyMin requests, and logs at most once per
// sharedKeyLogEach.
func TestLimitSharedKeyWatch(t *testing.T) {
	var w sharedKeyWatch
	edge, other := []byte{127, 0, 0, 1}, []byte{10, 0, 0, 1}
	feed := func(now int64, n int, key []byte) (trips int, last sharedKeyReport) {
		for range n {
			if r, ok := w.observe(key, now); ok {
				trips++
				last = r
			}
		}
		return trips, last
	}
	if n, _ := feed(0, sharedKeyMin-1, edge); n != 0 {
		t.Fatal("tripped below sharedKeyMin requests")
	}
	n, r := feed(10, 1, edge)
	if n != 1 || r.hits != sharedKeyMin || r.total != sharedKeyMin || !r.log || displayKey(r.key, true) != "127.0.0.1" {
		t.Fatalf("at %d requests of one key: trips %d report %+v; want one, logged", sharedKeyMin, n, r)
	}
	if n, _ := feed(20, 50, edge); n != 0 {
		t.Error("tripped twice in one window")
	}
	// Next window, an even mix of two keys: never a majority.
	for i := range 2 * sharedKeyMin {
		key := edge
		if i%2 == 1 {
			key = other
		}
		if _, ok := w.observe(key, sharedKeyWindow+int64(i)); ok {
			t.Fatalf("a 50/50 mix tripped at request %d", i)
		}
	}
	// Another window dominated again: counted, not logged (within 10 min).
	if n, r := feed(2*sharedKeyWindow, sharedKeyMin, edge); n != 1 || r.log {
		t.Errorf("second trip: %d trips, log %v; want 1, not logged", n, r.log)
	}
	if n, r := feed(10+sharedKeyLogEach, sharedKeyMin, edge); n != 1 || !r.log {
		t.Errorf("after %d ms: %d trips, log %v; want logged again", sharedKeyLogEach, n, r.log)
	}
}

// $http_x_forwarded_for and $http_cookie join every line as Nginx 1.22
// does; any other header is its first line.
func TestAdmitHeader(t *testing.T) {
	a := &admission{header: h1.Header{
		{Name: "X-Forwarded-For", Value: "192.0.2.1"},
		{Name: "Cookie", Value: "a=1"},
		{Name: "X-Api-Key", Value: "first"},
		{Name: "x-forwarded-for", Value: "192.0.2.2, 192.0.2.3"},
		{Name: "cookie", Value: "b=2"},
		{Name: "X-API-KEY", Value: "second"},
		{Name: "X-One", Value: "only"},
	}}
	for name, want := range map[string]string{
		"X-Forwarded-For": "192.0.2.1, 192.0.2.2, 192.0.2.3",
		"Cookie":          "a=1; b=2",
		"X-Api-Key":       "first",
		"X-One":           "only",
		"X-None":          "",
	} {
		if got := a.Header(name); got != want {
			t.Errorf("Header(%s) = %q; want %q", name, got, want)
		}
	}
}

// admitFixture is a session and request on a route with two limits that
// always pass (a per-IP zone and $http_x_api_key:$server_name), without a
// socket: for the allocation test and the benchmark.
func admitFixture(t testing.TB, realIP string) (*session, *runtime, *requestState) {
	// A rate and burst no loop can exceed within a millisecond.
	zones := zoneYAML("ip", "$binary_remote_addr", "1m", "1000000000r/s") +
		zoneYAML("key", "$http_x_api_key:$server_name", "1m", "1000000000r/s")
	cfg := testConfig(t, realIP+limitYAML("127.0.0.1:1", zones,
		"    limit_req:\n      - zone: ip\n        burst: 100000\n        nodelay: true\n"+
			"      - zone: key\n        burst: 100000\n        nodelay: true\n"))
	s, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rt := s.rt.Load()
	ss := &session{s: s}
	ss.peer = netip.MustParseAddr("127.0.0.1")
	ss.peerText = "127.0.0.1"
	ss.req.Host = "api.example:8080"
	ss.req.Header = h1.Header{{Name: "X-Forwarded-For", Value: "192.0.2.9"}, {Name: "X-Api-Key", Value: "k1"}}
	st := &requestState{route: rt.routes.match("api.example", "/")}
	rt.fillForwarding(&st.fwd, &ss.req, ss, &s.ids)
	if !ss.admit(rt, st) {
		t.Fatal("not admitted")
	}
	return ss, rt, st
}

const realIPXFF = "real_ip:\n  set_real_ip_from: [127.0.0.1]\n  real_ip_header: X-Forwarded-For\n"

// Admitting a request that passes allocates nothing once the session's
// key buffers are warm, with and without the shared-key watch.
func TestAdmitAllocs(t *testing.T) {
	for _, realIP := range []string{"", realIPXFF} {
		ss, rt, st := admitFixture(t, realIP)
		if allocs := testing.AllocsPerRun(1000, func() { ss.admit(rt, st) }); allocs != 0 {
			t.Errorf("real_ip %v: %v allocations per admitted request; want 0", realIP != "", allocs)
		}
		if st.limitReqStatus != "PASSED" {
			t.Errorf("status %q", st.limitReqStatus)
		}
	}
}

// BenchmarkAdmit is the cost limit_req adds to a request: two keys, two
// zones, one hot key each.
func BenchmarkAdmit(b *testing.B) {
	for _, bc := range []struct{ name, realIP string }{{"real_ip", realIPXFF}, {"no_real_ip", ""}} {
		b.Run(bc.name, func(b *testing.B) {
			ss, rt, st := admitFixture(b, bc.realIP)
			b.ReportAllocs()
			for b.Loop() {
				ss.admit(rt, st)
			}
		})
	}
}
