package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ErrBadChunk is a malformed chunked body.
var ErrBadChunk = errors.New("http: malformed chunked encoding")

// maxTrailerBytes bounds a chunked body's trailer section.
const maxTrailerBytes = 16 << 10

// Body reads one message body in its framing: a fixed length, chunked, or
// until the connection closes. The zero Body is an empty body. Reset it for
// each message; it allocates nothing but the trailer section's string.
type Body struct {
	br        *bufio.Reader
	remaining int64 // bytes left: of the body (fixed) or of the chunk
	chunked   bool
	untilEOF  bool
	done      bool
	err       error
	// Trailer holds a chunked body's trailer fields once Read returned io.EOF.
	Trailer Header
	trail   []byte
}

// Reset prepares b to read a body of length n from br; n < 0 with chunked
// reads chunks, n < 0 without reads until EOF.
func (b *Body) Reset(br *bufio.Reader, n int64, chunked bool) {
	*b = Body{br: br, remaining: n, chunked: chunked, untilEOF: n < 0 && !chunked,
		Trailer: b.Trailer[:0], trail: b.trail}
	if n == 0 && !chunked {
		b.done = true
	}
}

// Done reports whether the body was read to its end.
func (b *Body) Done() bool { return b.isDone() && b.err == nil }

// isDone reports whether no byte of the body is left; the zero Body, never
// Reset, has no reader and so no bytes.
func (b *Body) isDone() bool { return b.done || b.br == nil }

func (b *Body) Read(p []byte) (int, error) {
	if b.isDone() {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	switch {
	case b.chunked:
		return b.readChunked(p)
	case b.untilEOF:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.done = true
		} else if err != nil {
			b.err = err
		}
		return n, err
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		b.done = true
		return n, nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *Body) readChunked(p []byte) (int, error) {
	if b.remaining <= 0 {
		if err := b.nextChunk(); err != nil {
			b.err = err
			return 0, err
		}
		if b.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		err = b.chunkEnd()
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// chunkEnd consumes the CRLF after a chunk's data.
func (b *Body) chunkEnd() error {
	line, err := b.readLine()
	if err != nil {
		return err
	}
	if len(line) != 0 {
		return ErrBadChunk
	}
	return nil
}

// nextChunk reads a chunk-size line (extensions ignored); a zero size ends
// the body and reads the trailer section.
func (b *Body) nextChunk() error {
	line, err := b.readLine()
	if err != nil {
		return err
	}
	size := line
	if i := bytes.IndexByte(size, ';'); i >= 0 {
		size = size[:i]
	}
	size = bytes.TrimRight(size, " \t")
	if len(size) == 0 || len(size) > 15 {
		return ErrBadChunk
	}
	var n int64
	for i := 0; i < len(size); i++ {
		d := unhex(size[i])
		if d < 0 {
			return ErrBadChunk
		}
		n = n<<4 | int64(d)
	}
	if n > 0 {
		b.remaining = n
		return nil
	}
	return b.readTrailer()
}

func (b *Body) readTrailer() error {
	buf, err := readHead(b.br, maxTrailerBytes, b.trail, false)
	b.trail = buf
	switch {
	case err == io.EOF:
		return io.ErrUnexpectedEOF
	case err != nil:
		return err
	}
	b.done = true
	if len(buf) <= 2 {
		return nil
	}
	if err := parseFields(string(buf), &b.Trailer); err != nil {
		return ErrBadChunk
	}
	return nil
}

// readLine reads one CRLF- (or LF-) terminated line of a chunked body. The
// line is valid until the next read.
func (b *Body) readLine() ([]byte, error) {
	line, err := b.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, ErrBadChunk
	case err == io.EOF:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
