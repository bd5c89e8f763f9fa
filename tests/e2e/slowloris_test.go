// End-to-end tests of slow clients without a token (slowloris): connections
// that drip their headers or their body must not hold the webhook's workers
// past a whole-request deadline, a denied request is closed without reading
// its body, and tunnel traffic keeps its own workers (unix socket listener).
package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dripper keeps n connections to addr open, each writing first once and then
// drip every interval, reopening a connection the server closed, until stop.
type dripper struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	started atomic.Int64 // connections that wrote their first bytes
	opened  atomic.Int64 // connections opened in total (reconnects included)
}

func startDripper(t *testing.T, addr string, n int, first, drip string, interval, maxLife time.Duration) *dripper {
	t.Helper()
	d := &dripper{stop: make(chan struct{})}
	end := time.Now().Add(maxLife)
	for i := 0; i < n; i++ {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			counted := false
			for time.Now().Before(end) {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					select {
					case <-d.stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				d.opened.Add(1)
				if _, err := io.WriteString(c, first); err == nil && !counted {
					counted = true
					d.started.Add(1)
				}
				tick := time.NewTicker(interval)
			dripping:
				for time.Now().Before(end) {
					select {
					case <-d.stop:
						tick.Stop()
						c.Close()
						return
					case <-tick.C:
						c.SetWriteDeadline(time.Now().Add(time.Second))
						if _, err := io.WriteString(c, drip); err != nil {
							break dripping // closed by the server: come back
						}
					}
				}
				tick.Stop()
				c.Close()
			}
		}()
	}
	t.Cleanup(d.Stop)
	return d
}

func (d *dripper) Stop() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.wg.Wait()
}

// waitStarted waits until every connection wrote its first bytes.
func (d *dripper) waitStarted(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d.started.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d slow connections started", d.started.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSlowHeadersDoNotStarveTunnel(t *testing.T) {
	a, r := startTunnelPairRelay(t, "")
	addr := fmt.Sprintf("127.0.0.1:%d", a.Port)
	client := &http.Client{Timeout: 5 * time.Second}
	// Warm the tunnel path: the first stream after connect is not what we measure.
	if code, _, err := getThrough(client, r.ProxyURL(), "/v1/livez"); err != nil || code != 200 {
		t.Fatalf("through the tunnel before the attack: %d %v", code, err)
	}

	const slow = 100
	d := startDripper(t, addr, slow, "GET /v1/livez HTTP/1.1\r\nHost: x\r\n", "X-Drip: 1\r\n",
		500*time.Millisecond, 15*time.Second)
	// Once all are connected and sending, every later connection to the TCP
	// port queues behind them (civetweb takes connections in order).
	d.waitStarted(t, slow, 5*time.Second)

	tunnel := &http.Client{Timeout: time.Second}
	for i := 0; i < 5; i++ {
		t0 := time.Now()
		code, body, err := getThrough(tunnel, r.ProxyURL(), "/v1/livez")
		if err != nil || code != 200 {
			t.Fatalf("request %d through the tunnel with %d slow local connections: %d %q %v (after %s)",
				i, slow, code, body, err, time.Since(t0))
		}
		if el := time.Since(t0); el > time.Second {
			t.Fatalf("request %d through the tunnel took %s (> 1 s)", i, el)
		}
	}
	t0 := time.Now()
	local := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := local.Get(a.URL("/v1/livez"))
	if err != nil {
		t.Fatalf("GET /v1/livez on the TCP listener with %d slow connections: %v (after %s)", slow, err, time.Since(t0))
	}
	readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("livez: %d", resp.StatusCode)
	}
	t.Logf("livez on TCP answered in %s; %d slow connections opened in total", time.Since(t0), d.opened.Load())
}

// slowPost opens a connection, sends an unauthenticated POST whose declared
// body is cl bytes, and drips its body one byte a second from then on.
type slowPost struct {
	c      net.Conn
	br     *bufio.Reader
	status int
	close  bool // the response said Connection: close
	header http.Header
	closed chan time.Duration // how long after the response the server closed
}

func startSlowPost(t *testing.T, addr, path string, cl int, stop chan struct{}) *slowPost {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\n\r\n{", path, cl)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := io.WriteString(c, " "); err != nil {
					return
				}
			}
		}
	}()
	return &slowPost{c: c, br: bufio.NewReader(c), closed: make(chan time.Duration, 1)}
}

// readResponse reads the status line and headers (the body is JSON with a
// Content-Length), then waits for the server to close the connection.
func (p *slowPost) readResponse(t *testing.T, timeout time.Duration) {
	t.Helper()
	p.c.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		t.Fatalf("no response to the slow POST within %s: %v", timeout, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	p.status, p.header, p.close = resp.StatusCode, resp.Header, resp.Close
	go func() {
		t0 := time.Now()
		p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := p.br.ReadByte()
		for err == nil {
			_, err = p.br.ReadByte()
		}
		p.closed <- time.Since(t0)
	}()
}

func TestUnauthenticatedSlowBodyClosedAfter401(t *testing.T) {
	a := startAgent(t, "")
	addr := fmt.Sprintf("127.0.0.1:%d", a.Port)
	stop := make(chan struct{})
	defer close(stop)

	const n = 20 // more than webhook.num_threads (16)
	posts := make([]*slowPost, 0, n)
	for i := 0; i < n; i++ {
		posts = append(posts, startSlowPost(t, addr, "/v1/probes", 1<<20, stop))
	}
	// One more that declares a body above webhook.max_body: 413, closed too;
	// and bodies sent where none is read (404, 405): closed, not drained.
	big := startSlowPost(t, addr, "/v1/probes", 64<<20, stop)
	others := []*slowPost{startSlowPost(t, addr, "/nope", 1<<20, stop),
		startSlowPost(t, addr, "/v1/livez", 1<<20, stop)}

	for i, p := range posts {
		p.readResponse(t, 3*time.Second)
		if p.status != 401 {
			t.Fatalf("slow POST %d: status %d, want 401", i, p.status)
		}
		if !p.close {
			t.Errorf("slow POST %d: 401 without Connection: close (%v)", i, p.header)
		}
	}
	big.readResponse(t, 3*time.Second)
	if big.status != 413 || !big.close {
		t.Errorf("oversized POST: %d %v, want 413 with Connection: close", big.status, big.header)
	}
	for i, want := range []int{404, 405} {
		others[i].readResponse(t, 3*time.Second)
		if others[i].status != want || !others[i].close {
			t.Errorf("POST with a body to a route that reads none: %d (close %v), want %d with Connection: close",
				others[i].status, others[i].close, want)
		}
	}
	for i, p := range append(append(posts, big), others...) {
		select {
		case el := <-p.closed:
			if el > 2*time.Second {
				t.Errorf("connection %d closed %s after the response (> 2 s)", i, el)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("connection %d still open 3 s after its %d: the body is being drained", i, p.status)
		}
	}
	// The workers are free again while the clients keep dripping.
	t0 := time.Now()
	local := &http.Client{Timeout: 3 * time.Second}
	resp, err := local.Get(a.URL("/v1/livez"))
	if err != nil {
		t.Fatalf("GET /v1/livez after the 401s: %v (after %s)", err, time.Since(t0))
	}
	readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("livez: %d", resp.StatusCode)
	}
}

// rawRequest writes head, then drips one byte of drip every interval until the
// server answers; returns the status, how long it took and whether the
// server closed the connection after it.
func rawRequest(t *testing.T, addr, head string, drip byte, interval, timeout time.Duration) (int, time.Duration, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte{drip}); err != nil {
					return
				}
			}
		}
	}()
	c.SetReadDeadline(t0.Add(timeout))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", timeout, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	el := time.Since(t0)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = br.ReadByte()
	return resp.StatusCode, el, err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Each byte arrives well within civetweb's per-recv timeout; only a deadline
// on the whole request ends these.
func TestSlowRequestCutAtWholeRequestDeadline(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "webhook:\n  request_timeout: 2s\n")
	addr := fmt.Sprintf("127.0.0.1:%d", a.Port)

	code, el, closed := rawRequest(t, addr, "GET /v1/livez HTTP/1.1\r\nHost: x\r\nX-Slow: ", 'a',
		200*time.Millisecond, 6*time.Second)
	if code != 408 || el > 3500*time.Millisecond || !closed {
		t.Errorf("dripped headers: %d after %s (closed %v), want 408 within ~2 s and closed", code, el, closed)
	}

	head := fmt.Sprintf("POST /v1/probes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", is.tok(allScopes))
	code, el, closed = rawRequest(t, addr, head, ' ', 200*time.Millisecond, 6*time.Second)
	if code != 408 || el > 3500*time.Millisecond || !closed {
		t.Errorf("dripped body: %d after %s (closed %v), want 408 within ~2 s and closed", code, el, closed)
	}
}

// The webhook answers 401 without reading a large body and closes; through
// the tunnel the caller must still get that 401, not a reset stream (502).
func TestUnauthenticatedLargePostThroughTunnelGets401(t *testing.T) {
	_, r := startTunnelPairRelay(t, "")
	body := strings.Repeat("x", 3<<20)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 5; i++ {
		resp, err := client.Post(r.ProxyURL()+"/v1/probes", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %d through the tunnel: %v", i, err)
		}
		got := readBody(t, resp)
		if resp.StatusCode != 401 {
			t.Fatalf("POST %d through the tunnel: %d %q, want 401", i, resp.StatusCode, got)
		}
	}
}
