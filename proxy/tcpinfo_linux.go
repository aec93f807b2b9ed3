package proxy

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// readTCPInfo reads TCP_INFO from a connection's socket just before it is
// closed: the kernel's view of who ended it (CLOSE_WAIT: the peer sent FIN
// first; CLOSE: an RST arrived; ESTABLISHED: we close first) and how the
// path behaved. It returns nil where the socket cannot be read.
func readTCPInfo(c syscall.Conn) *tcpInfo {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || serr != nil {
		return nil
	}
	return &tcpInfo{
		State:        tcpStateName(info.State),
		TotalRetrans: info.Total_retrans,
		RTTMicros:    info.Rtt,
	}
}

// tcpStateName names a Linux TCP state (include/net/tcp_states.h).
func tcpStateName(s uint8) string {
	names := [...]string{1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
		5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
		10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return "UNKNOWN"
}
