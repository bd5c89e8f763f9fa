package e2e

import (
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRelayRepliesNeverCutUnderLoad: many concurrent small error answers
// (400 bad JSON, 401 no token, 404) through the relay and the tunnel, while
// probes spawn processes, must all arrive whole: a reply whose headers came
// but whose body was cut (unexpected EOF) is counted and fails the test.
// Heavy (bounded to ~15 s): runs only with VMA_STRESS=1.
func TestRelayRepliesNeverCutUnderLoad(t *testing.T) {
	if os.Getenv("VMA_STRESS") != "1" {
		t.Skip("stress test: set VMA_STRESS=1")
	}
	is := newIssuer(t)
	a := startAuthAgent(t, is, "")
	client := &http.Client{Timeout: 10 * time.Second}
	tokRun := is.tok("probe:run")
	type reqSpec struct{ method, path, tok, body string }
	specs := []reqSpec{
		{"POST", "/v1/probes", tokRun, `{"limits":[],"steps":[`},                                              // bad JSON: 400
		{"POST", "/v1/probes", tokRun, `{"limits":{"pids_max":0},"steps":[{"type":"exec","argv":["true"]}]}`}, // 400
		{"POST", "/v1/probes", "", `{"steps":[]}`},                                                            // 401
		{"GET", "/v1/nothing-here", tokRun, ""},                                                               // 404
		{"POST", "/v1/probes", tokRun, `{"steps":[{"type":"exec","argv":["true"]}]}`},                         // spawns
	}
	var total, cut, other atomic.Int64
	deadline := time.Now().Add(15 * time.Second)
	var wg sync.WaitGroup
	for w := 0; w < 12; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 5000 && time.Now().Before(deadline); i++ {
				s := specs[(w+i)%len(specs)]
				var body io.Reader
				if s.body != "" {
					body = strings.NewReader(s.body)
				}
				req, _ := http.NewRequest(s.method, apiURL(a, s.path), body)
				if s.tok != "" {
					req.Header.Set("Authorization", "Bearer "+s.tok)
				}
				resp, err := client.Do(req)
				if err != nil {
					other.Add(1)
					continue
				}
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				total.Add(1)
				if rerr != nil {
					if cut.Add(1) <= 5 {
						t.Logf("%s %s: status %d, Content-Length %q, body cut after %d bytes: %v",
							s.method, s.path, resp.StatusCode, resp.Header.Get("Content-Length"), len(b), rerr)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	t.Logf("%d replies, %d cut, %d transport errors", total.Load(), cut.Load(), other.Load())
	if cut.Load() != 0 || other.Load() != 0 {
		t.Errorf("%d of %d replies cut after their headers, %d transport errors", cut.Load(), total.Load(), other.Load())
	}
}
