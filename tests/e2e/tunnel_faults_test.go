// End-to-end tests of the tunnel under transport faults: the relay resets the
// agent's TCP connection (SO_LINGER 0) or corrupts its TLS stream, over and
// over, while requests flow. The agent must reconnect every time, keep
// serving, and (under the ASan build, VM_AGENT_BIN=build-san/vm-agent) never
// touch memory it does not own: libcurl writes its error message into
// CURLOPT_ERRORBUFFER on every failed recv/send, so that buffer must live as
// long as the handle.
package e2e

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// sanitizerEnv makes a sanitizer build report a use of a dead stack frame
// (off by default in ASan) instead of reading it silently; other builds
// ignore it.
func sanitizerEnv() string {
	opts := os.Getenv("ASAN_OPTIONS")
	if opts != "" {
		opts += ":"
	}
	return "ASAN_OPTIONS=" + opts + "detect_stack_use_after_return=1:detect_stack_use_after_scope=1"
}

var sanitizerRe = regexp.MustCompile(`(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer)`)

// sanitizerReport returns the sanitizer report in log (from its first line
// on, bounded), or "" when there is none.
func sanitizerReport(log string) string {
	loc := sanitizerRe.FindStringIndex(log)
	if loc == nil {
		return ""
	}
	s := log[loc[0]:]
	if len(s) > 6000 {
		s = s[:6000]
	}
	return s
}

// startFaultPair starts a relay (with extra args) and an agent that reconnects
// quickly (50 ms, at most 200 ms: 20 cycles fit in a few seconds).
func startFaultPair(t *testing.T, extraYAML string, relayArgs ...string) (*Agent, *Relay) {
	t.Helper()
	r := startRelay(t, append([]string{"-hmac-key", relayHMACKey, "-tenant", "tenant-a"}, relayArgs...)...)
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	a := startAgent(t, tunnelYAML(r, tok, extraYAML),
		"VM_AGENT_PIKO_RECONNECT_INITIAL_DELAY=50ms", "VM_AGENT_PIKO_RECONNECT_MAX_DELAY=200ms",
		sanitizerEnv())
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("agent did not connect to the relay\nagent log:\n%s", a.Log.String())
	}
	return a, r
}

// checkAgentHealthy fails the test when the agent exited or printed a
// sanitizer report.
func checkAgentHealthy(t *testing.T, a *Agent, when string) {
	t.Helper()
	if rep := sanitizerReport(a.Log.String()); rep != "" {
		t.Fatalf("%s: sanitizer report in the agent's output:\n%s", when, rep)
	}
	if a.Wait(0) != -1 {
		t.Fatalf("%s: the agent exited:\n%s", when, tail(a.Log.String(), 4000))
	}
}

// serveThrough polls GET /v1/livez through the relay until it answers 200 or
// the deadline passes (the relay may still route to a dying session briefly).
func serveThrough(client *http.Client, r *Relay, deadline time.Time) bool {
	for time.Now().Before(deadline) {
		code, _, err := getThrough(client, r.ProxyURL(), "/v1/livez")
		if err == nil && code == 200 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// waitReconnect waits until the relay has seen n upstream sessions and one is
// connected, giving up early when the agent died.
func waitReconnect(a *Agent, r *Relay, n int64, deadline time.Time) bool {
	for time.Now().Before(deadline) && a.Wait(0) == -1 {
		if s := r.Status(); s.Connections >= n && s.Upstreams >= 1 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// faultCycles injects mode n times within budget while 4 clients keep sending
// requests through the tunnel; after each fault the agent must reconnect and
// serve again. Returns the number of requests answered 200 meanwhile.
func faultCycles(t *testing.T, a *Agent, r *Relay, mode string, n int, budget time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(budget)
	client := &http.Client{Timeout: 3 * time.Second}
	var served int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 100000; k++ { // bounded; stop ends it first
				select {
				case <-stop:
					return
				default:
				}
				if code, _, err := getThrough(client, r.ProxyURL(), "/v1/livez"); err == nil && code == 200 {
					atomic.AddInt64(&served, 1)
				} else {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := 0; i < n; i++ {
		if !serveThrough(client, r, deadline) {
			checkAgentHealthy(t, a, mode)
			t.Fatalf("cycle %d/%d (%s): no request served within the budget:\n%s", i+1, n, mode,
				tail(a.Log.String(), 4000))
		}
		before := r.Status().Connections
		r.Fault(mode, 0)
		if !waitReconnect(a, r, before+1, deadline) {
			checkAgentHealthy(t, a, mode)
			t.Fatalf("cycle %d/%d (%s): the agent did not reconnect:\n%s", i+1, n, mode,
				tail(a.Log.String(), 4000))
		}
		checkAgentHealthy(t, a, mode)
	}
	if !serveThrough(client, r, deadline) {
		t.Fatalf("%s: no request served after the last cycle:\n%s", mode, tail(a.Log.String(), 4000))
	}
	return atomic.LoadInt64(&served)
}

// stopClean: SIGTERM gives exit 0 (under ASan a leak makes it non-zero) and
// no sanitizer report.
func stopClean(t *testing.T, a *Agent) {
	t.Helper()
	a.Signal(syscall.SIGTERM)
	code := a.Wait(15 * time.Second)
	if rep := sanitizerReport(a.Log.String()); rep != "" {
		t.Fatalf("sanitizer report in the agent's output:\n%s", rep)
	}
	if code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, tail(a.Log.String(), 4000))
	}
}

func TestTunnelSurvivesConnectionReset(t *testing.T) {
	a, r := startFaultPair(t, "")
	const cycles = 20
	start := time.Now()
	served := faultCycles(t, a, r, "reset", cycles, 20*time.Second)
	t.Logf("%d resets in %s, %d requests served meanwhile", cycles, time.Since(start).Round(time.Millisecond), served)
	// The reason comes from libcurl's error buffer: proof it is alive and read.
	if !strings.Contains(a.Log.String(), "Connection reset by peer") {
		t.Errorf("no \"Connection reset by peer\" in the agent's log:\n%s", tail(a.Log.String(), 3000))
	}
	if served < cycles {
		t.Errorf("only %d requests served during %d cycles", served, cycles)
	}
	stopClean(t, a)
}

func TestTunnelSurvivesTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTestCA(t, dir, "faults")
	a, r := startFaultPair(t, "piko:\n  ca_file: "+ca+"\n", "-tls-cert", cert, "-tls-key", key)
	if !strings.HasPrefix(r.UpstreamURL, "https://") {
		t.Fatalf("relay URL %s", r.UpstreamURL)
	}
	// A record the agent cannot decrypt, then resets under TLS: both make
	// libcurl's TLS layer fail with a message in the error buffer.
	faultCycles(t, a, r, "tlsgarbage", 5, 10*time.Second)
	if !strings.Contains(a.Log.String(), "SSL") {
		t.Errorf("no TLS error in the agent's log:\n%s", tail(a.Log.String(), 3000))
	}
	faultCycles(t, a, r, "reset", 5, 10*time.Second)
	stopClean(t, a)
}
