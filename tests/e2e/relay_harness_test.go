// Helpers for tunnel tests: build and run the Piko-compatible relay
// (tests/relay), mint tokens, and start an agent connected through it.
// startTunnelPair is the entry point other tests use to send requests
// through the tunnel.
package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

const relayHMACKey = "relay-test-key-0123456789"

var (
	relayOnce sync.Once
	relayPath string
	relayErr  error
)

// relayBin builds tests/relay once per test run, next to the agent binary.
func relayBin(t *testing.T) string {
	t.Helper()
	relayOnce.Do(func() {
		src, err := filepath.Abs("../relay")
		if err != nil {
			relayErr = err
			return
		}
		relayPath = filepath.Join(filepath.Dir(agentBin(t)), "vm-relay")
		cmd := exec.Command("go", "build", "-o", relayPath, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GO111MODULE=off", "GOPATH=/usr/share/gocode", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			relayErr = fmt.Errorf("building the relay: %v\n%s", err, out)
		}
	})
	if relayErr != nil {
		t.Fatal(relayErr)
	}
	return relayPath
}

type Relay struct {
	t           *testing.T
	Cmd         *exec.Cmd
	Args        []string
	UpstreamURL string // http(s)://127.0.0.1:port, for piko.server_url
	Upstream    string
	Proxy       string // host:port of the proxy listener
	Control     string
	Log         *syncBuffer
	done        chan struct{}
}

// startRelay runs the relay with args (e.g. "-hmac-key", k, "-tenant", t).
func startRelay(t *testing.T, args ...string) *Relay {
	t.Helper()
	r := &Relay{t: t, Args: args, Log: &syncBuffer{}}
	r.start()
	return r
}

func (r *Relay) start() {
	t := r.t
	addrFile := filepath.Join(t.TempDir(), "relay-addrs.json")
	args := append([]string{"-addr-file", addrFile}, r.Args...)
	if r.Upstream != "" { // a restart keeps the upstream address
		args = append(args, "-upstream-addr", r.Upstream)
	}
	r.Cmd = exec.Command(relayBin(t), args...)
	r.Cmd.Stdout, r.Cmd.Stderr = r.Log, r.Log
	if err := r.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.done = make(chan struct{})
	cmd, done := r.Cmd, r.done
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("relay log:\n%s", r.Log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(addrFile)
		if err == nil {
			var a map[string]string
			if json.Unmarshal(data, &a) == nil {
				r.UpstreamURL, r.Upstream, r.Proxy, r.Control = a["upstream_url"], a["upstream"], a["proxy"], a["control"]
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("relay exited:\n%s", r.Log.String())
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("relay did not start:\n%s", r.Log.String())
}

// Kill stops the relay abruptly; Restart starts it again on the same upstream port.
func (r *Relay) Kill() {
	r.Cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

func (r *Relay) Restart() { r.start() }

type relayStatus struct {
	Upstreams   int64 `json:"upstreams"`
	Connections int64 `json:"connections"`
	Rejected    int64 `json:"rejected"`
	Requests    int64 `json:"requests"`
}

func (r *Relay) Status() relayStatus {
	var s relayStatus
	resp, err := http.Get("http://" + r.Control + "/status")
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&s)
	return s
}

// WaitConnections waits until the relay has accepted at least n upstream
// sessions in total and one is connected now.
func (r *Relay) WaitConnections(n int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s := r.Status()
		if s.Connections >= n && s.Upstreams >= 1 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (r *Relay) Fault(mode string, dur time.Duration) {
	r.t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s/fault?mode=%s&dur=%s", r.Control, mode, dur), "text/plain", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	body := readBody(r.t, resp)
	if resp.StatusCode != 200 {
		r.t.Fatalf("fault %s: %d %s", mode, resp.StatusCode, body)
	}
}

// ProxyURL is the base URL clients use to reach the agent through the tunnel.
func (r *Relay) ProxyURL() string { return "http://" + r.Proxy }

// makeHS256 mints a JWT signed with key; exp 0 = no expiry.
func makeHS256(key string, exp int64, endpoints ...string) string {
	enc := base64.RawURLEncoding
	claims := map[string]interface{}{"sub": "agent-1"}
	if exp != 0 {
		claims["exp"] = exp
	}
	if len(endpoints) > 0 {
		claims["piko"] = map[string]interface{}{"endpoints": endpoints}
	}
	cb, _ := json.Marshal(claims)
	signed := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(cb)
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(m.Sum(nil))
}

// writeToken writes tok to a 0600 file in dir and returns its path.
func writeToken(t *testing.T, dir, tok string) string {
	t.Helper()
	p := filepath.Join(dir, "piko.token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tunnelYAML is the piko section for an agent talking to r with a token file.
// mergeYAML handles two levels only, so nested keys (piko.reconnect.*) go
// through the environment: see fastReconnect.
func tunnelYAML(r *Relay, tokenFile string, extra string) string {
	y := fmt.Sprintf("piko:\n  server_url: %s\n  endpoint: agent-1\n  token_file: %s\n",
		r.UpstreamURL, tokenFile)
	if extra != "" {
		y = mergeYAML(y, extra)
	}
	return y
}

// fastReconnect: short backoff so tests see reconnects quickly.
var fastReconnect = []string{"VM_AGENT_PIKO_RECONNECT_INITIAL_DELAY=100ms",
	"VM_AGENT_PIKO_RECONNECT_MAX_DELAY=1s"}

// startTunnelPair starts a relay (HMAC JWT, tenant-a) and an agent connected
// through it, and returns the agent and the proxy base URL: a request to
// proxyURL+"/v1/livez" reaches the agent's webhook through the tunnel.
func startTunnelPair(t *testing.T, extraYAML string) (*Agent, string) {
	t.Helper()
	a, r := startTunnelPairRelay(t, extraYAML)
	return a, r.ProxyURL()
}

func startTunnelPairRelay(t *testing.T, extraYAML string, relayArgs ...string) (*Agent, *Relay) {
	t.Helper()
	r := startRelay(t, append([]string{"-hmac-key", relayHMACKey, "-tenant", "tenant-a"}, relayArgs...)...)
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	a := startAgent(t, tunnelYAML(r, tok, extraYAML), fastReconnect...)
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("agent did not connect to the relay\nagent log:\n%s", a.Log.String())
	}
	return a, r
}

// getThrough sends GET path through the relay and returns status and body.
func getThrough(client *http.Client, base, path string) (int, string, error) {
	resp, err := client.Get(base + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
