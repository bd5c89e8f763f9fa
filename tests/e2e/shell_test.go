// Interactive shell (issue 13): GET /v1/shell upgraded to a WebSocket, every
// test through the relay and the tunnel, with gorilla/websocket as the client.
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

type shellExit struct {
	Type   string `json:"type"`
	Code   *int   `json:"code"`
	Signal string `json:"signal"`
	Reason string `json:"reason"`
	ID     string `json:"id"`
}

// dialShell opens a shell session through the relay; q holds the query.
func dialShell(t *testing.T, a *Agent, token string, q url.Values) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(a.Base, "http") + "/v1/shell"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	return d.Dial(u, h)
}

func cmdQuery(argv ...string) url.Values {
	b, _ := json.Marshal(argv)
	return url.Values{"command": {string(b)}}
}

// readUntilExit collects output frames until the exit message (bounded).
func readUntilExit(t *testing.T, ws *websocket.Conn, limit time.Duration) (string, shellExit) {
	t.Helper()
	var out strings.Builder
	deadline := time.Now().Add(limit)
	for {
		ws.SetReadDeadline(deadline)
		mt, p, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("no exit message: %v; output so far %q", err, out.String())
		}
		if mt == websocket.BinaryMessage {
			out.Write(p)
			continue
		}
		var e shellExit
		if err := json.Unmarshal(p, &e); err != nil {
			t.Fatalf("bad control message %q: %v", p, err)
		}
		if e.Type == "exit" {
			return out.String(), e
		}
	}
}

// readUntil reads output until it contains want (bounded).
func readUntil(t *testing.T, ws *websocket.Conn, want string, limit time.Duration) string {
	t.Helper()
	var out strings.Builder
	deadline := time.Now().Add(limit)
	for !strings.Contains(out.String(), want) {
		ws.SetReadDeadline(deadline)
		mt, p, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("did not see %q: %v; output %q", want, err, out.String())
		}
		if mt == websocket.BinaryMessage {
			out.Write(p)
		}
	}
	return out.String()
}

func startShellAgent(t *testing.T, is *issuer, extra string) *Agent {
	t.Helper()
	return startAuthAgent(t, is, extra)
}

func TestShellEchoAndExitCode(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	ws, resp, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/sh", "-c", "echo hello-shell; exit 3"))
	if err != nil {
		t.Fatalf("dial: %v (%v)\n%s", err, resp, a.Log.String())
	}
	defer ws.Close()
	out, e := readUntilExit(t, ws, 15*time.Second)
	if !strings.Contains(out, "hello-shell") {
		t.Errorf("output %q lacks hello-shell", out)
	}
	if e.Code == nil || *e.Code != 3 {
		t.Errorf("exit %+v, want code 3", e)
	}
	// then a close frame
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after exit: %v, want a normal close", err)
	}
}

func TestShellInteractiveCatRoundTrip(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/cat"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for i := 0; i < 3; i++ {
		line := fmt.Sprintf("ping-%d", i)
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte(line+"\n")); err != nil {
			t.Fatal(err)
		}
		// the terminal echoes the line, then cat writes it again
		out := readUntil(t, ws, line+"\r\n"+line, 10*time.Second)
		_ = out
	}
	ws.WriteMessage(websocket.BinaryMessage, []byte{4}) // ^D: cat sees end of input
	_, e := readUntilExit(t, ws, 10*time.Second)
	if e.Code == nil || *e.Code != 0 {
		t.Errorf("cat ended %+v, want exit 0", e)
	}
}

func TestShellResizeReflectsInSttySize(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	q := cmdQuery("/bin/sh")
	q.Set("cols", "100")
	q.Set("rows", "30")
	ws, _, err := dialShell(t, a, is.tok("shell"), q)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.BinaryMessage, []byte("stty size\n"))
	readUntil(t, ws, "30 100", 10*time.Second)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"resize","cols":132,"rows":43}`))
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"resize","cols":0,"rows":-1}`)) // ignored
	ws.WriteMessage(websocket.BinaryMessage, []byte("stty size\n"))
	readUntil(t, ws, "43 132", 10*time.Second)
	ws.WriteMessage(websocket.BinaryMessage, []byte("exit 0\n"))
	readUntilExit(t, ws, 10*time.Second)
}

func TestShellKilledBySignal(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/sh"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.BinaryMessage, []byte("kill -9 $$\n"))
	_, e := readUntilExit(t, ws, 10*time.Second)
	if e.Signal != "KILL" {
		t.Errorf("exit %+v, want signal KILL", e)
	}
}

// pidsOf lists the pids whose command line starts with marker.
func pidsOf(marker string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		// the command line starts with it: a "setsid sleep N" on its way to
		// becoming "sleep N" is not counted twice
		if err == nil && strings.HasPrefix(strings.ReplaceAll(string(b), "\x00", " "), marker) {
			out = append(out, pid)
		}
	}
	return out
}

// With a cgroup per session, and with the subreaper fallback (no cgroup v2
// at probe.cgroup_root): a setsid child does not escape either.
func TestShellCloseLeavesNothingRunning(t *testing.T) {
	t.Run("cgroup", func(t *testing.T) { shellCloseLeavesNothing(t, "") })
	t.Run("subreaper", func(t *testing.T) {
		shellCloseLeavesNothing(t, "probe:\n  cgroup_root: "+t.TempDir()+"\n")
	})
}

func shellCloseLeavesNothing(t *testing.T, extra string) {
	is := newIssuer(t)
	a := startShellAgent(t, is, extra)
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/bash", "--norc", "-i"))
	if err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("%d", 1000000+time.Now().UnixNano()%1000000)
	ws.WriteMessage(websocket.BinaryMessage, []byte("sleep "+marker+" & setsid sleep "+marker+" & echo started-$((1+1))\n"))
	readUntil(t, ws, "started-2", 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for n = len(pidsOf("sleep " + marker)); n < 2 && time.Now().Before(deadline); n = len(pidsOf("sleep " + marker)) {
		time.Sleep(20 * time.Millisecond)
	}
	if n < 2 {
		t.Fatalf("the sleeps did not start (%d)", n)
	}
	ws.Close() // the client goes away without a word
	deadline = time.Now().Add(10 * time.Second)
	for len(pidsOf("sleep "+marker)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if p := pidsOf("sleep " + marker); len(p) > 0 {
		t.Fatalf("left running after the session closed: %v", p)
	}
}

func TestShellIdleTimeout(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "shell:\n  idle_timeout: 1s\n")
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/sh"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	start := time.Now()
	_, e := readUntilExit(t, ws, 15*time.Second)
	if !strings.Contains(e.Reason, "idle") {
		t.Errorf("exit %+v, want an idle timeout", e)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("idle timeout took %v", d)
	}
}

func TestShellAuthBeforeUpgrade(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	wrongTenant := is.claims("shell")
	wrongTenant["tenant_id"] = "tenant-b"
	for _, c := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", 401},
		{"wrong scope", is.tok("probe:run"), 403},
		{"audit scope only", is.tok("shell:audit"), 403},
		{"wrong tenant", is.sign("EdDSA", "ed", wrongTenant), 403},
	} {
		ws, resp, err := dialShell(t, a, c.token, cmdQuery("/bin/true"))
		if err == nil {
			ws.Close()
			t.Errorf("%s: upgraded", c.name)
			continue
		}
		if resp == nil || resp.StatusCode != c.want {
			t.Errorf("%s: %v %v, want %d", c.name, resp, err, c.want)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: content type %q", c.name, ct)
		}
	}
}

func TestShellSessionCap(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "shell:\n  max_sessions: 1\n")
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/cat"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, resp, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/cat"))
	if err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("second session: %v %v, want 429", resp, err)
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	if body.Error.Code != "too_many_sessions" {
		t.Errorf("refusal code %q", body.Error.Code)
	}
}

// castReplay parses an asciicast v2 file: header and the "o" stream.
func castReplay(t *testing.T, data string) (map[string]interface{}, string, []string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	if !sc.Scan() {
		t.Fatal("empty recording")
	}
	var hdr map[string]interface{}
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
		t.Fatalf("header %q: %v", sc.Text(), err)
	}
	var out strings.Builder
	var kinds []string
	for sc.Scan() {
		var ev []interface{}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		if _, ok := ev[0].(float64); !ok {
			t.Fatalf("event time %v", ev[0])
		}
		k := ev[1].(string)
		kinds = append(kinds, k)
		if k == "o" {
			out.WriteString(ev[2].(string))
		}
	}
	return hdr, out.String(), kinds
}

func TestShellRecordingReplaysOutput(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	tok := is.tok("shell")
	ws, _, err := dialShell(t, a, tok, cmdQuery("/bin/sh"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"resize","cols":90,"rows":20}`))
	ws.WriteMessage(websocket.BinaryMessage, []byte("printf 'caf\\303\\251 %s\\n' recorded; exit 7\n"))
	shown, e := readUntilExit(t, ws, 10*time.Second)
	if e.Code == nil || *e.Code != 7 || e.ID == "" {
		t.Fatalf("exit %+v", e)
	}
	st, body, _ := call(t, a, "GET", "/v1/shell/sessions", is.tok("shell:audit"), "")
	if st != 200 || !strings.Contains(body, e.ID) {
		t.Fatalf("sessions: %d %s", st, body)
	}
	if st, _, _ := call(t, a, "GET", "/v1/shell/sessions", is.tok("shell"), ""); st != 403 {
		t.Errorf("sessions with scope shell: %d, want 403", st)
	}
	st, rec, _ := call(t, a, "GET", "/v1/shell/sessions/"+e.ID+"/recording", is.tok("shell:audit"), "")
	if st != 200 {
		t.Fatalf("recording: %d %s", st, rec)
	}
	hdr, replay, kinds := castReplay(t, rec)
	if hdr["version"] != 2.0 || hdr["width"] != 80.0 || hdr["height"] != 24.0 {
		t.Errorf("header %v", hdr)
	}
	if hdr["sub"] != "operator@msp" || hdr["tenant"] != "tenant-a" || hdr["user"] == "" || hdr["jti"] == "" {
		t.Errorf("header lacks who: %v", hdr)
	}
	if replay != shown {
		t.Errorf("replay differs from what was shown:\nshown  %q\nreplay %q", shown, replay)
	}
	if !strings.Contains(replay, "café recorded") {
		t.Errorf("replay %q", replay)
	}
	has := map[string]bool{}
	for _, k := range kinds {
		has[k] = true
	}
	if !has["i"] || !has["r"] {
		t.Errorf("event kinds %v: want input and resize events", kinds)
	}
	fi, err := os.Stat(filepath.Join(a.Dir, "state", "shell", e.ID+".cast"))
	if err != nil || fi.Mode().Perm() != 0600 {
		t.Errorf("recording file: %v %v", fi, err)
	}
	// audit: a durable started line, and the end line with who, command, bytes, exit
	var started, ended bool
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !(started && ended) {
		for _, l := range auditLines(t, a) {
			if l["route"] != "GET /v1/shell" {
				continue
			}
			if l["outcome"] == "started" {
				started = true
			}
			if sh, ok := l["shell"].(map[string]interface{}); ok && sh["event"] == "start" && l["outcome"] != "ok" {
				t.Errorf("the accepted upgrade's audit line says outcome %v, want ok: %v", l["outcome"], l)
			}
			if sh, ok := l["shell"].(map[string]interface{}); ok && sh["id"] == e.ID && sh["code"] == 7.0 &&
				sh["bytes_out"].(float64) > 0 && sh["bytes_in"].(float64) > 0 && sh["user"] != "" && l["sub"] == "operator@msp" {
				ended = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !started || !ended {
		t.Errorf("audit: started %v ended %v\n%v", started, ended, auditLines(t, a))
	}
}

func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// A 100 MiB burst to a client that does not read: the agent stops reading
// the terminal (its RSS stays bounded), then delivers every byte once the
// client reads. The recording stops at shell.record_max_bytes and says so.
func TestShellBurstToNonReadingClientKeepsMemoryBounded(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "shell:\n  record_max_bytes: 1MiB\n")
	const total = 100 << 20
	ws, _, err := dialShell(t, a, is.tok("shell"),
		cmdQuery("/bin/sh", "-c", fmt.Sprintf("stty raw -echo; head -c %d /dev/zero | tr '\\0' x", total)))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pid := a.Cmd.Process.Pid
	base := rssKiB(t, pid)
	peak := base
	for i := 0; i < 30; i++ { // 3 s without reading
		if r := rssKiB(t, pid); r > peak {
			peak = r
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := 0
	var e shellExit
	deadline := time.Now().Add(90 * time.Second)
	for e.Type != "exit" {
		ws.SetReadDeadline(deadline)
		mt, p, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		if mt == websocket.BinaryMessage {
			got += len(p)
		} else {
			json.Unmarshal(p, &e)
		}
		if r := rssKiB(t, pid); got%(8<<20) < len(p) && r > peak {
			peak = r
		}
	}
	t.Logf("agent RSS %d KiB before, peak %d KiB; %d bytes delivered", base, peak, got)
	if got < total {
		t.Errorf("delivered %d bytes, want %d", got, total)
	}
	if peak-base > 48<<10 {
		t.Errorf("agent RSS grew by %d KiB during a %d MiB burst", peak-base, total>>20)
	}
	_, rec, _ := call(t, a, "GET", "/v1/shell/sessions/"+e.ID+"/recording", is.tok("shell:audit"), "")
	if len(rec) > 1<<20+256 || !strings.Contains(rec, "recording stopped") {
		t.Errorf("recording of %d bytes, ends %q", len(rec), tail(rec, 120))
	}
}

func TestShellSignalControlInterruptsForegroundJob(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/sh"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.BinaryMessage, []byte("sleep 30\n"))
	time.Sleep(300 * time.Millisecond) // let sleep start; the shell then waits for it
	start := time.Now()
	// like ^C: the foreground job ends and the shell reads the next line
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"signal","name":"INT"}`))
	ws.WriteMessage(websocket.BinaryMessage, []byte("echo after-$((2+2))\n"))
	readUntil(t, ws, "after-4", 10*time.Second)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the interrupt took %v", d)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"close"}`))
	_, e := readUntilExit(t, ws, 10*time.Second)
	if !strings.Contains(e.Reason, "closed") {
		t.Errorf("exit %+v", e)
	}
}

func TestShellRecordingRetentionByCount(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "shell:\n  retention_count: 2\n")
	for i := 0; i < 4; i++ {
		ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/true"))
		if err != nil {
			t.Fatal(err)
		}
		readUntilExit(t, ws, 10*time.Second)
		ws.Close()
		time.Sleep(1100 * time.Millisecond) // distinct mtimes (seconds)
	}
	ents, _ := filepath.Glob(filepath.Join(a.Dir, "state", "shell", "*.cast"))
	// pruned when a session starts: the last one's start kept 2 older ones
	if len(ents) > 3 {
		t.Errorf("%d recordings kept with retention_count 2", len(ents))
	}
}

// The request guard bounds requests, not sessions: a shell outlives
// webhook.request_timeout once upgraded.
func TestShellOutlivesRequestTimeout(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "webhook:\n  request_timeout: 500ms\n")
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/cat"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for i := 0; i < 6; i++ { // 3 s, six times the request deadline
		line := fmt.Sprintf("tick-%d", i)
		ws.WriteMessage(websocket.BinaryMessage, []byte(line+"\n"))
		readUntil(t, ws, line+"\r\n"+line, 5*time.Second)
		time.Sleep(500 * time.Millisecond)
	}
	ws.WriteMessage(websocket.BinaryMessage, []byte{4})
	if _, e := readUntilExit(t, ws, 10*time.Second); e.Code == nil || *e.Code != 0 {
		t.Errorf("exit %+v", e)
	}
}

// openSleepShell opens a session running "/bin/sleep marker" and waits
// (bounded) until that command runs.
func openSleepShell(t *testing.T, a *Agent, is *issuer, marker string) *websocket.Conn {
	t.Helper()
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/sleep", marker))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(pidsOf("/bin/sleep "+marker)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(pidsOf("/bin/sleep "+marker)) == 0 {
		ws.Close()
		t.Fatal("the shell's command did not start")
	}
	return ws
}

// Stopping the agent ends open sessions at once (their shells killed) and
// does not wait for the clients.
func TestShellAgentStopEndsSessions(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	marker := fmt.Sprintf("%d", 2000000+time.Now().UnixNano()%1000000)
	ws := openSleepShell(t, a, is, marker)
	defer ws.Close()
	start := time.Now()
	a.Signal(15)
	if code := a.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("stop took %v with a shell open", d)
	}
	if p := pidsOf("/bin/sleep " + marker); len(p) > 0 {
		t.Errorf("left running after the agent stopped: %v", p)
	}
}

// shell.max_duration ends a busy session too; shell.record_input: false
// leaves input out of the recording; unknown recordings are 404.
func TestShellMaxDurationAndOutputOnlyRecording(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "shell:\n  max_duration: 1s\n  record_input: false\n")
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/sh"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	start := time.Now()
	ws.WriteMessage(websocket.BinaryMessage, []byte("secret-typed; sleep 30\n"))
	_, e := readUntilExit(t, ws, 15*time.Second)
	if !strings.Contains(e.Reason, "max duration") || time.Since(start) > 8*time.Second {
		t.Errorf("exit %+v after %v, want max duration", e, time.Since(start))
	}
	_, rec, _ := call(t, a, "GET", "/v1/shell/sessions/"+e.ID+"/recording", is.tok("shell:audit"), "")
	_, _, kinds := castReplay(t, rec)
	for _, k := range kinds {
		if k == "i" {
			t.Errorf("input recorded with record_input false")
		}
	}
	for _, id := range []string{"00000000-0000-0000-0000-000000000000", "..%2f..%2faudit.log", "x"} {
		if st, _, _ := call(t, a, "GET", "/v1/shell/sessions/"+id+"/recording", is.tok("shell:audit"), ""); st != 404 {
			t.Errorf("recording %q: %d, want 404", id, st)
		}
	}
}

// An upgrade civetweb refuses after we accepted it (a wrong WebSocket
// version) leaves no session behind: its slot is free again and its end
// is audited.
func TestShellFailedHandshakeFreesItsSlot(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "shell:\n  max_sessions: 1\n")
	req, _ := http.NewRequest("GET", a.Base+"/v1/shell", nil)
	req.Header.Set("Authorization", "Bearer "+is.tok("shell"))
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "8")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 101 {
		t.Fatalf("upgraded with version 8")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, resp, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/true"))
		if err == nil {
			readUntilExit(t, ws, 10*time.Second)
			ws.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot stayed taken: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	found := false
	for _, l := range auditLines(t, a) {
		if l["error"] == "handshake_failed" {
			found = true
		}
	}
	if !found {
		t.Errorf("no handshake_failed audit line")
	}
}

func TestShellRecordingRetentionByAge(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "shell:\n  retention_age: 1h\n")
	dir := filepath.Join(a.Dir, "state", "shell")
	os.MkdirAll(dir, 0700)
	old := filepath.Join(dir, "0123abcd-0000-4000-8000-000000000000.cast")
	other := filepath.Join(dir, "notes.txt")
	for _, p := range []string{old, other} {
		os.WriteFile(p, []byte(`{"version":2}`+"\n"), 0600)
		past := time.Now().Add(-2 * time.Hour)
		os.Chtimes(p, past, past)
	}
	ws, _, err := dialShell(t, a, is.tok("shell"), cmdQuery("/bin/true"))
	if err != nil {
		t.Fatal(err)
	}
	readUntilExit(t, ws, 10*time.Second)
	ws.Close()
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("a recording older than shell.retention_age was kept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that is no recording was removed: %v", err)
	}
}

// A reload that turns the tunnel off stops the tunnel's listener: a shell
// session on it ends at once (its command killed) instead of holding the
// listener's worker, and the reload finishes well before piko.stop_grace.
func TestShellTunnelOffByReloadEndsSessions(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	marker := fmt.Sprintf("%d", 3000000+time.Now().UnixNano()%1000000)
	ws := openSleepShell(t, a, is, marker)
	defer ws.Close()
	cfg := readFileString(t, a.Config)
	off := regexp.MustCompile(`(?m)^  server_url: \S+\n`).ReplaceAllString(cfg, "")
	if off == cfg {
		t.Fatalf("no piko.server_url in\n%s", cfg)
	}
	if err := os.WriteFile(a.Config, []byte(off), 0600); err != nil {
		t.Fatal(err)
	}
	a.Signal(syscall.SIGHUP)
	// piko.stop_grace is 10 s by default: the session must not last until then
	if !a.WaitLog("config: configuration reloaded", 5*time.Second) {
		t.Fatalf("the reload did not finish within 5 s with a shell open:\n%s", a.Log.String())
	}
	if !strings.Contains(a.Log.String(), "stopped (the tunnel does not use it)") {
		t.Fatalf("the tunnel's listener was not stopped:\n%s", a.Log.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(pidsOf("/bin/sleep "+marker)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p := pidsOf("/bin/sleep " + marker); len(p) > 0 {
		t.Errorf("the shell's command outlived the tunnel's listener: %v", p)
	}
	if _, err := os.Lstat(filepath.Join(a.Dir, "run", "webhook.sock")); !os.IsNotExist(err) {
		t.Errorf("webhook.sock after the tunnel was turned off: %v", err)
	}
}
