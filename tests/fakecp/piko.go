// Piko upstream tokens: POST /v1/agents/{id}/piko-token (see
// docs/control-plane-api.md). With -piko-hmac-key the fake control plane
// mints HS256 JWTs the test relay accepts, valid for -piko-token-ttl.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

var (
	pikoHMACKey  = flag.String("piko-hmac-key", "", "sign Piko upstream tokens (HS256) with this key")
	pikoTokenTTL = flag.Duration("piko-token-ttl", time.Hour, "lifetime of the Piko tokens it issues")
	pikoSerial   int64
)

func mintPikoToken(endpoint string, now time.Time) string {
	enc := base64.RawURLEncoding
	claims := map[string]interface{}{
		"sub": endpoint, "iat": now.Unix(), "exp": now.Add(*pikoTokenTTL).Unix(),
		"jti":  atomic.AddInt64(&pikoSerial, 1),
		"piko": map[string]interface{}{"endpoints": []string{endpoint}},
	}
	cb, _ := json.Marshal(claims)
	signed := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(cb)
	m := hmac.New(sha256.New, []byte(*pikoHMACKey))
	m.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(m.Sum(nil))
}

func init() {
	handle("POST /v1/agents/{id}/piko-token", func(w http.ResponseWriter, r *http.Request, p []string, _ []byte) int {
		tok := bearer(r)
		if tok == "" || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			return writeError(w, 401, "unauthorized", "missing agent token")
		}
		// A registered agent must use its own token; the health tests' agents
		// are not registered and only need a non-empty one.
		lcMu.Lock()
		a := agents[p[0]]
		lcMu.Unlock()
		if a != nil && authAgent(r, p[0]) == nil {
			return writeError(w, 401, "unauthorized", "unknown agent or bad token")
		}
		if *pikoHMACKey == "" {
			return writeError(w, 501, "not_configured", "fakecp runs without -piko-hmac-key")
		}
		now := time.Now()
		return writeJSON(w, 200, map[string]interface{}{
			"token":      mintPikoToken(p[0], now),
			"expires_at": now.Add(*pikoTokenTTL).UTC().Format(time.RFC3339),
		})
	})
}
