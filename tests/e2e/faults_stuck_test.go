package e2e

// Slow and stuck peers: whoever stops reading, the agent's memory stays
// within its buffers' budget (tunnel/bridge.c: 16 MiB received for all
// streams, 4 MiB queued for the server, a 256 KiB window per stream) instead
// of growing with what the other side would send.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// stuckOrigin serves GET /down (64 MiB), GET /held (1 MiB: 1,000 of them
// unread still fill every window and socket buffer on the way) and POST /stuck, which never reads
// the body until release is closed.
func stuckOrigin(t *testing.T, release chan struct{}) string {
	t.Helper()
	block := make([]byte, 1<<20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/down":
			w.Header().Set("Content-Length", fmt.Sprint(64<<20))
			for i := 0; i < 64; i++ {
				if _, err := w.Write(block); err != nil {
					return
				}
			}
		case "/held":
			w.Header().Set("Content-Length", fmt.Sprint(1<<20))
			w.Write(block)
		case "/stuck":
			<-release
			io.Copy(io.Discard, r.Body)
			w.Write([]byte("ok"))
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

const stuckBudgetKiB = 48 << 10 // 16 MiB rx + 4 MiB tx + per-stream state, with room

func TestFaultStuckPeersBoundedMemory(t *testing.T) {
	release := make(chan struct{})
	addr := stuckOrigin(t, release)
	a, r := startTunnelPairRelay(t, "piko:\n  forward_addr: "+addr+"\n")
	pid := a.Cmd.Process.Pid
	base := procStatus(t, pid, "VmRSS")
	check := func(what string) {
		t.Helper()
		rss := procStatus(t, pid, "VmRSS")
		t.Logf("%s: agent RSS %d KiB (%+d KiB)", what, rss, rss-base)
		if !sanitized(t) && rss-base > stuckBudgetKiB {
			t.Errorf("%s: agent RSS grew by %d KiB (budget %d KiB)", what, rss-base, stuckBudgetKiB)
		}
	}

	// 1,000 streams whose client reads the headers and then nothing
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 1000}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var mu sync.Mutex
	var bodies []io.Closer
	var wg sync.WaitGroup
	failed := 0
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(r.ProxyURL() + "/held")
			mu.Lock()
			defer mu.Unlock()
			if err != nil || resp.StatusCode != 200 {
				if failed++; failed <= 3 {
					var b []byte
					if resp != nil {
						b, _ = io.ReadAll(resp.Body)
					}
					t.Logf("stream refused: %v %s", err, b)
				}
				return
			}
			bodies = append(bodies, resp.Body)
		}()
	}
	wg.Wait()
	time.Sleep(3 * time.Second) // every window fills, every buffer with it
	check(fmt.Sprintf("%d streams never read (%d refused)", len(bodies), failed))
	if len(bodies) < 900 {
		t.Errorf("only %d of 1000 streams opened", len(bodies))
	}
	for _, b := range bodies {
		b.Close()
	}
	tr.CloseIdleConnections()

	// an origin that stops reading a 64 MiB upload
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", r.ProxyURL()+"/stuck", &patternReader{block: make([]byte, 1<<20), left: 64 << 20})
		req.ContentLength = 64 << 20
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(3 * time.Second)
	check("origin not reading a 64 MiB upload")
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the upload failed once the origin read it: %v", err)
	}

	// a relay that stops reading while a download flows (pings unanswered too)
	resp, err := client.Get(r.ProxyURL() + "/down")
	if err != nil {
		t.Fatal(err)
	}
	r.Fault("stall", 3*time.Second)
	time.Sleep(3 * time.Second)
	check("relay not reading during a download")
	resp.Body.Close()

	// and afterwards the agent serves as before
	if !r.WaitConnections(1, 20*time.Second) {
		t.Fatal("no session after the faults")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, err := getThrough(&http.Client{Timeout: 5 * time.Second}, r.ProxyURL(), "/missing")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the faults: %d %v\n%s", code, err, tail(a.Log.String(), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
