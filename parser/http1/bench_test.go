package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// A typical API exchange: a ~300-byte request with the usual browser-less
// client headers, and a small JSON response.
var (
	benchReq = []byte("GET /api/v1/users/12345/orders?limit=20&offset=40 HTTP/1.1\r\n" +
		"Host: shop.example.com\r\n" +
		"User-Agent: okhttp/4.12.0\r\n" +
		"Accept: application/json\r\n" +
		"Accept-Encoding: gzip\r\n" +
		"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl\r\n" +
		"X-Request-Id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n" +
		"Connection: keep-alive\r\n\r\n")
	benchResp = []byte("HTTP/1.1 200 OK\r\n" +
		"Content-Type: application/json; charset=utf-8\r\n" +
		"Date: Mon, 23 Nov 2026 11:00:00 GMT\r\n" +
		"Cache-Control: no-store\r\n" +
		"Content-Length: 89\r\n\r\n" +
		`{"orders":[{"id":981,"total":"19.90","status":"shipped"}],"next":"/api/v1/users/12345/o"}`)
)

func BenchmarkParser(b *testing.B) {
	var stats parser.Stats
	var calls int
	p := New(&parser.ConnInfo{}, parser.EmitFunc(func(c *parser.Call) {
		if c.Status == 200 {
			calls++
		}
	}), &stats, parser.Options{MaxBodyPrefix: 256})
	b.SetBytes(int64(len(benchReq) + len(benchResp)))
	b.ReportAllocs()
	for i := range b.N {
		ts := int64(i)
		p.Feed(parser.FromClient, ts, benchReq)
		p.Feed(parser.FromServer, ts, benchResp)
	}
	if calls != b.N {
		b.Fatalf("%d calls for %d exchanges", calls, b.N)
	}
}

func BenchmarkNetHTTP(b *testing.B) {
	rdr := bytes.NewReader(nil)
	br := bufio.NewReader(rdr)
	b.SetBytes(int64(len(benchReq) + len(benchResp)))
	b.ReportAllocs()
	for range b.N {
		rdr.Reset(benchReq)
		br.Reset(rdr)
		req, err := http.ReadRequest(br)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			b.Fatal(err)
		}
		rdr.Reset(benchResp)
		br.Reset(rdr)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
}
