// End-to-end tests of pkg.ensure with manager dnf and zypper inside the
// booted Debian 12 container (nspawn_harness_test.go), through the relay:
// a pinned install, the second run unchanged, check mode changing nothing
// (rpm -qa and the files identical), latest upgrading 1.0 to 2.0, a held
// rpm/zypp lock waited for, absent removing; yum (a link to dnf, as Fedora
// ships it) driven as dnf. The noarch RPMs are built with
// the root's rpmbuild inside the container and served from a local file:
// repository made with createrepo_c (no network).
//
// Two settings make the Debian container an rpm host as Fedora or SUSE are:
// Debian's rpm package keeps its database in the caller's home
// (%_dbpath %(bash -c 'echo ~/.rpmdb') in /usr/lib/rpm/macros), which rpm and
// dnf read but libzypp does not (zypper uses /var/lib/rpm): /etc/rpm/macros
// puts it at /var/lib/rpm for all three. And zypper cannot cache an empty
// rpm database (rpmdb2solv fails, "Failed to cache rpm database", exit 8),
// which a real system never has: the test installs vma-base first and keeps it.
package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const rpmRepo = "/srv/vma-rpm"

// buildRPM builds name-version-1.noarch.rpm inside the container into the
// repository: /usr/bin/<name> prints its version. No automatic requirements
// (the empty rpm database of a Debian host provides not even /bin/sh).
func buildRPM(t *testing.T, c *Container, name, version string) {
	t.Helper()
	spec := fmt.Sprintf("Name: %s\nVersion: %s\nRelease: 1\nSummary: vm-agent test package\n"+
		"License: MIT\nBuildArch: noarch\nAutoReqProv: no\n%%description\nvm-agent test package\n"+
		"%%install\nmkdir -p %%{buildroot}/usr/bin\n"+
		"printf '#!/bin/sh\\necho %s\\n' > %%{buildroot}/usr/bin/%s\nchmod 755 %%{buildroot}/usr/bin/%s\n"+
		"%%files\n/usr/bin/%s\n", name, version, version, name, name, name)
	path := fmt.Sprintf("/root/%s-%s.spec", name, version)
	c.WriteFile(t, path, []byte(spec), 0644)
	if out, errs, code := c.Exec("rpmbuild", "-bb", "--define", "_rpmdir "+rpmRepo, path); code != 0 {
		t.Fatalf("rpmbuild %s: exit %d\n%s%s", path, code, out, errs)
	}
}

// bootRPMHost boots a container with the local repository configured for
// manager, and vma-base installed.
func bootRPMHost(t *testing.T, manager string) *Host {
	t.Helper()
	h := bootHost(t, "")
	h.C.Run(t, "mkdir", "-p", "/etc/rpm", rpmRepo)
	h.C.WriteFile(t, "/etc/rpm/macros", []byte("%_dbpath /var/lib/rpm\n"), 0644)
	buildRPM(t, h.C, "vma-base", "1.0")
	buildRPM(t, h.C, "vma-hello", "1.0")
	buildRPM(t, h.C, "vma-hello", "2.0")
	h.C.Run(t, "createrepo_c", "-q", rpmRepo)
	// gpgcheck off for this local test repository only
	if manager == "dnf" {
		h.C.Run(t, "mkdir", "-p", "/etc/yum.repos.d")
		h.C.WriteFile(t, "/etc/yum.repos.d/vma.repo", []byte("[vma]\nname=vma\nbaseurl=file://"+rpmRepo+
			"\nenabled=1\ngpgcheck=0\nmetadata_expire=0\n"), 0644)
		h.C.Run(t, "dnf", "-q", "-y", "install", "vma-base")
	} else {
		h.C.Run(t, "mkdir", "-p", "/etc/zypp/repos.d")
		h.C.WriteFile(t, "/etc/zypp/repos.d/vma.repo", []byte("[vma]\nname=vma\nbaseurl=file://"+rpmRepo+
			"\nenabled=1\nautorefresh=1\ngpgcheck=0\ntype=rpm-md\n"), 0644)
		h.C.Run(t, "zypper", "--non-interactive", "-q", "install", "vma-base")
	}
	if out := h.C.Run(t, "rpm", "-q", "vma-base"); !strings.HasPrefix(out, "vma-base-1.0-1") {
		t.Fatalf("vma-base: %q", out)
	}
	return h
}

// holdLock starts a process in the container that holds the lock of kind
// ("fcntl" on path, or "pidfile": path names its live pid) for 3 s, and
// waits until it does.
func holdLock(t *testing.T, c *Container, kind, path string) {
	t.Helper()
	c.Exec("rm", "-f", "/run/vma-locked")
	script := `use Fcntl; open(my $f, ">>", $ARGV[0]) or die $!;
		my $l = pack("s s x4 q q l x4", F_WRLCK, 0, 0, 0, 0); fcntl($f, F_SETLKW, $l) or die $!;
		open(my $m, ">", "/run/vma-locked"); close($m); sleep 3;`
	if kind == "pidfile" {
		// (POSIX::getpid: systemd-run would read "$$" as an escaped "$")
		script = `use POSIX; open(my $f, ">", $ARGV[0]) or die $!; print $f POSIX::getpid(), "\n"; close($f);
			open(my $m, ">", "/run/vma-locked"); close($m); sleep 3; unlink($ARGV[0]);`
	}
	c.Start(t, "perl", "-e", script, path)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, code := c.Exec("test", "-e", "/run/vma-locked"); code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock holder did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHostPkgRpmManagers(t *testing.T) {
	for _, tc := range []struct{ manager, lockKind, lockPath string }{
		{"dnf", "fcntl", "/var/lib/rpm/.rpm.lock"},
		{"zypper", "pidfile", "/run/zypp.pid"},
	} {
		tc := tc
		t.Run(tc.manager, func(t *testing.T) {
			h := bootRPMHost(t, tc.manager)
			run := func(names, extra string) map[string]interface{} {
				t.Helper()
				return step0(t, h.Probe(t, fmt.Sprintf(`{"steps":[{"type":"pkg.ensure","manager":%q,"names":[%s]%s}]}`,
					tc.manager, names, extra)))
			}
			qa := func() string { return h.C.Run(t, "sh", "-c", "rpm -qa | sort") }
			files := []string{"/usr/bin/vma-hello", "/usr/bin/vma-base"}
			want := func(s map[string]interface{}, changed bool, action string, oldV, newV interface{}) {
				t.Helper()
				p := pkgOf(t, s, 0)
				if s["status"] != "succeeded" || s["changed"] != changed || s["manager"] != tc.manager ||
					p["action"] != action || p["old_version"] != oldV || p["new_version"] != newV {
					t.Fatalf("want changed %v, %s %v -> %v: %v", changed, action, oldV, newV, s)
				}
			}

			t.Run("pinned install, then unchanged", func(t *testing.T) {
				want(run(`"vma-hello"`, `,"version":"1.0"`), true, "installed", nil, "1.0-1")
				if out := h.C.Run(t, "vma-hello"); out != "1.0\n" {
					t.Errorf("vma-hello prints %q", out)
				}
				want(run(`"vma-hello"`, `,"version":"1.0"`), false, "none", "1.0-1", "1.0-1")
				want(run(`"vma-hello","vma-base"`, ``), false, "none", "1.0-1", "1.0-1")
			})
			t.Run("check mode changes nothing", func(t *testing.T) {
				beforeQA, beforeSums := qa(), h.C.Sha256(t, files...)
				s := run(`"vma-hello"`, `,"state":"latest","check":true`)
				want(s, true, "upgraded", "1.0-1", "2.0-1")
				if s["check"] != true {
					t.Errorf("check: %v", s)
				}
				s = run(`"vma-hello","vma-base"`, `,"state":"absent","check":true`)
				want(s, true, "removed", "1.0-1", nil)
				if p := pkgOf(t, s, 1); p["action"] != "removed" {
					t.Errorf("check absent vma-base: %v", s)
				}
				s = run(`"vma-hello"`, `,"version":"2.0","check":true`)
				want(s, true, "upgraded", "1.0-1", "2.0")
				if after := qa(); after != beforeQA {
					t.Errorf("check mode changed the rpm database: %q -> %q", beforeQA, after)
				}
				if after := h.C.Sha256(t, files...); fmt.Sprint(after) != fmt.Sprint(beforeSums) {
					t.Errorf("check mode changed files: %v -> %v", beforeSums, after)
				}
			})
			t.Run("latest upgrades, then unchanged", func(t *testing.T) {
				want(run(`"vma-hello"`, `,"state":"latest"`), true, "upgraded", "1.0-1", "2.0-1")
				if out := h.C.Run(t, "vma-hello"); out != "2.0\n" {
					t.Errorf("vma-hello prints %q", out)
				}
				want(run(`"vma-hello"`, `,"state":"latest"`), false, "none", "2.0-1", "2.0-1")
			})
			t.Run("a pin older than the installed version downgrades", func(t *testing.T) {
				want(run(`"vma-hello"`, `,"version":"1.0"`), true, "upgraded", "2.0-1", "1.0-1")
				if out := h.C.Run(t, "vma-hello"); out != "1.0\n" {
					t.Errorf("vma-hello prints %q", out)
				}
			})
			t.Run("a held lock is waited for, absent removes", func(t *testing.T) {
				holdLock(t, h.C, tc.lockKind, tc.lockPath)
				rec := h.Probe(t, fmt.Sprintf(`{"steps":[{"type":"pkg.ensure","manager":%q,"names":["vma-hello"],"state":"absent"}]}`, tc.manager))
				s := step0(t, rec)
				want(s, true, "removed", "1.0-1", nil)
				if waited, _ := s["lock_waited_ms"].(float64); waited < 1000 {
					t.Errorf("lock_waited_ms %v: %v", s["lock_waited_ms"], s)
				}
				found := false
				msgs := probeEvents(t, h, rec.ID)
				for _, m := range msgs {
					found = found || strings.Contains(m, "waiting for the package database: "+tc.lockPath)
				}
				if !found {
					t.Errorf("no lock progress event: %v", msgs)
				}
				if _, _, code := h.C.Exec("test", "-e", "/usr/bin/vma-hello"); code == 0 {
					t.Error("vma-hello still installed")
				}
				want(run(`"vma-hello"`, `,"state":"absent"`), false, "none", nil, nil)
				if out := h.C.Run(t, "rpm", "-q", "vma-base"); !strings.HasPrefix(out, "vma-base-1.0-1") {
					t.Errorf("vma-base: %q", out)
				}
			})
			if tc.manager == "dnf" {
				t.Run("yum is driven as dnf", func(t *testing.T) {
					// what Fedora and EL 8+ ship: yum is a link to dnf
					h.C.Run(t, "ln", "-sf", "dnf-3", "/usr/bin/yum")
					s := step0(t, h.Probe(t, `{"steps":[{"type":"pkg.ensure","manager":"yum","names":["vma-hello"]}]}`))
					if p := pkgOf(t, s, 0); s["status"] != "succeeded" || s["manager"] != "yum" ||
						p["action"] != "installed" || p["new_version"] != "2.0-1" {
						t.Fatalf("yum install: %v", s)
					}
					s = step0(t, h.Probe(t, `{"steps":[{"type":"pkg.ensure","manager":"yum","names":["vma-hello"],"state":"absent"}]}`))
					if p := pkgOf(t, s, 0); s["status"] != "succeeded" || p["action"] != "removed" {
						t.Fatalf("yum remove: %v", s)
					}
				})
			}
			t.Run("unknown package and version fail clearly", func(t *testing.T) {
				if s := run(`"vma-nothere"`, ``); s["status"] != "failed" || s["error_code"] != "package_not_found" {
					t.Errorf("unknown: %v", s)
				}
				if s := run(`"vma-hello"`, `,"version":"9.9"`); s["status"] != "failed" || s["error_code"] != "version_not_found" {
					t.Errorf("unknown version: %v", s)
				}
			})
		})
	}
}
