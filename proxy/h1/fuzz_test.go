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

// fuzzHeadLimit keeps fuzz inputs around the bufio buffer size, where heads
// arrive in pieces.
const fuzzHeadLimit = 4 << 10

// FuzzReadRequest checks that ReadRequest never panics, that what it accepts
// is well-formed, and that the result depends neither on how the bytes are
// buffered nor on what the reused Request held before.
func FuzzReadRequest(f *testing.F) {
	for _, tt := range validRequests {
		f.Add([]byte(tt.raw))
	}
	for _, tt := range rejectedRequests {
		f.Add([]byte(tt.raw))
	}
	for _, tt := range netHTTPRequests {
		f.Add([]byte(tt.raw))
	}
	f.Add([]byte(typicalRequest))
	f.Fuzz(func(t *testing.T, data []byte) {
		fresh := new(Request)
		err := ReadRequest(bufio.NewReader(bytes.NewReader(data)), fuzzHeadLimit, fresh)
		checkRequestError(t, err)

		small := new(Request)
		errSmall := ReadRequest(bufio.NewReaderSize(bytes.NewReader(data), 16), fuzzHeadLimit, small)
		if errorStatus(err) != errorStatus(errSmall) || err == nil && !reflect.DeepEqual(viewRequest(fresh), viewRequest(small)) {
			t.Fatalf("16-byte buffer parses differently:\n%v %+v\n%v %+v", err, viewRequest(fresh), errSmall, viewRequest(small))
		}

		dirty := new(Request)
		if e := ReadRequest(bufio.NewReader(strings.NewReader(typicalRequest+"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")), fuzzHeadLimit, dirty); e != nil {
			t.Fatal(e)
		}
		errDirty := ReadRequest(bufio.NewReader(bytes.NewReader(data)), fuzzHeadLimit, dirty)
		if errorStatus(err) != errorStatus(errDirty) || err == nil && !reflect.DeepEqual(viewRequest(fresh), viewRequest(dirty)) {
			t.Fatalf("a reused Request parses differently:\n%v %+v\n%v %+v", err, viewRequest(fresh), errDirty, viewRequest(dirty))
		}

		if err == nil {
			checkRequest(t, fresh)
		}
	})
}

func checkRequestError(t *testing.T, err error) {
	t.Helper()
	var he *Error
	switch {
	case err == nil, err == io.EOF, err == io.ErrUnexpectedEOF:
	case errors.As(err, &he):
		switch he.Status {
		case 400, 417, 431, 501, 505:
		default:
			t.Fatalf("refused with status %d: %v", he.Status, err)
		}
	default:
		t.Fatalf("unexpected error %T %v", err, err)
	}
}

// checkRequest checks the invariants of an accepted request.
func checkRequest(t *testing.T, r *Request) {
	t.Helper()
	if r.Method == "" || strings.IndexFunc(r.Method, func(c rune) bool { return c > 0x7f || !isTokenChar(byte(c)) }) >= 0 {
		t.Fatalf("method %q is not a token", r.Method)
	}
	if r.Target == "" {
		t.Fatal("empty target")
	}
	for i := 0; i < len(r.Target); i++ {
		if c := r.Target[i]; c <= ' ' || c == 0x7f {
			t.Fatalf("target %q holds %#x", r.Target, c)
		}
	}
	switch {
	case strings.HasPrefix(r.Target, "/"):
	case r.Target == "*":
		if r.Method != "OPTIONS" {
			t.Fatalf("asterisk-form with %s", r.Method)
		}
	case hasPrefixFold(r.Target, "http://"), hasPrefixFold(r.Target, "https://"):
	default:
		t.Fatalf("target %q is no form tollgate serves", r.Target)
	}
	if strings.ContainsAny(r.Host, " \t\r\n\x00/@") {
		t.Fatalf("host %q", r.Host)
	}
	for _, fl := range r.Header {
		if fl.Name == "" || strings.IndexFunc(fl.Name, func(c rune) bool { return c > 0x7f || !isTokenChar(byte(c)) }) >= 0 {
			t.Fatalf("field name %q", fl.Name)
		}
		if strings.ContainsAny(fl.Value, "\r\n\x00") {
			t.Fatalf("field %q value %q holds CR, LF or NUL", fl.Name, fl.Value)
		}
		if fl.Value != strings.Trim(fl.Value, " \t") {
			t.Fatalf("field %q value %q not trimmed", fl.Name, fl.Value)
		}
	}
	if r.Minor != 0 && r.Minor != 1 {
		t.Fatalf("minor %d", r.Minor)
	}
	if r.Minor == 1 && r.Header.Count("Host") != 1 || r.Header.Count("Host") > 1 {
		t.Fatalf("HTTP/1.%d with %d Host fields", r.Minor, r.Header.Count("Host"))
	}
	if r.ContentLength < -1 {
		t.Fatalf("ContentLength %d", r.ContentLength)
	}
	if r.Chunked != (r.ContentLength == -1) {
		t.Fatalf("Chunked %v with ContentLength %d", r.Chunked, r.ContentLength)
	}
	if r.Chunked && (r.Minor != 1 || !r.Header.HasToken("Transfer-Encoding", "chunked")) {
		t.Fatalf("chunked HTTP/1.%d request, Transfer-Encoding %q", r.Minor, r.Header.Get("Transfer-Encoding"))
	}
	if !r.Chunked && r.Header.Has("Transfer-Encoding") {
		t.Fatal("Transfer-Encoding accepted without chunked framing")
	}
	if r.ContentLength > 0 && !r.Header.Has("Content-Length") {
		t.Fatalf("ContentLength %d without a Content-Length field", r.ContentLength)
	}
	if r.Chunked && r.Header.Has("Content-Length") {
		t.Fatalf("chunked framing accepted with Content-Length %q", r.Header.Get("Content-Length"))
	}
	if r.ExpectContinue && (r.Minor != 1 || r.ContentLength == 0) {
		t.Fatal("ExpectContinue without an HTTP/1.1 body")
	}
	if r.KeepAlive && r.Header.HasToken("Connection", "close") {
		t.Fatal("KeepAlive with Connection: close")
	}
	origin := r.OriginTarget()
	if origin != "*" && !strings.HasPrefix(origin, "/") {
		t.Fatalf("OriginTarget() = %q for %q", origin, r.Target)
	}
	if path, _, _ := strings.Cut(origin, "?"); r.Path() != path {
		t.Fatalf("Path() = %q but OriginTarget() = %q for %q", r.Path(), origin, r.Target)
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// FuzzReadResponse checks that ReadResponse never panics, refuses only with
// 502, and that its framing decision is consistent.
func FuzzReadResponse(f *testing.F) {
	for _, tt := range validResponses {
		f.Add([]byte(tt.raw), tt.method == "HEAD")
	}
	for _, tt := range rejectedResponses {
		f.Add([]byte(tt.raw), tt.method == "HEAD")
	}
	f.Add([]byte(typicalResponse), false)
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		var resp Response
		err := ReadResponse(bufio.NewReader(bytes.NewReader(data)), fuzzHeadLimit, method, &resp)
		var he *Error
		switch {
		case err == nil, err == io.EOF, err == io.ErrUnexpectedEOF:
		case errors.As(err, &he):
			if he.Status != 502 {
				t.Fatalf("refused with status %d: %v", he.Status, err)
			}
		default:
			t.Fatalf("unexpected error %T %v", err, err)
		}

		var small Response
		errSmall := ReadResponse(bufio.NewReaderSize(bytes.NewReader(data), 16), fuzzHeadLimit, method, &small)
		if errorStatus(err) != errorStatus(errSmall) || err == nil && !reflect.DeepEqual(viewResponse(&resp), viewResponse(&small)) {
			t.Fatalf("16-byte buffer parses differently:\n%v %+v\n%v %+v", err, viewResponse(&resp), errSmall, viewResponse(&small))
		}
		if err != nil {
			return
		}

		if resp.Status < 100 || resp.Status > 999 || resp.Minor != 0 && resp.Minor != 1 {
			t.Fatalf("status %d, minor %d", resp.Status, resp.Minor)
		}
		if strings.ContainsAny(resp.Reason, "\r\n\x00") {
			t.Fatalf("reason %q", resp.Reason)
		}
		for _, fl := range resp.Header {
			if fl.Name == "" || strings.ContainsAny(fl.Name, " \t:\r\n\x00") || strings.ContainsAny(fl.Value, "\r\n\x00") {
				t.Fatalf("field %q: %q", fl.Name, fl.Value)
			}
		}
		s := resp.Status
		if resp.NoBody != (head || s < 200 || s == 204 || s == 304) {
			t.Fatalf("NoBody %v for %s, status %d", resp.NoBody, method, s)
		}
		if resp.ContentLength < -1 {
			t.Fatalf("ContentLength %d", resp.ContentLength)
		}
		if resp.Chunked && (resp.ContentLength != -1 || resp.NoBody) {
			t.Fatalf("Chunked with ContentLength %d, NoBody %v", resp.ContentLength, resp.NoBody)
		}
		if !resp.NoBody && !resp.Chunked && resp.ContentLength == -1 && resp.KeepAlive {
			t.Fatal("close-delimited body on a kept connection")
		}
		if resp.KeepAlive && resp.Header.HasToken("Connection", "close") {
			t.Fatal("KeepAlive with Connection: close")
		}
	})
}

// FuzzChunkedBody checks that decoding a chunked body never panics, never
// yields more bytes than it consumed, fails only with the documented
// errors, does not depend on how bytes arrive, and that what it accepts
// re-encodes to the same body and trailer.
func FuzzChunkedBody(f *testing.F) {
	for _, tt := range bodyCases {
		if tt.chunked {
			f.Add([]byte(tt.raw))
		}
	}
	// A trailer that fits the limit only without the space after its colon.
	f.Add([]byte("0\nT:" + strings.Repeat("t", maxTrailerBytes-6) + "\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		var b Body
		b.Reset(br, -1, true)
		got, err := io.ReadAll(&b)
		switch {
		case err == nil:
		case errors.Is(err, ErrBadChunk), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrHeadTooLarge):
		default:
			t.Fatalf("unexpected error %T %v", err, err)
		}
		rest, _ := io.ReadAll(br)
		if consumed := len(data) - len(rest); len(got) > consumed {
			t.Fatalf("decoded %d bytes from %d", len(got), consumed)
		}
		if b.Done() != (err == nil) {
			t.Fatalf("Done() = %v with err %v", b.Done(), err)
		}

		var slow Body
		slow.Reset(bufio.NewReader(iotest.OneByteReader(bytes.NewReader(data))), -1, true)
		gotSlow, errSlow := readBody(&slow, 5)
		if !bytes.Equal(got, []byte(gotSlow)) || !errors.Is(errSlow, err) && err != errSlow {
			t.Fatalf("byte at a time: %q, %v; at once: %q, %v", gotSlow, errSlow, got, err)
		}
		if err != nil {
			return
		}

		trailer := b.Trailer
		size := len("\r\n")
		for _, fl := range trailer {
			size += len(fl.Name) + len(": ") + len(fl.Value) + len("\r\n")
		}
		if size > maxTrailerBytes {
			return // "T:v" re-encodes as "T: v", which may no longer fit
		}
		var wire bytes.Buffer
		bw := bufio.NewWriter(&wire)
		if err := WriteChunk(bw, got); err != nil {
			t.Fatal(err)
		}
		if err := WriteLastChunk(bw, trailer); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		var again Body
		again.Reset(bufio.NewReader(&wire), -1, true)
		got2, err := io.ReadAll(&again)
		if err != nil || !bytes.Equal(got, got2) {
			t.Fatalf("re-encoded body reads %q, %v; want %q", got2, err, got)
		}
		if len(trailer) != len(again.Trailer) || len(trailer) > 0 && !reflect.DeepEqual(trailer, again.Trailer) {
			t.Fatalf("re-encoded trailer %q, want %q", again.Trailer, trailer)
		}
	})
}

// FuzzChunkedRoundTrip splits random bytes into random chunks with
// WriteChunk, ends them with WriteLastChunk, and reads them back with random
// read sizes: the body must come back whole, and nothing past it be read.
func FuzzChunkedRoundTrip(f *testing.F) {
	f.Add([]byte("hello, world"), []byte{3, 0, 200})
	f.Add([]byte(""), []byte{})
	f.Add([]byte("\r\n0\r\n\r\n"), []byte{1})
	f.Add(bytes.Repeat([]byte{0, '\n', 0xff}, 2000), []byte{255, 17})
	f.Fuzz(func(t *testing.T, body, sizes []byte) {
		size := func(i int) int {
			if len(sizes) == 0 {
				return 1 << 20
			}
			return int(sizes[i%len(sizes)])*37 + 1
		}
		var trailer Header
		if len(sizes) > 0 && sizes[0]%2 == 1 {
			trailer = Header{{"X-Sum", "1"}}
		}
		var wire bytes.Buffer
		bw := bufio.NewWriterSize(&wire, 64)
		for i, p := 0, body; len(p) > 0; i++ {
			n := min(size(i), len(p))
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
		var got []byte
		for i := 0; ; i++ {
			p := make([]byte, size(i+7))
			n, err := b.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
		}
		if !bytes.Equal(got, body) || !b.Done() {
			t.Fatalf("read back %d bytes (Done %v), wrote %d", len(got), b.Done(), len(body))
		}
		if len(b.Trailer) != len(trailer) || len(trailer) > 0 && !reflect.DeepEqual(b.Trailer, trailer) {
			t.Fatalf("trailer %q, want %q", b.Trailer, trailer)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
			t.Fatalf("left %q, want NEXT", rest)
		}
	})
}
