package proxy

import (
	"io"
	"net"
	"testing"
)

// BenchmarkConnTagging measures what the downstream connection wrapper
// (byte counts, error notes for close records) adds to a 64-byte write and
// read over a real loopback connection, against the bare *net.TCPConn.
func BenchmarkConnTagging(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := "bare"
		if wrapped {
			name = "tagged"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.Copy(c, c) // echo
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			var c net.Conn = raw
			if wrapped {
				s := &Server{closes: newCloseLog(nil, 0, nil)}
				c = s.newDSConn(raw.(*net.TCPConn))
			}
			defer c.Close()
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
