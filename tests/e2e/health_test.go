// End-to-end tests of health: Prometheus output parsed with expfmt, reports
// delivered in order exactly once after a control-plane outage, the spool
// surviving kill -9, live collectors, and the credentials file mode check.
package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// --- helpers (prefixed hc: health control plane) ---------------------------------

var (
	hcFakeOnce sync.Once
	hcFakeBin  string
	hcFakeErr  error
)

// hcFakeCP builds tests/fakecp once and starts it on a loopback port with
// args (e.g. "-piko-hmac-key", k).
func hcFakeCP(t *testing.T, args ...string) string {
	t.Helper()
	hcFakeOnce.Do(func() {
		// Under the build's GOCACHE when set (rebuilt each run, nothing left in /tmp).
		dir := os.Getenv("GOCACHE")
		if dir == "" {
			var err error
			if dir, err = os.MkdirTemp("", "fakecp-bin-"); err != nil {
				hcFakeErr = err
				return
			}
		}
		// Build beside, then rename: another run may be executing the old one.
		hcFakeBin = filepath.Join(dir, "fakecp-e2e")
		tmp := fmt.Sprintf("%s.%d", hcFakeBin, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, ".")
		cmd.Dir = filepath.Join("..", "fakecp")
		out, err := cmd.CombinedOutput()
		if err != nil {
			hcFakeErr = fmt.Errorf("go build fakecp: %v\n%s", err, out)
		} else if err := os.Rename(tmp, hcFakeBin); err != nil {
			hcFakeErr = err
		}
	})
	if hcFakeErr != nil {
		t.Fatal(hcFakeErr)
	}
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(hcFakeBin, append([]string{"-addr-file", addrFile}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; i < 500; i++ {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			return "http://" + string(b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("fakecp did not start")
	return ""
}

func hcFault(t *testing.T, base, prefix, mode string, count int) {
	t.Helper()
	body := fmt.Sprintf(`{"path_prefix":%q,"mode":%q,"count":%d}`, prefix, mode, count)
	resp, err := http.Post(base+"/_test/fault", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func hcClearFaults(t *testing.T, base string) {
	t.Helper()
	req, _ := http.NewRequest("DELETE", base+"/_test/fault", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

type hcRecorded struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
	Status  int               `json:"status"`
}

type hcReport struct {
	ID        string `json:"id"`
	CreatedAt string `json:"created_at"`
	Trigger   string `json:"trigger"`
	State     string `json:"state"`
}

func hcRequests(t *testing.T, base string) []hcRecorded {
	t.Helper()
	resp, err := http.Get(base + "/_test/requests")
	if err != nil {
		t.Fatal(err)
	}
	var recs []hcRecorded
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return recs
}

// hcAdmin sends one command to the agent's admin socket and returns "result".
func hcAdmin(t *testing.T, sock, request string) map[string]interface{} {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatalf("admin socket: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s\n", request)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("admin reply: %v", err)
	}
	var reply map[string]interface{}
	if err := json.Unmarshal([]byte(line), &reply); err != nil {
		t.Fatalf("admin reply %q: %v", line, err)
	}
	if reply["ok"] != true {
		t.Fatalf("admin %s failed: %s", request, line)
	}
	return reply["result"].(map[string]interface{})
}

func hcSock(a *Agent) string { return filepath.Join(a.Dir, "run", "admin.sock") }

// hcWaitAdmin waits until the admin socket answers.
func hcWaitAdmin(t *testing.T, a *Agent) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if c, err := net.Dial("unix", hcSock(a)); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("admin socket %s never appeared\n%s", hcSock(a), a.Log.String())
}

// hcPath digs into nested JSON maps: hcPath(m, "health", "reporting", "spool_entries").
func hcPath(m map[string]interface{}, keys ...string) interface{} {
	var cur interface{} = m
	for _, k := range keys {
		mm, ok := cur.(map[string]interface{})
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func hcNum(m map[string]interface{}, keys ...string) float64 {
	f, _ := hcPath(m, keys...).(float64)
	return f
}

func hcWriteCreds(t *testing.T, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "credentials.json")
	body := `{"version":1,"agent_id":"agent-1","tenant_id":"tenant-a","token":"agent-secret-token-123"}`
	if err := os.WriteFile(path, []byte(body), 0600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
	return path
}

func hcConfig(cpURL, creds string) string {
	return fmt.Sprintf("agent:\n  control_plane_url: %s\n  credentials_file: %s\n"+
		"health:\n  check_interval: 1s\n  report_interval: 1s\n", cpURL, creds)
}

// hcRestart starts a fresh agent process on an existing agent's directory.
func hcRestart(t *testing.T, old *Agent) *Agent {
	t.Helper()
	a := &Agent{t: t, Dir: old.Dir, Config: old.Config, Port: old.Port, Log: &syncBuffer{},
		done: make(chan struct{})}
	a.start()
	if err := a.waitReady(10 * time.Second); err != nil {
		t.Fatalf("agent did not restart: %v\n%s", err, a.Log.String())
	}
	return a
}

// hcSpoolEntries reads every entry file of the spool and checks its header,
// returning name -> report id. Temp files (a write a kill interrupted) are
// allowed and ignored: they are never renamed into place.
func hcSpoolEntries(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".rep") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			if os.IsNotExist(err) {
				continue // delivered meanwhile
			}
			t.Fatal(err)
		}
		nl := strings.IndexByte(string(b), '\n')
		if nl < 0 {
			t.Fatalf("spool entry %s has no header line: %q", e.Name(), b)
		}
		f := strings.Fields(string(b[:nl]))
		sum := sha256.Sum256(b[nl+1:])
		if len(f) != 3 || f[0] != "vmspool1" || f[1] != hex.EncodeToString(sum[:]) {
			t.Fatalf("spool entry %s is corrupt: header %q", e.Name(), b[:nl])
		}
		var rep hcReport
		if err := json.Unmarshal(b[nl+1:], &rep); err != nil || rep.ID != f[2] {
			t.Fatalf("spool entry %s: body does not match id %s (%v)", e.Name(), f[2], err)
		}
		out[e.Name()] = rep.ID
	}
	return out
}

// --- tests ------------------------------------------------------------------------

func TestHealthMetricsParseWithExpfmt(t *testing.T) {
	a := startAgent(t, "health:\n  check_interval: 1s\n")
	hcWaitAdmin(t, a)
	// The routes exist and sit behind auth (deny-by-default until JWT lands).
	for _, p := range []string{"/metrics", "/v1/health"} {
		resp, err := http.Get(a.URL(p))
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != 401 {
			t.Errorf("%s without a token: %d %s", p, resp.StatusCode, body)
		}
	}
	time.Sleep(1200 * time.Millisecond) // a second sample gives the CPU ratio
	res := hcAdmin(t, hcSock(a), `{"cmd":"metrics"}`)
	text, _ := res["text"].(string)
	var parser expfmt.TextParser
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("expfmt rejects the output: %v\n%s", err, text)
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "vm_agent_") {
			t.Errorf("metric %s lacks the vm_agent_ prefix", name)
		}
		if f.GetHelp() == "" {
			t.Errorf("metric %s has no HELP", name)
		}
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		if strings.HasSuffix(name, "_total") && f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s ends in _total but is %v", name, f.GetType())
		}
	}
	gauge := func(name string) float64 {
		f, ok := fams[name]
		if !ok || len(f.Metric) == 0 {
			t.Fatalf("metric %s missing", name)
		}
		return f.Metric[0].GetGauge().GetValue()
	}
	if gauge("vm_agent_host_memory_total_bytes") <= 0 || gauge("vm_agent_host_cpus") < 1 ||
		gauge("vm_agent_process_resident_memory_bytes") <= 0 || gauge("vm_agent_host_uptime_seconds") <= 0 {
		t.Errorf("implausible host metrics:\n%s", text)
	}
	if r := gauge("vm_agent_host_cpu_usage_ratio"); r < 0 || r > 1 {
		t.Errorf("cpu ratio %v", r)
	}
	sum := 0.0
	for _, m := range fams["vm_agent_health_state"].Metric {
		sum += m.GetGauge().GetValue()
	}
	if len(fams["vm_agent_health_state"].Metric) != 3 || sum != 1 {
		t.Errorf("health state family: %v", fams["vm_agent_health_state"])
	}
}

func TestHealthLiveCollectorsSane(t *testing.T) {
	a := startAgent(t, "health:\n  check_interval: 1s\n")
	hcWaitAdmin(t, a)
	res := hcAdmin(t, hcSock(a), `{"cmd":"status"}`)
	h, _ := res["health"].(map[string]interface{})
	if h == nil {
		t.Fatalf("no health in status: %v", res)
	}
	if hcNum(h, "system", "cpus") < 1 || hcNum(h, "system", "memory", "total_bytes") <= 0 ||
		hcNum(h, "system", "memory", "available_bytes") > hcNum(h, "system", "memory", "total_bytes") ||
		hcNum(h, "system", "uptime_seconds") <= 0 || hcNum(h, "system", "processes") < 1 ||
		hcNum(h, "system", "self", "rss_bytes") <= 0 || hcNum(h, "system", "self", "open_fds") < 3 ||
		hcNum(h, "system", "self", "threads") < 2 {
		t.Errorf("implausible live values: %v", h["system"])
	}
	fss, _ := hcPath(h, "system", "filesystems").([]interface{})
	for _, f := range fss {
		fm := f.(map[string]interface{})
		if hcNum(fm, "avail_bytes") > hcNum(fm, "size_bytes") {
			t.Errorf("filesystem with more available than size: %v", fm)
		}
		switch fm["fstype"] {
		case "proc", "sysfs", "tmpfs", "devtmpfs", "cgroup2", "squashfs":
			t.Errorf("pseudo filesystem reported: %v", fm)
		}
	}
	if h["state"] == nil || hcPath(h, "reporting", "enabled") != false {
		t.Errorf("state/reporting: %v %v", h["state"], h["reporting"])
	}
}

func TestHealthReportsAfterOutageArriveOnceInOrder(t *testing.T) {
	cp := hcFakeCP(t)
	hcFault(t, cp, "/v1/agents/", "500", 0)
	a := startAgent(t, hcConfig(cp, hcWriteCreds(t, 0600)))
	hcWaitAdmin(t, a)
	// Down for several intervals: reports pile up in the spool.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := hcAdmin(t, hcSock(a), `{"cmd":"status"}`)
		if hcNum(st, "health", "reporting", "spool_entries") >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool never filled: %v", st["health"])
		}
		time.Sleep(200 * time.Millisecond)
	}
	spooled := hcSpoolEntries(t, filepath.Join(a.Dir, "state", "health", "spool"))
	hcClearFaults(t, cp)
	deadline = time.Now().Add(20 * time.Second)
	for {
		st := hcAdmin(t, hcSock(a), `{"cmd":"status"}`)
		if hcNum(st, "health", "reporting", "spool_entries") == 0 &&
			hcNum(st, "health", "reporting", "sent") >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool never drained: %v", st["health"])
		}
		time.Sleep(200 * time.Millisecond)
	}
	a.Signal(syscall.SIGTERM)
	a.Wait(10 * time.Second)

	failed := map[string]bool{}
	accepted := map[string]int{}
	var order []hcReport
	for _, r := range hcRequests(t, cp) {
		if r.Method != "POST" || r.Path != "/v1/agents/agent-1/health" {
			continue
		}
		if r.Headers["authorization"] != "Bearer agent-secret-token-123" ||
			r.Headers["x-agent-id"] != "agent-1" || r.Headers["x-tenant-id"] != "tenant-a" {
			t.Errorf("headers: %v", r.Headers)
		}
		var rep hcReport
		if err := json.Unmarshal(r.Body, &rep); err != nil || rep.ID == "" {
			t.Fatalf("report body: %s", r.Body)
		}
		switch r.Status {
		case 500:
			failed[rep.ID] = true
		case 202:
			accepted[rep.ID]++
			order = append(order, rep)
		}
	}
	if len(failed) == 0 || len(spooled) < 4 {
		t.Fatalf("outage not seen: %d failed ids, %d spooled", len(failed), len(spooled))
	}
	for id := range failed {
		if accepted[id] != 1 {
			t.Errorf("report %s failed during the outage and was accepted %d times", id, accepted[id])
		}
	}
	for name, id := range spooled {
		if accepted[id] != 1 {
			t.Errorf("spooled report %s (%s) was accepted %d times", id, name, accepted[id])
		}
	}
	if !sort.SliceIsSorted(order, func(i, j int) bool { return order[i].CreatedAt < order[j].CreatedAt }) {
		t.Errorf("reports arrived out of order")
	}
	if out := a.Log.String(); strings.Contains(out, "agent-secret-token-123") {
		t.Errorf("the agent token reached the log")
	}
}

func TestHealthSpoolSurvivesKill9(t *testing.T) {
	refused := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens there
	a := startAgent(t, hcConfig(refused, hcWriteCreds(t, 0600)))
	spool := filepath.Join(a.Dir, "state", "health", "spool")
	seen := map[string]string{} // every entry ever seen on disk
	for round := 0; round < 5; round++ {
		time.Sleep(time.Duration(1100+round*230) * time.Millisecond)
		before := hcSpoolEntries(t, spool)
		a.Signal(syscall.SIGKILL)
		a.Wait(10 * time.Second)
		after := hcSpoolEntries(t, spool) // every renamed entry must be whole
		for name, id := range before {
			if after[name] != id {
				t.Fatalf("round %d: entry %s (%s) lost or changed by kill -9", round, name, id)
			}
		}
		for name, id := range after {
			seen[name] = id
		}
		a = hcRestart(t, a)
	}
	if len(seen) < 4 {
		t.Fatalf("only %d spool entries written", len(seen))
	}
	// Control plane back: everything still spooled arrives, in order.
	a.Signal(syscall.SIGKILL)
	a.Wait(10 * time.Second)
	onDisk := hcSpoolEntries(t, spool)
	cp := hcFakeCP(t)
	cfg, _ := os.ReadFile(a.Config)
	os.WriteFile(a.Config, []byte(strings.Replace(string(cfg), refused, cp, 1)), 0600)
	a = hcRestart(t, a)
	deadline := time.Now().Add(20 * time.Second)
	got := map[string]bool{}
	var order []string
	for len(got) < len(onDisk)+1 && time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		got = map[string]bool{}
		order = nil
		for _, r := range hcRequests(t, cp) {
			var rep hcReport
			if r.Status == 202 && json.Unmarshal(r.Body, &rep) == nil {
				got[rep.ID] = true
				order = append(order, rep.ID)
			}
		}
	}
	var names []string
	for n := range onDisk {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if !got[onDisk[n]] {
			t.Errorf("spooled report %s (%s) never arrived", onDisk[n], n)
		} else if i < len(order) && order[i] != onDisk[n] {
			t.Errorf("arrival %d is %s, want spool entry %s (%s)", i, order[i], n, onDisk[n])
		}
	}
}

func TestHealthCredentialsFileMustBe0600(t *testing.T) {
	cp := hcFakeCP(t)
	creds := hcWriteCreds(t, 0644)
	a := startAgent(t, hcConfig(cp, creds))
	if !a.WaitLog("chmod 600 "+creds, 10*time.Second) {
		t.Fatalf("no clear message about the credentials mode:\n%s", a.Log.String())
	}
	hcWaitAdmin(t, a)
	st := hcAdmin(t, hcSock(a), `{"cmd":"status"}`)
	if e, _ := hcPath(st, "health", "reporting", "last_error").(string); !strings.Contains(e, "credentials") {
		t.Errorf("status does not show the credentials problem: %v", hcPath(st, "health", "reporting"))
	}
	for _, r := range hcRequests(t, cp) {
		if strings.HasPrefix(r.Path, "/v1/agents/") {
			t.Errorf("a report was sent without valid credentials: %v", r.Path)
		}
	}
}

func TestHealthRoutesWithJWT(t *testing.T) {
	is := newIssuer(t)
	a := startAuthAgent(t, is, "health:\n  check_interval: 1s\n")
	if code, body, _ := call(t, a, "GET", "/metrics", "", ""); code != 401 {
		t.Errorf("/metrics without a token: %d %s", code, body)
	}
	if code, body, _ := call(t, a, "GET", "/metrics", is.tok("health:read"), ""); code != 403 {
		t.Errorf("/metrics with health:read only: %d %s", code, body)
	}
	if code, body, _ := call(t, a, "GET", "/v1/health", is.tok("metrics:read"), ""); code != 403 {
		t.Errorf("/v1/health with metrics:read only: %d %s", code, body)
	}
	code, body, hdr := call(t, a, "GET", "/metrics", is.tok("metrics:read"), "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %s %q", code, hdr.Get("Content-Type"), body)
	}
	var parser expfmt.TextParser
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil || fams["vm_agent_build_info"] == nil || fams["vm_agent_host_memory_total_bytes"] == nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	code, body, hdr = call(t, a, "GET", "/v1/health", is.tok("health:read"), "")
	var h map[string]interface{}
	if code != 200 || json.Unmarshal([]byte(body), &h) != nil || h["agent_id"] != "agent-1" ||
		h["state"] == nil || hcNum(h, "system", "memory", "total_bytes") <= 0 {
		t.Fatalf("/v1/health: %d %s", code, body)
	}
	assertNoTokenLeak(t, is, a)
}

func TestHealthReportingSwitchedOnByReload(t *testing.T) {
	a := startAgent(t, "health:\n  check_interval: 1s\n  report_interval: 1s\n")
	hcWaitAdmin(t, a)
	cp := hcFakeCP(t)
	cfg, _ := os.ReadFile(a.Config)
	extra := fmt.Sprintf("  control_plane_url: %s\n  credentials_file: %s\n", cp, hcWriteCreds(t, 0600))
	os.WriteFile(a.Config, []byte(strings.Replace(string(cfg), "agent:\n", "agent:\n"+extra, 1)), 0600)
	if res := hcAdmin(t, hcSock(a), `{"cmd":"reload"}`); res["reloaded"] != true {
		t.Fatalf("reload: %v", res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range hcRequests(t, cp) {
			if r.Path == "/v1/agents/agent-1/health" && r.Status == 202 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no report after reporting was switched on by a reload\n%s", a.Log.String())
}

func TestHealthHungControlPlaneBlocksNothing(t *testing.T) {
	cp := hcFakeCP(t)
	hcFault(t, cp, "/v1/agents/", "hang", 0)
	a := startAgent(t, hcConfig(cp, hcWriteCreds(t, 0600)))
	hcWaitAdmin(t, a)
	// Wait until a report is in flight (the fake records a hang only when it ends,
	// so give the reporter time to connect).
	time.Sleep(1500 * time.Millisecond)
	for i := 0; i < 5; i++ {
		start := time.Now()
		resp, err := http.Get(a.URL("/v1/livez"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		hcAdmin(t, hcSock(a), `{"cmd":"status"}`)
		if d := time.Since(start); d > time.Second {
			t.Errorf("webhook/admin took %v while the control plane hangs", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
	start := time.Now()
	a.Signal(syscall.SIGTERM)
	if c := a.Wait(10 * time.Second); c != 0 {
		t.Fatalf("exit %d", c)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v with a report in flight", d)
	}
	// The report that hung is kept for later.
	if n := len(hcSpoolEntries(t, filepath.Join(a.Dir, "state", "health", "spool"))); n == 0 {
		t.Errorf("the undelivered report is not in the spool")
	}
}
