package agent

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// replayCalls replays a capture through a real Tracker and the agent's
// parsers and returns the calls as JSON lines.
func replayCalls(t *testing.T, factory ParserFactory, path string) (string, ReplaySummary) {
	t.Helper()
	var out bytes.Buffer
	w := NewJSONLWriter(&out)
	tr := NewTracker(TrackerOptions{}, factory, parser.EmitFunc(func(c *parser.Call) { w.WriteCall(c, "") }))
	sum, err := ReplayFile(context.Background(), path, tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String(), sum
}

// agentFactory is the factory the replay command uses.
func agentFactory(t *testing.T, proto parser.Protocol) ParserFactory {
	t.Helper()
	f := NewParserFactory(parser.Options{MaxBodyPrefix: 256}, &parser.Stats{})
	if f(proto, &parser.ConnInfo{}, parser.EmitFunc(func(*parser.Call) {})) == nil {
		t.Fatalf("NewParserFactory builds no %s parser", proto)
	}
	return f
}

// TestReplayCalls compares the calls of each HTTP/1.1 capture with a
// golden JSON-lines file. The goldens of the recorded captures were checked
// by hand against `tshark -r FILE -Y http` (methods, paths, statuses, body
// sizes); those of the damaged copies against what the damage allows.
func TestReplayCalls(t *testing.T) {
	factory := agentFactory(t, parser.ProtoHTTP1)
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			got, _ := replayCalls(t, factory, f)
			golden(t, filepath.Join(pcapDir, "calls", name+".jsonl"), got)
		})
	}
}

// TestReplayGRPCCalls replays the gRPC corpus through the agent's parsers:
// each capture holds one call of greet.GreetService, answered with
// grpc-status 0 (names and statuses read with `tshark -d
// tcp.port==50051,http2 -Y http2.type==1`).
func TestReplayGRPCCalls(t *testing.T) {
	factory := agentFactory(t, parser.ProtoHTTP2)
	cases := map[string]string{
		"unary.pcapng":            "/greet.GreetService/Greet",
		"server-streaming.pcapng": "/greet.GreetService/GreetManyTimes",
		"client-streaming.pcapng": "/greet.GreetService/LongGreet",
		"bidi-streaming.pcapng":   "/greet.GreetService/GreetEveryone",
	}
	for file, path := range cases {
		t.Run(file, func(t *testing.T) {
			var calls []*parser.Call
			tr := NewTracker(TrackerOptions{}, factory, parser.EmitFunc(func(c *parser.Call) { calls = append(calls, c.Clone()) }))
			if _, err := ReplayFile(context.Background(), filepath.Join(grpcCorpus, file), tr, nil); err != nil {
				t.Fatal(err)
			}
			if len(calls) != 1 {
				t.Fatalf("%d calls, want 1", len(calls))
			}
			c := calls[0]
			if c.Protocol != parser.ProtoGRPC || string(c.Method) != "POST" || string(c.Path) != path ||
				string(c.Host) != "localhost:50051" || c.Status != 200 || c.GRPCStatus != 0 {
				t.Errorf("got %s %s %s host %s status %d grpc-status %d", c.Protocol, c.Method, c.Path, c.Host, c.Status, c.GRPCStatus)
			}
			if c.Conn == nil || c.Conn.Server.Port() != 50051 {
				t.Errorf("server %v, want port 50051", c.Conn)
			}
		})
	}
}

// TestReplaySyntheticCalls replays a generated capture and expects exactly
// the calls and status codes the generator wrote.
func TestReplaySyntheticCalls(t *testing.T) {
	factory := agentFactory(t, parser.ProtoHTTP1)
	path := filepath.Join(t.TempDir(), "synthetic.pcap")
	want := writeSynthetic(t, path, 1000)
	got := map[int]int64{}
	var n int64
	tr := NewTracker(TrackerOptions{}, factory, parser.EmitFunc(func(c *parser.Call) {
		n++
		got[c.Status]++
		if c.Flags != 0 {
			t.Errorf("call %s %s flagged %b", c.Method, c.Path, c.Flags)
		}
	}))
	sum, err := ReplayFile(context.Background(), path, tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != want.Calls || sum.Packets != uint64(want.Packets) || sum.TCPConns != uint64(want.Conns) || sum.Gaps != 0 {
		t.Errorf("%d calls, %d packets, %d connections, %d gaps; generator wrote %d calls, %d packets, %d connections",
			n, sum.Packets, sum.TCPConns, sum.Gaps, want.Calls, want.Packets, want.Conns)
	}
	for code, c := range want.Statuses {
		if got[code] != c {
			t.Errorf("status %d: %d calls, generator wrote %d", code, got[code], c)
		}
	}
}
