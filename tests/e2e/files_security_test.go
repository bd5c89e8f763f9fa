// End-to-end tests of the file steps against a local attacker: uid 65534
// owns a directory on the path and races the agent (symlink flips, directory
// exchanges), and the agent is killed in the middle of a write. The attacker
// is this test binary re-executed as nobody (see init below).
package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

const (
	nobodyUID = 65534
	nobodyGID = 65534
	// attackerEnv selects the attacker loop when this binary runs as nobody.
	attackerEnv = "VMA_FILES_ATTACKER"
)

// When re-executed with attackerEnv set, the test binary is the attacker:
// it runs one bounded loop and exits before any test starts.
func init() {
	mode := os.Getenv(attackerEnv)
	if mode == "" {
		return
	}
	if len(os.Args) < 3 {
		os.Exit(2)
	}
	deadline := time.Now().Add(15 * time.Second)
	switch mode {
	case "flip-symlink":
		attackFlipSymlink(os.Args[1], os.Args[2], deadline)
	case "swap-dir":
		attackSwapDir(os.Args[1], os.Args[2], deadline)
	default:
		os.Exit(2)
	}
	os.Exit(0)
}

const renameExchange = 2 // RENAME_EXCHANGE

func renameat2Exchange(a, b string) error {
	nr := map[string]uintptr{"amd64": 316, "arm64": 276, "386": 353}[runtime.GOARCH]
	pa, err := syscall.BytePtrFromString(a)
	if err != nil {
		return err
	}
	pb, err := syscall.BytePtrFromString(b)
	if err != nil {
		return err
	}
	at := ^uintptr(99) // AT_FDCWD (-100)
	_, _, e := syscall.Syscall6(nr, at, uintptr(unsafe.Pointer(pa)), at,
		uintptr(unsafe.Pointer(pb)), renameExchange, 0)
	if e != 0 {
		return e
	}
	return nil
}

// attackFlipSymlink makes dir/f alternate between a regular file and a
// symlink to target, one renameat2(RENAME_EXCHANGE) per flip; it restores the
// pair when the agent replaced one of them.
func attackFlipSymlink(dir, target string, deadline time.Time) {
	f, l := filepath.Join(dir, "f"), filepath.Join(dir, "f.link")
	repair := func() {
		fi, ferr := os.Lstat(f)
		li, lerr := os.Lstat(l)
		fLink := ferr == nil && fi.Mode()&os.ModeSymlink != 0
		lLink := lerr == nil && li.Mode()&os.ModeSymlink != 0
		if fLink == lLink || ferr != nil || lerr != nil {
			_ = os.Remove(l)
			if ferr != nil || fLink {
				_ = os.Remove(f)
				_ = os.WriteFile(f, []byte("public\n"), 0644)
			}
			_ = os.Symlink(target, l)
		}
	}
	for i := 0; time.Now().Before(deadline); i++ {
		if renameat2Exchange(f, l) != nil || i%64 == 0 {
			repair()
		}
	}
}

// attackSwapDir exchanges dir/d (a directory) and dir/l (a symlink to a
// root-only directory) in a loop.
func attackSwapDir(dir, _ string, deadline time.Time) {
	d, l := filepath.Join(dir, "d"), filepath.Join(dir, "l")
	for time.Now().Before(deadline) {
		_ = renameat2Exchange(d, l)
	}
}

// filesScratch is a directory every user can traverse (t.TempDir is 0700),
// removed at the end of the test.
func filesScratch(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the attacker is uid 65534")
	}
	dir, err := os.MkdirTemp("", "vma-files-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nobodyDir creates scratch/name owned by nobody, mode 0755.
func nobodyDir(t *testing.T, scratch, name string) string {
	t.Helper()
	d := filepath.Join(scratch, name)
	if err := os.Mkdir(d, 0755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, nobodyUID, nobodyGID); err != nil {
		t.Fatal(err)
	}
	return d
}

// startAttacker copies this test binary where nobody can run it and starts
// it as uid 65534 in the given mode; it is killed when the test ends.
func startAttacker(t *testing.T, scratch, mode string, args ...string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(scratch, "attacker")
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(out, in)
	in.Close()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{attackerEnv + "=" + mode}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyGID}}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if s := stderr.String(); s != "" {
			t.Logf("attacker stderr: %s", s)
		}
	})
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// runSteps submits one probe of steps (continue_on_error) and waits for it.
func runSteps(t *testing.T, a *Agent, is *issuer, steps []interface{}) (probeRec, string) {
	t.Helper()
	_, r, raw := submit(t, a, is, mustJSON(map[string]interface{}{"continue_on_error": true, "steps": steps}))
	if r.ID == "" {
		t.Fatalf("submit: %s", raw)
	}
	r = waitProbe(t, a, is, r.ID, 20*time.Second)
	_, body, _ := call(t, a, "GET", "/v1/probes/"+r.ID, is.tok("probe:read"), "")
	return r, body
}

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return &st
}

// TestBackupNeverSetuid: the backup of a setuid/setgid file is not setuid,
// keeps the original's owner and group, and never becomes a root-owned file
// with a user's mode bits.
func TestBackupNeverSetuid(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	scratch := filesScratch(t)
	u := nobodyDir(t, scratch, "home")
	cases := []struct {
		name     string
		uid, gid int
		mode     os.FileMode
		wantPerm uint32
	}{
		{"user-setuid-shell", nobodyUID, nobodyGID, os.ModeSetuid | 0755, 0755},
		{"user-setgid", nobodyUID, nobodyGID, os.ModeSetgid | 0755, 0755},
		{"user-sticky-world-writable", nobodyUID, nobodyGID, os.ModeSticky | 0777, 0777},
		{"root-setuid", 0, 0, os.ModeSetuid | 0755, 0755},
	}
	var steps []interface{}
	for _, c := range cases {
		p := filepath.Join(u, c.name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nid -u\n"), 0600); err != nil {
			t.Fatal(err)
		}
		// chown before chmod: chown clears the setuid bit
		if err := os.Chown(p, c.uid, c.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, map[string]interface{}{"type": "file.write", "path": p, "content_b64": b64("new\n"), "backup": true})
	}
	r, _ := runSteps(t, a, is, steps)
	if r.State != "succeeded" {
		t.Fatalf("state %s: %v", r.State, r.Steps)
	}
	for _, c := range cases {
		bak := filepath.Join(u, c.name) + ".bak"
		st := statT(t, bak)
		if st.Mode&(syscall.S_ISUID|syscall.S_ISGID|syscall.S_ISVTX) != 0 {
			t.Errorf("%s: backup mode %o keeps setuid/setgid/sticky", c.name, st.Mode&07777)
		}
		if int(st.Uid) != c.uid || int(st.Gid) != c.gid {
			t.Errorf("%s: backup owned %d:%d, want the original's %d:%d", c.name, st.Uid, st.Gid, c.uid, c.gid)
		}
		if st.Mode&0777 != c.wantPerm {
			t.Errorf("%s: backup mode %o, want %o", c.name, st.Mode&07777, c.wantPerm)
		}
		if b, _ := os.ReadFile(bak); string(b) != "#!/bin/sh\nid -u\n" {
			t.Errorf("%s: backup content %q", c.name, b)
		}
	}
}

// TestBackupOfWorldWritableFileIsNotRootOwned: a user's 0666 file gives a
// backup owned by that user (as exposed as the original, no more), never a
// root-owned world-writable file.
func TestBackupOfWorldWritableFileIsNotRootOwned(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	scratch := filesScratch(t)
	u := nobodyDir(t, scratch, "home")
	p := filepath.Join(u, "shared.txt")
	if err := os.WriteFile(p, []byte("old"), 0600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, nobodyUID, nobodyGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0666); err != nil {
		t.Fatal(err)
	}
	r, _ := runSteps(t, a, is, []interface{}{map[string]interface{}{"type": "file.write", "path": p, "content_b64": b64("new"), "backup": true}})
	if r.State != "succeeded" {
		t.Fatalf("state %s: %v", r.State, r.Steps)
	}
	st := statT(t, p+".bak")
	if st.Uid == 0 || st.Uid != nobodyUID || st.Gid != nobodyGID {
		t.Errorf("backup owned %d:%d, want %d:%d (the original's)", st.Uid, st.Gid, nobodyUID, nobodyGID)
	}
	if st.Mode&07777 != 0666 {
		t.Errorf("backup mode %o, want 0666", st.Mode&07777)
	}
}

// secretFile makes scratch/vault (0700 root) holding a 0600 root file with
// random content; returns its path and content.
func secretFile(t *testing.T, scratch string) (string, string) {
	t.Helper()
	vault := filepath.Join(scratch, "vault")
	if err := os.Mkdir(vault, 0700); err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 16)
	_, _ = rand.Read(rnd)
	secret := "TOPSECRET-" + hex.EncodeToString(rnd)
	p := filepath.Join(vault, "shadow")
	if err := os.WriteFile(p, []byte(secret), 0600); err != nil {
		t.Fatal(err)
	}
	return p, secret
}

// assertNoSecretIn fails when secret (or its base64) is in any file of dir
// or in text.
func assertNoSecretIn(t *testing.T, dir, secret, text string) bool {
	t.Helper()
	enc := base64.StdEncoding.EncodeToString([]byte(secret))
	if strings.Contains(text, secret) || strings.Contains(text, enc[:20]) {
		t.Errorf("the secret appears in a probe record: %.300s", text)
		return false
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		// O_NOFOLLOW + fstat: the attacker flips names under this check too
		p := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		var b []byte
		if err == nil && fi.Mode().IsRegular() {
			b, _ = io.ReadAll(io.LimitReader(f, 1<<20))
		}
		f.Close()
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("the secret was copied into %s (mode %v, owner %d)", p, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
			return false
		}
	}
	return true
}

// TestBackupReadNoSymlinkRace: the owner of the directory flips the target
// between a regular file and a symlink to a root-only file while the agent
// backs it up; the secret never reaches a backup or a probe record.
func TestBackupReadNoSymlinkRace(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	scratch := filesScratch(t)
	secretPath, secret := secretFile(t, scratch)
	u := nobodyDir(t, scratch, "home")
	startAttacker(t, scratch, "flip-symlink", u, secretPath)
	target := filepath.Join(u, "f")
	deadline := time.Now().Add(5 * time.Second)
	var writes, refused int
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		var steps []interface{}
		for j := 0; j < 10; j++ {
			steps = append(steps, map[string]interface{}{"type": "file.write", "path": target,
				"content_b64": b64(fmt.Sprintf("v%d-%d\n", i, j)), "backup": true})
		}
		r, raw := runSteps(t, a, is, steps)
		for _, s := range r.Steps {
			if s["status"] == "succeeded" {
				writes++
			} else if s["error_code"] == "symlink_refused" {
				refused++
			}
		}
		if !assertNoSecretIn(t, u, secret, raw) {
			break
		}
	}
	t.Logf("%d writes, %d refused symlinks", writes, refused)
	if writes == 0 {
		t.Errorf("no write succeeded: the race was not exercised")
	}
}

// TestFileWriteDirectorySwapRace: a directory on the path is exchanged with a
// symlink to a root-only directory in a loop; nothing is ever written into
// the root-only directory and no temp file is left anywhere.
func TestFileWriteDirectorySwapRace(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	scratch := filesScratch(t)
	vault := filepath.Join(scratch, "vault")
	if err := os.Mkdir(vault, 0700); err != nil {
		t.Fatal(err)
	}
	u := nobodyDir(t, scratch, "home")
	nobodyDir(t, u, "d")
	if err := os.Symlink(vault, filepath.Join(u, "l")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(u, "l"), nobodyUID, nobodyGID); err != nil {
		t.Fatal(err)
	}
	startAttacker(t, scratch, "swap-dir", u, "")
	target := filepath.Join(u, "d", "target")
	deadline := time.Now().Add(5 * time.Second)
	var writes int
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		var steps []interface{}
		for j := 0; j < 10; j++ {
			steps = append(steps, map[string]interface{}{"type": "file.write", "path": target,
				"content_b64": b64(fmt.Sprintf("v%d-%d\n", i, j))})
		}
		r, _ := runSteps(t, a, is, steps)
		for _, s := range r.Steps {
			if s["status"] == "succeeded" {
				writes++
			}
		}
		if ents, _ := os.ReadDir(vault); len(ents) != 0 {
			t.Fatalf("after %d probes the root-only directory holds %d entries, e.g. %s", i+1, len(ents), ents[0].Name())
		}
	}
	t.Logf("%d writes", writes)
	if writes == 0 {
		t.Errorf("no write succeeded: the race was not exercised")
	}
	var leaks []string
	for _, d := range []string{filepath.Join(u, "d"), filepath.Join(u, "l"), vault} {
		leaks = append(leaks, tempFiles(d)...)
	}
	if len(leaks) != 0 {
		t.Errorf("%d temp files left, e.g. %s", len(leaks), leaks[0])
	}
}

// tempFiles lists the agent's temp files in dir: "<name>.vma.tmp.XXXXXX"
// (core/fs; ".tmp." like every temp file the agent sweeps) and the older
// "<name>.vma-tmp.XXXXXX" of file.write.
func tempFiles(dir string) []string {
	a, _ := filepath.Glob(filepath.Join(dir, "*.vma-tmp.*"))
	b, _ := filepath.Glob(filepath.Join(dir, "*.tmp.*"))
	return append(a, b...)
}

// writeInProgress is true while the agent has a temp file of dir: a named
// one in dir, or an O_TMPFILE open in the agent ("dir/#123 (deleted)").
func writeInProgress(pid int, dir string) bool {
	if len(tempFiles(dir)) > 0 {
		return true
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, dir+"/") {
			return true
		}
	}
	return false
}

// TestFileWriteKill9LeavesNoTemp: kill -9 while a 12 MiB file.write is in
// progress; after a restart no temp file remains and the target is either
// absent or complete.
func TestFileWriteKill9LeavesNoTemp(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "webhook:\n  max_body: 32MiB\n")
	scratch := filesScratch(t)
	dir := filepath.Join(scratch, "k")
	if err := os.Mkdir(dir, 0755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "big.bin")
	content := bytes.Repeat([]byte("0123456789abcdef"), 12<<20/16)
	body := mustJSON(map[string]interface{}{"steps": []interface{}{map[string]interface{}{
		"type": "file.write", "path": target, "content_b64": base64.StdEncoding.EncodeToString(content)}}})
	killedDuring := 0
	for attempt := 0; attempt < 5 && killedDuring == 0; attempt++ {
		if attempt > 0 {
			a = restartAgent(t, a, is)
			_ = os.Remove(target)
		}
		pid := a.Cmd.Process.Pid
		done := make(chan struct{})
		req, err := http.NewRequest("POST", apiURL(a, "/v1/probes"), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+is.tok("probe:run"))
		req.Header.Set("Content-Type", "application/json")
		// the agent may die before it answers: no t.Fatal off the test goroutine
		go func() {
			defer close(done)
			if resp, err := httpClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		spin := time.Now().Add(5 * time.Second)
		for i := 0; i < 1000000 && time.Now().Before(spin); i++ {
			if writeInProgress(pid, dir) {
				a.Signal(syscall.SIGKILL)
				killedDuring++
				break
			}
		}
		a.Signal(syscall.SIGKILL)
		a.Wait(10 * time.Second)
		<-done
	}
	if killedDuring == 0 {
		t.Fatalf("never saw the write in progress in 5 attempts")
	}
	b := restartAgent(t, a, is)
	_ = b
	if m := tempFiles(dir); len(m) != 0 {
		t.Errorf("temp file left after kill -9 and restart: %v", m)
	}
	if got, err := os.ReadFile(target); err == nil && !bytes.Equal(got, content) {
		t.Errorf("target holds %d bytes, neither absent nor the full %d", len(got), len(content))
	}
}

// TestFileReadDirectorySwapRace: the same directory exchange under file.read
// never makes the agent return a root-only file's content.
func TestFileReadDirectorySwapRace(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	scratch := filesScratch(t)
	secretPath, secret := secretFile(t, scratch)
	if err := os.Rename(secretPath, filepath.Join(filepath.Dir(secretPath), "target")); err != nil {
		t.Fatal(err)
	}
	u := nobodyDir(t, scratch, "home")
	d := nobodyDir(t, u, "d")
	if err := os.WriteFile(filepath.Join(d, "target"), []byte("public\n"), 0644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(secretPath), filepath.Join(u, "l")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(u, "l"), nobodyUID, nobodyGID); err != nil {
		t.Fatal(err)
	}
	startAttacker(t, scratch, "swap-dir", u, "")
	target := filepath.Join(u, "d", "target")
	deadline := time.Now().Add(5 * time.Second)
	var reads int
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		var steps []interface{}
		for j := 0; j < 10; j++ {
			steps = append(steps, map[string]interface{}{"type": "file.read", "path": target})
		}
		r, raw := runSteps(t, a, is, steps)
		for _, s := range r.Steps {
			if s["status"] == "succeeded" {
				reads++
			}
		}
		if !assertNoSecretIn(t, u, secret, raw) {
			break
		}
	}
	t.Logf("%d reads", reads)
	if reads == 0 {
		t.Errorf("no read succeeded: the race was not exercised")
	}
}

// TestFileReadSymlinkRule: a symlink only root could have placed is followed
// (/etc/os-release -> ../usr/lib/os-release on Debian); one in a directory
// another user owns is refused with error_code symlink_refused.
func TestFileReadSymlinkRule(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	scratch := filesScratch(t)
	secretPath, _ := secretFile(t, scratch)
	u := nobodyDir(t, scratch, "home")
	if err := os.Symlink(secretPath, filepath.Join(u, "link")); err != nil {
		t.Fatal(err)
	}
	// root's own symlink in root's 0755 directory
	if err := os.Symlink(secretPath, filepath.Join(scratch, "rootlink")); err != nil {
		t.Fatal(err)
	}
	r, _ := runSteps(t, a, is, []interface{}{
		map[string]interface{}{"type": "file.read", "path": filepath.Join(u, "link")},
		map[string]interface{}{"type": "file.read", "path": filepath.Join(u, "link", "..", "x")},
		map[string]interface{}{"type": "file.read", "path": filepath.Join(scratch, "rootlink")},
		map[string]interface{}{"type": "file.write", "path": filepath.Join(u, "link"), "content_b64": b64("x")},
	})
	for i, want := range []string{"failed", "failed", "succeeded", "failed"} {
		if r.Steps[i]["status"] != want {
			t.Errorf("step %d: %v, want %s", i, r.Steps[i], want)
		}
	}
	for _, i := range []int{0, 3} {
		if r.Steps[i]["error_code"] != "symlink_refused" {
			t.Errorf("step %d: error_code %v, want symlink_refused", i, r.Steps[i]["error_code"])
		}
	}
	if fi, err := os.Lstat(filepath.Join(u, "link")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi, err)
	}
	if _, err := os.Lstat("/etc/os-release"); err == nil {
		r, _ = runSteps(t, a, is, []interface{}{map[string]interface{}{"type": "file.read", "path": "/etc/os-release"}})
		if r.State != "succeeded" {
			t.Errorf("/etc/os-release: %v", r.Steps)
		}
	}
}
