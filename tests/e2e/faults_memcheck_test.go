package e2e

// valgrind memcheck of a short run (docs/reliability.md): the agent runs
// under `valgrind --error-exitcode=99 --leak-check=full`, connects its tunnel
// to the test relay, answers requests and runs probes (exec, script,
// file.write, file.read) through it, then stops on SIGTERM (one round of 50
// requests and 7 probes here, ~6 s; rounds for 5 minutes with VMA_SOAK=1,
// VMA_MEMCHECK_DURATION sets it, with a relay restart every tenth; `make
// memcheck` runs it alone). Any invalid
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

	// load: plain requests and probes through the tunnel, in rounds; one
	// round here, rounds for VMA_MEMCHECK_DURATION (5 min, at most 20) with
	// VMA_SOAK=1, with a relay restart every tenth round (the reconnect path)
	dur := time.Duration(0)
	if soak() {
		dur = 5 * time.Minute
		if v := os.Getenv("VMA_MEMCHECK_DURATION"); v != "" {
			if d, err := time.ParseDuration(v); err == nil && d > 0 && d <= 20*time.Minute {
				dur = d
			}
		}
	}
	client := &http.Client{Timeout: 30 * time.Second}
	target := filepath.Join(t.TempDir(), "written")
	loadStart := time.Now()
	var nreq, nprobe, rounds, restarts int
	for rounds == 0 || (time.Since(loadStart) < dur && rounds < 10000) {
		if rounds%10 == 9 {
			r.Kill()
			r.Restart()
			restarts++
			if !r.WaitConnections(1, 60*time.Second) { // a new relay process: its counters start at 0
				t.Fatalf("round %d: the agent under valgrind did not reconnect after a relay restart", rounds)
			}
			a.Base = r.ProxyURL() // the restarted relay's proxy listens on a new port
		}
		for i := 0; i < 50; i++ {
			if code, body, err := getThrough(client, a.Base, fmt.Sprintf("/v1/livez?i=%d", nreq)); err != nil || code != 200 {
				t.Fatalf("request %d: %d %q %v", nreq, code, body, err)
			}
			nreq++
		}
		var ids []string
		for i := 0; i < 6; i++ {
			// a file each: two writes of one file at once may refuse ("changed while it was opened")
			target := fmt.Sprintf("%s.%d", target, i)
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
			nprobe++
		}
		if rounds%5 == 0 { // a canceled one too (the kill path)
			_, p, raw := submit(t, a, is, `{"steps":[{"type":"exec","argv":["sleep","30"]}]}`)
			if p.ID == "" {
				t.Fatal(raw)
			}
			waitProbe(t, a, is, p.ID, 30*time.Second, "running")
			call(t, a, "DELETE", "/v1/probes/"+p.ID, is.tok("probe:cancel"), "")
			waitProbe(t, a, is, p.ID, 30*time.Second)
			nprobe++
		}
		rounds++
	}
	load := time.Since(loadStart)

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
	t.Logf("%d requests and %d probes in %d rounds (%s of load, %d relay restarts); ready under valgrind after %s; "+
		"whole run %s; exit %d; %s", nreq, nprobe, rounds, load.Round(100*time.Millisecond), restarts,
		ready.Round(100*time.Millisecond), time.Since(started).Round(100*time.Millisecond), code, summary)
	if !strings.Contains(string(b), "HEAP SUMMARY") || !strings.Contains(string(b), "ERROR SUMMARY") {
		t.Fatalf("valgrind wrote no summary: the agent was not checked")
	}
	if code != 0 {
		t.Fatalf("agent under valgrind exited %d (99: memcheck found errors)", code)
	}
}
