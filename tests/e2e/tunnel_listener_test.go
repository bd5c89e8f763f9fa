// The tunnel's unix-socket listener must start whatever the runtime
// directory is called: civetweb reads "<digit>s" or "<digit>r" anywhere in
// its listening_ports string as an HTTPS or redirect port, so a path such as
// /tmp/x/run-2s once made the agent refuse to start ("Error initializing SSL
// context").
package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTunnelListenerAnyRuntimeDirName(t *testing.T) {
	for _, name := range []string{"run-2s", "v9r", "1r,2s"} {
		t.Run(name, func(t *testing.T) {
			rt := filepath.Join(t.TempDir(), name)
			if err := os.Mkdir(rt, 0700); err != nil {
				t.Fatal(err)
			}
			r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
			tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
			env := append([]string{"VM_AGENT_AGENT_RUNTIME_DIR=" + rt}, fastReconnect...)
			a := startAgent(t, tunnelYAML(r, tok, ""), env...)
			if !r.WaitConnections(1, 15*time.Second) {
				t.Fatalf("agent did not connect to the relay\nagent log:\n%s", a.Log.String())
			}
			client := &http.Client{Timeout: 5 * time.Second}
			req, _ := http.NewRequest("GET", r.ProxyURL()+"/v1/livez", nil)
			req.Header.Set("x-piko-endpoint", "agent-1")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("livez through the tunnel: %v\nagent log:\n%s", err, a.Log.String())
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("livez through the tunnel: %d\nagent log:\n%s", resp.StatusCode, a.Log.String())
			}
			if fi, err := os.Lstat(filepath.Join(rt, "webhook.sock")); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0600 {
				t.Fatalf("webhook.sock in %s: %v %v", rt, fi, err)
			}
		})
	}
}
