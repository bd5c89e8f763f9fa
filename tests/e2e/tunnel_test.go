// End-to-end tests of the tunnel: the real agent binary connected to the
// Piko-compatible relay (tests/relay), requests sent to the relay's proxy port.
package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestTunnelRequest(t *testing.T) {
	a, proxy := startTunnelPair(t, "")
	code, body, err := getThrough(http.DefaultClient, proxy, "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("GET /v1/livez through the tunnel: %d %q %v\nagent log:\n%s", code, body, err, a.Log.String())
	}
	if !strings.Contains(a.Log.String(), "connected to") {
		t.Errorf("no connect log line")
	}
}

func TestTunnelGracefulStop(t *testing.T) {
	a, _ := startTunnelPair(t, "piko:\n  stop_grace: 2s\n")
	a.Signal(15)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(a.Log.String(), "tunnel stopped") {
		t.Errorf("no 'tunnel stopped' line:\n%s", a.Log.String())
	}
}

func TestTunnelConcurrent1000(t *testing.T) {
	a, proxy := startTunnelPair(t, "")
	tr := &http.Transport{MaxIdleConnsPerHost: 100, MaxConnsPerHost: 0}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	defer tr.CloseIdleConnections()
	const n = 1000
	var wg sync.WaitGroup
	var failed int64
	errs := make(chan string, 10)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			code, body, err := getThrough(client, proxy, fmt.Sprintf("/v1/livez?i=%d", i))
			if err != nil || code != 200 || !strings.Contains(body, "ok") {
				atomic.AddInt64(&failed, 1)
				select {
				case errs <- fmt.Sprintf("request %d: %d %q %v", i, code, body, err):
				default:
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	t.Logf("%d concurrent requests in %s", n, time.Since(start))
	if failed > 0 {
		for e := range errs {
			t.Error(e)
		}
		t.Fatalf("%d of %d requests failed\nagent log tail:\n%s", failed, n, tail(a.Log.String(), 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// bulkServer serves /bulk: size bytes of deterministic data.
func bulkServer(t *testing.T, size int64) (string, [32]byte) {
	t.Helper()
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i*7 + i>>8)
	}
	h := sha256.New()
	for left := size; left > 0; left -= int64(len(block)) {
		m := int64(len(block))
		if left < m {
			m = left
		}
		h.Write(block[:m])
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for left := size; left > 0; left -= int64(len(block)) {
			m := int64(len(block))
			if left < m {
				m = left
			}
			if _, err := w.Write(block[:m]); err != nil {
				return
			}
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), sum
}

func TestTunnelBulk100MiB(t *testing.T) {
	const size = 100 << 20
	addr, want := bulkServer(t, size)
	a, proxy := startTunnelPair(t, "piko:\n  forward_addr: "+addr+"\n")
	client := &http.Client{Timeout: 120 * time.Second}
	start := time.Now()
	resp, err := client.Get(proxy + "/bulk")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || n != size || resp.StatusCode != 200 {
		t.Fatalf("status %d, %d bytes, %v\nagent log:\n%s", resp.StatusCode, n, err, tail(a.Log.String(), 3000))
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("sha256 mismatch")
	}
	el := time.Since(start)
	t.Logf("100 MiB through the tunnel in %s (%.0f MB/s)", el, float64(size)/1e6/el.Seconds())
}

func TestTunnelRelayRestart(t *testing.T) {
	a, r := startTunnelPairRelay(t, "")
	r.Kill()
	if !a.WaitLog("disconnected", 10*time.Second) {
		t.Fatalf("agent did not notice the relay died:\n%s", a.Log.String())
	}
	time.Sleep(1500 * time.Millisecond) // a few failed attempts: backoff grows to max_delay (1s)
	r.Restart()
	// max_delay is 1 s: the agent must be back well within a few seconds.
	if !r.WaitConnections(1, 5*time.Second) {
		t.Fatalf("agent did not reconnect after the relay restarted:\n%s", a.Log.String())
	}
	code, body, err := getThrough(http.DefaultClient, r.ProxyURL(), "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("after reconnect: %d %q %v", code, body, err)
	}
	if !strings.Contains(a.Log.String(), "cannot connect to") {
		t.Errorf("no log line for failed attempts")
	}
}

func TestTunnelTokenRejected(t *testing.T) {
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	tok := writeToken(t, t.TempDir(), makeHS256("the-wrong-key", time.Now().Add(time.Hour).Unix()))
	a := startAgent(t, tunnelYAML(r, tok, ""), "VM_AGENT_PIKO_RECONNECT_INITIAL_DELAY=100ms",
		"VM_AGENT_PIKO_RECONNECT_MAX_DELAY=2s")
	if !a.WaitLog("Piko rejected the agent's credentials (HTTP 401)", 10*time.Second) {
		t.Fatalf("no clear log line:\n%s", a.Log.String())
	}
	// With max_delay 2s (jitter 80-100 %), 5 s allow at most 4 attempts, where
	// the initial delay (100 ms) would allow dozens.
	before := r.Status().Rejected
	time.Sleep(5 * time.Second)
	after := r.Status().Rejected
	if d := after - before; d < 1 || d > 4 {
		t.Fatalf("%d attempts in 5 s; want 1..4 (retry at max_delay)\n%s", d, a.Log.String())
	}
	if strings.Contains(a.Log.String(), strings.Split(readFileString(t, tok), ".")[2][:10]) {
		t.Fatalf("token in the log")
	}
	if !strings.Contains(a.Log.String(), "retrying in 1.") && !strings.Contains(a.Log.String(), "retrying in 2.") {
		t.Errorf("log does not show the max delay:\n%s", a.Log.String())
	}
}

func readFileString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestTunnelWrongTenantRejected(t *testing.T) {
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-b")
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix()))
	a := startAgent(t, tunnelYAML(r, tok, ""), fastReconnect...)
	if !a.WaitLog("Piko rejected the agent's credentials", 10*time.Second) {
		t.Fatalf("no clear log line:\n%s", a.Log.String())
	}
}

// writeTestCA creates a CA and a server certificate for 127.0.0.1 signed by it.
func writeTestCA(t *testing.T, dir, name string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	caFile = filepath.Join(dir, name+"-ca.pem")
	certFile = filepath.Join(dir, name+"-cert.pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0600)
	return
}

func TestTunnelTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTestCA(t, dir, "good")
	wrongCA, _, _ := writeTestCA(t, dir, "other")
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a", "-tls-cert", cert, "-tls-key", key)
	if !strings.HasPrefix(r.UpstreamURL, "https://") {
		t.Fatalf("relay URL %s", r.UpstreamURL)
	}
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix()))

	bad := startAgent(t, tunnelYAML(r, tok, "piko:\n  ca_file: "+wrongCA+"\n"), fastReconnect...)
	if !bad.WaitLog("cannot connect to https://", 10*time.Second) {
		t.Fatalf("wrong CA: no failure logged:\n%s", bad.Log.String())
	}
	if s := r.Status(); s.Connections != 0 {
		t.Fatalf("an agent with the wrong CA connected")
	}
	bad.Signal(syscall.SIGKILL)

	a := startAgent(t, tunnelYAML(r, tok, "piko:\n  ca_file: "+ca+"\n"), fastReconnect...)
	if !r.WaitConnections(1, 10*time.Second) {
		t.Fatalf("agent with the right CA did not connect:\n%s", a.Log.String())
	}
	code, body, err := getThrough(http.DefaultClient, r.ProxyURL(), "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("through TLS tunnel: %d %q %v", code, body, err)
	}
}

func TestTunnelThroughHTTPProxy(t *testing.T) {
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		t.Fatal("tinyproxy missing: scripts/deps.sh installs it (make deps)")
	}
	// tinyproxy drops root privileges to nobody: its files live in a directory
	// that user can write (t.TempDir's parent is 0700).
	dir, err := os.MkdirTemp("", "vma-tinyproxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := freePort(t)
	logFile := filepath.Join(dir, "tinyproxy.log")
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 600\nMaxClients 50\nAllow 127.0.0.1\n"+
		"LogFile \"%s\"\nLogLevel Connect\nPidFile \"%s\"\n", port, logFile, filepath.Join(dir, "tp.pid"))
	if os.Geteuid() == 0 {
		conf += "User nobody\nGroup nogroup\n"
		os.Chmod(dir, 0777)
	}
	confFile := filepath.Join(dir, "tinyproxy.conf")
	os.WriteFile(confFile, []byte(conf), 0644)
	tp := exec.Command(bin, "-d", "-c", confFile)
	tpOut := &syncBuffer{}
	tp.Stdout, tp.Stderr = tpOut, tpOut
	if err := tp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Process.Kill(); tp.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix()))
	a := startAgent(t, tunnelYAML(r, tok, fmt.Sprintf("piko:\n  proxy_url: http://127.0.0.1:%d\n", port)), fastReconnect...)
	if !r.WaitConnections(1, 10*time.Second) {
		logData, _ := os.ReadFile(logFile)
		t.Fatalf("agent did not connect through tinyproxy:\n%s\ntinyproxy:\n%s%s", a.Log.String(), tpOut.String(), logData)
	}
	code, _, err := getThrough(http.DefaultClient, r.ProxyURL(), "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("through proxy: %d %v", code, err)
	}
	logData, _ := os.ReadFile(logFile)
	if !strings.Contains(string(logData), "CONNECT") {
		t.Errorf("tinyproxy did not see a CONNECT:\n%s\n%s", logData, tpOut.String())
	}

	// Without piko.proxy_url, libcurl takes the proxy from the environment
	// (http_proxy for an http:// server, HTTPS_PROXY for https://).
	before := strings.Count(string(logData), "CONNECT")
	env := append([]string{fmt.Sprintf("http_proxy=http://127.0.0.1:%d", port), "NO_PROXY=", "no_proxy="}, fastReconnect...)
	b := startAgent(t, strings.Replace(tunnelYAML(r, tok, ""), "endpoint: agent-1", "endpoint: agent-env", 1), env...)
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		logData, _ = os.ReadFile(logFile)
		if strings.Count(string(logData), "CONNECT") > before && strings.Contains(b.Log.String(), "connected to") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agent did not use http_proxy from the environment:\n%s\n%s", b.Log.String(), logData)
}

func TestTunnelFaults(t *testing.T) {
	// Each fault must end in a reconnect and a working tunnel, never a crash.
	modes := []struct {
		mode string
		log  string
	}{
		{"drop", "disconnected"},
		{"stall", "keepalive timeout"},
		{"oversize", "frame larger than the maximum"},
		{"window", "left in its window"},
		{"badversion", "unsupported protocol version"},
		{"goaway", "server sent GoAway"},
		{"close", "server closed the WebSocket"},
	}
	for _, m := range modes {
		m := m
		t.Run(m.mode, func(t *testing.T) {
			a, r := startTunnelPairRelay(t, "piko:\n  keepalive_interval: 300ms\n  keepalive_timeout: 700ms\n")
			r.Fault(m.mode, 3*time.Second)
			if !a.WaitLog(m.log, 10*time.Second) {
				t.Fatalf("no %q in the log:\n%s", m.log, a.Log.String())
			}
			if !r.WaitConnections(2, 15*time.Second) {
				t.Fatalf("no reconnect after %s:\n%s", m.mode, a.Log.String())
			}
			var code int
			var err error
			for i := 0; i < 50; i++ { // the old session may still be registered briefly
				code, _, err = getThrough(http.DefaultClient, r.ProxyURL(), "/v1/livez")
				if err == nil && code == 200 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil || code != 200 {
				t.Fatalf("after %s: %d %v\n%s", m.mode, code, err, a.Log.String())
			}
			if a.Wait(0) != -1 {
				t.Fatalf("agent exited")
			}
			// A clean exit after the fault (under the sanitizer build, a leak
			// would make the exit code non-zero).
			a.Signal(syscall.SIGTERM)
			if code := a.Wait(15 * time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM:\n%s", code, a.Log.String())
			}
		})
	}
}

func TestTunnelTokenExpiry(t *testing.T) {
	// The relay drops the connection at exp (as Piko does); the agent reconnects
	// with the token file's new content.
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	dir := t.TempDir()
	tok := writeToken(t, dir, makeHS256(relayHMACKey, time.Now().Add(3*time.Second).Unix()))
	a := startAgent(t, tunnelYAML(r, tok, ""), fastReconnect...)
	if !r.WaitConnections(1, 10*time.Second) {
		t.Fatalf("no connection:\n%s", a.Log.String())
	}
	writeToken(t, dir, makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix()))
	if !r.WaitConnections(2, 15*time.Second) {
		t.Fatalf("no reconnect with the new token:\n%s\nrelay:\n%s", a.Log.String(), r.Log.String())
	}
	code, _, err := getThrough(http.DefaultClient, r.ProxyURL(), "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("after refresh: %d %v", code, err)
	}
}

func TestTunnelReloadReconnectsWithNewSettings(t *testing.T) {
	a, r := startTunnelPairRelay(t, "")
	cfg := readFileString(t, a.Config)
	if err := os.WriteFile(a.Config, []byte(strings.Replace(cfg, "endpoint: agent-1", "endpoint: agent-2", 1)+"\n"), 0600); err != nil {
		t.Fatal(err)
	}
	// The token names its endpoints (piko.endpoints): the new one needs a new token.
	tokFile := filepath.Join(filepath.Dir(a.Config), "..", "piko.token")
	if m := regexp.MustCompile(`token_file: (\S+)`).FindStringSubmatch(cfg); m != nil {
		tokFile = m[1]
	}
	writeToken(t, filepath.Dir(tokFile), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-2"))
	a.Signal(syscall.SIGHUP)
	if !r.WaitConnections(2, 10*time.Second) {
		t.Fatalf("no reconnect after SIGHUP:\n%s", a.Log.String())
	}
	req, _ := http.NewRequest("GET", r.ProxyURL()+"/v1/livez", nil)
	req.Header.Set("x-piko-endpoint", "agent-2")
	var code int
	for i := 0; i < 50 && code != 200; i++ {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
		if code != 200 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if code != 200 {
		t.Fatalf("endpoint agent-2 not served after reload (%d):\n%s", code, a.Log.String())
	}
	if !strings.Contains(a.Log.String(), "configuration reloaded") {
		t.Errorf("no reload line")
	}
}

func TestTunnelRefreshesTokenBeforeExpiry(t *testing.T) {
	// exp in 10 s: the agent reconnects a fifth of that (2 s) before exp with
	// the token file's new content, before the relay would drop it.
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	dir := t.TempDir()
	exp := time.Now().Add(10 * time.Second)
	tok := writeToken(t, dir, makeHS256(relayHMACKey, exp.Unix()))
	a := startAgent(t, tunnelYAML(r, tok, ""), fastReconnect...)
	if !r.WaitConnections(1, 10*time.Second) {
		t.Fatalf("no connection:\n%s", a.Log.String())
	}
	writeToken(t, dir, makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix()))
	if !a.WaitLog("disconnected (token refresh); reconnecting now", 12*time.Second) {
		t.Fatalf("no proactive refresh:\n%s", a.Log.String())
	}
	if time.Now().After(exp) {
		t.Fatalf("refresh came after exp")
	}
	if !r.WaitConnections(2, 5*time.Second) {
		t.Fatalf("no reconnect:\n%s", a.Log.String())
	}
	if strings.Contains(r.Log.String(), "token expired, closing") {
		t.Fatalf("the relay had to drop the agent at exp:\n%s", r.Log.String())
	}
}

func TestTunnelRS256Token(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubFile := filepath.Join(dir, "pub.pem")
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0600)
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(fmt.Sprintf(`{"exp":%d,"piko":{"endpoints":["agent-1"]}}`, time.Now().Add(time.Hour).Unix())))
	h := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, "-rsa-pub", pubFile, "-tenant", "tenant-a")
	tok := writeToken(t, dir, signed+"."+enc.EncodeToString(sig))
	a := startAgent(t, tunnelYAML(r, tok, ""), fastReconnect...)
	if !r.WaitConnections(1, 10*time.Second) {
		t.Fatalf("RS256 token not accepted:\n%s\n%s", a.Log.String(), r.Log.String())
	}
	code, _, err := getThrough(http.DefaultClient, r.ProxyURL(), "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("%d %v", code, err)
	}
}

func TestTunnelIPv6Loopback(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here")
	}
	l.Close()
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a", "-upstream-addr", "[::1]:0")
	if !strings.Contains(r.UpstreamURL, "[::1]") {
		t.Fatalf("relay upstream %s", r.UpstreamURL)
	}
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix()))
	a := startAgent(t, tunnelYAML(r, tok, ""), fastReconnect...)
	if !r.WaitConnections(1, 10*time.Second) {
		t.Fatalf("no connection over IPv6:\n%s", a.Log.String())
	}
	code, _, err := getThrough(http.DefaultClient, r.ProxyURL(), "/v1/livez")
	if err != nil || code != 200 {
		t.Fatalf("%d %v", code, err)
	}
}

func TestTunnelStopLetsInFlightFinish(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(1500 * time.Millisecond)
		}
		io.WriteString(w, "done")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	a, r := startTunnelPairRelay(t, "piko:\n  forward_addr: "+l.Addr().String()+"\n  stop_grace: 5s\n")
	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		c, b, err := getThrough(http.DefaultClient, r.ProxyURL(), "/slow")
		slow <- result{c, b, err}
	}()
	time.Sleep(400 * time.Millisecond)
	a.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	// After the agent's GoAway the proxy cannot open new streams: 502.
	if code, body, _ := getThrough(http.DefaultClient, r.ProxyURL(), "/fast"); code != 502 {
		t.Errorf("new request during the drain: %d %q, want 502", code, body)
	}
	res := <-slow
	if res.err != nil || res.code != 200 || res.body != "done" {
		t.Fatalf("in-flight request: %d %q %v\n%s", res.code, res.body, res.err, a.Log.String())
	}
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestTunnelForwardsPikoHeaders(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *http.Request, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r:
		default:
		}
		io.WriteString(w, "ok")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	_, r := startTunnelPairRelay(t, "piko:\n  forward_addr: "+l.Addr().String()+"\n")
	req, _ := http.NewRequest("GET", r.ProxyURL()+"/v1/probe?x=1", nil)
	req.Host = "agent-1.piko.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	in := <-got
	checks := map[string]string{
		"X-Piko-Forward":  in.Header.Get("X-Piko-Forward"),
		"X-Piko-Endpoint": in.Header.Get("X-Piko-Endpoint"),
		"X-Forwarded-For": in.Header.Get("X-Forwarded-For"),
		"Host":            in.Host,
		"RequestURI":      in.RequestURI,
		"Close":           fmt.Sprint(in.Close),
	}
	want := map[string]string{"X-Piko-Forward": "true", "X-Piko-Endpoint": "agent-1",
		"X-Forwarded-For": "127.0.0.1", "Host": "agent-1.piko.example", "RequestURI": "/v1/probe?x=1",
		"Close": "true"}
	for k, v := range want {
		if checks[k] != v {
			t.Errorf("%s = %q, want %q", k, checks[k], v)
		}
	}
}
