// ctrbench measures GET /v1/containers through a real agent (JWT auth, the
// tenant filter, the engine call over the unix socket, the JSON mapping) next
// to the same list asked straight on the engine's socket, in the same run,
// against a private `podman system service` holding a few labelled containers.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	bin        = flag.String("bin", os.Getenv("VM_AGENT_BIN"), "vm-agent binary")
	n          = flag.Int("requests", 400, "requests per side")
	containers = flag.Int("containers", 10, "labelled containers in the engine")
)

// cleanups run on every exit, failures included (no orphaned engine or agent)
var cleanups []func()

func exit(code int) {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctrbench:", err)
		exit(1)
	}
}

var seq int64

func token(key ed25519.PrivateKey, scope string) string {
	now := time.Now().Unix()
	h, _ := json.Marshal(map[string]string{"alg": "EdDSA", "kid": "bench", "typ": "JWT"})
	c, _ := json.Marshal(map[string]interface{}{"iss": "https://cp.bench", "sub": "bench", "aud": "agent-1",
		"tenant_id": "tenant-a", "jti": fmt.Sprintf("c-%d", atomic.AddInt64(&seq, 1)), "scope": scope,
		"iat": now, "exp": now + 600})
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(in)))
}

func do(c *http.Client, method, u, tok, body string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, u, r)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func pct(d []time.Duration, q int) time.Duration {
	sort.Slice(d, func(a, b int) bool { return d[a] < d[b] })
	return d[(len(d)-1)*q/100]
}

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "ctrbench-")
	must(err)
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	// podman as the e2e test runs it (runc, cgroupfs, vfs, private storage)
	conf := filepath.Join(dir, "containers.conf")
	must(os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n"+
		"cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"), 0600))
	os.MkdirAll(filepath.Join(dir, "tmp"), 0700)
	pargs := []string{"--root", dir + "/root", "--runroot", dir + "/run", "--storage-driver", "vfs", "--tmpdir", dir + "/tmp"}
	sock := filepath.Join(dir, "podman.sock")
	svc := exec.Command("podman", append(pargs, "system", "service", "--time=0", "unix://"+sock)...)
	svc.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	svc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(svc.Start())
	cleanups = append(cleanups, func() { syscall.Kill(-svc.Process.Pid, syscall.SIGKILL); svc.Wait() })
	eng := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}, MaxIdleConnsPerHost: 4}}
	// before the service goes: containers (conmon, their init) would outlive it
	cleanups = append(cleanups, func() {
		for i := 0; i < *containers; i++ {
			s, b, err := do(eng, "DELETE", fmt.Sprintf("http://d/v1.41/containers/bench-%d?force=true", i), "", "")
			if err != nil || (s != 204 && s != 404) {
				fmt.Fprintf(os.Stderr, "ctrbench: removing bench-%d: %d %s %v\n", i, s, b, err)
			}
		}
	})
	for i := 0; i < 300; i++ {
		if s, _, err := do(eng, "GET", "http://d/_ping", "", ""); err == nil && s == 200 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// a busybox image imported from a local rootfs (no registry)
	bb, err := exec.LookPath("busybox")
	must(err)
	root := filepath.Join(dir, "rootfs")
	os.MkdirAll(root+"/bin", 0755)
	data, err := os.ReadFile(bb)
	must(err)
	must(os.WriteFile(root+"/bin/busybox", data, 0755))
	os.Symlink("busybox", root+"/bin/sleep")
	out, err := exec.Command("tar", "-C", root, "-cf", dir+"/rootfs.tar", ".").CombinedOutput()
	must(errOut(err, out))
	imp := exec.Command("podman", append(pargs, "import", dir+"/rootfs.tar", "localhost/bench:1")...)
	imp.Env = svc.Env
	out, err = imp.CombinedOutput()
	must(errOut(err, out))

	fmt.Fprintln(os.Stderr, "ctrbench: image imported")
	_, key, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	must(os.WriteFile(dir+"/bench.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0600))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf("agent:\n  id: agent-1\n  tenant_id: tenant-a\n  state_dir: %s/state\n  runtime_dir: %[1]s/rt\n"+
		"webhook:\n  port: %d\nlog:\n  level: warn\n"+
		"auth:\n  issuer: https://cp.bench\n  jwt_keys: [\"%s/bench.pem\"]\n"+
		"containers:\n  socket: %s\n", dir, port, dir, sock)
	must(os.WriteFile(dir+"/config.yaml", []byte(cfg), 0600))
	agent := exec.Command(*bin, "run", "--config", dir+"/config.yaml")
	agent.Stderr = os.Stderr
	must(agent.Start())
	cleanups = append(cleanups, func() { agent.Process.Kill(); agent.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	api := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	for i := 0; i < 500; i++ {
		if s, _, err := do(api, "GET", base+"/v1/livez", "", ""); err == nil && s == 200 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < *containers; i++ {
		spec := fmt.Sprintf(`{"name":"bench-%d","image":"localhost/bench:1","command":["/bin/sleep","600"]}`, i)
		s, b, err := do(api, "POST", base+"/v1/containers", token(key, "containers:write"), spec)
		if err != nil || s != 201 {
			must(fmt.Errorf("create: %d %s %v", s, b, err))
		}
		s, b, err = do(api, "POST", base+fmt.Sprintf("/v1/containers/bench-%d/start", i), token(key, "containers:write"), "")
		if err != nil || s != 200 {
			must(fmt.Errorf("start: %d %s %v", s, b, err))
		}
	}
	fmt.Fprintln(os.Stderr, "ctrbench: containers created")
	toks := make([]string, *n)
	for i := range toks {
		toks[i] = token(key, "containers:read")
	}
	filters := url.QueryEscape(`{"label":["io.vm-agent.tenant=tenant-a"]}`)
	direct := "http://d/v1.41/containers/json?all=false&filters=" + filters
	var viaAgent, straight []time.Duration
	// interleaved, one at a time: both sides see the same machine load
	for i := 0; i < *n; i++ {
		t0 := time.Now()
		s, b, err := do(eng, "GET", direct, "", "")
		if err != nil || s != 200 || strings.Count(string(b), `"Id"`) != *containers {
			must(fmt.Errorf("engine list: %d %.200s %v", s, b, err))
		}
		straight = append(straight, time.Since(t0))
		t0 = time.Now()
		s, b, err = do(api, "GET", base+"/v1/containers", toks[i], "")
		if err != nil || s != 200 || strings.Count(string(b), `"bench-`) != *containers {
			must(fmt.Errorf("agent list: %d %.200s %v", s, b, err))
		}
		viaAgent = append(viaAgent, time.Since(t0))
	}
	fmt.Printf("GET /v1/containers, %d containers, %d requests each, sequential, interleaved\n", *containers, *n)
	fmt.Printf("%-34s %10s %10s\n", "", "p50", "p99")
	fmt.Printf("%-34s %10v %10v\n", "engine socket (reference)", pct(straight, 50).Round(time.Microsecond), pct(straight, 99).Round(time.Microsecond))
	fmt.Printf("%-34s %10v %10v\n", "through the agent", pct(viaAgent, 50).Round(time.Microsecond), pct(viaAgent, 99).Round(time.Microsecond))
	fmt.Printf("p99 ratio agent/engine: %.2f\n", float64(pct(viaAgent, 99))/float64(pct(straight, 99)))
	exit(0)
}

func errOut(err error, out []byte) error {
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
