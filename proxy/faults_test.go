package proxy

import (
	"errors"
	"io"
	"testing"
)

// TestFailureBeforeResponseHead runs each backend fault that happens before
// a response head through tollgate: the client gets 502/504 with an RFC 9209
// Proxy-Status naming the close reason, and the access log agrees.
func TestFailureBeforeResponseHead(t *testing.T) {
	tests := []struct {
		name        string
		backend     func(testing.TB) string
		yaml        string
		status      int
		proxyStatus string
		reason      string
	}{
		{"refused", refusingAddr, "", 502, "connection_refused", "us_connect_refused"},
		{"accept then close", acceptThenClose, "", 502, "connection_terminated", "us_closed_before_headers"},
		{"reset before headers", resetBeforeHeaders, "", 502, "connection_terminated", "us_reset_before_headers"},
		{"stall", stallingBackend, "proxy_read_timeout: 200ms\n", 504, "http_response_timeout", "us_header_timeout"},
		{"malformed response", malformedResponse, "", 502, "http_protocol_error", "us_bad_response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, tt.yaml+upstreamYAML(tt.backend(t)))
			resp, err := newClient(t).Get(p.URL + "/fail")
			if err != nil {
				t.Fatalf("client error %v, want a %d response", err, tt.status)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantPS := "tollgate; error=" + tt.proxyStatus + "; details=\"" + tt.reason + "\""
			if resp.StatusCode != tt.status || resp.Header.Get("Proxy-Status") != wantPS {
				t.Fatalf("client got %d Proxy-Status %q\nwant %d %q", resp.StatusCode, resp.Header.Get("Proxy-Status"), tt.status, wantPS)
			}
			if want := resp.Status[4:] + "\n"; string(body) != want {
				t.Errorf("body %q, want %q", body, want)
			}
			a := p.accessFor(t, "/fail")
			wantUS := "502"
			if tt.status == 504 {
				wantUS = "504"
			}
			if a.Status != tt.status || a.UpstreamStatus != wantUS || a.UpstreamClose != tt.reason {
				t.Errorf("access log status %d upstream_status %q upstream_close %q; want %d %q %q",
					a.Status, a.UpstreamStatus, a.UpstreamClose, tt.status, wantUS, tt.reason)
			}
		})
	}
}

// TestCutBody: the backend closes after 10 of 1000 body bytes. The client
// has the 200 head already, so the only honest signal is a truncated body.
func TestCutBody(t *testing.T) {
	p := startProxy(t, upstreamYAML(cutBody(t)))
	resp, err := newClient(t).Get(p.URL + "/cut")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "0123456789" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("client got %d %q, %v; want 200 \"0123456789\" then unexpected EOF", resp.StatusCode, body, err)
	}
	a := p.accessFor(t, "/cut")
	if a.Status != 200 || a.Bytes != 10 || a.DownstreamClose != "ds_upstream_abort" || a.UpstreamClose != "us_closed_during_body" {
		t.Fatalf("access log status %d bytes %d downstream_close %q upstream_close %q;\nwant 200 10 ds_upstream_abort us_closed_during_body",
			a.Status, a.Bytes, a.DownstreamClose, a.UpstreamClose)
	}
}

// TestSlowClientSendTimeout: a client that stops reading a large response
// makes tollgate give up after send_timeout and close the backend
// connection, whose writes then fail.
func TestSlowClientSendTimeout(t *testing.T) {
	addr, writeFailed := endlessBackend(t)
	p := startProxy(t, "send_timeout: 300ms\n"+upstreamYAML(addr))
	stuckClient(t, p.Addr, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	waitClosed(t, writeFailed, "the backend's writes fail after tollgate gave up on the client")
	a := p.accessFor(t, "/slow")
	if a.Status != 200 || a.DownstreamClose != "ds_write_timeout" || a.UpstreamClose != "us_cancelled_by_downstream" {
		t.Fatalf("access log status %d downstream_close %q upstream_close %q;\nwant 200 ds_write_timeout us_cancelled_by_downstream",
			a.Status, a.DownstreamClose, a.UpstreamClose)
	}
}

// TestClientGoneWhileBackendStalls: the client leaves while the backend
// thinks; tollgate closes the upstream connection and logs Nginx's 499.
func TestClientGoneWhileBackendStalls(t *testing.T) {
	addr, headSeen, closed := stallNotify(t)
	p := startProxy(t, upstreamYAML(addr))
	c := dialRaw(t, p.Addr)
	c.send(t, "GET /gone HTTP/1.1\r\nHost: h\r\n\r\n")
	waitClosed(t, headSeen, "the backend gets the request")
	c.c.Close()
	waitClosed(t, closed, "the backend sees tollgate close the upstream connection")
	a := p.accessFor(t, "/gone")
	if a.Status != 499 || a.UpstreamClose != "us_cancelled_by_downstream" {
		t.Fatalf("access log status %d upstream_close %q; want 499 us_cancelled_by_downstream", a.Status, a.UpstreamClose)
	}
}
