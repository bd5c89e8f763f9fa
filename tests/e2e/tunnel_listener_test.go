// The tunnel's unix-socket listener must start whatever the runtime
// directory is called: civetweb reads "<digit>s" or "<digit>r" anywhere in
// its listening_ports string as an HTTPS or redirect port, so a path such as
// /tmp/x/run-2s once made the agent refuse to start ("Error initializing SSL
// context").
package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTunnelListenerAnyRuntimeDirName(t *testing.T) {
	for _, name := range []string{"run-2s", "v9r", "1r,2s"} {
		t.Run(name, func(t *testing.T) {
			rt := filepath.Join(t.TempDir(), name)
			if err := os.Mkdir(rt, 0700); err != nil {
				t.Fatal(err)
			}
			r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
			tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
			env := append([]string{"VM_AGENT_AGENT_RUNTIME_DIR=" + rt}, fastReconnect...)
			a := startAgent(t, tunnelYAML(r, tok, ""), env...)
			if !r.WaitConnections(1, 15*time.Second) {
				t.Fatalf("agent did not connect to the relay\nagent log:\n%s", a.Log.String())
			}
			client := &http.Client{Timeout: 5 * time.Second}
			req, _ := http.NewRequest("GET", r.ProxyURL()+"/v1/livez", nil)
			req.Header.Set("x-piko-endpoint", "agent-1")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("livez through the tunnel: %v\nagent log:\n%s", err, a.Log.String())
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("livez through the tunnel: %d\nagent log:\n%s", resp.StatusCode, a.Log.String())
			}
			if fi, err := os.Lstat(filepath.Join(rt, "webhook.sock")); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0600 {
				t.Fatalf("webhook.sock in %s: %v %v", rt, fi, err)
			}
		})
	}
}

// civetwebWorkers counts the agent's threads named civetweb-worker.
func civetwebWorkers(t *testing.T, pid int) int {
	t.Helper()
	comms, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "comm"))
	if err != nil || len(comms) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	n := 0
	for _, c := range comms {
		if b, err := os.ReadFile(c); err == nil && strings.TrimSpace(string(b)) == "civetweb-worker" {
			n++
		}
	}
	return n
}

// With the tunnel off, its unix listener and workers do not exist (idle
// memory, issue 16); a reload that turns the tunnel on starts them before the
// tunnel connects, one that turns it off stops them.
func TestTunnelListenerFollowsReload(t *testing.T) {
	const tcpWorkers, tunWorkers = 3, 5
	env := append([]string{"VM_AGENT_WEBHOOK_NUM_THREADS=3", "VM_AGENT_WEBHOOK_TUNNEL_THREADS=5"},
		fastReconnect...)
	a := startAgent(t, "", env...)
	pid := a.Cmd.Process.Pid
	sock := filepath.Join(a.Dir, "run", "webhook.sock")
	waitWorkers := func(want int) {
		t.Helper()
		got := -1
		for i := 0; i < 100; i++ {
			if got = civetwebWorkers(t, pid); got == want {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%d civetweb workers, want %d\nagent log:\n%s", got, want, a.Log.String())
	}
	waitWorkers(tcpWorkers)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("tunnel off, yet %s: %v", sock, err)
	}

	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	writeConfig(t, a.Dir, a.Port, tunnelYAML(r, tok, ""))
	a.Signal(syscall.SIGHUP)
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("no connection after the reload turned the tunnel on:\n%s", a.Log.String())
	}
	client := &http.Client{Timeout: 5 * time.Second}
	code := 0
	for i := 0; i < 50 && code != 200; i++ {
		if code, _, _ = getThrough(client, r.ProxyURL(), "/v1/livez"); code != 200 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if code != 200 {
		t.Fatalf("livez through the tunnel after the reload: %d\nagent log:\n%s", code, a.Log.String())
	}
	waitWorkers(tcpWorkers + tunWorkers)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("tunnel on, %s: %v %v", sock, fi, err)
	}

	writeConfig(t, a.Dir, a.Port, "")
	a.Signal(syscall.SIGHUP)
	waitWorkers(tcpWorkers)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("tunnel turned off, yet %s: %v", sock, err)
	}
	if code, _, _ := getThrough(client, r.ProxyURL(), "/v1/livez"); code == 200 {
		t.Fatalf("livez still answered through the relay after the tunnel was turned off")
	}
	resp, err := http.Get(a.URL("/v1/livez"))
	if err != nil {
		t.Fatalf("local livez after the reloads: %v", err)
	}
	resp.Body.Close()
	if n := strings.Count(a.Log.String(), "config: configuration reloaded"); n != 2 {
		t.Fatalf("%d reload lines, want 2:\n%s", n, a.Log.String())
	}
}
