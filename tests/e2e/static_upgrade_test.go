//go:build static
// +build static

// Upgrade from the dynamically linked build (VM_AGENT_BIN, build/vm-agent) to
// the static release binary (VMA_STATIC_BIN) and back, through the normal
// signed path of `vm-agent upgrade` (the helpers of upgrade_test.go: a
// throwaway minisign key trusted in upgrade.public_keys, the artifact and its
// .minisig served on loopback), under a temporary --root. After each step the
// installed file's linkage is the expected one (PT_INTERP present or not),
// `version --json` runs, and the installed agent answers /v1/livez.
package e2e

import (
	"debug/elf"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// suHasInterp reports whether the ELF file names a dynamic loader.
func suHasInterp(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

func suVersionJSON(t *testing.T, bin string) map[string]interface{} {
	t.Helper()
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("%s version --json: %v", bin, err)
	}
	var v map[string]interface{}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	return v
}

func TestStaticUpgradeDynamicToStaticAndBack(t *testing.T) {
	if emulator(t) != "" {
		t.Skip("the dynamic/static upgrade is tested in the native-architecture pass of make test-static")
	}
	static := staticBin(t)
	e := upSetup(t)
	inst := filepath.Join(e.root, "usr/local/bin/vm-agent")
	if !suHasInterp(t, inst) {
		t.Fatalf("the installed VM_AGENT_BIN is expected to be the dynamic build")
	}
	if suHasInterp(t, static) {
		t.Fatalf("VMA_STATIC_BIN %s names a dynamic loader: not the static build", static)
	}
	steps := []struct {
		name, src  string
		wantInterp bool
	}{
		{"to-static", static, false},
		{"to-dynamic", agentBin(t), true},
	}
	for _, s := range steps {
		v := suVersionJSON(t, s.src)["version"].(string)
		p := e.publish(t, s.src, "vm-agent-"+s.name, &e.key)
		code, out := e.upgrade(t, "--version", v, "--url", e.url+"/files/vm-agent-"+s.name,
			"--checksum", upSum(t, p), "--allow-downgrade", "--json")
		if code != 0 {
			t.Fatalf("%s: upgrade exit %d\n%s", s.name, code, out)
		}
		if upSum(t, inst) != upSum(t, p) {
			t.Fatalf("%s: the installed binary is not the published one", s.name)
		}
		if got := suHasInterp(t, inst); got != s.wantInterp {
			t.Fatalf("%s: installed binary PT_INTERP=%v, want %v", s.name, got, s.wantInterp)
		}
		if a := suVersionJSON(t, inst)["arch"]; a != wantArch() {
			t.Errorf("%s: version --json arch %v", s.name, a)
		}
		p2 := lcRunInstalled(t, e.root, "") // waits for /v1/livez 200 or fails
		p2.cmd.Process.Signal(syscall.SIGTERM)
		<-p2.done
	}
}
