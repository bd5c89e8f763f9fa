// Health reports: POST /v1/agents/{id}/health (see docs/control-plane-api.md).
// Reports are de-duplicated by their "id" (the agent delivers at least once):
// a repeat is answered 200 {"duplicate":true} and not stored again.
// GET /v1/agents/{id}/health lists the unique reports received, in arrival
// order (a test helper, not part of the contract).
// With -want-inventory the answer to each "startup" report asks for an
// inventory report ("want_inventory": true).
package main

import (
	"encoding/json"
	"flag"
	"net/http"
	"strings"
	"time"
)

var wantInventory = flag.Bool("want-inventory", false, "ask for an inventory in the answer to startup reports")

type healthReport struct {
	ID        string          `json:"id"`
	CreatedAt string          `json:"created_at"`
	Trigger   string          `json:"trigger"`
	State     string          `json:"state"`
	Health    json.RawMessage `json:"health"`
	Inventory json.RawMessage `json:"inventory,omitempty"`
}

var (
	healthSeen    = map[string]bool{}
	healthReports = map[string][]healthReport{} // agent id -> unique reports in order
)

func init() {
	handle("POST /v1/agents/{id}/health", postHealth)
	handle("GET /v1/agents/{id}/health", listHealth)
}

func postHealth(w http.ResponseWriter, r *http.Request, params []string, body []byte) int {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bearer ") || len(auth) <= len("Bearer ") {
		return writeError(w, 401, "unauthorized", "missing agent token")
	}
	var rep healthReport
	if err := json.Unmarshal(body, &rep); err != nil || rep.ID == "" || len(rep.Health) == 0 {
		return writeError(w, 400, "bad_request", "expected a health report with id and health")
	}
	now := float64(time.Now().UnixNano()) / 1e9
	mu.Lock()
	dup := healthSeen[rep.ID]
	if !dup {
		healthSeen[rep.ID] = true
		healthReports[params[0]] = append(healthReports[params[0]], rep)
	}
	mu.Unlock()
	if dup {
		return writeJSON(w, 200, map[string]interface{}{"id": rep.ID, "duplicate": true, "server_time": now})
	}
	return writeJSON(w, 202, map[string]interface{}{"id": rep.ID, "duplicate": false, "server_time": now,
		"want_inventory": *wantInventory && rep.Trigger == "startup"})
}

func listHealth(w http.ResponseWriter, r *http.Request, params []string, body []byte) int {
	mu.Lock()
	list := append([]healthReport{}, healthReports[params[0]]...)
	mu.Unlock()
	return writeJSON(w, 200, list)
}
