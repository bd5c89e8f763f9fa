// Lifecycle endpoints of the fake control plane: registration with a
// one-time install key, deregistration, and agent events (upgrade outcomes).
// Install keys starting with "ik-" are accepted; anything else gets 401.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

type agentRec struct {
	ID       string `json:"agent_id"`
	Tenant   string `json:"tenant_id"`
	Token    string `json:"-"`
	Hostname string `json:"hostname"`
	Version  string `json:"version"`
	Active   bool   `json:"active"`
}

var (
	lcMu   sync.Mutex
	agents = map[string]*agentRec{}
	nextID = 1
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func bearer(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// authAgent returns the agent whose token the request carries.
func authAgent(r *http.Request, id string) *agentRec {
	lcMu.Lock()
	defer lcMu.Unlock()
	a := agents[id]
	if a == nil || !a.Active || a.Token != bearer(r) {
		return nil
	}
	return a
}

func init() {
	handle("POST /v1/agents/register", func(w http.ResponseWriter, r *http.Request, _ []string, body []byte) int {
		if !strings.HasPrefix(bearer(r), "ik-") {
			return writeError(w, 401, "invalid_install_key", "install key not accepted")
		}
		var req struct {
			TenantID string `json:"tenant_id"`
			AgentID  string `json:"agent_id"`
			Hostname string `json:"hostname"`
			Version  string `json:"version"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.TenantID == "" {
			return writeError(w, 400, "bad_request", "tenant_id is required")
		}
		lcMu.Lock()
		id := req.AgentID
		if id == "" {
			id = "agent-" + randHex(4)
			nextID++
		}
		a := &agentRec{ID: id, Tenant: req.TenantID, Token: "at-" + randHex(16),
			Hostname: req.Hostname, Version: req.Version, Active: true}
		agents[id] = a
		lcMu.Unlock()
		return writeJSON(w, 201, map[string]interface{}{
			"agent_id":    id,
			"credentials": map[string]string{"token": a.Token},
			"piko": map[string]string{
				"endpoint": id,
				"token":    "pt-" + randHex(16),
			},
			"jwt_issuer": "fakecp",
			"jwt_public_keys": []map[string]string{{
				"kid": "cp-1", "alg": "EdDSA",
				"pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
			}},
		})
	})
	handle("DELETE /v1/agents/{id}", func(w http.ResponseWriter, r *http.Request, p []string, _ []byte) int {
		a := authAgent(r, p[0])
		if a == nil {
			return writeError(w, 401, "unauthorized", "unknown agent or bad token")
		}
		lcMu.Lock()
		a.Active = false
		lcMu.Unlock()
		w.WriteHeader(204)
		return 204
	})
	handle("POST /v1/agents/{id}/events", func(w http.ResponseWriter, r *http.Request, p []string, body []byte) int {
		if authAgent(r, p[0]) == nil {
			return writeError(w, 401, "unauthorized", "unknown agent or bad token")
		}
		var ev map[string]interface{}
		if err := json.Unmarshal(body, &ev); err != nil || ev["type"] == nil {
			return writeError(w, 400, "bad_request", "an event is a JSON object with a type")
		}
		return writeJSON(w, 202, map[string]bool{"accepted": true})
	})
}
