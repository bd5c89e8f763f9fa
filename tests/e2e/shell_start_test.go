// Shell parameters from the first text message (issue 13): with no command in
// the query, the first frame may be {"type":"start",...}; its parameters are
// validated like the query's and audited durably before the shell runs.
package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// shellAudit returns the audit lines of one session (by its id), bounded wait
// for want of them.
func shellAudit(t *testing.T, a *Agent, id string, want int) []map[string]interface{} {
	t.Helper()
	var got []map[string]interface{}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = got[:0]
		for _, l := range auditLines(t, a) {
			if sh, ok := l["shell"].(map[string]interface{}); ok && sh["id"] == id {
				got = append(got, l)
			}
		}
		if len(got) >= want {
			break
		}
	}
	return got
}

func TestShellParametersFromStartMessage(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	const cmd = "echo from-start; stty size; exit 4"
	ws, resp, err := dialShell(t, a, is.tok("shell"), nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	start, _ := json.Marshal(map[string]interface{}{
		"type": "start", "cols": 90, "rows": 33, "command": []string{"/bin/sh", "-c", cmd},
		"env": map[string]string{"FROM_START": "yes"}, "cwd": "/tmp",
	})
	ws.WriteMessage(websocket.TextMessage, start)
	out, e := readUntilExit(t, ws, 15*time.Second)
	if !strings.Contains(out, "from-start") || !strings.Contains(out, "33 90") {
		t.Errorf("output %q: want the start message's command and size", out)
	}
	if e.Code == nil || *e.Code != 4 {
		t.Fatalf("exit %+v, want code 4", e)
	}
	final := "/bin/sh -c " + cmd
	// before the upgrade: "started" without the command yet; then the
	// parameters line, durable, before the shell ran; the end line says it too
	var awaiting, params, end bool
	for _, l := range shellAudit(t, a, e.ID, 3) {
		sh := l["shell"].(map[string]interface{})
		switch {
		case sh["event"] == "start" && sh["awaiting_start"] == true:
			awaiting = true
		case sh["event"] == "parameters" && sh["command"] == final && sh["cwd"] == "/tmp" && l["sub"] == "operator@msp":
			params = true
		case sh["command"] == final && sh["code"] == 4.0:
			end = true
		}
	}
	if !awaiting || !params || !end {
		t.Errorf("audit: awaiting %v parameters %v end %v\n%v", awaiting, params, end, auditLines(t, a))
	}
	_, rec, _ := call(t, a, "GET", "/v1/shell/sessions/"+e.ID+"/recording", is.tok("shell:audit"), "")
	hdr, _, _ := castReplay(t, rec)
	if hdr["command"] != final || hdr["width"] != 90.0 || hdr["height"] != 33.0 {
		t.Errorf("recording header %v: want the start message's command and size", hdr)
	}
}

func TestShellStartMessageValidatedLikeTheQuery(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	for _, bad := range []string{
		`{"type":"start","command":[]}`,
		`{"type":"start","command":["/bin/sh"],"env":{"1BAD":"x"}}`,
		`{"type":"start","command":["/bin/sh"],"shell":"/bin/sh"}`,
	} {
		ws, resp, err := dialShell(t, a, is.tok("shell"), nil)
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		ws.WriteMessage(websocket.TextMessage, []byte(bad))
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		var e struct {
			Type, Error, Reason, ID string
			Code                    *int
		}
		for {
			mt, p, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("%s: no exit message: %v", bad, err)
			}
			if mt == websocket.BinaryMessage {
				t.Fatalf("%s: the shell ran: %q", bad, p)
			}
			json.Unmarshal(p, &e)
			if e.Type == "exit" {
				break
			}
		}
		if e.Error != "invalid_request" || e.Code != nil || e.Reason == "" {
			t.Errorf("%s: exit %+v, want invalid_request with a reason and no code", bad, e)
		}
		ws.Close()
	}
}

// Any other first frame starts the query's (default) shell at once: no wait.
func TestShellWithoutStartMessageStartsAtOnce(t *testing.T) {
	is := newIssuer(t)
	a := startShellAgent(t, is, "")
	ws, resp, err := dialShell(t, a, is.tok("shell"), nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	t0 := time.Now()
	ws.WriteMessage(websocket.BinaryMessage, []byte("exit 5\n"))
	_, e := readUntilExit(t, ws, 10*time.Second)
	if e.Code == nil || *e.Code != 5 {
		t.Fatalf("exit %+v, want code 5", e)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("the default shell took %s: it waited for a start message", d)
	}
}
