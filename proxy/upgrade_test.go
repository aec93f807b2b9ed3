package proxy

import (
	"bufio"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

const wsHandshake = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

const ws101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"

// upgradeEchoBackend switches protocols, sending hello in the same write as
// the 101 head, then echoes bytes until the client's side ends; sawEOF is
// closed then. It reports the handshake it saw.
func upgradeEchoBackend(t testing.TB, hello string) (addr string, heads <-chan seenRequest, sawEOF <-chan struct{}) {
	hs := make(chan seenRequest, 1)
	eof := make(chan struct{})
	addr = rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		s, err := readSeenHead(br)
		if err != nil {
			return
		}
		hs <- s
		if _, err := io.WriteString(c, ws101+hello); err != nil {
			return
		}
		if _, err := io.Copy(c, br); err == nil {
			close(eof)
		}
	})
	return addr, hs, eof
}

// readN reads exactly n bytes from the client side of a tunnel.
func readN(t testing.TB, rc *rawClient, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc.br, b); err != nil {
		t.Fatalf("tunnel read: %v (got %q)", err, b)
	}
	return string(b)
}

// TestUpgradeTunnel does a WebSocket handshake through tollgate and uses the
// tunnel: bytes the client sent right behind its head, bytes the backend
// sent in the packet of its 101, an echo, and the client's end of stream
// reaching the backend, whose end then reaches the client.
func TestUpgradeTunnel(t *testing.T) {
	addr, heads, sawEOF := upgradeEchoBackend(t, "HELLO")
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.send(t, wsHandshake+"early")
	resp, err := c.head("GET")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" ||
		resp.Header.Get("Connection") != "Upgrade" || resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("client got %d %v, want the backend's 101", resp.StatusCode, resp.Header)
	}
	h := <-heads
	for name, want := range map[string]string{
		"Upgrade": "websocket", "Connection": "Upgrade", "Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
	} {
		if got := h.header(name); !slices.Equal(got, []string{want}) {
			t.Errorf("backend saw %s %q, want %q", name, got, want)
		}
	}
	if got := readN(t, c, 5); got != "HELLO" {
		t.Fatalf("client got %q, want the backend's HELLO sent with the 101", got)
	}
	if got := readN(t, c, 5); got != "early" {
		t.Fatalf("client got %q, want its early bytes echoed", got)
	}
	c.send(t, "ping")
	if got := readN(t, c, 4); got != "ping" {
		t.Fatalf("client got %q, want \"ping\" echoed", got)
	}
	c.c.(*net.TCPConn).CloseWrite()
	waitClosed(t, sawEOF, "backend sees the client's end of stream")
	if rest, err := io.ReadAll(c.br); err != nil || len(rest) != 0 {
		t.Fatalf("after the backend closed, client read %q, %v; want a clean EOF", rest, err)
	}
	if a := p.accessFor(t, "/ws"); a.Status != 101 || a.UpstreamStatus != "101" {
		t.Fatalf("access log status %d upstream_status %q, want 101 101", a.Status, a.UpstreamStatus)
	}
}

// TestUpgradeClientClose checks that a client closing its connection ends
// the tunnel: the backend sees EOF.
func TestUpgradeClientClose(t *testing.T) {
	addr, _, sawEOF := upgradeEchoBackend(t, "")
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.send(t, wsHandshake)
	if resp, err := c.head("GET"); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	c.send(t, "x")
	if got := readN(t, c, 1); got != "x" {
		t.Fatalf("echo %q", got)
	}
	c.c.Close()
	waitClosed(t, sawEOF, "backend sees EOF after the client closed")
}

// TestUpgradeBackendHalfClose checks that a backend's end of stream reaches
// the client while the client can still send the other way.
func TestUpgradeBackendHalfClose(t *testing.T) {
	got := make(chan string, 1)
	addr := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readSeenHead(br); err != nil {
			return
		}
		io.WriteString(c, ws101+"bye")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(br)
		got <- string(b)
	})
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.send(t, wsHandshake)
	if resp, err := c.head("GET"); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	if b, err := io.ReadAll(c.br); err != nil || string(b) != "bye" {
		t.Fatalf("client read %q, %v; want \"bye\" then EOF", b, err)
	}
	c.send(t, "still here")
	c.c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "still here" {
			t.Fatalf("backend read %q after its half-close, want \"still here\"", s)
		}
	case <-time.After(waitLimit):
		t.Fatal("backend never saw the client's end of stream")
	}
}

// TestUpgradeAnsweredNormally checks that an Upgrade request the backend
// answers with 200 is an ordinary exchange: the client gets the response
// and its connection stays HTTP.
func TestUpgradeAnsweredNormally(t *testing.T) {
	addr, seen, _ := scriptedBackend(t, func(s seenRequest) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot today"
	})
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.send(t, wsHandshake)
	if resp, body := c.response(t, "GET"); resp.StatusCode != 200 || body != "not today" {
		t.Fatalf("client got %d %q, want 200 \"not today\"", resp.StatusCode, body)
	}
	if s := nextSeen(t, seen); s.header("Upgrade") == nil {
		t.Fatalf("backend did not see the Upgrade request\n%s", s)
	}
	c.send(t, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := c.response(t, "GET"); resp.StatusCode != 200 || body != "not today" {
		t.Fatalf("next request: got %d %q", resp.StatusCode, body)
	}
	if s := nextSeen(t, seen); s.Line != "GET /after HTTP/1.1" || s.header("Upgrade") != nil {
		t.Fatalf("backend saw %q with Upgrade %q for the plain request", s.Line, s.header("Upgrade"))
	}
}
