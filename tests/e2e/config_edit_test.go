// End-to-end tests of `vm-agent configure` as the one editor of config.yaml:
// edits keep the file's comments, order and untouched lines, and every value
// configure acts on is the effective one (file, defaults, environment).
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigureSetKeepsComments(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	orig := "# fleet config, managed by hand\n" +
		"log:\n" +
		"    level: info   # raise when debugging\n" +
		"    format: text\n" +
		"\n" +
		"# the agent itself\n" +
		"agent:\n" +
		"    tenant_id: tenant-a\n" +
		"    id: agent-1\n" +
		"probe:\n" +
		"    allow:\n" +
		"        - /bin/true\n" +
		"    # max_concurrent: 3\n"
	if err := os.WriteFile(path, []byte(orig), 0600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, nil, "configure", "--config", path, "--no-reload",
		"--set", "log.level=debug", "--set", "probe.max_concurrent=7",
		"--set", "health.check_interval=45s", "--unset", "log.format",
		"--set", "probe.allow=/bin/true,/usr/bin/id")
	if code != 0 {
		t.Fatalf("configure: exit %d\n%s\n%s", code, out, errOut)
	}
	// only the lines of the edited keys change; new keys end their section
	want := strings.NewReplacer(
		"    level: info   #", "    level: \"debug\"   #",
		"    format: text\n", "",
		"        - /bin/true\n", "",
		"    allow:\n", "    allow: [\"/bin/true\", \"/usr/bin/id\"]\n    max_concurrent: \"7\"\n",
	).Replace(orig) + "health:\n    check_interval: \"45s\"\n"
	got, _ := os.ReadFile(path)
	if string(got) != want {
		t.Errorf("edited file:\n%s\nwant:\n%s", got, want)
	}
	// the same edit again changes nothing
	code, out, _ = runCLI(t, nil, "configure", "--config", path, "--no-reload",
		"--set", "log.level=debug", "--set", "probe.allow=/bin/true,/usr/bin/id")
	if code != 0 || !strings.Contains(out, "unchanged") {
		t.Errorf("repeat: exit %d\n%s", code, out)
	}
}

func TestConfigureTildeOnlyFileIsAnEmptyConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte("~\n"), 0600)
	if code, out, errOut := runCLI(t, nil, "configure", "--check", path); code != 0 {
		t.Fatalf("--check of a file holding only ~: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := runCLI(t, nil, "configure", "--config", path, "--no-reload",
		"--set", "agent.id=agent-9")
	if code != 0 {
		t.Fatalf("--set on a file holding only ~: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "configure", "--check", path); code != 0 {
		t.Errorf("edited file does not load: %s", errOut)
	}
}

// The running agent's admin socket is where the effective agent.runtime_dir
// says (here an environment override), not a hard-coded /run/vm-agent.
func TestConfigureReloadUsesEffectiveRuntimeDir(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	path := filepath.Join(dir, "config.yaml")
	text := fmt.Sprintf("agent:\n  id: agent-1\n  tenant_id: tenant-a\n"+
		"webhook:\n  listen_addr: 127.0.0.1\n  port: %d\n", port)
	if err := os.WriteFile(path, []byte(text), 0600); err != nil {
		t.Fatal(err)
	}
	env := []string{"VM_AGENT_AGENT_RUNTIME_DIR=" + filepath.Join(dir, "rt"),
		"VM_AGENT_AGENT_STATE_DIR=" + filepath.Join(dir, "state")}
	a := &Agent{t: t, Dir: dir, Port: port, Config: path, Log: &syncBuffer{}, done: make(chan struct{})}
	a.start(env...)
	if err := a.waitReady(10e9); err != nil {
		t.Fatalf("agent: %v\n%s", err, a.Log.String())
	}
	code, out, errOut := runCLI(t, env, "configure", "--config", path, "--set", "log.level=debug")
	if code != 0 || !strings.Contains(out, "admin socket") || !strings.Contains(out, "reloaded") {
		t.Errorf("configure did not reach the agent at its effective runtime_dir: exit %d\n%s%s",
			code, out, errOut)
	}
}
