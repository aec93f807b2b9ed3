//go:build !linux

package proxy

import (
	"net"
	"time"
)

// setUserTimeout is Linux-only; elsewhere the kernel's default applies.
func setUserTimeout(*net.TCPConn, time.Duration) {}
