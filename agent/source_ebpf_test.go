package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/apisonar/apisonar/bpf"
	"github.com/apisonar/apisonar/parser"
	"github.com/apisonar/apisonar/parser/http1"
)

// op is one thing the tracker asked of a connection's parser.
type op struct {
	conn   uint64
	what   string // feed, gap, close
	dir    parser.Direction
	data   string
	n      int
	client netip.AddrPort
	server netip.AddrPort
	pid    uint32
	comm   string
	side   parser.Side
}

func (o op) String() string {
	return fmt.Sprintf("%d %s %s %q n=%d %s->%s pid=%d comm=%s side=%s", o.conn, o.what, o.dir, o.data, o.n, o.client, o.server, o.pid, o.comm, o.side)
}

// spyParser records what it is fed.
type spyParser struct {
	info *parser.ConnInfo
	ops  *[]op
}

func (p *spyParser) add(o op) {
	o.conn, o.client, o.server, o.pid, o.comm, o.side = p.info.ID, p.info.Client, p.info.Server, p.info.PID, p.info.Comm, p.info.Side
	*p.ops = append(*p.ops, o)
}

func (p *spyParser) Feed(dir parser.Direction, ts int64, data []byte) {
	p.add(op{what: "feed", dir: dir, data: string(data)})
}

func (p *spyParser) Gap(dir parser.Direction, ts int64, n int) {
	p.add(op{what: "gap", dir: dir, n: n})
}

func (p *spyParser) Close(ts int64) { p.add(op{what: "close"}) }

func spySource(ops *[]op) *EBPFSource {
	factory := func(proto parser.Protocol, info *parser.ConnInfo, emit parser.Emitter) parser.StreamParser {
		return &spyParser{info: info, ops: ops}
	}
	trk := NewTracker(TrackerOptions{}, factory, parser.EmitFunc(func(*parser.Call) {}))
	return NewEBPFSource(nil, trk, EBPFSourceOptions{}, nil)
}

var (
	srvAddr = netip.MustParseAddrPort("10.0.0.1:8080")
	cliAddr = netip.MustParseAddrPort("10.0.0.2:40000")
)

// rec builds a data record as the kernel would send it from one socket.
func rec(conn uint64, role bpf.Role, dir bpf.Dir, seq uint32, payload string) bpf.Record {
	r := bpf.Record{
		Kind: bpf.KindData, ConnID: conn, Time: 1_000, PID: 42, Role: role, Dir: dir,
		Proto: bpf.ProtoHTTP1, Seq: seq, Total: uint32(len(payload)), Payload: []byte(payload),
	}
	copy(r.Comm[:], "server")
	if role == bpf.RoleServer {
		r.Local, r.Remote = srvAddr, cliAddr
	} else {
		r.Local, r.Remote = cliAddr, srvAddr
	}
	return r
}

const (
	getReq  = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	okResp  = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	postReq = "POST /up HTTP/1.1\r\nContent-Length: 100\r\n\r\n"
)

func TestEBPFSourceHandle(t *testing.T) {
	truncated := rec(1, bpf.RoleClient, bpf.Egress, 0, postReq+"0123456789")
	truncated.Total = uint32(len(postReq) + 100)
	truncated.Truncated = true

	tests := []struct {
		name string
		recs []bpf.Record
		want []string
	}{{
		name: "server_socket_ingress_is_the_request",
		recs: []bpf.Record{rec(1, bpf.RoleServer, bpf.Ingress, 0, getReq), rec(1, bpf.RoleServer, bpf.Egress, 0, okResp)},
		want: []string{
			fmt.Sprintf("1 feed client %q n=0 %s->%s pid=42 comm=server side=server", getReq, cliAddr, srvAddr),
			fmt.Sprintf("1 feed server %q n=0 %s->%s pid=42 comm=server side=server", okResp, cliAddr, srvAddr),
		},
	}, {
		name: "client_socket_egress_is_the_request",
		recs: []bpf.Record{rec(2, bpf.RoleClient, bpf.Egress, 0, getReq), rec(2, bpf.RoleClient, bpf.Ingress, 0, okResp)},
		want: []string{
			fmt.Sprintf("2 feed client %q n=0 %s->%s pid=42 comm=server side=client", getReq, cliAddr, srvAddr),
			fmt.Sprintf("2 feed server %q n=0 %s->%s pid=42 comm=server side=client", okResp, cliAddr, srvAddr),
		},
	}, {
		name: "bytes_beyond_the_cap_become_a_gap_of_their_size",
		recs: []bpf.Record{truncated},
		want: []string{
			fmt.Sprintf("1 feed client %q n=0 %s->%s pid=42 comm=server side=client", postReq+"0123456789", cliAddr, srvAddr),
			fmt.Sprintf("1 gap client \"\" n=90 %s->%s pid=42 comm=server side=client", cliAddr, srvAddr),
		},
	}, {
		name: "a_hole_in_the_sequence_is_a_gap_of_unknown_size",
		recs: []bpf.Record{
			rec(3, bpf.RoleServer, bpf.Ingress, 0, getReq),
			rec(3, bpf.RoleServer, bpf.Ingress, 2, getReq),
			rec(3, bpf.RoleServer, bpf.Egress, 0, okResp),
		},
		want: []string{
			fmt.Sprintf("3 feed client %q n=0 %s->%s pid=42 comm=server side=server", getReq, cliAddr, srvAddr),
			fmt.Sprintf("3 gap client \"\" n=0 %s->%s pid=42 comm=server side=server", cliAddr, srvAddr),
			fmt.Sprintf("3 feed client %q n=0 %s->%s pid=42 comm=server side=server", getReq, cliAddr, srvAddr),
			fmt.Sprintf("3 feed server %q n=0 %s->%s pid=42 comm=server side=server", okResp, cliAddr, srvAddr),
		},
	}, {
		name: "close_record_closes_the_connection",
		recs: []bpf.Record{
			rec(4, bpf.RoleServer, bpf.Ingress, 0, getReq),
			{Kind: bpf.KindClose, ConnID: 4, Time: 2_000},
		},
		want: []string{
			fmt.Sprintf("4 feed client %q n=0 %s->%s pid=42 comm=server side=server", getReq, cliAddr, srvAddr),
			fmt.Sprintf("4 close client \"\" n=0 %s->%s pid=42 comm=server side=server", cliAddr, srvAddr),
		},
	}, {
		name: "unknown_role_that_sent_a_response_is_swapped_to_server",
		recs: []bpf.Record{rec(5, bpf.RoleUnknown, bpf.Egress, 0, okResp)},
		want: []string{
			// The tracker swaps the ends: the egress bytes become the
			// server's and the local address the server's.
			fmt.Sprintf("5 feed server %q n=0 %s->%s pid=42 comm=server side=", okResp, srvAddr, cliAddr),
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ops []op
			s := spySource(&ops)
			for i := range tc.recs {
				s.handle(&tc.recs[i])
			}
			var got []string
			for _, o := range ops {
				got = append(got, o.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestEBPFSourceInternsProcessNames(t *testing.T) {
	var ops []op
	s := spySource(&ops)
	a := rec(1, bpf.RoleServer, bpf.Ingress, 0, getReq)
	b := rec(2, bpf.RoleServer, bpf.Ingress, 0, getReq)
	s.handle(&a)
	s.handle(&b)
	if len(ops) != 2 || ops[0].comm != "server" || ops[1].comm != "server" {
		t.Fatalf("ops: %v", ops)
	}
	// Same pid after exec: a new name must replace the cached one.
	c := rec(3, bpf.RoleServer, bpf.Ingress, 0, getReq)
	copy(c.Comm[:], "other\x00")
	s.handle(&c)
	if got := ops[2].comm; got != "other" {
		t.Errorf("after exec: comm %q, want other", got)
	}
}

// httpSource is a source wired to the real HTTP/1 parser.
func httpSource(calls *int) *EBPFSource {
	var stats parser.Stats
	factory := func(proto parser.Protocol, info *parser.ConnInfo, emit parser.Emitter) parser.StreamParser {
		if proto != parser.ProtoHTTP1 {
			return nil
		}
		return http1.New(info, emit, &stats, parser.Options{})
	}
	trk := NewTracker(TrackerOptions{}, factory, parser.EmitFunc(func(*parser.Call) { *calls++ }))
	return NewEBPFSource(nil, trk, EBPFSourceOptions{}, nil)
}

const (
	benchReq = "GET /api/v1/users/12345/orders?limit=10 HTTP/1.1\r\nHost: shop.example.com\r\n" +
		"User-Agent: curl/8.5.0\r\nAccept: application/json\r\nAuthorization: Bearer abc.def.ghi\r\n" +
		"X-Request-Id: 7f3c9a2e-1b4d-4c8e-9f0a-2d5e6b7c8d9e\r\nAccept-Encoding: gzip\r\n\r\n"
	benchResp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\n" +
		"Date: Mon, 23 Nov 2026 11:00:00 GMT\r\n\r\n{\"orders\":[],\"total\":0001}"
)

func TestEBPFSourceWarmRecordToCallDoesNotAllocate(t *testing.T) {
	var calls int
	s := httpSource(&calls)
	req := rec(1, bpf.RoleServer, bpf.Ingress, 0, benchReq)
	resp := rec(1, bpf.RoleServer, bpf.Egress, 0, benchResp)
	step := func() {
		s.handle(&req)
		s.handle(&resp)
		req.Seq++
		resp.Seq++
	}
	step()
	if calls != 1 {
		t.Fatalf("calls after one exchange: %d, want 1", calls)
	}
	if n := testing.AllocsPerRun(100, step); n != 0 {
		t.Errorf("allocations per record pair: %v, want 0", n)
	}
	if calls != 102 {
		t.Errorf("calls: %d, want 102", calls)
	}
}

// BenchmarkEBPFRecordToCall: two ring records (request, response) through
// the source, the tracker and the real HTTP/1 parser into one call.
func BenchmarkEBPFRecordToCall(b *testing.B) {
	var calls int
	s := httpSource(&calls)
	req := rec(1, bpf.RoleServer, bpf.Ingress, 0, benchReq)
	resp := rec(1, bpf.RoleServer, bpf.Egress, 0, benchResp)
	b.SetBytes(int64(len(benchReq) + len(benchResp)))
	b.ReportAllocs()
	for b.Loop() {
		s.handle(&req)
		s.handle(&resp)
		req.Seq++
		resp.Seq++
	}
	if calls < b.N {
		b.Fatalf("calls %d < iterations %d", calls, b.N)
	}
}
