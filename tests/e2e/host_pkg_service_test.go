// End-to-end tests of the pkg.ensure and service step types inside a booted
// Debian 12 container (nspawn_harness_test.go), through the relay: happy
// path, second run unchanged, check mode changes nothing (checksums), bad
// input 400 with the path, no host:write scope 403, a held dpkg lock waited
// for, reload of a unit that cannot reload refused. Packages come from a
// local file: repository of .debs the test builds (no network).
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildDeb writes name_version_all.deb into dir: /usr/bin/<name> prints its version.
func buildDeb(t *testing.T, dir, name, version, depends string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	for _, d := range []string{"DEBIAN", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0755); err != nil {
			t.Fatal(err)
		}
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: e2e <e2e@test>\n"+
		"Description: vm-agent test package\n", name, version)
	if depends != "" {
		control += "Depends: " + depends + "\n"
	}
	if err := os.WriteFile(filepath.Join(src, "DEBIAN/control"), []byte(control), 0644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "usr/bin", name), []byte("#!/bin/sh\necho "+version+"\n"), 0755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, fmt.Sprintf("%s_%s_all.deb", name, version))
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", src, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s (scripts/deps.sh installs dpkg-dev)", err, b)
	}
}

// scanRepo writes the flat repository's Packages index.
func scanRepo(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("dpkg-scanpackages", "--multiversion", ".", "/dev/null")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-scanpackages: %v (scripts/deps.sh installs dpkg-dev)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Packages"), out, 0644); err != nil {
		t.Fatal(err)
	}
}

// probeEvents reads a finished probe's event stream: the progress messages.
func probeEvents(t *testing.T, h *Host, id string) []string {
	t.Helper()
	req, _ := http.NewRequest("GET", apiURL(h.A, "/v1/probes/"+id+"/events"), nil)
	req.Header.Set("Authorization", "Bearer "+h.Is.tok("probe:read"))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	var msgs []string
	event := ""
	for i := 0; i < 10000 && sc.Scan(); i++ {
		line := sc.Text()
		if strings.HasPrefix(line, "event: ") {
			event = strings.TrimPrefix(line, "event: ")
		}
		if strings.HasPrefix(line, "data: ") && event == "progress" {
			var d map[string]interface{}
			_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d)
			msgs = append(msgs, fmt.Sprint(d["message"]))
		}
		if event == "end" {
			break
		}
	}
	return msgs
}

func step0(t *testing.T, rec probeRec) map[string]interface{} {
	t.Helper()
	if len(rec.Steps) != 1 {
		t.Fatalf("probe %s: %d steps: %+v", rec.ID, len(rec.Steps), rec)
	}
	return rec.Steps[0]
}

// pkgOf returns packages[i] of a pkg.ensure result.
func pkgOf(t *testing.T, s map[string]interface{}, i int) map[string]interface{} {
	t.Helper()
	list, _ := s["packages"].([]interface{})
	if len(list) <= i {
		t.Fatalf("no packages[%d] in %v", i, s)
	}
	return list[i].(map[string]interface{})
}

func errorPath(t *testing.T, body string) (string, string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Path string }
	}
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error.Code, e.Error.Path
}

func TestHostPkgEnsure(t *testing.T) {
	// lists count as stale at once: every real run refreshes them (fast with a file: repo)
	h := bootHost(t, "host:\n  apt_lists_max_age: 0s\n")
	repo := filepath.Join(h.C.Share, "repo")
	if err := os.MkdirAll(repo, 0755); err != nil {
		t.Fatal(err)
	}
	buildDeb(t, repo, "vma-dep", "1.0", "")
	buildDeb(t, repo, "vma-hello", "1.0", "vma-dep")
	scanRepo(t, repo)
	h.C.WriteFile(t, "/etc/apt/sources.list.d/vma.list", []byte("deb [trusted=yes] file:/opt/vma/repo ./\n"), 0644)
	install := `{"steps":[{"type":"pkg.ensure","names":["vma-hello"]}]}`

	t.Run("bad input is 400 with the path", func(t *testing.T) {
		for body, path := range map[string]string{
			`{"steps":[{"type":"pkg.ensure","names":["vma-hello","Bad Name"]}]}`:   "steps[0].names[1]",
			`{"steps":[{"type":"pkg.ensure","names":["-oDebug::x=1"]}]}`:           "steps[0].names[0]",
			`{"steps":[{"type":"pkg.ensure","names":["vma-hello"],"state":"on"}]}`: "steps[0].state",
		} {
			status, _, raw := h.Submit(t, "probe:run host:write", body)
			if _, p := errorPath(t, raw); status != 400 || p != path {
				t.Errorf("%s: %d %s (want 400 at %s)", body, status, raw, path)
			}
		}
	})
	t.Run("without host:write 403", func(t *testing.T) {
		status, _, raw := h.Submit(t, "probe:run", install)
		if code, p := errorPath(t, raw); status != 403 || code != "insufficient_scope" || p != "steps[0].type" {
			t.Errorf("%d %s", status, raw)
		}
	})
	t.Run("install, then unchanged", func(t *testing.T) {
		s := step0(t, h.Probe(t, install))
		p := pkgOf(t, s, 0)
		if s["status"] != "succeeded" || s["changed"] != true || p["action"] != "installed" ||
			p["new_version"] != "1.0" || p["old_version"] != nil || s["lists_refreshed"] != true {
			t.Fatalf("first run: %v", s)
		}
		deps, _ := s["dependencies"].([]interface{})
		if len(deps) != 1 || deps[0].(map[string]interface{})["name"] != "vma-dep" {
			t.Errorf("dependencies: %v", s["dependencies"])
		}
		if out := h.C.Run(t, "vma-hello"); out != "1.0\n" {
			t.Errorf("vma-hello prints %q", out)
		}
		s = step0(t, h.Probe(t, install))
		if p := pkgOf(t, s, 0); s["status"] != "succeeded" || s["changed"] != false || p["action"] != "none" ||
			p["old_version"] != "1.0" {
			t.Errorf("second run: %v", s)
		}
	})
	t.Run("check mode changes nothing", func(t *testing.T) {
		files := []string{"/var/lib/dpkg/status", "/usr/bin/vma-hello", "/usr/bin/vma-dep"}
		before := h.C.Sha256(t, files...)
		s := step0(t, h.Probe(t, `{"steps":[{"type":"pkg.ensure","names":["vma-hello","vma-dep"],"state":"absent","check":true}]}`))
		if s["status"] != "succeeded" || s["changed"] != true || s["check"] != true ||
			pkgOf(t, s, 0)["action"] != "removed" || pkgOf(t, s, 1)["action"] != "removed" {
			t.Errorf("check: %v", s)
		}
		if after := h.C.Sha256(t, files...); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("check mode changed files: %v -> %v", before, after)
		}
	})
	t.Run("latest upgrades", func(t *testing.T) {
		buildDeb(t, repo, "vma-hello", "2.0", "vma-dep")
		scanRepo(t, repo)
		s := step0(t, h.Probe(t, `{"steps":[{"type":"pkg.ensure","names":["vma-hello"],"state":"latest"}]}`))
		if p := pkgOf(t, s, 0); s["status"] != "succeeded" || p["action"] != "upgraded" ||
			p["old_version"] != "1.0" || p["new_version"] != "2.0" {
			t.Errorf("latest: %v", s)
		}
		if out := h.C.Run(t, "vma-hello"); out != "2.0\n" {
			t.Errorf("vma-hello prints %q", out)
		}
	})
	t.Run("a held dpkg lock is waited for", func(t *testing.T) {
		// dpkg and apt lock with fcntl (flock(1) would not conflict with them):
		// hold lock-frontend as dpkg does, for 3 s
		h.C.Start(t, "perl", "-e", `use Fcntl; open(my $f, "+<", "/var/lib/dpkg/lock-frontend") or die $!;
			my $l = pack("s s x4 q q l x4", F_WRLCK, 0, 0, 0, 0); fcntl($f, F_SETLKW, $l) or die $!;
			open(my $m, ">", "/run/vma-locked"); close($m); sleep 3;`)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, _, code := h.C.Exec("test", "-e", "/run/vma-locked"); code == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the lock holder did not start")
			}
			time.Sleep(50 * time.Millisecond)
		}
		start := time.Now()
		rec := h.Probe(t, `{"steps":[{"type":"pkg.ensure","names":["vma-hello"],"state":"absent"}]}`)
		s := step0(t, rec)
		waited, _ := s["lock_waited_ms"].(float64)
		if s["status"] != "succeeded" || pkgOf(t, s, 0)["action"] != "removed" || waited < 1000 {
			t.Fatalf("after %s: %v", time.Since(start), s)
		}
		found := false
		for _, m := range probeEvents(t, h, rec.ID) {
			found = found || strings.Contains(m, "waiting for the package database: /var/lib/dpkg/lock-frontend")
		}
		if !found {
			t.Errorf("no lock progress event: %v", probeEvents(t, h, rec.ID))
		}
		if _, _, code := h.C.Exec("test", "-e", "/usr/bin/vma-hello"); code == 0 {
			t.Error("vma-hello still installed")
		}
	})
	t.Run("unknown package and unsupported manager fail clearly", func(t *testing.T) {
		s := step0(t, h.Probe(t, `{"steps":[{"type":"pkg.ensure","names":["vma-nothere"]}]}`))
		if s["status"] != "failed" || s["error_code"] != "package_not_found" {
			t.Errorf("unknown: %v", s)
		}
		s = step0(t, h.Probe(t, `{"steps":[{"type":"pkg.ensure","names":["vma-hello"],"manager":"apk"}]}`))
		if s["status"] != "failed" || s["error_code"] != "unsupported_manager" {
			t.Errorf("apk: %v", s)
		}
	})
}

func TestHostService(t *testing.T) {
	h := bootHost(t, "")
	h.C.WriteFile(t, "/etc/systemd/system/vma-demo.service",
		[]byte("[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"), 0644)
	h.C.Run(t, "systemctl", "daemon-reload")
	svc := func(action string, check bool) map[string]interface{} {
		t.Helper()
		return step0(t, h.Probe(t, fmt.Sprintf(`{"steps":[{"type":"service","name":"vma-demo","action":%q,"check":%v}]}`, action, check)))
	}
	state := func() string {
		out, _, _ := h.C.Exec("systemctl", "show", "-p", "ActiveState,MainPID,UnitFileState", "vma-demo")
		return out
	}

	t.Run("bad input 400, no host:write 403", func(t *testing.T) {
		status, _, raw := h.Submit(t, "probe:run host:write", `{"steps":[{"type":"service","name":"-H x","action":"start"}]}`)
		if _, p := errorPath(t, raw); status != 400 || p != "steps[0].name" {
			t.Errorf("%d %s", status, raw)
		}
		status, _, raw = h.Submit(t, "probe:run host:read", `{"steps":[{"type":"service","name":"ssh","action":"status"}]}`)
		if code, _ := errorPath(t, raw); status != 403 || code != "insufficient_scope" {
			t.Errorf("%d %s", status, raw)
		}
	})
	t.Run("start, then unchanged", func(t *testing.T) {
		s := svc("start", false)
		after, _ := s["after"].(map[string]interface{})
		if s["status"] != "succeeded" || s["changed"] != true || after["active_state"] != "active" ||
			after["main_pid"].(float64) <= 0 || after["sub_state"] != "running" {
			t.Fatalf("start: %v", s)
		}
		if s := svc("start", false); s["changed"] != false {
			t.Errorf("second start: %v", s)
		}
	})
	t.Run("check mode changes nothing", func(t *testing.T) {
		before := state()
		wants := "/etc/systemd/system/multi-user.target.wants/vma-demo.service"
		link := h.C.Sha256(t, wants)
		for _, a := range []string{"stop", "restart", "enable"} {
			if s := svc(a, true); s["status"] != "succeeded" || s["changed"] != true || s["check"] != true {
				t.Errorf("check %s: %v", a, s)
			}
		}
		if after := state(); after != before {
			t.Errorf("check mode changed the unit: %q -> %q", before, after)
		}
		if after := h.C.Sha256(t, wants); after[wants] != "missing" || link[wants] != "missing" {
			t.Errorf("check-mode enable touched %s: %v -> %v", wants, link, after)
		}
	})
	t.Run("enable, then unchanged", func(t *testing.T) {
		s := svc("enable", false)
		after, _ := s["after"].(map[string]interface{})
		if s["changed"] != true || after["enabled"] != "enabled" {
			t.Errorf("enable: %v", s)
		}
		if out := strings.TrimSpace(h.C.Run(t, "systemctl", "is-enabled", "vma-demo")); out != "enabled" {
			t.Errorf("is-enabled: %s", out)
		}
		if s := svc("enable", false); s["changed"] != false {
			t.Errorf("second enable: %v", s)
		}
	})
	t.Run("reload of a unit that cannot reload is refused", func(t *testing.T) {
		before := state()
		s := svc("reload", false)
		if s["status"] != "failed" || s["error_code"] != "cannot_reload" || !strings.Contains(fmt.Sprint(s["error"]), "CanReload=no") {
			t.Errorf("reload: %v", s)
		}
		if after := state(); after != before {
			t.Errorf("a refused reload changed the unit: %q -> %q", before, after)
		}
		if s := step0(t, h.Probe(t, `{"steps":[{"type":"service","name":"ssh.service","action":"reload"}]}`)); s["status"] != "succeeded" {
			t.Errorf("reload ssh: %v", s)
		}
	})
	t.Run("restart changes the main PID, stop, status", func(t *testing.T) {
		s := svc("restart", false)
		b, _ := s["before"].(map[string]interface{})
		a, _ := s["after"].(map[string]interface{})
		if s["status"] != "succeeded" || s["changed"] != true || b["main_pid"] == a["main_pid"] {
			t.Errorf("restart: %v", s)
		}
		if s := svc("stop", false); s["changed"] != true || s["after"].(map[string]interface{})["active_state"] != "inactive" {
			t.Errorf("stop: %v", s)
		}
		if out, _, _ := h.C.Exec("systemctl", "is-active", "vma-demo"); strings.TrimSpace(out) != "inactive" {
			t.Errorf("is-active: %s", out)
		}
		if s := svc("status", false); s["changed"] != false || s["status"] != "succeeded" {
			t.Errorf("status: %v", s)
		}
		if s := step0(t, h.Probe(t, `{"steps":[{"type":"service","name":"vma-nothere","action":"start"}]}`)); s["error_code"] != "not_found" {
			t.Errorf("missing unit: %v", s)
		}
	})
}
