package proxy

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// tunnel hands the client connection and the upstream connection over to
// each other after a backend agreed to switch protocols (WebSocket, h2c, …):
// tollgate writes the 101 head and then copies bytes both ways until both
// sides are done. The session ends with the tunnel.
func (ss *session) tunnel(st *requestState, c *upstreamConn) {
	resp := &c.resp
	st.status = resp.Status
	ss.rw.writeHead(&headSpec{
		status: 101, reason: resp.Reason, fields: resp.Header, filter: true,
		contentLength: -1, noBody: true,
		extra: []h1.Field{{Name: "Connection", Value: "Upgrade"}, {Name: "Upgrade", Value: resp.Header.Get("Upgrade")}},
	})
	if err := ss.rw.flush(); err != nil {
		c.closeCaused(reasonCancelledByDS, ss.conn.connID())
		st.dsReason = writeFailure(err)
		return
	}
	d := ss.conn
	d.setPhase(phaseTunnel)
	c.phase = phaseTunnel
	d.SetDeadline(time.Time{})
	// A silent tunnel closes after proxy_read_timeout, as in Nginx; no
	// client check: the other direction's copy sees the client leave.
	c.client = nil
	c.writeTimeout = 0

	var wg sync.WaitGroup
	var upEnded bool // the client ended its direction first
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Bytes the client sent behind its request head go first.
		if pipe(c.raw, io.MultiReader(io.LimitReader(ss.br, int64(ss.br.Buffered())), ss.wire)) {
			upEnded = true
		}
	}()
	pipe(ss.wire, c.br)
	// The backend's side ended: the client's may not idle forever either.
	// (The other way round, proxy_read_timeout bounds each upstream read.)
	idle := c.readTimeout
	if idle <= 0 {
		idle = time.Minute
	}
	d.SetReadDeadline(time.Now().Add(idle))
	wg.Wait()
	if upEnded {
		st.dsReason, st.dsBy = reasonDSTunnelClosed, byPeer
	} else {
		st.dsReason, st.dsBy = reasonDSTunnelClosed, byProxy
	}
	st.dsCause = c.connID()
	c.close(reasonTunnelClosed)
}

// pipe copies src to dst until src ends, then half-closes dst so the other
// side sees the end too; on an error it closes dst to stop the other copy.
// It reports whether src ended cleanly.
func pipe(dst net.Conn, src io.Reader) bool {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
		return true
	}
	dst.SetDeadline(aLongTimeAgo)
	return false
}
