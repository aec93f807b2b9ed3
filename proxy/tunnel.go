package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// tunnel hands the client connection and the upstream connection over to
// each other after a backend agreed to switch protocols (WebSocket, h2c, …):
// tollgate writes the 101 head and then copies bytes both ways until both
// sides are done.
func (s *Server) tunnel(w http.ResponseWriter, st *requestState, resp *http.Response, c *upstreamConn) {
	st.status = resp.StatusCode
	hj, ok := w.(http.Hijacker)
	if !ok {
		c.close(reasonTunnelClosed)
		return
	}
	dconn, brw, err := hj.Hijack()
	if err != nil {
		c.close(reasonTunnelClosed)
		return
	}
	s.tunnels.add(dconn)
	defer s.tunnels.remove(dconn)
	dconn.SetDeadline(time.Time{})

	writeSwitchingHead(brw.Writer, resp)
	if err := brw.Flush(); err != nil {
		dconn.Close()
		c.close(reasonCancelledByDS)
		return
	}
	// No per-read deadline on the tunnel's upstream side beyond
	// proxy_read_timeout, as Nginx: a silent tunnel closes then.
	c.writeTimeout = 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Bytes the client sent behind its request head come first.
		pipe(c.raw, io.MultiReader(brw.Reader, dconn))
	}()
	pipe(dconn, c.br)
	wg.Wait()
	dconn.Close()
	c.close(reasonTunnelClosed)
}

// pipe copies src to dst until src ends, then half-closes dst so the other
// side sees the end too; on an error it closes dst to stop the other copy.
func pipe(dst net.Conn, src io.Reader) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
		return
	}
	dst.Close()
}

// writeSwitchingHead writes a 101 response head: the backend's headers with
// the Connection and Upgrade pair that makes the switch.
func writeSwitchingHead(bw *bufio.Writer, resp *http.Response) {
	bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	named := connectionTokens(resp.Header)
	for k, vv := range resp.Header {
		if skipHeader(k, named) {
			continue
		}
		for _, v := range vv {
			writeHeader(bw, k, v)
		}
	}
	bw.WriteString("Connection: Upgrade\r\n")
	writeHeader(bw, "Upgrade", resp.Header.Get("Upgrade"))
	bw.WriteString("\r\n")
}

// tunnelSet tracks hijacked client connections so shutdown can close them.
type tunnelSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (t *tunnelSet) add(c net.Conn) {
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

func (t *tunnelSet) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *tunnelSet) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		c.Close()
	}
}

func (t *tunnelSet) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}
