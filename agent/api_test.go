package agent

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

func TestAPIServesInventoryAndJSONErrors(t *testing.T) {
	seen := NewSeenTable(10)
	c := sampleCall()
	seen.Observe(c)
	c.Start += 1e9
	c.Status = 503
	seen.Observe(c)
	api := &API{Seen: seen, Counters: func() map[string]uint64 { return map[string]uint64{"calls": 2} }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.ServeListener(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	get := func(method, path string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: content type %q", method, path, ct)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %s", method, path, b)
		}
		return resp.StatusCode, m
	}
	code, inv := get("GET", "/inventory/seen")
	if code != 200 {
		t.Fatalf("inventory: %d", code)
	}
	eps := inv["endpoints"].([]any)
	if len(eps) != 1 {
		t.Fatalf("endpoints: %v", eps)
	}
	e := eps[0].(map[string]any)
	if e["path"] != "/users/7" || e["count"] != 2.0 || e["errors"] != 1.0 || e["last_status"] != 503.0 ||
		e["first_seen"] != "2026-11-23T12:00:00.123456Z" || e["last_seen"] != "2026-11-23T12:00:01.123456Z" {
		t.Fatalf("row: %v", e)
	}
	if code, _ := get("GET", "/nope"); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
	if code, _ := get("POST", "/inventory/seen"); code != 405 {
		t.Fatalf("wrong method: %d", code)
	}
	if code, m := get("GET", "/stats"); code != 200 || m["calls"] != 2.0 {
		t.Fatalf("stats: %d %v", code, m)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSeenTableIsBounded(t *testing.T) {
	s := NewSeenTable(3)
	c := &parser.Call{Method: []byte("GET"), GRPCStatus: -1}
	for i := 0; i < 10; i++ {
		c.Path = []byte{'/', byte('a' + i)}
		s.Observe(c)
	}
	rows, of := s.Snapshot()
	if len(rows) != 3 || of != 7 {
		t.Fatalf("rows %d overflow %d", len(rows), of)
	}
	c.Path = []byte("/a")
	if n := testing.AllocsPerRun(100, func() { s.Observe(c) }); n != 0 {
		t.Fatalf("%v allocs observing a known key", n)
	}
}
