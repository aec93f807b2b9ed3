package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// bodyCases are bodies in each framing, with what Read must return and what
// must stay on the reader after the body (the next pipelined message).
var bodyCases = []struct {
	name        string
	raw         string
	n           int64 // as Reset takes it: -1 for chunked or until EOF
	chunked     bool
	want        string
	wantErr     error // nil: the body ends with io.EOF
	wantTrailer Header
	wantRest    string // checked only when wantErr is nil
}{
	// Fixed length.
	{name: "fixed exact", raw: "hello", n: 5, want: "hello"},
	{name: "fixed leaves the next request", raw: "helloGET / HTTP/1.1\r\n", n: 5, want: "hello", wantRest: "GET / HTTP/1.1\r\n"},
	{name: "fixed zero", raw: "GET /", n: 0, want: "", wantRest: "GET /"},
	{name: "fixed short", raw: "hel", n: 5, want: "hel", wantErr: io.ErrUnexpectedEOF},
	{name: "fixed empty input", raw: "", n: 1, want: "", wantErr: io.ErrUnexpectedEOF},
	{name: "fixed larger than the buffer", raw: strings.Repeat("x", 10000) + "tail", n: 10000, want: strings.Repeat("x", 10000), wantRest: "tail"},
	// Until EOF.
	{name: "close-delimited", raw: "all of it\r\n0\r\n\r\n", n: -1, want: "all of it\r\n0\r\n\r\n"},
	{name: "close-delimited empty", raw: "", n: -1, want: ""},
	// Chunked (RFC 9112 §7.1).
	{name: "chunked one chunk", raw: "5\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, want: "hello"},
	{name: "chunked empty", raw: "0\r\n\r\nNEXT", n: -1, chunked: true, want: "", wantRest: "NEXT"},
	{name: "chunked leaves the next request", raw: "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", n: -1, chunked: true, want: "abc", wantRest: "GET / HTTP/1.1\r\n"},
	{name: "chunked several", raw: "1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n", n: -1, chunked: true, want: "abcdef"},
	{name: "chunked extensions", raw: "5;name=value\r\nhello\r\n6 ; a=\"b;c\" ;d\r\n world\r\n0;last\r\n\r\n", n: -1, chunked: true, want: "hello world"},
	// RFC 9112 §7.1.1 allows BWS only before ";"; Body also takes it with
	// no extension after. The backend never sees these bytes: tollgate
	// re-chunks what it decodes.
	{name: "chunked whitespace after size", raw: "5 \r\nhello\r\n0\t\r\n\r\n", n: -1, chunked: true, want: "hello"},
	{name: "chunked BWS before extension", raw: "5\t;x\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, want: "hello"},
	{name: "chunked upper-case hex", raw: "A\r\n0123456789\r\n1F\r\n" + strings.Repeat("u", 31) + "\r\n0\r\n\r\n", n: -1, chunked: true, want: "0123456789" + strings.Repeat("u", 31)},
	{name: "chunked lower-case hex", raw: "a\r\n0123456789\r\n1f\r\n" + strings.Repeat("l", 31) + "\r\n0\r\n\r\n", n: -1, chunked: true, want: "0123456789" + strings.Repeat("l", 31)},
	{name: "chunked leading zeros", raw: "0005\r\nhello\r\n000\r\n\r\n", n: -1, chunked: true, want: "hello"},
	{name: "chunked LF-only lines", raw: "5\nhello\n0\n\nNEXT", n: -1, chunked: true, want: "hello", wantRest: "NEXT"},
	{name: "chunked larger than the buffer", raw: "2710\r\n" + strings.Repeat("y", 10000) + "\r\n0\r\n\r\n", n: -1, chunked: true, want: strings.Repeat("y", 10000)},
	{name: "chunked data holding CRLF and a size", raw: "6\r\n0\r\n\r\nX\r\n0\r\n\r\n", n: -1, chunked: true, want: "0\r\n\r\nX"},
	{
		name: "chunked trailers", raw: "3\r\nabc\r\n0\r\nX-T: 1\r\nx-u:  v w \r\n\r\nNEXT", n: -1, chunked: true,
		want: "abc", wantTrailer: Header{{"X-T", "1"}, {"x-u", "v w"}}, wantRest: "NEXT",
	},
	{
		name: "chunked trailer with LF only", raw: "0\nX-T: 1\n\n", n: -1, chunked: true,
		want: "", wantTrailer: Header{{"X-T", "1"}},
	},
	// Malformed chunked bodies.
	{name: "no CRLF after chunk data", raw: "5\r\nhelloX\r\n0\r\n\r\n", n: -1, chunked: true, want: "hello", wantErr: ErrBadChunk},
	{name: "chunk data longer than its size", raw: "5\r\nhello0\r\n\r\n", n: -1, chunked: true, want: "hello", wantErr: ErrBadChunk},
	{name: "chunk data shorter than its size", raw: "7\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, want: "hello\r\n", wantErr: ErrBadChunk},
	// A bare LF ends a chunked line as it ends a head line (RFC 9112 §2.2
	// allows it for heads; Body extends it to chunk lines). So a size one
	// too large can swallow the CR: harmless to a backend, which gets the
	// body re-chunked, never these bytes.
	{name: "LF alone after chunk data", raw: "6\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, want: "hello\r"},
	{name: "CR CR LF after data", raw: "1\r\na\r\r\n0\r\n\r\n", n: -1, chunked: true, want: "a", wantErr: ErrBadChunk},
	{name: "empty size line", raw: "\r\nhello\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "garbage size", raw: "zz\r\nhello\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "size with 0x", raw: "0x5\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "negative size", raw: "-5\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "plus size", raw: "+5\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "leading space in size", raw: " 5\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "space inside size", raw: "1 0\r\n" + strings.Repeat("s", 16) + "\r\n0\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "only an extension", raw: ";x\r\nhello\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "size of 16 hex digits", raw: "1000000000000000\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "size overflowing int64", raw: "ffffffffffffffffff\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "size line over the buffer", raw: "5;" + strings.Repeat("e", 5000) + "\r\nhello\r\n0\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "trailer without a colon", raw: "0\r\nbad trailer\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "trailer obs-fold", raw: "0\r\nX-T: a\r\n b\r\n\r\n", n: -1, chunked: true, wantErr: ErrBadChunk},
	{name: "trailer over the limit", raw: "0\r\nX-T: " + strings.Repeat("t", maxTrailerBytes) + "\r\n\r\n", n: -1, chunked: true, wantErr: ErrHeadTooLarge},
	// Chunked bodies cut short.
	{name: "EOF in size line", raw: "5", n: -1, chunked: true, wantErr: io.ErrUnexpectedEOF},
	{name: "EOF before any chunk", raw: "", n: -1, chunked: true, wantErr: io.ErrUnexpectedEOF},
	{name: "EOF mid-chunk", raw: "5\r\nhel", n: -1, chunked: true, want: "hel", wantErr: io.ErrUnexpectedEOF},
	{name: "EOF after chunk data", raw: "5\r\nhello", n: -1, chunked: true, want: "hello", wantErr: io.ErrUnexpectedEOF},
	{name: "EOF after chunk CRLF", raw: "5\r\nhello\r\n", n: -1, chunked: true, want: "hello", wantErr: io.ErrUnexpectedEOF},
	{name: "EOF after last chunk", raw: "5\r\nhello\r\n0\r\n", n: -1, chunked: true, want: "hello", wantErr: io.ErrUnexpectedEOF},
	{name: "EOF in trailer", raw: "0\r\nX-T: 1\r\n", n: -1, chunked: true, wantErr: io.ErrUnexpectedEOF},
}

// readBody reads b to its end or error step bytes at a time.
func readBody(b *Body, step int) (string, error) {
	var out []byte
	p := make([]byte, step)
	for i := 0; ; i++ {
		n, err := b.Read(p)
		out = append(out, p[:n]...)
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return string(out), err
		}
		if n == 0 && i > 1<<20 {
			return string(out), errors.New("no progress")
		}
	}
}

func TestBodyRead(t *testing.T) {
	for _, tt := range bodyCases {
		for _, step := range []int{1, 3, 4096, 32 << 10} {
			br := bufio.NewReader(strings.NewReader(tt.raw))
			var b Body
			b.Reset(br, tt.n, tt.chunked)
			got, err := readBody(&b, step)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s, step %d: err = %v, want %v", tt.name, step, err, tt.wantErr)
				continue
			}
			if got != tt.want {
				t.Errorf("%s, step %d: read %q, want %q", tt.name, step, got, tt.want)
			}
			if b.Done() != (tt.wantErr == nil) {
				t.Errorf("%s, step %d: Done() = %v after err %v", tt.name, step, b.Done(), err)
			}
			if tt.wantErr != nil {
				// The error sticks.
				if _, again := b.Read(make([]byte, 8)); !errors.Is(again, tt.wantErr) {
					t.Errorf("%s, step %d: second Read err = %v, want %v again", tt.name, step, again, tt.wantErr)
				}
				continue
			}
			if len(b.Trailer) != 0 || len(tt.wantTrailer) != 0 {
				if !reflect.DeepEqual(b.Trailer, tt.wantTrailer) {
					t.Errorf("%s, step %d: Trailer = %q, want %q", tt.name, step, b.Trailer, tt.wantTrailer)
				}
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.wantRest {
				t.Errorf("%s, step %d: left %q, want %q", tt.name, step, rest, tt.wantRest)
			}
			if n, err := b.Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Errorf("%s, step %d: Read after the end = %d, %v", tt.name, step, n, err)
			}
		}
	}
}

// TestBodyOneByteReader feeds each body through a reader that returns one
// byte per Read, so every line and chunk arrives in pieces.
func TestBodyOneByteReader(t *testing.T) {
	for _, tt := range bodyCases {
		if tt.name == "size line over the buffer" {
			continue // depends on the buffer, not on how bytes arrive
		}
		br := bufio.NewReader(iotest.OneByteReader(strings.NewReader(tt.raw)))
		var b Body
		b.Reset(br, tt.n, tt.chunked)
		got, err := readBody(&b, 4096)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("%s: read %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestBodyReadError(t *testing.T) {
	boom := errors.New("boom")
	for _, framing := range []struct {
		name    string
		n       int64
		chunked bool
	}{{"fixed", 100, false}, {"chunked", -1, true}, {"until EOF", -1, false}} {
		t.Run(framing.name, func(t *testing.T) {
			src := "a\r\n0123456789\r\n"
			if !framing.chunked {
				src = "0123456789"
			}
			br := bufio.NewReader(io.MultiReader(strings.NewReader(src), iotest.ErrReader(boom)))
			var b Body
			b.Reset(br, framing.n, framing.chunked)
			got, err := readBody(&b, 64)
			if !errors.Is(err, boom) || got != "0123456789" {
				t.Errorf("read %q, %v; want the bytes, then boom", got, err)
			}
			if b.Done() {
				t.Error("Done() after a read error")
			}
		})
	}
}

func TestBodyDone(t *testing.T) {
	t.Run("fixed", func(t *testing.T) {
		var b Body
		b.Reset(bufio.NewReader(strings.NewReader("abcdef")), 4, false)
		steps := []struct {
			p        int
			wantN    int
			wantErr  error
			wantDone bool
		}{
			{0, 0, nil, false},
			{2, 2, nil, false},
			{8, 2, nil, true}, // the last bytes come without io.EOF
			{8, 0, io.EOF, true},
			{8, 0, io.EOF, true},
		}
		for i, s := range steps {
			n, err := b.Read(make([]byte, s.p))
			if n != s.wantN || err != s.wantErr || b.Done() != s.wantDone {
				t.Errorf("step %d: Read = %d, %v, Done %v; want %d, %v, Done %v", i, n, err, b.Done(), s.wantN, s.wantErr, s.wantDone)
			}
		}
	})
	t.Run("zero length is done at once", func(t *testing.T) {
		var b Body
		b.Reset(bufio.NewReader(strings.NewReader("x")), 0, false)
		if !b.Done() {
			t.Error("Done() = false for an empty body")
		}
	})
	t.Run("chunked is done after the trailer", func(t *testing.T) {
		var b Body
		b.Reset(bufio.NewReader(strings.NewReader("2\r\nab\r\n0\r\n\r\n")), -1, true)
		p := make([]byte, 8)
		if n, err := b.Read(p); n != 2 || err != nil || b.Done() {
			t.Fatalf("Read = %d, %v, Done %v; want 2, nil, not done", n, err, b.Done())
		}
		if n, err := b.Read(p); n != 0 || err != io.EOF || !b.Done() {
			t.Fatalf("Read = %d, %v, Done %v; want 0, EOF, done", n, err, b.Done())
		}
	})
	t.Run("until EOF", func(t *testing.T) {
		var b Body
		b.Reset(bufio.NewReader(strings.NewReader("ab")), -1, false)
		if _, err := io.ReadAll(&b); err != nil || !b.Done() {
			t.Errorf("ReadAll err %v, Done %v", err, b.Done())
		}
	})
	t.Run("not done after an error", func(t *testing.T) {
		var b Body
		b.Reset(bufio.NewReader(strings.NewReader("zz\r\n")), -1, true)
		if _, err := io.ReadAll(&b); !errors.Is(err, ErrBadChunk) || b.Done() {
			t.Errorf("ReadAll err %v, Done %v", err, b.Done())
		}
	})
}

// TestBodyZeroValue checks the documented promise: the zero Body is an empty
// body.
func TestBodyZeroValue(t *testing.T) {
	var b Body
	if n, err := b.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("zero Body Read = %d, %v; want 0, io.EOF", n, err)
	}
	if !b.Done() {
		t.Error("zero Body not Done")
	}
}

// TestBodyResetReuse reads three bodies with one Body from one reader: the
// trailer of the chunked one must not carry over, and trailer values a
// caller kept must survive the next body.
func TestBodyResetReuse(t *testing.T) {
	raw := "abc" + "2\r\nde\r\n0\r\nX-T: kept\r\n\r\n" + "1\r\nf\r\n0\r\n\r\n" + "gh" + "0\r\nX-U: 2\r\nX-V: 3\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	var b Body
	steps := []struct {
		n           int64
		chunked     bool
		want        string
		wantTrailer Header
	}{
		{3, false, "abc", nil},
		{-1, true, "de", Header{{"X-T", "kept"}}},
		{-1, true, "f", nil},
		{2, false, "gh", nil},
		{-1, true, "", Header{{"X-U", "2"}, {"X-V", "3"}}},
	}
	var kept string
	for i, s := range steps {
		b.Reset(br, s.n, s.chunked)
		got, err := io.ReadAll(&b)
		if err != nil || string(got) != s.want {
			t.Fatalf("body %d: %q, %v; want %q", i, got, err, s.want)
		}
		if len(b.Trailer) != len(s.wantTrailer) || len(s.wantTrailer) > 0 && !reflect.DeepEqual(b.Trailer, s.wantTrailer) {
			t.Errorf("body %d: Trailer %q, want %q", i, b.Trailer, s.wantTrailer)
		}
		if i == 1 {
			kept = b.Trailer[0].Value
		}
	}
	if kept != "kept" {
		t.Errorf("a kept trailer value changed to %q", kept)
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		t.Error("bytes left after the last body")
	}
}

func TestBodyReadAllocs(t *testing.T) {
	payload := strings.Repeat("0123456789abcdef", 4) // 64 bytes
	tests := []struct {
		name    string
		raw     string
		n       int64
		chunked bool
	}{
		{"fixed 64 bytes", payload, 64, false},
		{"chunked 64 bytes, no trailer", "40\r\n" + payload + "\r\n0\r\n\r\n", -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sr := strings.NewReader(tt.raw)
			br := bufio.NewReader(sr)
			var b Body
			p := make([]byte, 128)
			read := func() {
				sr.Reset(tt.raw)
				br.Reset(sr)
				b.Reset(br, tt.n, tt.chunked)
				total := 0
				for {
					n, err := b.Read(p)
					total += n
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				if total != 64 {
					t.Fatalf("read %d bytes", total)
				}
			}
			read()
			if got := testing.AllocsPerRun(100, read); got != 0 {
				t.Errorf("reading the body allocates %v times, want 0", got)
			}
		})
	}
}

func TestWriteChunk(t *testing.T) {
	tests := []struct {
		name string
		p    string
		want string
	}{
		{"empty writes nothing", "", ""},
		{"one byte", "a", "1\r\na\r\n"},
		{"lower-case hex size", strings.Repeat("z", 26), "1a\r\n" + strings.Repeat("z", 26) + "\r\n"},
		{"data with CRLF", "a\r\n0\r\n\r\n", "8\r\na\r\n0\r\n\r\n\r\n"},
		{"4 KiB", strings.Repeat("k", 4096), "1000\r\n" + strings.Repeat("k", 4096) + "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			bw := bufio.NewWriterSize(&out, 16)
			if err := WriteChunk(bw, []byte(tt.p)); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			if out.String() != tt.want {
				t.Errorf("WriteChunk wrote %q, want %q", out.String(), tt.want)
			}
		})
	}
}

func TestWriteLastChunk(t *testing.T) {
	tests := []struct {
		name    string
		trailer Header
		want    string
	}{
		{"no trailer", nil, "0\r\n\r\n"},
		{"empty trailer", Header{}, "0\r\n\r\n"},
		{"trailer fields in order", Header{{"X-B", "2"}, {"x-a", "1"}, {"X-Empty", ""}}, "0\r\nX-B: 2\r\nx-a: 1\r\nX-Empty: \r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			if err := WriteLastChunk(bw, tt.trailer); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			if out.String() != tt.want {
				t.Errorf("WriteLastChunk wrote %q, want %q", out.String(), tt.want)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	boom := errors.New("boom")
	bw := bufio.NewWriterSize(errWriter{boom}, 16)
	if err := WriteChunk(bw, bytes.Repeat([]byte("x"), 64)); !errors.Is(err, boom) {
		t.Errorf("WriteChunk to a failing writer: %v, want boom", err)
	}
	if err := WriteLastChunk(bw, Header{{"X", strings.Repeat("v", 64)}}); !errors.Is(err, boom) {
		t.Errorf("WriteLastChunk to a failing writer: %v, want boom", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteHeadHelpers(t *testing.T) {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	WriteStatusLine(bw, 404, "Not Found")
	WriteField(bw, "Content-Length", "0")
	WriteInt(bw, -9223372036854775808)
	bw.WriteString("|")
	WriteInt(bw, 0)
	bw.Flush()
	want := "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n-9223372036854775808|0"
	if out.String() != want {
		t.Errorf("wrote %q, want %q", out.String(), want)
	}
}

// TestChunkedRoundTrip writes bodies as chunks of several sizes, with and
// without a trailer, and reads them back through Body.
func TestChunkedRoundTrip(t *testing.T) {
	bodies := []string{"", "a", "hello, world", strings.Repeat("0123456789", 1000), "\r\n0\r\n\r\n"}
	trailers := []Header{nil, {{"X-Checksum", "abc"}, {"X-Other", "d e"}}}
	for _, body := range bodies {
		for _, size := range []int{1, 7, 4096, 1 << 20} {
			for _, trailer := range trailers {
				var wire bytes.Buffer
				bw := bufio.NewWriter(&wire)
				for p := []byte(body); len(p) > 0; {
					n := min(size, len(p))
					if err := WriteChunk(bw, p[:n]); err != nil {
						t.Fatal(err)
					}
					p = p[n:]
				}
				if err := WriteLastChunk(bw, trailer); err != nil {
					t.Fatal(err)
				}
				bw.WriteString("NEXT")
				bw.Flush()

				br := bufio.NewReader(&wire)
				var b Body
				b.Reset(br, -1, true)
				got, err := io.ReadAll(&b)
				if err != nil || string(got) != body || !b.Done() {
					t.Fatalf("len %d in chunks of %d: read %d bytes, %v, Done %v", len(body), size, len(got), err, b.Done())
				}
				if len(b.Trailer) != len(trailer) || len(trailer) > 0 && !reflect.DeepEqual(b.Trailer, trailer) {
					t.Errorf("trailer %q, want %q", b.Trailer, trailer)
				}
				if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
					t.Errorf("left %q, want NEXT", rest)
				}
			}
		}
	}
}
