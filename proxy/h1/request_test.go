package h1

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testHeadLimit is the head limit the request and response tables read with.
const testHeadLimit = 8 << 10

// reqView is the parsed, comparable part of a Request.
type reqView struct {
	Method, Target string
	Minor          int
	Host           string
	ContentLength  int64
	Chunked        bool
	KeepAlive      bool
	ExpectContinue bool
	Upgrade        string
	Header         Header
}

func viewRequest(r *Request) reqView {
	return reqView{
		Method: r.Method, Target: r.Target, Minor: r.Minor, Host: r.Host,
		ContentLength: r.ContentLength, Chunked: r.Chunked, KeepAlive: r.KeepAlive,
		ExpectContinue: r.ExpectContinue, Upgrade: r.Upgrade,
		Header: cloneHeader(r.Header),
	}
}

// cloneHeader copies h, an empty one to nil so that views compare equal
// whatever slice a Request reused.
func cloneHeader(h Header) Header {
	if len(h) == 0 {
		return nil
	}
	return slices.Clone(h)
}

// readRequestString parses raw as one request and returns the bytes left
// unread after its head.
func readRequestString(raw string, limit int) (*Request, string, error) {
	br := bufio.NewReader(strings.NewReader(raw))
	r := new(Request)
	err := ReadRequest(br, limit, r)
	rest, _ := io.ReadAll(br)
	return r, string(rest), err
}

// validRequests are requests ReadRequest must accept, with what it must make
// of them. rest is what must stay unread after the head (the body).
var validRequests = []struct {
	name string
	raw  string
	want reqView
	rest string
}{
	{
		name: "origin-form GET",
		raw:  "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\n\r\n",
		want: reqView{Method: "GET", Target: "/a/b?x=1&y=%20", Minor: 1, Host: "example.com", KeepAlive: true,
			Header: Header{{"Host", "example.com"}}},
	},
	{
		name: "absolute-form overrides Host (RFC 9112 §3.2.2)",
		raw:  "GET http://up.example:8080/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
		want: reqView{Method: "GET", Target: "http://up.example:8080/p?q=1", Minor: 1, Host: "up.example:8080", KeepAlive: true,
			Header: Header{{"Host", "other.example"}}},
	},
	{
		name: "absolute-form, scheme case-insensitive, no path",
		raw:  "GET HTTPS://up.example HTTP/1.1\r\nHost: up.example\r\n\r\n",
		want: reqView{Method: "GET", Target: "HTTPS://up.example", Minor: 1, Host: "up.example", KeepAlive: true,
			Header: Header{{"Host", "up.example"}}},
	},
	{
		name: "absolute-form with query and no path",
		raw:  "GET http://up.example?a=/b HTTP/1.1\r\nHost: x\r\n\r\n",
		want: reqView{Method: "GET", Target: "http://up.example?a=/b", Minor: 1, Host: "up.example", KeepAlive: true,
			Header: Header{{"Host", "x"}}},
	},
	{
		name: "asterisk-form OPTIONS",
		raw:  "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
		want: reqView{Method: "OPTIONS", Target: "*", Minor: 1, Host: "example.com", KeepAlive: true,
			Header: Header{{"Host", "example.com"}}},
	},
	{
		name: "extension method",
		raw:  "PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n",
		want: reqView{Method: "PURGE", Target: "/x", Minor: 1, Host: "h", KeepAlive: true, Header: Header{{"Host", "h"}}},
	},
	{
		name: "HTTP/1.0 without Host or keep-alive",
		raw:  "GET / HTTP/1.0\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 0, KeepAlive: false},
	},
	{
		name: "HTTP/1.0 keep-alive",
		raw:  "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 0, Host: "h", KeepAlive: true,
			Header: Header{{"Connection", "Keep-Alive"}, {"Host", "h"}}},
	},
	{
		// RFC 9112 §9.6: close wins, whatever else the field lists.
		name: "HTTP/1.0 keep-alive and close",
		raw:  "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 0, KeepAlive: false,
			Header: Header{{"Connection", "keep-alive, close"}}},
	},
	{
		name: "HTTP/1.1 Connection close in a list",
		raw:  "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 1, Host: "h", KeepAlive: false,
			Header: Header{{"Host", "h"}, {"Connection", "foo, CLOSE"}}},
	},
	{
		name: "leading empty lines skipped (RFC 9112 §2.2)",
		raw:  "\r\n\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 1, Host: "h", KeepAlive: true, Header: Header{{"Host", "h"}}},
	},
	{
		name: "LF-only line endings (RFC 9112 §2.2)",
		raw:  "GET / HTTP/1.1\nHost: h\nX-A: b\n\nBODY",
		want: reqView{Method: "GET", Target: "/", Minor: 1, Host: "h", KeepAlive: true,
			Header: Header{{"Host", "h"}, {"X-A", "b"}}},
		rest: "BODY",
	},
	{
		name: "mixed line endings",
		raw:  "GET / HTTP/1.1\nHost: h\r\nX-A: b\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 1, Host: "h", KeepAlive: true,
			Header: Header{{"Host", "h"}, {"X-A", "b"}}},
	},
	{
		name: "many fields, wire order and case kept",
		raw: "GET /m HTTP/1.1\r\nhost: h\r\nX-B: 2\r\nX-A: 1\r\nx-a: 3\r\nAccept: */*\r\n" +
			"User-Agent: t/1.0\r\nCookie: a=b; c=d\r\nCookie: e=f\r\nX-Empty:\r\nX-OWS: \t v a l \t\r\n\r\n",
		want: reqView{Method: "GET", Target: "/m", Minor: 1, Host: "h", KeepAlive: true,
			Header: Header{{"host", "h"}, {"X-B", "2"}, {"X-A", "1"}, {"x-a", "3"}, {"Accept", "*/*"},
				{"User-Agent", "t/1.0"}, {"Cookie", "a=b; c=d"}, {"Cookie", "e=f"}, {"X-Empty", ""}, {"X-OWS", "v a l"}}},
	},
	{
		name: "obs-text and other bytes in a value are kept",
		raw:  "GET / HTTP/1.1\r\nHost: h\r\nX-U: caf\xc3\xa9 \x01\x7f\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 1, Host: "h", KeepAlive: true,
			Header: Header{{"Host", "h"}, {"X-U", "caf\xc3\xa9 \x01\x7f"}}},
	},
	{
		name: "empty Host (RFC 9112 §3.2)",
		raw:  "GET / HTTP/1.1\r\nHost:\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 1, KeepAlive: true, Header: Header{{"Host", ""}}},
	},
	{
		name: "Content-Length",
		raw:  "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
		want: reqView{Method: "POST", Target: "/p", Minor: 1, Host: "h", ContentLength: 5, KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Content-Length", "5"}}},
		rest: "hello",
	},
	{
		name: "Content-Length list of one value (RFC 9110 §8.6)",
		raw:  "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
		want: reqView{Method: "POST", Target: "/p", Minor: 1, Host: "h", ContentLength: 5, KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Content-Length", "5, 5"}}},
	},
	{
		name: "Content-Length repeated with one value",
		raw:  "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
		want: reqView{Method: "POST", Target: "/p", Minor: 1, Host: "h", ContentLength: 5, KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Content-Length", "5"}, {"content-length", "5"}}},
	},
	{
		name: "Content-Length leading zeros",
		raw:  "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n",
		want: reqView{Method: "POST", Target: "/p", Minor: 1, Host: "h", ContentLength: 7, KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Content-Length", "007"}}},
	},
	{
		name: "Content-Length zero",
		raw:  "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
		want: reqView{Method: "POST", Target: "/p", Minor: 1, Host: "h", KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Content-Length", "0"}}},
	},
	{
		name: "chunked",
		raw:  "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
		want: reqView{Method: "POST", Target: "/p", Minor: 1, Host: "h", ContentLength: -1, Chunked: true, KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Transfer-Encoding", "Chunked"}}},
		rest: "0\r\n\r\n",
	},
	{
		name: "Expect 100-continue with a body",
		raw:  "PUT /p HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n",
		want: reqView{Method: "PUT", Target: "/p", Minor: 1, Host: "h", ContentLength: 4, KeepAlive: true, ExpectContinue: true,
			Header: Header{{"Host", "h"}, {"Expect", "100-Continue"}, {"Content-Length", "4"}}},
	},
	{
		name: "Expect 100-continue with a chunked body",
		raw:  "PUT /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
		want: reqView{Method: "PUT", Target: "/p", Minor: 1, Host: "h", ContentLength: -1, Chunked: true, KeepAlive: true,
			ExpectContinue: true,
			Header:         Header{{"Host", "h"}, {"Expect", "100-continue"}, {"Transfer-Encoding", "chunked"}}},
	},
	{
		name: "Expect 100-continue without a body",
		raw:  "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
		want: reqView{Method: "GET", Target: "/", Minor: 1, Host: "h", KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Expect", "100-continue"}}},
	},
	{
		// RFC 9110 §10.1.1: a server MUST ignore 100-continue in HTTP/1.0.
		name: "Expect 100-continue in HTTP/1.0",
		raw:  "PUT /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
		want: reqView{Method: "PUT", Target: "/p", Minor: 0, ContentLength: 4,
			Header: Header{{"Expect", "100-continue"}, {"Content-Length", "4"}}},
	},
	{
		name: "Upgrade with Connection upgrade",
		raw:  "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
		want: reqView{Method: "GET", Target: "/ws", Minor: 1, Host: "h", KeepAlive: true, Upgrade: "websocket",
			Header: Header{{"Host", "h"}, {"Connection", "keep-alive, Upgrade"}, {"Upgrade", "websocket"}}},
	},
	{
		name: "Upgrade without Connection upgrade is ignored",
		raw:  "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
		want: reqView{Method: "GET", Target: "/ws", Minor: 1, Host: "h", KeepAlive: true,
			Header: Header{{"Host", "h"}, {"Upgrade", "websocket"}}},
	},
}

// rejectedRequests are requests ReadRequest must refuse, with the status it
// must answer.
var rejectedRequests = []struct {
	name   string
	raw    string
	status int
}{
	// Request line (RFC 9112 §3): exactly METHOD SP target SP version.
	{"missing version", "GET /\r\nHost: h\r\n\r\n", 400},
	{"method only", "GET\r\nHost: h\r\n\r\n", 400},
	{"missing target", "GET  HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"double space after method", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"double space before version", "GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"trailing space", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400},
	{"leading space", " GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"tabs as separators", "GET\t/\tHTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"four parts", "GET / HTTP/1.1 x\r\nHost: h\r\n\r\n", 400},
	{"bare CR in request line", "GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"request line is just CR", "\r\r\nHost: h\r\n\r\n", 400},
	{"invalid method char", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"NUL in method", "GE\x00T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"non-ASCII method", "G\xc3\x89T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"control char in target", "GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"NUL in target", "GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	// Request target forms (RFC 9112 §3.2): origin, absolute, asterisk for
	// OPTIONS; tollgate does not tunnel, so no authority-form.
	{"relative target", "GET foo HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"asterisk for GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"asterisk with a path", "OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"authority-form", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 400},
	{"scheme without slashes", "GET http:/p HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"unsupported scheme", "GET ftp://h/p HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"userinfo in absolute-form", "GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	{"empty authority", "GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	// Version (RFC 9112 §2.3, RFC 9110 §6.2).
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
	{"HTTP/3.0", "GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505},
	{"HTTP/0.9", "GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505},
	// RFC 9110 §6.2 says a 1.x with a higher minor SHOULD be served as 1.1;
	// tollgate answers 505, as it does for any version it does not speak.
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505},
	{"lower-case HTTP-name", "GET / http/1.1\r\nHost: h\r\n\r\n", 400},
	{"garbage version", "GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400},
	{"two-digit minor", "GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400},
	{"no minor", "GET / HTTP/1\r\nHost: h\r\n\r\n", 400},
	{"not HTTP", "GET / FOO/1.1\r\nHost: h\r\n\r\n", 400},
	// Fields (RFC 9112 §5, RFC 9110 §5).
	{"obs-fold with space", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400},
	{"obs-fold with tab", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n", 400},
	{"whitespace before first field", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400},
	{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400},
	{"tab before colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400},
	{"space before colon on Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello", 400},
	{"invalid field-name char", "GET / HTTP/1.1\r\nHost: h\r\nX(a): b\r\n\r\n", 400},
	{"non-ASCII field name", "GET / HTTP/1.1\r\nHost: h\r\nX-\xc3\xa9: b\r\n\r\n", 400},
	{"NUL in field name", "GET / HTTP/1.1\r\nHost: h\r\nX\x00: b\r\n\r\n", 400},
	{"no colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A\r\n\r\n", 400},
	{"empty field name", "GET / HTTP/1.1\r\nHost: h\r\n: b\r\n\r\n", 400},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400},
	{"CR in value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400},
	{"CR ending a value before CRLF", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\r\n\r\n", 400},
	{"bare CR line in head", "GET / HTTP/1.1\r\nHost: h\r\n\r\r\n\r\n", 400},
	// Host (RFC 9112 §3.2).
	{"missing Host on 1.1", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400},
	{"missing Host with absolute-form", "GET http://h/ HTTP/1.1\r\n\r\n", 400},
	{"two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
	{"two Host fields in other case", "GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n", 400},
	{"two Host fields on 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400},
	{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
	{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
	{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
	{"Host with control char", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400},
	{"Host with DEL", "GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", 400},
	// Content-Length (RFC 9110 §8.6, RFC 9112 §6.3 item 5).
	{"conflicting Content-Length fields", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
	{"conflicting Content-Length list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", 400},
	{"Content-Length list with empty member", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n", 400},
	{"empty Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400},
	{"empty Content-Length after a valid one", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: \r\n\r\n", 400},
	{"negative Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400},
	{"plus Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400},
	{"hex Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n", 400},
	{"Content-Length with inner space", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 5\r\n\r\n", 400},
	{"Content-Length with underscore", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1_0\r\n\r\n", 400},
	{"Content-Length overflow", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
	{"Content-Length of 19 digits", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000000000\r\n\r\n", 400},
	{"invalid Content-Length with chunked", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
	// Transfer-Encoding (RFC 9112 §6.1).
	{"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
	{"Transfer-Encoding gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
	{"Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
	{"Transfer-Encoding chunked, gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501},
	{"Transfer-Encoding chunked twice", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
	{"Transfer-Encoding identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501},
	{"Transfer-Encoding empty", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 501},
	{"Transfer-Encoding with a parameter", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", 501},
	{"Transfer-Encoding xchunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501},
	// Expect (RFC 9110 §10.1.1).
	{"Expect other than 100-continue", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", 417},
	{"Expect list", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, x\r\nContent-Length: 1\r\n\r\n", 417},
	{"Expect twice", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", 417},
}

func TestReadRequestValid(t *testing.T) {
	for _, tt := range validRequests {
		t.Run(tt.name, func(t *testing.T) {
			r, rest, err := readRequestString(tt.raw, testHeadLimit)
			if err != nil {
				t.Fatalf("ReadRequest: %v", err)
			}
			if got := viewRequest(r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ReadRequest\n got %+v\nwant %+v", got, tt.want)
			}
			if rest != tt.rest {
				t.Errorf("left %q unread, want %q", rest, tt.rest)
			}
			if got, want := r.HasBody(), tt.want.ContentLength != 0; got != want {
				t.Errorf("HasBody() = %v, want %v", got, want)
			}
		})
	}
}

func TestReadRequestRejected(t *testing.T) {
	for _, tt := range rejectedRequests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readRequestString(tt.raw, testHeadLimit)
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("ReadRequest err = %v, want an *Error with status %d", err, tt.status)
			}
			if he.Status != tt.status {
				t.Errorf("status = %d (%s), want %d", he.Status, he.Reason, tt.status)
			}
			if he.Reason == "" {
				t.Error("empty Reason")
			}
		})
	}
}

// TestReadRequestReuse reads three pipelined requests into one Request from
// one bufio.Reader. The fields of each request slice its own head string, so
// what a caller kept from the first must survive reading the next two; the
// Request's field slice itself is reused.
func TestReadRequestReuse(t *testing.T) {
	raw := "GET /first?a=1 HTTP/1.1\r\nHost: one.example\r\nX-First: 1111111111\r\nCookie: a=b\r\n\r\n" +
		"POST /second HTTP/1.1\r\nHost: two.example\r\nContent-Length: 5\r\nX-Second: 2\r\n\r\nhello" +
		"PUT /third HTTP/1.1\r\nHost: three.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
		"3\r\nabc\r\n0\r\nX-T: t\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	var r Request
	var body Body

	if err := ReadRequest(br, testHeadLimit, &r); err != nil {
		t.Fatalf("first: %v", err)
	}
	first := viewRequest(&r) // the strings, not copies of them
	wantFirst := reqView{Method: "GET", Target: "/first?a=1", Minor: 1, Host: "one.example", KeepAlive: true,
		Header: Header{{"Host", "one.example"}, {"X-First", "1111111111"}, {"Cookie", "a=b"}}}
	if !reflect.DeepEqual(first, wantFirst) {
		t.Fatalf("first\n got %+v\nwant %+v", first, wantFirst)
	}
	if r.HasBody() {
		t.Fatal("first request has a body")
	}
	fieldsArray := &r.Header[0]

	if err := ReadRequest(br, testHeadLimit, &r); err != nil {
		t.Fatalf("second: %v", err)
	}
	wantSecond := reqView{Method: "POST", Target: "/second", Minor: 1, Host: "two.example", ContentLength: 5, KeepAlive: true,
		Header: Header{{"Host", "two.example"}, {"Content-Length", "5"}, {"X-Second", "2"}}}
	if got := viewRequest(&r); !reflect.DeepEqual(got, wantSecond) {
		t.Fatalf("second\n got %+v\nwant %+v", got, wantSecond)
	}
	if &r.Header[0] != fieldsArray {
		t.Error("the second request did not reuse the field slice")
	}
	body.Reset(br, r.ContentLength, r.Chunked)
	if b, err := io.ReadAll(&body); err != nil || string(b) != "hello" {
		t.Fatalf("second body = %q, %v", b, err)
	}

	if err := ReadRequest(br, testHeadLimit, &r); err != nil {
		t.Fatalf("third: %v", err)
	}
	wantThird := reqView{Method: "PUT", Target: "/third", Minor: 1, Host: "three.example", ContentLength: -1, Chunked: true,
		Header: Header{{"Host", "three.example"}, {"Transfer-Encoding", "chunked"}, {"Connection", "close"}}}
	if got := viewRequest(&r); !reflect.DeepEqual(got, wantThird) {
		t.Fatalf("third\n got %+v\nwant %+v", got, wantThird)
	}
	body.Reset(br, r.ContentLength, r.Chunked)
	if b, err := io.ReadAll(&body); err != nil || string(b) != "abc" {
		t.Fatalf("third body = %q, %v", b, err)
	}
	if got := body.Trailer; !reflect.DeepEqual(got, Header{{"X-T", "t"}}) {
		t.Errorf("third trailer = %q", got)
	}

	if !reflect.DeepEqual(first, wantFirst) {
		t.Errorf("first request's fields changed after reading two more\n got %+v\nwant %+v", first, wantFirst)
	}
	if err := ReadRequest(br, testHeadLimit, &r); err != io.EOF {
		t.Errorf("after three requests: err = %v, want io.EOF", err)
	}
}

func TestRequestPathAndOriginTarget(t *testing.T) {
	tests := []struct {
		target     string
		wantPath   string
		wantOrigin string
	}{
		{"/", "/", "/"},
		{"/a/b", "/a/b", "/a/b"},
		{"/a/b?x=1&y", "/a/b", "/a/b?x=1&y"},
		{"/?", "/", "/?"},
		{"/a?b?c", "/a", "/a?b?c"},
		{"/a://b?c", "/a://b", "/a://b?c"},
		{"//double", "//double", "//double"},
		{"*", "*", "*"},
		{"http://h", "/", "/"},
		{"http://h/", "/", "/"},
		{"http://h:8080/p/q?x=1&y", "/p/q", "/p/q?x=1&y"},
		{"HTTPS://h/p", "/p", "/p"},
		{"http://h?x", "/", "/?x"},
		// The query may hold a slash: the path is still empty, or the
		// route would be chosen for a path the backend never sees.
		{"http://h?x=/admin", "/", "/?x=/admin"},
		{"http://h:80?/a/b", "/", "/?/a/b"},
		{"http://h/p?q=http://x/y", "/p", "/p?q=http://x/y"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			r := Request{Target: tt.target}
			if got := r.Path(); got != tt.wantPath {
				t.Errorf("Path() = %q, want %q", got, tt.wantPath)
			}
			if got := r.OriginTarget(); got != tt.wantOrigin {
				t.Errorf("OriginTarget() = %q, want %q", got, tt.wantOrigin)
			}
		})
	}
}

// typicalRequest is an eight-field browser-like request.
const typicalRequest = "GET /assets/app.js?v=42 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: */*\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Referer: https://www.example.com/\r\n" +
	"Cookie: session=0123456789abcdef; theme=dark\r\n" +
	"Connection: keep-alive\r\n" +
	"\r\n"

// TestReadRequestAllocs checks the package's promise: one allocation per
// request head (its string), none per field, once the Request is warm.
func TestReadRequestAllocs(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"typical", typicalRequest},
		{"POST with Content-Length", "POST /api HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sr := strings.NewReader(tt.raw)
			br := bufio.NewReader(sr)
			var r Request
			read := func() {
				sr.Reset(tt.raw)
				br.Reset(sr)
				if err := ReadRequest(br, testHeadLimit, &r); err != nil {
					t.Fatal(err)
				}
			}
			read() // warm up the field slice and head buffer
			if got := testing.AllocsPerRun(100, read); got != 1 {
				t.Errorf("ReadRequest allocates %v times per request, want 1", got)
			}
		})
	}
}

func BenchmarkReadRequest(b *testing.B) {
	sr := strings.NewReader(typicalRequest)
	br := bufio.NewReader(sr)
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalRequest)))
	for b.Loop() {
		sr.Reset(typicalRequest)
		br.Reset(sr)
		if err := ReadRequest(br, testHeadLimit, &r); err != nil {
			b.Fatal(err)
		}
	}
}
