package e2e

// valgrind memcheck of a short run (docs/reliability.md): the agent runs
// under `valgrind --error-exitcode=99 --leak-check=full`, connects its tunnel
// to the test relay, answers requests and runs probes (exec, script,
// file.write, file.read) through it, then stops on SIGTERM (6 s here; 2,000
// requests and 60 probes with VMA_SOAK=1; `make memcheck` runs it alone). Any invalid
// access, use of uninitialised memory or definite/possible leak fails the test.

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFaultValgrindMemcheck(t *testing.T) {
	vg, err := exec.LookPath("valgrind")
	if err != nil {
		t.Fatal("valgrind is not installed (scripts/deps.sh installs it)")
	}
	if sanitized(t) {
		t.Skip("an ASan binary cannot run under valgrind: memcheck runs in the gcc build")
	}
	started := time.Now()
	is := newIssuer(t)
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	dir := t.TempDir()
	a := &Agent{t: t, Dir: dir, Port: freePort(t), Log: &syncBuffer{}, done: make(chan struct{})}
	a.Config = writeConfig(t, dir, a.Port, tunnelYAML(r, tok, mergeYAML(is.yaml(), "probe:\n  max_concurrent: 2\n")))
	vlog := filepath.Join(dir, "valgrind.log")
	a.Cmd = exec.Command(vg, "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,possible",
		"--track-origins=yes", "--log-file="+vlog, agentBin(t), "run", "--config", a.Config)
	a.Cmd.Env = append(os.Environ(), fastReconnect...)
	a.Cmd.Stdout, a.Cmd.Stderr, a.Cmd.Dir = a.Log, a.Log, dir
	if err := a.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.exitErr = a.Cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.Signal(syscall.SIGKILL)
		<-a.done
		if t.Failed() {
			b, _ := os.ReadFile(vlog)
			t.Logf("agent log:\n%s\nvalgrind log:\n%s", tail(a.Log.String(), 4000), tail(string(b), 12000))
		}
	})
	if err := a.waitReady(60 * time.Second); err != nil {
		t.Fatalf("agent under valgrind did not become ready: %v", err)
	}
	if !r.WaitConnections(1, 60*time.Second) {
		t.Fatal("agent under valgrind did not connect to the relay")
	}
	a.Base, a.Relay = r.ProxyURL(), r
	ready := time.Since(started)

	// load: plain requests and probes through the tunnel (more in make soak)
	nreq, nprobe := 50, 6
	if soak() {
		nreq, nprobe = 2000, 60
	}
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < nreq; i++ {
		if code, body, err := getThrough(client, a.Base, fmt.Sprintf("/v1/livez?i=%d", i)); err != nil || code != 200 {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
	}
	target := filepath.Join(t.TempDir(), "written")
	var ids []string
	for i := 0; i < nprobe; i++ {
		_, p, raw := submit(t, a, is, mustJSON(map[string]interface{}{"steps": []interface{}{
			map[string]interface{}{"type": "exec", "argv": []string{"/bin/echo", fmt.Sprint("probe ", i)}},
			map[string]interface{}{"type": "script", "body": "echo out; echo err >&2\n"},
			map[string]interface{}{"type": "file.write", "path": target,
				"content_b64": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 1000*(i+1))))},
			map[string]interface{}{"type": "file.read", "path": target},
		}}))
		if p.ID == "" {
			t.Fatal(raw)
		}
		ids = append(ids, p.ID)
	}
	for _, id := range ids {
		if p := waitProbe(t, a, is, id, 60*time.Second); p.State != "succeeded" {
			t.Fatalf("probe %s: %s %v", id, p.State, p.Steps)
		}
	}
	// a canceled one too (the kill path)
	_, p, raw := submit(t, a, is, `{"steps":[{"type":"exec","argv":["sleep","30"]}]}`)
	if p.ID == "" {
		t.Fatal(raw)
	}
	waitProbe(t, a, is, p.ID, 30*time.Second, "running")
	call(t, a, "DELETE", "/v1/probes/"+p.ID, is.tok("probe:cancel"), "")
	waitProbe(t, a, is, p.ID, 30*time.Second)

	a.Signal(syscall.SIGTERM)
	code := a.Wait(90 * time.Second)
	b, _ := os.ReadFile(vlog)
	summary := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "ERROR SUMMARY") || strings.Contains(l, "definitely lost") ||
			strings.Contains(l, "possibly lost") || strings.Contains(l, "in use at exit") {
			summary += strings.TrimSpace(l[strings.Index(l, " ")+1:]) + "; "
		}
	}
	t.Logf("%d requests and %d probes; ready under valgrind after %s; whole run %s; exit %d; %s", nreq, nprobe+1,
		ready.Round(100*time.Millisecond), time.Since(started).Round(100*time.Millisecond), code, summary)
	if !strings.Contains(string(b), "HEAP SUMMARY") || !strings.Contains(string(b), "ERROR SUMMARY") {
		t.Fatalf("valgrind wrote no summary: the agent was not checked")
	}
	if code != 0 {
		t.Fatalf("agent under valgrind exited %d (99: memcheck found errors)", code)
	}
}
