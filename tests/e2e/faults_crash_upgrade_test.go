package e2e

// Crash at every step, the upgrade (docs/reliability.md): `vm-agent upgrade
// --root` between two signed builds (this one and the 99.0.0 fixture, back
// and forth with --allow-downgrade) SIGKILLed at a random point of its run
// or just after it reached a random phase,
// then the agent's next start (`vm-agent run`, which settles the journal).
// After every restart: the installed binary runs and is the old or the new
// version, the install record and .prev agree with it, nothing of the
// upgrade is left (journal, download, *.tmp) and no process it started
// outlived it. Every tenth iteration and at the end an upgrade runs
// uninterrupted and must succeed. 150 iterations (at most 2 min: the e2e
// suite shares one 20 min timeout) here, 600 with VMA_SOAK=1.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// upJournal is what the test reads of upgrade.journal (nil: none).
func upJournal(t *testing.T, root string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "var/lib/vm-agent/upgrade.journal"))
	if err != nil {
		return nil
	}
	j := upJournalQuiet(root)
	if j == nil {
		t.Fatalf("upgrade.journal does not parse: %q", b)
	}
	return j
}

// upRecord is the install record: version and sha256 of the binary.
func upRecord(t *testing.T, root string) (string, string) {
	t.Helper()
	v, sum := upRecordQuiet(root)
	if v == "" {
		b, err := os.ReadFile(filepath.Join(root, "var/lib/vm-agent/install.json"))
		t.Fatalf("install.json does not parse or names no version: %v %q", err, b)
	}
	return v, sum
}

// upKilledPhase names the phase a killed upgrade had reached, from what it
// left on disk (its process is gone, so that no longer moves): the journal
// phase, the download's size and mode, which binary is installed, and
// whether the record was rewritten.
func upKilledPhase(t *testing.T, e *upEnv, from, to string, size int64) string {
	upJournal(t, e.root) // fails on a journal that does not parse
	v, _ := upVersionOf(filepath.Join(e.root, "usr/local/bin/vm-agent"))
	ph := upPhaseLeft(e.root, func(p string) string { return p }, to, size, v == to && to != from)
	if strings.HasPrefix(ph, "unknown") {
		t.Fatalf("journal with an %s", ph)
	}
	return ph
}

// upPhaseLeft reads the phase from the tree at root; in maps a path the
// journal names to where the test sees it; newInstalled: the binary is the
// new version.
func upPhaseLeft(root string, in func(string) string, to string, size int64, newInstalled bool) string {
	j := upJournalQuiet(root)
	if j == nil {
		if newInstalled {
			return "committed (event report)"
		}
		return "start (before the journal)"
	}
	switch j["phase"] {
	case "downloading":
		st, err := os.Stat(in(j["new"]))
		switch {
		case err != nil || st.Size() < size:
			return "download"
		case st.Mode().Perm()&0100 == 0:
			return "verify (sha256, signature)"
		}
		return "self-test"
	case "verified":
		return "stage (.prev link)"
	case "prev_saved":
		return "swap"
	case "swapped":
		if v, _ := upRecordQuiet(root); v == to {
			return "commit (record written)"
		}
		return "health gate"
	}
	return "unknown phase " + j["phase"]
}

func TestFaultKill9UpgradeMatrix(t *testing.T) {
	iters, wall := crashBudget(150, 2*time.Minute, 600, 20*time.Minute)
	rng, seed := crashRNG(t)
	e := upSetup(t)
	builds := map[string]string{} // version -> served URL
	sums := map[string]string{}
	sizes := map[string]int64{}
	for v, src := range map[string]string{e.current: agentBin(t), "99.0.0": upFixture(t, "vm-agent-v99.0.0")} {
		p := e.publish(t, src, "vm-agent-"+v, &e.key)
		builds[v], sums[v] = e.url+"/files/vm-agent-"+v, upSum(t, p)
		st, _ := os.Stat(p)
		sizes[v] = st.Size()
	}
	other := func(v string) string {
		if v == e.current {
			return "99.0.0"
		}
		return e.current
	}
	args := func(to string) []string {
		return []string{"upgrade", "--root", e.root, "--self-test-timeout", "5", "--version", to,
			"--url", builds[to], "--checksum", sums[to], "--allow-downgrade"}
	}
	// one uninterrupted upgrade to the other version; returns its duration
	normal := func(what string) time.Duration {
		from := upInstalledVersion(t, e.root)
		t0 := time.Now()
		code, out, errOut := runCLI(t, nil, args(other(from))...)
		d := time.Since(t0)
		if code != 0 {
			t.Fatalf("%s: upgrade %s -> %s: exit %d\n%s%s", what, from, other(from), code, out, errOut)
		}
		if v := upInstalledVersion(t, e.root); v != other(from) {
			t.Fatalf("%s: upgrade succeeded but %s is installed", what, v)
		}
		return d
	}
	var runTime time.Duration
	runs := 4
	for i := 0; i < runs; i++ {
		runTime += normal("calibration")
	}
	avg := runTime / time.Duration(runs)
	t.Logf("an uninterrupted upgrade takes %s (download %d/%d bytes, 4 runs of the new binary)",
		avg.Round(time.Millisecond), sizes[e.current], sizes["99.0.0"])

	phases := map[string]int{}
	var kills, groupKills, withChild, rolledBack, newKept, normals int
	var slowest time.Duration
	start := time.Now()
	for i := 0; i < iters && time.Since(start) < wall; i++ {
		from := upInstalledVersion(t, e.root)
		to := other(from)
		cmd := exec.Command(agentBin(t), args(to)...)
		// its own group, so that the cleanup below can reach whatever the
		// kill of the upgrade alone (the test's point) would leave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		// Two kinds of kill: at a random time over the whole run (and a
		// little past it), or shortly after the journal reaches a random
		// phase, so that the short stage, swap and commit windows are hit
		// too, not only the download and the self-tests.
		if i%2 == 0 {
			time.Sleep(time.Duration(rng.Int63n(int64(avg) + 1)))
		} else {
			// "record": the install record rewritten for the new version
			want := []string{"verified", "prev_saved", "swapped", "record"}[rng.Intn(4)]
			deadline := time.Now().Add(3 * avg)
			for time.Now().Before(deadline) {
				if want == "record" {
					if rv, _ := upRecordQuiet(e.root); rv == to {
						break
					}
				} else if j := upJournalQuiet(e.root); j != nil && j["phase"] == want {
					break
				}
				time.Sleep(200 * time.Microsecond)
			}
			if want == "record" { // the commit window is short: the journal's removal
				time.Sleep(time.Duration(rng.Intn(150)) * time.Microsecond)
			} else {
				time.Sleep(time.Duration(rng.Intn(2000)) * time.Microsecond)
			}
		}
		if upChildRunning(pid) {
			withChild++
		}
		// Mostly the upgrade alone (its children must die with it); every
		// fourth time its whole process group, as a service stop would.
		if i%4 == 3 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			groupKills++
		} else {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		err := cmd.Wait()
		killed := false
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == -1 {
			killed = true
		}
		kills++
		ph := "finished before the kill"
		if killed {
			ph = upKilledPhase(t, e, from, to, sizes[to])
		} else if err != nil {
			t.Fatalf("iteration %d: the upgrade %s -> %s failed on its own (%v):\n%s", i, from, to, err, out.String())
		}
		phases[ph]++
		// no process of the killed upgrade (the new binary's self-test)
		// outlives it: PR_SET_PDEATHSIG, not the group kill below
		if !upNoProcessUnder(e.root, 5*time.Second) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("iteration %d (%s): a process started by the killed upgrade is still running", i, ph)
		}
		// the agent's next start settles the journal
		t0 := time.Now()
		ag := lcRunInstalled(t, e.root, "")
		ag.stop()
		if d := time.Since(t0); d > slowest {
			slowest = d
		}
		log := ag.log.String()
		if strings.Contains(log, "previous binary restored") {
			rolledBack++
		}
		upAssertConsistent(t, e, i, ph, from, to, sums, log)
		if v := upInstalledVersion(t, e.root); v == to {
			newKept++
		}
		if i%10 == 9 { // and the kill delays follow the machine's load
			runTime += normal(fmt.Sprintf("iteration %d", i))
			runs++
			avg = runTime / time.Duration(runs)
			normals++
		}
	}
	normal("after the last kill")
	normals++
	upAssertConsistent(t, e, -1, "final", e.current, "99.0.0", sums, "")
	if kills < 20 {
		t.Fatalf("only %d kills in %s", kills, wall)
	}
	var names []string
	for k := range phases {
		names = append(names, k)
	}
	sort.Strings(names)
	var per []string
	for _, k := range names {
		per = append(per, fmt.Sprintf("%s %d", k, phases[k]))
	}
	if code, out, errOut := runCLI(t, nil, "repair", "--diagnose", "--root", e.root); code != 0 {
		t.Errorf("repair --diagnose after the matrix: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("%d kills (%d of the whole process group) in %s (seed %d): %s; %d with a child (self-test) running; after the restart "+
		"the new version was installed %d times, the old one otherwise (%d rolled back by the agent's start); "+
		"%d uninterrupted upgrades succeeded in between; slowest restart %s",
		kills, groupKills, time.Since(start).Round(100*time.Millisecond), seed, strings.Join(per, ", "), withChild,
		newKept, rolledBack, normals, slowest.Round(time.Millisecond))
}

// upJournalQuiet: upJournal for the polling loop (a half-read is retried).
func upJournalQuiet(root string) map[string]string {
	b, err := os.ReadFile(filepath.Join(root, "var/lib/vm-agent/upgrade.journal"))
	var j map[string]string
	if err != nil || json.Unmarshal(b, &j) != nil {
		return nil
	}
	return j
}

// upRecordQuiet: upRecord for the polling loop ("" while it does not parse).
func upRecordQuiet(root string) (string, string) {
	b, _ := os.ReadFile(filepath.Join(root, "var/lib/vm-agent/install.json"))
	var rec struct{ Version, Sha256 string }
	if json.Unmarshal(b, &rec) != nil {
		return "", ""
	}
	return rec.Version, "sha256:" + rec.Sha256
}

// upAssertConsistent: the state after a killed upgrade and the agent's
// next start.
func upAssertConsistent(t *testing.T, e *upEnv, i int, ph, from, to string, sums map[string]string, log string) {
	t.Helper()
	fail := func(f string, a ...interface{}) {
		t.Fatalf("iteration %d (killed in %s, %s -> %s): %s\nagent log:\n%s", i, ph, from, to, fmt.Sprintf(f, a...), log)
	}
	bin := filepath.Join(e.root, "usr/local/bin/vm-agent")
	if j := upJournal(t, e.root); j != nil {
		fail("journal left after the restart: %v", j)
	}
	st, err := os.Stat(bin)
	if err != nil || st.Mode().Perm() != 0755 {
		fail("installed binary missing or not 0755: %v", err)
	}
	v, err := upVersionOf(bin)
	if err != nil || (v != from && v != to) {
		fail("installed binary reports %q (%v): neither %s nor %s", v, err, from, to)
	}
	if sum := upSum(t, bin); sum != sums[v] {
		fail("installed binary reports %s but its sha256 is %s (torn?)", v, sum)
	}
	rv, rsum := upRecord(t, e.root)
	if rv != v || rsum != sums[v] {
		fail("install record says %s %s, the installed binary is %s %s", rv, rsum, v, sums[v])
	}
	prev := bin + ".prev"
	if lcExists(prev) {
		pv, err := upVersionOf(prev)
		if err != nil || (pv != from && pv != to) {
			fail(".prev reports %q (%v)", pv, err)
		}
		if v == to && to != from && pv != from {
			fail("upgraded to %s, but .prev is %s, not the previous %s", v, pv, from)
		}
	}
	var left []string
	ents, _ := os.ReadDir(filepath.Dir(bin))
	for _, d := range ents {
		if n := d.Name(); n != "vm-agent" && n != "vm-agent.prev" {
			left = append(left, n)
		}
	}
	left = append(left, crashTemps(e.root)...)
	if len(left) > 0 {
		fail("left after the restart: %v", left)
	}
}
