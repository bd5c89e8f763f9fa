// A real OpenSSH server for end-to-end tests: started by the test on 127.0.0.1
// with its own host key, authorized_keys, client key and config, killed at
// cleanup. Tests reach it with the system's ssh client (Run, SSHArgs).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sshServer is what a test needs to reach the server with ssh.
type sshServer struct {
	Host       string // 127.0.0.1
	Port       int
	User       string // the user the client logs in as (root)
	Identity   string // client private key
	KnownHosts string // known_hosts holding the host key for [Host]:Port
	Log        *syncBuffer
}

// startSSHD starts `sshd -D -e -f <cfg>` as root on a free loopback port and
// waits until it answers with an SSH banner. A missing sshd or a non-root
// test fails with the reason.
func startSSHD(t *testing.T) *sshServer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("startSSHD: sshd must run as root to accept logins (run the e2e tests as root)")
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
	}
	if _, err := os.Stat(sshd); err != nil {
		t.Fatalf("startSSHD: no sshd (%v): scripts/deps.sh installs openssh-server", err)
	}
	for _, tool := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("startSSHD: %s not found: scripts/deps.sh installs openssh-client", tool)
		}
	}
	// The privilege-separation directory sshd insists on (normally made by its unit).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("startSSHD: /run/sshd: %v", err)
	}

	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	clientKey := filepath.Join(dir, "client_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", k).CombinedOutput()
		if err != nil {
			t.Fatalf("startSSHD: ssh-keygen %s: %v: %s", k, err, out)
		}
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authKeys, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	hostFields := strings.Fields(string(hostPub))
	if len(hostFields) < 2 {
		t.Fatalf("startSSHD: odd host public key %q", hostPub)
	}

	var lastErr error
	// The free port can be taken between freePort and sshd's bind: try a few.
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		cfg := filepath.Join(dir, "sshd_config")
		conf := fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UseDNS no
LogLevel INFO
Subsystem sftp internal-sftp
`, port, hostKey, authKeys)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		log := &syncBuffer{}
		cmd := exec.Command(sshd, "-D", "-e", "-f", cfg)
		cmd.Stdout = log
		cmd.Stderr = log
		if err := cmd.Start(); err != nil {
			t.Fatalf("startSSHD: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		if err := waitSSHBanner(port, exited, 10*time.Second); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			lastErr = fmt.Errorf("%v; sshd log:\n%s", err, log.String())
			continue
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
			}
			if t.Failed() {
				t.Logf("sshd log:\n%s", log.String())
			}
		})
		kh := filepath.Join(dir, "known_hosts")
		line := fmt.Sprintf("[127.0.0.1]:%d %s %s\n", port, hostFields[0], hostFields[1])
		if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		return &sshServer{Host: "127.0.0.1", Port: port, User: "root",
			Identity: clientKey, KnownHosts: kh, Log: log}
	}
	t.Fatalf("startSSHD: sshd did not come up: %v", lastErr)
	return nil
}

// waitSSHBanner waits until the port answers with "SSH-2.0" or sshd exits.
func waitSSHBanner(port int, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited before listening")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "SSH-2.0") {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no SSH banner on %s within %v", addr, timeout)
}

// SSHOptions are the client options every connection to this server uses:
// no user or system config, this server's key only, strict host-key checking.
func (s *sshServer) SSHOptions() []string {
	return []string{
		"-F", "/dev/null",
		"-i", s.Identity,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + s.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10",
		"-p", strconv.Itoa(s.Port),
	}
}

// Target is user@host for ssh.
func (s *sshServer) Target() string { return s.User + "@" + s.Host }

// Run runs a remote command (args joined by the remote shell, as ssh does)
// and returns its stdout; err carries the exit status and stderr. Bounded to 30 s.
func (s *sshServer) Run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append(s.SSHOptions(), s.Target(), "--")
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, "ssh", argv...)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("ssh %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), err
}

// TestSSHDHarness checks the harness itself: a command runs remotely over a
// strict host-key check, and a client with an empty known_hosts is refused.
func TestSSHDHarness(t *testing.T) {
	s := startSSHD(t)
	out, err := s.Run(t, "echo", "hello-from-sshd", "&&", "id", "-u")
	if err != nil {
		t.Fatal(err)
	}
	if out != "hello-from-sshd\n0\n" {
		t.Fatalf("remote output %q", out)
	}
	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := *s
	bad.KnownHosts = empty
	if _, err := bad.Run(t, "true"); err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Fatalf("unknown host key was not refused: %v", err)
	}
}
