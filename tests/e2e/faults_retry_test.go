package e2e

import (
	"strings"
	"testing"
	"time"
)

// fewestFDs is the smallest open-descriptor count over 1.5 s (a cycle of the
// loop below is at most 700 ms): a session's own descriptors come and go with
// it, a leak stays.
func fewestFDs(t *testing.T, pid int) int {
	n := openFDs(t, pid)
	for i := 0; i < 30; i++ {
		time.Sleep(50 * time.Millisecond)
		if m := openFDs(t, pid); m < n {
			n = m
		}
	}
	return n
}

// Against a Piko that accepts every session and resets it (RST) 200 ms later
// — a flapping load balancer, a crash-looping relay — the agent's re-login
// loop stays flat: memory and fds flat, the backoff grows because no session
// lasts (never a tight reconnect loop), a bounded number of log lines per
// session, CPU near zero; and once the relay stops resetting, the next session
// holds and requests through it succeed (frp and salt-minion grew memory in
// such loops).
func TestFaultResettingRelayRetryLoopStaysFlat(t *testing.T) {
	dur := 20 * time.Second
	if soak() {
		dur = 10 * time.Minute
	}
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(24*time.Hour).Unix(), "agent-1"))
	a := startAgent(t, tunnelYAML(r, tok, ""), "VM_AGENT_PIKO_RECONNECT_INITIAL_DELAY=50ms",
		"VM_AGENT_PIKO_RECONNECT_MAX_DELAY=500ms")
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("agent did not connect:\n%s", a.Log.String())
	}
	r.Fault("resetloop", 200*time.Millisecond)
	pid := a.Cmd.Process.Pid
	time.Sleep(3 * time.Second) // warm-up: a few sessions made and lost
	rss0, fds0, c0 := procStatus(t, pid, "VmRSS"), fewestFDs(t, pid), cpuTicks(t, pid)
	conn0, lines0 := r.Status().Connections, strings.Count(a.Log.String(), "\n")
	time.Sleep(dur)
	c1 := cpuTicks(t, pid)
	rss1, fds1 := procStatus(t, pid, "VmRSS"), fewestFDs(t, pid)
	sessions, lines := r.Status().Connections-conn0, strings.Count(a.Log.String(), "\n")-lines0
	cpu := float64(c1-c0) / 100 / dur.Seconds()
	t.Logf("%s of accept-then-reset: %d sessions, %d log lines; RSS %d → %d KiB; fds %d → %d; CPU %.1f%%",
		dur, sessions, lines, rss0, rss1, fds0, fds1, cpu*100)
	// each cycle is 200 ms of session plus a backoff capped at 500 ms
	if min := int64(dur / (2 * time.Second)); sessions < min {
		t.Errorf("only %d sessions in %s: the agent stopped reconnecting", sessions, dur)
	}
	// a session that did not last must not reset the backoff: a cycle is
	// 200 ms + a full-jitter delay of 0-500 ms (about 450 ms on average, ~44
	// sessions in 20 s); reset to the 50 ms initial delay each time it would
	// be ~235 ms (~85)
	if max := int64(dur / (330 * time.Millisecond)); sessions > max {
		t.Errorf("%d sessions in %s: the backoff is reset by sessions that did not last", sessions, dur)
	}
	if int64(lines) > 3*sessions+10 {
		t.Errorf("%d log lines for %d sessions (want a bounded few per session)", lines, sessions)
	}
	if rss1-rss0 > 2<<10 && !sanitized(t) {
		t.Errorf("RSS grew by %d KiB over %d sessions", rss1-rss0, sessions)
	}
	if fds1 > fds0 {
		t.Errorf("open fds %d after the loop, %d before (fewest over 1.5 s)", fds1, fds0)
	}
	if cpu > 0.05 {
		t.Errorf("CPU %.1f%% in the re-login loop (want near zero)", cpu*100)
	}

	// healed: the next session holds and answers
	r.Fault("resetloop", 0)
	before := r.Status().Connections
	if !r.WaitConnections(before+1, 10*time.Second) {
		t.Fatalf("no new session after the relay stopped resetting:\n%s", tail(a.Log.String(), 2000))
	}
	time.Sleep(time.Second)
	if s := r.Status(); s.Upstreams != 1 {
		t.Fatalf("relay holds %d sessions for the agent, want 1", s.Upstreams)
	}
	if code, body, err := getThrough(httpClient, r.ProxyURL(), "/v1/livez"); err != nil || code != 200 {
		t.Fatalf("livez after the loop: %d %s %v", code, body, err)
	}
}
