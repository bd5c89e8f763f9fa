package e2e

import (
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// leftForwardProxy is a plain HTTP forward proxy (GET http://… through it)
// that wants Basic user:pass; it counts what it forwarded and refused (407).
type leftForwardProxy struct {
	URL                string
	forwarded, refused atomic.Int64
}

func leftStartForwardProxy(t *testing.T, user, pass string) *leftForwardProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &leftForwardProxy{URL: "http://" + ln.Addr().String()}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	direct := &http.Client{Transport: &http.Transport{Proxy: nil}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect || r.Header.Get("Proxy-Authorization") != want {
			p.refused.Add(1)
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusProxyAuthRequired)
			return
		}
		out, err := http.NewRequest(r.Method, r.URL.String(), r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for k, v := range r.Header {
			if !strings.HasPrefix(k, "Proxy-") {
				out.Header[k] = v
			}
		}
		resp, err := direct.Do(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		p.forwarded.Add(1)
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

// Under --root, agent.proxy_credentials_file is a target path like every
// other: repair validates the config and reaches the control plane with the
// file under the root, never the host's file of the same name.
func TestRepairRootJoinsProxyCredentialsFile(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := lcInstall(t, cp)
	px := leftStartForwardProxy(t, "fileuser", "F1lePassw0rd")
	target := "/etc/vm-agent/left-proxy.creds" // exists under root only
	if err := os.WriteFile(filepath.Join(root, target), []byte("fileuser:F1lePassw0rd\n"), 0600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, nil, "configure", "--root", root, "--no-reload",
		"--set", "agent.proxy_url="+px.URL, "--set", "agent.proxy_credentials_file="+target)
	if code != 0 {
		t.Fatalf("configure: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut = runCLI(t, nil, "configure", "--root", root, "--check"); code != 0 {
		t.Errorf("configure --check under --root: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, nil, "repair", "--diagnose", "--root", root)
	if code != 0 {
		t.Errorf("repair --diagnose: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "valid") || !strings.Contains(out, "answers (HTTP") {
		t.Errorf("repair did not validate the config or reach the control plane:\n%s", out)
	}
	if px.refused.Load() != 0 || px.forwarded.Load() < 1 {
		t.Errorf("proxy: forwarded %d, refused %d (want every request authenticated)\n%s",
			px.forwarded.Load(), px.refused.Load(), out)
	}
	if strings.Contains(out+errOut, "F1lePassw0rd") {
		t.Errorf("the proxy password is printed")
	}
}
