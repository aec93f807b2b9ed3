package proxy

import (
	"bufio"
	"io"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

// expectingBackend answers a request with "Expect: 100-continue": with
// "100 Continue", then 200 echoing the body it read (accept), or at once
// with 401 without reading the body (refuse). It reports the head it saw
// and, once tollgate closes the connection, how many bytes followed the
// head.
func expectingBackend(t testing.TB, accept bool) (addr string, heads <-chan seenRequest, after <-chan int64) {
	hs := make(chan seenRequest, 1)
	af := make(chan int64, 1)
	addr = rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		s, err := readSeenHead(br)
		if err != nil {
			return
		}
		hs <- s
		if !accept {
			io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n")
			n, _ := io.Copy(io.Discard, br)
			af <- n
			return
		}
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		if err := s.readBody(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(s.Body))+"\r\n\r\n"+s.Body)
		n, _ := io.Copy(io.Discard, br)
		af <- n
	})
	return addr, hs, af
}

// TestExpectContinueAccepted: the client sends only the head; tollgate
// forwards Expect, the backend's "100 Continue" makes tollgate ask the
// client for the body, and the body reaches the backend.
func TestExpectContinueAccepted(t *testing.T) {
	addr, heads, _ := expectingBackend(t, true)
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.send(t, "POST /expect HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	interim, _ := c.response(t, "POST")
	if interim.StatusCode != 100 {
		t.Fatalf("client got %d before sending the body, want 100 Continue", interim.StatusCode)
	}
	if h := <-heads; !slices.Equal(h.header("Expect"), []string{"100-continue"}) {
		t.Fatalf("backend saw Expect %q, want 100-continue\n%s", h.header("Expect"), h)
	}
	c.send(t, "hello")
	resp, body := c.response(t, "POST")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("client got %d %q, want 200 \"hello\"", resp.StatusCode, body)
	}
}

// TestExpectContinueRefused: a backend that answers 401 at once spares the
// client its body: the client gets the 401 without having sent the body,
// and tollgate sends the backend nothing after the head.
func TestExpectContinueRefused(t *testing.T) {
	addr, heads, after := expectingBackend(t, false)
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.c.SetDeadline(time.Now().Add(waitLimit))
	c.send(t, "POST /expect HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
	<-heads
	resp, body := c.response(t, "POST")
	if resp.StatusCode != 401 || body != "" || resp.Header.Get("Www-Authenticate") != "Basic" {
		t.Fatalf("client got %d %q %v, want 401 with the backend's challenge", resp.StatusCode, body, resp.Header)
	}
	select {
	case n := <-after:
		if n != 0 {
			t.Fatalf("backend got %d bytes after the head, want 0", n)
		}
	case <-time.After(waitLimit):
		t.Fatal("tollgate kept the refused backend connection open")
	}
	if a := p.accessFor(t, "/expect"); a.Status != 401 || a.UpstreamStatus != "401" {
		t.Fatalf("access log status %d upstream_status %q, want 401 401", a.Status, a.UpstreamStatus)
	}
}
