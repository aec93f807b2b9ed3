package limiter

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchmarkZoneCheck measures Check with one rule: over 1M distinct IPv4
// keys (a full-size zone, cache misses dominate) and on one hot key, alone
// and from all CPUs at once (one mutex per zone).
func BenchmarkZoneCheck(b *testing.B) {
	const n = 1 << 20
	flat := make([]byte, 4*n)
	for i := range n {
		flat[4*i], flat[4*i+1], flat[4*i+2], flat[4*i+3] = 10, byte(i>>16), byte(i>>8), byte(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	big := NewZone("big", Key{}, 64<<20, r10ps)
	bigRules := []Rule{{Zone: big, Burst: 20, NoDelay: true}}
	for i := range n {
		Check(bigRules, [][]byte{flat[4*i : 4*i+4]}, 0, false)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	bytesPerState := float64(after.HeapAlloc-before.HeapAlloc) / n
	hot := NewZone("hot", Key{}, 10<<20, r10ps)
	hotRules := []Rule{{Zone: hot, Burst: 20, NoDelay: true}}
	hotKey := []byte{192, 0, 2, 1}

	b.Run("1M-keys", func(b *testing.B) {
		b.ReportAllocs()
		keys := [][]byte{nil}
		i := 0
		for b.Loop() {
			j := (i * 7919) & (n - 1) // stride through the keys
			keys[0] = flat[4*j : 4*j+4]
			Check(bigRules, keys, int64(i>>16), false)
			i++
		}
		b.ReportMetric(bytesPerState, "heap-bytes/state")
	})
	b.Run("1M-keys-parallel", func(b *testing.B) {
		b.ReportAllocs()
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			keys := [][]byte{nil}
			i := int(seq.Add(1)) * 104729
			for pb.Next() {
				j := (i * 7919) & (n - 1)
				keys[0] = flat[4*j : 4*j+4]
				Check(bigRules, keys, int64(i>>16&0xfff), false)
				i++
			}
		})
	})
	b.Run("hot-key", func(b *testing.B) {
		b.ReportAllocs()
		keys := [][]byte{hotKey}
		i := 0
		for b.Loop() {
			Check(hotRules, keys, int64(i>>10), false)
			i++
		}
	})
	b.Run("hot-key-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			keys := [][]byte{hotKey}
			i := 0
			for pb.Next() {
				Check(hotRules, keys, int64(i>>10), false)
				i++
			}
		})
	})
}

// BenchmarkCheckWithKeys is the whole per-request cost for a route with two
// limits: evaluate both keys, then Check.
func BenchmarkCheckWithKeys(b *testing.B) {
	perIP, err := ParseKey("$binary_remote_addr")
	if err != nil {
		b.Fatal(err)
	}
	perKey, err := ParseKey("$binary_remote_addr:$http_x_api_key")
	if err != nil {
		b.Fatal(err)
	}
	rules := []Rule{
		{Zone: NewZone("ip", perIP, 10<<20, r10ps), Burst: 20, NoDelay: true},
		{Zone: NewZone("apikey", perKey, 10<<20, r10ps), Burst: 20, Delay: 5},
	}
	src := &fakeSource{headers: map[string]string{"X-Api-Key": "0123456789abcdef0123"}}
	var keys [][]byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		src.addr = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		keys = AppendKeys(keys, rules, src)
		Check(rules, keys, int64(i>>8), false)
		i++
	}
}

// BenchmarkDRAMLatency is the floor under BenchmarkZoneCheck/1M-keys: one
// dependent random read from a 64 MB array (a pointer chase), the memory a
// zone of 1M states occupies.
func BenchmarkDRAMLatency(b *testing.B) {
	const n = 64 << 20 / 8
	perm := rand.New(rand.NewPCG(1, 1)).Perm(n)
	next := make([]uint32, 2*n) // 64 MB of uint32 pairs
	for i := range n {
		next[2*perm[i]] = uint32(perm[(i+1)%n])
	}
	j := uint32(0)
	for b.Loop() {
		j = next[2*j]
	}
	runtime.KeepAlive(j)
}
