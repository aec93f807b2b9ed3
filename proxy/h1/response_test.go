package h1

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// respView is the parsed, comparable part of a Response.
type respView struct {
	Minor         int
	Status        int
	Reason        string
	ContentLength int64
	Chunked       bool
	KeepAlive     bool
	NoBody        bool
	Header        Header
}

func viewResponse(r *Response) respView {
	return respView{
		Minor: r.Minor, Status: r.Status, Reason: r.Reason, ContentLength: r.ContentLength,
		Chunked: r.Chunked, KeepAlive: r.KeepAlive, NoBody: r.NoBody, Header: cloneHeader(r.Header),
	}
}

func readResponseString(raw, method string, limit int) (*Response, string, error) {
	br := bufio.NewReader(strings.NewReader(raw))
	r := new(Response)
	err := ReadResponse(br, limit, method, r)
	rest, _ := io.ReadAll(br)
	return r, string(rest), err
}

// validResponses are backend responses ReadResponse must accept. Header is
// compared only when set.
var validResponses = []struct {
	name   string
	method string
	raw    string
	want   respView
	rest   string
}{
	{
		name: "HTTP/1.1 with Content-Length", method: "GET",
		raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: 5, KeepAlive: true,
			Header: Header{{"Content-Length", "5"}, {"X-A", "b"}}},
		rest: "hello",
	},
	{
		name: "HTTP/1.0 closes by default", method: "GET",
		raw:  "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
		want: respView{Minor: 0, Status: 200, Reason: "OK", ContentLength: 5, Header: Header{{"Content-Length", "5"}}},
	},
	{
		name: "HTTP/1.0 keep-alive", method: "GET",
		raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		want: respView{Minor: 0, Status: 200, Reason: "OK", KeepAlive: true,
			Header: Header{{"Connection", "keep-alive"}, {"Content-Length", "0"}}},
	},
	{
		name: "HTTP/1.0 keep-alive and close (RFC 9112 §9.6)", method: "GET",
		raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
		want: respView{Minor: 0, Status: 200, Reason: "OK",
			Header: Header{{"Connection", "keep-alive, close"}, {"Content-Length", "0"}}},
	},
	{
		name: "Connection close", method: "GET",
		raw: "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: 1,
			Header: Header{{"Connection", "Close"}, {"Content-Length", "1"}}},
	},
	{
		name: "no reason phrase", method: "GET",
		raw:  "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
		want: respView{Minor: 1, Status: 404, KeepAlive: true, Header: Header{{"Content-Length", "0"}}},
	},
	{
		name: "empty reason phrase", method: "GET",
		raw:  "HTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n",
		want: respView{Minor: 1, Status: 500, KeepAlive: true, Header: Header{{"Content-Length", "0"}}},
	},
	{
		name: "reason with spaces and obs-text", method: "GET",
		raw: "HTTP/1.1 418 I'm a  teapot \xe2\x98\x95\r\nContent-Length: 0\r\n\r\n",
		want: respView{Minor: 1, Status: 418, Reason: "I'm a  teapot \xe2\x98\x95", KeepAlive: true,
			Header: Header{{"Content-Length", "0"}}},
	},
	{
		name: "status 599", method: "GET",
		raw:  "HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n",
		want: respView{Minor: 1, Status: 599, Reason: "X", KeepAlive: true, Header: Header{{"Content-Length", "0"}}},
	},
	{
		name: "LF-only line endings", method: "GET",
		raw: "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: 2, KeepAlive: true,
			Header: Header{{"Content-Length", "2"}}},
		rest: "ok",
	},
	{
		name: "chunked", method: "GET",
		raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: -1, Chunked: true, KeepAlive: true,
			Header: Header{{"Transfer-Encoding", "chunked"}}},
		rest: "0\r\n\r\n",
	},
	{
		// Chunked wins, and the connection is not reused: a backend that
		// framed it the other way would leave bytes on a pooled connection.
		name: "chunked overrides Content-Length (RFC 9112 §6.3)", method: "GET",
		raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: -1, Chunked: true, KeepAlive: false,
			Header: Header{{"Content-Length", "10"}, {"Transfer-Encoding", "chunked"}}},
	},
	{
		// RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message makes its
		// framing faulty; the connection must close after it.
		name: "HTTP/1.0 chunked closes", method: "GET",
		raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
		want: respView{Minor: 0, Status: 200, Reason: "OK", ContentLength: -1, Chunked: true,
			Header: Header{{"Connection", "keep-alive"}, {"Transfer-Encoding", "chunked"}}},
	},
	{
		name: "close-delimited", method: "GET",
		raw:  "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nall the rest",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: -1, Header: Header{{"X-A", "b"}}},
		rest: "all the rest",
	},
	{
		name: "coding other than chunked is close-delimited", method: "GET",
		raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: -1,
			Header: Header{{"Transfer-Encoding", "gzip"}, {"Content-Length", "5"}}},
	},
	{
		name: "chunked, gzip is close-delimited", method: "GET",
		raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: -1,
			Header: Header{{"Transfer-Encoding", "chunked, gzip"}}},
	},
	{
		name: "Content-Length list", method: "GET",
		raw: "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: 3, KeepAlive: true,
			Header: Header{{"Content-Length", "3, 3"}}},
	},
	{
		name: "HEAD with Content-Length has no body", method: "HEAD",
		raw: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nNEXT",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: 100, KeepAlive: true, NoBody: true,
			Header: Header{{"Content-Length", "100"}}},
		rest: "NEXT",
	},
	{
		name: "HEAD with chunked has no body", method: "HEAD",
		raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: -1, KeepAlive: true, NoBody: true,
			Header: Header{{"Transfer-Encoding", "chunked"}}},
	},
	{
		name: "HEAD without framing keeps the connection", method: "HEAD",
		raw:  "HTTP/1.1 200 OK\r\n\r\n",
		want: respView{Minor: 1, Status: 200, Reason: "OK", ContentLength: -1, KeepAlive: true, NoBody: true},
	},
	{
		name: "100 Continue", method: "POST",
		raw:  "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
		want: respView{Minor: 1, Status: 100, Reason: "Continue", ContentLength: -1, KeepAlive: true, NoBody: true},
		rest: "HTTP/1.1 200 OK\r\n",
	},
	{
		name: "101 with chunked", method: "GET",
		raw: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nTransfer-Encoding: chunked\r\n\r\n",
		want: respView{Minor: 1, Status: 101, Reason: "Switching Protocols", ContentLength: -1, KeepAlive: true, NoBody: true,
			Header: Header{{"Upgrade", "websocket"}, {"Connection", "Upgrade"}, {"Transfer-Encoding", "chunked"}}},
	},
	{
		name: "103 Early Hints", method: "GET",
		raw: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
		want: respView{Minor: 1, Status: 103, Reason: "Early Hints", ContentLength: -1, KeepAlive: true, NoBody: true,
			Header: Header{{"Link", "</a.css>; rel=preload"}}},
	},
	{
		name: "204 with Content-Length", method: "DELETE",
		raw: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		want: respView{Minor: 1, Status: 204, Reason: "No Content", ContentLength: 5, KeepAlive: true, NoBody: true,
			Header: Header{{"Content-Length", "5"}}},
	},
	{
		name: "304 with chunked", method: "GET",
		raw: "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		want: respView{Minor: 1, Status: 304, Reason: "Not Modified", ContentLength: -1, KeepAlive: true, NoBody: true,
			Header: Header{{"Transfer-Encoding", "chunked"}}},
	},
	{
		name: "304 with gzip, chunked", method: "GET",
		raw: "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		want: respView{Minor: 1, Status: 304, Reason: "Not Modified", ContentLength: -1, KeepAlive: true, NoBody: true,
			Header: Header{{"Transfer-Encoding", "gzip, chunked"}}},
	},
	{
		name: "leading empty line", method: "GET",
		raw:  "\r\nHTTP/1.1 204 No Content\r\n\r\n",
		want: respView{Minor: 1, Status: 204, Reason: "No Content", ContentLength: -1, KeepAlive: true, NoBody: true},
	},
}

// rejectedResponses are backend responses ReadResponse must refuse with a
// 502 *Error.
var rejectedResponses = []struct {
	name   string
	method string
	raw    string
}{
	{"no space after version", "GET", "HTTP/1.1\r\nContent-Length: 0\r\n\r\n"},
	{"HTTP/2.0", "GET", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"HTTP/1.2", "GET", "HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"lower-case version", "GET", "http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"not HTTP", "GET", "ICY 200 OK\r\n\r\n"},
	{"two-digit status", "GET", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"},
	{"four-digit status", "GET", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"},
	{"letters for status", "GET", "HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"},
	{"status with sign", "GET", "HTTP/1.1 +20 OK\r\nContent-Length: 0\r\n\r\n"},
	{"status 099", "GET", "HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n"},
	{"status 000", "GET", "HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n"},
	{"empty status", "GET", "HTTP/1.1  OK\r\nContent-Length: 0\r\n\r\n"},
	{"tab after status", "GET", "HTTP/1.1 200\tOK\r\nContent-Length: 0\r\n\r\n"},
	{"NUL in reason", "GET", "HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"},
	{"CR in reason", "GET", "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n"},
	{"obs-fold", "GET", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
	{"space before colon", "GET", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"},
	{"invalid field name", "GET", "HTTP/1.1 200 OK\r\nX(a): b\r\n\r\n"},
	{"NUL in value", "GET", "HTTP/1.1 200 OK\r\nX-A: \x00\r\n\r\n"},
	{"conflicting Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
	{"conflicting Content-Length list", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"},
	{"empty Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"},
	{"negative Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"},
	{"hex Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n"},
	{"conflicting Content-Length on HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
	// A coding before chunked that tollgate would have to pass on without
	// its Transfer-Encoding field.
	{"gzip, chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
	{"gzip then chunked fields", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"},
}

func TestReadResponseValid(t *testing.T) {
	for _, tt := range validResponses {
		t.Run(tt.name, func(t *testing.T) {
			r, rest, err := readResponseString(tt.raw, tt.method, testHeadLimit)
			if err != nil {
				t.Fatalf("ReadResponse: %v", err)
			}
			if got := viewResponse(r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ReadResponse\n got %+v\nwant %+v", got, tt.want)
			}
			if rest != tt.rest {
				t.Errorf("left %q unread, want %q", rest, tt.rest)
			}
		})
	}
}

func TestReadResponseRejected(t *testing.T) {
	for _, tt := range rejectedResponses {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readResponseString(tt.raw, tt.method, testHeadLimit)
			var he *Error
			if !errors.As(err, &he) || he.Status != 502 {
				t.Fatalf("ReadResponse err = %v, want an *Error with status 502", err)
			}
			if he.Reason == "" || strings.HasPrefix(he.Reason, "http: ") {
				t.Errorf("Reason = %q, want a bare reason", he.Reason)
			}
		})
	}
}

func TestReadResponseEndOfInput(t *testing.T) {
	tests := []struct {
		name       string
		raw        string
		limit      int
		want       error
		wantStatus int // of an *Error, when want is nil
	}{
		{name: "EOF before any byte", raw: "", limit: testHeadLimit, want: io.EOF},
		{name: "EOF in status line", raw: "HTTP/1.1 20", limit: testHeadLimit, want: io.ErrUnexpectedEOF},
		{name: "EOF in fields", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", limit: testHeadLimit, want: io.ErrUnexpectedEOF},
		// A backend's oversized head is its fault: 502, not the 431 a
		// client gets.
		{name: "head over the limit", raw: "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("a", 300) + "\r\n\r\n", limit: 100, wantStatus: 502},
		{name: "status line over the buffer and the limit", raw: "HTTP/1.1 200 " + strings.Repeat("a", 9000) + "\r\n\r\n", limit: 8000, wantStatus: 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readResponseString(tt.raw, "GET", tt.limit)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("ReadResponse err = %v, want %v", err, tt.want)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) || he.Status != tt.wantStatus {
				t.Fatalf("ReadResponse err = %v, want an *Error with status %d", err, tt.wantStatus)
			}
			if errors.Is(err, ErrHeadTooLarge) {
				t.Error("a response head too large is ErrHeadTooLarge (431)")
			}
		})
	}
}

// TestReadResponseReuse reads an interim response, a chunked one and a
// fixed one from one reader into one Response, checking what was kept from
// the first survives.
func TestReadResponseReuse(t *testing.T) {
	raw := "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" +
		"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nLocation: /x\r\n\r\nnew"
	br := bufio.NewReader(strings.NewReader(raw))
	var resp Response
	var body Body
	if err := ReadResponse(br, testHeadLimit, "GET", &resp); err != nil {
		t.Fatal(err)
	}
	reason, link := resp.Reason, resp.Header.Get("Link")
	wants := []struct {
		status int
		body   string
	}{{200, "ok"}, {201, "new"}}
	for _, w := range wants {
		if err := ReadResponse(br, testHeadLimit, "GET", &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Status != w.status || resp.NoBody {
			t.Fatalf("status %d NoBody %v, want %d with a body", resp.Status, resp.NoBody, w.status)
		}
		body.Reset(br, resp.ContentLength, resp.Chunked)
		if b, err := io.ReadAll(&body); err != nil || string(b) != w.body {
			t.Fatalf("body = %q, %v; want %q", b, err, w.body)
		}
	}
	if reason != "Early Hints" || link != "</a.css>" {
		t.Errorf("first response's strings changed: %q %q", reason, link)
	}
	if resp.Header.Get("Location") != "/x" || resp.Header.Has("Transfer-Encoding") || resp.Header.Has("Link") {
		t.Errorf("last response's fields = %q", resp.Header)
	}
}

const typicalResponse = "HTTP/1.1 200 OK\r\n" +
	"Server: nginx\r\n" +
	"Date: Tue, 01 Jul 2025 10:00:00 GMT\r\n" +
	"Content-Type: application/javascript\r\n" +
	"Content-Length: 64\r\n" +
	"Connection: keep-alive\r\n" +
	"ETag: \"6650-17b2\"\r\n" +
	"Cache-Control: max-age=3600\r\n" +
	"Accept-Ranges: bytes\r\n" +
	"\r\n"

func TestReadResponseAllocs(t *testing.T) {
	sr := strings.NewReader(typicalResponse)
	br := bufio.NewReader(sr)
	var resp Response
	read := func() {
		sr.Reset(typicalResponse)
		br.Reset(sr)
		if err := ReadResponse(br, testHeadLimit, "GET", &resp); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if got := testing.AllocsPerRun(100, read); got != 1 {
		t.Errorf("ReadResponse allocates %v times per response, want 1", got)
	}
}

func BenchmarkReadResponse(b *testing.B) {
	sr := strings.NewReader(typicalResponse)
	br := bufio.NewReader(sr)
	var resp Response
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalResponse)))
	for b.Loop() {
		sr.Reset(typicalResponse)
		br.Reset(sr)
		if err := ReadResponse(br, testHeadLimit, "GET", &resp); err != nil {
			b.Fatal(err)
		}
	}
}
