package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// closeProxy is a running tollgate with both its access log and its close
// records (the JSON lines of Options.CloseLog) captured.
type closeProxy struct {
	*testProxy
	closes *syncBuffer
}

// startProxyWithCloses is startProxy that also captures close records.
func startProxyWithCloses(t testing.TB, yaml string) *closeProxy {
	t.Helper()
	return startCloseProxy(t, yaml, 0)
}

// startCloseProxy runs tollgate with the given YAML and a close ring of
// ring records (0: the default). The test may call Shutdown itself; the
// cleanup's second call is then a no-op that returns an error.
func startCloseProxy(t testing.TB, yaml string, ring int) *closeProxy {
	t.Helper()
	closes := &syncBuffer{}
	tp, _ := runProxy(t, testConfig(t, yaml), Options{CloseLog: closes, CloseRing: ring})
	return &closeProxy{testProxy: tp, closes: closes}
}

// records parses the close records written so far, in order.
func (p *closeProxy) records(t testing.TB) []closeRecord {
	t.Helper()
	var out []closeRecord
	for line := range strings.SplitSeq(p.closes.String(), "\n") {
		if line == "" {
			continue
		}
		var rec closeRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("close record is not JSON: %v\n%s", err, line)
		}
		out = append(out, rec)
	}
	return out
}

// awaitRecord waits for the first close record that keep accepts: the
// record of a close is written after the peer may already have seen it.
func (p *closeProxy) awaitRecord(t testing.TB, what string, keep func(*closeRecord) bool) closeRecord {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		for _, rec := range p.records(t) {
			if keep(&rec) {
				return rec
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no close record %s within %v; records:\n%s", what, waitLimit, p.closes.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// awaitClose waits for the first close record of side with reason.
func (p *closeProxy) awaitClose(t testing.TB, side, reason string) closeRecord {
	t.Helper()
	return p.awaitRecord(t, side+" "+reason, func(r *closeRecord) bool {
		return r.Side == side && r.Reason == reason
	})
}

// closeOf waits for the close record of one connection.
func (p *closeProxy) closeOf(t testing.TB, connID string) closeRecord {
	t.Helper()
	return p.awaitRecord(t, "of "+connID, func(r *closeRecord) bool { return r.ConnID == connID })
}

// count returns how many records of side with reason were written so far.
func (p *closeProxy) count(t testing.TB, side, reason string) int {
	t.Helper()
	n := 0
	for _, rec := range p.records(t) {
		if rec.Side == side && rec.Reason == reason {
			n++
		}
	}
	return n
}

// wantClose is what a close record must say: the classification a user
// alerts on.
type wantClose struct {
	side, reason, initiator, kind, phase string
}

func downstreamClose(reason, initiator, kind, phase string) wantClose {
	return wantClose{"downstream", reason, initiator, kind, phase}
}

func upstreamClose(reason, initiator, kind, phase string) wantClose {
	return wantClose{"upstream", reason, initiator, kind, phase}
}

// expect waits for the record of w's side and reason and checks the rest of
// its classification.
func (p *closeProxy) expect(t testing.TB, w wantClose) closeRecord {
	t.Helper()
	rec := p.awaitClose(t, w.side, w.reason)
	w.check(t, rec)
	return rec
}

func (w wantClose) check(t testing.TB, rec closeRecord) {
	t.Helper()
	got := wantClose{rec.Side, rec.Reason, rec.Initiator, rec.Kind, rec.Phase}
	if got != w {
		b, _ := json.Marshal(rec)
		t.Errorf("close record (side reason initiator kind phase)\n got  %v\n want %v\nrecord: %s", got, w, b)
	}
}

// expectCause checks that rec names the close on the other side that caused
// it, and that this close was recorded as want.
func (p *closeProxy) expectCause(t testing.TB, rec closeRecord, want wantClose) closeRecord {
	t.Helper()
	if rec.CauseConnID == "" {
		t.Fatalf("%s %s (%s): no cause_conn_id, want the %s close %s", rec.Side, rec.Reason, rec.ConnID, want.side, want.reason)
	}
	cause := p.closeOf(t, rec.CauseConnID)
	want.check(t, cause)
	return cause
}

// expectNoCause checks that a close caused by its own peer names no other.
func expectNoCause(t testing.TB, rec closeRecord) {
	t.Helper()
	if rec.CauseConnID != "" {
		t.Errorf("%s %s: cause_conn_id %q, want none: its own peer ended it", rec.Side, rec.Reason, rec.CauseConnID)
	}
}

// wantClose is the classification rec carries, to compare another record's
// cause with.
func (rec closeRecord) wantClose() wantClose {
	return wantClose{rec.Side, rec.Reason, rec.Initiator, rec.Kind, rec.Phase}
}

// failedGet does one GET of path through p and checks the status and
// Proxy-Status tollgate answered in place of the backend.
func failedGet(t testing.TB, p *closeProxy, path string, status int, proxyErr, reason string) {
	t.Helper()
	rc := dialRaw(t, p.Addr)
	rc.send(t, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, _ := rc.response(t, "GET")
	want := fmt.Sprintf("tollgate; error=%s; details=%q", proxyErr, reason)
	if resp.StatusCode != status || resp.Header.Get("Proxy-Status") != want {
		t.Errorf("client got %d Proxy-Status %q, want %d %q", resp.StatusCode, resp.Header.Get("Proxy-Status"), status, want)
	}
}

// getCloses fetches /debug/closes with query and returns (side, request_id)
// of each record, in the order served.
func getCloses(t testing.TB, p *closeProxy, query string) []string {
	t.Helper()
	resp, err := http.Get(p.Admin + "/debug/closes" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var recs []closeRecord
	if err := json.Unmarshal(raw, &recs); err != nil || recs == nil {
		t.Fatalf("/debug/closes%s: %v, want a JSON array:\n%s", query, err, raw)
	}
	out := []string{}
	for _, r := range recs {
		out = append(out, r.Side[:1]+":"+r.RequestID)
	}
	return out
}

// --- Client-side fault helpers ---

// idleClient opens a connection to addr and has one GET of path answered
// on it, leaving the connection idle in keep-alive.
func idleClient(t testing.TB, addr, path string) *rawClient {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.send(t, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := rc.response(t, "GET"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %q, want 200", path, resp.StatusCode, body)
	}
	return rc
}

// resetConn closes c with an RST instead of a FIN (SO_LINGER 0).
func resetConn(t testing.TB, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// awaitEOF waits until the server ended rc's connection: a read returns
// EOF (or a reset) once tollgate closed it.
func awaitEOF(t testing.TB, rc *rawClient) {
	t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(waitLimit))
	_, err := io.Copy(io.Discard, rc.br)
	if isTimeout(err) {
		t.Fatalf("tollgate did not close the connection within %v", waitLimit)
	}
}

// --- Backend-side fault helpers ---

// okReply is a keep-alive 200 with a two-byte body.
const okReply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// headThenStall reads a request head, reports it on headSeen and then
// reads (and discards) whatever follows without ever answering.
func headThenStall(t testing.TB) (addr string, headSeen <-chan struct{}) {
	hs := make(chan struct{}, 16)
	addr = rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readSeenHead(br); err != nil {
			return
		}
		hs <- struct{}{}
		io.Copy(io.Discard, br)
	})
	return addr, hs
}

// stallBody answers with a Content-Length of 1000, sends 10 bytes of the
// body and then goes silent until tollgate gives up.
func stallBody(t testing.TB) string {
	return rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readSeen(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
		io.Copy(io.Discard, br)
	})
}

// resetMidBody answers with a Content-Length of 1000 and 10 bytes of the
// body, then resets the connection (SO_LINGER 0) once the test closes
// reset: after the client saw the 10 bytes, so the reset cannot overtake
// them.
func resetMidBody(t testing.TB) (addr string, reset chan<- struct{}) {
	ch := make(chan struct{})
	addr = rawBackend(t, func(c net.Conn) {
		if _, err := readSeen(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
		select {
		case <-ch:
		case <-time.After(waitLimit):
		}
		c.(*net.TCPConn).SetLinger(0)
	})
	return addr, ch
}

// closeOnSecondRequest answers the first request of each connection with a
// keep-alive 200 and closes the connection (FIN) when the second request
// has arrived, without answering it: the keep-alive race, where a backend
// closes an idle connection just as the proxy reuses it. seen reports the
// path of each request the backend read.
func closeOnSecondRequest(t testing.TB) (addr string, seen <-chan string) {
	ch := make(chan string, 16)
	addr = rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := range 2 {
			s, err := readSeen(br)
			if err != nil {
				return
			}
			ch <- s.Line
			if i == 0 {
				io.WriteString(c, okReply)
			}
		}
	})
	return addr, ch
}

// barrierBackend holds every response until n requests are in flight at
// once, so that tollgate has n upstream connections busy together.
func barrierBackend(t testing.TB, n int) string {
	var arrived atomic.Int64
	all := make(chan struct{})
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == int64(n) {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(waitLimit):
		}
		io.WriteString(w, "ok")
	}))
	return b.Addr
}

// fullBacklogAddr is a loopback listener that never accepts and whose
// accept queue is full, so that a connect to it gets no answer: the kernel
// drops the SYN of a listener whose queue is full (tcp_conn_request), and
// the connect times out without any packet leaving loopback.
func fullBacklogAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the queue: connects succeed until it is full, then one hangs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			if !isTimeout(err) {
				t.Fatalf("filling the backlog: %v", err)
			}
			return addr
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Skip("the kernel accepted 16 connects into a backlog of 0: cannot provoke a connect timeout on loopback here")
		}
	}
}

// unreachableAddr is an address the kernel refuses to connect to at once
// with ENETUNREACH: TCP to the limited broadcast address (tcp_v4_connect
// rejects broadcast routes), so no packet leaves the host.
func unreachableAddr(testing.TB) string { return "255.255.255.255:9" }

// unresolvableAddr is a host name that fails to resolve without any DNS
// query: an empty label is not a domain name, and both Go's resolver and
// the C library's give up before building a query.
func unresolvableAddr(testing.TB) string { return "no..such.host:80" }
