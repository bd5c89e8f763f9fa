package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Under --root, agent.proxy_credentials_file is a target path like every
// other: repair validates the config and reaches the control plane with the
// file under the root, never the host's file of the same name.
func TestRepairRootJoinsProxyCredentialsFile(t *testing.T) {
	cp := lcStartFakeCP(t)
	root := lcInstall(t, cp)
	px := lhStartConnectProxy(t, "fileuser", "F1lePassw0rd")
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
	if px.refused.Load() != 0 || px.opened.Load() < 1 {
		t.Errorf("proxy: forwarded %d, refused %d (want every request authenticated)\n%s",
			px.opened.Load(), px.refused.Load(), out)
	}
	if strings.Contains(out+errOut, "F1lePassw0rd") {
		t.Errorf("the proxy password is printed")
	}
}
