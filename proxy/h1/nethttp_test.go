package h1

// Differential tests against net/http's own HTTP/1.1 parser: where both
// accept a message they must read it alike; where they differ, the table
// says why tollgate differs on purpose.

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// netHTTPRequests are compared with net/http's ReadRequest: ours and netHTTP
// say whether each accepts the request; where they differ the comment says
// why. What both accept must parse alike.
var netHTTPRequests = []struct {
	name          string
	raw           string
	ours, netHTTP bool
}{
	{"origin-form", "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", true, true},
	{"absolute-form", "GET http://up.example:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n", true, true},
	{"asterisk OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", true, true},
	{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", true, true},
	{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, true},
	{"HTTP/1.0 keep-alive, close", "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", true, true},
	{"HTTP/1.1 close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", true, true},
	{"LF only", "GET / HTTP/1.1\nHost: h\nX-A: b\n\n", true, true},
	{"many fields", "GET /m HTTP/1.1\r\nHost: h\r\nX-B: 2\r\nX-A: 1\r\nx-a: 3\r\nUser-Agent: t\r\nCookie: a=b\r\nCookie: c=d\r\nX-Empty:\r\nX-OWS: \t v \t\r\n\r\n", true, true},
	{"Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", true, true},
	{"Content-Length repeated", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", true, true},
	{"chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true, true},
	{"Upgrade", "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true, true},
	// Both refuse.
	{"malformed request line", "GET /\r\nHost: h\r\n\r\n", false, false},
	{"invalid method", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", false, false},
	{"invalid field name", "GET / HTTP/1.1\r\nHost: h\r\nX(a): b\r\n\r\n", false, false},
	{"whitespace before the first field", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", false, false},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", false, false},
	{"two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false, false},
	{"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, false},
	{"empty Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", false, false},
	{"negative Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", false, false},
	{"plus Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", false, false},
	{"garbage version", "GET / HTTP/1.x\r\nHost: h\r\n\r\n", false, false},
	{"relative target", "GET foo HTTP/1.1\r\nHost: h\r\n\r\n", false, false},
	// net/http answers 501 too; tollgate's 501 follows Nginx.
	{"Transfer-Encoding gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", false, false},
	{"Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, false},
	// Deliberate differences.
	//
	// net/http takes "5, 5" for a number and fails; RFC 9110 §8.6 allows a
	// list of identical values, as Nginx does.
	{"Content-Length list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello", true, false},
	// net/http unfolds obs-fold; RFC 9112 §5.2 lets a server reject it, and
	// a proxy must, or it and the backend could unfold differently.
	{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", false, true},
	// net/http ignores Transfer-Encoding in HTTP/1.0 (Go issue 12785) and
	// reads no body; RFC 9112 §6.1 calls the framing faulty, and tollgate
	// refuses rather than guess.
	{"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", false, true},
	// net/http's server discards up to four CR or LF bytes before calling
	// ReadRequest, which itself takes none; RFC 9112 §2.2 says a server
	// SHOULD ignore at least one empty line.
	{"leading empty line", "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", true, false},
	// net/http lets chunked override Content-Length (RFC 9112 §6.3 allows
	// it, with a close after); a proxy must not, or a backend that
	// believes Content-Length reads the rest as a second request. Nginx
	// refuses it since 1.21.1.
	{"chunked and Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, true},
	// net/http keeps "Host " as a field of its own; RFC 9112 §5.1 says a
	// server MUST reject whitespace between a field name and the colon.
	{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", false, true},
	// These net/http.ReadRequest accepts and its server then refuses (400,
	// 505, 417); tollgate refuses them while parsing.
	{"missing Host", "GET / HTTP/1.1\r\n\r\n", false, true},
	{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", false, true},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", false, true},
	{"unknown Expect", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", false, true},
	// A request target that is none of the forms tollgate serves (RFC
	// 9112 §3.2: asterisk-form is for OPTIONS, authority-form for CONNECT,
	// which tollgate does not tunnel); net/http leaves them to the handler.
	{"asterisk for GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", false, true},
	{"authority-form CONNECT", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", false, true},
}

func TestReadRequestMatchesNetHTTP(t *testing.T) {
	for _, tt := range netHTTPRequests {
		t.Run(tt.name, func(t *testing.T) {
			r, _, err := readRequestString(tt.raw, testHeadLimit)
			std, stdErr := http.ReadRequest(bufio.NewReader(strings.NewReader(tt.raw)))
			if (err == nil) != tt.ours {
				t.Errorf("ReadRequest err = %v, want accepted=%v", err, tt.ours)
			}
			if (stdErr == nil) != tt.netHTTP {
				t.Errorf("net/http err = %v, table says accepted=%v", stdErr, tt.netHTTP)
			}
			if err != nil || stdErr != nil {
				return
			}
			if r.Method != std.Method || r.Target != std.RequestURI || r.Host != std.Host {
				t.Errorf("method/target/host = %q %q %q, net/http %q %q %q",
					r.Method, r.Target, r.Host, std.Method, std.RequestURI, std.Host)
			}
			if r.ContentLength != std.ContentLength {
				t.Errorf("ContentLength = %d, net/http %d", r.ContentLength, std.ContentLength)
			}
			if r.Minor != std.ProtoMinor || std.ProtoMajor != 1 {
				t.Errorf("version 1.%d, net/http %s", r.Minor, std.Proto)
			}
			if r.KeepAlive == std.Close {
				t.Errorf("KeepAlive = %v, net/http Close = %v", r.KeepAlive, std.Close)
			}
			if r.Chunked != slices.Equal(std.TransferEncoding, []string{"chunked"}) {
				t.Errorf("Chunked = %v, net/http TransferEncoding %q", r.Chunked, std.TransferEncoding)
			}
			// net/http moves Host and the framing fields out of its map;
			// compare the rest.
			got := http.Header{}
			for _, f := range r.Header {
				got.Add(f.Name, f.Value)
			}
			for _, name := range []string{"Host", "Transfer-Encoding", "Content-Length"} {
				got.Del(name)
				std.Header.Del(name)
			}
			if !reflect.DeepEqual(got, std.Header) {
				t.Errorf("fields\n got %q\nnet/http %q", got, std.Header)
			}
			if r.Path() != std.URL.Path && !(r.Target == "*" && std.URL.Path == "*") {
				t.Errorf("Path() = %q, net/http URL.Path %q", r.Path(), std.URL.Path)
			}
		})
	}
}

// netHTTPRefusedResponses are the validResponses net/http's client refuses,
// each with net/http's complaint; the comments say why tollgate accepts them.
var netHTTPRefusedResponses = map[string]string{
	// RFC 9112 §6.3 item 7: a response with a coding it cannot decode
	// runs to the connection's close; tollgate passes it on as it is.
	"coding other than chunked is close-delimited": "unsupported transfer encoding",
	"chunked, gzip is close-delimited":             "unsupported transfer encoding",
	// RFC 9112 §6.3 item 1: a 304 has no body whatever its framing says.
	"304 with gzip, chunked": "unsupported transfer encoding",
	// RFC 9110 §8.6 allows a list of identical values.
	"Content-Length list": "bad Content-Length",
	// net/http's client reads no empty line before a status line.
	"leading empty line": "malformed HTTP response",
}

// TestReadResponseMatchesNetHTTP compares the framing decision with
// net/http's client for what both accept.
func TestReadResponseMatchesNetHTTP(t *testing.T) {
	for _, tt := range validResponses {
		t.Run(tt.name, func(t *testing.T) {
			r, _, err := readResponseString(tt.raw, tt.method, testHeadLimit)
			if err != nil {
				t.Fatal(err)
			}
			req := &http.Request{Method: tt.method}
			std, stdErr := http.ReadResponse(bufio.NewReader(strings.NewReader(tt.raw)), req)
			_, refused := netHTTPRefusedResponses[tt.name]
			if refused != (stdErr != nil) {
				t.Fatalf("net/http err = %v; listed as refused: %v", stdErr, refused)
			}
			if refused {
				return
			}
			if r.Status != std.StatusCode || r.Minor != std.ProtoMinor {
				t.Errorf("status %d 1.%d, net/http %d %s", r.Status, r.Minor, std.StatusCode, std.Proto)
			}
			// net/http says 0 for a body-less response and keeps a HEAD's
			// declared length; compare the body it would read.
			stdBody, _ := io.ReadAll(std.Body)
			var body Body
			br := bufio.NewReader(strings.NewReader(tt.rest))
			switch {
			case r.NoBody:
				body.Reset(br, 0, false)
			default:
				body.Reset(br, r.ContentLength, r.Chunked)
			}
			ours, _ := io.ReadAll(&body)
			if string(ours) != string(stdBody) {
				t.Errorf("body %q, net/http %q", ours, stdBody)
			}
			// Deliberate difference: both Transfer-Encoding and
			// Content-Length end the connection here (net/http keeps it).
			ambiguous := r.Chunked && r.Header.Has("Content-Length")
			if r.KeepAlive == std.Close && !r.NoBody && !ambiguous {
				t.Errorf("KeepAlive = %v, net/http Close = %v", r.KeepAlive, std.Close)
			}
		})
	}
}
