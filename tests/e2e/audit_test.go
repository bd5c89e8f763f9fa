// End-to-end tests of the audit log at its boundary: the caller's bytes
// (X-Forwarded-For, the decoded path) never cost an audit line, long values
// are cut on character boundaries, a state-changing request whose line cannot
// be written is refused before it runs, and health reads record their status.
// Every request goes through the relay and the tunnel, as the control plane's do.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// auditFile returns the raw audit log and fails unless every line is valid
// UTF-8 JSON: Go's decoder would silently turn bad bytes into U+FFFD.
func auditRaw(t *testing.T, path string) []map[string]interface{} {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	var out []map[string]interface{}
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !utf8.Valid(line) {
			t.Fatalf("audit line is not valid UTF-8: %q", line)
		}
		var m map[string]interface{}
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("audit line is not JSON (torn?): %q", line)
		}
		out = append(out, m)
	}
	return out
}

// waitAuditLine polls the audit log at path until a line satisfies match (3 s).
func waitAuditLine(t *testing.T, path string, match func(map[string]interface{}) bool) map[string]interface{} {
	t.Helper()
	for i := 0; i < 150; i++ {
		for _, l := range auditRaw(t, path) {
			if match(l) {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func defaultAuditPath(a *Agent) string { return filepath.Join(a.Dir, "state", "audit.log") }

func listHas(l map[string]interface{}, key, name string) bool {
	xs, _ := l[key].([]interface{})
	for _, x := range xs {
		if x == name {
			return true
		}
	}
	return false
}

// sendXFF sends one request with a raw X-Forwarded-For value (any bytes).
func sendXFF(t *testing.T, a *Agent, method, path, token, body, xff string) (int, string) {
	t.Helper()
	status, b, _ := callXFF(t, a, method, path, token, body, xff)
	return status, b
}

func TestAuditRecordsInvalidUTF8ForwardedFor(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	xff := "198.51.100.7\xff\xc3 \\x41"
	status, body := sendXFF(t, a, "POST", "/v1/probes", is.tok("probe:run"),
		`{"steps":[{"type":"exec","argv":["true"]}]}`, xff)
	if status != 202 {
		t.Fatalf("POST: %d %s", status, body)
	}
	var rec probeRec
	_ = json.Unmarshal([]byte(body), &rec)
	l := waitAuditLine(t, defaultAuditPath(a), func(l map[string]interface{}) bool {
		return l["probe_id"] == rec.ID && l["outcome"] == "ok"
	})
	if l == nil {
		t.Fatalf("no audit line for probe %s (the one that ran); log:\n%s", rec.ID, a.Log.String())
	}
	// invalid bytes are \xNN; a literal backslash is doubled in an escaped field
	fwd, _ := l["forwarded_for"].(string)
	if !strings.HasPrefix(fwd, `198.51.100.7\xFF\xC3 \\x41`) || !listHas(l, "escaped", "forwarded_for") {
		t.Errorf("forwarded_for %q, escaped %v", fwd, l["escaped"])
	}
	if listHas(l, "escaped", "path") || l["path"] != "/v1/probes" {
		t.Errorf("a clean field is marked escaped or changed: %v", l)
	}
}

func TestAuditRecordsLongMultibyteForwardedFor(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	// 1 + 3·100 bytes: the 255-byte bound falls inside the 85th "€"
	xff := "a" + strings.Repeat("€", 100)
	status, body := sendXFF(t, a, "POST", "/v1/probes", is.tok("probe:run"),
		`{"steps":[{"type":"exec","argv":["true"]}]}`, xff)
	if status != 202 {
		t.Fatalf("POST: %d %s", status, body)
	}
	var rec probeRec
	_ = json.Unmarshal([]byte(body), &rec)
	l := waitAuditLine(t, defaultAuditPath(a), func(l map[string]interface{}) bool {
		return l["probe_id"] == rec.ID && l["outcome"] == "ok"
	})
	if l == nil {
		t.Fatalf("no audit line for probe %s (the one that ran); log:\n%s", rec.ID, a.Log.String())
	}
	fwd, _ := l["forwarded_for"].(string)
	if want := "a" + strings.Repeat("€", 84); fwd != want {
		t.Errorf("forwarded_for is %d bytes %q, want the first 84 whole characters", len(fwd), fwd)
	}
	if !listHas(l, "truncated", "forwarded_for") || listHas(l, "escaped", "forwarded_for") {
		t.Errorf("truncated %v escaped %v", l["truncated"], l["escaped"])
	}
}

func TestAuditRecordsDeniedNonUTF8Path(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	// decoded by the webhook to "/v1/probes/\xff\xfe": the {id} route matches, auth refuses
	for _, m := range []string{"GET", "DELETE"} {
		if status, body, _ := call(t, a, m, "/v1/probes/%FF%FEx", "", ""); status != 401 {
			t.Fatalf("%s: %d %s", m, status, body)
		}
	}
	if status, body, _ := call(t, a, "GET", "/v1/probes/%C3", is.tok("probe:run"), ""); status != 403 {
		t.Fatalf("wrong scope: %d %s", status, body)
	}
	for _, want := range []struct{ route, path string }{
		{"GET /v1/probes/{id}", `/v1/probes/\xFF\xFEx`},
		{"DELETE /v1/probes/{id}", `/v1/probes/\xFF\xFEx`},
		{"GET /v1/probes/{id}", `/v1/probes/\xC3`},
	} {
		l := waitAuditLine(t, defaultAuditPath(a), func(l map[string]interface{}) bool {
			return l["route"] == want.route && l["path"] == want.path
		})
		if l == nil {
			t.Fatalf("no audit line for the denied %s %s; lines %v", want.route, want.path, auditRaw(t, defaultAuditPath(a)))
		}
		if l["outcome"] != "denied" || !listHas(l, "escaped", "path") {
			t.Errorf("denied line: %v", l)
		}
	}
	if n := len(auditRaw(t, defaultAuditPath(a))); n != 3 {
		t.Errorf("%d audit lines for 3 denied requests", n)
	}
}

func TestAuditHealthReadsRecordStatus(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "health:\n  check_interval: 1s\n")
	for _, c := range []struct{ path, scope string }{{"/v1/health", "health:read"}, {"/metrics", "metrics:read"}} {
		if code, body, _ := call(t, a, "GET", c.path, is.tok(c.scope), ""); code != 200 {
			t.Fatalf("%s: %d %s", c.path, code, body)
		}
		route := "GET " + c.path
		l := waitAuditLine(t, defaultAuditPath(a), func(l map[string]interface{}) bool { return l["route"] == route })
		if l == nil {
			t.Fatalf("no audit line for %s", route)
		}
		if l["outcome"] != "ok" || l["status"] != float64(200) || l["error"] != "" {
			t.Errorf("%s audited as %v", route, l)
		}
	}
}

// startAgentOnTmpfs starts an agent (through a relay) whose audit log is on a
// small tmpfs of its own: the binary runs in a private mount namespace
// (unshare -m) that mounts the tmpfs over auditDir, so the test can fill that
// filesystem for real (ENOSPC, as root cannot be refused otherwise) through
// /proc/<pid>/root without touching the host.
func startAgentOnTmpfs(t *testing.T, is *issuer, auditDir string) *Agent {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is needed for a private tmpfs")
	}
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	dir := t.TempDir()
	port := freePort(t)
	a := &Agent{t: t, Dir: dir, Port: port, Log: &syncBuffer{}, done: make(chan struct{})}
	a.Config = writeConfig(t, dir, port, mergeYAML(mergeYAML(tunnelYAML(r, tok, ""), is.yaml()),
		"auth:\n  audit_file: "+filepath.Join(auditDir, "audit.log")+"\n"))
	a.Cmd = exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=256k,mode=0700 vma-audit "$0" && exec "$@"`,
		auditDir, agentBin(t), "run", "--config", a.Config)
	a.Cmd.Env = append(os.Environ(), fastReconnect...)
	a.Cmd.Stdout, a.Cmd.Stderr, a.Cmd.Dir = a.Log, a.Log, dir
	if err := a.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.exitErr = a.Cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.Signal(syscall.SIGKILL)
		<-a.done
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log.String())
		}
	})
	if err := a.waitReady(10 * time.Second); err != nil {
		t.Fatalf("agent did not become ready: %v\nlog:\n%s", err, a.Log.String())
	}
	if !r.WaitConnections(1, 15*time.Second) {
		t.Fatalf("agent did not connect to the relay\nagent log:\n%s", a.Log.String())
	}
	a.Base, a.Relay = r.ProxyURL(), r
	return a
}

// fillFS writes into path until the filesystem refuses (ENOSPC); bounded.
func fillFS(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; i < 1024; i++ { // 4 MiB at most; the tmpfs holds 256 KiB
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", path, err)
			}
			return
		}
	}
	t.Fatalf("%s never filled up: is the tmpfs mounted?", path)
}

func TestAuditFailureRefusesStateChange(t *testing.T) {
	is := newIssuer(t)
	auditDir := filepath.Join(t.TempDir(), "auditfs")
	if err := os.Mkdir(auditDir, 0700); err != nil {
		t.Fatal(err)
	}
	a := startAgentOnTmpfs(t, is, auditDir)
	// the agent's view of its tmpfs (the host sees an empty directory)
	inNS := filepath.Join(fmt.Sprintf("/proc/%d/root", a.Cmd.Process.Pid), auditDir)
	auditPath := filepath.Join(inNS, "audit.log")
	marker := filepath.Join(t.TempDir(), "ran")
	runBody := mustJSON(map[string]interface{}{"steps": []interface{}{
		map[string]interface{}{"type": "exec", "argv": []string{"/usr/bin/touch", marker}}}})

	// a running probe to try to cancel once the disk is full
	status, sleeper, body := submit(t, a, is, `{"steps":[{"type":"exec","argv":["/bin/sleep","30"]}]}`)
	if status != 202 {
		t.Fatalf("POST sleeper: %d %s", status, body)
	}
	waitProbe(t, a, is, sleeper.ID, 10*time.Second, "running")

	fillFS(t, filepath.Join(inNS, "fill"))
	// the audit file's last page may still take a few lines: reads go on being
	// answered until the agent reports, loudly, that a line was lost
	lost := false
	for i := 0; i < 100 && !lost; i++ {
		if code, b, _ := call(t, a, "GET", "/v1/probes", is.tok("probe:read"), ""); code != 200 {
			t.Fatalf("a read on a full disk: %d %s", code, b)
		}
		lost = strings.Contains(a.Log.String(), "error audit: ")
	}
	if !lost {
		t.Fatalf("the audit log never failed on a full tmpfs; log:\n%s", a.Log.String())
	}

	// POST that would run something: refused before it runs
	code, b, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:run"), runBody)
	if code != 500 || decodeError(t, b).Error.Code != "audit_unavailable" {
		t.Errorf("POST with an unwritable audit log: %d %s", code, b)
	}
	// DELETE: the sleeper keeps running
	code, b, _ = call(t, a, "DELETE", "/v1/probes/"+sleeper.ID, is.tok("probe:cancel"), "")
	if code != 500 || decodeError(t, b).Error.Code != "audit_unavailable" {
		t.Errorf("DELETE with an unwritable audit log: %d %s", code, b)
	}
	// upgrade: refused before its body is even read (a bad body would be 400)
	code, b, _ = call(t, a, "POST", "/v1/upgrade", is.tok("agent:upgrade"), `{}`)
	if code != 500 || decodeError(t, b).Error.Code != "audit_unavailable" {
		t.Errorf("POST /v1/upgrade with an unwritable audit log: %d %s", code, b)
	}
	if got := getProbe(t, a, is, sleeper.ID); got.State != "running" {
		t.Errorf("the cancel ran although it was not audited: %s", got.State)
	}
	code, b, _ = call(t, a, "GET", "/v1/probes", is.tok("probe:read"), "")
	var list struct{ Probes []probeRec }
	_ = json.Unmarshal([]byte(b), &list)
	if code != 200 || len(list.Probes) != 1 {
		t.Errorf("probes after the refused POST: %d %s", code, b)
	}
	// the list above holds only the sleeper: no record, so nothing queued to run
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("the POST ran although its audit line could not be written")
	}

	// space again: the same request is accepted, runs, and both lines are there
	if err := os.Remove(filepath.Join(inNS, "fill")); err != nil {
		t.Fatal(err)
	}
	status, rec, body := submit(t, a, is, runBody)
	if status != 202 {
		t.Fatalf("POST after space was freed: %d %s", status, body)
	}
	waitProbe(t, a, is, rec.ID, 10*time.Second, "succeeded")
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the accepted probe did not run: %v", err)
	}
	// the "started" line (before the action) and the result share the jti
	lines := auditRaw(t, auditPath) // also: no torn line anywhere
	var jti interface{}
	for _, l := range lines {
		if l["probe_id"] == rec.ID && l["outcome"] == "ok" && l["status"] == float64(202) {
			jti = l["jti"]
		}
	}
	started := false
	for _, l := range lines {
		if jti != nil && l["jti"] == jti && l["outcome"] == "started" && l["route"] == "POST /v1/probes" {
			started = true
		}
	}
	if jti == nil || !started {
		t.Errorf("audit lines for the accepted POST: result jti %v, started line %v", jti, started)
	}
	if log := a.Log.String(); !strings.Contains(log, "audit line NOT written") || !strings.Contains(log, "refused") {
		t.Errorf("the lost read line and the refusal are not logged loudly")
	}
}

// A caller's field name longer than the error path's bound, cut inside a
// character, still gets its 400 with the JSON path (not a 500 from the encoder),
// and the audit line says 400 as the answer did.
func TestAuditInvalidRequestWithLongMultibyteKeyIs400(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	key := "xy" + strings.Repeat("€", 60) // the name is cut at 64 bytes: inside a "€"
	status, b, _ := call(t, a, "POST", "/v1/probes", is.tok("probe:run"),
		`{"steps":[{"type":"exec","argv":["true"]}],"`+key+`":1}`)
	var e struct {
		Error struct{ Code, Message, Path string }
	}
	if err := json.Unmarshal([]byte(b), &e); status != 400 || err != nil || e.Error.Code != "invalid_request" ||
		!strings.HasPrefix(key, e.Error.Path) || e.Error.Path == "" || !utf8.ValidString(e.Error.Path) {
		t.Fatalf("invalid request with a long multibyte key: %d %s", status, b)
	}
	l := waitAuditLine(t, defaultAuditPath(a), func(l map[string]interface{}) bool {
		return l["route"] == "POST /v1/probes" && l["outcome"] != "started"
	})
	if l == nil || l["status"] != float64(400) || l["error"] != "invalid_request" {
		t.Errorf("audit line %v", l)
	}
}
