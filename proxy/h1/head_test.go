package h1

// Tests of how a message head is cut from the stream (readHead): its ends,
// its limit, and lines that arrive in pieces.

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestReadRequestEndOfInput(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		limit int
		want  error
	}{
		{"EOF before any byte", "", testHeadLimit, io.EOF},
		{"EOF after empty lines", "\r\n\r\n\n", testHeadLimit, io.EOF},
		{"EOF in request line", "GET / HT", testHeadLimit, io.ErrUnexpectedEOF},
		{"EOF after request line", "GET / HTTP/1.1\r\n", testHeadLimit, io.ErrUnexpectedEOF},
		{"EOF in a field", "GET / HTTP/1.1\r\nHost: h", testHeadLimit, io.ErrUnexpectedEOF},
		{"EOF before the empty line", "GET / HTTP/1.1\r\nHost: h\r\n", testHeadLimit, io.ErrUnexpectedEOF},
		{"EOF after the final CR", "GET / HTTP/1.1\r\nHost: h\r\n\r", testHeadLimit, io.ErrUnexpectedEOF},
		{"head over the limit", "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + strings.Repeat("a", 200) + "\r\n\r\n", 100, ErrHeadTooLarge},
		{"request line over the limit", "GET /" + strings.Repeat("a", 10000) + " HTTP/1.1\r\nHost: h\r\n\r\n", 8000, ErrHeadTooLarge},
		{"one byte over the limit", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", len("GET / HTTP/1.1\r\nHost: h\r\n\r\n") - 1, ErrHeadTooLarge},
		// The head limit bounds empty lines too, or a client could keep a
		// reader busy forever without sending a request.
		{"empty lines over the limit", strings.Repeat("\r\n", 1000) + "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1000, ErrHeadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readRequestString(tt.raw, tt.limit)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadRequest err = %v, want %v", err, tt.want)
			}
			var he *Error
			if tt.want == ErrHeadTooLarge && (!errors.As(err, &he) || he.Status != 431) {
				t.Errorf("head too large: err = %v, want an *Error with status 431", err)
			}
		})
	}
}

func TestReadRequestAtExactLimit(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	if _, _, err := readRequestString(raw, len(raw)); err != nil {
		t.Fatalf("head of exactly the limit: %v", err)
	}
}

// TestReadRequestLineAcrossBufferBoundary moves a long field line across
// every alignment with a small bufio buffer: a line that does not fit the
// buffer arrives in pieces, and a last piece of just "\r\n" or "\n" is not
// the empty line that ends the head. Were it taken for one, the fields after
// it (here Content-Length) would be read as the body or the next request.
func TestReadRequestLineAcrossBufferBoundary(t *testing.T) {
	const bufSize = 16 // bufio's minimum
	for pad := 0; pad <= 3*bufSize; pad++ {
		for _, eol := range []string{"\r\n", "\n"} {
			raw := "POST /p HTTP/1.1" + eol + "Host: h" + eol + "X-Pad: " + strings.Repeat("p", pad) + eol +
				"Content-Length: 3" + eol + eol + "abcNEXT"
			br := bufio.NewReaderSize(strings.NewReader(raw), bufSize)
			var r Request
			if err := ReadRequest(br, testHeadLimit, &r); err != nil {
				t.Fatalf("pad %d, eol %q: ReadRequest: %v", pad, eol, err)
			}
			if r.ContentLength != 3 || r.Header.Get("X-Pad") != strings.Repeat("p", pad) || len(r.Header) != 3 {
				t.Fatalf("pad %d, eol %q: ContentLength %d, fields %q", pad, eol, r.ContentLength, r.Header)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != "abcNEXT" {
				t.Fatalf("pad %d, eol %q: left %q unread, want the body", pad, eol, rest)
			}
		}
	}
}

// TestReadRequestSmallBufferSameResult reads every table request through the
// smallest bufio buffer and checks it parses as through a large one.
func TestReadRequestSmallBufferSameResult(t *testing.T) {
	var raws []string
	for _, tt := range validRequests {
		raws = append(raws, tt.raw)
	}
	for _, tt := range rejectedRequests {
		raws = append(raws, tt.raw)
	}
	for _, raw := range raws {
		small := bufio.NewReaderSize(strings.NewReader(raw), 16)
		large := bufio.NewReaderSize(strings.NewReader(raw), 64<<10)
		var rs, rl Request
		errS, errL := ReadRequest(small, testHeadLimit, &rs), ReadRequest(large, testHeadLimit, &rl)
		if errorStatus(errS) != errorStatus(errL) || errS == nil && !reflect.DeepEqual(viewRequest(&rs), viewRequest(&rl)) {
			t.Errorf("%q:\nsmall buffer: %v %+v\nlarge buffer: %v %+v", raw, errS, viewRequest(&rs), errL, viewRequest(&rl))
		}
	}
}

// errorStatus is an error's *Error status, -1 for another error, 0 for nil.
func errorStatus(err error) int {
	var he *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &he):
		return he.Status
	}
	return -1
}
