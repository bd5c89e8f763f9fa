// End-to-end tests of /v1/probes: every step type, timeouts that kill a
// process tree, cancel, a full queue, idempotency, restart after kill -9,
// output caps, validation paths, the allow policy and the event stream.
package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type probeRec struct {
	ID    string                   `json:"id"`
	State string                   `json:"state"`
	Error string                   `json:"error"`
	Steps []map[string]interface{} `json:"steps"`
}

func submit(t *testing.T, a *Agent, is *issuer, body string) (int, probeRec, string) {
	t.Helper()
	status, b, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:run"), body)
	var r probeRec
	_ = json.Unmarshal([]byte(b), &r)
	return status, r, b
}

func getProbe(t *testing.T, a *Agent, is *issuer, id string) probeRec {
	t.Helper()
	status, b, _ := call(t, a, "GET", "/v1/probes/"+id, is.tok("probe:read"), "")
	if status != 200 {
		t.Fatalf("GET %s: %d %s", id, status, b)
	}
	var r probeRec
	if err := json.Unmarshal([]byte(b), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func terminalState(s string) bool {
	return s != "queued" && s != "running" && s != ""
}

// waitProbe polls until the probe reaches a state in want (or any terminal
// state when want is empty).
func waitProbe(t *testing.T, a *Agent, is *issuer, id string, timeout time.Duration, want ...string) probeRec {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var r probeRec
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		r = getProbe(t, a, is, id)
		for _, w := range want {
			if r.State == w {
				return r
			}
		}
		if len(want) == 0 && terminalState(r.State) {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("probe %s: state %s after %s, want %v", id, r.State, timeout, want)
	return r
}

func mustJSON(v interface{}) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestProbeEveryStepTypeHappyPath(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	dir := t.TempDir()
	target := filepath.Join(dir, "conf.txt")
	content := "hello from the control plane\n"
	body := mustJSON(map[string]interface{}{
		"steps": []interface{}{
			map[string]interface{}{"type": "exec", "argv": []string{"/bin/sh", "-c", "echo \"$GREETING\"; cat; pwd; echo err >&2"},
				"env": map[string]string{"GREETING": "hi"}, "stdin": "from-stdin\n", "cwd": dir},
			map[string]interface{}{"type": "script", "body": "#!/bin/sh\necho script:$0 | grep -c /proc/self/fd/\nexit 0\n"},
			map[string]interface{}{"type": "file.write", "path": target, "content_b64": base64.StdEncoding.EncodeToString([]byte(content)), "mode": "0640"},
			map[string]interface{}{"type": "file.write", "path": target, "content_b64": base64.StdEncoding.EncodeToString([]byte(content)), "mode": "0640"},
			map[string]interface{}{"type": "file.read", "path": target},
			map[string]interface{}{"type": "exec", "argv": []string{"true"}},
		},
	})
	status, r, raw := submit(t, a, is, body)
	if status != 202 || r.State != "queued" || r.ID == "" {
		t.Fatalf("submit: %d %s", status, raw)
	}
	r = waitProbe(t, a, is, r.ID, 20*time.Second)
	if r.State != "succeeded" {
		t.Fatalf("state %s: %+v", r.State, r)
	}
	s := r.Steps
	if s[0]["stdout"] != "hi\nfrom-stdin\n"+dir+"\n" || s[0]["stderr"] != "err\n" || s[0]["exit_code"].(float64) != 0 {
		t.Errorf("exec: %v", s[0])
	}
	if s[1]["stdout"] != "1\n" || s[1]["status"] != "succeeded" {
		t.Errorf("script: %v", s[1])
	}
	if s[2]["changed"] != true || s[3]["changed"] != false {
		t.Errorf("file.write changed flags: %v / %v", s[2]["changed"], s[3]["changed"])
	}
	if st, err := os.Stat(target); err != nil || st.Mode().Perm() != 0640 {
		t.Errorf("written file: %v %v", st, err)
	}
	got, _ := base64.StdEncoding.DecodeString(fmt.Sprint(s[4]["content_b64"]))
	if string(got) != content || s[4]["truncated"] != false || s[4]["mode"] != "0640" || s[4]["size"].(float64) != float64(len(content)) {
		t.Errorf("file.read: %v", s[4])
	}
	// the script body never reaches the disk (it is read from a memfd)
	left, _ := filepath.Glob(filepath.Join(a.Dir, "state", "work", "scripts", "*"))
	if len(left) != 0 {
		t.Errorf("script files left behind: %v", left)
	}
	// listed, newest first, filtered by state
	st, lb, _ := call(t, a, "GET", "/v1/probes?state=succeeded&limit=5", is.tok("probe:read"), "")
	if st != 200 || !strings.Contains(lb, r.ID) {
		t.Errorf("list: %d %s", st, lb)
	}
	assertNoTokenLeak(t, is, a)
}

func TestProbeFileWriteGuards(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	dir := t.TempDir()
	target := filepath.Join(dir, "f")
	if err := os.WriteFile(target, []byte("old"), 0600); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte("new"))
	cases := []struct {
		step  map[string]interface{}
		state string
	}{
		{map[string]interface{}{"type": "file.write", "path": target, "content_b64": b64, "create_only": true}, "failed"},
		{map[string]interface{}{"type": "file.write", "path": target, "content_b64": b64, "sha256": strings.Repeat("0", 64)}, "failed"},
		{map[string]interface{}{"type": "file.write", "path": target, "content_b64": b64, "backup": true,
			"sha256": "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437"}, "succeeded"},
	}
	for i, c := range cases {
		_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{"steps": []interface{}{c.step}}))
		if r.ID == "" {
			t.Fatalf("case %d: %s", i, raw)
		}
		r = waitProbe(t, a, is, r.ID, 10*time.Second)
		if r.State != c.state {
			t.Errorf("case %d: %s, want %s: %v", i, r.State, c.state, r.Steps)
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Errorf("content %q", b)
	}
	if b, _ := os.ReadFile(target + ".bak"); string(b) != "old" {
		t.Errorf("backup %q", b)
	}
}

// pidsFrom reads pids written one per line by a test script.
func pidsFrom(t *testing.T, path string) []int {
	b, _ := os.ReadFile(path)
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// alive is true when pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndex(s, ")")
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

func waitDead(t *testing.T, pids []int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, p := range pids {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			_ = syscall.Kill(p, syscall.SIGKILL)
			t.Errorf("process %d survived", p)
		}
	}
}

func TestProbeTimeoutKillsProcessTree(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  cancel_grace: 500ms\n")
	pidfile := filepath.Join(t.TempDir(), "pids")
	// a child that forks grandchildren, one of which ignores SIGTERM
	script := fmt.Sprintf("sleep 300 & echo $! >> %[1]s\n(trap '' TERM; sleep 300) & echo $! >> %[1]s\necho $$ >> %[1]s\nwait\n", pidfile)
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
		"steps": []interface{}{map[string]interface{}{"type": "script", "body": script, "timeout": "1s"}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	start := time.Now()
	r = waitProbe(t, a, is, r.ID, 15*time.Second)
	if r.State != "timed_out" || r.Steps[0]["status"] != "timed_out" {
		t.Fatalf("state %s: %v", r.State, r.Steps)
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Errorf("took %s", el)
	}
	pids := pidsFrom(t, pidfile)
	if len(pids) != 3 {
		t.Fatalf("pids: %v", pids)
	}
	waitDead(t, pids, 3*time.Second)
}

func TestProbeCancel(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  cancel_grace: 500ms\n")
	pidfile := filepath.Join(t.TempDir(), "pids")
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
		"steps": []interface{}{
			map[string]interface{}{"type": "script", "body": fmt.Sprintf("echo $$ > %s\nexec sleep 300\n", pidfile)},
			map[string]interface{}{"type": "exec", "argv": []string{"true"}},
		}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	waitProbe(t, a, is, r.ID, 10*time.Second, "running")
	for i := 0; i < 200 && len(pidsFrom(t, pidfile)) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	status, body, _ := call(t, a, "DELETE", "/v1/probes/"+r.ID, is.tok("probe:cancel"), "")
	if status != 202 {
		t.Fatalf("cancel: %d %s", status, body)
	}
	r = waitProbe(t, a, is, r.ID, 10*time.Second)
	if r.State != "canceled" || r.Steps[0]["status"] != "canceled" || r.Steps[1]["status"] != "skipped" {
		t.Fatalf("after cancel: %s %v", r.State, r.Steps)
	}
	waitDead(t, pidsFrom(t, pidfile), 3*time.Second)
	status, body, _ = call(t, a, "DELETE", "/v1/probes/"+r.ID, is.tok("probe:cancel"), "")
	if status != 409 || decodeError(t, body).Error.Code != "already_finished" {
		t.Errorf("second cancel: %d %s", status, body)
	}
	status, _, _ = call(t, a, "DELETE", "/v1/probes/p-nope", is.tok("probe:cancel"), "")
	if status != 404 {
		t.Errorf("cancel unknown: %d", status)
	}
}

func TestProbeQueueFullIs429(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  max_concurrent: 1\n  queue_size: 1\n  cancel_grace: 200ms\n")
	long := mustJSON(map[string]interface{}{"steps": []interface{}{map[string]interface{}{"type": "exec", "argv": []string{"sleep", "30"}}}})
	s1, r1, raw := submit(t, a, is, long)
	if s1 != 202 {
		t.Fatal(raw)
	}
	waitProbe(t, a, is, r1.ID, 10*time.Second, "running")
	s2, r2, raw := submit(t, a, is, long)
	if s2 != 202 {
		t.Fatal(raw)
	}
	status, body, hdr := call(t, a, "POST", "/v1/probes", is.tok("probe:run"), long)
	if status != 429 || hdr.Get("Retry-After") == "" || decodeError(t, body).Error.Code != "queue_full" {
		t.Fatalf("third: %d %s %v", status, body, hdr)
	}
	// a queued probe can be canceled without ever running
	if st, b, _ := call(t, a, "DELETE", "/v1/probes/"+r2.ID, is.tok("probe:cancel"), ""); st != 202 {
		t.Fatalf("cancel queued: %d %s", st, b)
	}
	if r := waitProbe(t, a, is, r2.ID, 5*time.Second); r.State != "canceled" || r.Steps[0]["status"] != "skipped" {
		t.Errorf("queued then canceled: %+v", r)
	}
	call(t, a, "DELETE", "/v1/probes/"+r1.ID, is.tok("probe:cancel"), "")
	waitProbe(t, a, is, r1.ID, 5*time.Second, "canceled")
}

func TestProbeIdempotency(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	body := `{"idempotency_key":"k-1","steps":[{"type":"exec","argv":["echo","x"]}]}`
	s1, r1, raw := submit(t, a, is, body)
	if s1 != 202 {
		t.Fatal(raw)
	}
	// same key, same request (other formatting and key order): the same probe
	s2, r2, raw := submit(t, a, is, `{ "steps": [ {"argv":["echo","x"], "type":"exec"} ], "idempotency_key": "k-1" }`)
	if s2 != 200 || r2.ID != r1.ID {
		t.Fatalf("replay: %d %s", s2, raw)
	}
	s3, _, raw := submit(t, a, is, `{"idempotency_key":"k-1","steps":[{"type":"exec","argv":["echo","y"]}]}`)
	if s3 != 409 || decodeError(t, raw).Error.Code != "idempotency_conflict" {
		t.Fatalf("conflict: %d %s", s3, raw)
	}
	waitProbe(t, a, is, r1.ID, 10*time.Second, "succeeded")
	// the index survives a restart
	a.Signal(syscall.SIGTERM)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b := restartAgent(t, a, is)
	s4, r4, raw := submit(t, b, is, body)
	if s4 != 200 || r4.ID != r1.ID || r4.State != "succeeded" {
		t.Fatalf("after restart: %d %s", s4, raw)
	}
}

// restartAgent starts the same configuration again after a stopped (and
// checks, at the end of the test, that no token of is reached its output).
func restartAgent(t *testing.T, a *Agent, is *issuer) *Agent {
	t.Helper()
	b := &Agent{t: t, Dir: a.Dir, Config: a.Config, Port: a.Port, Base: a.Base, Relay: a.Relay,
		Log: &syncBuffer{}, done: make(chan struct{})}
	var conns int64
	if b.Relay != nil {
		conns = b.Relay.Status().Connections
	}
	b.start(fastReconnect...)
	if err := b.waitReady(10 * time.Second); err != nil {
		t.Fatalf("restart: %v\n%s", err, b.Log.String())
	}
	if b.Relay != nil && !b.Relay.WaitConnections(conns+1, 15*time.Second) {
		t.Fatalf("restarted agent did not reconnect to the relay\n%s", b.Log.String())
	}
	t.Cleanup(func() { assertNoTokenLeak(t, is, b) })
	return b
}

func TestProbeInterruptedAfterKill9(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  max_concurrent: 1\n")
	pidfile := filepath.Join(t.TempDir(), "pids")
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
		"steps": []interface{}{map[string]interface{}{"type": "script", "body": fmt.Sprintf("echo $$ > %s\nexec sleep 300\n", pidfile)}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	_, queued, _ := submit(t, a, is, `{"steps":[{"type":"exec","argv":["true"]}]}`)
	waitProbe(t, a, is, r.ID, 10*time.Second, "running")
	a.Signal(syscall.SIGKILL)
	a.Wait(10 * time.Second)
	// the orphaned step keeps running after kill -9 of the agent: clean it up
	t.Cleanup(func() {
		for _, p := range pidsFrom(t, pidfile) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	b := restartAgent(t, a, is)
	for _, id := range []string{r.ID, queued.ID} {
		got := getProbe(t, b, is, id)
		if got.State != "interrupted" || !strings.Contains(got.Error, "not re-run") {
			t.Errorf("%s after kill -9: %+v", id, got)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := getProbe(t, b, is, queued.ID); got.State != "interrupted" || got.Steps[0]["status"] != "skipped" {
		t.Errorf("queued probe was re-run: %+v", got)
	}
	// the restart is in the audit log, one line per interrupted probe: every
	// probe on record is audited, even one a crash left accepted on disk
	// before its "started" line (flushed alongside) was
	lines := map[string]int{}
	for _, l := range auditRaw(t, defaultAuditPath(b)) {
		if l["outcome"] == "interrupted" && l["error"] == "agent_restarted" {
			lines[fmt.Sprint(l["probe_id"])]++
		}
	}
	if lines[r.ID] != 1 || lines[queued.ID] != 1 || len(lines) != 2 {
		t.Errorf("interrupted lines in the audit log after the restart: %v, want one each for %s and %s",
			lines, r.ID, queued.ID)
	}
}

func TestProbeOutputCap(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  output_cap: 4KiB\n")
	_, r, raw := submit(t, a, is, `{"steps":[{"type":"exec","argv":["/bin/sh","-c","head -c 100000 /dev/zero | tr '\\0' a; echo done >&2"]}]}`)
	if r.ID == "" {
		t.Fatal(raw)
	}
	r = waitProbe(t, a, is, r.ID, 10*time.Second)
	s := r.Steps[0]
	if r.State != "succeeded" || len(fmt.Sprint(s["stdout"])) != 4096 || s["stdout_truncated"] != true ||
		s["stderr"] != "done\n" || s["stderr_truncated"] != false {
		t.Errorf("state %s, stdout %d bytes, flags %v %v, stderr %q", r.State, len(fmt.Sprint(s["stdout"])),
			s["stdout_truncated"], s["stderr_truncated"], s["stderr"])
	}
}

func TestProbeValidationNamesThePath(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	cases := []struct{ body, path string }{
		{`[]`, "$"},
		{`{"steps":[]}`, "steps"},
		{`{"stepz":[]}`, "stepz"},
		{`{"steps":[{"type":"exec"}]}`, "steps[0].argv"},
		{`{"steps":[{"type":"exec","argv":["true"]},{"type":"exec","argv":["ls", 3]}]}`, "steps[1].argv[1]"},
		{`{"steps":[{"type":"nope"}]}`, "steps[0].type"},
		{`{"steps":[{"type":"exec","argv":["true"],"timeout":"soon"}]}`, "steps[0].timeout"},
		{`{"steps":[{"type":"file.read","path":"relative"}]}`, "steps[0].path"},
		{`{"steps":[{"type":"file.write","path":"/tmp/x","content_b64":"!!"}]}`, "steps[0].content_b64"},
		{`{"steps":[{"type":"exec","argv":["true"],"env":{"A":1}}]}`, "steps[0].env.A"},
		{`{"timeout":-1,"steps":[{"type":"exec","argv":["true"]}]}`, "timeout"},
	}
	for _, c := range cases {
		status, body, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:run"), c.body)
		var e struct {
			Error struct{ Code, Path string } `json:"error"`
		}
		_ = json.Unmarshal([]byte(body), &e)
		if status != 400 || e.Error.Code != "invalid_request" || e.Error.Path != c.path {
			t.Errorf("%s: %d %s (want path %s)", c.body, status, body, c.path)
		}
	}
	if st, _, _ := call(t, a, "GET", "/v1/probes?state=bogus", is.tok("probe:read"), ""); st != 400 {
		t.Errorf("bad state filter: %d", st)
	}
	if st, _, _ := call(t, a, "GET", "/v1/probes/p-unknown", is.tok("probe:read"), ""); st != 404 {
		t.Errorf("unknown id: %d", st)
	}
}

func TestProbeAllowPolicy(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  allow: [\"/usr/bin/echo\", \"/bin/ec*\"]\n")
	_, r, raw := submit(t, a, is, `{"continue_on_error":true,"steps":[{"type":"exec","argv":["/usr/bin/id"]},{"type":"exec","argv":["/bin/echo","ok"]}]}`)
	if r.ID == "" {
		t.Fatal(raw)
	}
	r = waitProbe(t, a, is, r.ID, 10*time.Second)
	s := r.Steps
	if r.State != "failed" || s[0]["exit_code"].(float64) != 126 || !strings.Contains(fmt.Sprint(s[0]["error"]), "probe.allow") ||
		s[1]["stdout"] != "ok\n" {
		t.Errorf("%s %v", r.State, s)
	}
}

func TestProbeEventsStream(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	_, r, raw := submit(t, a, is, `{"steps":[{"type":"script","body":"echo first\nsleep 0.5\necho second\n"}]}`)
	if r.ID == "" {
		t.Fatal(raw)
	}
	req, _ := http.NewRequest("GET", apiURL(a, "/v1/probes/"+r.ID+"/events"), nil)
	req.Header.Set("Authorization", "Bearer "+is.tok("probe:read"))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	var events []string
	var outputs []string
	event := ""
	for i := 0; i < 1000 && sc.Scan(); i++ {
		line := sc.Text()
		if strings.HasPrefix(line, "event: ") {
			event = strings.TrimPrefix(line, "event: ")
			events = append(events, event)
		}
		if strings.HasPrefix(line, "data: ") && event == "output" {
			var d map[string]interface{}
			_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d)
			outputs = append(outputs, fmt.Sprint(d["data"]))
		}
		if strings.HasPrefix(line, "data: ") && event == "end" {
			var rec probeRec
			_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &rec)
			if rec.State != "succeeded" {
				t.Errorf("end record: %s", line)
			}
		}
	}
	joined := strings.Join(outputs, "")
	if joined != "first\nsecond\n" || events[len(events)-1] != "end" {
		t.Errorf("events %v outputs %q", events, joined)
	}
}

// SIGTERM stops the running step's process group and records the probe as
// interrupted (not re-run after the restart).
func TestProbeGracefulShutdownInterrupts(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  cancel_grace: 300ms\n")
	pidfile := filepath.Join(t.TempDir(), "pids")
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
		"steps": []interface{}{map[string]interface{}{"type": "script", "body": fmt.Sprintf("echo $$ > %s\nexec sleep 300\n", pidfile)}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	waitProbe(t, a, is, r.ID, 10*time.Second, "running")
	for i := 0; i < 200 && len(pidsFrom(t, pidfile)) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	a.Signal(syscall.SIGTERM)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, a.Log.String())
	}
	waitDead(t, pidsFrom(t, pidfile), 2*time.Second)
	b := restartAgent(t, a, is)
	if got := getProbe(t, b, is, r.ID); got.State != "interrupted" || !strings.Contains(got.Error, "shutting down") {
		t.Errorf("after SIGTERM: %+v", got)
	}
}

// Binary output is returned base64-encoded under stdout_b64.
func TestProbeBinaryOutputIsBase64(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	_, r, raw := submit(t, a, is, `{"steps":[{"type":"exec","argv":["printf","\\001\\002\\377"]}]}`)
	if r.ID == "" {
		t.Fatal(raw)
	}
	r = waitProbe(t, a, is, r.ID, 10*time.Second)
	if r.Steps[0]["stdout_b64"] != "AQL/" || r.Steps[0]["stdout"] != nil {
		t.Errorf("binary stdout: %v", r.Steps[0])
	}
}
