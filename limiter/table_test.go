package limiter

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestTableAgainstMap drives a small, crowded table through random inserts,
// removals and LRU moves, and checks it against a map after every step:
// backward-shift deletion must keep every key findable.
func TestTableAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		tb := newTable(12, 16) // 3/4 full at capacity: long probe runs
		model := map[string]int32{}
		var lru []string // model LRU, most recent first
		for step := range 400 {
			k := fmt.Sprintf("k%d", rng.IntN(30))
			if rng.IntN(40) == 0 {
				k += string(make([]byte, 20)) // a hashed key now and then
			}
			sk, h := tb.makeKey([]byte(k))
			i, pos := tb.find(&sk, h)
			want, ok := model[k]
			if ok != (i >= 0) || ok && i != want {
				t.Fatalf("round %d step %d: find(%q) = %d; model %d %v", round, step, k, i, want, ok)
			}
			switch {
			case ok && rng.IntN(2) == 0:
				tb.remove(i)
				delete(model, k)
				lru = remove(lru, k)
			case ok:
				tb.touch(i)
				lru = append([]string{k}, remove(lru, k)...)
			default:
				if i = tb.alloc(); i < 0 {
					if len(model) != 12 {
						t.Fatalf("alloc failed with %d keys", len(model))
					}
					continue
				}
				tb.insert(i, &sk, h, pos)
				model[k] = i
				lru = append([]string{k}, lru...)
			}
			checkTable(t, &tb, model, lru)
		}
	}
}

func remove(s []string, k string) []string {
	for i, v := range s {
		if v == k {
			return append(s[:i:i], s[i+1:]...)
		}
	}
	return s
}

func checkTable(t *testing.T, tb *table, model map[string]int32, lru []string) {
	t.Helper()
	if tb.n != len(model) {
		t.Fatalf("n = %d; model %d", tb.n, len(model))
	}
	occupied := 0
	for _, v := range tb.slots {
		if v != 0 {
			occupied++
		}
	}
	if occupied != len(model) {
		t.Fatalf("%d occupied slots for %d keys", occupied, len(model))
	}
	for k, want := range model {
		sk, h := tb.makeKey([]byte(k))
		if i, _ := tb.find(&sk, h); i != want {
			t.Fatalf("find(%q) = %d; want %d", k, i, want)
		}
	}
	i := tb.head
	for j, k := range lru {
		if i != model[k] {
			t.Fatalf("LRU position %d: record %d; want %d (%q)", j, i, model[k], k)
		}
		if next := tb.states[i].next; next >= 0 && tb.states[next].prev != i {
			t.Fatalf("LRU links broken at %d", i)
		}
		i = tb.states[i].next
	}
	if i != -1 || len(lru) > 0 && tb.tail != model[lru[len(lru)-1]] || len(lru) == 0 && tb.tail != -1 {
		t.Fatalf("LRU tail %d / end %d wrong", tb.tail, i)
	}
}

// TestMemoryPerState reports the heap cost of a zone holding 1M IPv4 keys,
// and checks that holding them costs the garbage collector nothing: no
// pointers, so a GC cycle stays fast.
func TestMemoryPerState(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 64 MB")
	}
	const n = 1 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	z := NewZone("big", Key{}, 64<<20, r10ps)
	rules := []Rule{{Zone: z, Burst: 5}}
	keys := [][]byte{make([]byte, 4)}
	for i := range n {
		keys[0][0], keys[0][1], keys[0][2], keys[0][3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		Check(rules, keys, int64(i/1000), false) // within 60 s: nothing expires
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if z.Len() != n || z.Evictions() != 0 {
		t.Fatalf("len %d evictions %d; want %d 0", z.Len(), z.Evictions(), n)
	}
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%d states: %.1f heap bytes per state; zone capacity %d for 64m", n, per, z.Capacity())
	if per > 66 {
		t.Errorf("%.1f heap bytes per state; want at most 64 (+ slack)", per)
	}
	runtime.KeepAlive(z)
}
