package http2

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"

	"github.com/apisonar/apisonar/parser"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// unaryCall returns the bytes of one gRPC unary call on a connection whose
// tables are warm (the same call made before), each direction in one run.
func unaryCall(tb testing.TB) (prefix []piece, req, resp []byte) {
	c := newConv(tb, true)
	call := func(sid uint32) {
		c.headers(C, sid, false, ":method", "POST", ":scheme", "http", ":path", "/shop.v1.Cart/AddItem",
			":authority", "cart.shop.svc:50051", "content-type", "application/grpc", "user-agent", "grpc-go/1.85.0",
			"te", "trailers", "grpc-timeout", "999978u")
		c.data(C, sid, true, grpcMsg(false, bytes.Repeat([]byte{0x0a}, 40)))
		c.headers(S, sid, false, ":status", "200", "content-type", "application/grpc")
		c.data(S, sid, false, grpcMsg(false, bytes.Repeat([]byte{0x12}, 60)))
		c.headers(S, sid, true, "grpc-status", "0", "grpc-message", "")
	}
	for sid := uint32(1); sid <= 5; sid += 2 {
		call(sid)
	}
	n := len(c.pieces)
	call(7)
	for _, pc := range c.pieces[n:] {
		if pc.dir == C {
			req = append(req, pc.data...)
		} else {
			resp = append(resp, pc.data...)
		}
	}
	return c.pieces[:n], req, resp
}

type countEmit struct{ n int }

func (e *countEmit) Emit(c *parser.Call) { e.n++ }

// BenchmarkUnaryCall decodes and emits one warm gRPC unary call (HEADERS +
// DATA each way, trailers) per op.
func BenchmarkUnaryCall(b *testing.B) {
	prefix, req, resp := unaryCall(b)
	var e countEmit
	p := New(&parser.ConnInfo{}, &e, new(parser.Stats), parser.Options{})
	for i, pc := range prefix {
		p.Feed(pc.dir, int64(i), pc.data)
	}
	// The same stream id again and again: each call ends before the next.
	b.SetBytes(int64(len(req) + len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p.Feed(C, int64(i), req)
		p.Feed(S, int64(i), resp)
	}
	b.StopTimer()
	if e.n != 3+b.N {
		b.Fatalf("%d calls emitted for %d ops", e.n, b.N)
	}
}

// refillReader hands out one buffer, then EOF, until refilled.
type refillReader struct{ b []byte }

func (r *refillReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// BenchmarkUnaryCallXNet reads the same bytes with x/net's Framer and an
// hpack.Decoder per direction: the reference.
func BenchmarkUnaryCallXNet(b *testing.B) {
	prefix, req, resp := unaryCall(b)
	var rd [2]refillReader
	var fr [2]*http2.Framer
	var dec [2]*hpack.Decoder
	fields := 0
	for i := range fr {
		fr[i] = http2.NewFramer(nil, &rd[i])
		dec[i] = hpack.NewDecoder(4096, func(f hpack.HeaderField) { fields++ })
	}
	read := func(dir parser.Direction, data []byte) {
		rd[dir].b = data
		for {
			f, err := fr[dir].ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.HeadersFrame:
				if _, err := dec[dir].Write(f.HeaderBlockFragment()); err != nil {
					b.Fatal(err)
				}
			case *http2.ContinuationFrame:
				if _, err := dec[dir].Write(f.HeaderBlockFragment()); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	for _, pc := range prefix {
		data := pc.data
		if pc.dir == C {
			data = bytes.TrimPrefix(data, []byte(http2.ClientPreface))
		}
		read(pc.dir, data)
	}
	b.SetBytes(int64(len(req) + len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		read(C, req)
		read(S, resp)
	}
}

// TestUnaryCallAllocatesNothing guards the zero-allocation hot path.
func TestUnaryCallAllocatesNothing(t *testing.T) {
	prefix, req, resp := unaryCall(t)
	var e countEmit
	p := New(&parser.ConnInfo{}, &e, new(parser.Stats), parser.Options{MaxBodyPrefix: 64})
	for i, pc := range prefix {
		p.Feed(pc.dir, int64(i), pc.data)
	}
	allocs := testing.AllocsPerRun(200, func() {
		p.Feed(C, 1, req)
		p.Feed(S, 2, resp)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per warm unary call", allocs)
	}
	if e.n < 200 {
		t.Errorf("%d calls", e.n)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemoryOpenStreams holds 10,000 open streams over 100 connections (no
// response yet) and reports what they cost.
func TestMemoryOpenStreams(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("measures the heap")
	}
	const conns, perConn = 100, 100
	// Request headers a browser-like client sends, each stream unique.
	c := newConv(t, true)
	for i := range perConn {
		c.headers(C, uint32(2*i+1), false, append(get(fmt.Sprintf("/api/v1/items/%d?expand=all", i)),
			"authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "user-agent", "Mozilla/5.0 (X11; Linux x86_64)",
			"cookie", "session=abcdef0123456789", "content-type", "application/json")...)
		c.data(C, uint32(2*i+1), false, bytes.Repeat([]byte("b"), 100))
	}
	base := heapInUse()
	ps := make([]*Parser, conns)
	for i := range ps {
		ps[i] = New(&parser.ConnInfo{}, &countEmit{}, new(parser.Stats), parser.Options{MaxBodyPrefix: 64})
		for j, pc := range c.pieces {
			ps[i].Feed(pc.dir, int64(j), pc.data)
		}
	}
	used := heapInUse() - base
	open := 0
	for _, p := range ps {
		open += len(p.streams)
	}
	runtime.KeepAlive(ps)
	t.Logf("%d open streams over %d connections: %d bytes (%d per stream, %d per connection)",
		open, conns, used, used/uint64(open), used/conns)
	if open != conns*perConn {
		t.Fatalf("%d open streams", open)
	}
	if used > 64<<20 {
		t.Errorf("10,000 open streams hold %d bytes", used)
	}
}

// TestMemoryTableSizeBomb sends what a hostile client would to blow up a
// decoder: a dynamic table size update to 2^24, then header blocks full of
// the largest literals with incremental indexing, and SETTINGS asking for
// a huge table. The parser keeps its table at 64 KiB whatever is asked.
func TestMemoryTableSizeBomb(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("measures the heap")
	}
	c := newConv(t, true)
	c.settings(S, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 1 << 30})
	bomb := func(sid uint32, i int) []byte {
		var blk []byte
		blk = append(blk, 0x3f) // size update, 5-bit prefix, value 2^24
		blk = appendVarint(blk, 1<<24-31)
		blk = append(blk, 0x82, 0x86, 0x84) // GET http /
		for j := range 3 {
			blk = append(blk, 0x40) // literal with incremental indexing, new name
			name := fmt.Sprintf("x-bomb-%d-%d", i, j)
			blk = append(blk, byte(len(name)))
			blk = append(blk, name...)
			blk = append(blk, 0x7f)
			blk = appendVarint(blk, 15000-127)
			blk = append(blk, bytes.Repeat([]byte{'v'}, 15000)...)
		}
		return blk
	}
	var raw bytes.Buffer
	fr := http2.NewFramer(&raw, nil)
	sid := uint32(1)
	for i := range 200 {
		blk := bomb(sid, i)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: blk[:10000], EndStream: true}); err != nil {
			t.Fatal(err)
		}
		for rest := blk[10000:]; len(rest) > 0; {
			n := min(10000, len(rest))
			if err := fr.WriteContinuation(sid, n == len(rest), rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		sid += 2
	}
	st := new(parser.Stats)
	base := heapInUse()
	var e countEmit
	p := New(&parser.ConnInfo{}, &e, st, parser.Options{MaxStreams: 128})
	for _, pc := range c.pieces {
		p.Feed(pc.dir, 0, pc.data)
	}
	data := raw.Bytes()
	for len(data) > 0 {
		n := min(4096, len(data))
		p.Feed(C, 1, data[:n])
		data = data[n:]
	}
	used := heapInUse() - base
	runtime.KeepAlive(p)
	t.Logf("table-size bomb: %d bytes of header blocks, %d streams opened, heap held %d bytes, table %d bytes in %d entries, arena cap %d",
		raw.Len(), len(p.streams), used, p.dirs[C].dec.size, p.dirs[C].dec.live(), cap(p.dirs[C].dec.arena))
	if p.dirs[C].dec.size > hardTableCap || cap(p.dirs[C].dec.arena) > 4*hardTableCap {
		t.Errorf("table grew to %d bytes, arena %d", p.dirs[C].dec.size, cap(p.dirs[C].dec.arena))
	}
	if used > 8<<20 {
		t.Errorf("bomb holds %d bytes", used)
	}
	if st.HeaderTooBig.Load() < 200 {
		t.Errorf("%d oversized table updates counted, sent 200", st.HeaderTooBig.Load())
	}
	if len(p.streams) != 128 || st.PendingDrops.Load() != 200-128 {
		t.Errorf("%d streams, %d evicted", len(p.streams), st.PendingDrops.Load())
	}
}

func appendVarint(b []byte, v int) []byte {
	for v >= 128 {
		b = append(b, byte(v&0x7f)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
