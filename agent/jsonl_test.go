package agent

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/apisonar/apisonar/parser"
)

func sampleCall() *parser.Call {
	start := time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.UTC).UnixNano()
	return &parser.Call{
		Protocol: parser.ProtoHTTP1,
		Conn: &parser.ConnInfo{
			Client: netip.MustParseAddrPort("[::ffff:127.0.0.1]:51000"),
			Server: netip.MustParseAddrPort("127.0.0.1:8080"),
			PID:    42, Comm: "python3",
		},
		Start: start, End: start + 2_500_000,
		Method: []byte("GET"), Host: []byte("localhost:8080"), Path: []byte("/users/7"),
		Status: 200, GRPCStatus: -1, ReqBytes: 0, RespBytes: 17,
	}
}

func TestCallJSONMatchesContract(t *testing.T) {
	b := AppendCallJSON(nil, sampleCall(), "/users/{id}")
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	want := map[string]any{
		"type": "call", "time": "2026-11-23T12:00:00.123456Z", "protocol": "http/1.1",
		"method": "GET", "host": "localhost:8080", "path": "/users/7", "route": "/users/{id}",
		"status": 200.0, "duration_ms": 2.5, "request_bytes": 0.0, "response_bytes": 17.0,
		"client":  map[string]any{"address": "127.0.0.1", "port": 51000.0},
		"server":  map[string]any{"address": "127.0.0.1", "port": 8080.0},
		"process": map[string]any{"pid": 42.0, "name": "python3"},
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("got  %s\nwant %s", gb, wb)
	}
}

func TestCallJSONEscapesHostileBytes(t *testing.T) {
	c := sampleCall()
	c.Path = []byte("/a\"b\\c\n\x00\xff\xfe<script>\u2028")
	c.Host = []byte("h\r\n{\"type\":\"finding\"}")
	c.Conn.Comm = "evil\"\n"
	b := AppendCallJSON(nil, c, "")
	if bytes.IndexByte(b, '\n') >= 0 {
		t.Fatalf("raw newline in line: %s", b)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	if got["path"] != "/a\"b\\c\n\x00\ufffd\ufffd<script>\u2028" {
		t.Fatalf("path round trip: %q", got["path"])
	}
	if got["type"] != "call" {
		t.Fatalf("type overwritten")
	}
}

func TestCallJSONNoAllocs(t *testing.T) {
	c := sampleCall()
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = AppendCallJSON(buf[:0], c, "/users/{id}") }); n != 0 {
		t.Fatalf("%v allocs per call line", n)
	}
}

// chunkRecorder records each Write the JSONL writer makes downstream.
type chunkRecorder struct{ chunks [][]byte }

func (r *chunkRecorder) Write(p []byte) (int, error) {
	r.chunks = append(r.chunks, append([]byte(nil), p...))
	return len(p), nil
}

// TestJSONLWritesWholeLines: every write that leaves the buffer ends at a
// line's end, so a killed agent never leaves half a line behind.
func TestJSONLWritesWholeLines(t *testing.T) {
	rec := &chunkRecorder{}
	w := NewJSONLWriter(rec)
	c := sampleCall()
	big := bytes.Repeat([]byte("x"), 70<<10)
	for i := 0; i < 2000; i++ {
		w.WriteCall(c, "/users/{id}")
		if i%500 == 0 {
			w.WriteRaw([]byte(`{"type":"finding","summary":"` + string(big[:i*40]) + `"}`))
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.chunks) < 2 {
		t.Fatalf("%d downstream writes; the test needs the buffer to fill", len(rec.chunks))
	}
	var lines int
	for i, ch := range rec.chunks {
		if len(ch) == 0 || ch[len(ch)-1] != '\n' {
			t.Fatalf("write %d of %d ends mid-line (%d bytes)", i, len(rec.chunks), len(ch))
		}
		lines += bytes.Count(ch, []byte("\n"))
	}
	if lines != 2004 {
		t.Fatalf("%d lines, want 2004", lines)
	}
}
