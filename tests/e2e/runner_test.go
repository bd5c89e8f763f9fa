// The agentless runner (issue 15): `vm-agent runner --stdio` driven over
// pipes, and `vm-agent remote --ssh` through a real sshd (sshd_harness_test.go).
package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type runnerProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan map[string]any
	stderr *syncBuffer
	exited chan error
}

func startRunner(t *testing.T, env []string, args ...string) *runnerProc {
	t.Helper()
	cmd := exec.Command(agentBin(t), append([]string{"runner", "--stdio"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &runnerProc{cmd: cmd, in: in, lines: make(chan map[string]any, 1024),
		stderr: &syncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"type": "not-json", "text": sc.Text()}
			}
			r.lines <- m
		}
		close(r.lines)
		r.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("runner stderr:\n%s", r.stderr.String())
		}
	})
	return r
}

func (r *runnerProc) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(r.in, line+"\n"); err != nil {
		t.Fatalf("write to runner: %v", err)
	}
}

func (r *runnerProc) next(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	select {
	case m, ok := <-r.lines:
		if !ok {
			t.Fatalf("runner output ended; stderr: %s", r.stderr.String())
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no line from the runner within %v", timeout)
	}
	return nil
}

// command sends one command and returns its events and its done line.
func (r *runnerProc) command(t *testing.T, line, id string) ([]map[string]any, map[string]any) {
	t.Helper()
	r.send(t, line)
	var events []map[string]any
	for {
		m := r.next(t, 20*time.Second)
		if m["id"] != id {
			t.Fatalf("line for another command while %s runs: %v", id, m)
		}
		switch m["type"] {
		case "event":
			events = append(events, m)
		case "done":
			return events, m
		default:
			t.Fatalf("unexpected line while %s runs: %v", id, m)
		}
	}
}

func (r *runnerProc) waitExit(t *testing.T, timeout time.Duration) (map[string]any, error) {
	t.Helper()
	var last map[string]any
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-r.lines:
			if !ok {
				select {
				case err := <-r.exited:
					return last, err
				case <-deadline:
					t.Fatal("runner did not exit")
				}
			}
			last = m
		case <-deadline:
			t.Fatalf("runner did not end within %v", timeout)
		}
	}
}

func cmdLine(t *testing.T, id string, step map[string]any, extra map[string]any) string {
	t.Helper()
	m := map[string]any{"type": "command", "id": id, "step": step}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRunnerStdio: the ready line, exec/file.write/file.read, events before
// done, the idempotency cache, a malformed and an oversized line (the runner
// goes on), EOF ends cleanly and the scratch directory is gone.
func TestRunnerStdio(t *testing.T) {
	tmp := t.TempDir()
	r := startRunner(t, []string{"TMPDIR=" + tmp}, "--line-max", "64KiB")
	ready := r.next(t, 10*time.Second)
	if ready["type"] != "ready" || ready["protocol"] != float64(1) || ready["platform"] != "linux" ||
		ready["arch"] == "" || ready["version"] == "" || ready["pid"] != float64(r.cmd.Process.Pid) {
		t.Fatalf("ready line %v", ready)
	}
	types := fmt.Sprint(ready["step_types"])
	for _, st := range []string{"exec", "script", "file.read", "file.write"} {
		if !strings.Contains(types, st) {
			t.Fatalf("step_types %s lacks %s", types, st)
		}
	}
	scratch, _ := filepath.Glob(filepath.Join(tmp, "vm-agent-runner.*"))
	if len(scratch) != 1 {
		t.Fatalf("scratch dirs %v", scratch)
	}

	evs, done := r.command(t, cmdLine(t, "c1", map[string]any{"type": "exec",
		"argv": []string{"echo", "hello runner"}}, nil), "c1")
	res, _ := done["result"].(map[string]any)
	if done["ok"] != true || res["stdout"] != "hello runner\n" || len(evs) == 0 {
		t.Fatalf("exec: events %v done %v", evs, done)
	}
	sawOut := false
	for _, e := range evs {
		sawOut = sawOut || (e["stream"] == "stdout" && e["data"] == "hello runner\n")
	}
	if !sawOut {
		t.Fatalf("no stdout event before done: %v", evs)
	}

	target := filepath.Join(tmp, "written.txt")
	_, done = r.command(t, cmdLine(t, "c2", map[string]any{"type": "file.write", "path": target,
		"content_b64": base64.StdEncoding.EncodeToString([]byte("runner bytes"))}, nil), "c2")
	if done["ok"] != true {
		t.Fatalf("file.write: %v", done)
	}
	_, done = r.command(t, cmdLine(t, "c3", map[string]any{"type": "file.read", "path": target}, nil), "c3")
	res, _ = done["result"].(map[string]any)
	if done["ok"] != true || res["content_b64"] != base64.StdEncoding.EncodeToString([]byte("runner bytes")) {
		t.Fatalf("file.read: %v", done)
	}

	// idempotency: the same key gives the cached done, a different command under it a conflict
	step := map[string]any{"type": "exec", "argv": []string{"date", "+%s%N"}}
	_, d1 := r.command(t, cmdLine(t, "k1", step, map[string]any{"idempotency_key": "once"}), "k1")
	_, d2 := r.command(t, cmdLine(t, "k2", step, map[string]any{"idempotency_key": "once"}), "k2")
	r1, _ := d1["result"].(map[string]any)
	r2, _ := d2["result"].(map[string]any)
	if d1["ok"] != true || d2["replayed"] != true || r1["stdout"] != r2["stdout"] {
		t.Fatalf("idempotency: %v then %v", d1, d2)
	}
	_, d3 := r.command(t, cmdLine(t, "k3", map[string]any{"type": "exec", "argv": []string{"true"}},
		map[string]any{"idempotency_key": "once"}), "k3")
	if e, _ := d3["error"].(map[string]any); d3["ok"] != false || e["code"] != "idempotency_conflict" {
		t.Fatalf("reused key: %v", d3)
	}

	// an invalid step is refused by the probe parser, with the path
	_, d4 := r.command(t, cmdLine(t, "bad", map[string]any{"type": "exec", "argv": []string{}}, nil), "bad")
	if e, _ := d4["error"].(map[string]any); d4["ok"] != false || e["path"] != "step.argv" {
		t.Fatalf("invalid step: %v", d4)
	}

	r.send(t, "this is not json")
	if m := r.next(t, 5*time.Second); m["type"] != "error" ||
		m["error"].(map[string]any)["code"] != "malformed_line" {
		t.Fatalf("malformed line: %v", m)
	}
	r.send(t, `{"type":"command","id":"x1","step":{"type":"exec","argv":["true"]},"bogus":1}`)
	if m := r.next(t, 5*time.Second); m["type"] != "error" || m["id"] != "x1" {
		t.Fatalf("unknown field: %v", m)
	}
	// 4 MiB on one line against a 64 KiB cap
	r.send(t, `{"type":"command","id":"big","step":{"type":"exec","argv":["`+strings.Repeat("a", 4<<20)+`"]}}`)
	if m := r.next(t, 10*time.Second); m["type"] != "error" ||
		m["error"].(map[string]any)["code"] != "line_too_long" {
		t.Fatalf("oversized line: %v", m)
	}
	_, done = r.command(t, cmdLine(t, "after", map[string]any{"type": "exec", "argv": []string{"true"}}, nil), "after")
	if done["ok"] != true {
		t.Fatalf("runner did not go on: %v", done)
	}

	r.in.Close()
	last, err := r.waitExit(t, 10*time.Second)
	if err != nil || last["type"] != "exit" || last["reason"] != "eof" {
		t.Fatalf("EOF: last line %v, exit %v", last, err)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "vm-agent-runner.*")); len(left) != 0 {
		t.Fatalf("scratch dir left behind: %v", left)
	}
}

// TestRunnerTTL: a step still running at the TTL is stopped and the runner
// ends; with no command, the idle limit ends it.
func TestRunnerTTL(t *testing.T) {
	r := startRunner(t, nil, "--ttl", "2s")
	r.next(t, 10*time.Second)
	t0 := time.Now()
	_, done := r.command(t, cmdLine(t, "slow", map[string]any{"type": "exec", "argv": []string{"sleep", "30"}}, nil), "slow")
	res, _ := done["result"].(map[string]any)
	if done["ok"] != false || res["status"] != "timed_out" || time.Since(t0) > 8*time.Second {
		t.Fatalf("step at the TTL: %v after %v", done, time.Since(t0))
	}
	last, err := r.waitExit(t, 5*time.Second)
	if err != nil || last["reason"] != "ttl" {
		t.Fatalf("TTL end: %v, %v", last, err)
	}

	idle := startRunner(t, nil, "--idle", "1s")
	idle.next(t, 10*time.Second)
	last, err = idle.waitExit(t, 5*time.Second)
	if err != nil || last["reason"] != "idle" {
		t.Fatalf("idle end: %v, %v", last, err)
	}
}

// remoteArgs are the flags that reach the test's sshd.
func remoteArgs(s *sshServer) []string {
	return []string{"remote", "--ssh", s.Target(), "--port", fmt.Sprint(s.Port),
		"--identity", s.Identity, "--known-hosts", s.KnownHosts}
}

func runRemote(t *testing.T, s *sshServer, req string, extra ...string) (int, string, string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(f, []byte(req), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(remoteArgs(s), extra...)
	return runCLI(t, nil, append(args, f)...)
}

func remoteGone(t *testing.T, s *sshServer, path string) {
	t.Helper()
	if path == "" || !strings.HasPrefix(path, "/") {
		t.Fatalf("no remote dir reported (%q)", path)
	}
	out, err := s.Run(t, "if", "test", "-e", path, ";", "then", "ls", "-la", path, ";", "else", "echo", "gone", ";", "fi")
	if err != nil || out != "gone\n" {
		t.Fatalf("remote dir %s left behind: %q %v", path, out, err)
	}
}

// TestRemoteSteps: every step type through ssh, events printed before done,
// a JSON document, the remote temp dir removed, a failing step exits 1.
func TestRemoteSteps(t *testing.T) {
	s := startSSHD(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "remote-written")
	req := fmt.Sprintf(`{"steps":[
	 {"type":"exec","argv":["echo","from remote"]},
	 {"type":"script","interpreter":"/bin/sh","body":"echo scripted"},
	 {"type":"file.write","path":%q,"content_b64":%q},
	 {"type":"file.read","path":%q}]}`, target,
		base64.StdEncoding.EncodeToString([]byte("over ssh")), target)
	code, out, errOut := runRemote(t, s, req, "--json")
	if code != 0 {
		t.Fatalf("remote exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	var doc struct {
		OK         bool             `json:"ok"`
		RemoteDir  string           `json:"remote_dir"`
		Steps      []map[string]any `json:"steps"`
		RunnerExit map[string]any   `json:"runner_exit"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("JSON document: %v\n%s", err, out)
	}
	if !doc.OK || len(doc.Steps) != 4 || doc.RunnerExit["self_delete"] != true {
		t.Fatalf("document %s", out)
	}
	for i, st := range doc.Steps {
		if st["ok"] != true {
			t.Fatalf("step %d: %v", i, st)
		}
	}
	r3, _ := doc.Steps[3]["result"].(map[string]any)
	if r3["content_b64"] != base64.StdEncoding.EncodeToString([]byte("over ssh")) {
		t.Fatalf("file.read over ssh: %v", doc.Steps[3])
	}
	if !strings.Contains(errOut, "[s0] stdout: from remote") {
		t.Fatalf("events not streamed on stderr with --json: %s", errOut)
	}
	remoteGone(t, s, doc.RemoteDir)

	// text mode: events before done; a failing step stops the rest, exit 1
	code, out, errOut = runRemote(t, s, `{"steps":[{"type":"exec","argv":["sh","-c","echo before-fail; exit 3"]},
	 {"type":"exec","argv":["echo","never"]}]}`)
	if code != 1 {
		t.Fatalf("failing step: exit %d\n%s\n%s", code, out, errOut)
	}
	ev := strings.Index(out, "[s0] stdout: before-fail")
	dn := strings.Index(out, "[s0] done: failed")
	if ev < 0 || dn < 0 || ev > dn || strings.Contains(out, "never") {
		t.Fatalf("text output:\n%s\nstderr %s", out, errOut)
	}
}

// TestRemoteCorruptUploadRefused: an upload whose remote sha256 is not the
// expected one is never run (--expect-sha256 makes the mismatch), and the
// remote temp dir is removed.
func TestRemoteCorruptUploadRefused(t *testing.T) {
	s := startSSHD(t)
	marker := filepath.Join(t.TempDir(), "must-not-exist")
	req := fmt.Sprintf(`{"steps":[{"type":"file.write","path":%q,"content_b64":"eA=="}]}`, marker)
	code, out, errOut := runRemote(t, s, req, "--json", "--expect-sha256", strings.Repeat("0", 64))
	if code != 1 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	var doc struct {
		OK        bool              `json:"ok"`
		RemoteDir string            `json:"remote_dir"`
		Error     map[string]string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Error["code"] != "upload_corrupt" {
		t.Fatalf("document %s (%v)", out, err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("a step ran although the upload was refused: %v", err)
	}
	remoteGone(t, s, doc.RemoteDir)

	// an unknown host key is refused before anything is uploaded
	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := *s
	bad.KnownHosts = empty
	code, _, errOut = runRemote(t, &bad, req)
	if code != 1 || !strings.Contains(errOut, "Host key verification failed") {
		t.Fatalf("unknown host key: exit %d, %s", code, errOut)
	}
}

// TestRunnerSelfDeleteRemote: a runner started over ssh with --self-delete
// removes its own binary, seen from the remote side.
func TestRunnerSelfDeleteRemote(t *testing.T) {
	s := startSSHD(t)
	dir, err := s.Run(t, "mktemp", "-d")
	if err != nil {
		t.Fatal(err)
	}
	dir = strings.TrimSpace(dir)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := dir + "/vm-agent"
	if _, err := s.Run(t, "cp", agentBin(t), bin); err != nil {
		t.Fatal(err)
	}
	out, err := s.Run(t, bin, "runner", "--stdio", "--self-delete", "<", "/dev/null")
	if err != nil || !strings.Contains(out, `"self_delete":true`) {
		t.Fatalf("runner over ssh: %q %v", out, err)
	}
	if out, err := s.Run(t, "test", "!", "-e", bin, "&&", "echo", "deleted"); err != nil || out != "deleted\n" {
		t.Fatalf("binary still there on the remote side: %q %v", out, err)
	}
}

// TestRemoteTTL: --ttl bounds the remote runner: a step still running at its
// end is stopped, the runner ends and deletes itself, and the temp dir goes.
func TestRemoteTTL(t *testing.T) {
	s := startSSHD(t)
	t0 := time.Now()
	code, out, errOut := runRemote(t, s, `{"steps":[{"type":"exec","argv":["sleep","30"]}]}`,
		"--json", "--ttl", "2s")
	if code != 1 || time.Since(t0) > 20*time.Second {
		t.Fatalf("exit %d after %v\n%s\n%s", code, time.Since(t0), out, errOut)
	}
	var doc struct {
		RemoteDir  string           `json:"remote_dir"`
		Steps      []map[string]any `json:"steps"`
		RunnerExit map[string]any   `json:"runner_exit"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Steps) != 1 {
		t.Fatalf("document %s (%v)", out, err)
	}
	res, _ := doc.Steps[0]["result"].(map[string]any)
	if res["status"] != "timed_out" || doc.RunnerExit["reason"] != "ttl" ||
		doc.RunnerExit["self_delete"] != true {
		t.Fatalf("document %s", out)
	}
	remoteGone(t, s, doc.RemoteDir)
}

// Nothing a runner step starts outlives it: a daemon it leaves behind in its
// own session (setsid, out of the step's process group) dies with the step,
// through the same containment as the agent's (cgroup v2 or the subreaper).
func TestRunnerStepLeavesNothingRunning(t *testing.T) {
	tmp := t.TempDir()
	r := startRunner(t, []string{"TMPDIR=" + tmp})
	if ready := r.next(t, 10*time.Second); ready["type"] != "ready" {
		t.Fatalf("ready line %v", ready)
	}
	pidfile := filepath.Join(tmp, "daemon.pid")
	_, done := r.command(t, cmdLine(t, "d1", map[string]any{"type": "exec",
		"argv": []string{"/bin/sh", "-c", "setsid sh -c 'echo $$ > " + pidfile + "; exec sleep 300' </dev/null >/dev/null 2>&1 & sleep 0.3"}}, nil), "d1")
	if done["ok"] != true {
		t.Fatalf("step: %v", done)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the step's setsid daemon %d still runs after the step ended", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
