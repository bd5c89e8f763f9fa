// End-to-end tests of `vm-agent upgrade` under --root: real minisign keys made
// by the test, downloads from a loopback HTTP server, new binaries built by
// tests/CMakeLists.txt (other versions of vm-agent, and stubs that exit 1,
// hang or crash) — in every failure case the old version must stay installed.
// Also: an upgrade killed half-way is undone by the agent's next start.
package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func upFixture(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(agentBin(t)), "upgrade-fixtures", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fixture %s missing (built by tests/CMakeLists.txt): %v", name, err)
	}
	return p
}

type upKey struct{ pub, sec string }

func upNewKey(t *testing.T, dir, name string) upKey {
	t.Helper()
	k := upKey{filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".sec")}
	out, err := exec.Command("minisign", "-G", "-W", "-p", k.pub, "-s", k.sec).CombinedOutput()
	if err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	return k
}

func (k upKey) line(t *testing.T) string {
	b, err := os.ReadFile(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func (k upKey) sign(t *testing.T, file, sigPath string) {
	t.Helper()
	out, err := exec.Command("minisign", "-S", "-s", k.sec, "-m", file, "-x", sigPath,
		"-t", "vm-agent test release").CombinedOutput()
	if err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
}

func upSum(t *testing.T, path string) string {
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	return upSumQuiet(path)
}

// upSumQuiet: upSum for polling loops; "" when the file cannot be read.
func upSumQuiet(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// upServer serves dir on loopback; /truncated/NAME declares the full length
// and closes after half of the bytes.
func upServer(t *testing.T, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", http.FileServer(http.Dir(dir))))
	mux.HandleFunc("/truncated/", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(200)
		w.Write(b[:len(b)/2])
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func upInstalledVersion(t *testing.T, root string) string {
	t.Helper()
	v, err := upVersionOf(filepath.Join(root, "usr/local/bin/vm-agent"))
	if err != nil {
		t.Fatalf("installed binary does not run: %v", err)
	}
	return v
}

// upVersionOf runs `bin version --json` and returns the version it reports.
func upVersionOf(bin string) (string, error) {
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		return "", err
	}
	var v struct{ Version string }
	if err := json.Unmarshal(out, &v); err != nil || v.Version == "" {
		return "", fmt.Errorf("version --json printed %q", out)
	}
	return v.Version, nil
}

// upEnv is one installed root with a trusted key and a file server.
type upEnv struct {
	cp       *lcCP
	root     string
	files    string // served directory
	url      string // server base
	key      upKey
	otherKey upKey
	current  string
}

func upSetup(t *testing.T) *upEnv {
	t.Helper()
	e := &upEnv{cp: lcStartFakeCP(t)}
	e.root = lcInstall(t, e.cp)
	e.files = t.TempDir()
	e.url = upServer(t, e.files)
	keys := t.TempDir()
	e.key = upNewKey(t, keys, "release")
	e.otherKey = upNewKey(t, keys, "other")
	if code, out, errOut := runCLI(t, nil, "configure", "--root", e.root, "--set",
		"upgrade.public_keys="+e.key.line(t)); code != 0 {
		t.Fatalf("configure key: %s %s", out, errOut)
	}
	e.current = upInstalledVersion(t, e.root)
	return e
}

// publish copies src into the served dir as name and signs it with key (nil = unsigned).
func (e *upEnv) publish(t *testing.T, src, name string, key *upKey) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(e.files, name)
	if err := os.WriteFile(dst, b, 0644); err != nil {
		t.Fatal(err)
	}
	if key != nil {
		key.sign(t, dst, dst+".minisig")
	}
	return dst
}

func (e *upEnv) upgrade(t *testing.T, args ...string) (int, string) {
	t.Helper()
	full := append([]string{"upgrade", "--root", e.root, "--self-test-timeout", "2"}, args...)
	code, out, errOut := runCLI(t, nil, full...)
	return code, out + errOut
}

// assertUntouched: old version installed, no temp files, no journal.
func (e *upEnv) assertUntouched(t *testing.T) {
	t.Helper()
	if v := upInstalledVersion(t, e.root); v != e.current {
		t.Errorf("installed version %s, want the old %s", v, e.current)
	}
	matches, _ := filepath.Glob(filepath.Join(e.root, "usr/local/bin/.vm-agent.new*"))
	if len(matches) > 0 {
		t.Errorf("leftover downloads: %v", matches)
	}
	if lcExists(filepath.Join(e.root, "var/lib/vm-agent/upgrade.journal")) {
		t.Error("journal left behind")
	}
}

func TestUpgradeGoodVersionIsInstalledAndOldKept(t *testing.T) {
	e := upSetup(t)
	p := e.publish(t, upFixture(t, "vm-agent-v99.0.0"), "vm-agent-99", &e.key)
	code, out := e.upgrade(t, "--version", "99.0.0", "--url", e.url+"/files/vm-agent-99",
		"--checksum", upSum(t, p), "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if v := upInstalledVersion(t, e.root); v != "99.0.0" {
		t.Fatalf("installed %s", v)
	}
	prev := filepath.Join(e.root, "usr/local/bin/vm-agent.prev")
	out2, err := exec.Command(prev, "version").Output()
	if err != nil || !strings.Contains(string(out2), e.current) {
		t.Errorf(".prev is not the old version: %s %v", out2, err)
	}
	if lcMode(t, filepath.Join(e.root, "usr/local/bin/vm-agent")) != 0755 {
		t.Error("new binary mode")
	}
	var rec struct{ Version, Sha256 string }
	b, _ := os.ReadFile(filepath.Join(e.root, "var/lib/vm-agent/install.json"))
	json.Unmarshal(b, &rec)
	if rec.Version != "99.0.0" || "sha256:"+rec.Sha256 != upSum(t, p) {
		t.Errorf("install record not updated: %s", b)
	}
	evs := e.cp.requests(t, "POST", "/v1/agents/")
	found := false
	for _, ev := range evs {
		if strings.HasSuffix(ev.Path, "/events") && strings.Contains(string(ev.Body), "\"succeeded\"") {
			found = true
		}
	}
	if !found {
		t.Errorf("no upgrade event reported: %+v", evs)
	}
	// repair agrees the binary matches its record
	if code, out, _ := runCLI(t, nil, "repair", "--diagnose", "--root", e.root); code != 0 {
		t.Errorf("diagnose after upgrade: %s", out)
	}
}

func TestUpgradeFailuresKeepTheOldVersion(t *testing.T) {
	e := upSetup(t)
	good := upFixture(t, "vm-agent-v99.0.0")

	wrongArch := filepath.Join(t.TempDir(), "wrong-arch")
	b, _ := os.ReadFile(good)
	// e_machine = EM_AARCH64, or EM_X86_64 when the tests run on arm64
	b[18], b[19] = 0xB7, 0x00
	if strings.Contains(upMachine(t), "aarch64") {
		b[18] = 0x3E
	}
	os.WriteFile(wrongArch, b, 0755)

	cases := []struct {
		name    string
		prepare func(t *testing.T) []string // returns upgrade args
		want    string                      // in the output
	}{
		{"bad checksum", func(t *testing.T) []string {
			e.publish(t, good, "a", &e.key)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/a",
				"--checksum", "sha256:" + strings.Repeat("ab", 32)}
		}, "checksum mismatch"},
		{"bad signature", func(t *testing.T) []string {
			p := e.publish(t, good, "b", &e.key)
			// a valid signature, but of another file
			other := e.publish(t, upFixture(t, "vm-agent-v0.0.1"), "b-other", &e.key)
			os.Rename(other+".minisig", p+".minisig")
			return []string{"--version", "99.0.0", "--url", e.url + "/files/b", "--checksum", upSum(t, p)}
		}, "does not match"},
		{"signature by another key", func(t *testing.T) []string {
			p := e.publish(t, good, "c", &e.otherKey)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/c", "--checksum", upSum(t, p)}
		}, "not one of"},
		{"missing signature", func(t *testing.T) []string {
			p := e.publish(t, good, "d", nil)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/d", "--checksum", upSum(t, p)}
		}, "signature missing"},
		{"truncated download", func(t *testing.T) []string {
			p := e.publish(t, good, "e", &e.key)
			return []string{"--version", "99.0.0", "--url", e.url + "/truncated/e", "--checksum", upSum(t, p),
				"--signature-url", e.url + "/files/e.minisig"}
		}, "download"},
		{"older version", func(t *testing.T) []string {
			p := e.publish(t, upFixture(t, "vm-agent-v0.0.1"), "f", &e.key)
			return []string{"--version", "0.0.1", "--url", e.url + "/files/f", "--checksum", upSum(t, p)}
		}, "older than"},
		{"version mismatch", func(t *testing.T) []string {
			p := e.publish(t, good, "g", &e.key)
			return []string{"--version", "99.1.0", "--url", e.url + "/files/g", "--checksum", upSum(t, p)}
		}, "reports version 99.0.0"},
		{"new binary exits 1", func(t *testing.T) []string {
			p := e.publish(t, upFixture(t, "upgrade-stub-exit1"), "h", &e.key)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/h", "--checksum", upSum(t, p)}
		}, "exit 1"},
		{"new binary hangs", func(t *testing.T) []string {
			p := e.publish(t, upFixture(t, "upgrade-stub-hang"), "i", &e.key)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/i", "--checksum", upSum(t, p)}
		}, "did not finish in time"},
		{"new binary segfaults", func(t *testing.T) []string {
			p := e.publish(t, upFixture(t, "upgrade-stub-segv"), "j", &e.key)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/j", "--checksum", upSum(t, p)}
		}, "signal 11"},
		{"another architecture", func(t *testing.T) []string {
			p := e.publish(t, wrongArch, "k", &e.key)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/k", "--checksum", upSum(t, p)}
		}, "another architecture"},
		{"not an executable", func(t *testing.T) []string {
			txt := filepath.Join(t.TempDir(), "page.html")
			os.WriteFile(txt, []byte("<html>oops</html>"), 0644)
			p := e.publish(t, txt, "l", &e.key)
			return []string{"--version", "99.0.0", "--url", e.url + "/files/l", "--checksum", upSum(t, p)}
		}, "not an ELF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.prepare(t)
			start := time.Now()
			code, out := e.upgrade(t, args...)
			if code == 0 {
				t.Fatalf("upgrade succeeded:\n%s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("output lacks %q:\n%s", c.want, out)
			}
			if time.Since(start) > 20*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
			e.assertUntouched(t)
		})
	}
	// Failures are reported to the control plane too.
	failed := 0
	for _, ev := range e.cp.requests(t, "POST", "/v1/agents/") {
		if strings.Contains(string(ev.Body), "\"failed\"") {
			failed++
		}
	}
	if failed < len(cases)-1 {
		t.Errorf("%d failure events for %d cases", failed, len(cases))
	}

	// With --allow-downgrade the older version is accepted.
	p := e.publish(t, upFixture(t, "vm-agent-v0.0.1"), "m", &e.key)
	code, out := e.upgrade(t, "--version", "0.0.1", "--url", e.url+"/files/m", "--checksum", upSum(t, p), "--allow-downgrade")
	if code != 0 || upInstalledVersion(t, e.root) != "0.0.1" {
		t.Errorf("--allow-downgrade: exit %d\n%s", code, out)
	}
}

func upMachine(t *testing.T) string {
	out, _ := exec.Command("uname", "-m").Output()
	return string(out)
}

func TestUpgradeWithoutAnyTrustedKeyIsRefused(t *testing.T) {
	e := upSetup(t)
	runCLI(t, nil, "configure", "--root", e.root, "--unset", "upgrade.public_keys")
	p := e.publish(t, upFixture(t, "vm-agent-v99.0.0"), "a", &e.key)
	code, out := e.upgrade(t, "--version", "99.0.0", "--url", e.url+"/files/a", "--checksum", upSum(t, p))
	if code == 0 || !strings.Contains(out, "no trusted upgrade key") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	e.assertUntouched(t)
}

// kill -9 while the new binary's self-test runs (journal: downloading): the
// next start of the agent cleans up, and the old binary is untouched.
func TestUpgradeKilledDuringSelfTestIsCleanedAtNextStart(t *testing.T) {
	e := upSetup(t)
	p := e.publish(t, upFixture(t, "upgrade-stub-hang"), "hang", &e.key)
	cmd := exec.Command(agentBin(t), "upgrade", "--root", e.root, "--self-test-timeout", "25",
		"--version", "99.0.0", "--url", e.url+"/files/hang", "--checksum", upSum(t, p))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(e.root, "var/lib/vm-agent/upgrade.journal")
	news := filepath.Join(e.root, "usr/local/bin/.vm-agent.new.*")
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, _ := filepath.Glob(news)
		if lcExists(journal) && len(m) > 0 && upChildRunning(cmd.Process.Pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("upgrade never reached the self-test")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// the hung self-test dies with the upgrade that started it (no orphan left)
	if !upNoProcessUnder(e.root, 5*time.Second) {
		t.Errorf("the self-test of a killed upgrade is still running")
	}
	if !lcExists(journal) {
		t.Fatal("journal missing after the kill")
	}
	ag := lcRunInstalled(t, e.root, "")
	if !strings.Contains(ag.log.String(), "cleaned up") {
		t.Errorf("no recovery in the log:\n%s", ag.log.String())
	}
	e.assertUntouched(t)
	// and a new upgrade works afterwards
	p = e.publish(t, upFixture(t, "vm-agent-v99.0.0"), "good", &e.key)
	if code, out := e.upgrade(t, "--version", "99.0.0", "--url", e.url+"/files/good", "--checksum", upSum(t, p)); code != 0 {
		t.Errorf("upgrade after recovery: %s", out)
	}
}

// upChildRunning: the upgrade process has a child (the self-test).
func upChildRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	return err == nil && strings.TrimSpace(string(b)) != ""
}

// Killed right after the swap, before the health gate committed it: the new
// binary starts, finds the journal, restores the old one and re-executes it.
func TestUpgradeKilledAfterSwapIsRolledBackAtNextStart(t *testing.T) {
	e := upSetup(t)
	bin := filepath.Join(e.root, "usr/local/bin/vm-agent")
	prev := bin + ".prev"
	// exactly the state swap_in leaves: .prev = old, bin = new, journal "swapped"
	if err := os.Link(bin, prev); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(upFixture(t, "vm-agent-v99.0.0"))
	tmp := bin + ".tmpnew"
	os.WriteFile(tmp, b, 0755)
	os.Rename(tmp, bin)
	j, _ := json.Marshal(map[string]string{"phase": "swapped", "bin": bin, "prev": prev,
		"new": filepath.Join(e.root, "usr/local/bin/.vm-agent.new.1"), "from": e.current, "to": "99.0.0"})
	os.WriteFile(filepath.Join(e.root, "var/lib/vm-agent/upgrade.journal"), j, 0600)

	ag := lcRunInstalled(t, e.root, bin)
	log := ag.log.String()
	if !strings.Contains(log, "previous binary restored") || !strings.Contains(log, "re-executing") {
		t.Errorf("no rollback in the log:\n%s", log)
	}
	if !strings.Contains(log, "vm-agent "+e.current+" ") {
		t.Errorf("the running agent is not the old version:\n%s", log)
	}
	e.assertUntouched(t)
}

// Killed after .prev was saved but before the swap: nothing to undo but the
// download; the old binary was never touched.
func TestUpgradeKilledBeforeSwapLeavesOldBinary(t *testing.T) {
	e := upSetup(t)
	bin := filepath.Join(e.root, "usr/local/bin/vm-agent")
	os.Link(bin, bin+".prev")
	fresh := filepath.Join(e.root, "usr/local/bin/.vm-agent.new.42")
	b, _ := os.ReadFile(upFixture(t, "vm-agent-v99.0.0"))
	os.WriteFile(fresh, b, 0755)
	j, _ := json.Marshal(map[string]string{"phase": "prev_saved", "bin": bin, "prev": bin + ".prev",
		"new": fresh, "from": e.current, "to": "99.0.0"})
	os.WriteFile(filepath.Join(e.root, "var/lib/vm-agent/upgrade.journal"), j, 0600)
	ag := lcRunInstalled(t, e.root, "")
	if !strings.Contains(ag.log.String(), "cleaned up") {
		t.Errorf("no recovery in the log:\n%s", ag.log.String())
	}
	e.assertUntouched(t)
}

// POST /v1/upgrade exists and needs a token with scope agent:upgrade.
func TestUpgradeWebhookRouteRequiresAuth(t *testing.T) {
	a := startAgent(t, "")
	resp, err := http.Post(a.URL("/v1/upgrade"), "application/json",
		strings.NewReader(`{"version":"9.9.9","url":"https://x.invalid/a","checksum":"sha256:00"}`))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != 401 {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
	resp, err = http.Get(a.URL("/v1/upgrade"))
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != 405 {
		t.Errorf("GET: status %d", resp.StatusCode)
	}
}

// With a valid token: the wrong scope is 403, malformed requests are 400 (the
// 202 path would start a real upgrade of this machine, so it is not run here;
// tests/e2e/nspawn_boot.sh is where that belongs).
func TestUpgradeWebhookChecksScopeAndRequest(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	good := `{"version":"9.9.9","url":"https://x.invalid/a","checksum":"sha256:` + strings.Repeat("0", 64) + `"}`
	if code, body, _ := call(t, a, "POST", "/v1/upgrade", is.tok("probe:run"), good); code != 403 {
		t.Errorf("wrong scope: %d %s", code, body)
	}
	tok := func() string { return is.tok("agent:upgrade") }
	bad := map[string]string{
		"not json":         `nope`,
		"no version":       `{"url":"https://x.invalid/a","checksum":"sha256:` + strings.Repeat("0", 64) + `"}`,
		"file url":         `{"version":"9.9.9","url":"file:///etc/shadow","checksum":"sha256:` + strings.Repeat("0", 64) + `"}`,
		"short checksum":   `{"version":"9.9.9","url":"https://x.invalid/a","checksum":"sha256:00"}`,
		"shell in version": `{"version":"1;reboot","url":"https://x.invalid/a","checksum":"sha256:` + strings.Repeat("0", 64) + `"}`,
		"downgrade type":   `{"version":"9.9.9","url":"https://x.invalid/a","checksum":"sha256:` + strings.Repeat("0", 64) + `","allow_downgrade":"yes"}`,
	}
	for name, body := range bad {
		code, resp, _ := call(t, a, "POST", "/v1/upgrade", tok(), body)
		if code != 400 || !strings.Contains(resp, "bad_request") {
			t.Errorf("%s: %d %s", name, code, resp)
		}
	}
}

// A new binary that passes the self-test but fails the health gate after the
// swap: the previous binary is restored (the rollback path).
func TestUpgradeFailingHealthGateRollsBack(t *testing.T) {
	e := upSetup(t)
	p := e.publish(t, upFixture(t, "upgrade-stub-flaky"), "flaky", &e.key)
	code, out := e.upgrade(t, "--version", "99.0.0", "--url", e.url+"/files/flaky", "--checksum", upSum(t, p))
	if code == 0 {
		t.Fatalf("upgrade succeeded:\n%s", out)
	}
	for _, want := range []string{"OK       swap", "FAIL     health", "CHANGED  rollback"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	os.Remove(filepath.Join(e.root, "usr/local/bin/.stub-flaky-ran"))
	e.assertUntouched(t)
}

// upNoProcessUnder waits until no process runs a binary from under root.
func upNoProcessUnder(root string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		found := false
		dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, d := range dirs {
			b, err := os.ReadFile(d)
			if err == nil && strings.HasPrefix(string(b), root) {
				found = true
				break
			}
		}
		if !found {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// After a rollback the binary and .prev are one file (restore_prev links
// .prev back in place). The next upgrade's link of the binary to .prev.tmp
// and rename over .prev is then a rename between two links of one file,
// which POSIX makes a no-op that keeps both names: .prev.tmp must not stay
// behind (found by TestFaultKill9UpgradeMatrix).
func TestUpgradeAfterRollbackLeavesNoPrevTemp(t *testing.T) {
	e := upSetup(t)
	bin := filepath.Join(e.root, "usr/local/bin/vm-agent")
	if err := os.Link(bin, bin+".prev"); err != nil {
		t.Fatal(err)
	}
	p := e.publish(t, upFixture(t, "vm-agent-v99.0.0"), "good", &e.key)
	if code, out := e.upgrade(t, "--version", "99.0.0", "--url", e.url+"/files/good", "--checksum", upSum(t, p)); code != 0 {
		t.Fatalf("upgrade: %s", out)
	}
	if left := crashTemps(filepath.Dir(bin)); len(left) > 0 {
		t.Errorf("left beside the binary: %v", left)
	}
	if v, err := upVersionOf(bin + ".prev"); err != nil || v != e.current {
		t.Errorf(".prev is %q (%v), want the previous %s", v, err, e.current)
	}
}
