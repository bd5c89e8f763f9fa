// loadgen: the tunnel benchmark's load generator and test origin server.
//
//	loadgen serve -addr-file F            origin: /bulk?n=BYTES, /hold (blocks until /release)
//	loadgen rps -url U -c 32 -d 5s        small requests: prints "rps p50_ms p99_ms errors"
//	loadgen bulk -url U -n 3              large bodies: prints "MB/s"
//	loadgen hold -url U -n 1000 -for 3s   keeps n requests open for a while: prints "opened"
//
// Headers for every client mode: -H "Name: value" (e.g. x-piko-endpoint).
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o loadgen .
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ",") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func newReq(url string, hs headers) *http.Request {
	req, _ := http.NewRequest("GET", url, nil)
	for _, h := range hs {
		if i := strings.Index(h, ":"); i > 0 {
			req.Header.Set(strings.TrimSpace(h[:i]), strings.TrimSpace(h[i+1:]))
		}
	}
	return req
}

func serve(addrFile string) {
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i)
	}
	release := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		for n > 0 {
			m := int64(len(block))
			if n < m {
				m = n
			}
			if _, err := w.Write(block[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(60 * time.Second):
		}
		io.WriteString(w, "released\n")
	})
	mux.HandleFunc("/release", func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(release) })
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	os.WriteFile(addrFile, []byte(l.Addr().String()), 0o600)
	http.Serve(l, mux)
}

var noKeepAlive bool

func client(conns int) *http.Client {
	return &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		DisableKeepAlives: noKeepAlive}}
}

func rps(url string, hs headers, conc int, dur time.Duration) {
	c := client(conc)
	var mu sync.Mutex
	var lat []time.Duration
	var errs int64
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := c.Do(newReq(url, hs))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					atomic.AddInt64(&errs, 1)
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	fmt.Printf("%.0f %.2f %.2f %d\n", float64(len(lat))/dur.Seconds(), pct(0.50), pct(0.99), errs)
}

func bulk(url string, hs headers, n int) {
	c := client(1)
	var total int64
	t0 := time.Now()
	for i := 0; i < n; i++ {
		resp, err := c.Do(newReq(url, hs))
		if err != nil {
			fmt.Println("0")
			return
		}
		m, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		total += m
	}
	fmt.Printf("%.1f\n", float64(total)/1e6/time.Since(t0).Seconds())
}

func hold(url string, hs headers, n int, dur time.Duration) {
	c := client(n)
	var wg sync.WaitGroup
	var ok int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Do(newReq(url, hs))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					atomic.AddInt64(&ok, 1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%d\n", ok)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen serve|rps|bulk|hold|freeport [flags]")
		os.Exit(64)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	url := fs.String("url", "", "target URL")
	addrFile := fs.String("addr-file", "", "serve: write the address here")
	conc := fs.Int("c", 32, "concurrent clients")
	dur := fs.Duration("d", 5*time.Second, "duration")
	n := fs.Int("n", 3, "count")
	fs.BoolVar(&noKeepAlive, "close", false, "a new connection per request")
	var hs headers
	fs.Var(&hs, "H", "header (repeatable)")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "serve":
		serve(*addrFile)
	case "rps":
		rps(*url, hs, *conc, *dur)
	case "bulk":
		bulk(*url, hs, *n)
	case "hold":
		hold(*url, hs, *n, *dur)
	case "freeport":
		// a loopback port that was free a moment ago (the shell has no portable way)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
		l.Close()
	default:
		os.Exit(64)
	}
}
