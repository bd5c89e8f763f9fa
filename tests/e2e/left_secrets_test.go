package e2e

import (
	"strings"
	"testing"
	"time"
)

// An inline piko.token ({"exp":4102444800}, a signature we can grep for):
// configure --show, configure --check, status and the agent's own log at
// debug (it fails to reach a closed relay) never print it.
func TestPikoTokenNeverInShowStatusOrLog(t *testing.T) {
	const sig = "PikoS1gnatureNeverPrinted"
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9." + sig
	a := startAgent(t, "piko:\n  server_url: http://127.0.0.1:9\n  endpoint: ep-1\n"+
		"  token: "+tok+"\n"+
		"log:\n  level: debug\n")
	if !a.WaitLog("cannot connect", 10*time.Second) {
		t.Fatalf("the tunnel never reported a failed connect:\n%s", a.Log.String())
	}
	lhWaitAdminSocket(a)
	out := a.Log.String()
	for _, cmd := range [][]string{
		{"configure", "--config", a.Config, "--show"},
		{"configure", "--check", a.Config},
		{"status", "--config", a.Config},
		{"status", "--config", a.Config, "--json"},
	} {
		code, o, e := runCLI(t, nil, cmd...)
		if code != 0 {
			t.Errorf("%v: exit %d\n%s%s", cmd, code, o, e)
		}
		out += o + e
	}
	if strings.Contains(out, sig) {
		t.Errorf("the Piko token is printed:\n%s", out)
	}
	if !strings.Contains(out, "2100-01-01T00:00:00Z") {
		t.Errorf("status does not show the token's expiry:\n%s", out)
	}
}
