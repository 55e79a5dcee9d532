package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// h2Server serves HTTP/2 without TLS. The h2c handler is used (rather than
// net/http's own unencrypted HTTP/2) because it also accepts the HTTP/1.1
// Upgrade: h2c path that curl --http2 takes.
func h2Server(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q}`, r.PathValue("id"))
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "got %d", n)
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening", l.Addr())
	return http.Serve(l, h2c.NewHandler(mux, &http2.Server{}))
}

type h2Step struct {
	method, target string
	body           string
}

// h2Client runs its steps on one prior-knowledge connection.
func h2Client(base string, join bool) error {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				fmt.Println("conn", c.LocalAddr())
			}
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	rec := newRecorder()

	post := h2Step{"POST", "/echo", strings.Repeat("b", 1000)}
	batches := [][]h2Step{{
		{"GET", "/items/1", ""},
		{"GET", "/items/2?full=1", ""},
		post,
		{"GET", "/missing", ""},
		{"GET", "/items/3", ""},
	}}
	if join {
		// The second batch repeats a request of the first (its headers are
		// now dynamic-table references the agent never saw) and adds new
		// ones (literals it can read).
		batches = [][]h2Step{{
			{"GET", "/items/1", ""},
			{"GET", "/items/2?full=1", ""},
		}, {
			{"GET", "/items/1", ""},
			{"GET", "/items/3?full=1", ""},
			post,
			{"GET", "/missing", ""},
		}}
		rec.phase = "before"
	}
	for i, batch := range batches {
		if i > 0 {
			rec.pause()
		}
		for _, s := range batch {
			var body io.Reader
			if s.body != "" {
				body = strings.NewReader(s.body)
			}
			req, err := http.NewRequest(s.method, base+s.target, body)
			if err != nil {
				return err
			}
			resp, err := cl.Do(req)
			if err != nil {
				return err
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.ProtoMajor != 2 {
				return fmt.Errorf("%s %s: answered over %s", s.method, s.target, resp.Proto)
			}
			u, _ := url.Parse(s.target)
			rec.record(truth{Method: s.method, Path: u.Path, Query: u.RawQuery, Status: resp.StatusCode,
				GRPCStatus: -1, ReqBytes: int64(len(s.body)), RespBytes: n})
		}
	}
	return nil
}
