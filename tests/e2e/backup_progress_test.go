package e2e

// A backup interrupted by kill -9 of the agent: after the restart its record
// says how far it got (the step's last_progress, made durable every 5 s while
// it ran), not only that it was interrupted.

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestBackupProgressSurvivesKill9(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 16<<20)
	_, _ = rand.Read(blob)
	if err := os.WriteFile(filepath.Join(src, "blob.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	// 16 MiB at 1 MiB/s: still copying when the agent dies after 7 s
	status, r, raw := backupSubmit(t, a, is, backupScopes, map[string]interface{}{
		"type": "backup.run", "sources": []string{src}, "destination": map[string]interface{}{"path": dst},
		"bwlimit": 1024})
	if status != 202 {
		t.Fatal(raw)
	}
	waitProbe(t, a, is, r.ID, 10*time.Second, "running")
	time.Sleep(7 * time.Second)
	a.Signal(syscall.SIGKILL)
	a.Wait(10 * time.Second)
	b := restartAgent(t, a, is)
	got := getProbe(t, b, is, r.ID)
	if got.State != "interrupted" {
		t.Fatalf("after kill -9: %s %v", got.State, got.Steps)
	}
	lp, _ := got.Steps[0]["last_progress"].(map[string]interface{})
	pr, _ := lp["progress"].(map[string]interface{})
	cur, _ := pr["current"].(float64)
	t.Logf("interrupted backup's last durable progress: %v", lp)
	if lp == nil || cur <= 0 {
		t.Fatalf("the record does not say how far the backup got: %v", got.Steps[0])
	}
}
