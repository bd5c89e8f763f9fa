// fakecp is a fake control plane for vm-agent's end-to-end tests. It serves
// the API described in docs/control-plane-api.md, records every request, and
// can be told to fail (500, 401, hang, drop) through a /_test/ control API.
// Endpoint handlers live in their own files and register in init().
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type recorded struct {
	Time    time.Time         `json:"time"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body,omitempty"`
	Status  int               `json:"status"`
}

type fault struct {
	PathPrefix string `json:"path_prefix"`
	Mode       string `json:"mode"`  // "500", "401", "429", "hang", "drop"
	Count      int    `json:"count"` // 0 = until cleared
}

type route struct {
	method  string
	pattern []string
	fn      func(w http.ResponseWriter, r *http.Request, params []string, body []byte) int
}

var (
	mu       sync.Mutex
	requests []recorded
	faults   []fault
	routes   []route
)

// handle registers "METHOD /path/{param}/…" with fn, which writes the answer
// and returns the status it sent (for the record).
func handle(spec string, fn func(w http.ResponseWriter, r *http.Request, params []string, body []byte) int) {
	parts := strings.SplitN(spec, " ", 2)
	routes = append(routes, route{parts[0], strings.Split(strings.Trim(parts[1], "/"), "/"), fn})
}

func match(rt route, r *http.Request) ([]string, bool) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(segs) != len(rt.pattern) {
		return nil, false
	}
	var params []string
	for i, p := range rt.pattern {
		if strings.HasPrefix(p, "{") {
			params = append(params, segs[i])
		} else if p != segs[i] {
			return nil, false
		}
	}
	return params, true
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
	return status
}

func writeError(w http.ResponseWriter, status int, code, msg string) int {
	return writeJSON(w, status, map[string]interface{}{"error": map[string]string{"code": code, "message": msg}})
}

// takeFault returns the active fault for path, consuming one use.
func takeFault(path string) string {
	mu.Lock()
	defer mu.Unlock()
	for i := range faults {
		f := &faults[i]
		if strings.HasPrefix(path, f.PathPrefix) {
			mode := f.Mode
			if f.Count > 0 {
				f.Count--
				if f.Count == 0 {
					faults = append(faults[:i], faults[i+1:]...)
				}
			}
			return mode
		}
	}
	return ""
}

func serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_test/") {
		control(w, r)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	rec := recorded{Time: time.Now(), Method: r.Method, Path: r.URL.Path, Headers: map[string]string{}}
	for k := range r.Header {
		rec.Headers[strings.ToLower(k)] = r.Header.Get(k)
	}
	if json.Valid(body) {
		rec.Body = body
	}
	switch takeFault(r.URL.Path) {
	case "500":
		rec.Status = writeError(w, 500, "internal", "injected failure")
	case "401":
		rec.Status = writeError(w, 401, "unauthorized", "injected 401")
	case "429":
		w.Header().Set("Retry-After", "1")
		rec.Status = writeError(w, 429, "rate_limited", "injected 429")
	case "hang":
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Minute):
		}
		rec.Status = 0
	case "drop":
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
		rec.Status = -1
	default:
		rec.Status = dispatch(w, r, body)
	}
	mu.Lock()
	requests = append(requests, rec)
	mu.Unlock()
}

func dispatch(w http.ResponseWriter, r *http.Request, body []byte) int {
	for _, rt := range routes {
		if params, ok := match(rt, r); ok && rt.method == r.Method {
			return rt.fn(w, r, params, body)
		}
	}
	return writeError(w, 404, "not_found", "no such endpoint")
}

// control: POST /_test/fault, DELETE /_test/fault, GET /_test/requests,
// DELETE /_test/requests.
func control(w http.ResponseWriter, r *http.Request) {
	mu.Lock()
	defer mu.Unlock()
	switch r.Method + " " + r.URL.Path {
	case "POST /_test/fault":
		var f fault
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			writeError(w, 400, "bad_request", err.Error())
			return
		}
		faults = append(faults, f)
		w.WriteHeader(204)
	case "DELETE /_test/fault":
		faults = nil
		w.WriteHeader(204)
	case "GET /_test/requests":
		writeJSON(w, 200, requests)
	case "DELETE /_test/requests":
		requests = nil
		w.WriteHeader(204)
	default:
		writeError(w, 404, "not_found", "unknown control endpoint")
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback only)")
	addrFile := flag.String("addr-file", "", "write the bound address here once listening")
	certFile := flag.String("tls-cert", "", "serve HTTPS with this certificate (PEM)")
	keyFile := flag.String("tls-key", "", "and this key (PEM)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		os.WriteFile(tmp, []byte(ln.Addr().String()), 0644)
		os.Rename(tmp, *addrFile)
	}
	log.Printf("fakecp listening on %s", ln.Addr())
	srv := &http.Server{Handler: http.HandlerFunc(serve)}
	if *certFile != "" {
		log.Fatal(srv.ServeTLS(ln, *certFile, *keyFile))
	}
	log.Fatal(srv.Serve(ln))
}
