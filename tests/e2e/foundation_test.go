// End-to-end tests of the foundation: CLI, configuration errors, the webhook
// skeleton (livez, JSON errors, limits, TLS), reload and shutdown.
package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeError(t *testing.T, body string) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body is not JSON: %q (%v)", body, err)
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error body lacks code/message: %q", body)
	}
	return e
}

func TestCLIUsageAndExitCodes(t *testing.T) {
	code, _, stderr := runCLI(t, nil)
	if code != 64 || !strings.Contains(stderr, "usage: vm-agent") {
		t.Errorf("no args: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, "frobnicate")
	if code != 64 || !strings.Contains(stderr, "unknown subcommand 'frobnicate'") {
		t.Errorf("unknown subcommand: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, "run", "--bogus")
	if code != 64 || !strings.Contains(stderr, "unknown option '--bogus'") || !strings.Contains(stderr, "usage: vm-agent run") {
		t.Errorf("unknown flag: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, "run", "--config")
	if code != 64 || !strings.Contains(stderr, "needs a value") {
		t.Errorf("missing value: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, "upgrade", "--version", "1", "--url", "x", "--checksum", "sha256:00", "--health-timeout", "soon")
	if code != 64 || !strings.Contains(stderr, "--health-timeout: expected whole seconds") {
		t.Errorf("bad seconds: exit %d, stderr %q", code, stderr)
	}
	for _, sub := range []string{"run", "version", "help", "install", "configure", "repair", "upgrade", "uninstall", "status"} {
		code, stdout, _ := runCLI(t, nil, sub, "--help")
		if code != 0 || !strings.HasPrefix(stdout, "usage: vm-agent "+sub) {
			t.Errorf("%s --help: exit %d, stdout %q", sub, code, stdout)
		}
	}
	code, stdout, _ := runCLI(t, nil, "help")
	if code != 0 || !strings.Contains(stdout, "run ") || !strings.Contains(stdout, "78 configuration error") {
		t.Errorf("help: exit %d, stdout %q", code, stdout)
	}
}

func TestVersionJSON(t *testing.T) {
	code, stdout, _ := runCLI(t, nil, "version", "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var v struct {
		Version, Commit, BuildTime, OS, Arch string
		Libraries                            map[string]string
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	var raw map[string]interface{}
	_ = json.Unmarshal([]byte(stdout), &raw)
	if raw["build_time"] == "" || raw["commit"] == "" || v.Version == "" || v.OS != "Linux" || v.Arch == "" {
		t.Errorf("missing fields: %s", stdout)
	}
	for _, lib := range []string{"libcurl", "openssl", "libyaml", "jansson", "civetweb"} {
		if v.Libraries[lib] == "" {
			t.Errorf("library %s missing: %s", lib, stdout)
		}
	}
}

func TestConfigErrorExit78WithPosition(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	os.WriteFile(path, []byte("agent:\n  id: a\nwebhook:\n  port: 99999\n"), 0600)
	code, _, stderr := runCLI(t, nil, "run", "--config", path)
	want := path + ":4:9: webhook.port: expected integer 1-65535"
	if code != 78 || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr %q, want %q", code, stderr, want)
	}
	os.WriteFile(path, []byte("webhook:\n  prot: 1\n"), 0600)
	code, _, stderr = runCLI(t, nil, "run", "--config", path)
	if code != 78 || !strings.Contains(stderr, "did you mean webhook.port?") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, "run", "--config", filepath.Join(dir, "missing.yaml"))
	if code != 78 || !strings.Contains(stderr, "missing.yaml") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, []string{"VM_AGENT_WEBHOOK_PORT=nope"}, "run", "--config", filepath.Join(dir, "config.yaml"))
	if code != 78 {
		t.Errorf("bad env: exit %d, stderr %q", code, stderr)
	}
}

func TestBuiltInDefaultsNeedNoFile(t *testing.T) {
	if _, err := os.Stat("/etc/vm-agent/config.yaml"); err == nil {
		t.Skip("/etc/vm-agent/config.yaml exists on this machine")
	}
	dir := t.TempDir()
	port := freePort(t)
	a := &Agent{t: t, Dir: dir, Port: port, Log: &syncBuffer{}, done: make(chan struct{})}
	a.Cmd = nil
	a.startNoConfig(fmt.Sprintf("VM_AGENT_WEBHOOK_PORT=%d", port), "XDG_STATE_HOME=")
	if err := a.waitReady(10 * time.Second); err != nil {
		t.Fatalf("%v\n%s", err, a.Log.String())
	}
	if !strings.Contains(a.Log.String(), "configuration: built-in defaults") {
		t.Errorf("log does not say which configuration: %s", a.Log.String())
	}
	if st, err := os.Stat(filepath.Join(dir, ".vm-agent")); err != nil || st.Mode().Perm() != 0700 {
		t.Errorf("state dir ./.vm-agent not created 0700: %v", err)
	}
}

func TestLivezAndJSONErrors(t *testing.T) {
	a := startAgent(t, "webhook:\n  max_body: 2KiB\n")
	resp, err := http.Get(a.URL("/v1/livez"))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != 200 || strings.TrimSpace(body) != `{"status":"ok"}` ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("livez: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	resp, _ = http.Get(a.URL("/v1/nope"))
	if e := decodeError(t, readBody(t, resp)); resp.StatusCode != 404 || e.Error.Code != "not_found" {
		t.Errorf("404: %d %+v", resp.StatusCode, e)
	}

	resp, _ = http.Post(a.URL("/v1/livez"), "application/json", strings.NewReader("{}"))
	if e := decodeError(t, readBody(t, resp)); resp.StatusCode != 405 || e.Error.Code != "method_not_allowed" ||
		resp.Header.Get("Allow") != "GET" {
		t.Errorf("405: %d allow=%q %+v", resp.StatusCode, resp.Header.Get("Allow"), e)
	}

	big := bytes.Repeat([]byte("x"), 4096)
	resp, err = http.Post(a.URL("/v1/livez"), "application/octet-stream", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	if e := decodeError(t, readBody(t, resp)); resp.StatusCode != 413 || e.Error.Code != "body_too_large" {
		t.Errorf("413: %d %+v", resp.StatusCode, e)
	}

	// A malformed request line gets a JSON error from civetweb's own path too.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", a.Port))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("GARBAGE\r\n\r\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, _ := io.ReadAll(conn) // the error closes the connection
	conn.Close()
	if !strings.HasPrefix(string(raw), "HTTP/1.1 4") || !strings.Contains(string(raw), `"error"`) {
		t.Errorf("malformed request: %q", raw)
	}
}

func TestRequestTimeoutClosesIdleRequest(t *testing.T) {
	a := startAgent(t, "webhook:\n  request_timeout: 500ms\n")
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", a.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /v1/livez HTTP/1.1\r\nHost: x\r\n")) // never finishes the headers
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	buf := make([]byte, 1024)
	for {
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stalled request held for %s despite request_timeout 500ms", took)
	}
}

// makeCert returns PEM cert and key signed by ca (self-signed when ca is nil).
func makeCert(t *testing.T, cn string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestHTTPSWithTestCA(t *testing.T) {
	ca, caKey, caPEM, _ := makeCert(t, "test CA", true, nil, nil)
	_, _, certPEM, keyPEM := makeCert(t, "127.0.0.1", false, ca, caKey)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0644)
	os.WriteFile(keyFile, keyPEM, 0600)

	port := freePort(t)
	a := &Agent{t: t, Dir: t.TempDir(), Port: port, Log: &syncBuffer{}, done: make(chan struct{})}
	a.Config = writeConfig(t, a.Dir, port, fmt.Sprintf(
		"webhook:\n  tls_enabled: true\n  tls_cert_file: %s\n  tls_key_file: %s\n", certFile, keyFile))
	a.start()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := fmt.Sprintf("https://127.0.0.1:%d/v1/livez", port)
	var resp *http.Response
	var err error
	for i := 0; i < 200; i++ {
		if resp, err = client.Get(url); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("HTTPS livez: %v\n%s", err, a.Log.String())
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("HTTPS livez: %d %q", resp.StatusCode, body)
	}

	// A client that trusts another CA must refuse the server.
	_, _, otherPEM, _ := makeCert(t, "other CA", true, nil, nil)
	other := x509.NewCertPool()
	other.AppendCertsFromPEM(otherPEM)
	bad := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: other}}}
	if _, err := bad.Get(url); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("wrong CA accepted: %v", err)
	}
	// Plain HTTP on the TLS port does not get an answer as if it were HTTP.
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/livez", port)); err == nil && resp.StatusCode == 200 {
		t.Errorf("plain HTTP served on the TLS port")
	}
}

func TestTLSBadKeyFailsToStart(t *testing.T) {
	dir := t.TempDir()
	_, _, certPEM, _ := makeCert(t, "127.0.0.1", false, nil, nil)
	_, _, _, otherKey := makeCert(t, "x", false, nil, nil)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0644)
	os.WriteFile(keyFile, otherKey, 0600)
	cfg := writeConfig(t, dir, freePort(t), fmt.Sprintf(
		"webhook:\n  tls_enabled: true\n  tls_cert_file: %s\n  tls_key_file: %s\n", certFile, keyFile))
	code, _, stderr := runCLI(t, nil, "run", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, "tls_key_file") {
		t.Errorf("mismatched key: exit %d, stderr %q", code, stderr)
	}
}

func TestBusyPortExits1WithClearError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	cfg := writeConfig(t, dir, port, "")
	code, _, stderr := runCLI(t, nil, "run", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("cannot listen on 127.0.0.1:%d", port)) {
		t.Errorf("busy port: exit %d, stderr %q", code, stderr)
	}
}

func TestSIGHUPReloadRejectsBadConfigAndAppliesGoodOne(t *testing.T) {
	a := startAgent(t, "")
	good, _ := os.ReadFile(a.Config)

	os.WriteFile(a.Config, []byte("webhook:\n  port: [broken\n"), 0600)
	a.Signal(syscall.SIGHUP)
	if !a.WaitLog("reload rejected", 5*time.Second) {
		t.Fatalf("no rejection logged:\n%s", a.Log.String())
	}
	if !strings.Contains(a.Log.String(), "keeping the current configuration") {
		t.Errorf("rejection does not say the old config stays: %s", a.Log.String())
	}
	resp, err := http.Get(a.URL("/v1/livez"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("agent stopped serving after a rejected reload: %v", err)
	}
	resp.Body.Close()

	// A valid file that moves the listener is applied.
	newPort := freePort(t)
	os.WriteFile(a.Config, bytes.Replace(good, []byte(fmt.Sprintf("port: %d", a.Port)),
		[]byte(fmt.Sprintf("port: %d", newPort)), 1), 0600)
	a.Signal(syscall.SIGHUP)
	if !a.WaitLog("configuration reloaded", 5*time.Second) {
		t.Fatalf("good reload not applied:\n%s", a.Log.String())
	}
	a.Port = newPort
	if err := a.waitReady(5 * time.Second); err != nil {
		t.Errorf("new listener not serving: %v", err)
	}
}

func TestSIGTERMExitsZeroQuickly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		a := startAgent(t, "")
		// an idle keep-alive connection must not hold up the stop
		conn, _ := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", a.Port))
		start := time.Now()
		a.Signal(sig)
		code := a.Wait(5 * time.Second)
		took := time.Since(start)
		if conn != nil {
			conn.Close()
		}
		if code != 0 || took > 2*time.Second {
			t.Errorf("%v: exit %d after %s (want 0 within 2s)\n%s", sig, code, took, a.Log.String())
		}
	}
}
