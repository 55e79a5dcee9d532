// gotlspeer is a Go crypto/tls peer for the Go TLS uprobe tests: net/http
// over HTTPS (HTTP/1.1 and HTTP/2 by ALPN) and grpc-go over TLS, server and
// client, so that both sides of each connection are Go programs whose
// plaintext only crypto/tls sees.
//
//	gotlspeer server CERT KEY             HTTPS server, h1 and h2; prints "listening PORT"
//	gotlspeer client h1|h2 CERT PORT PATH...
//	                                      one GET per path on one connection;
//	                                      prints "STATUS PROTO BODY" per call
//	                                      (after GOTLSPEER_DELAY if set)
//	gotlspeer wrapped h1 CERT PORT PATH...
//	                                      as client, over a net.Conn wrapper
//	                                      type instead of a *net.TCPConn
//	gotlspeer load h1|h2 CERT PORT G N    G goroutines x N GETs each over
//	                                      keep-alive (h1) or h2 (a connection
//	                                      per 50 goroutines);
//	                                      checks every body, prints "ok G*N"
//	gotlspeer grpcserver CERT KEY         grpc-go Echo/Unary over TLS; prints "listening PORT"
//	gotlspeer grpcclient CERT PORT MSG... one unary call per message; prints
//	                                      "CODE REPLY" per call
//
// GET /items/{id} answers "item {id}"; other paths 404 "no such page".
// A client exits non-zero on any transport error.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: gotlspeer server|client|load|grpcserver|grpcclient ..."))
	}
	var err error
	a := os.Args[2:]
	switch os.Args[1] {
	case "server":
		err = server(a[0], a[1])
	case "client":
		err = client(a[0], a[1], a[2], a[3:], false)
	case "wrapped":
		err = client(a[0], a[1], a[2], a[3:], true)
	case "load":
		g, _ := strconv.Atoi(a[3])
		n, _ := strconv.Atoi(a[4])
		err = load(a[0], a[1], a[2], g, n)
	case "grpcserver":
		err = grpcServer(a[0], a[1])
	case "grpcclient":
		err = grpcClient(a[0], a[1], a[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gotlspeer:", err)
	os.Exit(1)
}

func listen() (net.Listener, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fmt.Println("listening", l.Addr().(*net.TCPAddr).Port)
	return l, nil
}

func server(cert, key string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s", r.PathValue("id"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such page", http.StatusNotFound)
	})
	l, err := listen()
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ErrorLog: nil}
	// ServeTLS turns HTTP/2 on by ALPN.
	return srv.ServeTLS(l, cert, key)
}

func clientTLS(cert string) (*tls.Config, error) {
	pem, err := os.ReadFile(cert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no certificate in " + cert)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, nil
}

func httpClient(proto, cert string, conns int) (*http.Client, error) {
	cfg, err := clientTLS(cert)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	switch proto {
	case "h1":
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP1(true)
	case "h2":
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP2(true)
	default:
		return nil, fmt.Errorf("protocol %q", proto)
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, nil
}

func get(c *http.Client, port, path string) (int, string, string, error) {
	resp, err := c.Get("https://127.0.0.1:" + port + path)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Proto, string(body), err
}

// wrappedConn hides the *net.TCPConn behind another type, as
// instrumentation and rate-limiting wrappers do.
type wrappedConn struct {
	net.Conn
	reads int
}

func (w *wrappedConn) Read(b []byte) (int, error) {
	w.reads++
	return w.Conn.Read(b)
}

func client(proto, cert, port string, paths []string, wrap bool) error {
	// GOTLSPEER_DELAY (a duration) postpones the first request, for tests
	// that need a client to call shortly, but not instantly, after start.
	if d, err := time.ParseDuration(os.Getenv("GOTLSPEER_DELAY")); err == nil {
		time.Sleep(d)
	}
	c, err := httpClient(proto, cert, 1)
	if err != nil {
		return err
	}
	if wrap {
		c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &wrappedConn{Conn: conn}, nil
		}
	}
	for _, p := range paths {
		code, got, body, err := get(c, port, p)
		if err != nil {
			return err
		}
		fmt.Printf("%d %s %s\n", code, got, body)
	}
	return nil
}

func load(proto, cert, port string, g, n int) error {
	// HTTP/2: one connection per 50 goroutines, so that no connection has
	// more open streams than the agent's parser keeps (128).
	clients := make([]*http.Client, 1)
	conns := g
	if proto == "h2" {
		clients = make([]*http.Client, (g+49)/50)
		conns = 1
	}
	for i := range clients {
		c, err := httpClient(proto, cert, conns)
		if err != nil {
			return err
		}
		clients[i] = c
	}
	var ok atomic.Int64
	errs := make(chan error, g)
	var wg sync.WaitGroup
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				id := fmt.Sprintf("g%d-r%d", i, j)
				code, _, body, err := get(clients[i%len(clients)], port, "/items/"+id)
				if err != nil {
					errs <- err
					return
				}
				if code != 200 || body != "item "+id {
					errs <- fmt.Errorf("GET /items/%s: %d %q", id, code, body)
					return
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Println("ok", ok.Load())
	return nil
}

const echoMethod = "/apisonar.test.Echo/Unary"

func grpcServer(cert, key string) error {
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{kp}})))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "apisonar.test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Unary",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				if in.Value == "missing" {
					return nil, status.Error(codes.NotFound, "no such item")
				}
				return wrapperspb.String("echo:" + in.Value), nil
			},
		}},
	}, struct{}{})
	l, err := listen()
	if err != nil {
		return err
	}
	return srv.Serve(l)
}

func grpcClient(cert, port string, msgs []string) error {
	cfg, err := clientTLS(cert)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient("passthrough:///127.0.0.1:"+port, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return err
	}
	defer cc.Close()
	for _, m := range msgs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(ctx, echoMethod, wrapperspb.String(m), out)
		cancel()
		st, _ := status.FromError(err)
		if err != nil && st.Code() == codes.Unavailable {
			return err
		}
		fmt.Printf("%d %s\n", st.Code(), out.Value)
	}
	return nil
}
