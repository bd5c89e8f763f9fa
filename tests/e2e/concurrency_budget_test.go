// limits.max_concurrent (issue 13): one budget shared by running probes and
// open shells, through the relay and the tunnel.
package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// waitConcurrency polls GET /v1/health until its concurrency block says
// in_use of limit (bounded).
func waitConcurrency(t *testing.T, a *Agent, is *issuer, inUse, limit int) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		st, body, _ := call(t, a, "GET", "/v1/health", is.tok("health:read"), "")
		var h struct {
			Concurrency *struct {
				InUse int `json:"in_use"`
				Limit int `json:"limit"`
			} `json:"concurrency"`
		}
		if st == 200 && json.Unmarshal([]byte(body), &h) == nil && h.Concurrency != nil &&
			h.Concurrency.InUse == inUse && h.Concurrency.Limit == limit {
			return
		}
		last = body
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("health never showed concurrency %d/%d; last %s", inUse, limit, last)
}

func TestConcurrencyBudgetSharedByShellsAndProbes(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "limits:\n  max_concurrent: 1\nhealth:\n  check_interval: 1s\n")

	// An open shell holds the only slot: a probe waits queued, it does not fail.
	ws, resp, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/cat"))
	if err != nil {
		t.Fatalf("dial: %v (%v)\n%s", err, resp, a.Log.String())
	}
	st, p, body := submit(t, a, is, `{"steps":[{"type":"exec","argv":["/bin/true"]}]}`)
	if st != 202 {
		t.Fatalf("submit: %d %s", st, body)
	}
	waitConcurrency(t, a, is, 1, 1)
	time.Sleep(500 * time.Millisecond)
	if r := getProbe(t, a, is, p.ID); r.State != "queued" {
		t.Fatalf("with the shell open the probe is %q, want queued", r.State)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"close"}`))
	readUntilExit(t, ws, 10*time.Second)
	ws.Close()
	if r := waitProbe(t, a, is, p.ID, 10*time.Second); r.State != "succeeded" {
		t.Fatalf("after the shell ended the probe is %q, want succeeded", r.State)
	}

	// A running probe holds it: a new shell is refused before the upgrade.
	st, slow, body := submit(t, a, is, `{"steps":[{"type":"exec","argv":["/bin/sleep","30"]}]}`)
	if st != 202 {
		t.Fatalf("submit: %d %s", st, body)
	}
	waitProbe(t, a, is, slow.ID, 10*time.Second, "running")
	_, resp, err = dialShell(t, a, is.tok("shell"), cmdQuery("/bin/cat"))
	if err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("shell while a probe runs: %v %v, want 429", resp, err)
	}
	var refusal struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&refusal)
	if refusal.Error.Code != "concurrency_limit" || !strings.Contains(refusal.Error.Message, "limits.max_concurrent") {
		t.Errorf("refusal %+v, want concurrency_limit naming limits.max_concurrent", refusal.Error)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
	// Cancelling the probe frees the slot: the next shell opens.
	if st, b, _ := call(t, a, "DELETE", "/v1/probes/"+slow.ID, is.tok("probe:cancel"), ""); st != 202 {
		t.Fatalf("cancel: %d %s", st, b)
	}
	waitProbe(t, a, is, slow.ID, 10*time.Second, "canceled")
	waitConcurrency(t, a, is, 0, 1)
	ws, resp, err = dialShell(t, a, is.tok("shell"), cmdQuery("/bin/sh", "-c", "exit 0"))
	if err != nil {
		t.Fatalf("shell after the probe ended: %v %v", resp, err)
	}
	readUntilExit(t, ws, 10*time.Second)
	ws.Close()
}
