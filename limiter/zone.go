package limiter

import (
	"container/heap"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Zone is a limit_req_zone: the limit_req state of every key seen, in a
// fixed memory budget, with Nginx's exact integer arithmetic
// (ngx_http_limit_req_module.c of nginx 1.22.1; functions named below).
//
// Per key it keeps excess, in thousandths of a request, and last, the ms of
// the last charged request. A request at now sees
//
//	ms = now - last          (if ms < -60000: ms = 1; elif ms < 0: ms = 0)
//	excess = max(0, excess - rate*ms/1000 + 1000)
//
// and is rejected, leaving the state alone, if excess > burst*1000; else the
// excess is stored and, if ms != 0, last = now. A new key is stored with
// excess 0 and always passes. Times are ms on any clock the caller keeps
// monotonic; they are parameters, so a zone never reads the clock.
//
// A Zone is safe for concurrent use. One mutex guards it, held only for a
// lookup or a charge: Nginx's shared-memory mutex, so concurrent requests
// interleave exactly as on Nginx; sharding would split the LRU list and
// change which key a full zone evicts.
type Zone struct {
	name string
	key  Key
	size int64
	rate atomic.Int64 // requests per second × 1000, as Nginx stores it; see SetRate

	mu sync.Mutex
	t  table

	evictions     atomic.Uint64
	expired       atomic.Uint64
	allocFailures atomic.Uint64
}

// NewZone returns an empty zone holding as many states as fit in size
// bytes (see Capacity), limiting each key to ratePerSecMilli/1000 requests
// per second. It panics if rate is not positive or size holds no state:
// config validation rules both out.
func NewZone(name string, key Key, size int64, ratePerSecMilli int64) *Zone {
	states, slots := capacityFor(size)
	if ratePerSecMilli <= 0 || states == 0 {
		panic(fmt.Sprintf("limiter: zone %q: rate %d or size %d out of range", name, ratePerSecMilli, size))
	}
	z := &Zone{name: name, key: key, size: size, t: newTable(states, slots)}
	z.rate.Store(ratePerSecMilli)
	return z
}

// Name is the zone's name, as logs print it.
func (z *Zone) Name() string { return z.name }

// Key is the key the zone was created with.
func (z *Zone) Key() Key { return z.key }

// Size is the memory budget the zone was created with, in bytes.
func (z *Zone) Size() int64 { return z.size }

// Rate is requests per second × 1000 (Nginx's stored rate).
func (z *Zone) Rate() int64 { return z.rate.Load() }

// SetRate changes the zone's rate, keeping every key's state: what a
// reload does in Nginx, where the rate lives in the configuration and the
// states in the shared zone. A request decided while the rate changes uses
// either rate. It panics if ratePerSecMilli is not positive.
func (z *Zone) SetRate(ratePerSecMilli int64) {
	if ratePerSecMilli <= 0 {
		panic(fmt.Sprintf("limiter: zone %q: rate %d out of range", z.name, ratePerSecMilli))
	}
	z.rate.Store(ratePerSecMilli)
}

// Capacity is how many states fit in the zone's size: 48 bytes per state
// plus an index kept at most 3/4 full, about 60 bytes a state (a 10m zone
// holds 174,762). Nginx spends 128 bytes a state on x86_64.
func (z *Zone) Capacity() int { return len(z.t.states) }

// Len is the number of keys in the zone.
func (z *Zone) Len() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.t.n
}

// Evictions counts states force-freed to make room for a new key (the
// zone was full). Nginx does this silently.
func (z *Zone) Evictions() uint64 { return z.evictions.Load() }

// Expired counts states freed because they were idle for 60 s and fully
// drained (checked at the LRU tail before every new key, as Nginx does).
func (z *Zone) Expired() uint64 { return z.expired.Load() }

// AllocFailures counts new keys that found no room even after eviction:
// the LRU tail was in use by a request in flight. Nginx logs them as
// `could not allocate node in limit_req zone "z"` and rejects the request.
func (z *Zone) AllocFailures() uint64 { return z.allocFailures.Load() }

// rc is ngx_http_limit_req_lookup's result.
type rc uint8

const (
	rcDeclined rc = iota // no lookup: the key was empty
	rcOK                 // the last limit: found or created, and charged
	rcAgain              // an earlier limit: checked and pinned, charged later
	rcBusy               // excess above burst: reject, state unchanged
	rcError              // no room for a new key
)

type lookupResult struct {
	rc     rc
	excess int64 // the request's excess, thousandths (Nginx's *ep)
	idx    int32 // the pinned record, for rcAgain
	retry  int64 // for rcBusy: ms until the key's next request passes
}

// lookup is ngx_http_limit_req_lookup: find or create key's state, move it
// to the LRU head, and check the request against burst (thousandths). With
// account it charges the state; without it pins the state for charge or
// unpin.
func (z *Zone) lookup(key []byte, now, burst int64, account bool) lookupResult {
	sk, h := z.t.makeKey(key)
	z.mu.Lock()
	defer z.mu.Unlock()
	i, pos := z.t.find(&sk, h)
	if i >= 0 {
		s := &z.t.states[i]
		z.t.touch(i) // even for a request about to be rejected, as Nginx
		ms, excess := z.excessAt(s, now)
		if excess > burst {
			return lookupResult{rc: rcBusy, excess: excess, retry: z.retryAfter(s, now, burst)}
		}
		if !account {
			s.count++
			return lookupResult{rc: rcAgain, excess: excess, idx: i}
		}
		z.store(s, ms, excess, now)
		return lookupResult{rc: rcOK, excess: excess}
	}
	n0 := z.t.n
	z.expire(1, now)
	if i = z.t.alloc(); i < 0 {
		z.expire(0, now)
		if i = z.t.alloc(); i < 0 {
			z.allocFailures.Add(1)
			return lookupResult{rc: rcError}
		}
	}
	if z.t.n != n0 {
		// Expiry shifted the index; find the empty slot again.
		_, pos = z.t.find(&sk, h)
	}
	s := z.t.insert(i, &sk, h, pos)
	s.last = now
	if account {
		return lookupResult{rc: rcOK}
	}
	// Nginx stores last = 0 here; its charge step then drains the state
	// completely, since ngx_current_msec (ms since boot) is far from 0.
	s.fresh, s.count = true, 1
	return lookupResult{rc: rcAgain, idx: i}
}

// charge is the accounting of an earlier limit in
// ngx_http_limit_req_account: recompute the pinned state at now, store it
// without a check, unpin it. It returns the new excess.
func (z *Zone) charge(i int32, now int64) int64 {
	z.mu.Lock()
	defer z.mu.Unlock()
	s := &z.t.states[i]
	ms, excess := z.excessAt(s, now)
	z.store(s, ms, excess, now)
	s.count--
	return excess
}

// unpin releases a pinned state of a rejected request
// (ngx_http_limit_req_unlock): no charge. A state created for it stays,
// fully drained.
func (z *Zone) unpin(i int32) {
	z.mu.Lock()
	z.t.states[i].count--
	z.mu.Unlock()
}

// excessAt returns Nginx's ms and the excess a request at now would bring
// state s to (ngx_http_limit_req_lookup). A fresh state behaves as Nginx's
// last = 0: fully drained, ms nonzero.
func (z *Zone) excessAt(s *state, now int64) (ms, excess int64) {
	if s.fresh {
		return 1, 0
	}
	ms = now - s.last
	if ms < -60000 {
		ms = 1
	} else if ms < 0 {
		ms = 0
	}
	return ms, max(0, s.excess-z.drained(ms)+1000)
}

func (z *Zone) store(s *state, ms, excess, now int64) {
	s.excess = excess
	if ms != 0 {
		s.last = now
	}
	s.fresh = false
}

// drained is rate*ms/1000, the thousandths of requests that drain in ms,
// saturating where Nginx's 64-bit product would overflow (over 106 days of
// idleness at 1000000r/s; the state is fully drained either way).
func (z *Zone) drained(ms int64) int64 {
	rate := z.rate.Load()
	if ms > math.MaxInt64/rate {
		return math.MaxInt64 / 1000
	}
	return rate * ms / 1000
}

// retryAfter returns, for a state that rejects a request at now, the least
// ms after which the key's next request passes (burst in thousandths): the
// least elapsed time M with rate*M/1000 >= excess+1000-burst, less the time
// already elapsed. That is (E-burst)*1000/rate rounded up, where E is the
// rejected request's excess, up to Nginx's truncation of rate*ms/1000.
func (z *Zone) retryAfter(s *state, now, burst int64) int64 {
	need := s.excess + 1000 - burst
	rate := z.rate.Load()
	m := (need*1000 + rate - 1) / rate
	if now >= s.last {
		return max(1, m-(now-s.last))
	}
	return m + (s.last - now) // the clock went back: ms stays 0 until last
}

// expire is ngx_http_limit_req_expire. Called with n = 1 before
// every new key, it frees up to 2 states at the LRU tail that are idle for
// 60 s and fully drained; with n = 0 it first force-frees the tail. It stops
// at a tail pinned by a request in flight.
func (z *Zone) expire(n int, now int64) {
	for ; n < 3; n++ {
		i := z.t.tail
		if i < 0 {
			return
		}
		s := &z.t.states[i]
		if s.count != 0 {
			return // Nginx: lookups bump nodes, so look no further
		}
		if n != 0 && !s.fresh {
			ms := now - s.last
			if ms < 0 {
				ms = -ms
			}
			if ms < 60000 || s.excess-z.drained(ms) > 0 {
				return
			}
		}
		z.t.remove(i)
		if n == 0 {
			z.evictions.Add(1)
		} else {
			z.expired.Add(1)
		}
	}
}

// Peek returns key's current excess at now, in thousandths, drained but
// without the request's own 1000, and whether the zone holds the key. It
// changes nothing, not even the LRU order.
func (z *Zone) Peek(key []byte, nowMs int64) (excess int64, ok bool) {
	sk, h := z.t.makeKey(key)
	z.mu.Lock()
	defer z.mu.Unlock()
	i, _ := z.t.find(&sk, h)
	if i < 0 {
		return 0, false
	}
	return z.current(&z.t.states[i], nowMs), true
}

func (z *Zone) current(s *state, now int64) int64 {
	_, e := z.excessAt(s, now)
	return max(0, e-1000)
}

// Entry is one key's state as Top reports it.
type Entry struct {
	// Key is the key for display: an address for a $binary_remote_addr
	// zone, the text if printable, else 0x and hex; a long key stored as a
	// hash is "hash:" and the hash in hex.
	Key string
	// Excess is the current excess at the time given to Top, thousandths.
	Excess int64
	// LastMs is when the key was last charged.
	LastMs int64
}

// Top returns the n keys with the largest current excess at nowMs, largest
// first. It scans every state under the zone's lock (about 1 ms for a
// full 10m zone), so it is for /debug pages, not for the request path.
func (z *Zone) Top(n int, nowMs int64) []Entry {
	if n <= 0 {
		return nil
	}
	h := make(entryHeap, 0, n+1)
	z.mu.Lock()
	for i := range z.t.used {
		s := &z.t.states[i]
		if s.prev == freeRecord {
			continue
		}
		e := entryRef{excess: z.current(s, nowMs), idx: i}
		if len(h) == n && e.excess <= h[0].excess {
			continue
		}
		heap.Push(&h, e)
		if len(h) > n {
			heap.Pop(&h)
		}
	}
	out := make([]Entry, len(h))
	for len(h) > 0 {
		e := heap.Pop(&h).(entryRef)
		s := &z.t.states[e.idx]
		out[len(h)] = Entry{Key: z.display(s), Excess: e.excess, LastMs: s.last}
	}
	z.mu.Unlock()
	return out
}

func (z *Zone) display(s *state) string {
	if s.klen == hashedKey {
		return "hash:" + hex.EncodeToString(s.key[:])
	}
	k := s.key[:s.klen]
	if z.key.IsBinaryRemoteAddr() {
		if a, ok := netip.AddrFromSlice(k); ok {
			return a.String()
		}
	}
	for _, c := range k {
		if c < ' ' || c > '~' {
			return "0x" + hex.EncodeToString(k)
		}
	}
	return string(k)
}

type entryRef struct {
	excess int64
	idx    int32
}

// entryHeap is a min-heap on excess, so the smallest of the top n is at 0.
type entryHeap []entryRef

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].excess < h[j].excess }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(entryRef)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
