package http1

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apisonar/apisonar/parser"
)

// tapListener hands every byte a server reads or writes to a parser, in the
// order the server saw them: what the test's HTTP peers put on the wire is
// what the parser gets, cut wherever the peers' writes and reads cut it.
type tapListener struct {
	net.Listener
	mu sync.Mutex
	ts int64
	p  *Parser
	// interim counts 1xx responses the server wrote.
	interim int
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, l: l}, nil
}

func (l *tapListener) feed(dir parser.Direction, b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ts++
	if dir == parser.FromServer && bytes.HasPrefix(b, []byte("HTTP/1.1 1")) {
		l.interim++
	}
	l.p.Feed(dir, l.ts, b)
}

type tapConn struct {
	net.Conn
	l *tapListener
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.l.feed(parser.FromClient, b[:n])
	}
	return n, err
}

func (c *tapConn) Write(b []byte) (int, error) {
	c.l.feed(parser.FromServer, b)
	return c.Conn.Write(b)
}

// TestAgainstNetHTTP runs Go's own HTTP/1.1 client and server over one
// keep-alive loopback connection and checks that the parser reports each
// exchange as the test made it: the expected sizes come from the handlers
// and requests below, not from the parser.
func TestAgainstNetHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("no loopback: %v", err)
	}
	var mu sync.Mutex
	var got []string
	tap := &tapListener{Listener: ln}
	tap.p = New(&parser.ConnInfo{}, parser.EmitFunc(func(c *parser.Call) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, summaryNoTime(c))
	}), &parser.Stats{}, parser.Options{MaxBodyPrefix: 8})

	payload := strings.Repeat("0123456789", 1000)
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "part one,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part two")
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/x-count")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, strings.Repeat("x", int(n%7)))
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/cached", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(tap)
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{
		MaxConnsPerHost: 1, DisableCompression: true, ExpectContinueTimeout: 5 * time.Second,
	}}
	base := "http://" + ln.Addr().String()
	do := func(method, path, ctype string, body io.Reader, hdr ...string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", "apisonar-test")
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	do("GET", "/json?id=7", "", nil)
	do("GET", "/chunked", "", nil)
	do("POST", "/upload", "application/octet-stream", strings.NewReader(payload))
	// An unknown length: the client sends it chunked.
	do("PUT", "/upload", "", io.MultiReader(strings.NewReader("abc"), bytes.NewReader([]byte("defg"))))
	// The server answers 100 Continue before the client sends the body.
	do("POST", "/upload", "", strings.NewReader(payload[:20]), "Expect", "100-continue")
	do("GET", "/empty", "", nil)
	do("GET", "/cached", "", nil)
	do("HEAD", "/head", "", nil)
	do("GET", "/json", "", nil)
	client.CloseIdleConnections()
	srv.Close()
	tap.mu.Lock()
	tap.p.Close(tap.ts + 1)
	if tap.interim != 1 {
		t.Errorf("the server wrote %d interim responses, the test expects one 100 Continue", tap.interim)
	}
	tap.mu.Unlock()

	host := ln.Addr().String()
	want := []string{
		`GET /json?id=7 host=` + host + ` -> 200 req=0 resp=11 ct=application/json ua=apisonar-test respbody="{\"ok\":tr"`,
		`GET /chunked host=` + host + ` -> 200 req=0 resp=17 ct=text/plain ua=apisonar-test respbody="part one"`,
		`POST /upload host=` + host + ` -> 201 req=10000 resp=4 ct=text/x-count ua=apisonar-test reqbody="01234567" respbody="xxxx"`,
		`PUT /upload host=` + host + ` -> 201 req=7 resp=0 ct=text/x-count ua=apisonar-test reqbody="abcdefg"`,
		`POST /upload host=` + host + ` -> 201 req=20 resp=6 ct=text/x-count ua=apisonar-test reqbody="01234567" respbody="xxxxxx"`,
		`GET /empty host=` + host + ` -> 204 req=0 resp=0 ua=apisonar-test`,
		`GET /cached host=` + host + ` -> 304 req=0 resp=0 ua=apisonar-test`,
		`HEAD /head host=` + host + ` -> 200 req=0 resp=0 ua=apisonar-test`,
		`GET /json host=` + host + ` -> 200 req=0 resp=11 ct=application/json ua=apisonar-test respbody="{\"ok\":tr"`,
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("calls:\n got %q\nwant %q", got, want)
	}
}

// summaryNoTime is summary without the event times, which depend on how
// the peers' reads and writes fell.
func summaryNoTime(c *parser.Call) string {
	s := summary(c)
	if i := strings.Index(s, " t="); i >= 0 {
		j := strings.IndexByte(s[i+1:], ' ')
		if j < 0 {
			return s[:i]
		}
		s = s[:i] + s[i+1+j:]
	}
	return s
}
