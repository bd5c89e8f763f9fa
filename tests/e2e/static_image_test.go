//go:build static
// +build static

// The OCI image of `make docker-build` (scripts/docker-build.sh): loaded into a
// private podman storage (vfs, cgroupfs, file events: no overlay, no systemd
// needed), run with --network host and a mounted /work holding the config and
// JWT keys, and /v1/livez must answer on loopback. VMA_OCI_IMAGE names the
// oci-archive; `make test-docker` builds it and runs this test (also the last
// step of `make test-static`). Without it, or without podman, the test fails.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func imgPodman(t *testing.T, store string) func(args ...string) *exec.Cmd {
	return func(args ...string) *exec.Cmd {
		base := []string{"--root", filepath.Join(store, "storage"), "--runroot", filepath.Join(store, "run"),
			"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"}
		return exec.Command("podman", append(base, args...)...)
	}
}

func TestDockerImageLivez(t *testing.T) {
	archive := os.Getenv("VMA_OCI_IMAGE")
	if archive == "" {
		t.Fatal("VMA_OCI_IMAGE is not set: run through `make test-docker VERSION=...`")
	}
	if _, err := os.Stat(archive); err != nil {
		t.Fatalf("VMA_OCI_IMAGE: %v", err)
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman missing (make test-docker installs it)")
	}
	store := t.TempDir()
	podman := imgPodman(t, store)
	out, err := podman("load", "-q", "-i", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("podman load: %v\n%s", err, out)
	}
	// "Loaded image: localhost/vm-agent:V"
	image := strings.TrimSpace(string(out))
	if i := strings.LastIndex(image, ": "); i >= 0 {
		image = image[i+2:]
	}
	if !strings.HasPrefix(image, "localhost/vm-agent:") {
		t.Fatalf("podman load: unexpected image %q", out)
	}
	lbl, err := podman("image", "inspect", "--format",
		`{{index .Labels "org.opencontainers.image.version"}} {{json .Config.Entrypoint}}`, image).Output()
	if err != nil {
		t.Fatalf("podman image inspect: %v", err)
	}
	if want := strings.TrimPrefix(image, "localhost/vm-agent:") + ` ["/usr/local/bin/vm-agent","run"]`; strings.TrimSpace(string(lbl)) != want {
		t.Errorf("label/entrypoint %q, want %q", strings.TrimSpace(string(lbl)), want)
	}

	work := t.TempDir()
	is := newIssuer(t)
	for _, k := range []string{"ed", "ec", "rsa"} {
		copyInto(t, filepath.Join(is.dir, k+".pem"), filepath.Join(work, k+".pem"), 0600)
	}
	port := freePort(t)
	cfg := fmt.Sprintf("agent:\n  id: agent-1\n  tenant_id: tenant-a\n  state_dir: /work/state\n"+
		"  runtime_dir: /work/run\nwebhook:\n  listen_addr: 127.0.0.1\n  port: %d\n"+
		"auth:\n  issuer: %s\n  jwt_keys: [\"/work/ed.pem\", \"/work/ec.pem\", \"/work/rsa.pem\"]\n",
		port, testIssuer)
	if err := os.WriteFile(filepath.Join(work, "config.yaml"), []byte(cfg), 0600); err != nil {
		t.Fatal(err)
	}
	// podman's default RLIMIT_NOFILE and RLIMIT_NPROC are above what a
	// sandbox may grant (runc: "error setting rlimit type 7" / "type 6",
	// operation not permitted): this process's own open-file limit, and a
	// process limit of 4096 (the sandbox refused even its own 96363).
	var nofile syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); err != nil {
		t.Fatal(err)
	}
	ulimits := []string{"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile.Cur, nofile.Cur),
		"--ulimit", "nproc=4096:4096"}
	name := fmt.Sprintf("vma-e2e-%d", port)
	args := append([]string{"run", "--rm", "--name", name, "--network", "host"}, ulimits...)
	run := podman(append(args, "-v", work+":/work", "-e", "VM_AGENT_LOG_FILE=", image,
		"--config", "/work/config.yaml")...)
	var log bytes.Buffer
	run.Stdout, run.Stderr = &log, &log
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { run.Wait(); close(done) }()
	t.Cleanup(func() {
		podman("kill", name).Run()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			run.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("container log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/livez", port))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("the container exited:\n%s", log.String())
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("/v1/livez of the container did not answer in 60 s")
}
