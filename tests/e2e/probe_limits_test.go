// End-to-end tests of what a probe may produce and how its records survive
// faults: the output a request may produce is bounded at validation and the
// record is always readable back, memory stays flat for large reads, an
// unreadable record is quarantined, a full disk never shows a final state that
// is not durable, a crash mid-step records the step as interrupted, and
// idempotency keys belong to one subject.
package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// errPath decodes a 400 body's code and path.
func errPath(body string) (code, path string) {
	var e struct {
		Error struct{ Code, Path string } `json:"error"`
	}
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error.Code, e.Error.Path
}

// vmHWM is the peak resident set of pid in KiB (/proc/<pid>/status).
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// listState is the state the list shows for id ("" when not listed).
func listState(t *testing.T, a *Agent, is *issuer, id string) string {
	t.Helper()
	st, body, _ := call(t, a, "GET", "/v1/probes?limit=100", is.tok("probe:read"), "")
	if st != 200 {
		t.Fatalf("list: %d %s", st, body)
	}
	var l struct {
		Probes []struct{ ID, State string } `json:"probes"`
	}
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Probes {
		if p.ID == id {
			return p.State
		}
	}
	return ""
}

// waitListed polls the list (never GET) until id is in a terminal state.
func waitListed(t *testing.T, a *Agent, is *issuer, id string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		if s := listState(t, a, is, id); terminalState(s) {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("probe %s not finished after %s", id, timeout)
	return ""
}

func healthJSON(t *testing.T, a *Agent, is *issuer) map[string]interface{} {
	t.Helper()
	st, body, _ := call(t, a, "GET", "/v1/health", is.tok("health:read"), "")
	if st != 200 {
		t.Fatalf("health: %d %s", st, body)
	}
	var h map[string]interface{}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// waitHealthReason polls /v1/health until a reason contains substr.
func waitHealthReason(t *testing.T, a *Agent, is *issuer, substr string, timeout time.Duration) map[string]interface{} {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var h map[string]interface{}
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		h = healthJSON(t, a, is)
		rs, _ := h["reasons"].([]interface{})
		for _, r := range rs {
			if strings.Contains(fmt.Sprint(r), substr) {
				return h
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no health reason with %q: %v", substr, h)
	return nil
}

func TestProbeOutputBoundedAtValidation(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	// two 64 MiB reads: more than any record the agent will write and read back
	two := `{"steps":[{"type":"file.read","path":"/etc/hostname","max_bytes":67108864},` +
		`{"type":"file.read","path":"/etc/hostname","max_bytes":67108864}]}`
	st, body, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:run"), two)
	if code, path := errPath(body); st != 400 || code != "output_limit_exceeded" || path != "steps[1].max_bytes" {
		t.Fatalf("two 64 MiB reads: %d %s", st, body)
	}
	// a process step adds its two output caps: the path names the step
	many := `{"steps":[{"type":"file.read","path":"/etc/hostname","max_bytes":67108864}` +
		strings.Repeat(`,{"type":"exec","argv":["true"]}`, 31) + `]}`
	st, body, _ = call(t, a, "POST", "/v1/probes", is.tok("probe:run"), many)
	code, path := errPath(body)
	if st != 400 || code != "output_limit_exceeded" || !strings.HasPrefix(path, "steps[") {
		t.Fatalf("read + 31 execs: %d %s", st, body)
	}
	// the largest single read is accepted, and its record reads back
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(big, data, 0600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{"steps": []interface{}{
		map[string]interface{}{"type": "file.read", "path": big, "max_bytes": 64 << 20},
		map[string]interface{}{"type": "exec", "argv": []string{"echo", "after"}}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	if s := waitListed(t, a, is, r.ID, 60*time.Second); s != "succeeded" {
		t.Fatalf("state %s", s)
	}
	got := getProbe(t, a, is, r.ID)
	content, _ := base64.StdEncoding.DecodeString(fmt.Sprint(got.Steps[0]["content_b64"]))
	if sha256.Sum256(content) != sum || got.Steps[0]["sha256"] != hex.EncodeToString(sum[:]) ||
		got.Steps[0]["truncated"] != false || got.Steps[1]["stdout"] != "after\n" {
		t.Errorf("record: %d content bytes, sha %v, step 1 %v", len(content), got.Steps[0]["sha256"], got.Steps[1])
	}
}

// Reading 64 MiB must not cost memory in proportion (it used to be ~250 MiB:
// the buffer, its base64, the JSON string and the dumped record).
func TestProbeLargeReadPeakMemoryIsNotOutputSized(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("head", "-c", strconv.Itoa(64<<20), "/dev/urandom")
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := vmHWM(t, a.Cmd.Process.Pid)
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{"steps": []interface{}{
		map[string]interface{}{"type": "file.read", "path": big, "max_bytes": 64 << 20}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	if s := waitListed(t, a, is, r.ID, 60*time.Second); s != "succeeded" {
		t.Fatalf("state %s", s)
	}
	after := vmHWM(t, a.Cmd.Process.Pid)
	t.Logf("VmHWM before %d KiB, after a 64 MiB file.read %d KiB", before, after)
	if after-before > 16<<10 {
		t.Errorf("peak RSS grew by %d KiB for a 64 MiB read (want O(chunk), < 16 MiB)", after-before)
	}
	// serving it is O(chunk) too: the record file is sent as it is
	st, body, _ := call(t, &Agent{Port: a.Port}, "GET", "/v1/probes/"+r.ID, is.tok("probe:read"), "")
	if st != 200 || len(body) < 64<<20 {
		t.Fatalf("GET: %d, %d bytes", st, len(body))
	}
	served := vmHWM(t, a.Cmd.Process.Pid)
	t.Logf("VmHWM after GET of the %d-byte record: %d KiB", len(body), served)
	if served-before > 16<<10 {
		t.Errorf("peak RSS grew by %d KiB serving the record (want O(chunk))", served-before)
	}
}

func TestUnreadableRecordQuarantinedAtStart(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	a.Signal(syscall.SIGTERM)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	runs := filepath.Join(a.Dir, "state", "work", "runs")
	bad := "p-000000000001-0badc0ffee.json"
	if err := os.WriteFile(filepath.Join(runs, bad), []byte("{not json"), 0600); err != nil {
		t.Fatal(err)
	}
	b := restartAgent(t, a, is)
	if _, err := os.Stat(filepath.Join(runs, bad)); !os.IsNotExist(err) {
		t.Errorf("unreadable record left in place: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(runs, "quarantine", bad)); err != nil || string(data) != "{not json" {
		t.Errorf("not moved to quarantine/: %v %q", err, data)
	}
	if !b.WaitLog("quarantine", 5*time.Second) {
		t.Errorf("the log does not report the quarantined record")
	}
	h := waitHealthReason(t, b, is, "quarantine", 10*time.Second)
	if p, _ := h["probe"].(map[string]interface{}); p == nil || p["quarantined_records"] != float64(1) {
		t.Errorf("health probe section: %v", h["probe"])
	}
}

func TestFinalRecordDurableOrReportedOnFullDisk(t *testing.T) {
	is := newIssuer(t)
	mnt := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(mnt, 0700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	work := filepath.Join(mnt, "work")
	a := startAuthAgent(t, is, "probe:\n  work_dir: "+work+"\nhealth:\n  check_interval: 1s\n")
	// step 0 reads 600 KiB (800 KiB of base64), step 1 fills the small disk:
	// the final record cannot be written
	src := filepath.Join(t.TempDir(), "src")
	data := make([]byte, 600<<10)
	for i := range data {
		data[i] = byte(i)
	}
	if err := os.WriteFile(src, data, 0600); err != nil {
		t.Fatal(err)
	}
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{"steps": []interface{}{
		map[string]interface{}{"type": "file.read", "path": src, "max_bytes": 1 << 20},
		map[string]interface{}{"type": "exec", "argv": []string{"/bin/sh", "-c",
			"head -c 2097152 /dev/zero > " + filepath.Join(mnt, "filler") + "; true"}}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	listed := waitListed(t, a, is, r.ID, 20*time.Second)
	got := getProbe(t, a, is, r.ID)
	if listed != got.State {
		t.Fatalf("list shows %s, GET serves %s", listed, got.State)
	}
	var full map[string]interface{}
	_, body, _ := call(t, a, "GET", "/v1/probes/"+r.ID, is.tok("probe:read"), "")
	_ = json.Unmarshal([]byte(body), &full)
	if got.State != "failed" || full["error_code"] != "record_write_failed" {
		t.Fatalf("after a failed final write: %s", body)
	}
	waitHealthReason(t, a, is, "record", 10*time.Second)
	// what GET served is what is durable: the same after a restart
	a.Signal(syscall.SIGTERM)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b := restartAgent(t, a, is)
	_, body, _ = call(t, b, "GET", "/v1/probes/"+r.ID, is.tok("probe:read"), "")
	full = nil
	_ = json.Unmarshal([]byte(body), &full)
	if full["state"] != "failed" || full["error_code"] != "record_write_failed" {
		t.Errorf("after restart: %s", body)
	}
	// nothing of the failed write is left on the small disk
	left, _ := filepath.Glob(filepath.Join(work, "runs", "*tmp*"))
	spill, _ := filepath.Glob(filepath.Join(work, "runs", "*.spill"))
	if len(left)+len(spill) != 0 {
		t.Errorf("left behind: %v %v", left, spill)
	}
}

func TestCrashMidStepRecordsInterrupted(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	pidfile := filepath.Join(t.TempDir(), "pids")
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{"steps": []interface{}{
		map[string]interface{}{"type": "exec", "argv": []string{"echo", "first"}},
		map[string]interface{}{"type": "script", "body": fmt.Sprintf("echo $$ > %s\nexec sleep 300\n", pidfile)},
		map[string]interface{}{"type": "exec", "argv": []string{"true"}}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	t.Cleanup(func() {
		for _, p := range pidsFrom(t, pidfile) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	for i := 0; i < 500 && len(pidsFrom(t, pidfile)) == 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if len(pidsFrom(t, pidfile)) == 0 {
		t.Fatal("step 1 never started")
	}
	a.Signal(syscall.SIGKILL)
	a.Wait(10 * time.Second)
	b := restartAgent(t, a, is)
	got := getProbe(t, b, is, r.ID)
	st := func(i int) interface{} { return got.Steps[i]["status"] }
	if got.State != "interrupted" || st(0) == "skipped" || st(0) == "pending" || st(1) != "interrupted" || st(2) != "skipped" {
		t.Errorf("after kill -9 mid-step: %s, steps %v / %v / %v", got.State, st(0), st(1), st(2))
	}
	if st(0) != "succeeded" {
		t.Errorf("the finished step 0 lost its outcome: %v", got.Steps[0])
	}
}

func TestIdempotencyKeyScopedBySubject(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	other := func(scope string) string {
		c := is.claims(scope)
		c["sub"] = "intruder@msp"
		return is.sign("EdDSA", "ed", c)
	}
	body := `{"idempotency_key":"shared-1","steps":[{"type":"exec","argv":["echo","secret-of-operator"]}]}`
	_, r1, raw := submit(t, a, is, body)
	if r1.ID == "" {
		t.Fatal(raw)
	}
	waitProbe(t, a, is, r1.ID, 10*time.Second, "succeeded")
	intruderID := ""
	check := func(a *Agent, when string) {
		st, raw, _ := call(t, a, "POST", "/v1/probes", other("probe:run"), body)
		var r probeRec
		_ = json.Unmarshal([]byte(raw), &r)
		// a new probe of its own the first time, that same one when replayed
		if r.ID == "" || r.ID == r1.ID || (intruderID == "" && st != 202) ||
			(intruderID != "" && (st != 200 || r.ID != intruderID)) {
			t.Errorf("%s: another subject replaying the key got %d %s", when, st, raw)
		}
		intruderID = r.ID
		// the first subject still gets its own probe
		if st, r, raw := submit(t, a, is, body); st != 200 || r.ID != r1.ID {
			t.Errorf("%s: owner replay: %d %s", when, st, raw)
		}
	}
	check(a, "live")
	a.Signal(syscall.SIGTERM)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b := restartAgent(t, a, is)
	check(b, "after restart")
}

// A step whose start cannot be made durable does not run: after a crash the
// record could not say that it may have run.
func TestStepNotRunWhenItsStartCannotBePersisted(t *testing.T) {
	is := newIssuer(t)
	mnt := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(mnt, 0700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	a := startAuthAgent(t, is, "probe:\n  work_dir: "+filepath.Join(mnt, "work")+"\nhealth:\n  check_interval: 1s\n")
	marker := filepath.Join(t.TempDir(), "ran")
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{"steps": []interface{}{
		map[string]interface{}{"type": "exec", "argv": []string{"/bin/sh", "-c",
			"head -c 2097152 /dev/zero > " + filepath.Join(mnt, "filler") + "; true"}},
		map[string]interface{}{"type": "exec", "argv": []string{"touch", marker}}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	listed := waitListed(t, a, is, r.ID, 20*time.Second)
	_, body, _ := call(t, a, "GET", "/v1/probes/"+r.ID, is.tok("probe:read"), "")
	var full map[string]interface{}
	_ = json.Unmarshal([]byte(body), &full)
	if listed != "failed" || full["state"] != "failed" || full["error_code"] != "record_write_failed" {
		t.Fatalf("list %s, GET %s", listed, body)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("step 1 ran although its start was not durable: %v", err)
	}
	waitHealthReason(t, a, is, "record", 10*time.Second)
}
