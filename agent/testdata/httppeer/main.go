// httppeer is a Go net/http server or client for the eBPF end-to-end tests:
// a real peer built from the standard library, run as a child process so
// that its traffic is traced like any other program's.
//
//	httppeer server ADDR     serve; print "listening ADDR" when ready
//	httppeer client BASEURL  run a fixed keep-alive sequence; print the
//	                         local address of each new connection
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: httppeer server ADDR | client BASEURL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args[2])
	case "client":
		if err := client(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		os.Exit(2)
	}
}

func serve(addr string) {
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
	mux.HandleFunc("GET /chunked", func(w http.ResponseWriter, r *http.Request) {
		f := w.(http.Flusher)
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(w, "part-%d\n", i)
			f.Flush()
		}
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening", l.Addr())
	http.Serve(l, mux)
}

func client(base string) error {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				fmt.Println("conn", c.LocalAddr())
			}
			return c, err
		},
		MaxIdleConnsPerHost: 1,
	}
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	do := func(req *http.Request, err error) error {
		if err != nil {
			return err
		}
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	steps := []func() error{
		func() error { return do(http.NewRequest("GET", base+"/items/1", nil)) },
		func() error { return do(http.NewRequest("GET", base+"/items/2?full=1", nil)) },
		func() error {
			return do(http.NewRequest("POST", base+"/echo", strings.NewReader(strings.Repeat("b", 1000))))
		},
		func() error { return do(http.NewRequest("GET", base+"/chunked", nil)) },
		func() error { return do(http.NewRequest("GET", base+"/missing", nil)) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}
