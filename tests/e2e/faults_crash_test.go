package e2e

// Crash at every step (docs/reliability.md): a kill -9 matrix. Each iteration
// starts the agent on the same state directory, checks what the previous
// kill left, drives load (exec and file.write probes through the tunnel, the
// health spool against a control plane that refuses), and SIGKILLs the agent
// after a random delay. A second part kills `configure --set` at random
// points. 40 iterations (and at most ~60 s) here, 300 with VMA_SOAK=1.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func crashIterations() (int, time.Duration) {
	return crashBudget(40, 60*time.Second, 300, 10*time.Minute)
}

// crashBudget: a matrix's iteration count and wall-time cap, the short form
// in `make test`, the long one with VMA_SOAK=1.
func crashBudget(n int, wall time.Duration, soakN int, soakWall time.Duration) (int, time.Duration) {
	if soak() {
		return soakN, soakWall
	}
	return n, wall
}

// crashRNG: a matrix's random source, seeded from VMA_CRASH_SEED when set
// (logged, so that a failing run can be replayed).
func crashRNG(t *testing.T) (*rand.Rand, int64) {
	seed := time.Now().UnixNano()
	if v := os.Getenv("VMA_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseInt(v, 10, 64)
	}
	t.Logf("seed %d (VMA_CRASH_SEED reproduces it)", seed)
	return rand.New(rand.NewSource(seed)), seed
}

// crashTemps lists the temp files under dir (recursively): every name the
// agent gives one (core/fs ".vma.tmp.", the older ".tmp." and ".vma-tmp.").
func crashTemps(dir string) []string {
	var out []string
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n := info.Name()
			if strings.Contains(n, ".tmp.") || strings.Contains(n, ".vma-tmp.") || strings.HasSuffix(n, ".tmp") {
				out = append(out, p)
			}
		}
		return nil
	})
	return out
}

// crashPost submits a probe without failing the test: the agent may die first.
func crashPost(is *issuer, a *Agent, body string) string {
	req, err := http.NewRequest("POST", apiURL(a, "/v1/probes"), strings.NewReader(body))
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+is.tok("probe:run"))
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r probeRec
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return r.ID
}

// pidAlive is true while pid runs a process whose command line holds marker
// (a reused pid is not our step).
func pidAlive(pid int, marker string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
		return false // a zombie holds nothing; its parent reaps it
	}
	return bytes.Contains(b, []byte(marker))
}

func TestFaultKill9Matrix(t *testing.T) {
	iters, wall := crashIterations()
	rng, seed := crashRNG(t)

	t0 := time.Now()
	t.Cleanup(func() { t.Logf("whole test incl. setup and cleanup %s", time.Since(t0).Round(100*time.Millisecond)) })
	is := newIssuer(t)
	refused := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens there
	a := startAuthAgent(t, is, "probe:\n  max_concurrent: 4\nwebhook:\n  max_body: 16MiB\n"+
		hcConfig(refused, hcWriteCreds(t, 0600)))
	state := filepath.Join(a.Dir, "state")
	scratch := filesScratch(t)
	target := filepath.Join(scratch, "target.bin")
	pidDir := t.TempDir()
	// file.write contents: 2 MiB each, so that kills land inside the write
	content := func(i int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("iteration %06d.", i)), 2<<20/17)
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	oldSum := "" // the target's content at the last check ("" = absent)
	var known []string
	var pending []string // ids submitted since the last check
	var markers []string
	spool := filepath.Join(state, "health", "spool")
	start := time.Now()
	t.Logf("setup %s", start.Sub(t0).Round(100*time.Millisecond))
	logs := []*syncBuffer{a.Log}
	everWritten := map[string]bool{}
	linkWindow := map[string]bool{} // complete temps left between link and rename
	var kills, midWrite, checked, writesNew int
	var slowest time.Duration
	for i := 0; i < iters && time.Since(start) < wall; i++ {
		if i > 0 {
			t0 := time.Now()
			a = crashRestart(t, a)
			logs = append(logs, a.Log)
			if d := time.Since(t0); d > slowest {
				slowest = d
			}
		}
		// --- the previous kill's state, after the restart's cleanup: the
		// agent sweeps its own directories at start (fs_sweep_dead_temps),
		// so not even a complete temp of the link window is left there
		// ready means the pid file is there and names this agent (it is
		// written before the agent listens)
		if b, err := os.ReadFile(filepath.Join(state, "agent.pid")); err != nil ||
			strings.TrimSpace(string(b)) != strconv.Itoa(a.Cmd.Process.Pid) {
			t.Fatalf("iteration %d: agent.pid of the ready agent %d: %q, %v", i, a.Cmd.Process.Pid, b, err)
		}
		for _, m := range crashTemps(state) {
			if gone(m, 2*time.Second) {
				continue // the new agent's own write in flight (a spool entry)
			}
			t.Fatalf("iteration %d: temp file left in the state dir after the restart: %s (complete: %v)",
				i, m, linkWindowTemp(m))
		}
		// A kill between the temp's link and its rename (core/fs tmp_commit:
		// there is no "link over") leaves the complete new file under a temp
		// name; the next write of that target sweeps it once it is a minute
		// old. Anything else, or a partial file, fails.
		for _, m := range crashTemps(scratch) {
			var st syscall.Stat_t
			b, err := os.ReadFile(m)
			if err != nil {
				continue // swept meanwhile
			}
			if !strings.HasPrefix(filepath.Base(m), "target.bin.vma.tmp.") || syscall.Stat(m, &st) != nil ||
				st.Nlink != 1 || !everWritten[sum(b)] {
				t.Fatalf("iteration %d: file.write temp left after the restart: %s (%d bytes, not a complete content)",
					i, m, len(b))
			}
			if !linkWindow[m] {
				linkWindow[m] = true
			}
		}
		for _, mk := range markers { // the previous agent's step processes
			deadline := time.Now().Add(5 * time.Second)
			for _, pf := range mustGlob(t, filepath.Join(pidDir, mk+".*")) {
				b, _ := os.ReadFile(pf)
				pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil {
					continue // killed between creating and writing the pid file
				}
				for pidAlive(pid, mk) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if pidAlive(pid, mk) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("iteration %d: step process %d outlived kill -9 and the restart", i, pid)
				}
			}
		}
		markers = markers[:0]
		for _, id := range pending {
			r := getProbe(t, a, is, id) // parses, or fails
			if r.State == "queued" || r.State == "running" {
				t.Fatalf("iteration %d: probe %s is %s after the restart: %+v", i, id, r.State, r)
			}
			for j, s := range r.Steps {
				if s["status"] == "running" {
					t.Fatalf("iteration %d: probe %s step %d still running: %+v", i, id, j, r)
				}
			}
			checked++
		}
		known = append(known, pending...)
		pending = pending[:0]
		code, body, _ := call(t, a, "GET", "/v1/probes?limit=1000", is.tok("probe:read"), "")
		var list struct {
			Probes []probeRec `json:"probes"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &list) != nil {
			t.Fatalf("iteration %d: list: %d %s", i, code, body)
		}
		for _, p := range list.Probes {
			if !terminalState(p.State) && i > 0 {
				t.Fatalf("iteration %d: listed probe %s is %s after the restart", i, p.ID, p.State)
			}
		}
		_ = filepath.Walk(state, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() && strings.HasSuffix(p, ".json") {
				b, _ := os.ReadFile(p)
				if !json.Valid(b) {
					t.Fatalf("iteration %d: %s is not JSON (%d bytes)", i, p, len(b))
				}
			}
			return nil
		})
		hcSpoolEntries(t, spool) // every renamed entry whole (header and sha256)
		got, err := os.ReadFile(target)
		cur := ""
		if err == nil {
			cur = sum(got)
		}
		if cur != oldSum {
			t.Fatalf("iteration %d: target changed between checks", i)
		}

		// --- load, and a kill -9 at a random point
		mk := fmt.Sprintf("301.%d%03d", os.Getpid(), i)
		markers = append(markers, mk)
		newContent := content(i)
		allowed := map[string]bool{oldSum: true, sum(newContent): true}
		everWritten[sum(newContent)] = true
		bodies := []string{
			mustJSON(map[string]interface{}{"steps": []interface{}{
				map[string]interface{}{"type": "exec", "argv": []string{"/bin/sh", "-c",
					fmt.Sprintf("echo $$ > %s/%s.a; exec sleep %s", pidDir, mk, mk)}}}}),
			mustJSON(map[string]interface{}{"steps": []interface{}{
				map[string]interface{}{"type": "exec", "argv": []string{"/bin/echo", "quick"}},
				map[string]interface{}{"type": "file.write", "path": target,
					"content_b64": base64.StdEncoding.EncodeToString(newContent)},
				map[string]interface{}{"type": "exec", "argv": []string{"/bin/sh", "-c",
					fmt.Sprintf("echo $$ > %s/%s.b; sleep 0.%d; exec sleep %s", pidDir, mk, rng.Intn(5), mk)}}}}),
			mustJSON(map[string]interface{}{"steps": []interface{}{
				map[string]interface{}{"type": "exec", "argv": []string{"/bin/sh", "-c",
					fmt.Sprintf("echo $$ > %s/%s.c; sleep 0.0%d", pidDir, mk, rng.Intn(10))}}}}),
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, b := range bodies {
			wg.Add(1)
			go func(b string) {
				defer wg.Done()
				if id := crashPost(is, a, b); id != "" {
					mu.Lock()
					pending = append(pending, id)
					mu.Unlock()
				}
			}(b)
		}
		// Most kills in the first 600 ms (submissions, records, the 2 MiB
		// write); every fifth later, once the steps run.
		delay := time.Duration(rng.Intn(600)) * time.Millisecond
		if i%5 == 4 {
			delay = 600*time.Millisecond + time.Duration(rng.Intn(900))*time.Millisecond
		}
		pid := a.Cmd.Process.Pid
		stop := time.Now().Add(delay)
		for time.Now().Before(stop) {
			if writeInProgress(pid, scratch) && rng.Intn(3) == 0 {
				midWrite++
				break
			}
			time.Sleep(time.Duration(rng.Intn(3000)) * time.Microsecond)
		}
		a.Signal(syscall.SIGKILL)
		a.Wait(10 * time.Second)
		kills++
		wg.Wait()
		after, err := os.ReadFile(target)
		now := ""
		if err == nil {
			now = sum(after)
		}
		if !allowed[now] {
			t.Fatalf("iteration %d: file.write target torn: %d bytes, sha256 %s is neither the old nor the new content",
				i, len(after), now)
		}
		if now != oldSum {
			writesNew++
		}
		oldSum = now
	}
	if kills < 10 {
		t.Fatalf("only %d kills in %s", kills, wall)
	}
	// the last kill's state
	b := crashRestart(t, a)
	// no token in any output or file: one walk of the state for all the
	// agents (restartAgent's check per agent is quadratic over 300 restarts)
	all := &syncBuffer{}
	for _, l := range append(logs, b.Log) {
		all.Write([]byte(l.String()))
	}
	t.Cleanup(func() { assertNoTokenLeak(t, is, &Agent{Dir: b.Dir, Log: all}) })
	for _, id := range pending {
		if r := getProbe(t, b, is, id); !terminalState(r.State) {
			t.Fatalf("after the last kill: probe %s is %s", id, r.State)
		}
	}
	for _, m := range crashTemps(state) {
		t.Fatalf("temp file left in the state dir after the last restart: %s (complete: %v)", m, linkWindowTemp(m))
	}
	t.Logf("%d kills in %s (seed %d): %d probe records checked (%d accepted in all), %d kills while file.write had a temp open, "+
		"target replaced %d times and never torn; %d complete temp(s) left by a kill between link and rename; slowest restart %s",
		kills, time.Since(start).Round(100*time.Millisecond), seed, checked, len(known)+len(pending), midWrite,
		writesNew, len(linkWindow), slowest.Round(time.Millisecond))
	if len(linkWindow) > 0 {
		left := append(crashTemps(scratch), crashTemps(state)...)
		t.Logf("of those temps, %d still there at the end (the next write of the same file sweeps one once it is 60 s old; "+
			"the restart does not): %v", len(left), left)
	}
}

// crashRestart is restartAgent without its per-agent token check (the
// matrix checks once, at the end).
func crashRestart(t *testing.T, a *Agent) *Agent {
	t.Helper()
	b := &Agent{t: t, Dir: a.Dir, Config: a.Config, Port: a.Port, Base: a.Base, Relay: a.Relay,
		Log: &syncBuffer{}, done: make(chan struct{})}
	conns := b.Relay.Status().Connections
	b.start(fastReconnect...)
	if err := b.waitReady(10 * time.Second); err != nil {
		t.Fatalf("restart: %v\n%s", err, b.Log.String())
	}
	if !b.Relay.WaitConnections(conns+1, 15*time.Second) {
		t.Fatalf("restarted agent did not reconnect to the relay\n%s", b.Log.String())
	}
	return b
}

// linkWindowTemp: a temp that core/fs's tmp_commit left when killed between
// linking the complete temp under "<leaf>.vma.tmp.XXXXXX" and renaming it over
// leaf. One link, the final name pattern, and a JSON leaf's temp parses: the
// file is complete, only its name is a temp's. Known, bounded (the next write
// of leaf sweeps it after FS_TMP_STALE_SEC), reported in docs/reliability.md.
func linkWindowTemp(p string) bool {
	n := filepath.Base(p)
	i := strings.Index(n, ".vma.tmp.")
	var st syscall.Stat_t
	if i <= 0 || len(n) != i+len(".vma.tmp.")+6 || syscall.Stat(p, &st) != nil || st.Nlink != 1 {
		return false
	}
	if strings.HasSuffix(n[:i], ".json") {
		b, err := os.ReadFile(p)
		return err == nil && json.Valid(b)
	}
	return true
}

// gone reports whether the file at p disappears within d: a live writer's
// temp is renamed within milliseconds, a dead writer's stays.
func gone(p string, d time.Duration) bool {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// configure --set killed at random points: the config file is always the old
// or the new version, and it loads.
func TestFaultKill9ConfigureMatrix(t *testing.T) {
	iters := 60
	if soak() {
		iters = 400
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	cur := []byte("agent:\n    id: agent-1 # the host\n    tenant_id: tenant-a\nprobe:\n    max_concurrent: \"1\"\nlog:\n    level: info\n")
	if err := os.WriteFile(path, cur, 0600); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(dir, "ref.yaml")
	killedMid, sawNew := 0, 0
	leftTemps := map[string]bool{}
	var runTime time.Duration
	for i := 0; i < iters; i++ {
		set := []string{"--set", fmt.Sprintf("probe.max_concurrent=%d", 2+i%200),
			"--set", fmt.Sprintf("health.check_interval=%ds", 30+i%7)}
		prev := cur
		// the new version: the same edit on a copy, not killed
		if err := os.WriteFile(ref, cur, 0600); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if code, out, errOut := runCLI(t, nil, append([]string{"configure", "--config", ref, "--no-reload"}, set...)...); code != 0 {
			t.Fatalf("configure: %d %s %s", code, out, errOut)
		}
		runTime += time.Since(t0)
		want, _ := os.ReadFile(ref)
		cmd := exec.Command(agentBin(t), append([]string{"configure", "--config", path, "--no-reload"}, set...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// a random point over the whole run (and a little past its end)
		avg := runTime / time.Duration(i+1)
		time.Sleep(time.Duration(rng.Int63n(int64(avg*13/10) + 1)))
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == -1 {
			killedMid++
		}
		got, rerr := os.ReadFile(path)
		switch {
		case rerr != nil:
			t.Fatalf("iteration %d: config file gone: %v", i, rerr)
		case bytes.Equal(got, want):
			sawNew++
			cur = got
		case bytes.Equal(got, cur):
		default:
			t.Fatalf("iteration %d: config file is neither the old nor the new version:\n%s", i, got)
		}
		if code, _, errOut := runCLI(t, nil, "configure", "--check", path); code != 0 {
			t.Fatalf("iteration %d: the config does not load: %s", i, errOut)
		}
		// a kill between link and rename leaves the complete file (the new
		// config or the backup of the old one) under a temp name
		for _, m := range mustGlob(t, filepath.Join(dir, "*tmp*")) {
			if leftTemps[m] {
				continue
			}
			b, _ := os.ReadFile(m)
			if !linkWindowTemp(m) || !(bytes.Equal(b, want) || bytes.Equal(b, prev)) {
				t.Fatalf("iteration %d: configure left %s (%d bytes), not a complete version", i, m, len(b))
			}
			leftTemps[m] = true
		}
	}
	temps, _ := filepath.Glob(filepath.Join(dir, "*tmp*"))
	t.Logf("%d kills of configure --set (%d before it exited; one uninterrupted run takes %s): "+
		"the file was the new version %d times, the old one otherwise, and always loaded; "+
		"%d complete temp(s) left by a kill between link and rename, %d still there at the end",
		iters, killedMid, (runTime / time.Duration(iters)).Round(100*time.Microsecond), sawNew, len(leftTemps), len(temps))
}
