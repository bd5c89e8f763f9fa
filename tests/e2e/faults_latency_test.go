package e2e

// 200 ms of round-trip latency on a real link. The kernel here has no
// sch_netem (no qdisc that delays), so the delay is a userspace relay in the
// test: the agent, in a network namespace joined by a veth pair, connects to
// delayProxy on the host side of the veth, which forwards to the relay and
// holds every chunk 100 ms each way, in order, with bounded buffers (a full
// buffer stops the reader: TCP backpressure). Loss and the partition are
// iptables in the namespace, as in faults_network_test.go.

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

type delayChunk struct {
	due  time.Time
	data []byte
}

// delayProxy listens on listen and forwards every connection to target,
// each direction delayed by oneWay. It stops with the test.
func delayProxy(t *testing.T, listen, target string, oneWay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pipe := func(dst, src net.Conn) {
		q := make(chan delayChunk, 64) // at most 64 × 32 KiB held per direction
		go func() {
			defer close(q)
			for {
				buf := make([]byte, 32<<10)
				n, err := src.Read(buf)
				if n > 0 {
					q <- delayChunk{time.Now().Add(oneWay), buf[:n]}
				}
				if err != nil {
					return
				}
			}
		}()
		for c := range q {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
		for range q { // let the reader finish
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return ln.Addr().String()
}

func TestFaultNetworkLatency200ms(t *testing.T) {
	ns := newNetns(t)
	is := newIssuer(t)
	r := startRelay(t, "-hmac-key", relayHMACKey, "-tenant", "tenant-a", "-keepalive", "1s")
	up, err := url.Parse(r.UpstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := delayProxy(t, ns.hostIP+":0", up.Host, 100*time.Millisecond)
	up.Host = proxy
	tok := writeToken(t, t.TempDir(), makeHS256(relayHMACKey, time.Now().Add(time.Hour).Unix(), "agent-1"))
	// keepalive set for a 200 ms link: the timeout is 10 RTTs and more
	y := fmt.Sprintf("piko:\n  server_url: %s\n  endpoint: agent-1\n  token_file: %s\n"+
		"  keepalive_interval: 2s\n  keepalive_timeout: 3s\n  connect_timeout: 3s\n", up.String(), tok)
	dir := t.TempDir()
	a := &Agent{t: t, Dir: dir, Port: freePort(t), Log: &syncBuffer{}, done: make(chan struct{})}
	a.Config = writeConfig(t, dir, a.Port, mergeYAML(is.yaml(), y))
	startInNetns(a, ns, fastReconnect...)
	if !r.WaitConnections(1, 20*time.Second) {
		t.Fatalf("the agent behind 200 ms did not connect\n%s", a.Log.String())
	}
	a.Base = r.ProxyURL()
	client := &http.Client{Timeout: 30 * time.Second}

	// 200 ms RTT plus 5 % loss both ways: requests succeed, keepalive holds
	ns.drop(t, 0.05)
	phase := 6 * time.Second
	if soak() {
		phase = 2 * time.Minute
	}
	var mu sync.Mutex
	var lat []time.Duration
	var failed int
	end := time.Now().Add(phase)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(end) && i < 100000; i++ {
				t0 := time.Now()
				code, body, err := getThrough(client, a.Base, fmt.Sprintf("/v1/livez?w=%d&i=%d", w, i))
				d := time.Since(t0)
				mu.Lock()
				if err == nil && code == 200 && strings.Contains(body, "ok") {
					lat = append(lat, d)
				} else {
					failed++
					t.Logf("request under 200 ms + 5%% loss: %d %v", code, err)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	ns.drop(t, 0)
	disc := strings.Count(a.Log.String(), "disconnected")
	if len(lat) == 0 {
		t.Fatalf("no request answered behind 200 ms (%d failed)", failed)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("200 ms RTT + 5%% loss for %s: %d answered, %d failed, p50 %s, p99 %s, %d keepalive trips",
		phase, len(lat), failed, p50.Round(time.Millisecond), p99.Round(time.Millisecond), disc)
	if failed > 0 {
		t.Errorf("%d requests failed behind 200 ms + 5%% loss", failed)
	}
	if disc > 0 {
		t.Errorf("the session was dropped %d times under latency (keepalive false trip)\n%s", disc, tail(a.Log.String(), 2000))
	}
	if p50 < 200*time.Millisecond {
		t.Errorf("p50 %s is below the link's RTT: the delay is not applied", p50)
	}

	// a partition under latency, then heal
	partition := 8 * time.Second
	if soak() {
		partition = 2 * time.Minute
	}
	partitionAndHeal(t, ns, r, a, client, partition, disc, 5*time.Second, 3*time.Second, " under 200 ms")
}
