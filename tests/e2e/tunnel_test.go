// End-to-end tests of the tunnel: the real agent binary connected to the
// Piko-compatible relay (tests/relay), requests sent to the relay's proxy port.
package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestTunnelRequest(t *testing.T) {
	a, proxy := startTunnelPair(t, "")
	code, body, err := getThrough(http.DefaultClient, proxy, "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("GET /v1/livez through the tunnel: %d %q %v\nagent log:\n%s", code, body, err, a.Log.String())
	}
	if !strings.Contains(a.Log.String(), "connected to") {
		t.Errorf("no connect log line")
	}
}

func TestTunnelGracefulStop(t *testing.T) {
	a, _ := startTunnelPair(t, "piko:\n  stop_grace: 2s\n")
	a.Signal(15)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(a.Log.String(), "tunnel stopped") {
		t.Errorf("no 'tunnel stopped' line:\n%s", a.Log.String())
	}
}
