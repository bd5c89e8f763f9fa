// The host-step harness: a Debian 12 root built once with debootstrap and
// cached in the build tree, booted per test function with systemd-nspawn on
// a throwaway overlay (--volatile=overlay: every change lands in a tmpfs, the
// cached root is never written), sharing the host network so the agent
// inside reaches the test relay on 127.0.0.1. The agent runs inside as a
// transient systemd service and is driven through the relay, as the control
// plane would.
//
// Use:
//
//	h := bootHost(t, "")              // boots, starts the agent, fails with the reason
//	rec := h.Probe(t, `{"steps":[…]}`) // POST /v1/probes with probe:run host:write, waits
//	out := h.C.Run(t, "systemctl", "is-active", "ssh")
//	sums := h.C.Sha256(t, "/etc/passwd", "/etc/group")
//
// Cost (2-core CI machine): the first debootstrap ~2.5 min (logged: "built
// the nspawn root in …"), then a boot plus agent start ~3 s per bootHost.
// Nothing is skipped: without root, debootstrap, systemd-nspawn or an apt
// mirror the test fails and says which.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// What the root holds; a change here (or in nspawnPrepVersion) rebuilds it.
const nspawnSuite = "bookworm"

var nspawnInclude = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "cron", "sudo", "passwd",
	"ca-certificates", "procps",
	// the agent's runtime libraries
	"libcurl4", "libjansson4", "libyaml-0-2", "libssl3",
	// pkg.ensure's rpm managers on a Debian host (the auto-detection must
	// still pick apt), rpmbuild and createrepo_c for the test's local repo
	"rpm", "dnf", "zypper", "createrepo-c",
	// the one-line install (`curl … | sh`, which verifies with minisign)
	"curl", "minisign",
}

// Bumped when prepareRoot changes: the root is then prepared again (cheap)
// without a new debootstrap.
const nspawnPrepVersion = "2"

func nspawnSpec() string {
	return "debootstrap minbase " + nspawnSuite + " " + strings.Join(nspawnInclude, ",")
}

// nspawnRoot returns the cached root, building it under a lock file so
// concurrent test binaries neither race nor build twice. It lives in the
// source tree's build/ whichever binary is tested (the gcc and the ASan runs
// share it); VMA_NSPAWN_ROOT puts it elsewhere.
func nspawnRoot(t *testing.T) string {
	t.Helper()
	root := os.Getenv("VMA_NSPAWN_ROOT")
	if root == "" {
		root = "../../build/nspawn-root"
	}
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(root), 0755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(root+".lock", os.O_CREATE|os.O_RDWR, 0600)
	if err != nil {
		t.Fatalf("nspawn root lock: %v", err)
	}
	defer lock.Close()
	deadline := time.Now().Add(20 * time.Minute)
	for syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatal("nspawn root: another test binary held the build lock for 20 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	bootMarker := filepath.Join(root, ".vma-debootstrap")
	prepMarker := filepath.Join(root, ".vma-prepared")
	if b, err := os.ReadFile(bootMarker); err != nil || string(b) != nspawnSpec()+"\n" {
		nspawnPrereqs(t)
		buildRoot(t, root)
	}
	if b, err := os.ReadFile(prepMarker); err != nil || string(b) != nspawnPrepVersion+"\n" {
		if err := prepareRoot(root); err != nil {
			t.Fatalf("preparing the nspawn root: %v", err)
		}
		if err := os.WriteFile(prepMarker, []byte(nspawnPrepVersion+"\n"), 0644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func nspawnPrereqs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the host-step tests need root (debootstrap, systemd-nspawn)")
	}
	for _, tool := range []string{"debootstrap", "systemd-nspawn", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the host-step tests need %s (scripts/deps.sh installs it)", tool)
		}
	}
}

func buildRoot(t *testing.T, root string) {
	t.Helper()
	out, err := exec.Command("../../scripts/apt-mirror.sh").Output()
	mirror := strings.TrimSpace(string(out))
	if err != nil || mirror == "" {
		t.Fatalf("no Debian mirror for debootstrap (scripts/apt-mirror.sh): %v", err)
	}
	partial := root + ".partial"
	os.RemoveAll(partial)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(nspawnInclude, ","), nspawnSuite, partial, mirror)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("debootstrap %s from %s: %v\n%s", nspawnSuite, mirror, err, tail(log.String(), 4000))
	}
	if err := os.WriteFile(filepath.Join(partial, ".vma-debootstrap"), []byte(nspawnSpec()+"\n"), 0644); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(root)
	if err := os.Rename(partial, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the nspawn root in %s (%s)", time.Since(start).Round(time.Second), root)
}

// prepareRoot makes the root quiet and offline: no timers that take the dpkg
// lock behind a test's back, no network apt sources (tests add their own
// file: repository), a root password nobody needs.
func prepareRoot(root string) error {
	for _, unit := range []string{"apt-daily.timer", "apt-daily-upgrade.timer",
		"systemd-networkd-wait-online.service", "e2scrub_all.timer", "fstrim.timer"} {
		p := filepath.Join(root, "etc/systemd/system", unit)
		os.Remove(p)
		if err := os.Symlink("/dev/null", p); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/apt/sources.list"), nil, 0644); err != nil {
		return err
	}
	// The container shares the host's network: its sshd listens on loopback
	// from the first boot on (the boot moves it to a free port after that).
	cfg := filepath.Join(root, "etc/ssh/sshd_config")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	b = bytes.Replace(b, []byte("#ListenAddress 0.0.0.0\n"), []byte("ListenAddress 127.0.0.1\n"), 1)
	if !bytes.Contains(b, []byte("\nListenAddress 127.0.0.1\n")) {
		return fmt.Errorf("%s: no ListenAddress line to set", cfg)
	}
	if err := os.WriteFile(cfg, b, 0644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("vma-host\n"), 0644)
}

// Container is one booted systemd-nspawn container.
type Container struct {
	Share   string // host dir bound read-only at /opt/vma inside
	Leader  int    // the container's init, for nsenter
	SSHPort int    // sshd inside listens on 127.0.0.1:SSHPort (the host's port 22 is shared)
	cmd     *exec.Cmd
	log     *syncBuffer
	done    chan struct{}
	cgroups []string // the container's own cgroup in each hierarchy, removed at the end
}

// containerCgroups names a fresh cgroup for a container in each hierarchy
// systemd tracks processes in: the unified one, and name=systemd on a
// hybrid host.
func containerCgroups(name string) []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.procs"); err == nil {
		return []string{"/sys/fs/cgroup/vma-nspawn/" + name}
	}
	var out []string
	for _, h := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(h + "/cgroup.procs"); err == nil {
			out = append(out, h+"/vma-nspawn/"+name)
		}
	}
	return out
}

// removeCgroup removes a cgroup directory tree, deepest first (rmdir only:
// cgroup directories hold no files to delete).
func removeCgroup(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}

var containerSeq int64

// bootContainer boots the cached root on a fresh overlay and waits until
// systemd says the system is up; the container is powered off when the test
// ends.
func bootContainer(t *testing.T) *Container {
	t.Helper()
	root := nspawnRoot(t)
	start := time.Now()
	c := &Container{Share: t.TempDir(), log: &syncBuffer{}, done: make(chan struct{})}
	if err := copyFile(agentBin(t), filepath.Join(c.Share, "vm-agent"), 0755); err != nil {
		t.Fatal(err)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("vma-%d-%s", atomic.AddInt64(&containerSeq, 1), hex.EncodeToString(rnd[:]))
	// --keep-unit --register=no: no systemd or machined needed on the host.
	// The container's cgroup is the one nspawn starts in: a fresh one each,
	// or every container's system.slice would be the same directory and one
	// container's systemd would kill another's services.
	c.cgroups = containerCgroups(name)
	wrap := `for d in $CGROUPS; do mkdir -p "$d" && echo $$ > "$d/cgroup.procs" || exit 1; done; exec "$@"`
	c.cmd = exec.Command("sh", "-c", wrap, "sh", "systemd-nspawn", "-D", root, "-M", name,
		"--volatile=overlay", "--register=no", "--keep-unit", "--bind-ro="+c.Share+":/opt/vma",
		"--console=pipe", "-b")
	c.cmd.Env = append(os.Environ(), "CGROUPS="+strings.Join(c.cgroups, " "))
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.stop(t) })

	// nspawn's first child is a short-lived helper that forks the container's
	// init: the leader is nspawn's child once systemctl answers through it
	deadline := time.Now().Add(60 * time.Second)
	state, why := "", ""
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			t.Fatalf("the container exited while booting:\n%s", c.log.String())
		default:
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.cmd.Process.Pid, c.cmd.Process.Pid))
		c.Leader = 0
		if f := strings.Fields(string(b)); len(f) > 0 {
			c.Leader, _ = strconv.Atoi(f[0])
		}
		if c.Leader == 0 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		out, errs, _ := c.exec(nil, 30*time.Second, "systemctl", "is-system-running", "--wait")
		state, why = strings.TrimSpace(out), errs
		// "degraded" (a unit failed) still runs the services the tests need
		if state == "running" || state == "degraded" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if state != "running" && state != "degraded" {
		t.Fatalf("the container did not boot in 60 s (state %q, %s):\n%s", state, why, c.log.String())
	}
	// the network is the host's, whose sshd already has port 22: the
	// container's listens on loopback and a free port, set in the main file
	// (after its Include, so a drop-in's Port still wins, as sshd reads them)
	c.SSHPort = freePort(t)
	c.Run(t, "sed", "-i", "-e", fmt.Sprintf("s/^#Port 22$/Port %d/", c.SSHPort),
		"-e", "s/^#ListenAddress 0.0.0.0$/ListenAddress 127.0.0.1/", "/etc/ssh/sshd_config")
	c.Run(t, "systemctl", "reset-failed")
	c.Run(t, "systemctl", "restart", "ssh")
	if out, _, _ := c.Exec("systemctl", "--failed", "--no-legend"); strings.TrimSpace(out) != "" {
		t.Logf("failed units in the container: %s", out)
	}
	t.Logf("container %s booted in %s", name, time.Since(start).Round(10*time.Millisecond))
	return c
}

func (c *Container) stop(t *testing.T) {
	c.cmd.Process.Signal(syscall.SIGTERM) // nspawn powers the container off
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	for _, d := range c.cgroups {
		removeCgroup(d)
	}
	if t.Failed() {
		t.Logf("container console:\n%s", tail(c.log.String(), 8000))
	}
}

// exec runs argv inside the container (all its namespaces) with stdin and a
// timeout; returns stdout, stderr and the exit code (-1: did not run).
func (c *Container) exec(stdin []byte, timeout time.Duration, argv ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.Leader), "-a", "--"}, argv...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/root"}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

// Exec runs argv inside the container (60 s at most): stdout, stderr, exit code.
func (c *Container) Exec(argv ...string) (string, string, int) {
	return c.exec(nil, 60*time.Second, argv...)
}

// Run runs argv inside the container and fails the test unless it exits 0.
func (c *Container) Run(t *testing.T, argv ...string) string {
	t.Helper()
	out, errs, code := c.Exec(argv...)
	if code != 0 {
		t.Fatalf("in the container: %q: exit %d\n%s%s", argv, code, out, errs)
	}
	return out
}

// Start runs argv inside the container in the background (a transient
// service, so it outlives nsenter); returns the unit name.
func (c *Container) Start(t *testing.T, argv ...string) string {
	t.Helper()
	unit := fmt.Sprintf("vma-bg-%d", atomic.AddInt64(&containerSeq, 1))
	c.Run(t, append([]string{"systemd-run", "--unit=" + unit, "--quiet", "--collect"}, argv...)...)
	return unit
}

// WriteFile writes data to path inside the container with mode (chmod'ed).
func (c *Container) WriteFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	_, errs, code := c.exec(data, 30*time.Second, "sh", "-c", `cat > "$1" && chmod "$2" "$1"`, "sh", path,
		fmt.Sprintf("%o", mode))
	if code != 0 {
		t.Fatalf("writing %s in the container: %s", path, errs)
	}
}

// ReadFile returns a file's content inside the container ("" and false when missing).
func (c *Container) ReadFile(t *testing.T, path string) (string, bool) {
	t.Helper()
	out, _, code := c.Exec("cat", path)
	return out, code == 0
}

// Sha256 returns each path's sha256 inside the container ("missing" when absent).
func (c *Container) Sha256(t *testing.T, paths ...string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for _, p := range paths {
		out, _, code := c.Exec("sha256sum", p)
		if f := strings.Fields(out); code == 0 && len(f) > 0 {
			sums[p] = f[0]
		} else {
			sums[p] = "missing"
		}
	}
	return sums
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Host is a booted container with the agent running inside, reached through
// a relay on the host with tokens of Is.
type Host struct {
	C  *Container
	A  *Agent
	Is *issuer
}

// bootHost boots a container and starts the agent inside (extraYAML is
// merged into its config).
func bootHost(t *testing.T, extraYAML string) *Host {
	t.Helper()
	c := bootContainer(t)
	is := newIssuer(t)
	return &Host{C: c, A: c.StartAgent(t, is, extraYAML), Is: is}
}

// StartAgent runs vm-agent inside the container as the transient service
// vm-agent-e2e (Delegate=yes: it manages its probes' cgroups as it would
// under its own unit), with a relay on the host, and waits for the tunnel.
func (c *Container) StartAgent(t *testing.T, is *issuer, extraYAML string) *Agent {
	t.Helper()
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	keys := filepath.Join(c.Share, "keys")
	if err := os.MkdirAll(keys, 0700); err != nil {
		t.Fatal(err)
	}
	var inside []string
	for _, k := range []string{"ed", "ec", "rsa"} {
		if err := copyFile(filepath.Join(is.dir, k+".pem"), filepath.Join(keys, k+".pem"), 0600); err != nil {
			t.Fatal(err)
		}
		inside = append(inside, `"/opt/vma/keys/`+k+`.pem"`)
	}
	tok := makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1")
	if err := os.WriteFile(filepath.Join(c.Share, "piko.token"), []byte(tok+"\n"), 0600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := fmt.Sprintf("agent:\n  id: agent-1\n  tenant_id: tenant-a\n  state_dir: /var/lib/vma-e2e/state\n"+
		"  runtime_dir: /run/vma-e2e\n"+
		"webhook:\n  listen_addr: 127.0.0.1\n  port: %d\n", port)
	cfg = mergeYAML(cfg, fmt.Sprintf("auth:\n  issuer: %s\n  jwt_keys: [%s]\n  audit_file: /var/lib/vma-e2e/audit.log\n",
		testIssuer, strings.Join(inside, ", ")))
	cfg = mergeYAML(cfg, fmt.Sprintf("piko:\n  server_url: %s\n  endpoint: agent-1\n  token_file: /opt/vma/piko.token\n",
		r.UpstreamURL))
	cfg = mergeYAML(cfg, extraYAML)
	if err := os.WriteFile(filepath.Join(c.Share, "config.yaml"), []byte(cfg), 0600); err != nil {
		t.Fatal(err)
	}
	c.Exec("systemctl", "stop", "vm-agent-e2e")
	c.Exec("systemctl", "reset-failed", "vm-agent-e2e")
	argv := []string{"systemd-run", "--unit=vm-agent-e2e", "--quiet", "-p", "Delegate=yes",
		"-p", "StandardOutput=append:/run/vma-agent.log", "-p", "StandardError=append:/run/vma-agent.log"}
	for _, e := range fastReconnect {
		argv = append(argv, "--setenv="+e)
	}
	c.Run(t, append(argv, "/opt/vma/vm-agent", "run", "--config", "/opt/vma/config.yaml")...)
	a := &Agent{t: t, Dir: c.Share, Config: filepath.Join(c.Share, "config.yaml"), Port: port,
		Base: r.ProxyURL(), Relay: r, Log: &syncBuffer{}, done: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := c.ReadFile(t, "/run/vma-agent.log")
			t.Logf("agent log (in the container):\n%s", tail(log, 8000))
		}
	})
	if !r.WaitConnections(1, 20*time.Second) {
		log, _ := c.ReadFile(t, "/run/vma-agent.log")
		st, _, _ := c.Exec("systemctl", "status", "--no-pager", "vm-agent-e2e")
		t.Fatalf("the agent in the container did not connect to the relay\n%s\nlog:\n%s", st, log)
	}
	return a
}

// Submit posts a probe with a token of scope; returns status, record, body.
func (h *Host) Submit(t *testing.T, scope, body string) (int, probeRec, string) {
	t.Helper()
	status, b, _ := call(t, h.A, "POST", "/v1/probes", h.Is.tok(scope), body)
	var r probeRec
	_ = json.Unmarshal([]byte(b), &r)
	return status, r, b
}

// Probe posts body with scopes "probe:run host:write" and waits (up to 2 min)
// for the probe to end; a refused submission fails the test.
func (h *Host) Probe(t *testing.T, body string) probeRec {
	t.Helper()
	status, r, raw := h.Submit(t, "probe:run host:write", body)
	if status != 201 && status != 200 && status != 202 {
		t.Fatalf("POST /v1/probes: %d %s", status, raw)
	}
	return waitProbe(t, h.A, h.Is, r.ID, 2*time.Minute)
}

// The harness itself: the container boots, the agent inside answers through
// the relay, and what a probe does happens inside the container only.
func TestNspawnHarnessBootsAndRunsTheAgentInside(t *testing.T) {
	h := bootHost(t, "")
	if out := strings.TrimSpace(h.C.Run(t, "systemctl", "is-active", "ssh", "cron", "dbus")); out != "active\nactive\nactive" {
		t.Errorf("services: %q", out)
	}
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", h.C.SSHPort), 5*time.Second)
	if err != nil {
		t.Fatalf("sshd in the container: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	banner := make([]byte, 8)
	if _, err := io.ReadFull(conn, banner); err != nil || !strings.HasPrefix(string(banner), "SSH-2.0") {
		t.Errorf("sshd banner: %q %v", banner, err)
	}
	conn.Close()
	rec := h.Probe(t, `{"steps":[{"type":"exec","argv":["sh","-c","cat /etc/hostname; echo x > /tmp/inside"]}]}`)
	if rec.State != "succeeded" || len(rec.Steps) != 1 || rec.Steps[0]["stdout"] != "vma-host\n" {
		t.Fatalf("probe: %+v", rec)
	}
	if _, err := os.Stat("/tmp/inside"); err == nil {
		t.Error("the probe wrote on the host")
	}
	if got, ok := h.C.ReadFile(t, "/tmp/inside"); !ok || got != "x\n" {
		t.Errorf("in the container: %q %v", got, ok)
	}
}
