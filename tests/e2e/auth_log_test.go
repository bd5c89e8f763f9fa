// The "denied" log line of auth shows the caller's path as the logger shows
// every caller byte: controls as \xNN (never a forged line, never a lossy '?'),
// multibyte characters whole.
package e2e

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestAuthDeniedLogKeepsPathReadable(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	// 120 bytes of "é" once decoded (a route segment holds at most 127)
	long := strings.Repeat("%C3%A9", 60)
	for _, p := range []string{"/v1/probes/a%0Aforged%07line", "/v1/probes/x" + long} {
		resp, err := http.Get(a.URL(p))
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != 401 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	var log string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if log = a.Log.String(); strings.Count(log, "auth: denied GET /v1/probes/") >= 2 {
			break
		}
	}
	if !strings.Contains(log, `denied GET /v1/probes/a\x0Aforged\x07line (401 missing_token)`) {
		t.Errorf("control bytes of the path are not shown as the logger's escapes:\n%s", log)
	}
	m := regexp.MustCompile(`denied GET /v1/probes/x(\S*) \(401 missing_token\)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no denied line for the long path:\n%s", log)
	}
	if strings.Contains(m[1], `\x`) || strings.Trim(m[1], "é") != "" || len(m[1]) != 120 {
		t.Errorf("long path shown as %q (a character cut in two, or not the path)", m[1])
	}
}
