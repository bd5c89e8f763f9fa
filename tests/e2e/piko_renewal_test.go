// Piko token renewal: the agent renews its upstream token from the control
// plane (POST /v1/agents/{id}/piko-token) at about 2/3 of its lifetime and at
// once after Piko refuses it, writes it to piko.token_file (0600) and hands it
// to the tunnel without dropping the session that is serving requests.
package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// renewalPair starts the fake control plane (issuing ttl tokens), the relay
// (enforcing exp) and an agent whose piko.token_file starts with initial.
func renewalPair(t *testing.T, ttl time.Duration, initial string, env ...string) (*Agent, *Relay, string, string) {
	t.Helper()
	cp := hcFakeCP(t, "-piko-hmac-key", relayHMACKey, "-piko-token-ttl", ttl.String())
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	creds := hcWriteCreds(t, 0600)
	tokFile := writeToken(t, t.TempDir(), initial)
	y := fmt.Sprintf("agent:\n  control_plane_url: %s\n  credentials_file: %s\n", cp, creds) +
		tunnelYAML(r, tokFile, "")
	a := startAgent(t, y, env...)
	return a, r, cp, tokFile
}

func pikoTokenCalls(t *testing.T, cp string) int {
	n := 0
	for _, rq := range hcRequests(t, cp) {
		if rq.Method == "POST" && strings.HasSuffix(rq.Path, "/piko-token") {
			n++
		}
	}
	return n
}

func jwtExp(t *testing.T, tok string) int64 {
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Exp int64 }
	json.Unmarshal(b, &c)
	return c.Exp
}

func TestPikoTokenRenewedBeforeExpiry(t *testing.T) {
	const ttl = 20 * time.Second
	const window = 60 * time.Second
	a, r, cp, tokFile := renewalPair(t, ttl,
		makeHS256(relayHMACKey, time.Now().Add(ttl).Unix(), "agent-1"), fastReconnect...)
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("agent did not connect\n%s", a.Log.String())
	}
	client := &http.Client{Timeout: 10 * time.Second}
	start := time.Now()
	var total, failed int
	var firstFail string
	// Steady requests, one at a time, every 100 ms: bounded in count and time.
	for time.Since(start) < window && total < 1000 {
		code, body, err := getThrough(client, r.ProxyURL(), "/v1/livez")
		total++
		if err != nil || code != 200 {
			failed++
			if firstFail == "" {
				firstFail = fmt.Sprintf("at %.1fs: %d %v %s", time.Since(start).Seconds(), code, err, body)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := r.Status()
	reconnects := st.Connections - 1
	t.Logf("%d requests, %d failed; %d reconnects; %d renewals", total, failed, reconnects, pikoTokenCalls(t, cp))
	if failed != 0 {
		t.Errorf("%d of %d requests through the tunnel failed (first %s)\nagent log:\n%s", failed, total, firstFail, a.Log.String())
	}
	// The relay closes a session at its token's exp: one reconnect per token at most.
	if limit := int64((window+ttl-1)/ttl) + 1; reconnects > limit {
		t.Errorf("the tunnel reconnected %d times in %s (at most %d expected)", reconnects, window, limit)
	}
	if st.Connections < 2 {
		t.Errorf("only %d upstream sessions: the first token (20 s) cannot have lasted %s", st.Connections, window)
	}
	fi, err := os.Stat(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0600 {
		t.Errorf("renewed token file mode %o, want 600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(tokFile)
	if exp := jwtExp(t, string(data)); exp <= start.Add(window).Unix() {
		t.Errorf("token file holds a token expiring at %d, before the end of the run", exp)
	}
	if strings.Contains(a.Log.String(), strings.TrimSpace(string(data))) {
		t.Error("the renewed token appears in the agent's log")
	}
}

func TestPikoTokenRenewedAfter401(t *testing.T) {
	// Expired before the agent starts: the relay answers 401 and the
	// agent's next attempt would be piko.reconnect.max_delay (60 s) away.
	a, r, cp, tokFile := renewalPair(t, time.Hour,
		makeHS256(relayHMACKey, time.Now().Add(-time.Minute).Unix(), "agent-1"))
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("no session within 15 s after the 401 (relay rejected %d, renewals %d)\nagent log:\n%s",
			r.Status().Rejected, pikoTokenCalls(t, cp), a.Log.String())
	}
	code, _, err := getThrough(&http.Client{Timeout: 10 * time.Second}, r.ProxyURL(), "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("request through the tunnel: %d %v", code, err)
	}
	if n := pikoTokenCalls(t, cp); n < 1 || n > 3 {
		t.Errorf("%d renewal calls, want 1..3 (one after the 401, no storm)", n)
	}
	data, _ := os.ReadFile(tokFile)
	if jwtExp(t, string(data)) <= time.Now().Unix() {
		t.Error("piko.token_file still holds the expired token")
	}
	// status shows when the token expires, never the token.
	_, out, _ := runCLI(t, nil, "status", "--config", a.Config, "--json")
	if !strings.Contains(out, "piko_token_expires_at") {
		t.Errorf("status does not show the token's expiry:\n%s", out)
	}
	if strings.Contains(out, strings.TrimSpace(string(data))) {
		t.Error("status prints the Piko token")
	}
}

func TestPikoTokenRenewedByRepair(t *testing.T) {
	cp := &lcCP{URL: hcFakeCP(t, "-piko-hmac-key", relayHMACKey, "-piko-token-ttl", "1h")}
	root := lcInstall(t, cp)
	tokPath := filepath.Join(root, "etc/vm-agent/piko.token")
	// An expiring JWT (install got an opaque one, which never expires).
	old := makeHS256(relayHMACKey, time.Now().Add(5*time.Minute).Unix(), "agent-1")
	if err := os.WriteFile(tokPath, []byte(old), 0600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, nil, "repair", "--root", root)
	if code != 0 || !strings.Contains(out, "piko token") || !strings.Contains(out, "renewed") {
		t.Fatalf("repair: exit %d\n%s\n%s", code, out, errOut)
	}
	data, _ := os.ReadFile(tokPath)
	if exp := jwtExp(t, string(data)); exp < time.Now().Add(50*time.Minute).Unix() {
		t.Errorf("piko.token not renewed (exp %d)", exp)
	}
	if m := lcMode(t, tokPath); m != 0600 {
		t.Errorf("piko.token mode %o", m)
	}
	if n := pikoTokenCalls(t, cp.URL); n != 1 {
		t.Errorf("%d renewal calls, want 1", n)
	}
	lcGrepTree(t, filepath.Join(root, "var"), strings.TrimSpace(string(data)))
}
