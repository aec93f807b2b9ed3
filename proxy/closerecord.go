package proxy

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// closeRecord is the one record every connection close gets, on either side
// (specs/close-reasons.md, "The record"). Field names are a public interface.
type closeRecord struct {
	Time        time.Time `json:"time"`
	Msg         string    `json:"msg"` // always "close", to tell records from access lines
	ConnID      string    `json:"conn_id"`
	Side        string    `json:"side"`
	Reason      string    `json:"reason"`
	Initiator   string    `json:"initiator"`
	Kind        string    `json:"kind"`
	Phase       string    `json:"phase"`
	Errno       string    `json:"errno,omitempty"`
	Error       string    `json:"error,omitempty"`
	TCP         *tcpInfo  `json:"tcp,omitempty"`
	Requests    int       `json:"requests"`
	AgeMs       int64     `json:"age_ms"`
	IdleMs      int64     `json:"idle_ms"`
	BytesIn     int64     `json:"bytes_in"`
	BytesOut    int64     `json:"bytes_out"`
	Reused      *bool     `json:"reused,omitempty"`
	WasIdleMs   *int64    `json:"was_idle_ms,omitempty"`
	RequestID   string    `json:"request_id,omitempty"`
	CauseConnID string    `json:"cause_conn_id,omitempty"`
	Peer        string    `json:"peer,omitempty"`
	Local       string    `json:"local,omitempty"`
	Upstream    string    `json:"upstream,omitempty"`
	Server      string    `json:"server,omitempty"`
	// EdgeTimeoutSuspected flags a client abort whose timing matches the
	// edge's own proxy_read_timeout: Nginx logged a 504 of its own.
	EdgeTimeoutSuspected bool `json:"edge_timeout_suspected,omitempty"`
	// Protocol is "h2" for an HTTP/2 connection or stream; absent for
	// HTTP/1.x.
	Protocol string `json:"protocol,omitempty"`
	// StreamOf is set on the record of an HTTP/2 stream that ended badly
	// (a reset by the client, a timeout, a backend that broke off): the
	// conn_id of the connection the stream came on.
	StreamOf string `json:"stream_of,omitempty"`
}

// tcpInfo is the part of the kernel's TCP_INFO a close record keeps.
type tcpInfo struct {
	State        string `json:"state"`
	TotalRetrans uint32 `json:"total_retrans"`
	RTTMicros    uint32 `json:"rtt_us"`
}

// closeLog receives every close record: it writes them as JSON lines, keeps
// the most recent in a ring for /debug/closes, and counts them by side and
// reason for /debug/closes/summary.
//
// A closeLog is safe for concurrent use.
type closeLog struct {
	mu      sync.Mutex
	out     io.Writer // nil: records are not written
	enc     *json.Encoder
	ring    []closeRecord
	next    int  // ring slot for the next record
	full    bool // the ring has wrapped
	summary map[[2]string]int64
	onClose func(*closeRecord) // metrics
}

func newCloseLog(out io.Writer, ringSize int, onClose func(*closeRecord)) *closeLog {
	l := &closeLog{out: out, summary: map[[2]string]int64{}, onClose: onClose}
	if out != nil {
		l.enc = json.NewEncoder(out)
	}
	if ringSize > 0 {
		l.ring = make([]closeRecord, ringSize)
	}
	return l
}

// add records one close.
func (l *closeLog) add(rec *closeRecord) {
	rec.Msg = "close"
	if l.onClose != nil {
		l.onClose(rec)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.summary[[2]string{rec.Side, rec.Reason}]++
	if len(l.ring) > 0 {
		l.ring[l.next] = *rec
		l.next++
		if l.next == len(l.ring) {
			l.next, l.full = 0, true
		}
	}
	if l.enc != nil {
		l.enc.Encode(rec)
	}
}

// recent returns the records in the ring that match keep, oldest first.
func (l *closeLog) recent(keep func(*closeRecord) bool) []closeRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []closeRecord
	visit := func(from, to int) {
		for i := from; i < to; i++ {
			if keep(&l.ring[i]) {
				out = append(out, l.ring[i])
			}
		}
	}
	if l.full {
		visit(l.next, len(l.ring))
	}
	visit(0, l.next)
	return out
}

// counts returns the number of closes by side and reason since start.
func (l *closeLog) counts() map[string]map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]map[string]int64{}
	for k, n := range l.summary {
		if out[k[0]] == nil {
			out[k[0]] = map[string]int64{}
		}
		out[k[0]][k[1]] = n
	}
	return out
}
