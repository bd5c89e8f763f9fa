package e2e

// The fault suite (docs/reliability.md): large transfers, a soak, and retry
// loops against a relay that refuses. Each has a short form that `make test`
// runs and a long form behind VMA_SOAK=1 (`make soak`). The figures are
// logged with t.Logf so that `go test -v` prints what docs/reliability.md cites.

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func soak() bool { return os.Getenv("VMA_SOAK") == "1" }

// sanitized tells an ASan build from a normal one: its allocator keeps freed
// memory in quarantine, so absolute RSS figures only hold for the normal build.
func sanitized(t *testing.T) bool {
	f, err := elf.Open(agentBin(t))
	if err != nil {
		return false
	}
	defer f.Close()
	syms, _ := f.Symbols()
	for _, s := range syms {
		if strings.HasPrefix(s.Name, "__asan_init") {
			return true
		}
	}
	return false
}

// procStatus reads one "Name:   N kB" field of /proc/pid/status in KiB.
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// idleCPU checks that the agent uses (almost) no CPU over d: a spin after a
// fault shows up here as ticks.
func idleCPU(t *testing.T, pid int, d time.Duration) float64 {
	t.Helper()
	c0 := cpuTicks(t, pid)
	time.Sleep(d)
	return float64(cpuTicks(t, pid)-c0) / 100 / d.Seconds()
}

// slope is the least-squares slope of ys over xs (per unit of x).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// transferOrigin serves GET /down (size bytes of a fixed pattern) and POST
// /up (answers the sha256 of the body it read) behind the agent's tunnel.
func transferOrigin(t *testing.T, size int64) (addr string, downSum [32]byte, block []byte) {
	t.Helper()
	block = make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i*13 + i>>9)
	}
	h := sha256.New()
	for left := size; left > 0; left -= int64(len(block)) {
		h.Write(block[:min64(left, int64(len(block)))])
	}
	copy(downSum[:], h.Sum(nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/down":
			w.Header().Set("Content-Length", fmt.Sprint(size))
			for left := size; left > 0; left -= int64(len(block)) {
				if _, err := w.Write(block[:min64(left, int64(len(block)))]); err != nil {
					return
				}
			}
		case "/up":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
		default:
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), downSum, block
}

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// patternReader yields size bytes of block, repeated.
type patternReader struct {
	block []byte
	left  int64
	off   int
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.block[p.off:])
	if int64(n) > p.left {
		n = int(p.left)
	}
	p.off = (p.off + n) % len(p.block)
	p.left -= int64(n)
	return n, nil
}

// A large response and a large request body through the tunnel arrive whole
// (sha256), the agent's memory does not grow with their size (cloudflared's
// 1 GiB download → 1.4 GiB RSS is the complaint this guards against) and its
// CPU goes back to idle afterwards (MeshAgent pinned a core after uploads).
func TestFaultLargeTransfersBoundedMemory(t *testing.T) {
	size := int64(256 << 20)
	if soak() {
		size = 1 << 30
	}
	addr, downSum, block := transferOrigin(t, size)
	a, proxy := startTunnelPair(t, "piko:\n  forward_addr: "+addr+"\n")
	pid := a.Cmd.Process.Pid
	client := &http.Client{Timeout: 10 * time.Minute}
	// warm up (first request allocates the session's buffers)
	if resp, err := client.Get(proxy + "/missing"); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	base := procStatus(t, pid, "VmRSS")
	fds0 := openFDs(t, pid)

	start := time.Now()
	resp, err := client.Get(proxy + "/down")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || resp.StatusCode != 200 {
		t.Fatalf("download: status %d, %d of %d bytes, %v\n%s", resp.StatusCode, n, size, err, tail(a.Log.String(), 3000))
	}
	if !bytes.Equal(h.Sum(nil), downSum[:]) {
		t.Fatal("download: sha256 mismatch")
	}
	down := time.Since(start)

	start = time.Now()
	req, _ := http.NewRequest("POST", proxy+"/up", &patternReader{block: block, left: size})
	req.ContentLength = size
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %s", size, hex.EncodeToString(downSum[:])); resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("upload: status %d, origin saw %q, want %q\n%s", resp.StatusCode, body, want, tail(a.Log.String(), 3000))
	}
	up := time.Since(start)

	peak := procStatus(t, pid, "VmHWM")
	cpu := idleCPU(t, pid, 3*time.Second)
	t.Logf("%d MiB down in %s (%.0f MB/s), up in %s (%.0f MB/s); RSS %d KiB before, peak %d KiB; fds %d → %d; CPU afterwards %.1f%%",
		size>>20, down.Round(time.Millisecond), float64(size)/1e6/down.Seconds(),
		up.Round(time.Millisecond), float64(size)/1e6/up.Seconds(), base, peak, fds0, openFDs(t, pid), cpu*100)
	// ASan keeps freed memory in quarantine (256 MiB): memory bounds are the
	// normal build's to prove; the sanitizer build proves the bytes and the rest.
	if grew := peak - base; !sanitized(t) && grew > 32<<10 {
		t.Errorf("peak RSS grew by %d KiB moving %d MiB each way (want O(window), < 32 MiB)", grew, size>>20)
	}
	if !sanitized(t) && peak > 32<<10 {
		t.Errorf("peak RSS %d KiB (want < 32 MiB)", peak)
	}
	if cpu > 0.05 {
		t.Errorf("agent CPU %.1f%% after the transfers (want idle, < 5%%)", cpu*100)
	}
	if fds := openFDs(t, pid); fds > fds0+2 {
		t.Errorf("open fds %d after the transfers, %d before", fds, fds0)
	}
}

// 200 requests/s through the tunnel: no error, RSS and fds flat (the slope
// over the second half, after warm-up). 2 minutes here, 10 with VMA_SOAK=1.
func TestFaultSoakTunnel(t *testing.T) {
	dur := 2 * time.Minute
	if sanitized(t) {
		dur = 30 * time.Second // the normal build soaks; ASan checks the same path briefly
	}
	if soak() {
		dur = 10 * time.Minute
	}
	if v := os.Getenv("VMA_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		dur = d
	}
	a, proxy := startTunnelPair(t, "")
	pid := a.Cmd.Process.Pid
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	const rate = 200
	var sent, failed int64
	var firstErr atomic.Value
	var xs, rss, fds []float64
	start := time.Now()
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	sample := time.NewTicker(2 * time.Second)
	defer sample.Stop()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // at most 64 in flight: bounded even if the agent stalls
	deadline := time.After(dur)
loop:
	for {
		select {
		case <-deadline:
			break loop
		case <-sample.C:
			xs = append(xs, time.Since(start).Seconds())
			rss = append(rss, float64(procStatus(t, pid, "VmRSS")))
			fds = append(fds, float64(openFDs(t, pid)))
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			default:
				atomic.AddInt64(&failed, 1)
				firstErr.CompareAndSwap(nil, "64 requests in flight: the agent fell behind")
				continue
			}
			wg.Add(1)
			atomic.AddInt64(&sent, 1)
			go func(i int64) {
				defer func() { <-sem; wg.Done() }()
				code, body, err := getThrough(client, proxy, fmt.Sprintf("/v1/livez?i=%d", i))
				if err != nil || code != 200 || !strings.Contains(body, "ok") {
					atomic.AddInt64(&failed, 1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("request %d: %d %q %v", i, code, body, err))
				}
			}(sent)
		}
	}
	wg.Wait()
	el := time.Since(start)
	half := len(xs) / 2
	rssSlope := slope(xs[half:], rss[half:]) * 60 // KiB per minute
	fdSlope := slope(xs[half:], fds[half:]) * 60
	t.Logf("%d requests in %s (%.0f/s), %d failed; RSS %.0f → %.0f KiB (second half %+.1f KiB/min); fds %.0f → %.0f (%+.2f/min)",
		sent, el.Round(time.Second), float64(sent)/el.Seconds(), failed, rss[0], rss[len(rss)-1], rssSlope,
		fds[0], fds[len(fds)-1], fdSlope)
	if failed > 0 {
		t.Errorf("%d of %d requests failed, first: %v\n%s", failed, sent, firstErr.Load(), tail(a.Log.String(), 3000))
	}
	// Flat: less than 256 KiB per minute of growth once warm (a leak of one
	// 1 KiB allocation per request would be 12 MiB/min at this rate).
	if rssSlope > 256 && !sanitized(t) {
		t.Errorf("RSS grows by %.0f KiB/min under steady load (want flat)", rssSlope)
	}
	if fds[len(fds)-1] > fds[0]+4 {
		t.Errorf("open fds %0.f at the end, %0.f at the start", fds[len(fds)-1], fds[0])
	}
}

// Against a Piko that refuses every connection (401: the token is for another
// key), the agent backs off: memory and fds flat, one log line per attempt at
// most (bounded by the backoff, never a tight loop), CPU near zero (frp and
// salt-minion grew memory in such loops).
func TestFaultRefusingRelayRetryLoopStaysFlat(t *testing.T) {
	dur := 20 * time.Second
	if soak() {
		dur = 10 * time.Minute
	}
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
	tok := writeToken(t, t.TempDir(), makeHS256("not-the-relay-key", time.Now().Add(time.Hour).Unix(), "agent-1"))
	a := startAgent(t, tunnelYAML(r, tok, ""), "VM_AGENT_PIKO_RECONNECT_INITIAL_DELAY=50ms",
		"VM_AGENT_PIKO_RECONNECT_MAX_DELAY=500ms")
	pid := a.Cmd.Process.Pid
	time.Sleep(2 * time.Second) // warm-up: the first attempts allocate the client
	rss0, fds0, c0 := procStatus(t, pid, "VmRSS"), openFDs(t, pid), cpuTicks(t, pid)
	rej0, lines0 := r.Status().Rejected, strings.Count(a.Log.String(), "\n")
	time.Sleep(dur)
	rss1, fds1, c1 := procStatus(t, pid, "VmRSS"), openFDs(t, pid), cpuTicks(t, pid)
	attempts, lines := r.Status().Rejected-rej0, strings.Count(a.Log.String(), "\n")-lines0
	cpu := float64(c1-c0) / 100 / dur.Seconds()
	t.Logf("%s refused: %d attempts, %d log lines; RSS %d → %d KiB; fds %d → %d; CPU %.1f%%",
		dur, attempts, lines, rss0, rss1, fds0, fds1, cpu*100)
	// with a 500 ms cap (full jitter) there are at least dur/500ms/2 attempts…
	if min := int64(dur / time.Second); attempts < min {
		t.Errorf("only %d attempts in %s: the agent stopped retrying", attempts, dur)
	}
	// …and never more than one per 10 ms (a tight loop would be thousands)
	if max := int64(dur / (10 * time.Millisecond)); attempts > max {
		t.Errorf("%d attempts in %s: the backoff does not hold", attempts, dur)
	}
	if int64(lines) > 2*attempts+10 {
		t.Errorf("%d log lines for %d attempts (want one per backoff step)", lines, attempts)
	}
	if rss1-rss0 > 2<<10 && !sanitized(t) {
		t.Errorf("RSS grew by %d KiB while retrying", rss1-rss0)
	}
	if fds1 > fds0+2 {
		t.Errorf("open fds %d after retrying, %d before", fds1, fds0)
	}
	if cpu > 0.05 {
		t.Errorf("CPU %.1f%% while retrying (want near zero)", cpu*100)
	}
}

// The first request through a new session is answered: the agent offers its
// session to Piko only once the webhook behind it listens (before, the tunnel
// connected ~15 ms before the webhook's socket existed and the control plane's
// first request after a start got 502 from the relay).
func TestFaultFirstRequestAfterStartAnswered(t *testing.T) {
	for i := 0; i < 5; i++ {
		r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a")
		tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
		dir := t.TempDir()
		a := &Agent{t: t, Dir: dir, Port: freePort(t), Log: &syncBuffer{}, done: make(chan struct{})}
		a.Config = writeConfig(t, dir, a.Port, tunnelYAML(r, tok, ""))
		a.start(fastReconnect...)
		deadline := time.Now().Add(15 * time.Second)
		for r.Status().Upstreams == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no session\n%s", a.Log.String())
			}
			time.Sleep(time.Millisecond)
		}
		code, body, err := getThrough(&http.Client{Timeout: 10 * time.Second}, r.ProxyURL(), "/v1/livez")
		if err != nil || code != 200 {
			t.Fatalf("start %d: the first request through the new session got %d %q %v\n%s", i, code, body, err, a.Log.String())
		}
		a.Signal(9)
		<-a.done
	}
}
