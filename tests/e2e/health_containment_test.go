// Health shows how probe steps are contained on this host (cgroup v2 with
// limits, v2 without controllers, or the subreaper fallback) and which
// limits are available, or why not: in GET /v1/health, `status` and /metrics.
package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func TestHealthShowsContainment(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "health:\n  check_interval: 1s\n")
	hcWaitAdmin(t, a)
	// What the agent found at start, as it logged it.
	m := regexp.MustCompile(`step containment: (?:no writable cgroup v2|(cgroup-v2(?: \(no controllers\))?) in )`).
		FindStringSubmatch(a.Log.String())
	if m == nil {
		t.Fatalf("no containment line in the log:\n%s", a.Log.String())
	}
	want := m[1]
	if want == "" {
		want = "none"
	}

	code, body, _ := call(t, a, "GET", "/v1/health", is.tok("health:read"), "")
	if code != 200 {
		t.Fatalf("GET /v1/health: %d %s", code, body)
	}
	var h map[string]interface{}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("health JSON: %v\n%s", err, body)
	}
	if got := hcPath(h, "containment", "mode"); got != want {
		t.Fatalf("containment.mode %v, the log says %q\n%s", got, want, body)
	}
	missing := []string{}
	for _, k := range []string{"memory", "cpu", "pids"} {
		v, ok := hcPath(h, "containment", "limits", k).(bool)
		if !ok {
			t.Errorf("containment.limits.%s missing: %s", k, body)
		}
		if !v {
			missing = append(missing, k)
		}
	}
	why, _ := hcPath(h, "containment", "limits_unavailable").(string)
	if (len(missing) > 0) != (why != "") {
		t.Errorf("limits missing %v but limits_unavailable %q", missing, why)
	}
	if want == "none" && len(missing) != 3 {
		t.Errorf("no cgroups but limits %v", hcPath(h, "containment", "limits"))
	}

	// status (human and --json) says the same.
	_, out, _ := runCLI(t, nil, "status", "--config", a.Config)
	if !strings.Contains(out, "containment: "+want) {
		t.Errorf("status does not show containment %q:\n%s", want, out)
	}
	if why != "" && !strings.Contains(out, "limits unavailable: ") {
		t.Errorf("status does not say why limits are unavailable:\n%s", out)
	}
	st := hcAdmin(t, hcSock(a), `{"cmd":"status"}`)
	if got := hcPath(st, "health", "containment", "mode"); got != want {
		t.Errorf("status --json containment.mode %v", got)
	}

	// /metrics: one gauge per mode (1 for the current one) and per limit.
	code, text, _ := call(t, a, "GET", "/metrics", is.tok("metrics:read"), "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, text)
	}
	if !strings.Contains(text, `vm_agent_probe_containment{mode="`+want+`"} 1`+"\n") {
		t.Errorf("no containment gauge for %q:\n%s", want, text)
	}
	for _, k := range []string{"memory", "cpu", "pids"} {
		v := "1"
		for _, mk := range missing {
			if mk == k {
				v = "0"
			}
		}
		if !strings.Contains(text, `vm_agent_probe_limit_available{limit="`+k+`"} `+v+"\n") {
			t.Errorf("limit gauge %s != %s:\n%s", k, v, text)
		}
	}
	t.Logf("containment %s, limits missing %v (%s)", want, missing, why)
}
