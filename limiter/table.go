package limiter

import (
	"encoding/binary"
	"hash/maphash"
	"unsafe"
)

// maxInlineKey is the longest key stored as written. Longer keys are stored
// as a 128-bit keyed hash of the key (two maphash sums with secret per-zone
// seeds): two long keys share a state only if both 64-bit sums collide.
const maxInlineKey = 16

// hashedKey marks a state whose key is the 16-byte hash of a longer key.
const hashedKey = 0xff

// state is one key's limit_req state (ngx_http_limit_req_node_t) in a
// fixed-size record without pointers: a zone is a few flat slices that the
// garbage collector never scans, however many keys it holds.
type state struct {
	key    [maxInlineKey]byte // zero-padded; see klen
	excess int64              // thousandths of a request, never negative
	last   int64              // ms of the last charged request
	prev   int32              // LRU neighbour towards the head (more recent); -1: none; freeRecord: free
	next   int32              // LRU neighbour towards the tail, or next free record; -1: none
	count  uint32             // lookups that checked but have not charged yet (Nginx lr->count)
	klen   uint8              // key length 0..16, or hashedKey
	fresh  bool               // created by a check-only lookup and never charged (Nginx last = 0)
}

// freeRecord in prev marks a record on the free list.
const freeRecord = -2

// stateBytes and slotBytes are what one state and one index slot cost.
const (
	stateBytes = int64(unsafe.Sizeof(state{}))
	slotBytes  = int64(unsafe.Sizeof(uint64(0)))
)

// skey is a key as stored: up to 16 bytes inline, or a hash.
type skey struct {
	b [maxInlineKey]byte
	n uint8
}

// table stores states: a fixed array of records, an open-addressing index
// (linear probing, backward-shift deletion) and an intrusive LRU list of
// int32 record indices. It is not safe for concurrent use; Zone locks it.
type table struct {
	states []state
	used   int32    // records ever handed out; those past it are untouched
	free   int32    // head of the free list through next; -1: empty
	slots  []uint64 // 0: empty; else low32(hash)<<32 | record index+1
	mask   uint64
	head   int32           // most recently used; -1: empty
	tail   int32           // least recently used; -1: empty
	n      int             // states in use
	seed   [3]maphash.Seed // index hash, and the two halves of long-key hashes
}

// capacityFor returns how many states and index slots fit in size bytes,
// keeping the index at most 3/4 full.
func capacityFor(size int64) (states, slots int64) {
	for t := int64(4); t <= 1<<31 && t*slotBytes < size; t *= 2 {
		n := min(t*3/4, (size-t*slotBytes)/stateBytes, 1<<31-2)
		if n > states {
			states, slots = n, t
		}
	}
	return states, slots
}

func newTable(states, slots int64) table {
	return table{
		states: make([]state, states),
		slots:  make([]uint64, slots),
		mask:   uint64(slots - 1),
		free:   -1,
		head:   -1,
		tail:   -1,
		seed:   [3]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed(), maphash.MakeSeed()},
	}
}

// makeKey converts a key to its stored form and hashes it for the index.
// It reads only the seeds, so callers run it before taking the lock.
func (t *table) makeKey(k []byte) (sk skey, h uint64) {
	if len(k) <= maxInlineKey {
		copy(sk.b[:], k)
		sk.n = uint8(len(k))
	} else {
		binary.LittleEndian.PutUint64(sk.b[0:], maphash.Bytes(t.seed[1], k))
		binary.LittleEndian.PutUint64(sk.b[8:], maphash.Bytes(t.seed[2], k))
		sk.n = hashedKey
	}
	return sk, t.hash(&sk)
}

func (t *table) hash(sk *skey) uint64 {
	return maphash.Bytes(t.seed[0], sk.b[:]) ^ uint64(sk.n)*0x9e3779b97f4a7c15
}

// find returns the record holding sk, or -1 and the empty slot where sk
// would go.
func (t *table) find(sk *skey, h uint64) (int32, uint64) {
	tag := h << 32
	for pos := h & t.mask; ; pos = (pos + 1) & t.mask {
		v := t.slots[pos]
		if v == 0 {
			return -1, pos
		}
		if v&^0xffffffff == tag {
			i := int32(uint32(v)) - 1
			if s := &t.states[i]; s.klen == sk.n && s.key == sk.b {
				return i, pos
			}
		}
	}
}

// alloc takes a free record, or returns -1 when all are in use.
func (t *table) alloc() int32 {
	if i := t.free; i >= 0 {
		t.free = t.states[i].next
		return i
	}
	if int(t.used) < len(t.states) {
		t.used++
		return t.used - 1
	}
	return -1
}

// insert stores a new state for sk in record i at the empty slot pos that
// find returned, at the head of the LRU list.
func (t *table) insert(i int32, sk *skey, h, pos uint64) *state {
	t.states[i] = state{key: sk.b, klen: sk.n, prev: -1, next: t.head}
	t.slots[pos] = h<<32 | uint64(i+1)
	if t.head >= 0 {
		t.states[t.head].prev = i
	} else {
		t.tail = i
	}
	t.head = i
	t.n++
	return &t.states[i]
}

// remove frees record i: out of the index, the LRU list, onto the free list.
func (t *table) remove(i int32) {
	sk := skey{b: t.states[i].key, n: t.states[i].klen}
	pos := t.hash(&sk) & t.mask
	for uint32(t.slots[pos]) != uint32(i+1) {
		pos = (pos + 1) & t.mask
	}
	t.deleteSlot(pos)
	t.unlink(i)
	t.states[i] = state{prev: freeRecord, next: t.free}
	t.free = i
	t.n--
}

// deleteSlot empties pos and shifts later entries of its probe run back,
// so that lookups never need tombstones.
func (t *table) deleteSlot(pos uint64) {
	for next := pos; ; {
		t.slots[pos] = 0
		for {
			next = (next + 1) & t.mask
			v := t.slots[next]
			if v == 0 {
				return
			}
			home := (v >> 32) & t.mask
			// Move v back unless its home lies cyclically in (pos, next].
			if (next-home)&t.mask >= (next-pos)&t.mask {
				t.slots[pos] = v
				pos = next
				break
			}
		}
	}
}

// touch moves record i to the head of the LRU list.
func (t *table) touch(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	s := &t.states[i]
	s.prev, s.next = -1, t.head
	t.states[t.head].prev = i
	t.head = i
}

func (t *table) unlink(i int32) {
	s := &t.states[i]
	if s.prev >= 0 {
		t.states[s.prev].next = s.next
	} else {
		t.head = s.next
	}
	if s.next >= 0 {
		t.states[s.next].prev = s.prev
	} else {
		t.tail = s.prev
	}
}
