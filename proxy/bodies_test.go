package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRequestBodyFraming checks that the backend receives the client's body
// byte for byte, framed as the client framed it: a length stays a length,
// chunked stays chunked (with its trailers), and a smuggling-shaped request
// with both keeps only one framing.
func TestRequestBodyFraming(t *testing.T) {
	addr, seen := recordingBackend(t)
	p := startProxy(t, upstreamYAML(addr))
	tests := []struct {
		name        string
		req         string
		wantChunked bool
		wantCL      []string // Content-Length lines at the backend
		wantBody    string
		wantTrailer string // "Name: value" of the one trailer, or ""
	}{
		{
			name:     "content-length",
			req:      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
			wantCL:   []string{"11"},
			wantBody: "hello world",
		},
		{
			name:     "binary content-length",
			req:      "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n\x00\r\n\xff0\r\n\r\n!",
			wantCL:   []string{"10"},
			wantBody: "\x00\r\n\xff0\r\n\r\n!",
		},
		{
			name:        "chunked",
			req:         "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
			wantChunked: true,
			wantBody:    "hello world",
		},
		{
			name:        "chunked with trailer",
			req:         "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 900150983cd2\r\n\r\n",
			wantChunked: true,
			wantBody:    "abc",
			wantTrailer: "X-Sum: 900150983cd2",
		},
		{
			name:   "explicit zero length kept",
			req:    "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
			wantCL: []string{"0"},
		},
		{
			name: "no body",
			req:  "GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			c.send(t, tt.req)
			resp, body := c.response(t, "POST")
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("client got %d %q, want 200 \"ok\"", resp.StatusCode, body)
			}
			s := nextSeen(t, seen)
			if s.Chunked != tt.wantChunked {
				t.Errorf("backend saw chunked=%v, want %v\n%s", s.Chunked, tt.wantChunked, s)
			}
			if got := s.header("Content-Length"); !slices.Equal(got, tt.wantCL) {
				t.Errorf("backend saw Content-Length %q, want %q\n%s", got, tt.wantCL, s)
			}
			wantTE := []string(nil)
			if tt.wantChunked {
				wantTE = []string{"chunked"}
			}
			if got := s.header("Transfer-Encoding"); !slices.Equal(got, wantTE) {
				t.Errorf("backend saw Transfer-Encoding %q, want %q\n%s", got, wantTE, s)
			}
			if s.Body != tt.wantBody {
				t.Errorf("backend saw body %q, want %q", s.Body, tt.wantBody)
			}
			var gotTrailer string
			for k, vv := range s.Trailer {
				gotTrailer += k + ": " + strings.Join(vv, ",")
			}
			if gotTrailer != tt.wantTrailer {
				t.Errorf("backend saw trailer %q, want %q", gotTrailer, tt.wantTrailer)
			}
			wantDeclared := []string(nil)
			if tt.wantTrailer != "" {
				name, _, _ := strings.Cut(tt.wantTrailer, ":")
				wantDeclared = []string{name}
			}
			if got := s.header("Trailer"); !slices.Equal(got, wantDeclared) {
				t.Errorf("backend saw Trailer header %q, want %q", got, wantDeclared)
			}
		})
	}
}

// patternSize is the size of the large bodies: big enough that buffering one
// whole would show, small enough for -race.
const patternSize = 32 << 20

// pattern is patternSize deterministic pseudo-random bytes.
func pattern() io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{'t', 'o', 'l', 'l'}), patternSize)
}

func patternSum(t *testing.T) string {
	h := sha256.New()
	if _, err := io.Copy(h, pattern()); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestLargeUploadStreams sends 32 MiB through tollgate from an io.Pipe. The
// client holds back everything after the first MiB until the backend has
// read that MiB: a proxy that buffered the whole body would never deliver
// it, and the upload would fail instead of finishing.
func TestLargeUploadStreams(t *testing.T) {
	want := patternSum(t)
	for _, tt := range []struct {
		name   string
		length int64 // request ContentLength: -1 sends chunked
		wantTE string
	}{
		{"chunked", -1, "chunked"},
		{"content-length", patternSize, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			firstSeen := make(chan struct{})
			b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				if _, err := io.CopyN(h, r.Body, 1<<20); err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				close(firstSeen)
				n, err := io.Copy(h, r.Body)
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				fmt.Fprintf(w, "%s %d %d %q", hex.EncodeToString(h.Sum(nil)), n+1<<20, r.ContentLength, r.TransferEncoding)
			}))
			p := startProxy(t, "client_max_body_size: 0\n"+upstreamYAML(b.Addr))

			pr, pw := io.Pipe()
			go func() {
				src := pattern()
				if _, err := io.CopyN(pw, src, 1<<20); err != nil {
					pw.CloseWithError(err)
					return
				}
				select {
				case <-firstSeen:
				case <-time.After(waitLimit):
					pw.CloseWithError(errors.New("the backend did not get the first MiB while the rest was held back: tollgate buffers request bodies"))
					return
				}
				_, err := io.Copy(pw, src)
				pw.CloseWithError(err)
			}()
			req, _ := http.NewRequest("PUT", p.URL+"/up", pr)
			req.ContentLength = tt.length
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			wantTE := "[]"
			if tt.wantTE != "" {
				wantTE = fmt.Sprintf("[%q]", tt.wantTE)
			}
			wantBody := fmt.Sprintf("%s %d %d %s", want, patternSize, tt.length, wantTE)
			if resp.StatusCode != 200 || string(got) != wantBody {
				t.Fatalf("got %d %q\nwant 200 %q", resp.StatusCode, got, wantBody)
			}
		})
	}
}

// TestLargeDownloadStreams fetches 32 MiB with a Content-Length; the backend
// holds back everything after the first part until the client has read it.
// The first part is not a multiple of any buffer size, so its tail reaches
// the client only if tollgate flushes when the backend pauses.
func TestLargeDownloadStreams(t *testing.T) {
	const first = 1<<20 + 100
	want := patternSum(t)
	clientGotFirst := make(chan struct{})
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(patternSize))
		src := pattern()
		if _, err := io.CopyN(w, src, first); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-clientGotFirst:
		case <-time.After(waitLimit):
			return // the client sees a truncated body and the test fails
		}
		io.Copy(w, src)
	}))
	p := startProxy(t, upstreamYAML(b.Addr))
	resp, err := newClient(t).Get(p.URL + "/down")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != patternSize {
		t.Fatalf("got %d with length %d, want 200 with %d", resp.StatusCode, resp.ContentLength, patternSize)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, first); err != nil {
		t.Fatalf("first part: %v (tollgate held it back)", err)
	}
	close(clientGotFirst)
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("rest of body after %d bytes: %v", n+first, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want || n+first != patternSize {
		t.Fatalf("client got %d bytes with sha256 %s, want %d with %s", n+first, got, patternSize, want)
	}
}

// TestResponseChunkedPassThrough checks that a chunked response reaches the
// client chunked, whole.
func TestResponseChunkedPassThrough(t *testing.T) {
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, part := range []string{"one,", "two,", "three"} {
			io.WriteString(w, part)
			w.(http.Flusher).Flush()
		}
	}))
	p := startProxy(t, upstreamYAML(b.Addr))
	resp, body := rawRequest(t, p.Addr, "GET /chunks HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 200 || string(body) != "one,two,three" {
		t.Fatalf("got %d %q, want 200 \"one,two,three\"", resp.StatusCode, body)
	}
	if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) || resp.ContentLength != -1 {
		t.Fatalf("client got Transfer-Encoding %q, Content-Length %d; want chunked", resp.TransferEncoding, resp.ContentLength)
	}
}

// TestCloseDelimitedResponse checks a backend that ends its body by
// half-closing the connection: the client gets the whole body, properly
// framed, and the next request opens a new backend connection.
func TestCloseDelimitedResponse(t *testing.T) {
	const body = "until the backend's FIN"
	p := startProxy(t, upstreamYAML(halfClosingBackend(t, body)))
	c := dialRaw(t, p.Addr)
	for i := range 2 {
		c.send(t, "GET /eof HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, got := c.response(t, "GET")
		if resp.StatusCode != 200 || got != body {
			t.Fatalf("request %d: got %d %q, want 200 %q", i, resp.StatusCode, got, body)
		}
		if resp.Close {
			t.Fatalf("request %d: the backend's Connection: close reached the client", i)
		}
	}
}

// TestResponsesWithoutBody checks HEAD, 204 and 304: no body reaches the
// client whatever the length headers say, and both connections stay in step
// (the next request on each works).
func TestResponsesWithoutBody(t *testing.T) {
	addr, _, conns := scriptedBackend(t, func(s seenRequest) string {
		switch s.Line {
		case "HEAD /head HTTP/1.1":
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n"
		case "GET /204 HTTP/1.1":
			return "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
		case "GET /304 HTTP/1.1":
			return "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n"
		default:
			return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
		}
	})
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	for _, tt := range []struct {
		method, path string
		status       int
		header       string // a header the client must see, "Name: value"
	}{
		{"HEAD", "/head", 200, "Content-Length: 1234"},
		{"GET", "/204", 204, "X-A: 1"},
		{"GET", "/304", 304, "Etag: \"v1\""},
	} {
		c.send(t, tt.method+" "+tt.path+" HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, body := c.response(t, tt.method)
		name, value, _ := strings.Cut(tt.header, ": ")
		if resp.StatusCode != tt.status || body != "" || resp.Header.Get(name) != value {
			t.Fatalf("%s %s: got %d %q with %s=%q; want %d, no body, %s", tt.method, tt.path,
				resp.StatusCode, body, name, resp.Header.Get(name), tt.status, tt.header)
		}
		c.send(t, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, body := c.response(t, "GET"); resp.StatusCode != 200 || body != "next" {
			t.Fatalf("after %s %s: got %d %q, want 200 \"next\"", tt.method, tt.path, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("backend accepted %d connections, want 1 (keep-alive lost its step)", n)
	}
}

// TestServerSentEventsFlush checks that an event reaches the client while
// the backend is still waiting: the backend sends the second event only
// after the client has read the first.
func TestServerSentEventsFlush(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	}))
	p := startProxy(t, upstreamYAML(b.Addr))
	client := newClient(t)
	type event struct {
		body io.ReadCloser
		br   *bufio.Reader
		ev   string
	}
	first := make(chan event, 1)
	go func() {
		resp, err := client.Get(p.URL + "/events")
		if err != nil {
			first <- event{ev: "error: " + err.Error()}
			return
		}
		br := bufio.NewReader(resp.Body)
		first <- event{resp.Body, br, readEvent(br)}
	}()
	var br *bufio.Reader
	select {
	case e := <-first:
		if e.body != nil {
			defer e.body.Close()
		}
		if e.ev != "data: one" {
			t.Fatalf("first event %q, want \"data: one\"", e.ev)
		}
		br = e.br
	case <-time.After(waitLimit):
		t.Fatal("the first event did not reach the client while the backend waited: tollgate buffers event streams")
	}
	once.Do(func() { close(release) })
	if ev := readEvent(br); ev != "data: two" {
		t.Fatalf("second event %q, want \"data: two\"", ev)
	}
}

// readEvent reads one server-sent event (lines up to a blank line).
func readEvent(br *bufio.Reader) string {
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return strings.Join(append(lines, "error: "+err.Error()), "\n")
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, line)
	}
}

// TestRequestTrailers checks that trailers a client sends after a chunked
// body reach the backend.
func TestRequestTrailers(t *testing.T) {
	type report struct {
		body    string
		te      []string
		trailer http.Header
	}
	got := make(chan report, 1)
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- report{string(body), r.TransferEncoding, r.Trailer}
	}))
	p := startProxy(t, upstreamYAML(b.Addr))
	req, _ := http.NewRequest("POST", p.URL+"/trailers", io.NopCloser(strings.NewReader("payload")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Checksum": {"abc123"}, "X-Count": {"1", "2"}}
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := <-got
	want := http.Header{"X-Checksum": {"abc123"}, "X-Count": {"1", "2"}}
	if r.body != "payload" || !slices.Equal(r.te, []string{"chunked"}) || fmt.Sprint(r.trailer) != fmt.Sprint(want) {
		t.Fatalf("backend got body %q, TE %q, trailer %v; want \"payload\", chunked, %v", r.body, r.te, r.trailer, want)
	}
}

// TestResponseTrailers checks that a backend's trailers, declared and
// undeclared, reach the client.
func TestResponseTrailers(t *testing.T) {
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Result")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Result", "done")
		w.Header().Set(http.TrailerPrefix+"X-Late", "1")
	}))
	p := startProxy(t, upstreamYAML(b.Addr))
	resp, err := newClient(t).Get(p.URL + "/trailers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "body" {
		t.Fatalf("body %q, %v", body, err)
	}
	want := http.Header{"X-Result": {"done"}, "X-Late": {"1"}}
	if fmt.Sprint(resp.Trailer) != fmt.Sprint(want) {
		t.Fatalf("client got trailer %v, want %v", resp.Trailer, want)
	}
}

// TestClientMaxBodySize: a declared length over client_max_body_size is
// answered 413 before anything is forwarded; a chunked body that grows past
// it is cut off with 413 and the connection closed (ds_bad_request); 0
// lifts the limit.
func TestClientMaxBodySize(t *testing.T) {
	addr, seen := recordingBackend(t)
	p := startProxyWithCloses(t, "client_max_body_size: 1k\n"+upstreamYAML(addr))

	resp, _ := rawRequest(t, p.Addr, "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n"+strings.Repeat("x", 1025))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("declared 1025 bytes over a 1k limit: %d, want 413", resp.StatusCode)
	}
	resp, _ = rawRequest(t, p.Addr, "POST /fits HTTP/1.1\r\nHost: h\r\nContent-Length: 1024\r\n\r\n"+strings.Repeat("x", 1024))
	if resp.StatusCode != 200 {
		t.Fatalf("1024 bytes under a 1k limit: %d", resp.StatusCode)
	}
	if got := nextSeen(t, seen); got.Line != "POST /fits HTTP/1.1" {
		t.Fatalf("backend saw %q first, want only /fits (the 413 forwarded nothing)", got.Line)
	}

	rc := dialRaw(t, p.Addr)
	rc.send(t, "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"+strings.Repeat("y", 1024)+"\r\n1\r\nz\r\n0\r\n\r\n")
	resp, _ = rc.response(t, "POST")
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body past the limit: %d, want 413", resp.StatusCode)
	}
	rc.c.(*net.TCPConn).CloseWrite() // ends tollgate's lingering read
	awaitEOF(t, rc)
	p.expect(t, downstreamClose(reasonDSBadRequest, byProxy, kindFIN, "request_body"))

	open := startProxy(t, "client_max_body_size: 0\n"+upstreamYAML(addr))
	resp, _ = rawRequest(t, open.Addr, "POST /unlimited HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n"+strings.Repeat("x", 2000000))
	if resp.StatusCode != 200 {
		t.Errorf("no limit: %d", resp.StatusCode)
	}
}
