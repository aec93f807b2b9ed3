package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// fixedResponse is the fake upstream's whole answer: exactly 64 bytes.
var fixedResponse = func() []byte {
	head := "HTTP/1.1 200 OK\r\nContent-Length: NN\r\n\r\n"
	body := strings.Repeat("x", 64-len(head))
	head = strings.Replace(head, "NN", strconv.Itoa(len(body)), 1)
	return []byte(head + body)
}()

// fastBackend answers every request head on a kept-alive connection with
// fixedResponse, as fast as it can: a fake upstream whose own cost stays
// out of the measurement. Requests must have no body.
func fastBackend(tb testing.TB) string {
	return rawBackend(tb, func(c net.Conn) {
		br := bufio.NewReaderSize(c, 16<<10)
		for {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := c.Write(fixedResponse); err != nil {
				return
			}
		}
	})
}

var errNoLength = errors.New("response without Content-Length")

// readRawResponse reads one response head and its Content-Length body from
// br and returns the status code, without allocating: the benchmark's client
// must cost as little as possible.
func readRawResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 {
		return 0, errors.New("short status line")
	}
	code := atoiBytes(line[9:12])
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		const cl = "content-length:"
		if len(line) > len(cl) && asciiEqualFold(line[:len(cl)], cl) {
			length = atoiBytes(line[len(cl):])
		}
	}
	if length < 0 {
		return 0, errNoLength
	}
	_, err = br.Discard(length)
	return code, err
}

// atoiBytes parses the decimal digits of b, skipping spaces and CR LF.
func atoiBytes(b []byte) int {
	n := 0
	for _, c := range b {
		if '0' <= c && c <= '9' {
			n = n*10 + int(c-'0')
		}
	}
	return n
}

func asciiEqualFold(b []byte, s string) bool {
	for i := range len(s) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// benchServer starts tollgate proxying to upstream; with accessLog false it
// has no access log (startProxy always captures one).
func benchServer(b *testing.B, upstream string, accessLog bool) string {
	// No limit on requests per client connection: the client keeps one.
	yaml := "keepalive_requests: 0\n" + upstreamYAML(upstream)
	if accessLog {
		return startProxy(b, yaml).Addr
	}
	cfg := testConfig(b, yaml)
	s, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failAfter)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s.Addrs()[0].String()
}

// BenchmarkProxyHandler measures one proxied request on kept-alive
// connections at both ends, with a fake upstream and a hand-written client,
// so that what remains is mostly tollgate's own cost (net/http's server
// included).
func BenchmarkProxyHandler(b *testing.B) {
	for _, bc := range []struct {
		name      string
		accessLog bool
	}{{"access_log=on", true}, {"access_log=off", false}} {
		b.Run(bc.name, func(b *testing.B) {
			addr := benchServer(b, fastBackend(b), bc.accessLog)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			req := []byte("GET /bench HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			br := bufio.NewReaderSize(c, 16<<10)
			roundTrip := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				code, err := readRawResponse(br)
				if err != nil || code != http.StatusOK {
					b.Fatalf("response: %d %v", code, err)
				}
			}
			roundTrip() // dial the upstream outside the measurement
			b.ReportAllocs()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}

// BenchmarkWriteRequestHead measures writing a typical forwarded request
// head: 8 client headers plus the ones tollgate adds.
func BenchmarkWriteRequestHead(b *testing.B) {
	raw := "GET /api/v1/items?page=2&sort=name HTTP/1.1\r\n" +
		"Host: shop.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n" +
		"Accept: application/json\r\n" +
		"Accept-Encoding: gzip, deflate, br\r\n" +
		"Accept-Language: en-US,en;q=0.9\r\n" +
		"Cookie: session=0123456789abcdef; theme=dark\r\n" +
		"X-Forwarded-For: 203.0.113.7\r\n" +
		"Connection: keep-alive\r\n\r\n"
	r := &h1.Request{}
	if err := h1.ReadRequest(bufio.NewReader(strings.NewReader(raw)), 1<<20, r); err != nil {
		b.Fatal(err)
	}
	f := &forwarding{
		peerIP: "127.0.0.1", clientIP: "203.0.113.7", proto: "http", trustedPeer: true,
		requestID: "0123456789abcdef0123456789abcdef", requestIDName: "X-Request-ID",
	}
	bw := bufio.NewWriterSize(io.Discard, 4096)
	b.ReportAllocs()
	for b.Loop() {
		writeRequestHead(bw, r, f, "")
		bw.Flush()
	}
}

// TestWriteRequestHeadNoAlloc keeps the request head writer at zero
// allocations, so a regression fails a test, not only a benchmark.
func TestWriteRequestHeadNoAlloc(t *testing.T) {
	r := &h1.Request{}
	if err := h1.ReadRequest(bufio.NewReader(strings.NewReader(
		"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: keep-alive\r\n\r\n")), 1<<20, r); err != nil {
		t.Fatal(err)
	}
	f := &forwarding{peerIP: "127.0.0.1", clientIP: "1.2.3.4", proto: "http", requestID: "x", requestIDName: "X-Request-ID"}
	bw := bufio.NewWriter(io.Discard)
	if n := testing.AllocsPerRun(100, func() { writeRequestHead(bw, r, f, ""); bw.Flush() }); n != 0 {
		t.Errorf("writeRequestHead: %v allocs, want 0", n)
	}
}

func TestReadRawResponse(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(string(fixedResponse) + "HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nabc"))
	for _, want := range []int{200, 404} {
		code, err := readRawResponse(br)
		if err != nil || code != want {
			t.Fatalf("readRawResponse = %d, %v; want %d", code, err, want)
		}
	}
	if len(fixedResponse) != 64 {
		t.Errorf("fixedResponse is %d bytes, want 64", len(fixedResponse))
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("bytes left after two responses: %v", err)
	}
}
