// End-to-end tests of `vm-agent status` (agent up, down, socket permission
// denied) and of the admin socket's reload command.
package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStatusAgentUpThenDown(t *testing.T) {
	a := startAgent(t, "health:\n  check_interval: 1s\n")
	hcWaitAdmin(t, a)
	code, out, errOut := runCLI(t, nil, "status", "--config", a.Config)
	if code != 0 || !strings.Contains(out, "vm-agent: running (pid") ||
		!strings.Contains(out, "health:") || !strings.Contains(out, "tunnel:      off") ||
		!strings.Contains(out, "reports:     off") {
		t.Errorf("status up: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, nil, "status", "--json", "--config", a.Config)
	var st map[string]interface{}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, out)
	}
	if st["running"] != true || st["version"] == "" || hcPath(st, "health", "state") == nil ||
		hcNum(st, "pid") != float64(a.Cmd.Process.Pid) {
		t.Errorf("status --json: %v", st)
	}

	a.Signal(syscall.SIGTERM)
	if c := a.Wait(10 * time.Second); c != 0 {
		t.Fatalf("agent exit %d", c)
	}
	if _, err := os.Stat(hcSock(a)); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind after shutdown: %v", err)
	}
	code, out, _ = runCLI(t, nil, "status", "--config", a.Config)
	if code != 3 || !strings.Contains(out, "not running") || !strings.Contains(out, "spool:") {
		t.Errorf("status down: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "status", "--json", "--config", a.Config)
	st = nil
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 3 || st["running"] != false {
		t.Errorf("status --json down: exit %d %v\n%s", code, err, out)
	}
}

func TestStatusAfterKill9ReportsNotRunning(t *testing.T) {
	a := startAgent(t, "")
	hcWaitAdmin(t, a)
	a.Signal(syscall.SIGKILL)
	a.Wait(10 * time.Second)
	// The stale socket file stays; nobody answers on it.
	code, out, _ := runCLI(t, nil, "status", "--config", a.Config)
	if code != 3 || !strings.Contains(out, "not running") {
		t.Errorf("after kill -9: exit %d\n%s", code, out)
	}
	// A new agent replaces the stale socket.
	a = hcRestart(t, a)
	hcWaitAdmin(t, a)
	if code, out, _ := runCLI(t, nil, "status", "--config", a.Config); code != 0 {
		t.Errorf("after restart: exit %d\n%s", code, out)
	}
}

func TestStatusSocketPermissionDenied(t *testing.T) {
	a := startAgent(t, "")
	hcWaitAdmin(t, a)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// As root: ask as an unprivileged user, with a config it can read.
		cfgDir, err := os.MkdirTemp("", "status-cfg-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(cfgDir)
		os.Chmod(cfgDir, 0755)
		b, _ := os.ReadFile(a.Config)
		cfg := filepath.Join(cfgDir, "config.yaml")
		os.WriteFile(cfg, b, 0644)
		cmd = exec.Command(agentBin(t), "status", "--config", cfg)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		// Not root: take our own access to the runtime directory away.
		rt := filepath.Dir(hcSock(a))
		os.Chmod(rt, 0)
		defer os.Chmod(rt, 0700)
		cmd = exec.Command(agentBin(t), "status", "--config", a.Config)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Skipf("cannot run status as another user here: %v", err)
	}
	if code != 77 || !strings.Contains(string(out), "permission denied") {
		t.Errorf("permission denied: exit %d\n%s", code, out)
	}
	if strings.Contains(string(out), "not running") {
		t.Errorf("a permission problem must not look like a stopped agent:\n%s", out)
	}
	if os.Geteuid() == 0 {
		// A root-only config file is a permission problem too, not a config error.
		cmd = exec.Command(agentBin(t), "status", "--config", a.Config)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err = cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 77 ||
			!strings.Contains(string(out), "permission denied reading") {
			t.Errorf("unreadable config: %v\n%s", err, out)
		}
	}
}

func TestStatusHelpAndAdminReload(t *testing.T) {
	code, out, _ := runCLI(t, nil, "status", "--help")
	if code != 0 || !strings.HasPrefix(out, "usage: vm-agent status") || !strings.Contains(out, "--json") {
		t.Errorf("status --help: exit %d\n%s", code, out)
	}
	a := startAgent(t, "")
	hcWaitAdmin(t, a)
	res := hcAdmin(t, hcSock(a), `{"cmd":"reload"}`)
	if res["reloaded"] != true {
		t.Errorf("reload of an unchanged config: %v", res)
	}
	good, _ := os.ReadFile(a.Config)
	os.WriteFile(a.Config, append(good, []byte("bogus_section:\n  x: 1\n")...), 0600)
	res = hcAdmin(t, hcSock(a), `{"cmd":"reload"}`)
	if res["reloaded"] != false || !strings.Contains(res["error"].(string), "bogus_section") {
		t.Errorf("reload of a bad config: %v", res)
	}
	if resp, err := httpGetOK(a.URL("/v1/livez")); err != nil || !resp {
		t.Errorf("agent stopped serving after a rejected reload: %v", err)
	}
}

func httpGetOK(url string) (bool, error) {
	resp, err := http.Get(url)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == 200, nil
}
