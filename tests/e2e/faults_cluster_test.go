package e2e

// A Piko cluster as it is deployed: three relay nodes behind a TCP load
// balancer (haproxy, on loopback). The agent's session lives on one node;
// when that node dies the agent reconnects through the balancer to another
// within the backoff, and no probe it acknowledged is lost.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startHAProxy balances TCP on a free loopback port over backends.
func startHAProxy(t *testing.T, backends []string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("haproxy is not installed (scripts/deps.sh installs it): %v", err)
	}
	port := freePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, "global\n  maxconn 256\n\ndefaults\n  mode tcp\n  timeout connect 2s\n"+
		"  timeout client 1h\n  timeout server 1h\n\nfrontend piko\n  bind 127.0.0.1:%d\n"+
		"  default_backend nodes\n\nbackend nodes\n  balance roundrobin\n", port)
	for i, be := range backends {
		// health checks every 200 ms: a dead node is out of rotation at once
		fmt.Fprintf(&b, "  server n%d %s check inter 200ms fall 1 rise 1\n", i, be)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0600); err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("haproxy log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := netDial(fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return fmt.Sprintf("http://127.0.0.1:%d", port)
		}
		select {
		case <-done:
			t.Fatalf("haproxy exited:\n%s", log.String())
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("haproxy did not listen:\n%s", log.String())
	return ""
}

// holder is the node that holds the agent's session now, or nil.
func holder(nodes []*Relay, skip *Relay) *Relay {
	for _, n := range nodes {
		if n != skip && n.Status().Upstreams >= 1 {
			return n
		}
	}
	return nil
}

func waitHolder(t *testing.T, nodes []*Relay, skip *Relay, timeout time.Duration) *Relay {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h := holder(nodes, skip); h != nil {
			return h
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func TestFaultClusterNodeDiesAgentMovesThroughBalancer(t *testing.T) {
	is := newIssuer(t)
	var nodes []*Relay
	var backends []string
	for i := 0; i < 3; i++ {
		n := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a", "-keepalive", "1s")
		nodes = append(nodes, n)
		backends = append(backends, n.Upstream)
	}
	lb := startHAProxy(t, backends)
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	y := fmt.Sprintf("piko:\n  server_url: %s\n  endpoint: agent-1\n  token_file: %s\n  keepalive_interval: 1s\n  keepalive_timeout: 1s\n", lb, tok)
	a := startAgent(t, mergeYAML(is.yaml(), y), fastReconnect...)
	first := waitHolder(t, nodes, nil, 15*time.Second)
	if first == nil {
		t.Fatalf("the agent did not connect through the balancer\n%s", a.Log.String())
	}
	a.Base = first.ProxyURL()

	// probes acknowledged before the node dies
	var ids []string
	for i := 0; i < 5; i++ {
		st, r, b := submit(t, a, is, `{"steps":[{"type":"exec","argv":["/bin/sh","-c","sleep 0.5; echo `+fmt.Sprint(i)+`"]}]}`)
		if st != 202 {
			t.Fatalf("submit: %d %s", st, b)
		}
		ids = append(ids, r.ID)
	}
	killed := time.Now()
	first.Kill()
	next := waitHolder(t, nodes, first, 15*time.Second)
	if next == nil {
		t.Fatalf("the agent did not move to another node\n%s", tail(a.Log.String(), 3000))
	}
	moved := time.Since(killed)
	a.Base = next.ProxyURL()
	for _, id := range ids {
		r := waitProbe(t, a, is, id, 20*time.Second)
		if r.State != "succeeded" {
			t.Errorf("probe %s acknowledged before the failover: %s %s", id, r.State, r.Error)
		}
	}
	sessions := 0
	for _, n := range nodes {
		if n != first {
			sessions += int(n.Status().Upstreams)
		}
	}
	t.Logf("node killed: the agent held a session on another node after %s; %d acknowledged probes all succeeded; %d sessions on the live nodes",
		moved.Round(time.Millisecond), len(ids), sessions)
	if sessions != 1 {
		t.Errorf("%d sessions on the live nodes, want exactly 1", sessions)
	}
	// within the backoff: fastReconnect caps it at 1 s, plus detection
	if moved > 8*time.Second {
		t.Errorf("failover took %s", moved)
	}
}

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }

// Without a balancer: piko.fallback_urls lists the other nodes. A dead first
// server is skipped at start, and when the node holding the session dies the
// agent moves on to the next one in the list.
func TestFaultFallbackServerList(t *testing.T) {
	is := newIssuer(t)
	a1 := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a", "-keepalive", "1s")
	a2 := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a", "-keepalive", "1s")
	dead := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens there
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	y := fmt.Sprintf("piko:\n  server_url: %s\n  fallback_urls: [%q, %q]\n  endpoint: agent-1\n  token_file: %s\n"+
		"  keepalive_interval: 1s\n  keepalive_timeout: 1s\n", dead, a1.UpstreamURL, a2.UpstreamURL, tok)
	a := startAgent(t, mergeYAML(is.yaml(), y), fastReconnect...)
	nodes := []*Relay{a1, a2}
	first := waitHolder(t, nodes, nil, 15*time.Second)
	if first != a1 {
		t.Fatalf("want the session on the first reachable server of the list, got %v\n%s", first, a.Log.String())
	}
	a.Base = first.ProxyURL()
	st, r, b := submit(t, a, is, `{"steps":[{"type":"exec","argv":["/bin/true"]}]}`)
	if st != 202 {
		t.Fatalf("submit: %d %s", st, b)
	}
	killed := time.Now()
	a1.Kill()
	next := waitHolder(t, nodes, a1, 15*time.Second)
	if next != a2 {
		t.Fatalf("the agent did not move to the next server\n%s", tail(a.Log.String(), 3000))
	}
	t.Logf("first server dead at start, second killed: the agent held a session on the third after %s",
		time.Since(killed).Round(time.Millisecond))
	a.Base = next.ProxyURL()
	if p := waitProbe(t, a, is, r.ID, 20*time.Second); p.State != "succeeded" {
		t.Errorf("probe acknowledged before the failover: %s %s", p.State, p.Error)
	}
	if !strings.Contains(a.Log.String(), "next Piko server") {
		t.Errorf("no log line names the next server:\n%s", a.Log.String())
	}
}
