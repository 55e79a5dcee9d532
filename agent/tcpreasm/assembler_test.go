package tcpreasm

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// recSink writes what the Assembler does as one line per event, so that a
// case can state the expected story in plain words.
type recSink struct {
	events []string
	infos  map[uint64]parser.ConnInfo
	sweeps int
}

func (r *recSink) Data(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, data []byte) {
	r.note(id, info)
	r.events = append(r.events, fmt.Sprintf("%d %s %q", id, dir, data))
}

func (r *recSink) Gap(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, n int) {
	r.note(id, info)
	r.events = append(r.events, fmt.Sprintf("%d %s gap %d", id, dir, n))
}

func (r *recSink) Close(id uint64, ts int64) {
	r.events = append(r.events, fmt.Sprintf("%d close", id))
}

func (r *recSink) Sweep(now int64) { r.sweeps++ }

func (r *recSink) note(id uint64, info *parser.ConnInfo) {
	if r.infos == nil {
		r.infos = map[uint64]parser.ConnInfo{}
	}
	if _, ok := r.infos[id]; !ok {
		r.infos[id] = *info
	}
}

var (
	cli = netip.MustParseAddrPort("10.0.0.1:40000")
	srv = netip.MustParseAddrPort("10.0.0.2:80")
)

// pkt is one segment in a case: who sent it, flags, relative sequence
// number (ISN 1000 for the client, 5000 for the server) and payload.
type pkt struct {
	fromServer bool
	flags      string // any of S A F R
	seq        uint32 // relative: 0 is the SYN
	ack        uint32 // relative to the peer's ISN
	data       string
	missing    int
	at         int64 // ms of packet time
}

const cliISN, srvISN = 1000, 5000

func (p pkt) segment() Segment {
	s := Segment{Src: cli, Dst: srv, Seq: cliISN + p.seq, Ack: srvISN + p.ack, Payload: []byte(p.data), Missing: p.missing}
	if p.fromServer {
		s.Src, s.Dst = srv, cli
		s.Seq, s.Ack = srvISN+p.seq, cliISN+p.ack
	}
	for _, c := range p.flags {
		switch c {
		case 'S':
			s.Flags |= FlagSYN
		case 'A':
			s.Flags |= FlagACK
		case 'F':
			s.Flags |= FlagFIN
		case 'R':
			s.Flags |= FlagRST
		}
	}
	return s
}

func c(flags string, seq, ack uint32, data string) pkt {
	return pkt{flags: flags, seq: seq, ack: ack, data: data}
}

func s(flags string, seq, ack uint32, data string) pkt {
	return pkt{fromServer: true, flags: flags, seq: seq, ack: ack, data: data}
}

func at(ms int64, p pkt) pkt { p.at = ms; return p }

var handshake = []pkt{c("S", 0, 0, ""), s("SA", 0, 1, ""), c("A", 1, 1, "")}

func run(opts Options, pkts []pkt) (*recSink, *Assembler) {
	sink := &recSink{}
	a := NewAssembler(opts, sink)
	for _, p := range pkts {
		seg := p.segment()
		a.Segment(1e12+p.at*1e6, &seg)
	}
	return sink, a
}

func join(parts ...[]pkt) []pkt {
	var out []pkt
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestAssembler(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		pkts []pkt
		want []string
	}{
		{
			name: "in_order_exchange_closed_by_both_fins",
			pkts: join(handshake, []pkt{
				c("A", 1, 1, "GET / HTTP/1.1\r\n\r\n"),
				s("A", 1, 19, "HTTP/1.1 200 OK\r\n\r\n"),
				c("AF", 19, 20, ""),
				s("AF", 20, 20, ""),
				c("A", 20, 21, ""),
			}),
			want: []string{
				`1 client "GET / HTTP/1.1\r\n\r\n"`,
				`1 server "HTTP/1.1 200 OK\r\n\r\n"`,
				`1 close`,
			},
		},
		{
			name: "early_segment_held_until_hole_fills",
			pkts: join(handshake, []pkt{
				c("A", 5, 1, "EFGH"),
				c("A", 1, 1, "ABCD"),
			}),
			want: []string{`1 client "ABCD"`, `1 client "EFGH"`},
		},
		{
			name: "retransmission_is_dropped",
			pkts: join(handshake, []pkt{
				c("A", 1, 1, "ABCD"),
				c("A", 1, 1, "ABCD"),
				c("A", 5, 1, "EF"),
			}),
			want: []string{`1 client "ABCD"`, `1 client "EF"`},
		},
		{
			name: "overlap_keeps_first_copy_and_new_tail",
			pkts: join(handshake, []pkt{
				c("A", 1, 1, "ABCD"),
				c("A", 3, 1, "xxEF"),
			}),
			want: []string{`1 client "ABCD"`, `1 client "EF"`},
		},
		{
			name: "overlapping_early_segments_deliver_each_byte_once",
			pkts: join(handshake, []pkt{
				c("A", 5, 1, "EFGH"),
				c("A", 7, 1, "ghIJ"),
				c("A", 1, 1, "ABCD"),
			}),
			want: []string{`1 client "ABCD"`, `1 client "EFGH"`, `1 client "IJ"`},
		},
		{
			name: "hole_declared_lost_when_peer_acks_past_it",
			pkts: join(handshake, []pkt{
				c("A", 1, 1, "ABCD"),
				c("A", 9, 1, "IJ"), // "EFGH" never captured
				s("A", 1, 11, ""),  // but the server has it
			}),
			want: []string{`1 client "ABCD"`, `1 client gap 4`, `1 client "IJ"`},
		},
		{
			name: "hole_declared_lost_after_reorder_timeout",
			opts: Options{ReorderTimeout: 100e6},
			pkts: join(handshake, []pkt{
				c("A", 1, 1, "ABCD"),
				at(10, c("A", 9, 1, "IJ")),
				at(500, c("A", 11, 1, "KL")),
			}),
			want: []string{`1 client "ABCD"`, `1 client gap 4`, `1 client "IJ"`, `1 client "KL"`},
		},
		{
			name: "hole_declared_lost_when_buffer_bound_hit",
			opts: Options{MaxBufferedPerDir: 4},
			pkts: join(handshake, []pkt{
				c("A", 3, 1, "CD"),
				c("A", 7, 1, "GHI"),
			}),
			want: []string{`1 client gap 2`, `1 client "CD"`},
		},
		{
			name: "segment_count_bound_also_declares_hole",
			opts: Options{MaxSegmentsPerDir: 2},
			pkts: join(handshake, []pkt{
				c("A", 3, 1, "C"),
				c("A", 5, 1, "E"),
				c("A", 7, 1, "G"),
			}),
			want: []string{`1 client gap 2`, `1 client "C"`},
		},
		{
			name: "snaplen_cut_payload_becomes_gap",
			pkts: join(handshake, []pkt{
				{flags: "A", seq: 1, ack: 1, data: "ABCD", missing: 6},
				c("A", 11, 1, "KL"),
			}),
			want: []string{`1 client "ABCD"`, `1 client gap 6`, `1 client "KL"`},
		},
		{
			name: "joined_mid_connection_starts_at_first_payload",
			pkts: []pkt{
				s("A", 700, 300, "HTTP/1.1 200 OK\r\n\r\n"),
				c("A", 300, 719, "GET /b HTTP/1.1\r\n\r\n"),
			},
			want: []string{
				`1 server "HTTP/1.1 200 OK\r\n\r\n"`,
				`1 client "GET /b HTTP/1.1\r\n\r\n"`,
			},
		},
		{
			name: "rst_flushes_held_bytes_and_closes",
			pkts: join(handshake, []pkt{
				c("A", 5, 1, "EF"),
				s("R", 1, 0, ""),
				c("A", 7, 1, "late"),
			}),
			want: []string{`1 client gap 4`, `1 client "EF"`, `1 close`, `2 client "late"`},
		},
		{
			name: "new_syn_on_same_tuple_starts_new_flow",
			pkts: join(handshake, []pkt{
				c("A", 1, 1, "one"),
				c("S", 90000, 0, ""),
				c("A", 90001, 1, "two"),
			}),
			want: []string{`1 client "one"`, `1 close`, `2 client "two"`},
		},
		{
			name: "bare_ack_of_unknown_flow_is_ignored",
			pkts: []pkt{c("A", 1, 1, ""), c("AF", 1, 1, "")},
			want: nil,
		},
		{
			name: "idle_flow_expires_on_packet_time",
			opts: Options{IdleTimeout: 1e9},
			pkts: join(handshake, []pkt{
				c("A", 1, 1, "x"),
				at(5000, pkt{flags: "S", seq: 0}),
			}),
			// The late SYN is the same tuple: first the idle flow
			// expires, then the SYN opens a fresh one.
			want: []string{`1 client "x"`, `1 close`},
		},
		{
			name: "sequence_numbers_wrap_around",
			pkts: []pkt{
				c("A", 0xFFFFFFFE-cliISN, 1, "AB"),
				c("A", 0xFFFFFFFE-cliISN+4, 1, "EF"),
				c("A", 0xFFFFFFFE-cliISN+2, 1, "CD"),
			},
			want: []string{`1 client "AB"`, `1 client "CD"`, `1 client "EF"`},
		},
		{
			name: "fin_waits_for_held_bytes_before_it",
			pkts: join(handshake, []pkt{
				c("AF", 3, 1, "CD"),
				c("A", 1, 1, "AB"),
				s("AF", 1, 6, ""),
			}),
			want: []string{`1 client "AB"`, `1 client "CD"`, `1 close`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink, _ := run(tc.opts, tc.pkts)
			if got := strings.Join(sink.events, "\n"); got != strings.Join(tc.want, "\n") {
				t.Errorf("events:\n%s\nwant:\n%s", got, strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestAssemblerNamesClientAndServer(t *testing.T) {
	cases := []struct {
		name       string
		first      pkt
		wantClient netip.AddrPort
	}{
		{"syn_sender_is_client", c("S", 0, 0, ""), cli},
		{"syn_ack_sender_is_server", s("SA", 0, 1, ""), cli},
		{"no_handshake_well_known_port_is_server", s("A", 1, 1, "x"), cli},
		{"no_handshake_even_from_client", c("A", 1, 1, "x"), cli},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recSink{}
			a := NewAssembler(Options{}, sink)
			seg := tc.first.segment()
			a.Segment(1, &seg)
			more := c("A", 1, 1, "y")
			if tc.first.fromServer {
				more = s("A", 1, 1, "y")
			}
			seg = more.segment()
			a.Segment(2, &seg)
			info, ok := sink.infos[1]
			if !ok {
				t.Fatal("no data reached the sink")
			}
			if info.Client != tc.wantClient {
				t.Errorf("client %v, want %v", info.Client, tc.wantClient)
			}
		})
	}
}

func TestServerPortGuess(t *testing.T) {
	cases := []struct {
		a, b      uint16
		aIsServer bool
	}{
		{80, 40000, true},
		{40000, 443, false},
		{8080, 51234, true},
		{51234, 18081, false},
		{1024, 1025, true},
		{60000, 50000, false},
	}
	for _, tc := range cases {
		if got := serverFirst(tc.a, tc.b); got != tc.aIsServer {
			t.Errorf("serverFirst(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.aIsServer)
		}
	}
}

func TestAssemblerFlowCapEvictsLeastRecent(t *testing.T) {
	sink := &recSink{}
	a := NewAssembler(Options{MaxFlows: 2}, sink)
	for i := range 3 {
		seg := Segment{
			Src: netip.AddrPortFrom(cli.Addr(), uint16(40000+i)), Dst: srv,
			Seq: 1, Flags: FlagACK, Payload: []byte("x"),
		}
		a.Segment(int64(i+1), &seg)
	}
	st := a.Stats()
	if st.Open != 2 || st.Evicted != 1 {
		t.Fatalf("open %d evicted %d, want 2 and 1", st.Open, st.Evicted)
	}
	if sink.events[2] != "1 close" {
		t.Errorf("the oldest flow should be closed first; events %q", sink.events)
	}
}

func TestAssemblerTotalBufferBound(t *testing.T) {
	sink := &recSink{}
	a := NewAssembler(Options{MaxBufferedTotal: 100, MaxBufferedPerDir: 1 << 20}, sink)
	payload := strings.Repeat("z", 40)
	for i := range 10 {
		src := netip.AddrPortFrom(cli.Addr(), uint16(40000+i))
		first := Segment{Src: src, Dst: srv, Seq: 1, Flags: FlagACK, Payload: []byte("a")}
		a.Segment(int64(i), &first)
		// A hole of one byte, then 40 bytes that must wait.
		early := Segment{Src: src, Dst: srv, Seq: 3, Flags: FlagACK, Payload: []byte(payload)}
		a.Segment(int64(i), &early)
		if b := a.Stats().Buffered; b > 100 {
			t.Fatalf("after flow %d: %d bytes buffered, bound 100", i, b)
		}
	}
	if a.Stats().Gaps == 0 {
		t.Error("shedding the buffer must declare the holes as gaps")
	}
}

func TestAssemblerFlushDeliversHeldBytes(t *testing.T) {
	sink, a := run(Options{}, join(handshake, []pkt{c("A", 3, 1, "CD")}))
	a.Flush(2e12)
	want := []string{`1 client gap 2`, `1 client "CD"`, `1 close`}
	if got := strings.Join(sink.events, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if st := a.Stats(); st.Open != 0 || st.Buffered != 0 {
		t.Errorf("after Flush: %+v", st)
	}
}

// nopSink drops everything.
type nopSink struct{}

func (nopSink) Data(uint64, *parser.ConnInfo, parser.Direction, int64, []byte) {}
func (nopSink) Gap(uint64, *parser.ConnInfo, parser.Direction, int64, int)     {}
func (nopSink) Close(uint64, int64)                                            {}
func (nopSink) Sweep(int64)                                                    {}

// TestAssemblerHostileManyConnections opens a million one-packet
// connections: the table never holds more than MaxFlows.
func TestAssemblerHostileManyConnections(t *testing.T) {
	const n = 1_000_000
	a := NewAssembler(Options{MaxFlows: 10000}, nopSink{})
	payload := []byte("G")
	for i := range n {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)
		seg := Segment{Src: src, Dst: srv, Seq: 7, Flags: FlagACK, Payload: payload}
		a.Segment(int64(i), &seg)
		if i%1000 == 0 && a.Stats().Open > 10000 {
			t.Fatalf("%d flows open, cap 10000", a.Stats().Open)
		}
	}
	st := a.Stats()
	if st.Open != 10000 || st.Evicted != n-10000 {
		t.Errorf("open %d evicted %d", st.Open, st.Evicted)
	}
}

// TestAssemblerHostileOverlaps sends, behind a hole that never fills, a
// flood of overlapping segments: what is held stays under the bounds.
func TestAssemblerHostileOverlaps(t *testing.T) {
	opts := Options{MaxBufferedPerDir: 64 << 10, MaxSegmentsPerDir: 256}
	a := NewAssembler(opts, nopSink{})
	first := Segment{Src: cli, Dst: srv, Seq: 1, Flags: FlagACK, Payload: []byte("a")}
	a.Segment(1, &first)
	data := make([]byte, 1400)
	for i := range 200_000 {
		// Starts wander over a small window so segments overlap heavily;
		// byte 2 (the hole) never comes.
		seg := Segment{Src: cli, Dst: srv, Seq: 3 + uint32(i*7919)%4000, Flags: FlagACK, Payload: data[:1+i%1400]}
		a.Segment(1, &seg)
		st := a.Stats()
		if st.Buffered > opts.MaxBufferedPerDir+1400 {
			t.Fatalf("after %d segments: %d bytes held", i, st.Buffered)
		}
	}
	if a.Stats().Gaps == 0 {
		t.Error("the hole should have been declared lost")
	}
}
