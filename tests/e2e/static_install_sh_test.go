//go:build static
// +build static

// End-to-end tests of installers/install.sh, the one-line installer, against a
// loopback HTTP server serving a dist/-like directory: the release binary
// (VMA_STATIC_BIN) with its .sha256 and a .minisig made by a throwaway minisign
// key, and the installer with that key pinned by `make dist-install-script`
// (the substitution a release build does). The installer's `vm-agent install`
// goes to a temporary --root with the fake control plane, as the lifecycle
// tests do; nothing is installed onto this host. Every refusal must exit
// non-zero, leave the root absent and leave no temporary directory behind.
package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type ishDist struct {
	dir, script, name, bin string
	key                    upKey
}

// ishArch is the dist/ architecture name of VMA_STATIC_ARCH (default amd64).
func ishArch() string {
	if os.Getenv("VMA_STATIC_ARCH") == "arm64" {
		return "arm64"
	}
	return "amd64"
}

func ishCopy(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// ishMakeDist lays out dist/: the binary, .sha256 (scripts/dist-sign.sh, as
// the release build), .minisig by a fresh key, and install.sh pinned to it.
func ishMakeDist(t *testing.T) *ishDist {
	t.Helper()
	if emulator(t) != "" {
		// The installer execs the binary it verified; without binfmt_misc a
		// foreign one cannot run, so this runs in the native pass of
		// `make test-static` (said in the -v output, not silent).
		t.Skip("install.sh is tested in the native-architecture pass of make test-static")
	}
	d := &ishDist{dir: t.TempDir()}
	d.key = upNewKey(t, t.TempDir(), "release")
	d.name = "vm-agent-linux-" + ishArch()
	d.bin = filepath.Join(d.dir, d.name)
	ishCopy(t, staticBin(t), d.bin, 0755)
	sign := exec.Command("../../scripts/dist-sign.sh", d.bin)
	sign.Env = append(os.Environ(), "SIGN_KEY="+d.key.sec)
	if out, err := sign.CombinedOutput(); err != nil {
		t.Fatalf("dist-sign.sh: %v\n%s", err, out)
	}
	mk := exec.Command("make", "--no-print-directory", "-C", "../..", "dist-install-script",
		"DIST="+d.dir, "SIGN_KEY="+d.key.sec)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make dist-install-script: %v\n%s", err, out)
	}
	d.script = filepath.Join(d.dir, "install.sh")
	s, err := os.ReadFile(d.script)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s), "PUBKEY='"+d.key.line(t)+"'") {
		t.Fatalf("dist/install.sh does not pin the test key %q", d.key.line(t))
	}
	return d
}

type ishResult struct {
	code           int
	out            string
	root, tmpdir   string
	leftoverTmpdir []string
}

// ishRun runs dist/install.sh from the server at url, installing under a fresh
// root; pathPrefix (a directory) goes first in PATH when not empty.
func ishRun(t *testing.T, d *ishDist, url, pathPrefix string) ishResult {
	t.Helper()
	cp := lcStartFakeCP(t)
	r := ishResult{root: filepath.Join(t.TempDir(), "root"), tmpdir: t.TempDir()}
	cmd := exec.Command("sh", d.script, "--base-url", url,
		"--root", r.root, "--tenant-id", "tenant-a", "--key", lcInstallKey,
		"--piko-url", cp.URL, "--control-plane-url", cp.URL)
	path := os.Getenv("PATH")
	if pathPrefix != "" {
		path = pathPrefix + ":" + path
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+r.tmpdir, "PATH="+path)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("install.sh did not finish in 60 s\n%s", buf.String())
	}
	r.code = cmd.ProcessState.ExitCode()
	r.out = buf.String()
	ents, _ := os.ReadDir(r.tmpdir)
	for _, e := range ents {
		r.leftoverTmpdir = append(r.leftoverTmpdir, e.Name())
	}
	return r
}

func ishRefused(t *testing.T, r ishResult, want string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("install.sh exited 0, want a refusal\n%s", r.out)
	}
	if !strings.Contains(r.out, want) {
		t.Errorf("install.sh output lacks %q:\n%s", want, r.out)
	}
	if !strings.Contains(r.out, "nothing installed") && !strings.Contains(r.out, "unsupported architecture") {
		t.Errorf("refusal does not say nothing was installed:\n%s", r.out)
	}
	if lcExists(r.root) {
		t.Errorf("refused, yet %s was created", r.root)
	}
	if len(r.leftoverTmpdir) != 0 {
		t.Errorf("temporary files left behind: %v", r.leftoverTmpdir)
	}
}

func TestStaticInstallShHappyPath(t *testing.T) {
	d := ishMakeDist(t)
	url := upServer(t, d.dir) + "/files/"
	r := ishRun(t, d, url, "")
	if r.code != 0 {
		t.Fatalf("install.sh: exit %d\n%s", r.code, r.out)
	}
	inst := filepath.Join(r.root, "usr/local/bin/vm-agent")
	if upSum(t, inst) != upSum(t, d.bin) {
		t.Errorf("installed %s is not the served %s", inst, d.name)
	}
	if !lcExists(filepath.Join(r.root, "etc/vm-agent/config.yaml")) {
		t.Errorf("no config written under the root\n%s", r.out)
	}
	if len(r.leftoverTmpdir) != 0 {
		t.Errorf("temporary files left behind: %v", r.leftoverTmpdir)
	}
}

func TestStaticInstallShRefusesWrongSha256(t *testing.T) {
	d := ishMakeDist(t)
	// A well-formed sum of other bytes.
	other := filepath.Join(t.TempDir(), d.name)
	if err := os.WriteFile(other, []byte("not the release\n"), 0644); err != nil {
		t.Fatal(err)
	}
	sum := strings.TrimPrefix(upSum(t, other), "sha256:")
	if err := os.WriteFile(d.bin+".sha256", []byte(sum+"  "+d.name+"\n"), 0644); err != nil {
		t.Fatal(err)
	}
	ishRefused(t, ishRun(t, d, upServer(t, d.dir)+"/files/", ""), "sha256 mismatch")

	// Malformed sum file.
	if err := os.WriteFile(d.bin+".sha256", []byte("$(touch /tmp/x)  "+d.name+"\n"), 0644); err != nil {
		t.Fatal(err)
	}
	ishRefused(t, ishRun(t, d, upServer(t, d.dir)+"/files/", ""), "malformed")
}

func TestStaticInstallShRefusesBadSignature(t *testing.T) {
	d := ishMakeDist(t)
	sig, err := os.ReadFile(d.bin + ".minisig")
	if err != nil {
		t.Fatal(err)
	}
	// Flip one character of the signature line (the second line).
	lines := strings.SplitN(string(sig), "\n", 3)
	b := []byte(lines[1])
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	lines[1] = string(b)
	if err := os.WriteFile(d.bin+".minisig", []byte(strings.Join(lines, "\n")), 0644); err != nil {
		t.Fatal(err)
	}
	ishRefused(t, ishRun(t, d, upServer(t, d.dir)+"/files/", ""), "does not verify")
}

func TestStaticInstallShRefusesMissingSignature(t *testing.T) {
	d := ishMakeDist(t)
	if err := os.Remove(d.bin + ".minisig"); err != nil {
		t.Fatal(err)
	}
	ishRefused(t, ishRun(t, d, upServer(t, d.dir)+"/files/", ""), d.name+".minisig failed")
}

func TestStaticInstallShRefusesOtherKey(t *testing.T) {
	d := ishMakeDist(t)
	other := upNewKey(t, t.TempDir(), "other")
	other.sign(t, d.bin, d.bin+".minisig")
	ishRefused(t, ishRun(t, d, upServer(t, d.dir)+"/files/", ""), "does not verify against the pinned key")
}

func TestStaticInstallShRefusesUnknownArch(t *testing.T) {
	d := ishMakeDist(t)
	fake := t.TempDir()
	// uname -m says riscv64; anything else is the real uname.
	script := "#!/bin/sh\n[ \"$1\" = -m ] && { echo riscv64; exit 0; }\nexec /bin/uname \"$@\"\n"
	if err := os.WriteFile(filepath.Join(fake, "uname"), []byte(script), 0755); err != nil {
		t.Fatal(err)
	}
	ishRefused(t, ishRun(t, d, upServer(t, d.dir)+"/files/", fake), "unsupported architecture 'riscv64'")
}
