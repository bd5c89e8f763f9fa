// End-to-end tests of GET /v1/inventory and GET /v1/capabilities through the
// relay and the tunnel, as the control plane calls them: the inventory of
// this machine is checked against what Go sees (hostname, a port the test
// opens, a package dpkg says is installed), scopes, the cache, and the bounds.
package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

type invDoc struct {
	CollectedAt string `json:"collected_at"`
	Host        struct {
		Hostname string `json:"hostname"`
		FQDN     string `json:"fqdn"`
	} `json:"host"`
	OS struct {
		ID        string `json:"id"`
		VersionID string `json:"version_id"`
	} `json:"os"`
	Kernel struct {
		Name    string `json:"name"`
		Release string `json:"release"`
	} `json:"kernel"`
	Architecture string `json:"architecture"`
	CPU          struct {
		Model string `json:"model"`
		Count int    `json:"count"`
	} `json:"cpu"`
	Memory struct {
		Total int64 `json:"total_bytes"`
	} `json:"memory"`
	Filesystems []struct {
		Mount string `json:"mount"`
		Size  int64  `json:"size_bytes"`
	} `json:"filesystems"`
	Interfaces []struct {
		Name      string `json:"name"`
		Addresses []struct {
			Family  string `json:"family"`
			Address string `json:"address"`
		} `json:"addresses"`
	} `json:"interfaces"`
	PackageManager string `json:"package_manager"`
	Packages       []struct {
		Name, Version, Architecture string
	} `json:"packages"`
	Services []map[string]string `json:"services"`
	Users    []struct {
		Name string `json:"name"`
		UID  int64  `json:"uid"`
	} `json:"users"`
	Groups []struct {
		Name    string   `json:"name"`
		GID     int64    `json:"gid"`
		Members []string `json:"members"`
	} `json:"groups"`
	Listening []struct {
		Protocol string `json:"protocol"`
		Address  string `json:"address"`
		Port     int    `json:"port"`
	} `json:"listening"`
	Truncated []string          `json:"truncated"`
	Errors    map[string]string `json:"errors"`
}

func getInventory(t *testing.T, a *Agent, is *issuer) (invDoc, string) {
	t.Helper()
	st, body, _ := call(t, a, "GET", "/v1/inventory", is.tok("inventory:read"), "")
	if st != 200 {
		t.Fatalf("GET /v1/inventory: %d %s", st, body)
	}
	var d invDoc
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("inventory is not JSON: %v\n%.2000s", err, body)
	}
	return d, body
}

func (d invDoc) listens(proto, addr string, port int) bool {
	for _, l := range d.Listening {
		if l.Protocol == proto && l.Address == addr && l.Port == port {
			return true
		}
	}
	return false
}

func TestInventoryThroughRelay(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "inventory:\n  cache_ttl: 3s\n")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tcpPort := ln.Addr().(*net.TCPAddr).Port
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	udpPort := uc.LocalAddr().(*net.UDPAddr).Port

	t0 := time.Now()
	d, body := getInventory(t, a, is)
	t.Logf("first collection took %v", time.Since(t0))
	host, _ := os.Hostname()
	if d.Host.Hostname != host || d.Host.FQDN == "" {
		t.Errorf("host = %+v, want hostname %q and an fqdn", d.Host, host)
	}
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := utsString(u.Release[:])
	if d.Kernel.Name != "Linux" || d.Kernel.Release != release || d.Architecture != utsString(u.Machine[:]) {
		t.Errorf("kernel %+v arch %q, want Linux %s %s", d.Kernel, d.Architecture, release, utsString(u.Machine[:]))
	}
	if d.OS.ID == "" || d.CPU.Count < 1 || d.CPU.Count < runtime.NumCPU() || d.Memory.Total <= 0 {
		t.Errorf("os %+v cpu %+v memory %+v", d.OS, d.CPU, d.Memory)
	}
	if len(d.Filesystems) == 0 || d.Filesystems[0].Size <= 0 {
		t.Errorf("filesystems: %+v", d.Filesystems)
	}
	lo := false
	for _, i := range d.Interfaces {
		for _, ad := range i.Addresses {
			lo = lo || (i.Name == "lo" && ad.Address == "127.0.0.1")
		}
	}
	if !lo {
		t.Errorf("no lo with 127.0.0.1 in %+v", d.Interfaces)
	}
	if !d.listens("tcp", "127.0.0.1", tcpPort) || !d.listens("udp", "127.0.0.1", udpPort) {
		t.Errorf("tcp %d / udp %d not listed as listening: %+v", tcpPort, udpPort, d.Listening)
	}
	// a package this machine has for sure, with the version dpkg reports
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "dpkg").Output()
	if err != nil {
		t.Fatalf("dpkg-query (the test needs a Debian host): %v", err)
	}
	found := false
	for _, p := range d.Packages {
		found = found || (p.Name == "dpkg" && p.Version == string(out) && p.Architecture != "")
	}
	if d.PackageManager != "dpkg" || !found || len(d.Packages) < 50 {
		t.Errorf("manager %q, %d packages, dpkg %s found: %v", d.PackageManager, len(d.Packages), out, found)
	}
	root := false
	for _, usr := range d.Users {
		root = root || (usr.Name == "root" && usr.UID == 0)
	}
	rootGroup := false
	for _, g := range d.Groups {
		rootGroup = rootGroup || (g.Name == "root" && g.GID == 0)
	}
	if !root || !rootGroup {
		t.Errorf("root user %v, root group %v", root, rootGroup)
	}
	// systemd is not PID 1 here: unit files are listed, their active state is an error
	if len(d.Services) == 0 {
		t.Errorf("no services (errors: %v)", d.Errors)
	}
	if len(d.Truncated) != 0 {
		t.Errorf("truncated %v with default bounds", d.Truncated)
	}
	t.Logf("inventory: %d bytes, %d packages, %d services, errors %v", len(body), len(d.Packages),
		len(d.Services), d.Errors)

	// The cache: a port opened now is not in the cached answer, and is after the TTL.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	port2 := ln2.Addr().(*net.TCPAddr).Port
	d2, _ := getInventory(t, a, is)
	if d2.CollectedAt != d.CollectedAt || d2.listens("tcp", "127.0.0.1", port2) {
		t.Errorf("second call within cache_ttl collected again (%s vs %s)", d2.CollectedAt, d.CollectedAt)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(500 * time.Millisecond)
		d3, _ := getInventory(t, a, is)
		if d3.CollectedAt != d.CollectedAt {
			if !d3.listens("tcp", "127.0.0.1", port2) {
				t.Errorf("fresh inventory lacks port %d", port2)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inventory still from %s after the cache_ttl", d.CollectedAt)
		}
	}
}

func utsString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func TestInventoryAndCapabilitiesScopes(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	st, body, _ := call(t, a, "GET", "/v1/inventory", is.tok("probe:read health:read"), "")
	if st != 403 || !strings.Contains(body, "insufficient_scope") {
		t.Errorf("inventory without inventory:read: %d %s", st, body)
	}
	if st, body, _ := call(t, a, "GET", "/v1/inventory", "", ""); st != 401 {
		t.Errorf("inventory without a token: %d %s", st, body)
	}
	if st, body, _ := call(t, a, "GET", "/v1/capabilities", "", ""); st != 401 {
		t.Errorf("capabilities without a token: %d %s", st, body)
	}
	// any valid token, whatever its scopes
	for _, scope := range []string{"probe:read", "metrics:read", ""} {
		st, body, _ := call(t, a, "GET", "/v1/capabilities", is.tok(scope), "")
		if st != 200 {
			t.Fatalf("capabilities with scope %q: %d %s", scope, st, body)
		}
		var c struct {
			Version      string `json:"version"`
			Platform     string `json:"platform"`
			Architecture string `json:"architecture"`
			StepTypes    []struct {
				Type   string  `json:"type"`
				Schema int     `json:"schema"`
				Scope  *string `json:"scope"`
			} `json:"step_types"`
			Features map[string]bool `json:"features"`
		}
		if err := json.Unmarshal([]byte(body), &c); err != nil {
			t.Fatalf("capabilities: %v %s", err, body)
		}
		var u syscall.Utsname
		_ = syscall.Uname(&u)
		if c.Version == "" || c.Platform != "linux" || c.Architecture != utsString(u.Machine[:]) {
			t.Errorf("capabilities: %s", body)
		}
		types := map[string]int{}
		for _, s := range c.StepTypes {
			types[s.Type] = s.Schema
		}
		for _, want := range []string{"exec", "script", "file.read", "file.write"} {
			if types[want] < 1 {
				t.Errorf("step type %s missing or without schema: %s", want, body)
			}
		}
		if !c.Features["inventory"] || !c.Features["shell"] || !c.Features["upgrade"] {
			t.Errorf("features: %v", c.Features)
		}
	}
}

func TestInventoryBounded(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "inventory:\n  max_items: 5\n  max_bytes: 4096\n")
	d, body := getInventory(t, a, is)
	if len(body) > 4096 {
		t.Errorf("document %d bytes, max_bytes 4096", len(body))
	}
	for name, n := range map[string]int{"packages": len(d.Packages), "users": len(d.Users),
		"groups": len(d.Groups), "services": len(d.Services), "interfaces": len(d.Interfaces),
		"listening": len(d.Listening), "filesystems": len(d.Filesystems)} {
		if n > 5 {
			t.Errorf("%s has %d entries, max_items 5", name, n)
		}
	}
	cut := strings.Join(d.Truncated, ",")
	if !strings.Contains(cut, "packages") || !strings.Contains(cut, "users") {
		t.Errorf("truncated = %v, want packages and users named", d.Truncated)
	}
	if d.Host.Hostname == "" || d.OS.ID == "" {
		t.Errorf("the small sections went missing: %s", body)
	}
}

// The control plane asks for the inventory in its answer to a health report:
// the next report carries it (trigger "inventory"), once, and a request in
// the answer to that report is not honoured.
func TestInventoryRequestedInHealthReport(t *testing.T) {
	cp := hcFakeCP(t, "-want-inventory")
	a := startAgent(t, hcConfig(cp, hcWriteCreds(t, 0600)))
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := httpClient.Get(cp + "/v1/agents/agent-1/health")
		if err != nil {
			t.Fatal(err)
		}
		var reps []struct {
			Trigger   string          `json:"trigger"`
			Inventory json.RawMessage `json:"inventory"`
		}
		err = json.NewDecoder(resp.Body).Decode(&reps)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(reps) >= 3 {
			if reps[0].Trigger != "startup" || reps[1].Trigger != "inventory" || reps[2].Trigger == "inventory" {
				t.Fatalf("triggers: %s, %s, %s", reps[0].Trigger, reps[1].Trigger, reps[2].Trigger)
			}
			if len(reps[0].Inventory) != 0 || len(reps[2].Inventory) != 0 {
				t.Errorf("an inventory in a report nobody asked it for")
			}
			var inv invDoc
			if err := json.Unmarshal(reps[1].Inventory, &inv); err != nil {
				t.Fatalf("inventory report: %v", err)
			}
			host, _ := os.Hostname()
			if inv.Host.Hostname != host || len(inv.Packages) == 0 {
				t.Errorf("inventory in the report: host %+v, %d packages", inv.Host, len(inv.Packages))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d reports\n%s", len(reps), a.Log.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}
