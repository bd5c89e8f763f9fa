// End-to-end tests of the backup.plan and backup.run steps through the relay:
// plans that count the tree the test made (ignore globs, walker and rsync
// agree), runs to a real OpenSSH server on 127.0.0.1 and to a local directory
// that copy it byte for byte, a second run that moves nothing, progress
// events on a throttled copy, cancel, an unreachable host, scopes, validation.
package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const backupScopes = "probe:run probe:read probe:cancel backup:read backup:run"

// backupTree makes src/ with kept files (name → content) and ignored ones.
type backupTree struct {
	root, src string
	kept      map[string][]byte // relative to src's parent ("src/a.txt")
	dirs      int               // kept directories, src itself included
	symlinks  int
	bytes     int64
}

var backupIgnore = []string{"*.log", "cache/", "/src/tmp", "sub/*.o"}

func makeBackupTree(t *testing.T) *backupTree {
	t.Helper()
	root := t.TempDir()
	bt := &backupTree{root: root, src: filepath.Join(root, "src"), kept: map[string][]byte{}}
	put := func(rel string, n int, keep bool) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		_, _ = rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if keep {
			bt.kept[rel] = b
			bt.bytes += int64(n)
		}
	}
	put("src/a.txt", 100, true)
	put("src/big.bin", 3<<20, true)
	put("src/sub/deep/c.dat", 70000, true)
	put("src/sub/x.o", 10, false)     // sub/*.o
	put("src/sub/deep/y.o", 10, true) // sub/*.o matches the last two components only
	put("src/app.log", 500, false)    // *.log
	put("src/sub/app.log", 500, false)
	put("src/cache/blob", 4000, false)    // cache/ (a directory)
	put("src/sub/cache", 33, true)        // cache/ is for directories only
	put("src/tmp/scratch", 1000, false)   // /src/tmp, anchored
	put("src/sub/tmp/kept.txt", 12, true) // not at the root: kept
	put("src/we\nird name", 5, true)      // a newline in a name
	if err := os.Symlink("a.txt", filepath.Join(bt.src, "link")); err != nil {
		t.Fatal(err)
	}
	bt.symlinks = 1
	bt.dirs = 4
	return bt
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// checkCopy compares every regular file under dst/src with the tree, and that
// nothing ignored was copied.
func checkCopy(t *testing.T, bt *backupTree, dst string) {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dst, "src"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dst, p)
			got[rel] = sha(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel, b := range bt.kept {
		if got[rel] != sha(b) {
			t.Errorf("%s: sha256 %q at the destination, want %s", rel, got[rel], sha(b))
		}
		delete(got, rel)
	}
	for rel := range got {
		t.Errorf("%s was copied but should have been ignored", rel)
	}
	if l, err := os.Readlink(filepath.Join(dst, "src", "link")); err != nil || l != "a.txt" {
		t.Errorf("symlink not copied as a symlink: %q %v", l, err)
	}
}

func backupSubmit(t *testing.T, a *Agent, is *issuer, scope string, step map[string]interface{}) (int, probeRec, string) {
	t.Helper()
	status, b, _ := call(t, a, "POST", "/v1/probes", is.tok(scope),
		mustJSON(map[string]interface{}{"steps": []interface{}{step}}))
	var r probeRec
	_ = json.Unmarshal([]byte(b), &r)
	return status, r, b
}

func backupDo(t *testing.T, a *Agent, is *issuer, step map[string]interface{}, timeout time.Duration) map[string]interface{} {
	t.Helper()
	status, r, raw := backupSubmit(t, a, is, backupScopes, step)
	if status != 202 || r.ID == "" {
		t.Fatalf("submit: %d %s", status, raw)
	}
	r = waitProbe(t, a, is, r.ID, timeout)
	return r.Steps[0]
}

func num(v interface{}) int64 {
	f, _ := v.(float64)
	return int64(f)
}

func wantCounts(t *testing.T, what string, st map[string]interface{}, bt *backupTree) {
	t.Helper()
	if st["status"] != "succeeded" || st["ok"] != true {
		t.Fatalf("%s: %v", what, st)
	}
	if num(st["total_files"]) != int64(len(bt.kept)) || num(st["total_bytes"]) != bt.bytes ||
		num(st["total_dirs"]) != int64(bt.dirs) || num(st["total_symlinks"]) != int64(bt.symlinks) {
		t.Errorf("%s: files %v bytes %v dirs %v symlinks %v, want %d %d %d %d", what, st["total_files"],
			st["total_bytes"], st["total_dirs"], st["total_symlinks"], len(bt.kept), bt.bytes, bt.dirs, bt.symlinks)
	}
}

// progressGaps reads a probe's event stream to its end and returns the
// progress events and the largest gap between consecutive ones while they came.
func progressEvents(t *testing.T, a *Agent, is *issuer, id string) ([]map[string]interface{}, time.Duration) {
	return progressUntil(t, a, is, id, nil)
}

// progressUntil is progressEvents that stops early once until returns true.
func progressUntil(t *testing.T, a *Agent, is *issuer, id string, until func(map[string]interface{}) bool) ([]map[string]interface{}, time.Duration) {
	t.Helper()
	req, _ := http.NewRequest("GET", apiURL(a, "/v1/probes/"+id+"/events"), nil)
	req.Header.Set("Authorization", "Bearer "+is.tok("probe:read"))
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	var evs []map[string]interface{}
	var last time.Time
	var gap time.Duration
	event := ""
	for i := 0; i < 100000 && sc.Scan(); i++ {
		line := sc.Text()
		if strings.HasPrefix(line, "event: ") {
			event = strings.TrimPrefix(line, "event: ")
		}
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		if event == "end" {
			break
		}
		if event != "progress" {
			continue
		}
		now := time.Now()
		if !last.IsZero() && now.Sub(last) > gap {
			gap = now.Sub(last)
		}
		last = now
		var d map[string]interface{}
		_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d)
		evs = append(evs, d)
		if until != nil && until(d) {
			break
		}
	}
	return evs, gap
}

func TestBackupSteps(t *testing.T) {
	s := startSSHD(t)
	is := newIssuer(t)
	a := startAuthAgent(t, is, fmt.Sprintf("probe:\n  cancel_grace: 500ms\n"+
		"backup:\n  ssh_identity: %s\n  known_hosts: %s\n  connect_timeout: 5s\n", s.Identity, s.KnownHosts))
	bt := makeBackupTree(t)
	remote := func(path string) map[string]interface{} {
		return map[string]interface{}{"host": s.Host, "user": s.User, "port": s.Port, "path": path}
	}
	step := func(typ string, dest map[string]interface{}, extra ...interface{}) map[string]interface{} {
		m := map[string]interface{}{"type": typ, "sources": []string{bt.src}, "ignore": backupIgnore}
		if dest != nil {
			m["destination"] = dest
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}

	t.Run("plan_walk_counts_the_tree", func(t *testing.T) {
		st := backupDo(t, a, is, step("backup.plan", nil, "list_files", true), 20*time.Second)
		wantCounts(t, "walk", st, bt)
		if st["method"] != "walk" {
			t.Errorf("method %v", st["method"])
		}
		files, _ := st["files"].([]interface{})
		if len(files) != len(bt.kept)+bt.dirs+bt.symlinks {
			t.Errorf("files: %d entries %v", len(files), files)
		}
	})

	remoteDst := filepath.Join(t.TempDir(), "remote")
	t.Run("plan_rsync_agrees_with_the_walk", func(t *testing.T) {
		st := backupDo(t, a, is, step("backup.plan", remote(remoteDst), "list_files", true, "max_files", 3), 30*time.Second)
		wantCounts(t, "rsync plan", st, bt)
		if st["method"] != "rsync" || num(st["modifies"]) != int64(len(bt.kept)+bt.dirs+bt.symlinks) {
			t.Errorf("method %v modifies %v", st["method"], st["modifies"])
		}
		if files, _ := st["files"].([]interface{}); len(files) != 3 || st["files_truncated"] != true {
			t.Errorf("files list not bounded: %v %v", st["files"], st["files_truncated"])
		}
	})

	t.Run("run_over_ssh_copies_byte_for_byte", func(t *testing.T) {
		st := backupDo(t, a, is, step("backup.run", remote(remoteDst)), 60*time.Second)
		if st["status"] != "succeeded" || st["ok"] != true {
			t.Fatalf("run: %v", st)
		}
		checkCopy(t, bt, remoteDst)
		if num(st["transferred_bytes"]) != bt.bytes || num(st["files"]) != int64(len(bt.kept)) {
			t.Errorf("transferred %v bytes, %v files; want %d, %d", st["transferred_bytes"], st["files"], bt.bytes, len(bt.kept))
		}
	})

	t.Run("second_run_transfers_nothing", func(t *testing.T) {
		st := backupDo(t, a, is, step("backup.run", remote(remoteDst)), 30*time.Second)
		if st["status"] != "succeeded" || num(st["transferred_bytes"]) != 0 || num(st["files"]) != 0 {
			t.Errorf("second run: %v", st)
		}
		st = backupDo(t, a, is, step("backup.plan", remote(remoteDst)), 30*time.Second)
		if num(st["modifies"]) != 0 {
			t.Errorf("plan after the run: modifies %v", st["modifies"])
		}
	})

	t.Run("local_mode_needs_no_ssh", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "local")
		st := backupDo(t, a, is, step("backup.run", map[string]interface{}{"path": dst}), 30*time.Second)
		if st["status"] != "succeeded" {
			t.Fatalf("local run: %v", st)
		}
		checkCopy(t, bt, dst)
	})

	// 20 MiB at 2.5 MiB/s: about 8 s of copying, progress never 2 s apart.
	big := filepath.Join(t.TempDir(), "big")
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 20<<20)
	_, _ = rand.Read(blob)
	if err := os.WriteFile(filepath.Join(big, "blob.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("progress_at_most_2s_apart_on_a_throttled_copy", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "throttled")
		status, r, raw := backupSubmit(t, a, is, backupScopes, map[string]interface{}{
			"type": "backup.run", "sources": []string{big}, "destination": remote(dst), "bwlimit": 2560})
		if status != 202 {
			t.Fatal(raw)
		}
		t0 := time.Now()
		evs, gap := progressEvents(t, a, is, r.ID)
		took := time.Since(t0)
		rec := waitProbe(t, a, is, r.ID, 30*time.Second)
		if rec.State != "succeeded" {
			t.Fatalf("throttled run: %s %v", rec.State, rec.Steps)
		}
		t.Logf("throttled copy: %v, %d progress events, largest gap %v", took, len(evs), gap)
		if took < 4*time.Second || len(evs) < 3 || gap > 2*time.Second {
			t.Errorf("copy took %v with %d progress events, largest gap %v", took, len(evs), gap)
		}
		sawPercent := false
		for _, e := range evs {
			p, _ := e["progress"].(map[string]interface{})
			if p == nil || p["unit"] != "bytes" || p["file"] == nil || p["op"] == nil {
				t.Fatalf("progress event without detail: %v", e)
			}
			if pc := num(p["percent"]); pc > 0 && pc < 100 && p["file"] == "big/blob.bin" && p["op"] == "copy" {
				sawPercent = true
			}
		}
		if !sawPercent {
			t.Errorf("no event showed the file in progress: %v", evs)
		}
		b, err := os.ReadFile(filepath.Join(dst, "big", "blob.bin"))
		if err != nil || sha(b) != sha(blob) {
			t.Errorf("throttled copy differs: %v", err)
		}
	})

	// with the host's cgroups, and with the fallback (a subreaper shim per step)
	sub := startAuthAgent(t, is, fmt.Sprintf("probe:\n  cancel_grace: 500ms\n  cgroup_root: /nonexistent-cgroup-root\n"+
		"backup:\n  ssh_identity: %s\n  known_hosts: %s\n", s.Identity, s.KnownHosts))
	for _, m := range []struct {
		name string
		a    *Agent
	}{{"cgroup", a}, {"subreaper", sub}} {
		a := m.a
		t.Run("cancel_leaves_no_rsync_or_ssh/"+m.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "canceled")
			status, r, raw := backupSubmit(t, a, is, backupScopes, map[string]interface{}{
				"type": "backup.run", "sources": []string{big}, "destination": remote(dst), "bwlimit": 1024})
			if status != 202 {
				t.Fatal(raw)
			}
			// mid-copy: once data moves
			evs, _ := progressUntil(t, a, is, r.ID, func(e map[string]interface{}) bool {
				p, _ := e["progress"].(map[string]interface{})
				return p != nil && num(p["current"]) > 0
			})
			if len(evs) == 0 {
				t.Fatal("no progress before the end")
			}
			// the agent's rsync and ssh both carry the known_hosts path (in -e)
			waitMarkerCount(t, s.KnownHosts, 2, 5*time.Second)
			if st, b, _ := call(t, a, "DELETE", "/v1/probes/"+r.ID, is.tok("probe:cancel"), ""); st != 200 && st != 202 {
				t.Fatalf("cancel: %d %s", st, b)
			}
			rec := waitProbe(t, a, is, r.ID, 10*time.Second)
			if rec.State != "canceled" {
				t.Fatalf("state %s %v", rec.State, rec.Steps)
			}
			waitMarkerGone(t, s.KnownHosts, 3*time.Second)
			waitMarkerGone(t, "--server", 5*time.Second) // the remote rsync too
			st := rec.Steps[0]
			if st["error_code"] != "canceled" || num(st["transferred_bytes"]) <= 0 {
				t.Errorf("a canceled run says how far it got: %v", st)
			}
		})
	}

	t.Run("unreachable_host_is_a_clear_error", func(t *testing.T) {
		dead := map[string]interface{}{"host": "127.0.0.1", "user": "root", "port": freePort(t), "path": "/tmp/x"}
		st := backupDo(t, a, is, step("backup.run", dead), 30*time.Second)
		if st["status"] != "failed" || st["error_code"] != "host_unreachable" ||
			!strings.Contains(fmt.Sprint(st["error"]), "Connection refused") {
			t.Errorf("unreachable: %v", st)
		}
	})

	t.Run("missing_source_is_a_plan_error", func(t *testing.T) {
		m := step("backup.plan", nil)
		m["sources"] = []string{bt.src, filepath.Join(bt.root, "nope")}
		st := backupDo(t, a, is, m, 10*time.Second)
		if st["status"] != "failed" || st["error_code"] != "source_not_found" {
			t.Errorf("missing source: %v", st)
		}
	})

	t.Run("scopes", func(t *testing.T) {
		for _, c := range []struct{ typ, scope string }{
			{"backup.run", "probe:run backup:read"}, {"backup.plan", "probe:run backup:run"}} {
			status, _, raw := backupSubmit(t, a, is, c.scope, step(c.typ, remote("/tmp/x")))
			if status != 403 || !strings.Contains(raw, `"insufficient_scope"`) || !strings.Contains(raw, `"steps[0].type"`) {
				t.Errorf("%s with %q: %d %s", c.typ, c.scope, status, raw)
			}
		}
	})

	t.Run("validation_names_the_path", func(t *testing.T) {
		cases := []struct {
			dest     map[string]interface{}
			ignore   []string
			wantPath string
		}{
			{map[string]interface{}{"host": "-oProxyCommand=x", "path": "/b"}, nil, "steps[0].destination.host"},
			{map[string]interface{}{"host": "h", "user": "Root;x", "path": "/b"}, nil, "steps[0].destination.user"},
			{map[string]interface{}{"host": "h", "port": 70000, "path": "/b"}, nil, "steps[0].destination.port"},
			{map[string]interface{}{"host": "h", "path": "rel/x"}, nil, "steps[0].destination.path"},
			{map[string]interface{}{"path": "/b\n"}, nil, "steps[0].destination.path"},
			{map[string]interface{}{"path": "/b"}, []string{"a/**/b"}, "steps[0].ignore[0]"},
			{nil, nil, "steps[0].destination"},
		}
		for _, c := range cases {
			m := step("backup.run", c.dest)
			if c.ignore != nil {
				m["ignore"] = c.ignore
			}
			status, _, raw := backupSubmit(t, a, is, backupScopes, m)
			if status != 400 || !strings.Contains(raw, `"path":"`+c.wantPath+`"`) {
				t.Errorf("%v: %d %s", c.dest, status, raw)
			}
		}
	})
}
