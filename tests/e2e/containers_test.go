// Containers (issue 14): the agent drives a real engine — Podman's Docker
// compatible service, started here on a private socket with private storage —
// through the relay and the tunnel. The image is built locally from
// busybox-static (no registry is reachable).
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const ctrImage = "localhost/vma-busybox:1"

// podmanEngine is one `podman system service` of the test's own.
type podmanEngine struct {
	t    *testing.T
	dir  string
	Sock string
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// The machine is itself a container: cgroups v1/hybrid (crun refuses, runc
// works, cgroupfs manager), no systemd journal (file events), and a hard
// RLIMIT_NOFILE below Podman's default container ulimit.
const podmanConf = `[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`

func (p *podmanEngine) args(extra ...string) []string {
	return append([]string{"--root", filepath.Join(p.dir, "root"), "--runroot",
		filepath.Join(p.dir, "run"), "--storage-driver", "vfs", "--tmpdir",
		filepath.Join(p.dir, "tmp")}, extra...)
}

func (p *podmanEngine) env() []string {
	return append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(p.dir, "containers.conf"))
}

// cli runs podman against the same storage (the test's own tool, e.g. to make
// a foreign container the agent must refuse).
func (p *podmanEngine) cli(args ...string) string {
	p.t.Helper()
	c := exec.Command("podman", p.args(args...)...)
	c.Env = p.env()
	out, err := c.CombinedOutput()
	if err != nil {
		p.t.Fatalf("podman %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func startPodman(t *testing.T) *podmanEngine {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatalf("podman is required (scripts/deps.sh installs it): %v", err)
	}
	p := &podmanEngine{t: t, dir: t.TempDir()}
	p.Sock = filepath.Join(p.dir, "podman.sock")
	os.MkdirAll(filepath.Join(p.dir, "tmp"), 0700)
	if err := os.WriteFile(filepath.Join(p.dir, "containers.conf"), []byte(podmanConf), 0600); err != nil {
		t.Fatal(err)
	}
	p.start()
	t.Cleanup(p.stop)
	// first (cleanups run last-in first-out): no container outlives the test
	t.Cleanup(func() {
		c := exec.Command("podman", p.args("rm", "-f", "-a", "-t", "0")...)
		c.Env = p.env()
		if out, err := c.CombinedOutput(); err != nil {
			t.Logf("podman rm -a: %v %s", err, out)
		}
	})
	return p
}

func (p *podmanEngine) start() {
	p.t.Helper()
	p.log = &syncBuffer{}
	p.cmd = exec.Command("podman", p.args("system", "service", "--time=0", "unix://"+p.Sock)...)
	p.cmd.Env = p.env()
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, _ := socketGet(p.Sock, "/_ping"); st == 200 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("podman service did not answer on %s:\n%s", p.Sock, p.log.String())
}

func (p *podmanEngine) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

// buildImage imports a busybox rootfs as ctrImage.
func (p *podmanEngine) buildImage() {
	p.t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		p.t.Fatalf("busybox-static is required: %v", err)
	}
	root := filepath.Join(p.dir, "rootfs")
	os.MkdirAll(filepath.Join(root, "bin"), 0755)
	os.MkdirAll(filepath.Join(root, "www"), 0755)
	data, err := os.ReadFile(bb)
	if err != nil {
		p.t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0755)
	for _, a := range []string{"sh", "echo", "sleep", "httpd", "cat", "env", "ls", "nc"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	tarPath := filepath.Join(p.dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", root, "-cf", tarPath, ".").CombinedOutput(); err != nil {
		p.t.Fatalf("tar: %v %s", err, out)
	}
	p.cli("import", tarPath, ctrImage)
}

// socketGet is a GET straight on the engine's socket.
func socketGet(sock, path string) (int, string) {
	c := unixClient(sock)
	resp, err := c.Get("http://d" + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func jsonOf(t *testing.T, s string) map[string]interface{} {
	t.Helper()
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %v: %q", err, s)
	}
	return m
}

func errCode(t *testing.T, body string) (string, string) {
	t.Helper()
	e, _ := jsonOf(t, body)["error"].(map[string]interface{})
	c, _ := e["code"].(string)
	p, _ := e["path"].(string)
	return c, p
}

func TestContainers(t *testing.T) {
	start := time.Now()
	eng := startPodman(t)
	eng.buildImage()
	is := newIssuer(t)
	a := startAuthAgent(t, is, fmt.Sprintf("containers:\n  socket: %s\nhealth:\n  check_interval: 1s\n", eng.Sock))
	rw := func() string { return is.tok("containers:read containers:write") }

	t.Run("bad specs answer 400 with the JSON path", func(t *testing.T) {
		cases := []struct{ body, path string }{
			{`{"image":"x"}`, "name"},
			{`{"name":"a b","image":"x"}`, "name"},
			{`{"name":"ok","image":"x","bogus":1}`, "bogus"},
			{`{"name":"ok","image":"x","ports":[{"container":70000}]}`, "ports[0].container"},
			{`{"name":"ok","image":"x","ports":[{"container":80,"host_ip":"nope"}]}`, "ports[0].host_ip"},
			{`{"name":"ok","image":"x","volumes":[{"source":"rel/path","target":"/d"}]}`, "volumes[0].source"},
			{`{"name":"ok","image":"x","volumes":[{"source":"/a/../etc","target":"/d"}]}`, "volumes[0].source"},
			{`{"name":"ok","image":"x","env":{"1BAD":"v"}}`, "env.1BAD"},
			{`{"name":"ok","image":"x","labels":{"io.vm-agent.tenant":"b"}}`, "labels.io.vm-agent.tenant"},
			{`{"name":"ok","image":"x","memory_bytes":10}`, "memory_bytes"},
			{`{"name":"ok","image":"x","cpus":0}`, "cpus"},
			{`{"name":"ok","image":"x","restart":{"policy":"sometimes"}}`, "restart.policy"},
			{`{"name":"ok","image":"x","command":[]}`, "command"},
		}
		for _, c := range cases {
			st, body, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:write"), c.body)
			code, path := errCode(t, body)
			if st != 400 || code != "invalid_request" || path != c.path {
				t.Errorf("%s: %d %s (want 400 invalid_request path %s)", c.body, st, body, c.path)
			}
		}
	})

	t.Run("scopes", func(t *testing.T) {
		if st, _, _ := call(t, a, "GET", "/v1/containers", is.tok("probe:read"), ""); st != 403 {
			t.Errorf("list without containers:read: %d", st)
		}
		if st, _, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:read"), `{"name":"x","image":"y"}`); st != 403 {
			t.Errorf("create without containers:write: %d", st)
		}
	})

	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("volume-ok\n"), 0644)
	os.Chmod(www, 0755)
	hostPort := freePort(t)
	webSpec := fmt.Sprintf(`{"name":"vma-web","image":%q,"command":["/bin/httpd","-f","-p","8080","-h","/www"],`+
		`"env":{"GREETING":"hello"},"ports":[{"container":8080,"host":%d,"host_ip":"127.0.0.1"}],`+
		`"volumes":[{"source":%q,"target":"/www","read_only":true}],"cpus":0.5,"memory_bytes":67108864,`+
		`"restart":{"policy":"no"}}`, ctrImage, hostPort, www)

	t.Run("create with limits, ports, env, volumes; start; idempotent create", func(t *testing.T) {
		st, body, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:write"), webSpec)
		if st != 201 {
			t.Fatalf("create: %d %s", st, body)
		}
		st, body, _ = call(t, a, "POST", "/v1/containers", is.tok("containers:write"), webSpec)
		if st != 200 || jsonOf(t, body)["changed"] != false {
			t.Errorf("same spec again: %d %s (want 200 changed:false)", st, body)
		}
		other := strings.Replace(webSpec, `"cpus":0.5`, `"cpus":1`, 1)
		st, body, _ = call(t, a, "POST", "/v1/containers", is.tok("containers:write"), other)
		if code, _ := errCode(t, body); st != 409 || code != "conflict" {
			t.Errorf("another spec: %d %s (want 409 conflict)", st, body)
		}
		st, body, _ = call(t, a, "GET", "/v1/containers/vma-web", is.tok("containers:read"), "")
		if st != 200 {
			t.Fatalf("inspect: %d %s", st, body)
		}
		ins := jsonOf(t, body)
		hc := ins["HostConfig"].(map[string]interface{})
		if hc["NanoCpus"] != float64(5e8) || hc["Memory"] != float64(67108864) {
			t.Errorf("limits: NanoCpus %v Memory %v", hc["NanoCpus"], hc["Memory"])
		}
		cfg := ins["Config"].(map[string]interface{})
		labels := cfg["Labels"].(map[string]interface{})
		if labels["io.vm-agent.tenant"] != "tenant-a" || labels["io.vm-agent.creator"] != "operator@msp" {
			t.Errorf("labels: %v", labels)
		}
		if !strings.Contains(fmt.Sprint(cfg["Env"]), "GREETING=hello") {
			t.Errorf("env: %v", cfg["Env"])
		}
		st, body, _ = call(t, a, "POST", "/v1/containers/vma-web/start", is.tok("containers:write"), "")
		if st != 200 || jsonOf(t, body)["changed"] != true {
			t.Fatalf("start: %d %s", st, body)
		}
		if st, body, _ := call(t, a, "POST", "/v1/containers/vma-web/start", is.tok("containers:write"), ""); st != 200 || jsonOf(t, body)["changed"] != false {
			t.Errorf("start again: %d %s", st, body)
		}
		// the mapped port serves the bind-mounted volume
		var got string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if got = string(b); strings.Contains(got, "volume-ok") {
					break
				}
			}
		}
		if !strings.Contains(got, "volume-ok") {
			t.Errorf("http through the mapped port: %q", got)
		}
		st, body, _ = call(t, a, "GET", "/v1/containers?state=running", is.tok("containers:read"), "")
		if st != 200 || !strings.Contains(body, `"vma-web"`) {
			t.Errorf("list running: %d %s", st, body)
		}
		if st, body, _ := call(t, a, "GET", "/v1/containers/vma-web/stats", is.tok("containers:read"), ""); st != 200 {
			t.Errorf("stats: %d %s", st, body)
		}
		// replace: a new container under the same name
		rep := strings.Replace(other, `{"name"`, `{"replace":true,"name"`, 1)
		if st, body, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:write"), rep); st != 201 {
			t.Errorf("replace: %d %s", st, body)
		}
	})

	t.Run("stop, restart, delete", func(t *testing.T) {
		spec := fmt.Sprintf(`{"name":"vma-sleeper","image":%q,"command":["/bin/sleep","300"]}`, ctrImage)
		if st, body, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:write"), spec); st != 201 {
			t.Fatalf("create: %d %s", st, body)
		}
		call(t, a, "POST", "/v1/containers/vma-sleeper/start", is.tok("containers:write"), "")
		state := func() string {
			_, body, _ := call(t, a, "GET", "/v1/containers/vma-sleeper", is.tok("containers:read"), "")
			s, _ := jsonOf(t, body)["State"].(map[string]interface{})
			v, _ := s["Status"].(string)
			return v
		}
		if s := state(); s != "running" {
			t.Errorf("after start: %s", s)
		}
		if st, body, _ := call(t, a, "POST", "/v1/containers/vma-sleeper/stop?timeout=0", is.tok("containers:write"), ""); st != 200 || jsonOf(t, body)["changed"] != true {
			t.Errorf("stop: %d %s", st, body)
		}
		if s := state(); s != "exited" {
			t.Errorf("after stop: %s", s)
		}
		if st, body, _ := call(t, a, "POST", "/v1/containers/vma-sleeper/stop", is.tok("containers:write"), ""); st != 200 || jsonOf(t, body)["changed"] != false {
			t.Errorf("stop again: %d %s", st, body)
		}
		if st, body, _ := call(t, a, "POST", "/v1/containers/vma-sleeper/restart?timeout=0", is.tok("containers:write"), ""); st != 200 {
			t.Errorf("restart: %d %s", st, body)
		}
		if s := state(); s != "running" {
			t.Errorf("after restart: %s", s)
		}
		if st, body, _ := call(t, a, "POST", "/v1/containers/vma-sleeper/stop?timeout=bad", is.tok("containers:write"), ""); st != 400 {
			t.Errorf("bad timeout: %d %s", st, body)
		}
		if st, body, _ := call(t, a, "DELETE", "/v1/containers/vma-sleeper?force=true", is.tok("containers:write"), ""); st != 200 {
			t.Errorf("delete: %d %s", st, body)
		}
		st, body, _ := call(t, a, "GET", "/v1/containers/vma-sleeper", is.tok("containers:read"), "")
		if code, _ := errCode(t, body); st != 404 || code != "not_found" {
			t.Errorf("after delete: %d %s", st, body)
		}
		st, body, _ = call(t, a, "POST", "/v1/containers/no-such-one/start", is.tok("containers:write"), "")
		if code, _ := errCode(t, body); st != 404 || code != "not_found" {
			t.Errorf("start missing: %d %s", st, body)
		}
	})

	t.Run("logs, and logs with follow as SSE", func(t *testing.T) {
		spec := fmt.Sprintf(`{"name":"vma-talker","image":%q,"command":["/bin/sh","-c","echo out-line; echo err-line >&2; sleep 2; echo late-line"]}`, ctrImage)
		if st, body, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:write"), spec); st != 201 {
			t.Fatalf("create: %d %s", st, body)
		}
		call(t, a, "POST", "/v1/containers/vma-talker/start", is.tok("containers:write"), "")
		req, _ := http.NewRequest("GET", apiURL(a, "/v1/containers/vma-talker/logs?follow=true&tail=all"), nil)
		req.Header.Set("Authorization", "Bearer "+is.tok("containers:read"))
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var events []string
		sc := bufio.NewScanner(resp.Body)
		ended := false
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "event: end") {
				ended = true
			}
			if strings.HasPrefix(l, "data: ") {
				events = append(events, l[6:])
			}
			if ended && strings.HasPrefix(l, "data: ") {
				break
			}
		}
		all := strings.Join(events, "\n")
		for _, want := range []string{`"stream":"stdout","text":"out-line\n"`, `"stream":"stderr","text":"err-line\n"`, `late-line`} {
			if !strings.Contains(all, want) {
				t.Errorf("follow: no %s in %s", want, all)
			}
		}
		if !ended {
			t.Errorf("follow did not end when the container stopped: %s", all)
		}
		st, body, _ := call(t, a, "GET", "/v1/containers/vma-talker/logs?tail=1", is.tok("containers:read"), "")
		if st != 200 || !strings.Contains(body, "late-line") || strings.Contains(body, "out-line") {
			t.Errorf("logs tail=1: %d %s", st, body)
		}
		if st, body, _ := call(t, a, "GET", "/v1/containers/vma-talker/logs?tail=x", is.tok("containers:read"), ""); st != 400 {
			t.Errorf("bad tail: %d %s", st, body)
		}
		call(t, a, "DELETE", "/v1/containers/vma-talker?force=true", is.tok("containers:write"), "")
	})

	t.Run("foreign unlabeled containers are refused", func(t *testing.T) {
		eng.cli("create", "--name", "vma-foreign", ctrImage, "/bin/sleep", "60")
		for _, c := range []struct{ m, p string }{
			{"GET", "/v1/containers/vma-foreign"},
			{"POST", "/v1/containers/vma-foreign/start"},
			{"DELETE", "/v1/containers/vma-foreign?force=true"},
			{"GET", "/v1/containers/vma-foreign/logs"},
		} {
			st, body, _ := call(t, a, c.m, c.p, rw(), "")
			if code, _ := errCode(t, body); st != 403 || code != "foreign_container" {
				t.Errorf("%s %s: %d %s", c.m, c.p, st, body)
			}
		}
		_, body, _ := call(t, a, "GET", "/v1/containers?all=true", is.tok("containers:read"), "")
		if strings.Contains(body, "vma-foreign") {
			t.Errorf("list shows the foreign container: %s", body)
		}
		spec := fmt.Sprintf(`{"name":"vma-foreign","image":%q}`, ctrImage)
		st, body, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:write"), spec)
		if code, _ := errCode(t, body); st != 409 || code != "name_conflict" {
			t.Errorf("create over a foreign name: %d %s", st, body)
		}
		eng.cli("rm", "-f", "vma-foreign")
	})

	t.Run("image not found is 404 with the engine's message", func(t *testing.T) {
		spec := `{"name":"vma-noimage","image":"localhost/vma-no-such-image:1","pull":"never"}`
		st, body, _ := call(t, a, "POST", "/v1/containers", is.tok("containers:write"), spec)
		if code, _ := errCode(t, body); st != 404 || code != "image_not_found" {
			t.Errorf("missing image: %d %s", st, body)
		}
	})

	t.Run("probe steps: scope, idempotent create, labels, stop, delete", func(t *testing.T) {
		spec := map[string]interface{}{"name": "vma-stepped", "image": ctrImage, "command": []string{"/bin/sleep", "300"}}
		create := mustJSON(map[string]interface{}{"steps": []interface{}{
			map[string]interface{}{"type": "container.create", "spec": spec},
			map[string]interface{}{"type": "container.start", "container": "vma-stepped"},
		}})
		st, body, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:run"), create)
		if code, path := errCode(t, body); st != 403 || code != "insufficient_scope" || path != "steps[0].type" {
			t.Errorf("step without containers:write: %d %s", st, body)
		}
		bad := mustJSON(map[string]interface{}{"steps": []interface{}{
			map[string]interface{}{"type": "container.create", "spec": map[string]interface{}{"name": "x", "image": "y", "cpus": -1}},
		}})
		st, body, _ = call(t, a, "POST", "/v1/probes", is.tok("probe:run containers:write"), bad)
		if code, path := errCode(t, body); st != 400 || code != "invalid_request" || path != "steps[0].spec.cpus" {
			t.Errorf("bad spec in a step: %d %s", st, body)
		}
		run := func(body string) probeRec {
			st, b, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:run containers:write"), body)
			var r probeRec
			json.Unmarshal([]byte(b), &r)
			if st != 202 {
				t.Fatalf("submit: %d %s", st, b)
			}
			return waitProbe(t, a, is, r.ID, 30*time.Second)
		}
		changed := func(step map[string]interface{}) interface{} {
			if res, ok := step["result"].(map[string]interface{}); ok {
				return res["changed"]
			}
			return step["changed"]
		}
		r1 := run(create)
		if r1.State != "succeeded" || changed(r1.Steps[0]) != true || changed(r1.Steps[1]) != true {
			t.Fatalf("first create: %s %s", r1.State, mustJSON(r1.Steps))
		}
		r2 := run(create)
		if r2.State != "succeeded" || changed(r2.Steps[0]) != false || changed(r2.Steps[1]) != false {
			t.Errorf("second create: %s %s", r2.State, mustJSON(r2.Steps))
		}
		_, body, _ = call(t, a, "GET", "/v1/containers/vma-stepped", is.tok("containers:read"), "")
		labels := jsonOf(t, body)["Config"].(map[string]interface{})["Labels"].(map[string]interface{})
		if labels["io.vm-agent.probe"] != r1.ID || labels["io.vm-agent.creator"] != "operator@msp" {
			t.Errorf("labels of a step-created container: %v (probe %s)", labels, r1.ID)
		}
		// check mode asks the engine and changes nothing: a new name would be
		// created (and is not), a running container would be stopped (and runs on)
		other := map[string]interface{}{"name": "vma-checked", "image": ctrImage, "command": []string{"/bin/sleep", "300"}}
		rc := run(mustJSON(map[string]interface{}{"steps": []interface{}{
			map[string]interface{}{"type": "container.create", "spec": other, "check": true},
			map[string]interface{}{"type": "container.create", "spec": spec, "check": true},
			map[string]interface{}{"type": "container.stop", "container": "vma-stepped", "check": true},
			map[string]interface{}{"type": "container.start", "container": "vma-stepped", "check": true},
		}}))
		if rc.State != "succeeded" || changed(rc.Steps[0]) != true || rc.Steps[0]["would"] != "create" ||
			changed(rc.Steps[1]) != false || changed(rc.Steps[2]) != true || changed(rc.Steps[3]) != false {
			t.Errorf("check mode: %s %s", rc.State, mustJSON(rc.Steps))
		}
		if st, body, _ := call(t, a, "GET", "/v1/containers/vma-checked", is.tok("containers:read"), ""); st != 404 {
			t.Errorf("check mode created a container: %d %s", st, body)
		}
		_, body, _ = call(t, a, "GET", "/v1/containers/vma-stepped", is.tok("containers:read"), "")
		if state, _ := jsonOf(t, body)["State"].(map[string]interface{}); state["Running"] != true {
			t.Errorf("check mode stopped the container: %v", state)
		}
		r3 := run(mustJSON(map[string]interface{}{"steps": []interface{}{
			map[string]interface{}{"type": "container.stop", "container": "vma-stepped", "timeout": 0},
			map[string]interface{}{"type": "container.delete", "container": "vma-stepped", "force": true},
			map[string]interface{}{"type": "container.start", "container": "vma-stepped"},
		}}))
		if r3.State != "failed" || changed(r3.Steps[0]) != true || changed(r3.Steps[1]) != true ||
			!strings.Contains(mustJSON(r3.Steps[2]), "not_found") {
			t.Errorf("stop, delete, start: %s %s", r3.State, mustJSON(r3.Steps))
		}
	})

	t.Run("engine down: 503 engine_unavailable and health degraded", func(t *testing.T) {
		eng.stop()
		st, body, _ := call(t, a, "GET", "/v1/containers", is.tok("containers:read"), "")
		if code, _ := errCode(t, body); st != 503 || code != "engine_unavailable" {
			t.Errorf("engine down: %d %s", st, body)
		}
		var h string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
			_, h, _ = call(t, a, "GET", "/v1/health", is.tok("health:read"), "")
			if strings.Contains(h, `"reachable":false`) && !strings.Contains(h, `"state":"healthy"`) {
				break
			}
		}
		if !strings.Contains(h, `"reachable":false`) || strings.Contains(h, `"state":"healthy"`) {
			t.Errorf("health with the engine down: %s", h)
		}
		eng.start()
		// a freshly started engine may refuse a moment longer than its /_ping
		// (under load podman took 8 s before it answered /version)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if st, body, _ = call(t, a, "GET", "/v1/containers?all=true", is.tok("containers:read"), ""); st == 200 {
				break
			}
			t.Logf("engine back, not yet: %d %s", st, body)
		}
		if st != 200 {
			t.Errorf("engine back: %d %s", st, body)
		}
	})
	t.Logf("TestContainers took %v", time.Since(start))
}

// unixClient speaks HTTP over a unix socket.
func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}
