package proxy

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"sync"
)

// The "every client shares Nginx's bucket" mistake: a zone keyed by
// $binary_remote_addr behind an edge, with real_ip not configured, sees
// the edge's address on every request, so one bucket limits all clients
// together. sharedKeyWatch spots it: one key making more than half of at
// least sharedKeyMin requests within sharedKeyWindow.
const (
	sharedKeyWindow  = 10_000 // ms
	sharedKeyMin     = 100    // requests in a window before it can trip
	sharedKeyLogEach = 600_000
)

// sharedKeyWatch follows one zone's keys with a Boyer–Moore majority vote
// over a fixed window: the candidate key and how many requests it made
// since it became the candidate (a lower bound of its share, so the watch
// never reports a key that did not make that many). The zero value is
// ready.
//
// It is on the request path, so it never waits: a request that finds the
// watch busy (TryLock) is not counted, which keeps shares about the same.
type sharedKeyWatch struct {
	mu      sync.Mutex
	start   int64 // ms, start of the window
	total   int   // requests counted in the window
	cand    []byte
	votes   int
	hits    int  // requests of cand since it became the candidate
	tripped bool // the window was reported
	logNext int64
}

// sharedKeyReport describes a tripped window.
type sharedKeyReport struct {
	hits, total int
	key         []byte // a copy
	log         bool   // not logged within sharedKeyLogEach: log it now
}

// observe counts one request with key at now (ms). It reports a window
// once, on the request that makes one key hold more than half of at least
// sharedKeyMin requests.
func (w *sharedKeyWatch) observe(key []byte, now int64) (sharedKeyReport, bool) {
	if !w.mu.TryLock() {
		return sharedKeyReport{}, false
	}
	defer w.mu.Unlock()
	if now-w.start >= sharedKeyWindow || now < w.start {
		w.start, w.total, w.votes, w.hits, w.tripped = now, 0, 0, 0, false
	}
	w.total++
	switch {
	case w.votes == 0:
		w.cand = append(w.cand[:0], key...)
		w.votes, w.hits = 1, 1
	case bytes.Equal(w.cand, key):
		w.votes++
		w.hits++
	default:
		w.votes--
	}
	if w.tripped || w.total < sharedKeyMin || 2*w.hits <= w.total {
		return sharedKeyReport{}, false
	}
	w.tripped = true
	r := sharedKeyReport{hits: w.hits, total: w.total, key: bytes.Clone(w.cand)}
	if now >= w.logNext {
		r.log = true
		w.logNext = now + sharedKeyLogEach
	}
	return r, true
}

// displayKey prints a key value for a log line or /debug/limits: the
// address of a 4- or 16-byte $binary_remote_addr, the text if printable,
// else 0x and hex.
func displayKey(b []byte, binaryAddr bool) string {
	if binaryAddr {
		if a, ok := netip.AddrFromSlice(b); ok {
			return a.String()
		}
	}
	for _, c := range b {
		if c < ' ' || c > '~' {
			return "0x" + hex.EncodeToString(b)
		}
	}
	return string(b)
}
