// cron.ensure, cron.list and ssh_keys.sync inside a booted Debian 12
// container (nspawn_harness_test.go), driven through the relay: happy paths,
// second runs that change nothing, check mode proven by checksums, bad input
// refused with its JSON path, key sources that are garbage or too large, and
// symlinks where the keys live.
package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// One probe of one step through the relay with scope; the step's record.
func (h *Host) step(t *testing.T, scope, stepJSON string) map[string]interface{} {
	t.Helper()
	status, r, raw := h.Submit(t, scope, `{"steps":[`+stepJSON+`]}`)
	if status != 202 && status != 200 && status != 201 {
		t.Fatalf("POST /v1/probes %s: %d %s", stepJSON, status, raw)
	}
	rec := waitProbe(t, h.A, h.Is, r.ID, time.Minute)
	if len(rec.Steps) != 1 {
		t.Fatalf("probe %s: %+v", stepJSON, rec)
	}
	return rec.Steps[0]
}

// A refused submission: the status, the error code and the JSON path.
func (h *Host) refused(t *testing.T, scope, stepJSON string, status int, code, path string) {
	t.Helper()
	got, _, raw := h.Submit(t, scope, `{"steps":[`+stepJSON+`]}`)
	if got != status || !strings.Contains(raw, `"code":"`+code+`"`) ||
		!strings.Contains(raw, `"path":"`+path+`"`) {
		t.Errorf("%s: got %d %s, want %d %s at %s", stepJSON, got, raw, status, code, path)
	}
}

func wantOK(t *testing.T, what string, s map[string]interface{}, changed bool) {
	t.Helper()
	if s["status"] != "succeeded" || s["changed"] != changed {
		t.Fatalf("%s: want succeeded, changed=%v: %s", what, changed, mustJSON(s))
	}
}

func wantFailed(t *testing.T, what string, s map[string]interface{}, code string) {
	t.Helper()
	if s["status"] != "failed" || s["error_code"] != code {
		t.Fatalf("%s: want failed with %s: %s", what, code, mustJSON(s))
	}
}

const cronWrite = "probe:run host:write"

func TestHostCronEnsureAndList(t *testing.T) {
	h := bootHost(t, "")
	c := h.C
	c.Run(t, "useradd", "-m", "alice")
	mine := "MAILTO=\"\"\n# my own job, kept as it is\n*/5 * * * *\t/bin/true   # mine\n"
	if _, errs, code := c.exec([]byte(mine), 30*time.Second, "crontab", "-u", "alice", "-"); code != 0 {
		t.Fatalf("crontab -u alice -: %s", errs)
	}
	spool := "/var/spool/cron/crontabs/alice"
	listed := func() string { return c.Run(t, "crontab", "-l", "-u", "alice") }
	if got := listed(); got != mine {
		t.Fatalf("crontab -l does not give back what was installed (header lines?):\n%q", got)
	}
	job := `{"type":"cron.ensure","name":"backup","user":"alice","schedule":"0 3 * * *",` +
		`"command":"date +%F >> /tmp/backup.log","env":{"PATH":"/usr/bin:/bin"}@EXTRA@}`
	jobWith := func(extra string) string { return strings.Replace(job, "@EXTRA@", extra, 1) }

	// check mode: what would change, nothing changed
	before := c.Sha256(t, spool)
	s := h.step(t, cronWrite, jobWith(`,"check":true`))
	wantOK(t, "check", s, true)
	if s["check"] != true || s["action"] != "created" || !strings.Contains(mustJSON(s["changes"]), `date +\\%F`) {
		t.Errorf("check result: %s", mustJSON(s))
	}
	if after := c.Sha256(t, spool); after[spool] != before[spool] {
		t.Fatalf("check mode changed the crontab: %v -> %v", before, after)
	}

	// the real run: one marked block, unmanaged lines byte for byte, % escaped
	s = h.step(t, cronWrite, jobWith(""))
	wantOK(t, "create", s, true)
	if s["action"] != "created" {
		t.Errorf("create: %s", mustJSON(s))
	}
	want := mine + "# BEGIN vm-agent backup\nPATH=/usr/bin:/bin\n" +
		"0 3 * * * date +\\%F >> /tmp/backup.log\n# END vm-agent backup\n"
	if got := listed(); got != want {
		t.Fatalf("crontab after create:\n%q\nwant\n%q", got, want)
	}

	// second run: nothing to do, the spool file is not even rewritten
	before = c.Sha256(t, spool)
	mtime := c.Run(t, "stat", "-c", "%Y.%Z", spool)
	s = h.step(t, cronWrite, jobWith(""))
	wantOK(t, "second run", s, false)
	if s["action"] != "none" || c.Run(t, "stat", "-c", "%Y.%Z", spool) != mtime ||
		c.Sha256(t, spool)[spool] != before[spool] {
		t.Errorf("second run touched the crontab: %s", mustJSON(s))
	}

	// cron.list needs host:read only and sees both kinds
	s = h.step(t, "probe:run host:read", `{"type":"cron.list","user":"alice"}`)
	wantOK(t, "list", s, false)
	l := mustJSON(s)
	for _, w := range []string{`"name":"backup"`, `"schedule":"0 3 * * *"`,
		`"command":"date +%F \u003e\u003e /tmp/backup.log"`, `"kind":"env"`, `"kind":"comment"`,
		`"schedule":"*/5 * * * *"`, `"command":"/bin/true   # mine"`} {
		if !strings.Contains(l, w) {
			t.Errorf("cron.list lacks %s: %s", w, l)
		}
	}

	// an update shows before, after and the diff; then removal leaves only mine
	s = h.step(t, cronWrite, strings.Replace(jobWith(""), "0 3 * * *", "30 4 * * 1-5", 1))
	wantOK(t, "update", s, true)
	if s["action"] != "updated" || !strings.Contains(mustJSON(s), `-0 3 * * * date`) ||
		!strings.Contains(mustJSON(s), `+30 4 * * 1-5 date`) {
		t.Errorf("update: %s", mustJSON(s))
	}
	s = h.step(t, cronWrite, `{"type":"cron.ensure","name":"backup","user":"alice","state":"absent"}`)
	wantOK(t, "remove", s, true)
	if got := listed(); got != mine {
		t.Errorf("after removal:\n%q\nwant\n%q", got, mine)
	}
	s = h.step(t, cronWrite, `{"type":"cron.ensure","name":"backup","user":"alice","state":"absent"}`)
	wantOK(t, "remove again", s, false)

	// a user without a crontab gets one; a missing user is a clear failure
	c.Run(t, "useradd", "-m", "bert")
	s = h.step(t, cronWrite, `{"type":"cron.ensure","name":"hourly","user":"bert","schedule":"@hourly","command":"/bin/true"}`)
	wantOK(t, "new crontab", s, true)
	if got := c.Run(t, "crontab", "-l", "-u", "bert"); got != "# BEGIN vm-agent hourly\n@hourly /bin/true\n# END vm-agent hourly\n" {
		t.Errorf("bert: %q", got)
	}
	s = h.step(t, cronWrite, `{"type":"cron.ensure","name":"x","user":"nosuchuser","schedule":"@daily","command":"true"}`)
	wantFailed(t, "missing user", s, "no_such_user")

	// bad input: 400 with the path; scope: host:write needed, host:read is not enough
	base := `{"type":"cron.ensure","name":"x","user":"alice","schedule":"@daily","command":"true"`
	for _, bad := range []struct{ body, path string }{
		{strings.Replace(base, "@daily", "61 * * * *", 1) + `}`, "steps[0].schedule"},
		{strings.Replace(base, "@daily", "* * * *", 1) + `}`, "steps[0].schedule"},
		{strings.Replace(base, "@daily", "@every_minute", 1) + `}`, "steps[0].schedule"},
		{strings.Replace(base, `"true"`, `"echo a\nb"`, 1) + `}`, "steps[0].command"},
		{strings.Replace(base, `"true"`, `"date +\\%F"`, 1) + `}`, "steps[0].command"},
		{strings.Replace(base, `"alice"`, `"Alice Smith"`, 1) + `}`, "steps[0].user"},
		{strings.Replace(base, `"name":"x"`, `"name":"a b"`, 1) + `}`, "steps[0].name"},
		{base + `,"env":{"1X":"v"}}`, "steps[0].env.1X"},
		{base + `,"env":{"A":"x\ny"}}`, "steps[0].env.A"},
		{base + `,"state":"gone"}`, "steps[0].state"},
		{base + `,"sched":"typo"}`, "steps[0].sched"},
		{`{"type":"cron.list","user":"alice","extra":1}`, "steps[0].extra"},
	} {
		h.refused(t, cronWrite, bad.body, 400, "invalid_request", bad.path)
	}
	h.refused(t, "probe:run", base+`}`, 403, "insufficient_scope", "steps[0].type")
	h.refused(t, "probe:run host:read", base+`}`, 403, "insufficient_scope", "steps[0].type")
	h.refused(t, "probe:run", `{"type":"cron.list","user":"alice"}`, 403, "insufficient_scope", "steps[0].type")
	if got := listed(); got != mine {
		t.Errorf("refused requests changed the crontab: %q", got)
	}
}

// sshPub makes an Ed25519 public key line "ssh-ed25519 BASE64 comment".
func sshPub(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var blob []byte
	for _, part := range [][]byte{[]byte("ssh-ed25519"), pub} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(part)))
		blob = append(blob, part...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " " + comment
}

// keyServer serves what body returns on 127.0.0.1 (the container shares the
// host network); sent counts the bytes handed to the connection.
type keyServer struct {
	URL  string
	body atomic.Value // func(w http.ResponseWriter)
	sent int64
}

func startKeyServer(t *testing.T) *keyServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ks := &keyServer{URL: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.body.Load().(func(http.ResponseWriter))(w)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ks
}

func (ks *keyServer) serve(text string) {
	ks.body.Store(func(w http.ResponseWriter) {
		n, _ := w.Write([]byte(text))
		atomic.AddInt64(&ks.sent, int64(n))
	})
}

const keysWrite = "probe:run host:write"

func TestHostSSHKeysSync(t *testing.T) {
	h := bootHost(t, "")
	c := h.C
	c.Run(t, "useradd", "-m", "bob")
	ak := "/home/bob/.ssh/authorized_keys"
	k1, k2, k3, mine := sshPub(t, "k1"), sshPub(t, "k2"), sshPub(t, "k3"), sshPub(t, "bob@laptop")
	c.Run(t, "install", "-d", "-o", "bob", "-g", "bob", "-m", "0755", "/home/bob/.ssh")
	unmanaged := "# bob's own\nno-pty " + mine + "\n"
	c.WriteFile(t, ak, []byte(unmanaged), 0644)
	c.Run(t, "chown", "bob:bob", ak)
	keys := fmt.Sprintf(`{"type":"ssh_keys.sync","user":"bob","keys":[%q,%q,%q]%%s}`, k1, k2, k1+" again")

	// check mode: the counts and the diff, nothing touched
	before := c.Sha256(t, ak)
	s := h.step(t, keysWrite, fmt.Sprintf(keys, `,"check":true`))
	wantOK(t, "check", s, true)
	if s["added"] != 2.0 || s["kept"] != 1.0 || s["removed"] != 0.0 || s["check"] != true {
		t.Errorf("check counts: %s", mustJSON(s))
	}
	if c.Sha256(t, ak)[ak] != before[ak] || strings.TrimSpace(c.Run(t, "stat", "-c", "%a", "/home/bob/.ssh", ak)) != "755\n644" {
		t.Fatalf("check mode changed the files")
	}

	// the real run: the unmanaged lines first, verbatim; the block; 0700/0600, bob's
	s = h.step(t, keysWrite, fmt.Sprintf(keys, ""))
	wantOK(t, "sync", s, true)
	if s["added"] != 2.0 || s["kept"] != 1.0 || s["removed"] != 0.0 {
		t.Errorf("sync counts: %s", mustJSON(s))
	}
	got, _ := c.ReadFile(t, ak)
	block := "# BEGIN vm-agent ssh_keys (managed: edits here are replaced)\n"
	if want := unmanaged + block + k1 + "\n" + k2 + "\n# END vm-agent ssh_keys\n"; got != want {
		t.Fatalf("authorized_keys:\n%s\nwant\n%s", got, want)
	}
	if st := c.Run(t, "stat", "-c", "%a %U %G", "/home/bob/.ssh", ak); st != "700 bob bob\n600 bob bob\n" {
		t.Errorf("modes and owners: %q", st)
	}

	// second run: nothing changes, not even the inode
	ino := c.Run(t, "stat", "-c", "%i %Y", ak)
	s = h.step(t, keysWrite, fmt.Sprintf(keys, ""))
	wantOK(t, "second run", s, false)
	if s["added"] != 0.0 || s["kept"] != 3.0 || c.Run(t, "stat", "-c", "%i %Y", ak) != ino {
		t.Errorf("second run: %s", mustJSON(s))
	}

	// from a URL through the agent's HTTP client: k2 leaves the block, k3 comes in
	ks := startKeyServer(t)
	ks.serve(k1 + "\n" + k3 + "\n")
	url := fmt.Sprintf(`{"type":"ssh_keys.sync","user":"bob","source_url":%q%%s}`, ks.URL+"/bob.keys")
	s = h.step(t, keysWrite, fmt.Sprintf(url, ""))
	wantOK(t, "url", s, true)
	if s["added"] != 1.0 || s["removed"] != 1.0 || s["kept"] != 2.0 {
		t.Errorf("url counts: %s", mustJSON(s))
	}
	synced := c.Sha256(t, ak)[ak]

	// garbage, an HTML error page, an empty list, a 404 and a too large answer add nothing
	for _, bad := range []struct{ body, code string }{
		{k1 + "\nthis is not a key\n", "source_invalid"},
		{"<html><body>rate limited</body></html>\n", "source_invalid"},
		{"\n", "source_empty"},
		{strings.Repeat(k3+"\n", 2000), "source_invalid"}, // 2000 keys > 1024
	} {
		ks.serve(bad.body)
		s = h.step(t, keysWrite, fmt.Sprintf(url, ""))
		wantFailed(t, bad.code, s, bad.code)
		if !strings.Contains(s["error"].(string), "nothing") {
			t.Errorf("%s: message %q", bad.code, s["error"])
		}
	}
	ks.body.Store(func(w http.ResponseWriter) { http.Error(w, "no such user", 404) })
	wantFailed(t, "404", h.step(t, keysWrite, fmt.Sprintf(url, "")), "source_http_status")
	atomic.StoreInt64(&ks.sent, 0)
	const huge = 64 << 20
	ks.body.Store(func(w http.ResponseWriter) {
		line := []byte(k3 + "\n")
		for n := 0; n < huge; n += len(line) {
			m, err := w.Write(line)
			atomic.AddInt64(&ks.sent, int64(m))
			if err != nil {
				return
			}
		}
	})
	s = h.step(t, keysWrite, fmt.Sprintf(url, ""))
	wantFailed(t, "too large", s, "source_too_large")
	if sent := atomic.LoadInt64(&ks.sent); sent >= huge/2 {
		t.Errorf("the agent read %d of %d bytes of a too large answer", sent, huge)
	} else {
		t.Logf("too large: the server got %d KiB out before the agent hung up (cap 256 KiB)", sent>>10)
	}
	if c.Sha256(t, ak)[ak] != synced {
		t.Fatal("a failed source changed authorized_keys")
	}

	// exclusive: the file holds the wanted keys and nothing else
	ks.serve(k1 + "\n")
	s = h.step(t, keysWrite, fmt.Sprintf(url, `,"exclusive":true`))
	wantOK(t, "exclusive", s, true)
	if s["added"] != 0.0 || s["removed"] != 2.0 || s["kept"] != 1.0 {
		t.Errorf("exclusive counts: %s", mustJSON(s))
	}
	if got, _ := c.ReadFile(t, ak); got != block+k1+"\n# END vm-agent ssh_keys\n" {
		t.Errorf("exclusive file: %q", got)
	}

	// a user without .ssh gets one, 0700 and theirs
	c.Run(t, "useradd", "-m", "dora")
	s = h.step(t, keysWrite, fmt.Sprintf(`{"type":"ssh_keys.sync","user":"dora","keys":[%q]}`, k1))
	wantOK(t, "new .ssh", s, true)
	if st := c.Run(t, "stat", "-c", "%a %U", "/home/dora/.ssh", "/home/dora/.ssh/authorized_keys"); st != "700 dora\n600 dora\n" {
		t.Errorf("dora: %q", st)
	}

	// symlinks are refused: authorized_keys -> /etc/shadow, .ssh -> /root/.ssh
	c.Run(t, "useradd", "-m", "carl")
	c.Run(t, "install", "-d", "-o", "carl", "-m", "0700", "/home/carl/.ssh")
	c.Run(t, "ln", "-s", "/etc/shadow", "/home/carl/.ssh/authorized_keys")
	c.Run(t, "useradd", "-m", "erin")
	c.Run(t, "install", "-d", "-m", "0700", "/root/.ssh")
	c.Run(t, "ln", "-s", "/root/.ssh", "/home/erin/.ssh")
	sums := c.Sha256(t, "/etc/shadow", "/root/.ssh/authorized_keys")
	for _, u := range []string{"carl", "erin"} {
		s = h.step(t, keysWrite, fmt.Sprintf(`{"type":"ssh_keys.sync","user":%q,"keys":[%q]}`, u, k1))
		wantFailed(t, u, s, "symlink_refused")
	}
	if after := c.Sha256(t, "/etc/shadow", "/root/.ssh/authorized_keys"); fmt.Sprint(after) != fmt.Sprint(sums) {
		t.Errorf("a symlink was followed: %v -> %v", sums, after)
	}
	if out, _, _ := c.Exec("stat", "-c", "%F", "/home/carl/.ssh/authorized_keys"); out != "symbolic link\n" {
		t.Errorf("carl's symlink was replaced: %q", out)
	}

	// bad input: 400 with the path
	for _, bad := range []struct{ body, path string }{
		{`{"type":"ssh_keys.sync","user":"bob","keys":["ssh-ed25519 AAAA"]}`, "steps[0].keys[0]"},
		{fmt.Sprintf(`{"type":"ssh_keys.sync","user":"bob","keys":[%q,"garbage"]}`, k1), "steps[0].keys[1]"},
		{`{"type":"ssh_keys.sync","user":"bob","keys":[]}`, "steps[0].keys"},
		{fmt.Sprintf(`{"type":"ssh_keys.sync","user":"bob","keys":[%q],"source_url":"https://x/k"}`, k1), "steps[0].keys"},
		{`{"type":"ssh_keys.sync","user":"bob"}`, "steps[0].source_url"},
		{`{"type":"ssh_keys.sync","user":"bob","source_url":"http://example.com/bob.keys"}`, "steps[0].source_url"},
		{`{"type":"ssh_keys.sync","user":"bob","source_url":"ftp://example.com/bob.keys"}`, "steps[0].source_url"},
		{`{"type":"ssh_keys.sync","user":"bob","source_url":"https://u:p@example.com/k"}`, "steps[0].source_url"},
		{fmt.Sprintf(`{"type":"ssh_keys.sync","user":"-bob","keys":[%q]}`, k1), "steps[0].user"},
		{fmt.Sprintf(`{"type":"ssh_keys.sync","user":"bob","keys":[%q],"exclusive":"yes"}`, k1), "steps[0].exclusive"},
	} {
		h.refused(t, keysWrite, bad.body, 400, "invalid_request", bad.path)
	}
	h.refused(t, "probe:run host:read", fmt.Sprintf(`{"type":"ssh_keys.sync","user":"bob","keys":[%q]}`, k1),
		403, "insufficient_scope", "steps[0].type")
}
