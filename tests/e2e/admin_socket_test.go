// End-to-end tests of the admin socket under slow or idle local clients: one
// stuck tool (or ten) must not make `vm-agent status` or `configure`'s reload
// fail. The server gives every connection a whole-request deadline, serves
// several at once, and answers the excess "busy" at once.
package e2e

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// dialAdmin connects to the agent's admin socket, retrying briefly (a full
// backlog refuses a unix connect instead of queueing it).
func dialAdmin(t *testing.T, a *Agent) net.Conn {
	t.Helper()
	var err error
	for i := 0; i < 50; i++ {
		var c net.Conn
		if c, err = net.Dial("unix", hcSock(a)); err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("cannot connect to the admin socket: %v", err)
	return nil
}

// drip writes one byte of a request every interval and never the newline,
// until stop is closed or the server closes the connection.
func drip(c net.Conn, interval time.Duration, stop <-chan struct{}) {
	req := `{"cmd":"status","pad":"` + strings.Repeat("x", 4000)
	for i := 0; i < len(req); i++ {
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte{req[i]}); err != nil {
			return
		}
	}
}

// timedStatus runs `vm-agent status` and returns its exit code, output and
// how long it took.
func timedStatus(t *testing.T, a *Agent) (int, string, time.Duration) {
	t.Helper()
	start := time.Now()
	code, out, errOut := runCLI(t, nil, "status", "--config", a.Config)
	return code, out + errOut, time.Since(start)
}

func TestStatusWithSlowAdminClients(t *testing.T) {
	a := startAgent(t, "")
	hcWaitAdmin(t, a)
	const slow = 10
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	var silent []net.Conn
	for i := 0; i < slow; i++ {
		c := dialAdmin(t, a)
		if i%2 == 0 {
			silent = append(silent, c) // connects and sends nothing
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); drip(c, 100*time.Millisecond, stop) }()
	}
	for i := 0; i < 3; i++ {
		code, out, el := timedStatus(t, a)
		if code != 0 || !strings.Contains(out, "vm-agent: running") || el > 2*time.Second {
			t.Fatalf("status %d with %d slow admin clients: exit %d after %s\n%s", i+1, slow, code,
				el.Round(time.Millisecond), out)
		}
		t.Logf("status %d answered in %s", i+1, el.Round(time.Millisecond))
	}
	// The silent clients are dropped at their deadline, not held forever.
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := bufio.NewReader(c).ReadString('\n')
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("silent client %d still open after 10 s", i)
		}
	}
}

func TestAdminSocketAnswersBusyToExcessClients(t *testing.T) {
	a := startAgent(t, "")
	hcWaitAdmin(t, a)
	const idle = 40 // far above the server's concurrent connections
	var busy int
	conns := make([]net.Conn, 0, idle)
	for i := 0; i < idle; i++ {
		conns = append(conns, dialAdmin(t, a))
	}
	// Every connection beyond the limit hears "busy" at once (the ones that
	// hold a slot time out after the deadline, later).
	// (Concurrently: Go fails a read after its deadline even with data buffered.)
	dl := time.Now().Add(time.Second)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			c.SetReadDeadline(dl)
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && strings.Contains(line, `"code":"busy"`) {
				mu.Lock()
				busy++
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	if busy < idle-16 {
		t.Fatalf("%d of %d idle connections were answered busy; want >= %d", busy, idle, idle-16)
	}
	// status waits out the busy answers (retrying) and succeeds well within
	// its own 5 s timeout.
	code, out, el := timedStatus(t, a)
	if code != 0 || !strings.Contains(out, "vm-agent: running") || el > 4500*time.Millisecond {
		t.Fatalf("status with %d idle admin clients: exit %d after %s\n%s", idle, code,
			el.Round(time.Millisecond), out)
	}
	t.Logf("%d busy answers; status answered in %s", busy, el.Round(time.Millisecond))
	if _, err := os.Stat(hcSock(a)); err != nil {
		t.Fatal(err)
	}
}
