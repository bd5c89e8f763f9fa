// End-to-end tests of process containment: nothing a step starts outlives
// it (setsid and job-control children included, after timeout, cancel and a
// kill -9 of the agent), and scripts run as another user.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// markerPids lists the processes whose command line contains marker.
func markerPids(marker string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(marker)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitMarkerGone polls /proc until no process carries marker; on timeout it
// kills the survivors (so a failing run leaves nothing behind) and fails.
func waitMarkerGone(t *testing.T, marker string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var left []int
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		if left = markerPids(marker); len(left) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range left {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	t.Fatalf("%d process(es) with marker %s survived the step: %v", len(left), marker, left)
}

// waitMarkerCount polls until at least n processes carry marker.
func waitMarkerCount(t *testing.T, marker string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		if len(markerPids(marker)) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("only %d process(es) with marker %s started, want %d", len(markerPids(marker)), marker, n)
}

// escapingScript starts long sleeps that leave the step's process group: one
// through setsid, two as bash job-control (set -m) background jobs; the
// sleeps carry a unique duration as their marker.
func escapingScript(marker string) string {
	return fmt.Sprintf("set -m\nsetsid sleep %[1]s &\nsleep %[1]s &\n(sleep %[1]s) &\nset +m\nwait\n", marker)
}

func uniqueMarker() string {
	// a sleep duration nobody else uses: "300.<pid><nanos>"
	return fmt.Sprintf("300.%d%d", os.Getpid(), time.Now().UnixNano()%1000000000)
}

// containmentModes runs a test with the host's cgroups and with the
// fallback (no cgroup v2 at probe.cgroup_root: a subreaper shim per step).
var containmentModes = []struct{ name, yaml string }{
	{"cgroup", ""},
	{"subreaper", "  cgroup_root: /nonexistent-cgroup-root\n"},
}

func TestStepChildrenDieWithTimeoutEvenAfterSetsid(t *testing.T) {
	for _, m := range containmentModes {
		t.Run(m.name, func(t *testing.T) { stepChildrenDie(t, m.yaml) })
	}
}

func stepChildrenDie(t *testing.T, modeYAML string) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  cancel_grace: 300ms\n"+modeYAML)
	t.Run("timeout", func(t *testing.T) {
		marker := uniqueMarker()
		_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
			"steps": []interface{}{map[string]interface{}{"type": "script", "interpreter": "/bin/bash",
				"body": escapingScript(marker), "timeout": "2s"}}}))
		if r.ID == "" {
			t.Fatal(raw)
		}
		waitMarkerCount(t, marker, 3, 10*time.Second)
		r = waitProbe(t, a, is, r.ID, 15*time.Second)
		if r.State != "timed_out" {
			t.Fatalf("state %s: %v", r.State, r.Steps)
		}
		waitMarkerGone(t, marker, 3*time.Second)
	})
	t.Run("cancel", func(t *testing.T) {
		marker := uniqueMarker()
		_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
			"steps": []interface{}{map[string]interface{}{"type": "script", "interpreter": "/bin/bash",
				"body": escapingScript(marker)}}}))
		if r.ID == "" {
			t.Fatal(raw)
		}
		waitMarkerCount(t, marker, 3, 10*time.Second)
		if st, b, _ := call(t, a, "DELETE", "/v1/probes/"+r.ID, is.tok("probe:cancel"), ""); st != 202 {
			t.Fatalf("cancel: %d %s", st, b)
		}
		r = waitProbe(t, a, is, r.ID, 10*time.Second)
		if r.State != "canceled" {
			t.Fatalf("state %s: %v", r.State, r.Steps)
		}
		waitMarkerGone(t, marker, 3*time.Second)
	})
	t.Run("leader exits", func(t *testing.T) {
		// the step itself succeeds at once; what it left running must not stay
		marker := uniqueMarker()
		_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
			"steps": []interface{}{map[string]interface{}{"type": "exec",
				"argv": []string{"/bin/sh", "-c", fmt.Sprintf("setsid sleep %s >/dev/null 2>&1 </dev/null & sleep 1", marker)}}}}))
		if r.ID == "" {
			t.Fatal(raw)
		}
		if r = waitProbe(t, a, is, r.ID, 10*time.Second); r.State != "succeeded" {
			t.Fatalf("state %s: %v", r.State, r.Steps)
		}
		c, _ := r.Steps[0]["containment"].(string)
		if (modeYAML == "") == (c == "subreaper") || c == "" || c == "process-group" {
			t.Errorf("containment %q", c)
		}
		waitMarkerGone(t, marker, 3*time.Second)
	})
}

func TestStepProcessesKilledAfterAgentKill9(t *testing.T) {
	for _, m := range containmentModes {
		t.Run(m.name, func(t *testing.T) { stepProcessesKilledAfterKill9(t, m.yaml) })
	}
}

func stepProcessesKilledAfterKill9(t *testing.T, modeYAML string) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  max_concurrent: 1\n"+modeYAML)
	marker := uniqueMarker()
	t.Cleanup(func() {
		for _, p := range markerPids(marker) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
		"steps": []interface{}{map[string]interface{}{"type": "script", "interpreter": "/bin/bash",
			"body": escapingScript(marker)}}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	waitMarkerCount(t, marker, 3, 10*time.Second)
	a.Signal(syscall.SIGKILL)
	a.Wait(10 * time.Second)
	if n := len(markerPids(marker)); n < 3 {
		t.Logf("only %d step process(es) outlived the agent by themselves", n)
	}
	b := restartAgent(t, a, is)
	waitMarkerGone(t, marker, 5*time.Second)
	if got := getProbe(t, b, is, r.ID); got.State != "interrupted" {
		t.Errorf("after kill -9: %+v", got)
	}
}

func TestScriptRunsAsUser(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{
		"steps": []interface{}{
			map[string]interface{}{"type": "script", "user": "65534", "group": "65534",
				"body": "id -u\nid -g\necho \"$0\"\n"},
			map[string]interface{}{"type": "script", "user": "nobody", "interpreter": "/bin/bash",
				"body": "echo \"uid=$(id -u) quote='$1' `echo ok`\"\n"},
		}}))
	if r.ID == "" {
		t.Fatal(raw)
	}
	r = waitProbe(t, a, is, r.ID, 10*time.Second)
	if r.State != "succeeded" {
		t.Fatalf("state %s: %v", r.State, r.Steps)
	}
	out, _ := r.Steps[0]["stdout"].(string)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != "65534" || lines[1] != "65534" {
		t.Fatalf("stdout %q", out)
	}
	// the body came from memory, never from a file on disk
	if !strings.HasPrefix(lines[2], "/proc/self/fd/") {
		t.Errorf("script path %q", lines[2])
	}
	if out2, _ := r.Steps[1]["stdout"].(string); out2 != "uid=65534 quote='' ok\n" {
		t.Errorf("second step stdout %q", out2)
	}
	// nothing was left in the old scripts directory
	ents, _ := os.ReadDir(filepath.Join(a.Dir, "state", "work", "scripts"))
	if len(ents) != 0 {
		t.Errorf("scripts dir holds %d entries", len(ents))
	}
}

// A probe's limits are validated with their JSON path, and a step result
// never claims a limit this host could not apply.
func TestProbeLimitsValidatedAndReportedHonestly(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	cases := []struct{ body, path string }{
		{`{"limits":[],"steps":[{"type":"exec","argv":["true"]}]}`, "limits"},
		{`{"limits":{"pids_maxx":3},"steps":[{"type":"exec","argv":["true"]}]}`, "limits.pids_maxx"},
		{`{"limits":{"pids_max":0},"steps":[{"type":"exec","argv":["true"]}]}`, "limits.pids_max"},
		{`{"limits":{"cpu_max":"50%"},"steps":[{"type":"exec","argv":["true"]}]}`, "limits.cpu_max"},
		{`{"limits":{"memory_max":"1KiB"},"steps":[{"type":"exec","argv":["true"]}]}`, "limits.memory_max"},
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
	_, r, raw := submit(t, a, is, `{"limits":{"memory_max":"64MiB","cpu_max":50,"pids_max":64},"steps":[{"type":"exec","argv":["true"]}]}`)
	if r.ID == "" {
		t.Fatal(raw)
	}
	r = waitProbe(t, a, is, r.ID, 10*time.Second)
	if r.State != "succeeded" {
		t.Fatalf("state %s: %v", r.State, r.Steps)
	}
	s := r.Steps[0]
	applied, _ := s["limits"].(map[string]interface{})
	note, _ := s["limits_unavailable"].(string)
	for _, k := range []string{"memory_max", "cpu_max", "pids_max"} {
		_, ok := applied[k]
		if ok == strings.Contains(note, k) {
			t.Errorf("%s: applied %v, note %q", k, applied, note)
		}
	}
	t.Logf("containment %v, limits %v, unavailable %q", s["containment"], applied, note)
}

// probe.pids_max (like memory_max and cpu_max) applies to the next step after
// a reload, without a restart.
func TestProbeLimitDefaultsApplyOnReload(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "probe:\n  pids_max: 100\n")
	step := func() map[string]interface{} {
		t.Helper()
		_, r, raw := submit(t, a, is, `{"steps":[{"type":"exec","argv":["true"]}]}`)
		if r.ID == "" {
			t.Fatal(raw)
		}
		if r = waitProbe(t, a, is, r.ID, 10*time.Second); r.State != "succeeded" {
			t.Fatalf("state %s: %v", r.State, r.Steps)
		}
		return r.Steps[0]
	}
	s := step()
	_, applied := s["limits"].(map[string]interface{})["pids_max"]
	note, _ := s["limits_unavailable"].(string)
	if !applied && !strings.Contains(note, "pids_max") {
		t.Fatalf("pids_max neither applied nor reported: %v", s)
	}
	cfg, _ := os.ReadFile(a.Config)
	os.WriteFile(a.Config, bytes.Replace(cfg, []byte("pids_max: 100"), []byte("pids_max: 0"), 1), 0600)
	a.Signal(syscall.SIGHUP)
	if !a.WaitLog("configuration reloaded", 5*time.Second) {
		t.Fatalf("reload not applied:\n%s", a.Log.String())
	}
	if s = step(); s["limits"] != nil || s["limits_unavailable"] != nil {
		t.Errorf("after pids_max: 0 the step still has limits: %v", s)
	}
}
