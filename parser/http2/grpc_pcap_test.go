package http2

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/apisonar/apisonar/parser"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// feedCapture replays the TCP connections to port of a loopback capture
// into one parser each (in order, dropping retransmissions; loopback does
// not reorder) and returns the calls.
func feedCapture(t *testing.T, file string, port layers.TCPPort) []*parser.Call {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	type conn struct {
		p    *Parser
		next [2]uint32
		seen [2]bool
	}
	conns := map[layers.TCPPort]*conn{}
	var col collector
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.NoCopy)
		tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil || (tcp.SrcPort != port && tcp.DstPort != port) {
			continue
		}
		dir, client := parser.FromClient, tcp.SrcPort
		if tcp.SrcPort == port {
			dir, client = parser.FromServer, tcp.DstPort
		}
		c := conns[client]
		if c == nil {
			c = &conn{p: New(&parser.ConnInfo{}, &col, new(parser.Stats), parser.Options{})}
			conns[client] = c
		}
		ts := ci.Timestamp.UnixNano()
		if tcp.SYN {
			c.next[dir], c.seen[dir] = tcp.Seq+1, true
			continue
		}
		if len(tcp.Payload) > 0 && c.seen[dir] && tcp.Seq == c.next[dir] {
			c.p.Feed(dir, ts, tcp.Payload)
			c.next[dir] += uint32(len(tcp.Payload))
		}
		if tcp.FIN || tcp.RST {
			c.p.Close(ts)
		}
	}
	for _, c := range conns {
		c.p.Close(1 << 62)
	}
	return col.calls
}

// TestGRPCCaptures reads the greet.GreetService captures. The expected
// calls and message counts were read from the same files with tshark's
// HTTP/2 and gRPC dissectors.
func TestGRPCCaptures(t *testing.T) {
	root := corpusDir(t, "grpc-pcap")
	cases := []struct {
		file, path  string
		reqM, respM int32
	}{
		{"unary.pcapng", "/greet.GreetService/Greet", 1, 1},
		{"client-streaming.pcapng", "/greet.GreetService/LongGreet", 3, 1},
		{"server-streaming.pcapng", "/greet.GreetService/GreetManyTimes", 1, 10},
		{"bidi-streaming.pcapng", "/greet.GreetService/GreetEveryone", 3, 3},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			calls := feedCapture(t, filepath.Join(root, tc.file), 50051)
			if len(calls) != 1 {
				t.Fatalf("%d calls", len(calls))
			}
			c := calls[0]
			if c.Protocol != parser.ProtoGRPC || string(c.Method) != "POST" || string(c.Path) != tc.path ||
				string(c.Host) != "localhost:50051" || c.Status != 200 || c.GRPCStatus != 0 ||
				c.ReqMessages != tc.reqM || c.RespMessages != tc.respM || c.Flags != 0 || c.End <= c.Start {
				t.Errorf("got %+v", summarize(c))
			}
		})
	}
}
