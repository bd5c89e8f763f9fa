// probebench measures, against a real agent started here on loopback:
//   - end-to-end throughput of `true` probes (POST → succeeded), next to
//     fork+exec of `true` from this process with the same concurrency;
//   - API latency (p50/p99) of GET /v1/probes/{id} at a fixed request rate,
//     next to GET /v1/livez (no auth, no executor) at the same rate.
//
// Both references are measured in the same run, so ratios are comparable
// across machines.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	bin        = flag.String("bin", os.Getenv("VM_AGENT_BIN"), "vm-agent binary")
	nProbes    = flag.Int("probes", 2000, "probes to run for the throughput test")
	clients    = flag.Int("clients", 8, "concurrent API clients")
	workers    = flag.Int("workers", 5, "probe.max_concurrent")
	rate       = flag.Int("rate", 200, "requests/s for the latency test")
	latencyFor = flag.Duration("duration", 5*time.Second, "latency test duration")
)

type minter struct {
	key ed25519.PrivateKey
	n   int64
}

func (m *minter) token(scope string) string {
	now := time.Now().Unix()
	h, _ := json.Marshal(map[string]string{"alg": "EdDSA", "kid": "bench", "typ": "JWT"})
	c, _ := json.Marshal(map[string]interface{}{"iss": "https://cp.bench", "sub": "bench", "aud": "agent-1",
		"tenant_id": "tenant-a", "jti": fmt.Sprintf("b-%d", atomic.AddInt64(&m.n, 1)), "scope": scope,
		"iat": now, "exp": now + 600})
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(m.key, []byte(in)))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "probebench:", err)
		os.Exit(1)
	}
}

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func do(method, url, token, body string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "probebench-")
	must(err)
	defer os.RemoveAll(dir)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	must(os.WriteFile(filepath.Join(dir, "bench.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0600))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf("agent:\n  id: agent-1\n  tenant_id: tenant-a\n  state_dir: %s/state\n"+
		"webhook:\n  port: %d\n  num_threads: 32\nlog:\n  level: warn\n"+
		"auth:\n  issuer: https://cp.bench\n  jwt_keys: [\"%s/bench.pem\"]\n"+
		"probe:\n  max_concurrent: %d\n  queue_size: %d\n  retention_count: %d\n",
		dir, port, dir, *workers, *nProbes+10, *nProbes+10)
	must(os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0600))
	agent := exec.Command(*bin, "run", "--config", filepath.Join(dir, "config.yaml"))
	agent.Stderr = os.Stderr
	must(agent.Start())
	defer func() { _ = agent.Process.Kill(); _, _ = agent.Process.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; i < 500; i++ {
		if s, _, err := do("GET", base+"/v1/livez", "", ""); err == nil && s == 200 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := &minter{key: key}

	// --- reference: fork+exec of `true` with the same parallelism as the workers
	ref := parallel(*nProbes, *workers, func(int) { _ = exec.Command("/bin/true").Run() })

	// --- probes end to end
	toks := make([]string, *nProbes)
	for i := range toks {
		toks[i] = m.token("probe:run")
	}
	body := `{"steps":[{"type":"exec","argv":["/bin/true"]}]}`
	var ids sync.Map
	var rejected int64
	start := time.Now()
	parallel(*nProbes, *clients, func(i int) {
		for try := 0; try < 1000; try++ {
			s, b, err := do("POST", base+"/v1/probes", toks[i], body)
			if err == nil && s == 202 {
				var r struct{ ID string }
				_ = json.Unmarshal(b, &r)
				ids.Store(i, r.ID)
				return
			}
			if s == 429 {
				atomic.AddInt64(&rejected, 1)
				time.Sleep(5 * time.Millisecond)
				toks[i] = m.token("probe:run")
				continue
			}
			must(fmt.Errorf("POST: %d %s %v", s, b, err))
		}
	})
	// done when nothing is queued or running any more
	for i := 0; i < 60000; i++ {
		busy := false
		for _, st := range []string{"queued", "running"} {
			_, b, err := do("GET", base+"/v1/probes?limit=1&state="+st, m.token("probe:read"), "")
			must(err)
			busy = busy || strings.Contains(string(b), `"id"`)
		}
		if !busy {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	e2e := time.Since(start)
	_, b, err := do("GET", base+fmt.Sprintf("/v1/probes?limit=%d&state=succeeded", 1000), m.token("probe:read"), "")
	must(err)
	var list struct{ Probes []json.RawMessage }
	_ = json.Unmarshal(b, &list)

	fmt.Printf("%-44s %10s\n", "throughput", "per second")
	fmt.Printf("%-44s %10.0f\n", fmt.Sprintf("fork+exec /bin/true (reference, %d parallel)", *workers), float64(*nProbes)/ref.Seconds())
	fmt.Printf("%-44s %10.0f   (%d probes, %d x 429 retried, %d+ succeeded)\n",
		"probe `true` end to end (POST→succeeded)", float64(*nProbes)/e2e.Seconds(), *nProbes, rejected, len(list.Probes))

	// --- latency at a fixed rate
	var someID string
	ids.Range(func(_, v interface{}) bool { someID = v.(string); return false })
	n := int(float64(*rate) * latencyFor.Seconds())
	rtoks := make([]string, n)
	for i := range rtoks {
		rtoks[i] = m.token("probe:read")
	}
	livez := fixedRate(n, *rate, func(int) (int, error) { s, _, err := do("GET", base+"/v1/livez", "", ""); return s, err })
	get := fixedRate(n, *rate, func(i int) (int, error) {
		s, _, err := do("GET", base+"/v1/probes/"+someID, rtoks[i], "")
		return s, err
	})
	fmt.Printf("\n%-44s %8s %8s %8s\n", fmt.Sprintf("latency at %d req/s for %s", *rate, *latencyFor), "p50", "p99", "errors")
	fmt.Printf("%-44s %8s %8s %8d\n", "GET /v1/livez (reference)", livez.p(50), livez.p(99), livez.errors)
	fmt.Printf("%-44s %8s %8s %8d\n", "GET /v1/probes/{id} (JWT verify + record)", get.p(50), get.p(99), get.errors)
}

func parallel(n, conc int, fn func(i int)) time.Duration {
	start := time.Now()
	var next int64 = -1
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

type lat struct {
	d      []time.Duration
	errors int
}

func (l lat) p(q int) string {
	if len(l.d) == 0 {
		return "-"
	}
	i := len(l.d) * q / 100
	if i >= len(l.d) {
		i = len(l.d) - 1
	}
	return fmt.Sprintf("%.2fms", float64(l.d[i].Microseconds())/1000)
}

// fixedRate issues n requests at rate/s (open loop: each at its scheduled time).
func fixedRate(n, rate int, fn func(i int) (int, error)) lat {
	var mu sync.Mutex
	var out lat
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			s, err := fn(i)
			d := time.Since(t0)
			mu.Lock()
			if err != nil || s != 200 {
				out.errors++
			} else {
				out.d = append(out.d, d)
			}
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	sort.Slice(out.d, func(a, b int) bool { return out.d[a] < out.d[b] })
	return out
}
