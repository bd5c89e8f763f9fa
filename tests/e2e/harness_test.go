// Shared helpers for end-to-end tests: start the real vm-agent binary with a
// generated configuration on a free loopback port, wait for it, read its log.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func agentBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("VM_AGENT_BIN")
	if bin == "" {
		t.Fatal("VM_AGENT_BIN is not set (run through ctest / make test)")
	}
	return bin
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type Agent struct {
	t       *testing.T
	Cmd     *exec.Cmd
	Dir     string // temp dir holding config.yaml and state/
	Config  string // path of config.yaml
	Port    int
	Base    string // when set (through a relay), API calls go here instead of loopback
	Relay   *Relay // the relay the agent's tunnel connects to, if any
	Log     *syncBuffer
	done    chan struct{}
	exitErr error
}

// writeConfig writes a config that puts all state under dir and the webhook
// on port; extra is appended verbatim (YAML sections).
func writeConfig(t *testing.T, dir string, port int, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf("agent:\n  id: agent-1\n  tenant_id: tenant-a\n  state_dir: %s\n"+
		"  runtime_dir: %s\n"+
		"webhook:\n  listen_addr: 127.0.0.1\n  port: %d\n", filepath.Join(dir, "state"),
		filepath.Join(dir, "run"), port)
	cfg = mergeYAML(cfg, extra)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mergeYAML appends extra's keys into base's top-level sections when a section
// exists in both (only two-level YAML, which is all the tests need).
func mergeYAML(base, extra string) string {
	if extra == "" {
		return base
	}
	out := base
	var section string
	for _, line := range strings.Split(strings.TrimRight(extra, "\n"), "\n") {
		if line != "" && line[0] != ' ' {
			section = line
			if strings.Contains(out, "\n"+section+"\n") || strings.HasPrefix(out, section+"\n") {
				continue
			}
			out += line + "\n"
			continue
		}
		if section != "" && (strings.Contains(out, "\n"+section+"\n") || strings.HasPrefix(out, section+"\n")) {
			idx := strings.Index(out, section+"\n") + len(section) + 1
			out = out[:idx] + line + "\n" + out[idx:]
			continue
		}
		out += line + "\n"
	}
	return out
}

// startAgent runs `vm-agent run --config` and waits until /v1/livez answers.
func startAgent(t *testing.T, extraYAML string, env ...string) *Agent {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	a := &Agent{t: t, Dir: dir, Port: port, Log: &syncBuffer{}, done: make(chan struct{})}
	a.Config = writeConfig(t, dir, port, extraYAML)
	a.start(env...)
	if err := a.waitReady(10 * time.Second); err != nil {
		t.Fatalf("agent did not become ready: %v\nlog:\n%s", err, a.Log.String())
	}
	return a
}

func (a *Agent) start(env ...string) {
	a.startArgs([]string{"run", "--config", a.Config}, env...)
}

// startArgs starts the binary with args in a.Dir, output into a.Log, and
// kills it when the test ends.
func (a *Agent) startArgs(args []string, env ...string) {
	cmd := exec.Command(agentBin(a.t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = a.Log
	cmd.Stderr = a.Log
	cmd.Dir = a.Dir
	a.startCmd(cmd)
}

// startCmd starts cmd as the agent and kills it when the test ends.
func (a *Agent) startCmd(cmd *exec.Cmd) {
	a.Cmd = cmd
	if err := a.Cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	go func() {
		a.exitErr = a.Cmd.Wait()
		close(a.done)
	}()
	a.t.Cleanup(func() {
		a.Signal(syscall.SIGKILL)
		<-a.done
		if a.t.Failed() {
			a.t.Logf("agent log:\n%s", a.Log.String())
		}
	})
}

func (a *Agent) URL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", a.Port, path)
}

func (a *Agent) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			return fmt.Errorf("agent exited: %v", a.exitErr)
		default:
		}
		resp, err := http.Get(a.URL("/v1/livez"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no answer on port %d after %s", a.Port, timeout)
}

func (a *Agent) Signal(sig syscall.Signal) {
	if a.Cmd.Process != nil {
		_ = a.Cmd.Process.Signal(sig)
	}
}

// Wait waits for the agent to exit and returns its exit code (-1 on timeout).
func (a *Agent) Wait(timeout time.Duration) int {
	select {
	case <-a.done:
		if a.exitErr == nil {
			return 0
		}
		if ee, ok := a.exitErr.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return -2
	case <-time.After(timeout):
		return -1
	}
}

// WaitLog waits until the agent's output contains substr.
func (a *Agent) WaitLog(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(a.Log.String(), substr) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// runCLI runs vm-agent with args and returns exit code, stdout, stderr.
func runCLI(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(agentBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startNoConfig runs `vm-agent run` without --config in a.Dir.
func (a *Agent) startNoConfig(env ...string) {
	a.startArgs([]string{"run"}, env...)
}
