// user.ensure, group.ensure, sudoers.ensure and sshd.harden inside a booted
// Debian 12 container (nspawn_harness_test.go), driven through the relay:
// the happy path, a second run that changes nothing, check mode that leaves
// every file it would touch byte-identical, bad input refused with 400 and
// the JSON path, and the failures that matter (a rule visudo refuses, a
// setting `sshd -t` refuses) leaving the old files and a working daemon.
package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

var userFiles = []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"}

// bootUsersHost boots the container and waits (20 s at most) until the agent's
// webhook answers through the relay: the tunnel connects before the webhook
// socket exists, and a slow (ASan) start loses the first request otherwise.
func bootUsersHost(t *testing.T) *Host {
	t.Helper()
	h := bootHost(t, "")
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, _, _ := call(t, h.A, "GET", "/v1/livez", "", "")
		if status == 200 {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's webhook did not answer through the relay in 20 s (last %d)", status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostSteps runs one probe and returns its steps; the probe must end in want.
func hostSteps(t *testing.T, h *Host, want string, steps ...string) []map[string]interface{} {
	t.Helper()
	rec := h.Probe(t, `{"continue_on_error":true,"steps":[`+strings.Join(steps, ",")+`]}`)
	if rec.State != want || len(rec.Steps) != len(steps) {
		b, _ := json.MarshalIndent(rec, "", " ")
		t.Fatalf("probe state %s, want %s:\n%s", rec.State, want, b)
	}
	return rec.Steps
}

func changed(s map[string]interface{}) bool {
	c, _ := s["changed"].(bool)
	return c
}

// wantChanged checks every step's "changed" (and that it succeeded).
func wantChanged(t *testing.T, what string, steps []map[string]interface{}, want bool) {
	t.Helper()
	for i, s := range steps {
		if s["status"] != "succeeded" || changed(s) != want {
			b, _ := json.Marshal(s)
			t.Fatalf("%s: step %d: status %v changed %v, want changed %v: %s", what, i,
				s["status"], s["changed"], want, b)
		}
	}
}

func sameSums(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, s := range before {
		if after[p] != s {
			t.Errorf("%s: %s changed (%s -> %s)", what, p, s, after[p])
		}
	}
}

// wantBadRequest posts body and expects 400 invalid_request at path.
func wantBadRequest(t *testing.T, h *Host, body, path string) {
	t.Helper()
	status, _, raw := h.Submit(t, "probe:run host:write", body)
	var e struct {
		Error struct{ Code, Message, Path string } `json:"error"`
	}
	_ = json.Unmarshal([]byte(raw), &e)
	if status != 400 || e.Error.Code != "invalid_request" || e.Error.Path != path {
		t.Errorf("%s: %d %s, want 400 at %s", body, status, raw, path)
	}
}

func TestHostUsersUserAndGroupEnsure(t *testing.T) {
	h := bootUsersHost(t)
	c := h.C
	group := `{"type":"group.ensure","name":"ops","gid":2500}`
	user := `{"type":"user.ensure","name":"alice","uid":2501,"groups":["ops","adm"],"shell":"/bin/bash"}`
	checked := func(s string) string { return strings.TrimSuffix(s, "}") + `,"check":true}` }

	// check mode reports the change and touches nothing
	before := c.Sha256(t, userFiles...)
	steps := hostSteps(t, h, "succeeded", checked(group), checked(user))
	wantChanged(t, "check", steps, true)
	if steps[1]["check"] != true {
		t.Errorf("check flag: %v", steps[1])
	}
	sameSums(t, "check mode", before, c.Sha256(t, userFiles...))
	if _, _, code := c.Exec("id", "alice"); code == 0 {
		t.Fatal("check mode created alice")
	}

	steps = hostSteps(t, h, "succeeded", group, user)
	wantChanged(t, "create", steps, true)
	if got := strings.TrimSpace(c.Run(t, "getent", "passwd", "alice")); !strings.HasPrefix(got, "alice:x:2501:") ||
		!strings.HasSuffix(got, ":/home/alice:/bin/bash") {
		t.Errorf("passwd: %q", got)
	}
	if got := strings.TrimSpace(c.Run(t, "id", "-nG", "alice")); got != "alice adm ops" {
		t.Errorf("groups: %q", got)
	}
	c.Run(t, "test", "-d", "/home/alice")
	if after, _ := steps[1]["after"].(map[string]interface{}); after == nil || after["groups"] != "adm,ops" {
		t.Errorf("after: %v", steps[1]["after"])
	}

	// the same request again: nothing to do, nothing written
	before = c.Sha256(t, userFiles...)
	wantChanged(t, "second run", hostSteps(t, h, "succeeded", group, user), false)
	sameSums(t, "second run", before, c.Sha256(t, userFiles...))

	// a change reports before and after of what moved
	steps = hostSteps(t, h, "succeeded",
		`{"type":"user.ensure","name":"alice","groups":["ops"],"shell":"/bin/sh"}`)
	wantChanged(t, "modify", steps, true)
	whats := map[string]bool{}
	for _, ch := range steps[0]["changes"].([]interface{}) {
		m := ch.(map[string]interface{})
		whats[fmt.Sprint(m["what"], ":", m["before"], "->", m["after"])] = true
	}
	if !whats["groups:adm,ops->ops"] || !whats["shell:/bin/bash->/bin/sh"] {
		t.Errorf("changes: %v", steps[0]["changes"])
	}

	// a shell that does not exist would lock the account out
	steps = hostSteps(t, h, "failed", `{"type":"user.ensure","name":"alice","shell":"/bin/nosuch"}`)
	if steps[0]["error_code"] != "bad_shell" || changed(steps[0]) {
		t.Errorf("bad shell: %v", steps[0])
	}

	// removal keeps the home unless asked
	steps = hostSteps(t, h, "succeeded", `{"type":"user.ensure","name":"alice","state":"absent"}`,
		`{"type":"group.ensure","name":"ops","state":"absent"}`)
	wantChanged(t, "remove", steps, true)
	if _, _, code := c.Exec("id", "alice"); code == 0 {
		t.Error("alice still exists")
	}
	c.Run(t, "test", "-d", "/home/alice")
	if _, _, code := c.Exec("getent", "group", "ops"); code == 0 {
		t.Error("group ops still exists")
	}
	wantChanged(t, "remove again", hostSteps(t, h, "succeeded",
		`{"type":"user.ensure","name":"alice","state":"absent"}`), false)
	hostSteps(t, h, "succeeded", `{"type":"user.ensure","name":"bob"}`)
	c.Run(t, "test", "-d", "/home/bob")
	hostSteps(t, h, "succeeded", `{"type":"user.ensure","name":"bob","state":"absent","remove_home":true}`)
	if _, _, code := c.Exec("test", "-e", "/home/bob"); code == 0 {
		t.Error("remove_home kept /home/bob")
	}

	// bad input: 400 with the path, before anything runs
	wantBadRequest(t, h, `{"steps":[{"type":"user.ensure","name":"Bad Name"}]}`, "steps[0].name")
	wantBadRequest(t, h, `{"steps":[{"type":"exec","argv":["true"]},{"type":"user.ensure","name":"a","shell":"bash"}]}`,
		"steps[1].shell")
	wantBadRequest(t, h, `{"steps":[{"type":"user.ensure","name":"a","uid":0}]}`, "steps[0].uid")
	wantBadRequest(t, h, `{"steps":[{"type":"group.ensure","name":"ops","gid":-3}]}`, "steps[0].gid")
	// probe:run alone is not enough
	status, _, raw := h.Submit(t, "probe:run", `{"steps":[{"type":"group.ensure","name":"ops"}]}`)
	if status != 403 || !strings.Contains(raw, "insufficient_scope") {
		t.Errorf("without host:write: %d %s", status, raw)
	}
}

func TestHostUsersSudoersEnsure(t *testing.T) {
	h := bootUsersHost(t)
	c := h.C
	const path = "/etc/sudoers.d/vma-ops"
	rule := `{"type":"sudoers.ensure","name":"vma-ops","user":"root","commands":["/usr/bin/systemctl restart cron","/usr/bin/journalctl"],"nopasswd":true}`

	steps := hostSteps(t, h, "succeeded", strings.TrimSuffix(rule, "}")+`,"check":true}`)
	wantChanged(t, "check", steps, true)
	if sums := c.Sha256(t, path); sums[path] != "missing" {
		t.Fatal("check mode wrote the drop-in")
	}

	wantChanged(t, "install", hostSteps(t, h, "succeeded", rule), true)
	if got := strings.TrimSpace(c.Run(t, "stat", "-c", "%a %U:%G", path)); got != "440 root:root" {
		t.Errorf("mode: %q", got)
	}
	body, _ := c.ReadFile(t, path)
	if !strings.Contains(body, "root ALL=(ALL:ALL) NOPASSWD: /usr/bin/systemctl restart cron, /usr/bin/journalctl\n") {
		t.Errorf("drop-in: %q", body)
	}
	c.Run(t, "visudo", "-c")
	if out := c.Run(t, "sudo", "-l", "-U", "root"); !strings.Contains(out, "/usr/bin/journalctl") {
		t.Errorf("sudo -l does not show the rule:\n%s", out)
	}

	before := c.Sha256(t, path)
	wantChanged(t, "second run", hostSteps(t, h, "succeeded", rule), false)
	sameSums(t, "second run", before, c.Sha256(t, path))

	// a rule visudo refuses (an argument regex "^…" without its "$")
	// leaves the installed file byte-identical and sudo working
	steps = hostSteps(t, h, "failed",
		`{"type":"sudoers.ensure","name":"vma-ops","user":"root","commands":["/usr/bin/ls ^unterminated"]}`)
	if steps[0]["error_code"] != "visudo_rejected" || changed(steps[0]) {
		t.Errorf("visudo failure: %v", steps[0])
	}
	sameSums(t, "refused rule", before, c.Sha256(t, path))
	c.Run(t, "visudo", "-c")
	c.Run(t, "sudo", "-n", "true")

	// a name sudo would ignore, an injected line, a relative command: 400
	wantBadRequest(t, h, `{"steps":[{"type":"sudoers.ensure","name":"ops.conf","user":"root","commands":["ALL"]}]}`,
		"steps[0].name")
	wantBadRequest(t, h, `{"steps":[{"type":"sudoers.ensure","name":"ops","user":"root","commands":["/bin/true\nALL ALL=(ALL) NOPASSWD: ALL"]}]}`,
		"steps[0].commands[0]")
	wantBadRequest(t, h, `{"steps":[{"type":"sudoers.ensure","name":"ops","group":"adm","commands":["true"]}]}`,
		"steps[0].commands[0]")

	steps = hostSteps(t, h, "succeeded", `{"type":"sudoers.ensure","name":"vma-ops","state":"absent"}`)
	wantChanged(t, "remove", steps, true)
	if sums := c.Sha256(t, path); sums[path] != "missing" {
		t.Error("the drop-in is still there")
	}
}

// sshAnswers says whether sshd in the container sends its banner on port.
func sshAnswers(t *testing.T, c *Container, port int) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _, code := c.Exec("timeout", "3", "bash", "-c",
			fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && head -c 4 <&3", port))
		if code == 0 && out == "SSH-" {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

func TestHostUsersSshdHarden(t *testing.T) {
	h := bootUsersHost(t)
	c := h.C
	const dropin = "/etc/ssh/sshd_config.d/50-vm-agent.conf"
	files := []string{"/etc/ssh/sshd_config", dropin}
	harden := `{"type":"sshd.harden","disable_password_auth":true,"disable_root_login":true,"allow_users":["root","admin"],"extra":{"MaxAuthTries":"3"}}`
	// the harness gives sshd a free port of its own on 127.0.0.1 (in the
	// main file, after its Include: the host's sshd has port 22)
	port := c.SSHPort
	if !sshAnswers(t, c, port) {
		t.Fatal("sshd does not answer in the fresh container")
	}
	before := c.Sha256(t, files...)
	steps := hostSteps(t, h, "succeeded", strings.TrimSuffix(harden, "}")+`,"check":true}`)
	wantChanged(t, "check", steps, true)
	sameSums(t, "check mode", before, c.Sha256(t, files...))

	steps = hostSteps(t, h, "succeeded", harden)
	wantChanged(t, "harden", steps, true)
	keys := fmt.Sprint(steps[0]["modified_keys"])
	if keys != "[PasswordAuthentication PermitRootLogin AllowUsers MaxAuthTries]" || steps[0]["mode"] != "drop-in" {
		t.Errorf("modified keys %s, mode %v", keys, steps[0]["mode"])
	}
	eff := c.Run(t, "sshd", "-T")
	for _, want := range []string{"passwordauthentication no", "permitrootlogin no", "allowusers root",
		"maxauthtries 3"} {
		if !strings.Contains(eff, want+"\n") {
			t.Errorf("sshd -T lacks %q", want)
		}
	}
	if !sshAnswers(t, c, port) || steps[0]["port"] != float64(port) {
		t.Fatalf("sshd does not answer after the reload (the step tested port %v)", steps[0]["port"])
	}

	hardened := c.Sha256(t, files...)
	steps = hostSteps(t, h, "succeeded", harden)
	wantChanged(t, "second run", steps, false)
	if fmt.Sprint(steps[0]["modified_keys"]) != "[]" {
		t.Errorf("second run keys: %v", steps[0]["modified_keys"])
	}
	sameSums(t, "second run", hardened, c.Sha256(t, files...))

	// a keyword sshd does not know passes our grammar and fails `sshd -t`:
	// the old drop-in comes back byte-identical and the daemon still answers
	steps = hostSteps(t, h, "failed",
		`{"type":"sshd.harden","disable_password_auth":true,"extra":{"NoSuchKeyword":"yes"}}`)
	if steps[0]["error_code"] != "sshd_rejected" || steps[0]["restored"] != true || changed(steps[0]) {
		t.Errorf("sshd -t failure: %v", steps[0])
	}
	sameSums(t, "refused setting", hardened, c.Sha256(t, files...))
	if !sshAnswers(t, c, port) {
		t.Error("sshd does not answer after the refused setting")
	}

	// a port sshd accepts (`sshd -t` does not bind) where, after the reload,
	// something else answers without an SSH banner: rolled back, reloaded
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		for {
			conn, err := other.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			conn.Close()
		}
	}()
	otherPort := other.Addr().(*net.TCPAddr).Port
	steps = hostSteps(t, h, "failed", fmt.Sprintf(`{"type":"sshd.harden","disable_password_auth":true,"port":%d}`, otherPort))
	if steps[0]["error_code"] != "sshd_unreachable" || steps[0]["restored"] != true || changed(steps[0]) {
		t.Errorf("unreachable sshd: %v", steps[0])
	}
	sameSums(t, "unreachable setting", hardened, c.Sha256(t, files...))
	if !sshAnswers(t, c, port) {
		t.Error("sshd does not answer after the rollback")
	}

	// no Include in sshd_config: a marked block on top of it instead
	c.Run(t, "sed", "-i", "/^Include/d", "/etc/ssh/sshd_config")
	c.Run(t, "rm", "-f", dropin)
	steps = hostSteps(t, h, "succeeded", `{"type":"sshd.harden","disable_root_login":true}`)
	wantChanged(t, "in-place", steps, true)
	conf, _ := c.ReadFile(t, "/etc/ssh/sshd_config")
	if steps[0]["mode"] != "in-place" || !strings.HasPrefix(conf, "# BEGIN vm-agent sshd.harden") ||
		!strings.Contains(conf, "\nPermitRootLogin no\n# END vm-agent sshd.harden\n") {
		t.Errorf("in-place: mode %v\n%s", steps[0]["mode"], conf)
	}
	wantChanged(t, "in-place again", hostSteps(t, h, "succeeded",
		`{"type":"sshd.harden","disable_root_login":true}`), false)
	if !sshAnswers(t, c, port) {
		t.Error("sshd does not answer after the in-place edit")
	}

	wantBadRequest(t, h, `{"steps":[{"type":"sshd.harden","extra":{"MaxAuthTries":"3\nPermitRootLogin yes"}}]}`,
		"steps[0].extra.MaxAuthTries")
	wantBadRequest(t, h, `{"steps":[{"type":"sshd.harden","extra":{"Include":"/tmp/x"}}]}`, "steps[0].extra.Include")
	wantBadRequest(t, h, `{"steps":[{"type":"sshd.harden","port":70000}]}`, "steps[0].port")
}
