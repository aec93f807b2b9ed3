package h1

import (
	"bufio"
	"strconv"
	"strings"
)

// WriteField writes one "Name: value" line.
func WriteField(bw *bufio.Writer, name, value string) {
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(value)
	bw.WriteString("\r\n")
}

// WriteInt writes n in decimal without allocating.
func WriteInt(bw *bufio.Writer, n int64) {
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), n, 10))
}

// WriteStatusLine writes "HTTP/1.1 SSS Reason".
func WriteStatusLine(bw *bufio.Writer, status int, reason string) {
	bw.WriteString("HTTP/1.1 ")
	WriteInt(bw, int64(status))
	bw.WriteByte(' ')
	bw.WriteString(reason)
	bw.WriteString("\r\n")
}

// WriteChunk writes p as one chunk of a chunked body; an empty p writes
// nothing, since a zero-size chunk ends the body.
func WriteChunk(bw *bufio.Writer, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	_, err := bw.WriteString("\r\n")
	return err
}

// WriteLastChunk ends a chunked body with its trailer fields.
func WriteLastChunk(bw *bufio.Writer, trailer Header) error {
	bw.WriteString("0\r\n")
	for _, f := range trailer {
		if notInTrailer(f.Name) {
			continue
		}
		WriteField(bw, f.Name, f.Value)
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// notInTrailer reports whether a field must not travel as a trailer: those
// that frame, route or manage the message (RFC 9110 §6.5.1), which a
// recipient could otherwise take for the head's.
func notInTrailer(name string) bool {
	for _, n := range [...]string{"Content-Length", "Transfer-Encoding", "Host", "Trailer",
		"TE", "Connection", "Keep-Alive", "Upgrade", "Proxy-Connection", "Content-Type", "Content-Encoding", "Authorization", "Set-Cookie", "Cookie"} {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}
