package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// waitLimit bounds every wait for something another goroutine or process
// does (a log line, a backend noticing a close). It is a failure deadline,
// never a measured duration.
const waitLimit = 5 * time.Second

// accessLine is one parsed access log line.
type accessLine struct {
	RequestID       string `json:"request_id"`
	Client          string `json:"client"`
	Method          string `json:"method"`
	Host            string `json:"host"`
	Path            string `json:"path"`
	Status          int    `json:"status"`
	Bytes           int64  `json:"bytes"`
	UpstreamAddr    string `json:"upstream_addr"`
	UpstreamStatus  string `json:"upstream_status"`
	UpstreamClose   string `json:"upstream_close"`
	DownstreamClose string `json:"downstream_close"`
}

// accessFor waits for the access log line of the request to path: tollgate
// writes it after the response, so the client may be faster.
func (p *testProxy) accessFor(t testing.TB, path string) accessLine {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		for line := range strings.SplitSeq(p.log.String(), "\n") {
			if line == "" {
				continue
			}
			var a accessLine
			if err := json.Unmarshal([]byte(line), &a); err != nil {
				t.Fatalf("access log line is not JSON: %v\n%s", err, line)
			}
			if a.Path == path {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for %s within %v; log:\n%s", path, waitLimit, p.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newClient returns an HTTP client with its own connection pool, closed
// when the test ends.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// rawClient is one client connection driven byte by byte, for what Go's
// client would normalise away (framing, hop-by-hop headers, keep-alive).
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * waitLimit))
	return &rawClient{c: c, br: bufio.NewReader(c)}
}

func (rc *rawClient) send(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

// response reads one whole response to a request with the given method.
func (rc *rawClient) response(t testing.TB, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("client read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("client read body: %v", err)
	}
	return resp, string(body)
}

// head reads one response head, leaving what follows on the connection
// (the tunnel after a 101).
func (rc *rawClient) head(method string) (*http.Response, error) {
	return http.ReadResponse(rc.br, &http.Request{Method: method})
}

// seenRequest is one request exactly as a raw backend read it off the wire.
type seenRequest struct {
	Line    string      // request line, without CRLF
	Lines   []string    // header lines in order, without CRLF
	Header  http.Header // the same lines, by canonical name
	Chunked bool        // the body came chunked
	Body    string
	Trailer http.Header // trailer fields of a chunked body
}

// readSeen reads one request from a backend connection without interpreting
// anything beyond the framing.
func readSeen(br *bufio.Reader) (seenRequest, error) {
	s, err := readSeenHead(br)
	if err != nil {
		return s, err
	}
	return s, s.readBody(br)
}

// readSeenHead reads a request line and header lines, leaving the body.
func readSeenHead(br *bufio.Reader) (seenRequest, error) {
	s := seenRequest{Header: http.Header{}, Trailer: http.Header{}}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return s, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			break
		}
		if s.Line == "" {
			s.Line = line
			continue
		}
		s.Lines = append(s.Lines, line)
		k, v, _ := strings.Cut(line, ":")
		s.Header.Add(textproto.CanonicalMIMEHeaderKey(k), strings.TrimSpace(v))
	}
	return s, nil
}

// readBody reads the body framed as the head says, with its trailers.
func (s *seenRequest) readBody(br *bufio.Reader) error {
	switch {
	case strings.EqualFold(s.Header.Get("Transfer-Encoding"), "chunked"):
		s.Chunked = true
		b, err := io.ReadAll(httputil.NewChunkedReader(br))
		if err != nil {
			return err
		}
		s.Body = string(b)
		tr, err := textproto.NewReader(br).ReadMIMEHeader()
		if err != nil {
			return err
		}
		s.Trailer = http.Header(tr)
	case s.Header.Get("Content-Length") != "":
		n, err := strconv.ParseInt(s.Header.Get("Content-Length"), 10, 64)
		if err != nil {
			return err
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		s.Body = string(b)
	}
	return nil
}

// scriptedBackend serves keep-alive requests on raw sockets: each request is
// read with readSeen, reported on the returned channel (buffered; tests that
// do not look may let it fill, the backend then drops reports) and answered
// with the raw bytes reply returns. conns counts accepted connections.
func scriptedBackend(t testing.TB, reply func(seenRequest) string) (addr string, seen <-chan seenRequest, conns *atomic.Int64) {
	ch := make(chan seenRequest, 64)
	conns = &atomic.Int64{}
	addr = rawBackend(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			s, err := readSeen(br)
			if err != nil {
				return
			}
			select {
			case ch <- s:
			default:
			}
			if _, err := io.WriteString(c, reply(s)); err != nil {
				return
			}
		}
	})
	return addr, ch, conns
}

// recordingBackend answers every request 200 "ok" and reports it as seen.
func recordingBackend(t testing.TB) (string, <-chan seenRequest) {
	addr, seen, _ := scriptedBackend(t, func(seenRequest) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	return addr, seen
}

// next returns the next request a backend reported.
func nextSeen(t testing.TB, seen <-chan seenRequest) seenRequest {
	t.Helper()
	select {
	case s := <-seen:
		return s
	case <-time.After(waitLimit):
		t.Fatal("the backend saw no request")
		return seenRequest{}
	}
}

// halfClosingBackend answers with a body delimited by the end of the
// connection: it sends the head and body, half-closes its side (FIN) and
// keeps reading until tollgate closes.
func halfClosingBackend(t testing.TB, body string) string {
	return rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readSeen(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"+body)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	})
}

// stallNotify reads the request head, reports it on headSeen and then never
// answers; closed is closed once tollgate closes the connection (the backend
// reads EOF or an error).
func stallNotify(t testing.TB) (addr string, headSeen, closed <-chan struct{}) {
	hs, cl := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	addr = rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readSeen(br); err != nil {
			return
		}
		if !once.CompareAndSwap(false, true) {
			return // one request per test
		}
		close(hs)
		io.Copy(io.Discard, br)
		close(cl)
	})
	return addr, hs, cl
}

// endlessBackend streams a response body until writing fails, then closes
// writeFailed: what a client that stopped reading does to the backend once
// tollgate gives up on it.
func endlessBackend(t testing.TB) (addr string, writeFailed <-chan struct{}) {
	done := make(chan struct{})
	var once atomic.Bool
	chunk := strings.Repeat("x", 32<<10)
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		for {
			if _, err := io.WriteString(w, chunk); err != nil {
				if once.CompareAndSwap(false, true) {
					close(done)
				}
				return
			}
		}
	}))
	return b.Addr, done
}

// stuckClient sends req on a connection with a small receive buffer and
// never reads from it: a slow (or hung) client. The connection closes when
// the test ends.
func stuckClient(t testing.TB, addr, req string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitClosed fails the test unless ch is closed within waitLimit.
func waitClosed(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("%s: not within %v", what, waitLimit)
	}
}

// header lists the values a backend saw for name, for error messages that
// show exactly what arrived.
func (s seenRequest) header(name string) []string {
	return s.Header[textproto.CanonicalMIMEHeaderKey(name)]
}

func (s seenRequest) String() string {
	return fmt.Sprintf("%s\n%s\n\n%q", s.Line, strings.Join(s.Lines, "\n"), s.Body)
}
