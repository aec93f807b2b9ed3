//go:build !linux

package proxy

import "syscall"

// readTCPInfo is Linux-only; elsewhere records omit the tcp field.
func readTCPInfo(syscall.Conn) *tcpInfo { return nil }
