package proxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestUnrequestedSwitchingProtocols: a backend that answers 101 to a plain
// request has switched its connection to something else: the client gets
// 502, never the 101, and the connection is not pooled.
func TestUnrequestedSwitchingProtocols(t *testing.T) {
	backend := rawBackend(t, func(c net.Conn) {
		readRequestHead(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	})
	p := startProxy(t, upstreamYAML(backend))
	resp, _ := rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 502 || !strings.Contains(resp.Header.Get("Proxy-Status"), "us_bad_response") {
		t.Fatalf("status %d Proxy-Status %q, want 502 us_bad_response", resp.StatusCode, resp.Header.Get("Proxy-Status"))
	}
	if n := poolOf(p, "app", 0).idleCount(); n != 0 {
		t.Errorf("%d idle pooled connections after a stray 101, want 0", n)
	}
}

// TestExpectContinueSkipsProcessing: a 102 Processing while the client
// waits for 100 Continue is not the final answer: tollgate keeps waiting,
// the 100 comes, the body goes, and the final 200 reaches the client.
func TestExpectContinueSkipsProcessing(t *testing.T) {
	backend := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readRequestHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n")
		body := make([]byte, 5)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"+string(body))
	})
	p := startProxy(t, upstreamYAML(backend))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("first line %q, want 100 Continue", line)
	}
	br.ReadString('\n') // the empty line after it
	io.WriteString(c, "hello")
	rest, _ := br.ReadString('\n')
	if !strings.HasPrefix(rest, "HTTP/1.1 200") {
		t.Fatalf("final status line %q, want 200", rest)
	}
}

// TestBadRequestLingers: after answering a malformed request, tollgate
// half-closes and reads off what the client still sends (Nginx's lingering
// close) instead of closing with unread input, which makes the kernel send
// RST: the client's further writes succeed and it reads the 400 and then a
// clean end of stream, not "connection reset by peer".
func TestBadRequestLingers(t *testing.T) {
	b := namedBackend(t, "ok")
	p := startProxy(t, upstreamYAML(b.Addr))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "NOT A REQUEST\r\n\r\n"+strings.Repeat("junk ", 20000))
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 400") {
		t.Fatalf("got %q, %v; want the 400 status line", line, err)
	}
	if _, err := io.WriteString(c, strings.Repeat("more ", 10000)); err != nil {
		t.Fatalf("write after the 400: %v (tollgate reset instead of lingering)", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("end of stream after the 400: %v, want a clean EOF", err)
	}
}
