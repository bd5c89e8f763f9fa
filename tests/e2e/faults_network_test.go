package e2e

// Network faults on a real link: the agent runs in a network namespace the
// test creates, joined to the relay by a veth pair; iptables in the namespace
// drops packets at random (loss) or all of them (a partition), then heals.
// (Latency: faults_latency_test.go, a delaying relay, since not every kernel
// has sch_netem.)

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type netns struct {
	name, hostIP, nsIP string
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns makes a namespace and a veth pair to it (10.231.k.1 here,
// 10.231.k.2 inside); both go away when the test ends.
func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network-namespace tests need root")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (scripts/deps.sh installs it): %v", tool, err)
		}
	}
	k := os.Getpid()%200 + 20
	n := &netns{name: fmt.Sprintf("vma-%d", os.Getpid()), hostIP: fmt.Sprintf("10.231.%d.1", k),
		nsIP: fmt.Sprintf("10.231.%d.2", k)}
	host, peer := fmt.Sprintf("vmh%d", os.Getpid()), fmt.Sprintf("vmn%d", os.Getpid())
	exec.Command("ip", "netns", "del", n.name).Run() // a leftover of a killed run
	exec.Command("ip", "link", "del", host).Run()
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", n.name).Run()
		exec.Command("ip", "link", "del", host).Run()
	})
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	run(t, "ip", "link", "set", peer, "netns", n.name)
	run(t, "ip", "addr", "add", n.hostIP+"/30", "dev", host)
	run(t, "ip", "link", "set", host, "up")
	run(t, "ip", "-n", n.name, "addr", "add", n.nsIP+"/30", "dev", peer)
	run(t, "ip", "-n", n.name, "link", "set", peer, "up")
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	return n
}

// drop makes the namespace drop every packet with probability p (1 = all); 0 heals.
func (n *netns) drop(t *testing.T, p float64) {
	t.Helper()
	run(t, "ip", "netns", "exec", n.name, "iptables", "-F")
	if p == 0 {
		return
	}
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		args := []string{"ip", "netns", "exec", n.name, "iptables", "-A", chain, "!", "-o", "lo"}
		if chain == "INPUT" {
			args[len(args)-2] = "-i"
		}
		if p < 1 {
			args = append(args, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprint(p))
		}
		run(t, append(args, "-j", "DROP")...)
	}
}

func TestFaultNetworkLossAndPartition(t *testing.T) {
	ns := newNetns(t)
	is := newIssuer(t)
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a", "-keepalive", "1s",
		"-upstream-addr", ns.hostIP+":0")
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	y := fmt.Sprintf("piko:\n  server_url: %s\n  endpoint: agent-1\n  token_file: %s\n"+
		"  keepalive_interval: 1s\n  keepalive_timeout: 2s\n  connect_timeout: 2s\n", r.UpstreamURL, tok)
	dir := t.TempDir()
	a := &Agent{t: t, Dir: dir, Port: freePort(t), Log: &syncBuffer{}, done: make(chan struct{})}
	a.Config = writeConfig(t, dir, a.Port, mergeYAML(is.yaml(), y))
	// `ip netns exec` execs the agent: the pid we signal is the agent's
	a.Cmd = nil
	startInNetns(a, ns, fastReconnect...)
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("the agent in the namespace did not connect\n%s", a.Log.String())
	}
	a.Base = r.ProxyURL()
	client := &http.Client{Timeout: 30 * time.Second}

	// 5 % loss both ways: TCP retransmits, nothing fails
	ns.drop(t, 0.05)
	var ok, failed int64
	lossFor := 8 * time.Second
	if soak() {
		lossFor = 2 * time.Minute
	}
	end := time.Now().Add(lossFor)
	for i := 0; time.Now().Before(end) && i < 100000; i++ {
		code, body, err := getThrough(client, a.Base, fmt.Sprintf("/v1/livez?i=%d", i))
		if err == nil && code == 200 && strings.Contains(body, "ok") {
			atomic.AddInt64(&ok, 1)
		} else {
			atomic.AddInt64(&failed, 1)
			t.Logf("request %d under 5%% loss: %d %v", i, code, err)
		}
	}
	ns.drop(t, 0)
	t.Logf("5%% loss for %s: %d requests answered, %d failed", lossFor, ok, failed)
	if failed > 0 || ok == 0 {
		t.Errorf("under 5%% loss %d requests failed (%d answered)", failed, ok)
	}

	// a total partition: the agent notices within keepalive_interval +
	// keepalive_timeout (3 s), then comes back within the backoff after the heal
	partition := 10 * time.Second
	if soak() {
		partition = 2 * time.Minute
	}
	partitionAndHeal(t, ns, r, a, client, partition, strings.Count(a.Log.String(), "disconnected"),
		3*time.Second, 2*time.Second, "")
}

// partitionAndHeal cuts the namespace's link for `partition`, heals it, and
// checks the three promises: the agent notices the dead session within
// keepalive_interval + keepalive_timeout (`keepalive`, one second of slack);
// it reconnects within the backoff cap (1 s) + `connect` (+ as much slack)
// after the heal; the relay ends up holding exactly one session for it, which
// answers. `before` is the count of "disconnected" log lines before the cut;
// `label` names the link's condition in messages (" under 200 ms" or "").
func partitionAndHeal(t *testing.T, ns *netns, r *Relay, a *Agent, client *http.Client,
	partition time.Duration, before int, keepalive, connect time.Duration, label string) {
	t.Helper()
	cut := time.Now()
	ns.drop(t, 1)
	var noticed time.Duration
	for time.Since(cut) < partition {
		if noticed == 0 && strings.Count(a.Log.String(), "disconnected") > before {
			noticed = time.Since(cut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conns := r.Status().Connections
	healed := time.Now()
	ns.drop(t, 0)
	var back time.Duration
	for time.Since(healed) < 20*time.Second {
		if s := r.Status(); s.Connections > conns && s.Upstreams == 1 {
			back = time.Since(healed)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// the relay's side of the dead session may linger until its own keepalive fails
	time.Sleep(3 * time.Second)
	upstreams := r.Status().Upstreams
	code, body, err := getThrough(client, a.Base, "/v1/livez")
	t.Logf("partition %s%s: noticed after %s (bound %s), back %s after the heal (backoff cap 1 s + connect %s), %d session(s) on the relay",
		partition, label, noticed.Round(time.Millisecond), keepalive, back.Round(time.Millisecond), connect, upstreams)
	if noticed == 0 || noticed > keepalive+time.Second {
		t.Errorf("dead session noticed after %s (want ≤ keepalive_interval + keepalive_timeout = %s)\n%s",
			noticed, keepalive, tail(a.Log.String(), 2000))
	}
	if back == 0 || back > time.Second+2*connect { // one connect timeout of slack
		t.Errorf("reconnected %s after the heal (want within the backoff cap + connect timeout)\n%s",
			back, tail(a.Log.String(), 2000))
	}
	if upstreams != 1 {
		t.Errorf("%d sessions on the relay after the heal, want exactly 1", upstreams)
	}
	if err != nil || code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("after the heal: %d %q %v", code, body, err)
	}
}

func startInNetns(a *Agent, ns *netns, env ...string) {
	a.Cmd = exec.Command("ip", "netns", "exec", ns.name, agentBin(a.t), "run", "--config", a.Config)
	a.Cmd.Env = append(os.Environ(), env...)
	a.Cmd.Stdout, a.Cmd.Stderr = a.Log, a.Log
	a.Cmd.Dir = a.Dir
	if err := a.Cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	go func() {
		a.exitErr = a.Cmd.Wait()
		close(a.done)
	}()
	a.t.Cleanup(func() {
		a.Signal(9)
		<-a.done
		if a.t.Failed() {
			a.t.Logf("agent log:\n%s", a.Log.String())
		}
	})
}
