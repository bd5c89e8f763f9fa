// End-to-end tests of install, configure, repair and uninstall, always under
// --root (a temp dir) with the fake control plane on loopback: the real /etc
// and systemd of the machine running the tests are never touched.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const lcInstallKey = "ik-e2e-install-key-do-not-leak"

var (
	lcFakeCPOnce sync.Once
	lcFakeCPBin  string
	lcFakeCPErr  error
)

// lcFakeCP builds tests/fakecp once and starts it on a loopback port.
type lcCP struct {
	URL string
}

func lcStartFakeCP(t *testing.T) *lcCP {
	t.Helper()
	lcFakeCPOnce.Do(func() {
		// next to the binary under test: inside the build tree, nothing left in /tmp
		lcFakeCPBin = filepath.Join(filepath.Dir(agentBin(t)), "e2e-fakecp")
		cmd := exec.Command("go", "build", "-o", lcFakeCPBin, ".")
		cmd.Dir = "../fakecp"
		out, err := cmd.CombinedOutput()
		if err != nil {
			lcFakeCPErr = fmt.Errorf("go build fakecp: %v\n%s", err, out)
		}
	})
	if lcFakeCPErr != nil {
		t.Fatal(lcFakeCPErr)
	}
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	cmd := exec.Command(lcFakeCPBin, "-addr-file", addrFile)
	var logBuf syncBuffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; i < 500; i++ {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			return &lcCP{URL: "http://" + string(b)}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("fakecp did not start: %s", logBuf.String())
	return nil
}

type lcRecorded struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
	Status  int               `json:"status"`
}

func (cp *lcCP) requests(t *testing.T, method, pathPrefix string) []lcRecorded {
	t.Helper()
	resp, err := http.Get(cp.URL + "/_test/requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var all []lcRecorded
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		t.Fatal(err)
	}
	var out []lcRecorded
	for _, r := range all {
		if r.Method == method && strings.HasPrefix(r.Path, pathPrefix) {
			out = append(out, r)
		}
	}
	return out
}

// lcInstall installs under a fresh root and returns it.
func lcInstall(t *testing.T, cp *lcCP, extra ...string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	args := append([]string{"install", "--root", root, "--tenant-id", "tenant-a",
		"--key", lcInstallKey, "--piko-url", cp.URL, "--control-plane-url", cp.URL}, extra...)
	code, out, errOut := runCLI(t, nil, args...)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s\n%s", code, out, errOut)
	}
	return root
}

func lcMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return st.Mode()
}

func lcExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// lcGrepTree fails when needle appears in any file under dir.
func lcGrepTree(t *testing.T, dir, needle string) {
	t.Helper()
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(needle)) {
			t.Errorf("%s contains the install key", p)
		}
		return nil
	})
}

func TestLifecycleInstallWritesFilesModesUnitAndRegistersOnce(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := filepath.Join(t.TempDir(), "root")
	args := []string{"install", "--root", root, "--tenant-id", "tenant-a", "--key", lcInstallKey,
		"--piko-url", cp.URL, "--control-plane-url", cp.URL, "--json"}
	code, out, errOut := runCLI(t, nil, args...)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, lcInstallKey) {
		t.Error("the install key appears in the output")
	}
	var rep struct {
		OK      bool   `json:"ok"`
		AgentID string `json:"agent_id"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.OK || rep.AgentID == "" {
		t.Fatalf("report: %v %s", err, out)
	}

	modes := map[string]os.FileMode{
		"etc/vm-agent":                        os.ModeDir | 0750,
		"etc/vm-agent/config.yaml":            0640,
		"etc/vm-agent/credentials.json":       0600,
		"etc/vm-agent/piko.token":             0600,
		"var/lib/vm-agent":                    os.ModeDir | 0700,
		"var/log/vm-agent":                    os.ModeDir | 0750,
		"var/cache/vm-agent":                  os.ModeDir | 0700,
		"usr/local/bin/vm-agent":              0755,
		"etc/vm-agent/keys/cp-1.pem":          0644,
		"etc/systemd/system/vm-agent.service": 0644,
	}
	for rel, want := range modes {
		if got := lcMode(t, filepath.Join(root, rel)); got != want {
			t.Errorf("%s: mode %v, want %v", rel, got, want)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/vm-agent.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/vm-agent run --config /etc/vm-agent/config.yaml") {
		t.Errorf("unit ExecStart wrong (must be the target path, not under --root):\n%s", unit)
	}
	link, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/vm-agent.service"))
	if err != nil || !strings.HasSuffix(link, "/vm-agent.service") {
		t.Errorf("unit not enabled: %q %v", link, err)
	}
	var creds map[string]interface{}
	b, _ := os.ReadFile(filepath.Join(root, "etc/vm-agent/credentials.json"))
	if err := json.Unmarshal(b, &creds); err != nil || creds["agent_id"] != rep.AgentID || creds["token"] == "" {
		t.Errorf("credentials: %v %s", err, b)
	}
	if keys, ok := creds["jwt_public_keys"].([]interface{}); !ok || len(keys) != 1 {
		t.Errorf("jwt_public_keys not stored: %s", b)
	}
	cfg, _ := os.ReadFile(filepath.Join(root, "etc/vm-agent/config.yaml"))
	for _, want := range []string{"tenant_id: \"tenant-a\"", "id: \"" + rep.AgentID + "\"",
		"token_file: \"/etc/vm-agent/piko.token\"", "control_plane_url: \"" + cp.URL + "\"",
		"jwt_keys: [\"/etc/vm-agent/keys/cp-1.pem\"]", "issuer: \"fakecp\""} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if code, _, e := runCLI(t, nil, "configure", "--check", filepath.Join(root, "etc/vm-agent/config.yaml")); code != 0 {
		t.Errorf("installed config does not validate: %s", e)
	}
	lcGrepTree(t, root, lcInstallKey)
	regs := cp.requests(t, "POST", "/v1/agents/register")
	if len(regs) != 1 || regs[0].Headers["authorization"] != "Bearer "+lcInstallKey {
		t.Fatalf("registrations: %+v", regs)
	}

	// Again: safe, no second registration, same files.
	code, out, errOut = runCLI(t, nil, args[:len(args)-1]...)
	if code != 0 || !strings.Contains(out, "already registered") {
		t.Fatalf("re-install: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := len(cp.requests(t, "POST", "/v1/agents/register")); n != 1 {
		t.Errorf("re-install registered again (%d registrations)", n)
	}
	// Without the key too (an installed machine needs none).
	code, out, errOut = runCLI(t, nil, "install", "--root", root, "--tenant-id", "tenant-a")
	if code != 0 {
		t.Errorf("re-install without key/URLs: exit %d\n%s\n%s", code, out, errOut)
	}
	// --reregister asks for a new registration with the same id.
	code, out, _ = runCLI(t, nil, append(args[:len(args)-1], "--reregister")...)
	regs = cp.requests(t, "POST", "/v1/agents/register")
	if code != 0 || len(regs) != 2 || !strings.Contains(string(regs[1].Body), rep.AgentID) {
		t.Errorf("--reregister: exit %d, %d registrations\n%s", code, len(regs), out)
	}
}

func TestLifecycleInstallRefusedKeyFailsCleanly(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := filepath.Join(t.TempDir(), "root")
	code, out, errOut := runCLI(t, nil, "install", "--root", root, "--tenant-id", "t",
		"--key", "wrong-key-123", "--piko-url", cp.URL, "--control-plane-url", cp.URL)
	if code == 0 || !strings.Contains(out+errOut, "registration refused") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, "wrong-key-123") {
		t.Error("key printed")
	}
	if lcExists(filepath.Join(root, "etc/vm-agent/credentials.json")) {
		t.Error("credentials written after a refused registration")
	}
	code, _, errOut = runCLI(t, nil, "install", "--root", root, "--tenant-id", "t",
		"--piko-url", cp.URL, "--control-plane-url", cp.URL)
	if code == 0 || !strings.Contains(errOut, "--key") {
		t.Errorf("no key on a fresh machine: exit %d %s", code, errOut)
	}
}

// lcProc is an agent started from an installed binary under a root.
type lcProc struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	port int
	done chan struct{}
}

// stop ends the agent with SIGTERM (SIGKILL after 10 s) and waits for it.
func (p *lcProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// lcRunInstalled runs `<root>/usr/local/bin/vm-agent run` (or bin) with the
// installed config, state and logs redirected into the root.
func lcRunInstalled(t *testing.T, root, bin string, env ...string) *lcProc {
	t.Helper()
	if bin == "" {
		bin = filepath.Join(root, "usr/local/bin/vm-agent")
	}
	p := &lcProc{log: &syncBuffer{}, port: freePort(t), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", filepath.Join(root, "etc/vm-agent/config.yaml"))
	p.cmd.Env = append(os.Environ(),
		"VM_AGENT_AGENT_STATE_DIR="+filepath.Join(root, "var/lib/vm-agent"),
		"VM_AGENT_AGENT_RUNTIME_DIR="+filepath.Join(root, "run/vm-agent"),
		"VM_AGENT_AGENT_CREDENTIALS_FILE="+filepath.Join(root, "etc/vm-agent/credentials.json"),
		"VM_AGENT_AUTH_JWT_KEYS="+filepath.Join(root, "etc/vm-agent/keys/cp-1.pem"),
		"VM_AGENT_LOG_FILE=", "VM_AGENT_PIKO_SERVER_URL=",
		fmt.Sprintf("VM_AGENT_WEBHOOK_PORT=%d", p.port))
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("agent log:\n%s", p.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/livez", p.port))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("agent exited:\n%s", p.log.String())
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("agent not ready:\n%s", p.log.String())
	return nil
}

func TestLifecycleConfigureSetCheckRejectAndReload(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := lcInstall(t, cp)
	cfgPath := filepath.Join(root, "etc/vm-agent/config.yaml")

	code, out, errOut := runCLI(t, nil, "configure", "--root", root, "--set", "probe.max_concurrent=7",
		"--set", "health.check_interval=45s")
	if code != 0 || !lcExists(cfgPath+".bak") {
		t.Fatalf("set: exit %d\n%s\n%s", code, out, errOut)
	}
	b, _ := os.ReadFile(cfgPath)
	if !strings.Contains(string(b), "max_concurrent: \"7\"") || !strings.Contains(string(b), "check_interval: \"45s\"") {
		t.Errorf("values not written:\n%s", b)
	}
	if lcMode(t, cfgPath) != 0640 {
		t.Errorf("mode after configure: %v", lcMode(t, cfgPath))
	}

	// Invalid value, unknown key: rejected, file untouched.
	before, _ := os.ReadFile(cfgPath)
	for _, set := range []string{"webhook.port=70000", "nosuch.key=1", "piko.endpoint=a/b", "noequals"} {
		code, _, errOut = runCLI(t, nil, "configure", "--root", root, "--set", set)
		if code != 78 {
			t.Errorf("--set %s: exit %d (want 78) %s", set, code, errOut)
		}
	}
	after, _ := os.ReadFile(cfgPath)
	if !bytes.Equal(before, after) {
		t.Error("a rejected --set changed the file")
	}

	// --check: installed file, a given good file, a given bad file.
	if code, out, _ := runCLI(t, nil, "configure", "--root", root, "--check"); code != 0 || !strings.Contains(out, "OK") {
		t.Errorf("--check: exit %d %s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("webhook:\n  port: nope\n"), 0600)
	if code, _, errOut := runCLI(t, nil, "configure", "--check", bad); code != 78 || !strings.Contains(errOut, "bad.yaml:2:") {
		t.Errorf("--check bad: exit %d %s", code, errOut)
	}
	// --show redacts secrets.
	runCLI(t, nil, "configure", "--root", root, "--unset", "piko.token_file", "--set", "piko.token=sekrit-value-1")
	code, out, _ = runCLI(t, nil, "configure", "--root", root, "--show")
	if code != 0 || strings.Contains(out, "sekrit-value-1") || !strings.Contains(out, "[REDACTED]") {
		t.Errorf("--show: exit %d\n%s", code, out)
	}
	// --unset goes back to the default.
	code, _, _ = runCLI(t, nil, "configure", "--root", root, "--unset", "probe.max_concurrent")
	b, _ = os.ReadFile(cfgPath)
	if code != 0 || strings.Contains(string(b), "max_concurrent") {
		t.Errorf("--unset: exit %d\n%s", code, b)
	}

	// A running agent (pid file in the state dir) is told to reload and says so.
	ag := lcRunInstalled(t, root, "")
	code, out, errOut = runCLI(t, nil, "configure", "--root", root, "--set", "log.level=debug", "--json")
	if code != 0 {
		t.Fatalf("set with agent: exit %d\n%s\n%s", code, out, errOut)
	}
	var rep struct {
		Steps []struct{ Name, Status, Detail string } `json:"steps"`
	}
	json.Unmarshal([]byte(out), &rep)
	found := false
	for _, s := range rep.Steps {
		if s.Name == "reload" {
			found = true
			if s.Status != "changed" || !strings.Contains(s.Detail, "reloaded") {
				t.Errorf("reload step: %+v", s)
			}
		}
	}
	if !found {
		t.Errorf("no reload step:\n%s", out)
	}
	if !strings.Contains(ag.log.String(), "configuration reloaded") {
		t.Errorf("agent did not reload")
	}
	ag.cmd.Process.Kill()
	<-ag.done

	// Without an admin socket: SIGHUP to the pid file's agent, outcome from
	// reload.json. This agent also has VM_AGENT_PIKO_TOKEN in its environment,
	// so a piko.token_file in the file makes its configuration invalid: the
	// file validates on its own (written), the agent rejects it (reported).
	ag = lcRunInstalled(t, root, "", "VM_AGENT_AGENT_RUNTIME_DIR="+filepath.Join(t.TempDir(), "elsewhere"),
		"VM_AGENT_PIKO_TOKEN=env-token")
	runCLI(t, nil, "configure", "--root", root, "--unset", "piko.token", "--no-reload")
	code, out, _ = runCLI(t, nil, "configure", "--root", root, "--set", "log.level=warn")
	if code != 0 || !strings.Contains(out, "reloaded the new") {
		t.Errorf("SIGHUP reload: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "configure", "--root", root, "--set", "piko.token_file=/etc/vm-agent/piko.token")
	if code == 0 || !strings.Contains(out, "rejected it") {
		t.Errorf("agent-side rejection not reported: exit %d\n%s", code, out)
	}
}

func TestLifecycleRepairFixesPermissionAndRemovedUnit(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := lcInstall(t, cp)
	creds := filepath.Join(root, "etc/vm-agent/credentials.json")
	unit := filepath.Join(root, "etc/systemd/system/vm-agent.service")
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/vm-agent.service")

	if code, out, _ := runCLI(t, nil, "repair", "--diagnose", "--root", root); code != 0 {
		t.Fatalf("diagnose on a fresh install: exit %d\n%s", code, out)
	}
	os.Chmod(creds, 0644)
	os.Remove(unit)
	os.Remove(wants)
	os.RemoveAll(filepath.Join(root, "var/log/vm-agent"))

	code, out, _ := runCLI(t, nil, "repair", "--diagnose", "--root", root)
	if code == 0 {
		t.Fatalf("diagnose found nothing:\n%s", out)
	}
	for _, want := range []string{"FAIL     permissions", "credentials.json is 0644", "FAIL     unit", "FAIL     enabled", "fix:"} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnose lacks %q:\n%s", want, out)
		}
	}
	if lcMode(t, creds) != 0644 || lcExists(unit) {
		t.Fatal("--diagnose changed something")
	}

	code, out, _ = runCLI(t, nil, "repair", "--root", root, "--json")
	if code != 0 {
		t.Fatalf("repair: exit %d\n%s", code, out)
	}
	if lcMode(t, creds) != 0600 || !lcExists(unit) || !lcExists(wants) || !lcExists(filepath.Join(root, "var/log/vm-agent")) {
		t.Errorf("not repaired:\n%s", out)
	}
	if code, out, _ := runCLI(t, nil, "repair", "--diagnose", "--root", root); code != 0 {
		t.Errorf("diagnose after repair: exit %d\n%s", code, out)
	}
}

func TestLifecycleUninstallRemovesExactlyItsTable(t *testing.T) {
	cp := lcStartFakeCP(t)
	// paths relative to the root, and which flags keep them
	type item struct {
		rel  string
		kept map[string]bool // flag -> kept
	}
	all := map[string]bool{"": false, "--keep-data": false, "--keep-logs": false, "--purge": false}
	keep := func(flags ...string) map[string]bool {
		m := map[string]bool{}
		for k := range all {
			m[k] = false
		}
		for _, f := range flags {
			m[f] = true
		}
		return m
	}
	items := []item{
		{"etc/systemd/system/vm-agent.service", keep()},
		{"etc/systemd/system/multi-user.target.wants/vm-agent.service", keep()},
		{"usr/local/bin/vm-agent", keep()},
		{"usr/local/bin/vm-agent.prev", keep()},
		{"etc/vm-agent/config.yaml", keep()},
		{"etc/vm-agent/config.yaml.bak", keep()},
		{"var/lib/vm-agent/records/r1.json", keep("--keep-data")},
		{"var/log/vm-agent/agent.log", keep("--keep-logs")},
		{"etc/vm-agent/credentials.json", keep("", "--keep-data", "--keep-logs")},
		{"etc/vm-agent/piko.token", keep("", "--keep-data", "--keep-logs")},
		{"var/cache/vm-agent/dl.bin", keep("", "--keep-data", "--keep-logs")},
	}
	for _, flag := range []string{"", "--keep-data", "--keep-logs", "--purge"} {
		name := flag
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			root := lcInstall(t, cp)
			runCLI(t, nil, "configure", "--root", root, "--set", "probe.max_concurrent=3") // makes .bak
			for _, it := range items {
				p := filepath.Join(root, it.rel)
				if !lcExists(p) {
					os.MkdirAll(filepath.Dir(p), 0700)
					os.WriteFile(p, []byte("x"), 0600)
				}
			}
			args := []string{"uninstall", "--root", root}
			if flag != "" {
				args = append(args, flag)
			}
			code, out, errOut := runCLI(t, nil, args...)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
			}
			for _, it := range items {
				if got := lcExists(filepath.Join(root, it.rel)); got != it.kept[flag] {
					t.Errorf("%s: exists=%v, table says kept=%v", it.rel, got, it.kept[flag])
				}
			}
			if !strings.Contains(out, "deregistered") {
				t.Errorf("no deregistration:\n%s", out)
			}
		})
	}
	if n := len(cp.requests(t, "DELETE", "/v1/agents/")); n != 4 {
		t.Errorf("%d deregistrations, want 4", n)
	}

	// Control plane unreachable: a warning, and the uninstall still completes.
	root := lcInstall(t, cp)
	runCLI(t, nil, "configure", "--root", root, "--set", "agent.control_plane_url=http://127.0.0.1:1")
	code, out, _ := runCLI(t, nil, "uninstall", "--root", root)
	if code != 0 || !strings.Contains(out, "WARN     deregister") || lcExists(filepath.Join(root, "usr/local/bin/vm-agent")) {
		t.Errorf("unreachable control plane: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, nil, "uninstall", "--root", root, "--purge", "--keep-data"); code != 64 {
		t.Errorf("--purge --keep-data: exit %d, want 64", code)
	}
}

func TestLifecycleReinstallAfterUninstallRegistersAgain(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := lcInstall(t, cp)
	if code, out, _ := runCLI(t, nil, "uninstall", "--root", root); code != 0 {
		t.Fatalf("uninstall: %s", out)
	}
	code, out, errOut := runCLI(t, nil, "install", "--root", root, "--tenant-id", "tenant-a",
		"--key", lcInstallKey, "--piko-url", cp.URL, "--control-plane-url", cp.URL)
	if code != 0 || len(cp.requests(t, "POST", "/v1/agents/register")) != 2 {
		t.Errorf("re-install after uninstall: exit %d\n%s\n%s", code, out, errOut)
	}
}

func TestLifecycleSubcommandsHaveHelp(t *testing.T) {
	for _, sub := range []string{"install", "configure", "repair", "upgrade", "uninstall"} {
		code, out, _ := runCLI(t, nil, sub, "--help")
		if code != 0 || !strings.Contains(out, "--root") || !strings.Contains(out, "usage: vm-agent "+sub) {
			t.Errorf("%s --help: exit %d\n%s", sub, code, out)
		}
	}
	_, out, _ := runCLI(t, nil, "uninstall", "--help")
	if !strings.Contains(out, "--keep-data") || !strings.Contains(out, "KEPT") {
		t.Errorf("uninstall --help lacks the table:\n%s", out)
	}
}

func TestLifecycleInstallFromPackageUsesThePackagedBinary(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0755)
	b, _ := os.ReadFile(agentBin(t))
	os.WriteFile(filepath.Join(root, "usr/bin/vm-agent"), b, 0755)
	code, out, errOut := runCLI(t, nil, "install", "--root", root, "--from-package", "--tenant-id", "t",
		"--key", lcInstallKey, "--piko-url", cp.URL, "--control-plane-url", cp.URL)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/vm-agent.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/vm-agent run") {
		t.Errorf("unit:\n%s", unit)
	}
	if lcExists(filepath.Join(root, "usr/local/bin/vm-agent")) {
		t.Error("binary copied although the package placed it")
	}
	if code, out, _ := runCLI(t, nil, "repair", "--diagnose", "--root", root); code != 0 {
		t.Errorf("diagnose: %s", out)
	}
}

func TestLifecycleRepairReregistersWithKeyWhenCredentialsAreRefused(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := lcInstall(t, cp)
	credPath := filepath.Join(root, "etc/vm-agent/credentials.json")
	var creds map[string]interface{}
	b, _ := os.ReadFile(credPath)
	json.Unmarshal(b, &creds)
	creds["token"] = "at-revoked"
	b, _ = json.Marshal(creds)
	os.WriteFile(credPath, b, 0600)

	code, out, _ := runCLI(t, nil, "repair", "--diagnose", "--root", root)
	if code == 0 || !strings.Contains(out, "FAIL     credentials") {
		t.Fatalf("diagnose: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "repair", "--root", root)
	if code == 0 || !strings.Contains(out, "--key") {
		t.Errorf("repair without key should say it needs --key: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "repair", "--root", root, "--key", lcInstallKey)
	if code != 0 || !strings.Contains(out, "re-registered") || strings.Contains(out, lcInstallKey) {
		t.Fatalf("repair --key: exit %d\n%s", code, out)
	}
	regs := cp.requests(t, "POST", "/v1/agents/register")
	if len(regs) != 2 || !strings.Contains(string(regs[1].Body), creds["agent_id"].(string)) {
		t.Errorf("re-registration did not keep the agent id: %+v", regs)
	}
	if code, out, _ := runCLI(t, nil, "repair", "--diagnose", "--root", root); code != 0 {
		t.Errorf("diagnose after repair: %s", out)
	}
	lcGrepTree(t, root, lcInstallKey)
}
