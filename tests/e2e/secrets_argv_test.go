// Secrets never reach a child's command line or environment: every local user
// can read /proc/<pid>/cmdline, so an upgrade started through the API must get
// its request (a presigned URL holds a token in its query) another way.
package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// execWatch sees every exec on the machine through the kernel's process
// connector and reads the new process's cmdline and environ at once (a
// process that lives a few milliseconds is still seen).
type execWatch struct {
	fd   int
	mu   sync.Mutex
	seen []string // cmdlines (NUL as space) that contain watchFor
	hits []string // cmdline/environ entries that contain secret
	done chan struct{}
	stop chan struct{}
}

const (
	netlinkConnector  = 11
	cnIdxProc         = 1
	procCnMcastListen = 1
	procEventExec     = 2
)

func startExecWatch(t *testing.T, watchFor, secret string) *execWatch {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkConnector)
	if err != nil {
		t.Skipf("no process connector: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		syscall.Close(fd)
		t.Skipf("no process connector: %v", err)
	}
	// nlmsghdr (16) + cn_msg (20) + op (4)
	msg := make([]byte, 40)
	le := binary.LittleEndian
	le.PutUint32(msg[0:], 40)
	le.PutUint16(msg[4:], syscall.NLMSG_DONE)
	le.PutUint32(msg[12:], uint32(os.Getpid()))
	le.PutUint32(msg[16:], cnIdxProc) // cb_id.idx
	le.PutUint32(msg[20:], 1)         // cb_id.val = CN_VAL_PROC
	le.PutUint16(msg[32:], 4)         // len
	le.PutUint32(msg[36:], procCnMcastListen)
	if err := syscall.Sendto(fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		syscall.Close(fd)
		t.Skipf("process connector refused the listen: %v", err)
	}
	tv := syscall.Timeval{Usec: 100000}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<20)
	w := &execWatch{fd: fd, done: make(chan struct{}), stop: make(chan struct{})}
	go w.loop(watchFor, secret)
	t.Cleanup(w.close)
	return w
}

func (w *execWatch) loop(watchFor, secret string) {
	defer close(w.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, _, err := syscall.Recvfrom(w.fd, buf, 0)
		if err != nil || n < 60 {
			continue
		}
		// nlmsghdr 16 + cn_msg 20 = 36: proc_event {what, cpu, timestamp} then tgid at +20
		if binary.LittleEndian.Uint32(buf[36:]) != procEventExec {
			continue
		}
		tgid := binary.LittleEndian.Uint32(buf[56:])
		w.inspect(tgid, watchFor, secret)
	}
}

func (w *execWatch) inspect(pid uint32, watchFor, secret string) {
	base := fmt.Sprintf("/proc/%d/", pid)
	cmd, _ := os.ReadFile(base + "cmdline")
	env, _ := os.ReadFile(base + "environ")
	w.mu.Lock()
	defer w.mu.Unlock()
	line := string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
	if strings.Contains(line, watchFor) {
		w.seen = append(w.seen, line)
	}
	if bytes.Contains(cmd, []byte(secret)) {
		w.hits = append(w.hits, "cmdline: "+line)
	}
	if bytes.Contains(env, []byte(secret)) {
		w.hits = append(w.hits, fmt.Sprintf("environ of %q", line))
	}
}

func (w *execWatch) close() {
	select {
	case <-w.stop:
		return
	default:
	}
	close(w.stop)
	<-w.done
	syscall.Close(w.fd)
}

func (w *execWatch) result() (seen, hits []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...), append([]string(nil), w.hits...)
}

// POST /v1/upgrade starts `vm-agent upgrade` detached; neither its argv nor
// its environment (nor any process it starts) holds the URL's query, and the
// request it read is not left on disk. (On this machine the agent is not
// installed, so the upgrade stops at its first check: nothing is changed.)
func TestRemoteUpgradeRequestNeverOnCommandLine(t *testing.T) {
	secret := fmt.Sprintf("Sig%dSecret", time.Now().UnixNano())
	w := startExecWatch(t, " upgrade", secret)
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	body := `{"version":"9.9.9","url":"https://127.0.0.1:1/vm-agent?X-Amz-Signature=` + secret +
		`","signature_url":"https://127.0.0.1:1/vm-agent.minisig?token=` + secret +
		`","checksum":"sha256:` + strings.Repeat("0", 64) + `"}`
	code, resp, _ := call(t, a, "POST", "/v1/upgrade", is.tok("agent:upgrade"), body)
	if code != 202 {
		t.Fatalf("POST /v1/upgrade: %d %s", code, resp)
	}
	// The detached upgrade runs, fails its first check and exits; its request
	// file (if any) is consumed.
	runDir := filepath.Join(a.Dir, "run")
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen, _ := w.result()
		left, _ := filepath.Glob(filepath.Join(runDir, "upgrade-request*"))
		if len(seen) > 0 && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: upgrade processes seen %q, request files left %q", seen, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // anything the upgrade itself started
	seen, hits := w.result()
	t.Logf("upgrade processes seen: %q", seen)
	if len(hits) > 0 {
		t.Errorf("the URL's query reached a child's argv/environment:\n%s", strings.Join(hits, "\n"))
	}
	if strings.Contains(a.Log.String(), secret) {
		t.Errorf("the agent's log holds the URL's query")
	}
}
