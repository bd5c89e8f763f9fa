// Helpers for tests of authenticated routes: a test issuer with Ed25519,
// ES256 and RS256 keys (written as PEM files the agent loads), token minting,
// and one function that builds API URLs so the tests can later go through the
// tunnel instead of straight to loopback.
package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testIssuer = "https://cp.test"

// apiURL is how every probe/auth test reaches the agent's API. Today: straight
// to the webhook on loopback; later: through the relay and tunnel.
func apiURL(a *Agent, path string) string {
	if a.Base != "" {
		return a.Base + path
	}
	return a.URL(path)
}

type issuer struct {
	dir       string
	ed        ed25519.PrivateKey
	ec        *ecdsa.PrivateKey
	rsa       *rsa.PrivateKey
	rsaPubPEM []byte
	seq       int64
	mu        sync.Mutex
	minted    []string // every token handed out, for the no-leak check
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{dir: t.TempDir()}
	var err error
	_, is.ed, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if is.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if is.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	for kid, pub := range map[string]interface{}{"ed": is.ed.Public(), "ec": &is.ec.PublicKey, "rsa": &is.rsa.PublicKey} {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		p := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		if kid == "rsa" {
			is.rsaPubPEM = p
		}
		if err := os.WriteFile(filepath.Join(is.dir, kid+".pem"), p, 0600); err != nil {
			t.Fatal(err)
		}
	}
	return is
}

// yaml is the auth section for the agent's config (one line per key: the
// harness's mergeYAML only handles flat sections).
func (is *issuer) yaml() string {
	return fmt.Sprintf("auth:\n  issuer: %s\n  jwt_keys: [\"%s\", \"%s\", \"%s\"]\n", testIssuer,
		filepath.Join(is.dir, "ed.pem"), filepath.Join(is.dir, "ec.pem"), filepath.Join(is.dir, "rsa.pem"))
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// claims returns valid claims for agent-1/tenant-a with a fresh jti.
func (is *issuer) claims(scope string) map[string]interface{} {
	now := time.Now().Unix()
	n := atomic.AddInt64(&is.seq, 1)
	return map[string]interface{}{
		"iss": testIssuer, "sub": "operator@msp", "aud": "agent-1", "tenant_id": "tenant-a",
		"jti": fmt.Sprintf("jti-%d-%d", now, n), "scope": scope,
		"iat": now, "nbf": now, "exp": now + 300,
	}
}

// sign mints a token; alg picks key and algorithm ("EdDSA", "ES256", "RS256",
// "HS256-pubkey" for the confusion attack, "none").
func (is *issuer) sign(alg, kid string, claims map[string]interface{}) string {
	hdrAlg := alg
	if alg == "HS256-pubkey" {
		hdrAlg = "HS256"
	}
	h, _ := json.Marshal(map[string]string{"alg": hdrAlg, "kid": kid, "typ": "JWT"})
	c, _ := json.Marshal(claims)
	in := b64url(h) + "." + b64url(c)
	var sig []byte
	d := sha256.Sum256([]byte(in))
	switch alg {
	case "EdDSA":
		sig = ed25519.Sign(is.ed, []byte(in))
	case "ES256":
		r, s, err := ecdsa.Sign(rand.Reader, is.ec, d[:])
		if err != nil {
			panic(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case "RS256":
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, is.rsa, crypto.SHA256, d[:]); err != nil {
			panic(err)
		}
	case "HS256-pubkey":
		m := hmac.New(sha256.New, is.rsaPubPEM)
		m.Write([]byte(in))
		sig = m.Sum(nil)
	case "none":
	}
	tok := in + "." + b64url(sig)
	is.mu.Lock()
	is.minted = append(is.minted, tok)
	is.mu.Unlock()
	return tok
}

// tok is a valid EdDSA token with scope.
func (is *issuer) tok(scope string) string {
	return is.sign("EdDSA", "ed", is.claims(scope))
}

// allScopes covers every probe route.
const allScopes = "probe:run probe:read probe:cancel"

var httpClient = &http.Client{Timeout: 30 * time.Second}

// call sends one request; token "" sends none. Returns status, body, headers.
func call(t *testing.T, a *Agent, method, path, token, body string) (int, string, http.Header) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, apiURL(a, path), r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	if rerr != nil { // a reply cut in transit: say so, the status alone misleads
		t.Logf("%s %s: status %d, Content-Length %q, body cut after %d bytes: %v", method, path,
			resp.StatusCode, resp.Header.Get("Content-Length"), len(b), rerr)
	}
	return resp.StatusCode, string(b), resp.Header
}

// startAuthAgent starts an agent that trusts is; extra is appended YAML.
// Every such test ends with a check that no token reached the agent's output
// or any file it wrote.
// startAuthAgent starts an agent with JWT auth whose API is reached the way
// the control plane reaches it: through a Piko-compatible relay and the tunnel.
func startAuthAgent(t *testing.T, is *issuer, extra string) *Agent {
	t.Helper()
	a, r := startTunnelPairRelay(t, mergeYAML(is.yaml(), extra))
	a.Base, a.Relay = r.ProxyURL(), r
	t.Cleanup(func() { assertNoTokenLeak(t, is, a) })
	return a
}

// auditLines reads the agent's audit log (default <state>/audit.log).
func auditLines(t *testing.T, a *Agent) []map[string]interface{} {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(a.Dir, "state", "audit.log"))
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	var out []map[string]interface{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]interface{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// assertNoTokenLeak greps the agent's output and every file under its dir
// for any token minted in the test (and for each token's signature part).
func assertNoTokenLeak(t *testing.T, is *issuer, agents ...*Agent) {
	t.Helper()
	is.mu.Lock()
	toks := append([]string(nil), is.minted...)
	is.mu.Unlock()
	var texts []string
	for _, a := range agents {
		texts = append(texts, a.Log.String())
		_ = filepath.Walk(a.Dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() && info.Size() < 64<<20 {
				if b, err := os.ReadFile(p); err == nil {
					texts = append(texts, string(b))
				}
			}
			return nil
		})
	}
	for _, tok := range toks {
		parts := strings.Split(tok, ".")
		for _, txt := range texts {
			if strings.Contains(txt, tok) || (len(parts) == 3 && len(parts[2]) > 16 && strings.Contains(txt, parts[2])) ||
				strings.Contains(txt, parts[0]+"."+parts[1]) {
				t.Fatalf("a token (or its signature) appears in the agent's logs or files")
			}
		}
	}
}

// callXFF is call with an X-Forwarded-For header (as the relay would add).
func callXFF(t *testing.T, a *Agent, method, path, token, body, xff string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, apiURL(a, path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Forwarded-For", xff)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	if rerr != nil { // a reply cut in transit: say so, the status alone misleads
		t.Logf("%s %s: status %d, Content-Length %q, body cut after %d bytes: %v", method, path,
			resp.StatusCode, resp.Header.Get("Content-Length"), len(b), rerr)
	}
	return resp.StatusCode, string(b), resp.Header
}

// waitAudit returns the audit lines once there are at least n (the line is
// written right after the response is sent), waiting at most 3 s.
func waitAudit(t *testing.T, a *Agent, n int) []map[string]interface{} {
	t.Helper()
	var lines []map[string]interface{}
	for i := 0; i < 150; i++ {
		if lines = auditLines(t, a); len(lines) >= n {
			return lines
		}
		time.Sleep(20 * time.Millisecond)
	}
	return lines
}
