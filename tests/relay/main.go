// vm-relay: a Piko-compatible test server for vm-agent's tunnel. It accepts
// upstream WebSocket connections on /piko/v1/upstream/{endpoint} (JWT with an
// HMAC or RSA key, x-piko-tenant-id), runs a yamux server session on each,
// and forwards every HTTP request on its proxy port over a new yamux stream,
// one request per stream, with the headers Piko adds. A control port injects
// faults for tests. Loopback only; bound addresses go to -addr-file.
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o vm-relay .
package main

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"
)

var (
	upstreamAddr = flag.String("upstream-addr", "127.0.0.1:0", "upstream listener (agents connect here)")
	proxyAddr    = flag.String("proxy-addr", "127.0.0.1:0", "proxy listener (clients send HTTP here)")
	controlAddr  = flag.String("control-addr", "127.0.0.1:0", "control listener (status, faults)")
	addrFile     = flag.String("addr-file", "", "write the bound addresses here as JSON")
	hmacKey      = flag.String("hmac-key", "", "accept HS256 JWTs signed with this key")
	rsaPubFile   = flag.String("rsa-pub", "", "accept RS256 JWTs verified with this PEM public key")
	tenant       = flag.String("tenant", "", "require x-piko-tenant-id to equal this")
	tlsCert      = flag.String("tls-cert", "", "serve the upstream port over TLS with this cert")
	tlsKey       = flag.String("tls-key", "", "... and this key")
	keepalive    = flag.Duration("keepalive", 30*time.Second, "yamux keepalive interval")
	proxyTimeout = flag.Duration("proxy-timeout", 30*time.Second, "per-request timeout (Piko's default)")
)

// wsConn adapts a WebSocket to net.Conn as Piko does: every Write is one
// binary message, reads concatenate messages. It also tracks yamux frame
// boundaries on the write side so faults can be injected between frames.
type wsConn struct {
	ws      *websocket.Conn
	raw     net.Conn
	rmu     sync.Mutex
	reader  io.Reader
	wmu     sync.Mutex
	pending int // body bytes of the yamux frame being written
	stallMu sync.Mutex
	stall   chan struct{} // non-nil while reads are stalled
}

func (c *wsConn) Read(p []byte) (int, error) {
	c.stallMu.Lock()
	ch := c.stall
	c.stallMu.Unlock()
	if ch != nil {
		<-ch
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.reader == nil {
			mt, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				return 0, errors.New("unexpected text message")
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if err == io.EOF {
			c.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.pending == 0 && len(p) == 12 {
		if p[1] == 0 { // data frame: its body follows in later writes
			c.pending = int(binary.BigEndian.Uint32(p[8:12]))
		}
	} else if c.pending > 0 {
		c.pending -= len(p)
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// inject writes raw bytes as one binary message between yamux frames.
func (c *wsConn) inject(p []byte) error {
	for i := 0; i < 1000; i++ {
		c.wmu.Lock()
		if c.pending <= 0 {
			err := c.ws.WriteMessage(websocket.BinaryMessage, p)
			c.wmu.Unlock()
			return err
		}
		c.wmu.Unlock()
		time.Sleep(time.Millisecond)
	}
	return errors.New("no frame boundary")
}

// injectRaw writes bytes straight to the TCP/TLS connection (not framed).
func (c *wsConn) injectRaw(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.raw.Write(p)
	return err
}

// tcpConn is the TCP connection under the WebSocket (below TLS, if any).
func (c *wsConn) tcpConn() (*net.TCPConn, error) {
	nc := c.raw
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("not a TCP connection: %T", nc)
	}
	return tcp, nil
}

// reset closes the TCP connection with SO_LINGER 0: the kernel sends an RST
// (what a load balancer or a crashed Piko does), not a FIN.
func (c *wsConn) reset() error {
	tcp, err := c.tcpConn()
	if err != nil {
		return err
	}
	if err := tcp.SetLinger(0); err != nil {
		return err
	}
	return tcp.Close()
}

// injectBelowTLS writes bytes to the TCP connection under TLS: the agent's
// TLS layer sees a record it cannot decrypt (a TLS error, not a close).
func (c *wsConn) injectBelowTLS(p []byte) error {
	if _, ok := c.raw.(*tls.Conn); !ok {
		return errors.New("the upstream is not TLS")
	}
	tcp, err := c.tcpConn()
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = tcp.Write(p)
	return err
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

type upstream struct {
	endpoint string
	conn     *wsConn
	sess     *yamux.Session
	proxy    *httputil.ReverseProxy
}

type relay struct {
	mu          sync.Mutex
	upstreams   map[string]*upstream
	all         map[*upstream]bool
	connections int64 // upstream sessions accepted
	rejected    int64 // upstream attempts refused (auth)
	requests    int64
	rsaPub      *rsa.PublicKey
	// > 0: every upstream session is reset (RST) this many ns after it is
	// accepted (fault mode "resetloop"), a Piko that accepts and then drops
	resetAfterNs int64
}

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// verifyJWT checks the signature, exp and piko.endpoints; returns exp (0 = none).
func (r *relay) verifyJWT(tok, endpoint string) (int64, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0, errors.New("malformed token")
	}
	hb, err := b64url(parts[0])
	if err != nil {
		return 0, errors.New("malformed header")
	}
	var hdr struct{ Alg string }
	if json.Unmarshal(hb, &hdr) != nil {
		return 0, errors.New("malformed header")
	}
	sig, err := b64url(parts[2])
	if err != nil {
		return 0, errors.New("malformed signature")
	}
	signed := []byte(parts[0] + "." + parts[1])
	switch {
	case hdr.Alg == "HS256" && *hmacKey != "":
		m := hmac.New(sha256.New, []byte(*hmacKey))
		m.Write(signed)
		if !hmac.Equal(m.Sum(nil), sig) {
			return 0, errors.New("bad signature")
		}
	case hdr.Alg == "RS256" && r.rsaPub != nil:
		h := sha256.Sum256(signed)
		if rsa.VerifyPKCS1v15(r.rsaPub, crypto.SHA256, h[:], sig) != nil {
			return 0, errors.New("bad signature")
		}
	default:
		return 0, fmt.Errorf("unsupported alg %q", hdr.Alg)
	}
	pb, err := b64url(parts[1])
	if err != nil {
		return 0, errors.New("malformed claims")
	}
	var claims struct {
		Exp  int64 `json:"exp"`
		Piko struct {
			Endpoints []string `json:"endpoints"`
		} `json:"piko"`
	}
	if json.Unmarshal(pb, &claims) != nil {
		return 0, errors.New("malformed claims")
	}
	if claims.Exp != 0 && time.Now().Unix() >= claims.Exp {
		return 0, errors.New("token expired")
	}
	if len(claims.Piko.Endpoints) > 0 {
		ok := false
		for _, e := range claims.Piko.Endpoints {
			ok = ok || e == endpoint
		}
		if !ok {
			return 0, errors.New("endpoint not permitted")
		}
	}
	return claims.Exp, nil
}

func (r *relay) handleUpstream(w http.ResponseWriter, req *http.Request) {
	endpoint := strings.TrimPrefix(req.URL.Path, "/piko/v1/upstream/")
	if endpoint == "" || strings.Contains(endpoint, "/") || strings.Contains(req.URL.RawPath, "%2F") {
		http.NotFound(w, req)
		return
	}
	var exp int64
	if *hmacKey != "" || r.rsaPub != nil {
		tok := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
		if tok == "" {
			tok = req.Header.Get("x-piko-authorization")
		}
		var err error
		if exp, err = r.verifyJWT(tok, endpoint); err != nil {
			atomic.AddInt64(&r.rejected, 1)
			log.Printf("upstream %s: unauthorized: %v", endpoint, err)
			http.Error(w, `{"error": "unauthorized"}`, http.StatusUnauthorized)
			return
		}
	}
	if *tenant != "" && req.Header.Get("x-piko-tenant-id") != *tenant {
		atomic.AddInt64(&r.rejected, 1)
		log.Printf("upstream %s: wrong tenant %q", endpoint, req.Header.Get("x-piko-tenant-id"))
		http.Error(w, `{"error": "unknown tenant"}`, http.StatusUnauthorized)
		return
	}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	conn := &wsConn{ws: ws, raw: ws.UnderlyingConn()}
	cfg := yamux.DefaultConfig()
	cfg.KeepAliveInterval = *keepalive
	cfg.LogOutput = io.Discard
	sess, err := yamux.Server(conn, cfg)
	if err != nil {
		ws.Close()
		return
	}
	u := &upstream{endpoint: endpoint, conn: conn, sess: sess}
	u.proxy = &httputil.ReverseProxy{
		Director: func(out *http.Request) {
			out.URL.Scheme = "http"
			out.URL.Host = endpoint
			out.Header.Set("X-Piko-Forward", "true")
			out.Header.Set("X-Piko-Endpoint", endpoint)
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return sess.Open()
			},
			DisableKeepAlives:     true,
			ResponseHeaderTimeout: *proxyTimeout,
			MaxIdleConnsPerHost:   -1,
		},
		FlushInterval: -1,
		// a response cut in transit shows here (and in the relay log of a failed test)
		ErrorLog: log.New(os.Stderr, "proxy: ", log.Lmicroseconds),
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, `{"error": "upstream unreachable: %s"}`+"\n", strings.ReplaceAll(err.Error(), `"`, `'`))
		},
	}
	r.mu.Lock()
	r.upstreams[endpoint] = u
	r.all[u] = true
	r.mu.Unlock()
	atomic.AddInt64(&r.connections, 1)
	log.Printf("upstream %s connected from %s", endpoint, req.RemoteAddr)
	if d := atomic.LoadInt64(&r.resetAfterNs); d > 0 {
		t := time.AfterFunc(time.Duration(d), func() { conn.reset() })
		defer t.Stop()
	}
	if exp != 0 {
		// Piko drops the connection when the token expires (no close frame).
		t := time.AfterFunc(time.Until(time.Unix(exp, 0)), func() {
			log.Printf("upstream %s: token expired, closing", endpoint)
			conn.raw.Close()
		})
		defer t.Stop()
	}
	<-sess.CloseChan()
	ws.Close()
	r.mu.Lock()
	if r.upstreams[endpoint] == u {
		delete(r.upstreams, endpoint)
	}
	delete(r.all, u)
	r.mu.Unlock()
	log.Printf("upstream %s disconnected", endpoint)
}

func (r *relay) handleProxy(w http.ResponseWriter, req *http.Request) {
	atomic.AddInt64(&r.requests, 1)
	endpoint := req.Header.Get("x-piko-endpoint")
	r.mu.Lock()
	u := r.upstreams[endpoint]
	if u == nil && endpoint == "" && len(r.upstreams) == 1 {
		for _, v := range r.upstreams {
			u = v
		}
	}
	r.mu.Unlock()
	if u == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintln(w, `{"error": "no available upstreams"}`)
		return
	}
	// Like Piko, a WebSocket upgrade is proxied as is (ReverseProxy copies
	// the upgraded bytes both ways); the request timeout would cut a long
	// session, so only the response headers are bounded (ResponseHeaderTimeout).
	if strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		u.proxy.ServeHTTP(w, req)
		return
	}
	// A request with a body closes its client connection after the reply.
	// Otherwise, when the agent answers before the body is through (a 401
	// or 413 refuses it unread), net/http's server drains the rest of the
	// body for keep-alive while the Transport is still copying it upstream:
	// the Transport sees a short body, fails the write and closes the yamux
	// stream, and hashicorp/yamux then reads a locally closed stream with an
	// empty buffer as EOF: the answer's body is cut after its headers.
	if req.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	ctx, cancel := context.WithTimeout(req.Context(), *proxyTimeout)
	defer cancel()
	u.proxy.ServeHTTP(w, req.WithContext(ctx))
}

func (r *relay) snapshot() []*upstream {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*upstream, 0, len(r.all))
	for u := range r.all {
		out = append(out, u)
	}
	return out
}

func yamuxHdr(typ byte, flags uint16, id, length uint32) []byte {
	b := make([]byte, 12)
	b[1] = typ
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint32(b[4:], id)
	binary.BigEndian.PutUint32(b[8:], length)
	return b
}

// fault applies one fault mode to every connected upstream.
func (r *relay) fault(mode string, dur time.Duration) error {
	if mode == "resetloop" { // from now on (dur > 0) or never again (dur 0)
		atomic.StoreInt64(&r.resetAfterNs, int64(dur))
		if dur > 0 {
			for _, u := range r.snapshot() {
				u.conn.reset()
			}
		}
		return nil
	}
	ups := r.snapshot()
	if len(ups) == 0 {
		return errors.New("no upstream connected")
	}
	for _, u := range ups {
		c := u.conn
		var err error
		switch mode {
		case "drop": // TCP connection gone without a close frame
			err = c.raw.Close()
		case "reset": // TCP reset (SO_LINGER 0), no close frame, no FIN
			err = c.reset()
		case "tlsgarbage": // a bogus TLS record (application data, bad MAC)
			err = c.injectBelowTLS([]byte{0x17, 0x03, 0x03, 0x00, 0x20,
				1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32})
		case "stall": // stop reading: the agent's pings go unanswered
			ch := make(chan struct{})
			c.stallMu.Lock()
			c.stall = ch
			c.stallMu.Unlock()
			time.AfterFunc(dur, func() {
				c.stallMu.Lock()
				c.stall = nil
				c.stallMu.Unlock()
				close(ch)
			})
		case "oversize": // a frame header announcing 1 TiB
			hdr := []byte{0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0}
			err = c.injectRaw(hdr)
		case "window": // open a stream and send more than its 256 KiB window
			id := uint32(1<<31 - 2)
			msg := yamuxHdr(1, 1, id, 0)
			msg = append(msg, yamuxHdr(0, 0, id, 300*1024)...)
			msg = append(msg, make([]byte, 300*1024)...)
			err = c.inject(msg)
		case "badversion": // a yamux header with an unknown version
			msg := yamuxHdr(0, 0, 2, 0)
			msg[0] = 7
			err = c.inject(msg)
		case "goaway":
			err = u.sess.GoAway()
		case "close": // a polite WebSocket close
			c.wmu.Lock()
			err = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1001, "going away"), time.Now().Add(time.Second))
			c.wmu.Unlock()
		default:
			return fmt.Errorf("unknown fault %q", mode)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *relay) handleControl(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/status":
		r.mu.Lock()
		n := len(r.upstreams)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int64{
			"upstreams":   int64(n),
			"connections": atomic.LoadInt64(&r.connections),
			"rejected":    atomic.LoadInt64(&r.rejected),
			"requests":    atomic.LoadInt64(&r.requests),
		})
	case "/fault":
		dur, _ := time.ParseDuration(req.URL.Query().Get("dur"))
		if dur == 0 {
			dur = 5 * time.Second
		}
		if err := r.fault(req.URL.Query().Get("mode"), dur); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintln(w, "ok")
	default:
		http.NotFound(w, req)
	}
}

func listenLoopback(addr string) net.Listener {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		log.Fatalf("bad address %q: %v", addr, err)
	}
	ip := net.ParseIP(host)
	// 10.231.0.0/16: the veth links the fault tests make to network
	// namespaces of their own (tests/e2e/faults_network_test.go)
	_, vethNet, _ := net.ParseCIDR("10.231.0.0/16")
	if ip == nil || !(ip.IsLoopback() || vethNet.Contains(ip)) {
		log.Fatalf("%s: the relay binds loopback (or test veth 10.231.0.0/16) addresses only", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	return l
}

func main() {
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	r := &relay{upstreams: map[string]*upstream{}, all: map[*upstream]bool{}}
	if *rsaPubFile != "" {
		data, err := os.ReadFile(*rsaPubFile)
		if err != nil {
			log.Fatal(err)
		}
		blk, _ := pem.Decode(data)
		if blk == nil {
			log.Fatal("rsa-pub: no PEM block")
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			log.Fatal(err)
		}
		var ok bool
		if r.rsaPub, ok = pub.(*rsa.PublicKey); !ok {
			log.Fatal("rsa-pub: not an RSA key")
		}
	}
	ul := listenLoopback(*upstreamAddr)
	pl := listenLoopback(*proxyAddr)
	cl := listenLoopback(*controlAddr)
	scheme := "http"
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			log.Fatal(err)
		}
		ul = tls.NewListener(ul, &tls.Config{Certificates: []tls.Certificate{cert}})
		scheme = "https"
	}
	umux := http.NewServeMux()
	umux.HandleFunc("/piko/v1/upstream/", r.handleUpstream)
	go http.Serve(ul, umux)
	go (&http.Server{Handler: http.HandlerFunc(r.handleProxy), ErrorLog: log.New(io.Discard, "", 0)}).Serve(pl)
	go http.Serve(cl, http.HandlerFunc(r.handleControl))
	addrs := map[string]string{
		"upstream_url": (&url.URL{Scheme: scheme, Host: ul.Addr().String()}).String(),
		"upstream":     ul.Addr().String(),
		"proxy":        pl.Addr().String(),
		"control":      cl.Addr().String(),
	}
	data, _ := json.Marshal(addrs)
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("relay ready: %s", data)
	select {}
}
