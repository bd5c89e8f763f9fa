package e2e

// Crash at every step, the webhook's upgrade (docs/reliability.md): in the
// booted nspawn container, the agent installed as vm-agent.service (`vm-agent
// install`), POST /v1/upgrade starts `vm-agent upgrade --request` in a
// systemd-run transient unit, which upgrades the machine's own binary
// (this build ⇄ the signed 99.0.0 fixture, served from the host over
// loopback) and health-gates it by restarting the service. The test SIGKILLs
// at a random time or just after the journal reaches a random phase: the
// upgrade process alone, its whole transient unit (every process in its
// cgroup), or the agent service. Then the unit is left to end, the service
// restarted (its start settles the journal) and: the installed binary is the
// old or the new one (sha256), 0755, runs `version`; install.json names it;
// no journal, download, temp or request file is left; no process of the
// upgrade outlived it; the service is active, runs the installed file and
// answers /v1/livez. 24 kills (loop capped at 3 min) here, 100 with VMA_SOAK=1.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// whuEnv is the container with the agent installed as a service.
type whuEnv struct {
	c      *Container
	is     *issuer
	port   int
	clash  int               // POSTs refused because the unit name of the previous one was taken
	builds map[string]string // version -> URL
	sums   map[string]string // version -> sha256 hex
	sizes  map[string]int64
}

// in: a path inside the container, seen from the host.
func (e *whuEnv) in(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", e.c.Leader, p)
}

func whuSha(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "missing"
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// whuCgroupPids lists the host pids in every cgroup under the container's
// whose path contains part (recursively; each hierarchy it has).
func (e *whuEnv) cgroupPids(part string) []int {
	seen := map[int]bool{}
	var out []int
	for _, root := range e.c.cgroups {
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || info.Name() != "cgroup.procs" || !strings.Contains(p, part) {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	sort.Ints(out)
	return out
}

func whuCmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// upgradePid: the `vm-agent upgrade --request` process (0: none).
func (e *whuEnv) upgradePid() int {
	for _, pid := range e.cgroupPids("vm-agent-upgrade-") {
		if strings.Contains(whuCmdline(pid), " upgrade --request ") {
			return pid
		}
	}
	return 0
}

func (e *whuEnv) livez() bool {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/livez", e.port))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func (e *whuEnv) waitLivez(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if e.livez() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// installed: the version whose sha256 the installed binary has ("" if neither).
func (e *whuEnv) installed() string {
	sum := whuSha(e.in("/usr/local/bin/vm-agent"))
	for v, s := range e.sums {
		if s == sum {
			return v
		}
	}
	return ""
}

func (e *whuEnv) other(v string) string {
	for o := range e.builds {
		if o != v {
			return o
		}
	}
	return ""
}

// post starts an upgrade to version through the webhook (202 expected).
func (e *whuEnv) post(t *testing.T, to string) {
	t.Helper()
	body, _ := json.Marshal(map[string]interface{}{"version": to, "url": e.builds[to],
		"checksum": "sha256:" + e.sums[to], "allow_downgrade": true})
	a := &Agent{Port: e.port}
	for try := 0; ; try++ {
		code, resp, _ := call(t, a, "POST", "/v1/upgrade", e.is.tok("agent:upgrade"), string(body))
		if code == 202 {
			return
		}
		// systemd-run names the unit after the second: a unit of the
		// previous second not yet collected refuses the name
		if code == 503 && strings.Contains(resp, "already") && try < 20 {
			e.clash++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Fatalf("POST /v1/upgrade %s: %d %s", to, code, resp)
	}
}

// waitUpgradeGone waits until no process is left in any upgrade unit.
func (e *whuEnv) waitUpgradeGone(d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		pids := e.cgroupPids("vm-agent-upgrade-")
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// phase names what a killed upgrade had reached, from what it left.
func (e *whuEnv) phase(from, to string) string {
	return upPhaseLeft(e.in("/"), e.in, to, e.sizes[to], e.installed() == to)
}

// restart: what recovery is, a start of the service (which settles the
// journal); returns how long until /v1/livez answered.
func (e *whuEnv) restart(t *testing.T) time.Duration {
	t.Helper()
	t0 := time.Now()
	e.c.Exec("systemctl", "reset-failed", "vm-agent")
	if out, errs, code := e.c.Exec("systemctl", "restart", "vm-agent"); code != 0 {
		t.Fatalf("systemctl restart vm-agent: %d %s%s", code, out, errs)
	}
	if !e.waitLivez(30 * time.Second) {
		t.Fatalf("the agent does not answer /v1/livez 30 s after its restart\n%s", e.journal())
	}
	return time.Since(t0)
}

// journal: what systemd and the agent logged, for a failure's message.
func (e *whuEnv) journal() string {
	out, _, _ := e.c.Exec("journalctl", "--no-pager", "-n", "60", "-u", "vm-agent", "-u", "vm-agent-upgrade-*")
	log, _ := os.ReadFile(e.in("/var/log/vm-agent/agent.log"))
	return "journal:\n" + out + "\nagent.log:\n" + tail(string(log), 6000)
}

// check: the invariants after a kill and the restart.
func (e *whuEnv) check(t *testing.T, i int, what string) string {
	t.Helper()
	fail := func(f string, a ...interface{}) {
		t.Fatalf("iteration %d (%s): %s\n%s", i, what, fmt.Sprintf(f, a...), e.journal())
	}
	bin := e.in("/usr/local/bin/vm-agent")
	v := e.installed()
	if v == "" {
		fail("the installed binary is neither version (sha256 %s)", whuSha(bin))
	}
	if st, err := os.Stat(bin); err != nil || st.Mode().Perm() != 0755 || !st.Mode().IsRegular() {
		fail("installed binary not a 0755 file: %v %v", err, st.Mode())
	}
	out, errs, code := e.c.Exec("/usr/local/bin/vm-agent", "version", "--json")
	var ver struct{ Version string }
	if code != 0 || json.Unmarshal([]byte(out), &ver) != nil || ver.Version != v {
		fail("version --json: exit %d %q %s (sha256 says %s)", code, out, errs, v)
	}
	if rv, rsum := upRecordQuiet(e.in("/")); rv != v || rsum != "sha256:"+e.sums[v] {
		fail("install.json says %s %s, the binary is %s sha256:%s", rv, rsum, v, e.sums[v])
	}
	var left []string
	ents, _ := os.ReadDir(e.in("/usr/local/bin"))
	for _, d := range ents {
		if n := d.Name(); n != "vm-agent" && n != "vm-agent.prev" {
			left = append(left, "/usr/local/bin/"+n)
		}
	}
	if _, err := os.Stat(e.in("/var/lib/vm-agent/upgrade.journal")); err == nil {
		left = append(left, "upgrade.journal")
	}
	left = append(left, crashTemps(e.in("/var/lib/vm-agent"))...)
	left = append(left, crashTemps(e.in("/etc/vm-agent"))...)
	reqs, _ := filepath.Glob(e.in("/run/vm-agent/upgrade-request.*"))
	left = append(left, reqs...)
	if len(left) > 0 {
		fail("left after the restart: %v", left)
	}
	if pids := e.cgroupPids("vm-agent-upgrade-"); len(pids) > 0 {
		fail("processes of the upgrade still running: %v", pids)
	}
	if st := strings.TrimSpace(e.c.Run(t, "systemctl", "show", "-p", "ActiveState", "--value", "vm-agent")); st != "active" {
		fail("vm-agent.service is %s", st)
	}
	// every vm-agent process of the service is its main one, running the installed file
	mainIn := strings.TrimSpace(e.c.Run(t, "systemctl", "show", "-p", "MainPID", "--value", "vm-agent"))
	var agents []int
	for _, pid := range e.cgroupPids("vm-agent.service") {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.Contains(exe, "vm-agent") {
			agents = append(agents, pid)
		}
	}
	if len(agents) != 1 {
		fail("vm-agent processes in the service: %v (main %s)", agents, mainIn)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", agents[0]))
	if exe != "/usr/local/bin/vm-agent" || whuSha(fmt.Sprintf("/proc/%d/exe", agents[0])) != e.sums[v] {
		fail("the service runs %q, not the installed %s", exe, v)
	}
	if !e.livez() {
		fail("/v1/livez does not answer")
	}
	return v
}

func TestFaultKill9WebhookUpgradeMatrix(t *testing.T) {
	iters, wall := crashBudget(24, 3*time.Minute, 100, 15*time.Minute)
	rng, seed := crashRNG(t)
	c := bootContainer(t)
	e := &whuEnv{c: c, is: newIssuer(t), port: freePort(t), builds: map[string]string{},
		sums: map[string]string{}, sizes: map[string]int64{}}

	// the control plane (registration, events) and the release server on the host's loopback
	cp := lcStartFakeCP(t)
	files := t.TempDir()
	srv := upServer(t, files)
	key := upNewKey(t, t.TempDir(), "release")
	current, err := upVersionOf(agentBin(t))
	if err != nil {
		t.Fatal(err)
	}
	for v, src := range map[string]string{current: agentBin(t), "99.0.0": upFixture(t, "vm-agent-v99.0.0")} {
		dst := filepath.Join(files, "vm-agent-"+v)
		if err := copyFile(src, dst, 0644); err != nil {
			t.Fatal(err)
		}
		key.sign(t, dst, dst+".minisig")
		e.builds[v] = srv + "/files/vm-agent-" + v
		e.sums[v] = strings.TrimPrefix(upSum(t, dst), "sha256:")
		st, _ := os.Stat(dst)
		e.sizes[v] = st.Size()
	}
	if err := os.MkdirAll(filepath.Join(c.Share, "keys"), 0700); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(filepath.Join(e.is.dir, "ed.pem"), filepath.Join(c.Share, "keys", "ed.pem"), 0600); err != nil {
		t.Fatal(err)
	}
	c.Run(t, "/opt/vma/vm-agent", "install", "--no-start", "--tenant-id", "tenant-a", "--agent-id", "agent-1", "--key", lcInstallKey,
		"--piko-url", cp.URL, "--control-plane-url", cp.URL)
	c.Run(t, "/usr/local/bin/vm-agent", "configure", "--no-reload",
		"--set", "auth.jwt_keys=/opt/vma/keys/ed.pem", "--set", "auth.issuer="+testIssuer,
		"--set", fmt.Sprintf("webhook.port=%d", e.port), "--set", "upgrade.health_timeout=30s",
		"--set", "upgrade.public_keys="+key.line(t))
	c.Run(t, "systemctl", "start", "vm-agent")
	if !e.waitLivez(30 * time.Second) {
		t.Fatalf("the installed agent does not answer /v1/livez\n%s", e.journal())
	}
	e.check(t, -1, "installed")

	// one uninterrupted upgrade through the webhook; returns its duration
	normal := func(what string) time.Duration {
		from := e.installed()
		to := e.other(from)
		t0 := time.Now()
		e.post(t, to)
		deadline := time.Now().Add(90 * time.Second)
		for e.upgradePid() == 0 && time.Since(t0) < 5*time.Second {
			time.Sleep(10 * time.Millisecond)
		}
		for time.Now().Before(deadline) {
			if e.upgradePid() == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		d := time.Since(t0)
		if left := e.waitUpgradeGone(10 * time.Second); len(left) > 0 {
			t.Fatalf("%s: the upgrade %s -> %s did not end in 90 s: %v", what, from, to, left)
		}
		if v := e.check(t, -1, what); v != to {
			t.Fatalf("%s: upgrade %s -> %s ended with %s installed\n%s", what, from, to, v, e.journal())
		}
		// and the control plane was told (the last event is this upgrade's)
		evs := cp.requests(t, "POST", "/v1/agents/agent-1/events")
		var ev struct {
			Outcome string `json:"outcome"`
			To      string `json:"to_version"`
		}
		if len(evs) == 0 || json.Unmarshal(evs[len(evs)-1].Body, &ev) != nil || ev.Outcome != "succeeded" || ev.To != to {
			t.Fatalf("%s: upgrade %s -> %s: last event %+v of %d", what, from, to, ev, len(evs))
		}
		return d
	}
	var runTime time.Duration
	runs := 2
	for i := 0; i < runs; i++ {
		runTime += normal("calibration")
	}
	avg := runTime / time.Duration(runs)
	t.Logf("an uninterrupted webhook upgrade (download, checks, self-test, swap, service restart, health gate) takes %s",
		avg.Round(time.Millisecond))

	phases := map[string]int{}
	targets := map[string]int{}
	var kills, newKept, normals int
	var slowest time.Duration
	start := time.Now()
	for i := 0; i < iters && time.Since(start) < wall; i++ {
		from := e.installed()
		to := e.other(from)
		e.post(t, to)
		t0 := time.Now()
		pid := 0
		for pid == 0 && time.Since(t0) < 5*time.Second {
			if pid = e.upgradePid(); pid == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if pid == 0 {
			t.Fatalf("iteration %d: no upgrade process 5 s after the 202\n%s", i, e.journal())
		}
		switch {
		case i%4 == 0: // anywhere in the run (mostly the health gate: it takes seconds)
			time.Sleep(time.Duration(rng.Int63n(int64(avg) + 1)))
		case i%8 == 2: // at once: maybe before it read its request file
		case i%4 == 2: // the download, checks and self-test: the first ~150 ms
			time.Sleep(time.Duration(rng.Int63n(int64(150 * time.Millisecond))))
		default:
			want := []string{"verified", "prev_saved", "swapped", "swapped", "record"}[rng.Intn(5)]
			deadline := time.Now().Add(2 * avg)
			for time.Now().Before(deadline) {
				if want == "record" {
					if rv, _ := upRecordQuiet(e.in("/")); rv == to {
						break
					}
				} else if j := upJournalQuiet(e.in("/")); j != nil && j["phase"] == want {
					break
				}
				time.Sleep(200 * time.Microsecond)
			}
			if want == "swapped" { // the health gate lasts seconds: kill anywhere in it
				time.Sleep(time.Duration(rng.Int63n(int64(avg)/2 + 1)))
			} else {
				time.Sleep(time.Duration(rng.Intn(2000)) * time.Microsecond)
			}
		}
		var target string
		switch r := rng.Intn(10); {
		case r < 5:
			target = "upgrade process"
			_ = syscall.Kill(pid, syscall.SIGKILL)
		case r < 8:
			target = "upgrade unit"
			for _, p := range e.cgroupPids("vm-agent-upgrade-") {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		default:
			target = "agent service"
			for _, p := range e.cgroupPids("vm-agent.service") {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		targets[target]++
		kills++
		// the phase, once the killed process no longer moves (an agent
		// kill leaves the upgrade running: its phase is where it ends)
		for k := 0; k < 200; k++ {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				break
			}
			if target == "agent service" {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if left := e.waitUpgradeGone(90 * time.Second); len(left) > 0 {
			t.Fatalf("iteration %d (%s killed): processes of the upgrade still running after 90 s: %v", i, target, left)
		}
		ph := e.phase(from, to)
		if target == "agent service" {
			ph = "(agent killed, upgrade ran on) " + ph
		}
		phases[ph]++
		if d := e.restart(t); d > slowest {
			slowest = d
		}
		if v := e.check(t, i, fmt.Sprintf("%s killed in %s, %s -> %s", target, ph, from, to)); v == to {
			newKept++
		}
		if i%8 == 7 {
			runTime += normal(fmt.Sprintf("after iteration %d", i))
			runs++
			avg = runTime / time.Duration(runs)
			normals++
		}
	}
	normal("after the last kill")
	normals++
	if kills < 10 {
		t.Fatalf("only %d kills in %s", kills, wall)
	}
	join := func(m map[string]int) string {
		var names []string
		for k := range m {
			names = append(names, k)
		}
		sort.Strings(names)
		var per []string
		for _, k := range names {
			per = append(per, fmt.Sprintf("%s %d", k, m[k]))
		}
		return strings.Join(per, ", ")
	}
	rolledBack, swept := 0, 0
	logs, _ := filepath.Glob(e.in("/var/log/vm-agent/agent.log*"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		rolledBack += strings.Count(string(b), "previous binary restored")
		swept += strings.Count(string(b), "request file(s) of upgrades killed")
	}
	t.Logf("%d kills in %s (seed %d): %s; by phase: %s; the new version was installed after %d of them; "+
		"%d rollbacks by the service's start; %d uninterrupted upgrades succeeded in between; slowest restart to /v1/livez %s; "+
		"%d POSTs retried because the previous upgrade unit's name (per second) was still taken; "+
		"%d starts removed a request file left by an upgrade killed before it read it",
		kills, time.Since(start).Round(100*time.Millisecond), seed, join(targets), join(phases), newKept,
		rolledBack, normals, slowest.Round(time.Millisecond), e.clash, swept)
}
