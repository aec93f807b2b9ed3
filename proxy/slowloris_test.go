package proxy

import (
	"context"
	"io"
	"os/exec"
	"testing"
	"time"
)

// TestSlowlorisResisted runs slowhttptest's slow-headers attack (Slowloris:
// hundreds of connections each trickling header lines) against tollgate
// while a client sends normal requests: client_header_timeout closes the
// attackers (ds_header_timeout) and every normal request is served.
func TestSlowlorisResisted(t *testing.T) {
	bin := requireBinary(t, "slowhttptest")
	b := namedBackend(t, "ok")
	p := startProxyWithCloses(t, "client_header_timeout: 1s\n"+upstreamYAML(b.Addr))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	attack := exec.CommandContext(ctx, bin, "-H", "-c", "300", "-r", "300", "-i", "1", "-l", "5",
		"-u", p.URL+"/", "-v", "0")
	if err := attack.Start(); err != nil {
		t.Fatalf("start slowhttptest: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- attack.Wait() }()
	t.Cleanup(func() { cancel(); <-done })

	time.Sleep(1500 * time.Millisecond) // the attack's connections are open
	client := newClient(t)
	for i := range 20 {
		resp, err := client.Get(p.URL + "/normal")
		if err != nil {
			t.Fatalf("request %d during the attack: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d during the attack: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.awaitClose(t, "downstream", reasonDSHeaderTimeout)
	if n := p.count(t, "downstream", reasonDSHeaderTimeout); n < 50 {
		t.Errorf("only %d attacking connections closed on client_header_timeout, want most of 300", n)
	}
}
