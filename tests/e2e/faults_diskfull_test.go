package e2e

// Disk full (docs/reliability.md): the whole state dir on a small ext4 disk
// (a loop-mounted image the test makes, no reserved blocks: a real
// filesystem, which the health collector reports; tmpfs it leaves out as a
// pseudo filesystem), health reports going to a control plane that answers
// 500 so that the spool fills. The test fills the disk to the last block and
// checks: a probe submission is refused with a clear error (or, when taken,
// ends with record_write_failed and never reads back torn); health names the
// disk; every spool entry on disk before the disk filled is still there,
// whole; the agent's CPU time over 5 s at full disk stays near zero and its
// log does not flood (a few lines per health round). Then the space is freed and the control plane heals:
// probes run again, the disk reason leaves the health, and every spooled
// report is accepted exactly once.

import (
	"encoding/json"
	"errors"
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

// procCPU is a process's user+system CPU time (clock ticks, 100 per second on Linux).
func procCPU(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// fillDisk writes into path until the filesystem refuses (ENOSPC); returns the bytes written.
func fillDisk(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for size := len(buf); size > 0; {
		w, err := f.Write(buf[:size])
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			size /= 2 // the last blocks
			continue
		}
		if err != nil {
			t.Fatalf("filling the disk: %v", err)
		}
	}
	_ = f.Sync()
	return n
}

func TestFaultDiskFullStateDir(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing (e2fsprogs, mount: scripts/deps.sh)", tool)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(t.TempDir(), "disk.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-N", "512", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	mnt := filepath.Join(dir, "state")
	if err := os.Mkdir(mnt, 0700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop (needs root and loop devices): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	os.Remove(filepath.Join(mnt, "lost+found"))
	if err := os.Chmod(mnt, 0700); err != nil {
		t.Fatal(err)
	}

	cp := hcFakeCP(t)
	hcFault(t, cp, "/v1/agents/", "500", 0)
	is := newIssuer(t)
	port := freePort(t)
	a := &Agent{t: t, Dir: dir, Port: port, Log: &syncBuffer{}, done: make(chan struct{})}
	a.Config = writeConfig(t, dir, port, mergeYAML(is.yaml(), hcConfig(cp, hcWriteCreds(t, 0600))))
	a.start()
	if err := a.waitReady(10 * time.Second); err != nil {
		t.Fatalf("agent did not become ready: %v\n%s", err, a.Log.String())
	}
	hcWaitAdmin(t, a)
	probe := func() (int, string, string) {
		st, r, raw := submit(t, a, is, `{"steps":[{"type":"exec","argv":["echo","hello"]}]}`)
		return st, r.ID, raw
	}
	if st, id, raw := probe(); id == "" {
		t.Fatalf("probe before the disk filled: %d %s", st, raw)
	} else if rec := waitProbe(t, a, is, id, 20*time.Second); rec.State != "succeeded" {
		t.Fatalf("probe before the disk filled: %+v", rec)
	}
	spool := filepath.Join(mnt, "health", "spool")
	deadline := time.Now().Add(20 * time.Second)
	for len(hcSpoolEntries(t, spool)) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the spool never filled: %v", hcSpoolEntries(t, spool))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// --- the disk fills
	filler := filepath.Join(mnt, "filler")
	n := fillDisk(t, filler)
	before := hcSpoolEntries(t, spool)
	var sv syscall.Statfs_t
	_ = syscall.Statfs(mnt, &sv)
	t.Logf("disk filled with %d KiB (%d blocks free), %d spool entries on disk", n>>10, sv.Bfree, len(before))
	st, id, raw := probe()
	switch {
	case id == "" && st >= 400:
		t.Logf("probe at full disk refused: %d %s", st, strings.TrimSpace(raw))
		// a stable code a control plane can act on, never a bare internal error
		if !(st == 507 && strings.Contains(raw, `"record_write_failed"`)) &&
			!(st == 500 && strings.Contains(raw, `"audit_unavailable"`)) {
			t.Errorf("refusal at full disk: %d %s, want 507 record_write_failed", st, raw)
		}
	case id != "":
		rec := waitProbe(t, a, is, id, 20*time.Second)
		_, body, _ := call(t, a, "GET", "/v1/probes/"+id, is.tok("probe:read"), "")
		if rec.State != "failed" || !strings.Contains(body, "record_write_failed") {
			t.Fatalf("probe accepted at full disk ended %s: %s", rec.State, body)
		}
		t.Logf("probe at full disk accepted (%d) and failed with record_write_failed", st)
	default:
		t.Fatalf("probe at full disk: %d %s", st, raw)
	}
	h := waitHealthReason(t, a, is, "disk "+mnt, 15*time.Second)
	t.Logf("health at full disk: %v %v", h["state"], h["reasons"])

	// 5 s at full disk with no request from the test (each would log its
	// unwritable audit line): CPU and log volume of the agent's own work
	logBefore := strings.Count(a.Log.String(), "\n")
	cpu0, t0 := procCPU(t, a.Cmd.Process.Pid), time.Now()
	time.Sleep(5 * time.Second)
	cpu := procCPU(t, a.Cmd.Process.Pid) - cpu0
	wall := time.Since(t0)
	pct := float64(cpu) * 10 * 100 / float64(wall.Milliseconds()) // a tick is 10 ms
	logLines := strings.Count(a.Log.String(), "\n") - logBefore
	t.Logf("at full disk for %s: agent CPU %d ticks (%.1f %% of a core), %d log lines", wall.Round(100*time.Millisecond),
		cpu, pct, logLines)
	if pct > 10 {
		t.Errorf("the agent spins at full disk: %.1f %% CPU", pct)
	}
	if logLines > 40 { // one or two lines per health round (1 s) and failed write
		t.Errorf("%d log lines in %s at full disk:\n%s", logLines, wall, tail(a.Log.String(), 3000))
	}
	after := hcSpoolEntries(t, spool)
	for name, rid := range before {
		if after[name] != rid {
			t.Errorf("spool entry %s (%s) lost or changed at full disk", name, rid)
		}
	}

	// --- space freed, control plane back
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	hcClearFaults(t, cp)
	freed := time.Now()
	if st, id, raw := probe(); id == "" {
		t.Fatalf("probe after the space was freed: %d %s", st, raw)
	} else if rec := waitProbe(t, a, is, id, 20*time.Second); rec.State != "succeeded" {
		t.Fatalf("probe after the space was freed: %+v", rec)
	}
	probeBack := time.Since(freed)
	deadline = time.Now().Add(20 * time.Second)
	for {
		h = healthJSON(t, a, is)
		if !strings.Contains(fmt.Sprint(h["reasons"]), "disk "+mnt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the disk reason stays after the space was freed: %v", h["reasons"])
		}
		time.Sleep(200 * time.Millisecond)
	}
	healthBack := time.Since(freed)
	accepted := map[string]int{}
	deadline = time.Now().Add(30 * time.Second)
	for {
		accepted = map[string]int{}
		for _, r := range hcRequests(t, cp) {
			var rep hcReport
			if r.Method == "POST" && r.Status == 202 && json.Unmarshal(r.Body, &rep) == nil {
				accepted[rep.ID]++
			}
		}
		missing := 0
		for _, rid := range before {
			if accepted[rid] == 0 {
				missing++
			}
		}
		if missing == 0 && len(hcSpoolEntries(t, spool)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d reports spooled before the disk filled never arrived; spool: %v", missing,
				len(before), hcSpoolEntries(t, spool))
		}
		time.Sleep(300 * time.Millisecond)
	}
	for name, rid := range before {
		if accepted[rid] != 1 {
			t.Errorf("spooled report %s (%s) accepted %d times", rid, name, accepted[rid])
		}
	}
	t.Logf("after the space was freed: a probe ran in %s, the disk reason left the health after %s, "+
		"the %d reports spooled before the disk filled arrived once each (spool empty after %s)",
		probeBack.Round(time.Millisecond), healthBack.Round(time.Millisecond), len(before),
		time.Since(freed).Round(100*time.Millisecond))
}
