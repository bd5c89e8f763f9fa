package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An upgrade swaps the new binary in, restarts the agent into it (the health
// gate) and dies before it confirms or rolls back (its unit stopped, the OOM
// killer). The agent it restarted saw the upgrade lock held at its start, so
// its own recovery answered "busy"; it must not run on with the never
// confirmed binary until some later restart: it watches the lock and, once
// the journal is orphaned, stops and starts again (same pid), whose recovery
// rolls the binary back. Before the fix, 10 s after the kill the new binary
// was still installed and running with the journal left.
func TestUpgradeDyingInItsHealthGateIsSettledByTheRunningAgent(t *testing.T) {
	e := upSetup(t)
	newURL := e.url + "/files/vm-agent-99.0.0"
	newSum := upSum(t, e.publish(t, upFixture(t, "vm-agent-v99.0.0"), "vm-agent-99.0.0", &e.key))
	bin := filepath.Join(e.root, "usr/local/bin/vm-agent")
	oldSum := upSumQuiet(bin)
	journal := filepath.Join(e.root, "var/lib/vm-agent/upgrade.journal")

	// The upgrade, stopped (SIGSTOP, whole group) once its journal says
	// "swapped": it holds upgrade.lock with the new binary installed.
	var up *exec.Cmd
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			t.Fatal("10 upgrades passed their swap before they could be stopped there")
		}
		up = exec.Command(agentBin(t), "upgrade", "--root", e.root, "--self-test-timeout", "5",
			"--version", "99.0.0", "--url", newURL, "--checksum", newSum)
		up.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var out syncBuffer
		up.Stdout, up.Stderr = &out, &out
		if err := up.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if j := upJournalQuiet(e.root); j != nil && j["phase"] == "swapped" {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		syscall.Kill(-up.Process.Pid, syscall.SIGSTOP)
		if j := upJournalQuiet(e.root); j != nil && j["phase"] == "swapped" && upSumQuiet(bin) == newSum {
			break
		}
		// too late (committed) or too early: let it finish, go back, again
		syscall.Kill(-up.Process.Pid, syscall.SIGCONT)
		up.Wait()
		if upSumQuiet(bin) == newSum {
			if code, o, eo := runCLI(t, nil, "upgrade", "--root", e.root, "--self-test-timeout", "5",
				"--version", e.current, "--url", e.url+"/files/vm-agent-"+e.current,
				"--checksum", upSum(t, e.publish(t, agentBin(t), "vm-agent-"+e.current, &e.key)),
				"--allow-downgrade"); code != 0 {
				t.Fatalf("going back to %s: exit %d\n%s%s", e.current, code, o, eo)
			}
		}
	}
	t.Cleanup(func() { syscall.Kill(-up.Process.Pid, syscall.SIGKILL); up.Wait() })

	// The restarted agent: the new binary, the upgrade still holding its lock.
	ag := lcRunInstalled(t, e.root, "")
	pid := ag.cmd.Process.Pid
	if !strings.Contains(ag.log.String(), "watching it") {
		t.Errorf("the agent did not log the running upgrade:\n%s", ag.log.String())
	}
	if s := upSumQuiet(fmt.Sprintf("/proc/%d/exe", pid)); s != newSum {
		t.Fatalf("the agent runs %s, want the new binary %s", s, newSum)
	}

	// The upgrade dies unfinished.
	syscall.Kill(-up.Process.Pid, syscall.SIGKILL)
	up.Wait()
	t0 := time.Now()
	settled := false
	for time.Since(t0) < 20*time.Second {
		_, err := os.Stat(journal)
		if os.IsNotExist(err) && upSumQuiet(bin) == oldSum && upSumQuiet(fmt.Sprintf("/proc/%d/exe", pid)) == oldSum {
			if r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/livez", ag.port)); err == nil {
				r.Body.Close()
				if r.StatusCode == 200 {
					settled = true
					break
				}
			}
		}
		select {
		case <-ag.done:
			t.Fatalf("the agent exited instead of starting again:\n%s", ag.log.String())
		default:
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !settled {
		_, jerr := os.Stat(journal)
		t.Fatalf("20 s after the upgrade died: installed %s (old %s, new %s), running %s, journal %v:\n%s",
			upSumQuiet(bin), oldSum, newSum, upSumQuiet(fmt.Sprintf("/proc/%d/exe", pid)), jerr, ag.log.String())
	}
	t.Logf("settled %s after the upgrade died: the old binary is installed and runs as pid %d",
		time.Since(t0).Round(time.Millisecond), pid)
	if v, _ := upRecord(t, e.root); v != e.current {
		t.Errorf("install.json names %s, want %s", v, e.current)
	}
	for _, want := range []string{"starting again to settle it", "previous binary restored"} {
		if !strings.Contains(ag.log.String(), want) {
			t.Errorf("agent log lacks %q:\n%s", want, ag.log.String())
		}
	}
	ag.stop()
}
