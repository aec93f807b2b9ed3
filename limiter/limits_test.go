package limiter

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func check(rules []Rule, now int64, keys ...string) Decision {
	k := make([][]byte, len(keys))
	for i, s := range keys {
		k[i] = []byte(s)
	}
	return Check(rules, k, now, false)
}

func wantDecision(t *testing.T, d Decision, status Status, delay int64, zone *Zone) {
	t.Helper()
	if d.Status != status || d.Delay != time.Duration(delay)*time.Millisecond || d.Zone != zone {
		name := func(z *Zone) string {
			if z == nil {
				return "nil"
			}
			return z.name
		}
		t.Errorf("got %v delay %v zone %s; want %v delay %dms zone %s",
			d.Status, d.Delay, name(d.Zone), status, delay, name(zone))
	}
}

func wantExcess(t *testing.T, z *Zone, key string, want int64) {
	t.Helper()
	if e, _ := stateOf(t, z, key); e != want {
		t.Errorf("zone %s key %q: excess %d; want %d", z.name, key, e, want)
	}
}

func TestTwoLimitsRejectionChargesNothing(t *testing.T) {
	slow := NewZone("slow", Key{}, 1<<20, r1ps)
	fast := NewZone("fast", Key{}, 1<<20, r10ps)
	rules := []Rule{{Zone: slow, Burst: 5}, {Zone: fast, NoDelay: true}}

	wantDecision(t, check(rules, 0, "a", "a"), Passed, 0, nil)
	wantExcess(t, slow, "a", 0)
	wantExcess(t, fast, "a", 0)

	// fast rejects: slow, only checked so far, is not charged.
	d := check(rules, 0, "a", "a")
	wantDecision(t, d, Rejected, 0, fast)
	if d.Excess != 1000 || d.RetryAfter != 100*time.Millisecond {
		t.Errorf("rejection: excess %d retry %v; want 1000 100ms", d.Excess, d.RetryAfter)
	}
	wantExcess(t, slow, "a", 0)
	wantExcess(t, fast, "a", 0)

	// Both pass at 100 ms; slow is charged after the lookups and delays.
	wantDecision(t, check(rules, 100, "a", "a"), Delayed, 900, slow)
	wantExcess(t, slow, "a", 900)

	// The first limit rejects: the last one is not even looked at.
	tight := NewZone("tight", Key{}, 1<<20, r1ps)
	rules = []Rule{{Zone: tight}, {Zone: fast, Burst: 100}}
	check(rules, 1000, "b", "b")
	wantDecision(t, check(rules, 1000, "b", "b"), Rejected, 0, tight)
	wantExcess(t, fast, "b", 0)
	if _, last := stateOf(t, fast, "b"); last != 1000 {
		t.Errorf("fast b last %d; want 1000", last)
	}
}

func TestTwoLimitsMaxDelay(t *testing.T) {
	one := NewZone("one", Key{}, 1<<20, r1ps)
	two := NewZone("two", Key{}, 1<<20, 2000)
	oneB := NewZone("oneB", Key{}, 1<<20, r1ps)
	tests := []struct {
		name  string
		rules []Rule
		delay int64
		zone  *Zone
	}{
		{"earlier limit has the larger delay", []Rule{{Zone: one, Burst: 10}, {Zone: two, Burst: 10}}, 1000, one},
		{"last limit has the larger delay", []Rule{{Zone: two, Burst: 10}, {Zone: one, Burst: 10}}, 1000, one},
		{"a tie goes to the later limit", []Rule{{Zone: one, Burst: 10}, {Zone: oneB, Burst: 10}}, 1000, oneB},
		{"nodelay limit adds no delay", []Rule{{Zone: one, Burst: 10}, {Zone: two, Burst: 10, NoDelay: true}}, 1000, one},
		{"delay=N on the slow limit", []Rule{{Zone: one, Burst: 10, Delay: 1}, {Zone: two, Burst: 10}}, 500, two},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := string(rune('a' + i))
			wantDecision(t, check(tt.rules, 0, key, key), Passed, 0, nil)
			d := check(tt.rules, 0, key, key)
			wantDecision(t, d, Delayed, tt.delay, tt.zone)
			if d.Excess != 1000 {
				t.Errorf("excess %d; want 1000", d.Excess)
			}
		})
	}
}

// A state created by a check-only lookup of a request that a later limit
// rejects stays in the zone, fully drained (Nginx stores last = 0): the
// key's next request starts afresh instead of counting the rejected one.
func TestUnchargedNewStateIsDrained(t *testing.T) {
	perKey := NewZone("perkey", Key{}, 1<<20, r1ps)
	global := NewZone("global", Key{}, 1<<20, r10ps)
	rules := []Rule{{Zone: perKey, Burst: 5}, {Zone: global, NoDelay: true}}
	wantDecision(t, check(rules, 0, "x", "all"), Passed, 0, nil)
	wantDecision(t, check(rules, 0, "y", "all"), Rejected, 0, global)
	if perKey.Len() != 2 {
		t.Errorf("perkey holds %d keys; want 2 (x, and y from the rejected request)", perKey.Len())
	}
	wantExcess(t, perKey, "y", 0)
	// Were y stored as charged at t=0, this would be delayed 900 ms.
	wantDecision(t, check(rules, 100, "y", "all"), Passed, 0, nil)
	wantExcess(t, perKey, "y", 0)
	wantDecision(t, check(rules, 200, "y", "all"), Delayed, 900, perKey)
}

func TestDryRun(t *testing.T) {
	z := NewZone("z", Key{}, 1<<20, r10ps)
	nodelay := []Rule{{Zone: z, NoDelay: true}}
	d := check(nodelay, 0, "a")
	wantDecision(t, d, Passed, 0, nil)
	d = Check(nodelay, [][]byte{[]byte("a")}, 0, true)
	wantDecision(t, d, RejectedDryRun, 0, z)
	if d.Excess != 1000 || d.RetryAfter != 100*time.Millisecond {
		t.Errorf("dry-run rejection: excess %d retry %v; want 1000 100ms", d.Excess, d.RetryAfter)
	}
	wantExcess(t, z, "a", 0) // rejected, even in dry run: not charged

	delayed := []Rule{{Zone: z, Burst: 5}}
	d = Check(delayed, [][]byte{[]byte("a")}, 0, true)
	wantDecision(t, d, DelayedDryRun, 0, z)
	if d.Excess != 1000 {
		t.Errorf("dry-run delay: excess %d; want 1000", d.Excess)
	}
	wantExcess(t, z, "a", 1000) // charged as usual

	d = Check(delayed, [][]byte{[]byte("b")}, 0, true)
	wantDecision(t, d, Passed, 0, nil)
}

func TestEmptyKeys(t *testing.T) {
	a := NewZone("a", Key{}, 1<<20, r1ps)
	b := NewZone("b", Key{}, 1<<20, r1ps)
	rules := []Rule{{Zone: a, Burst: 5}, {Zone: b, Burst: 5}}
	if d := check(rules, 0, "", ""); d != (Decision{}) || d.Status.String() != "" {
		t.Errorf("all keys empty: %+v; want the zero Decision (Unset)", d)
	}
	if d := Check(rules, nil, 0, false); d.Status != Unset {
		t.Errorf("no keys: %v; want Unset", d.Status)
	}
	if a.Len()+b.Len() != 0 {
		t.Errorf("empty keys stored states")
	}
	// The last key empty: the earlier limit is charged in the accounting step.
	wantDecision(t, check(rules, 0, "x", ""), Passed, 0, nil)
	wantDecision(t, check(rules, 0, "x", ""), Delayed, 1000, a)
	wantExcess(t, a, "x", 1000)
	// A middle key empty: skipped.
	wantDecision(t, check(rules, 0, "", "y"), Passed, 0, nil)
	if b.Len() != 1 || a.Len() != 1 {
		t.Errorf("lens %d %d; want 1 1", a.Len(), b.Len())
	}
	// Keys over 65535 bytes are skipped, as Nginx skips them.
	long := strings.Repeat("k", maxKeyLen+1)
	if d := check(rules[:1], 0, long); d.Status != Unset {
		t.Errorf("over-long key: %v; want Unset", d.Status)
	}
	// A nil zone skips its rule.
	if d := check([]Rule{{}}, 0, "x"); d.Status != Unset {
		t.Errorf("nil zone: %v; want Unset", d.Status)
	}
}

func TestLongKeysAreHashed(t *testing.T) {
	z := NewZone("z", Key{}, 1<<20, r1ps)
	rules := []Rule{{Zone: z, NoDelay: true}}
	k1 := strings.Repeat("a", 40)
	k2 := strings.Repeat("a", 39) + "b"
	wantDecision(t, check(rules, 0, k1), Passed, 0, nil)
	wantDecision(t, check(rules, 0, k2), Passed, 0, nil)
	wantDecision(t, check(rules, 0, k1), Rejected, 0, z)
	// A 16-byte key equal to a long key's hash is a different key.
	sk, _ := z.t.makeKey([]byte(k1))
	wantDecision(t, check(rules, 0, string(sk.b[:])), Passed, 0, nil)
	if z.Len() != 3 {
		t.Errorf("len %d; want 3", z.Len())
	}
	if top := z.Top(1, 0); len(top) != 1 || !strings.HasPrefix(top[0].Key, "hash:") {
		t.Errorf("Top = %+v; want a hash: key", top)
	}
}

// keysOf lists a zone's keys from the LRU head to the tail.
func keysOf(z *Zone) string {
	var out []string
	for i := z.t.head; i >= 0; i = z.t.states[i].next {
		s := &z.t.states[i]
		out = append(out, string(s.key[:s.klen]))
	}
	return strings.Join(out, " ")
}

func TestEvictLRUWhenFull(t *testing.T) {
	z := newZoneStates(3, r1ps)
	rules := []Rule{{Zone: z, NoDelay: true}}
	check(rules, 0, "a")
	check(rules, 1, "b")
	check(rules, 2, "c")
	check(rules, 3, "a") // rejected, but the lookup still bumps a
	if got := keysOf(z); got != "a c b" {
		t.Fatalf("LRU order %q; want \"a c b\"", got)
	}
	wantDecision(t, check(rules, 4, "d"), Passed, 0, nil)
	if got := keysOf(z); got != "d a c" || z.Evictions() != 1 || z.Expired() != 0 {
		t.Errorf("after d: %q, %d evictions %d expired; want \"d a c\", 1, 0", got, z.Evictions(), z.Expired())
	}
	// An evicted key comes back as new.
	wantDecision(t, check(rules, 5, "b"), Passed, 0, nil)
	if got := keysOf(z); got != "b d a" {
		t.Errorf("after b: %q; want \"b d a\"", got)
	}
}

func TestExpireBeforeEveryNewKey(t *testing.T) {
	z := newZoneStates(10, r1ps)
	rules := []Rule{{Zone: z, Burst: 1000, NoDelay: true}}
	check(rules, 0, "a")
	check(rules, 1, "b")
	check(rules, 2, "c")
	// Not full, yet a new key frees at most 2 idle (≥ 60 s), drained tails.
	check(rules, 70000, "d")
	if got := keysOf(z); got != "d c" || z.Expired() != 2 {
		t.Errorf("got %q, %d expired; want \"d c\", 2", got, z.Expired())
	}
	// Idle exactly 60 s counts (d); 59.999 s does not (e).
	check(rules, 130000, "e")
	if got := keysOf(z); got != "e" {
		t.Errorf("at 130000: %q; want \"e\"", got)
	}
	check(rules, 189999, "f")
	if got := keysOf(z); got != "f e" {
		t.Errorf("at 189999: %q; want \"f e\"", got)
	}
}

func TestExpireStopsAtUndrainedTail(t *testing.T) {
	z := newZoneStates(3, r1ps)
	rules := []Rule{{Zone: z, Burst: 1000, NoDelay: true}}
	for range 100 {
		check(rules, 0, "a") // excess 99000: 99 s to drain
	}
	check(rules, 1, "b")
	check(rules, 2, "c")
	// a is idle 61 s but not drained: expiry stops there, though b and c
	// are expired. The zone is full: a is force-freed, then b and c expire.
	check(rules, 61000, "d")
	if got := keysOf(z); got != "d" || z.Evictions() != 1 || z.Expired() != 2 {
		t.Errorf("got %q, %d evictions, %d expired; want \"d\", 1, 2", got, z.Evictions(), z.Expired())
	}
}

// A tail pinned by a request in flight (checked by an earlier limit, not
// yet charged) can be neither expired nor evicted: a new key then fails.
func TestPinnedTailFailsAllocation(t *testing.T) {
	z := newZoneStates(2, r1ps)
	if r := z.lookup([]byte("a"), 0, 0, false); r.rc != rcAgain {
		t.Fatalf("check-only lookup: rc %d", r.rc)
	}
	check([]Rule{{Zone: z}}, 1, "b")
	d := check([]Rule{{Zone: z}}, 100000, "c")
	if d.Status != Rejected || !d.AllocFailed || d.Zone != z || z.AllocFailures() != 1 {
		t.Errorf("got %+v, %d failures; want Rejected, AllocFailed, 1", d, z.AllocFailures())
	}
	if d := Check([]Rule{{Zone: z}}, [][]byte{[]byte("c")}, 100000, true); d.Status != RejectedDryRun || !d.AllocFailed {
		t.Errorf("dry run: %+v; want RejectedDryRun, AllocFailed", d)
	}
	z.unpin(0)
	if d := check([]Rule{{Zone: z}}, 100000, "c"); d.Status != Passed {
		t.Errorf("after unpin: %v; want Passed", d.Status)
	}
}

func TestPeekAndTop(t *testing.T) {
	key, err := ParseKey("$binary_remote_addr")
	if err != nil {
		t.Fatal(err)
	}
	z := NewZone("z", key, 1<<20, r1ps)
	rules := []Rule{{Zone: z, Burst: 100, NoDelay: true}}
	for i, n := range []int{3, 1, 5, 2} {
		k := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).AsSlice()
		for range n {
			Check(rules, [][]byte{k}, 0, false)
		}
	}
	top := z.Top(2, 500)
	want := []Entry{{Key: "192.0.2.3", Excess: 3500}, {Key: "192.0.2.1", Excess: 1500}}
	if len(top) != 2 || top[0] != want[0] || top[1] != want[1] {
		t.Errorf("Top(2) = %+v; want %+v", top, want)
	}
	if all := z.Top(10, 500); len(all) != 4 || all[3].Excess != 0 {
		t.Errorf("Top(10) = %+v; want 4 entries, the last drained", all)
	}
	if e, ok := z.Peek([]byte{192, 0, 2, 3}, 1000); !ok || e != 3000 {
		t.Errorf("Peek = %d %v; want 3000 true", e, ok)
	}
	if _, ok := z.Peek([]byte{192, 0, 2, 9}, 0); ok {
		t.Errorf("Peek of an absent key reports it present")
	}
}

func TestConcurrentChecks(t *testing.T) {
	a := newZoneStates(64, r10ps) // far fewer states than keys: evictions race pins
	b := NewZone("b", Key{}, 64<<10, r1ps)
	rules := []Rule{{Zone: a, Burst: 3}, {Zone: b, Burst: 2, NoDelay: true}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[Status]int{}
	for g := range 8 {
		wg.Go(func() {
			keys := make([][]byte, 2)
			for i := range 5000 {
				k := []byte{byte(g), byte(i % 50)}
				keys[0], keys[1] = k, k
				d := Check(rules, keys, int64(i/10), false)
				mu.Lock()
				counts[d.Status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, z := range []*Zone{a, b} {
		z.mu.Lock()
		for i := z.t.head; i >= 0; i = z.t.states[i].next {
			if c := z.t.states[i].count; c != 0 {
				t.Errorf("zone %s: state pinned %d times after all requests", z.name, c)
			}
		}
		n := z.t.n
		z.mu.Unlock()
		if n > z.Capacity() {
			t.Errorf("zone %s holds %d > capacity %d", z.name, n, z.Capacity())
		}
	}
	if counts[Passed] == 0 || counts[Rejected] == 0 || counts[Delayed] == 0 || a.Evictions() == 0 {
		t.Errorf("statuses %v, %d evictions; want some of each", counts, a.Evictions())
	}
}
