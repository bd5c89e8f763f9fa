// End-to-end tests of webhook authorization: the full matrix of bad tokens
// (401 vs 403, JSON codes, WWW-Authenticate), the three algorithms, replay,
// audit lines for every attempt, and no token in any log or file.
package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAuthMatrix(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	now := time.Now().Unix()
	with := func(over map[string]interface{}) map[string]interface{} {
		c := is.claims(allScopes)
		for k, v := range over {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	replayed := is.tok(allScopes)
	cases := []struct {
		name   string
		token  string
		status int
		code   string
	}{
		{"no token", "", 401, "missing_token"},
		{"garbage", "not-a-jwt", 401, "malformed"},
		{"bad signature", func() string {
			tok := is.tok(allScopes)
			p := strings.Split(tok, ".")
			sig := []byte(p[2])
			if sig[5] == 'A' {
				sig[5] = 'B'
			} else {
				sig[5] = 'A'
			}
			return p[0] + "." + p[1] + "." + string(sig)
		}(), 401, "bad_signature"},
		{"signed by another key", func() string {
			other := newIssuer(t)
			return other.sign("EdDSA", "ed", is.claims(allScopes))
		}(), 401, "bad_signature"},
		{"expired", is.sign("EdDSA", "ed", with(map[string]interface{}{"iat": now - 600, "nbf": now - 600, "exp": now - 120})), 401, "expired"},
		{"not yet valid", is.sign("EdDSA", "ed", with(map[string]interface{}{"nbf": now + 600, "exp": now + 900})), 401, "not_yet_valid"},
		{"lifetime too long", is.sign("EdDSA", "ed", with(map[string]interface{}{"exp": now + 2*86400})), 401, "lifetime_too_long"},
		{"wrong issuer", is.sign("EdDSA", "ed", with(map[string]interface{}{"iss": "https://evil.test"})), 401, "wrong_issuer"},
		{"issued before the agent started", is.sign("EdDSA", "ed", with(map[string]interface{}{"iat": now - 200, "nbf": now - 200, "exp": now + 100})), 401, "issued_before_start"},
		{"no jti", is.sign("EdDSA", "ed", with(map[string]interface{}{"jti": nil})), 401, "missing_jti"},
		{"alg none", is.sign("none", "ed", is.claims(allScopes)), 401, "alg_not_allowed"},
		{"HS256 signed with the public key", is.sign("HS256-pubkey", "rsa", is.claims(allScopes)), 401, "alg_not_allowed"},
		{"alg does not match the key", is.sign("ES256", "ed", is.claims(allScopes)), 401, "alg_not_allowed"},
		{"unknown kid", is.sign("EdDSA", "nope", is.claims(allScopes)), 401, "unknown_kid"},
		{"wrong audience", is.sign("EdDSA", "ed", with(map[string]interface{}{"aud": "agent-2"})), 403, "wrong_audience"},
		{"wrong tenant", is.sign("EdDSA", "ed", with(map[string]interface{}{"tenant_id": "tenant-b"})), 403, "wrong_tenant"},
		{"missing scope", is.tok("probe:run probe:cancel"), 403, "insufficient_scope"},
		{"valid EdDSA", is.tok("probe:read"), 200, ""},
		{"valid ES256", is.sign("ES256", "ec", is.claims("probe:read")), 200, ""},
		{"valid RS256", is.sign("RS256", "rsa", is.claims("probe:read")), 200, ""},
		{"valid, audience list", is.sign("EdDSA", "ed", with(map[string]interface{}{"aud": []string{"x", "agent-1"}})), 200, ""},
		{"first use", replayed, 200, ""},
		{"replayed jti", replayed, 401, "replayed_jti"},
	}
	for _, c := range cases {
		status, body, hdr := call(t, a, "GET", "/v1/probes", c.token, "")
		if status != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, status, c.status, body)
			continue
		}
		if c.status == 200 {
			continue
		}
		e := decodeError(t, body)
		if e.Error.Code != c.code {
			t.Errorf("%s: code %q, want %q (%s)", c.name, e.Error.Code, c.code, body)
		}
		www := hdr.Get("WWW-Authenticate")
		if c.status == 401 && !strings.HasPrefix(www, "Bearer") {
			t.Errorf("%s: 401 without a Bearer challenge: %q", c.name, www)
		}
		if c.status == 401 && c.code != "missing_token" && !strings.Contains(www, `error="invalid_token"`) {
			t.Errorf("%s: challenge lacks error=invalid_token: %q", c.name, www)
		}
	}

	// one audit line per attempt, with the outcome; the reason is logged
	lines := waitAudit(t, a, len(cases))
	if len(lines) != len(cases) {
		t.Fatalf("%d audit lines for %d requests", len(lines), len(cases))
	}
	for i, c := range cases {
		l := lines[i]
		want := "denied"
		if c.status == 200 {
			want = "ok"
		}
		if l["outcome"] != want || int(l["status"].(float64)) != c.status || l["route"] != "GET /v1/probes" {
			t.Errorf("%s: audit line %v", c.name, l)
		}
		if c.status == 200 && (l["sub"] != "operator@msp" || l["tenant"] != "tenant-a" || l["jti"] == "") {
			t.Errorf("%s: audit line lacks the caller: %v", c.name, l)
		}
		for _, k := range []string{"time", "forwarded_for", "remote_addr"} {
			if _, ok := l[k]; !ok {
				t.Errorf("audit line lacks %s: %v", k, l)
			}
		}
	}
	if !a.WaitLog("wrong_tenant", 2*time.Second) || !a.WaitLog("alg_not_allowed", time.Second) {
		t.Errorf("denial reasons are not logged")
	}
	// readable, not eaten by the secret redactor
	if !strings.Contains(a.Log.String(), "(401 missing_token): no bearer token") {
		t.Errorf("the missing-token reason is not logged readably:\n%s", a.Log.String())
	}
	assertNoTokenLeak(t, is, a)
}

func TestAuthLivezNeedsNoTokenAndScopesAreEnforcedPerRoute(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	if status, _, _ := call(t, a, "GET", "/v1/livez", "", ""); status != 200 {
		t.Fatalf("livez: %d", status)
	}
	// probe:read cannot run or cancel
	status, body, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:read"), `{"steps":[{"type":"exec","argv":["true"]}]}`)
	if status != 403 || decodeError(t, body).Error.Code != "insufficient_scope" {
		t.Errorf("POST with probe:read: %d %s", status, body)
	}
	status, body, _ = call(t, a, "DELETE", "/v1/probes/p-1", is.tok("probe:read probe:run"), "")
	if status != 403 {
		t.Errorf("DELETE without probe:cancel: %d %s", status, body)
	}
	// X-Forwarded-For reaches the audit line
	req := `{"steps":[{"type":"exec","argv":["true"]}]}`
	status, body, _ = callXFF(t, a, "POST", "/v1/probes", is.tok("probe:run"), req, "203.0.113.7")
	if status != 202 {
		t.Fatalf("POST: %d %s", status, body)
	}
	var rec map[string]interface{}
	_ = json.Unmarshal([]byte(body), &rec)
	lines := waitAudit(t, a, 3)
	last := lines[len(lines)-1]
	// the relay appends the address it saw, as Piko does: "client, proxy-peer"
	if xff, _ := last["forwarded_for"].(string); !strings.HasPrefix(xff, "203.0.113.7") || last["probe_id"] != rec["id"] {
		t.Errorf("audit line: %v", last)
	}
	assertNoTokenLeak(t, is, a)
}

func TestAuthWithoutKeysRefusesEverything(t *testing.T) {
	a := startAgent(t, "")
	is := newIssuer(t)
	status, body, hdr := call(t, a, "GET", "/v1/probes", is.tok(allScopes), "")
	if status != 401 || hdr.Get("WWW-Authenticate") == "" {
		t.Fatalf("no keys: %d %s", status, body)
	}
}

// A full replay cache of live tokens refuses new tokens rather than forget one.
func TestAuthReplayCacheFullFailsClosed(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "auth:\n  replay_cache_size: 16\n")
	for i := 0; i < 16; i++ {
		if status, body, _ := call(t, a, "GET", "/v1/probes", is.tok("probe:read"), ""); status != 200 {
			t.Fatalf("token %d: %d %s", i, status, body)
		}
	}
	status, body, hdr := call(t, a, "GET", "/v1/probes", is.tok("probe:read"), "")
	if status != 503 || hdr.Get("Retry-After") == "" || decodeError(t, body).Error.Code != "replay_cache_full" {
		t.Fatalf("17th live token: %d %s", status, body)
	}
}

// The audit log rotates by size and keeps audit_max_files old files.
func TestAuthAuditLogRotates(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "auth:\n  audit_max_size: 4KiB\n  audit_max_files: 2\n")
	for i := 0; i < 60; i++ {
		call(t, a, "GET", "/v1/probes", is.tok("probe:read"), "")
	}
	time.Sleep(100 * time.Millisecond)
	base := filepath.Join(a.Dir, "state", "audit.log")
	for _, p := range []string{base, base + ".1", base + ".2"} {
		st, err := os.Stat(p)
		if err != nil || st.Size() > 4096 || st.Mode().Perm() != 0600 {
			t.Errorf("%s: %v %v", p, st, err)
		}
	}
	if _, err := os.Stat(base + ".3"); err == nil {
		t.Errorf("more than audit_max_files rotated files")
	}
}
