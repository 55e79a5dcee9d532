package http2

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// busyConv is a connection carrying a mix of REST and gRPC calls whose
// header blocks lean on the dynamic table: the material for joining
// mid-stream.
func busyConv(t testing.TB, n int) *conv {
	c := newConv(t, true)
	sid := uint32(1)
	for i := range n {
		tenant := fmt.Sprintf("tenant-%d", i%3)
		switch i % 3 {
		case 0:
			c.headers(C, sid, true, append(get(fmt.Sprintf("/v1/users/%d?page=%d", i, i%4)), "x-tenant", tenant, "authorization", "Bearer abc")...)
			c.headers(S, sid, false, append(ok("application/json"), "x-tenant", tenant)...)
			c.data(S, sid, true, bytes.Repeat([]byte("u"), 10+i))
		case 1:
			c.headers(C, sid, false, append(post("/shop.Cart/Add", "application/grpc"), "te", "trailers", "x-tenant", tenant)...)
			c.data(C, sid, true, grpcMsg(false, bytes.Repeat([]byte("r"), i)))
			c.headers(S, sid, false, ok("application/grpc")...)
			c.data(S, sid, false, grpcMsg(false, []byte("ok")))
			c.headers(S, sid, true, "grpc-status", fmt.Sprint(i%5), "grpc-message", "m%20"+tenant)
		case 2:
			c.headers(C, sid, false, append(post("/v1/orders", "application/json"), "x-tenant", tenant, "cookie", "s=1")...)
			c.data(C, sid, true, []byte(`{"n":1}`))
			c.headers(S, sid, true, ":status", "201", "x-tenant", tenant)
		}
		sid += 2
	}
	return c
}

// neverWrong checks every call of a partial view against the call of the
// same stream seen whole: a field is either equal or missing with the call
// flagged partial.
func neverWrong(t *testing.T, full, part []*parser.Call) {
	t.Helper()
	byID := map[uint32]*parser.Call{}
	for _, c := range full {
		byID[c.StreamID] = c
	}
	for _, c := range part {
		f := byID[c.StreamID]
		if f == nil {
			t.Errorf("stream %d: call that the full view does not have: %+v", c.StreamID, summarize(c))
			continue
		}
		isPartial := c.Flags&parser.FlagPartial != 0
		for _, fld := range []struct {
			name      string
			got, want []byte
		}{
			{"method", c.Method, f.Method}, {"host", c.Host, f.Host}, {"path", c.Path, f.Path},
			{"query", c.Query, f.Query}, {"grpc-message", c.GRPCMessage, f.GRPCMessage},
			{"content-type", c.RespContentType, f.RespContentType},
			{"authorization", c.ReqHeaders[parser.HdrAuthorization], f.ReqHeaders[parser.HdrAuthorization]},
		} {
			if bytes.Equal(fld.got, fld.want) {
				continue
			}
			if len(fld.got) == 0 && isPartial {
				continue
			}
			t.Errorf("stream %d: %s %q, whole view %q", c.StreamID, fld.name, fld.got, fld.want)
		}
		if c.Status != f.Status && !(c.Status == 0 && (isPartial || c.Flags&parser.FlagNoResponse != 0)) {
			t.Errorf("stream %d: status %d, whole view %d", c.StreamID, c.Status, f.Status)
		}
		if c.GRPCStatus != f.GRPCStatus && !(c.GRPCStatus == -1 && isPartial) {
			t.Errorf("stream %d: grpc status %d, whole view %d", c.StreamID, c.GRPCStatus, f.GRPCStatus)
		}
		if c.ReqBytes > f.ReqBytes || c.RespBytes > f.RespBytes || c.ReqMessages > f.ReqMessages || c.RespMessages > f.RespMessages {
			t.Errorf("stream %d: counts %d/%d/%d/%d beyond whole view %d/%d/%d/%d", c.StreamID,
				c.ReqBytes, c.RespBytes, c.ReqMessages, c.RespMessages, f.ReqBytes, f.RespBytes, f.ReqMessages, f.RespMessages)
		}
	}
}

// TestJoinAtFrameBoundary starts the parser at every piece of a busy
// connection, as a source that starts after the connection opened does:
// without the preface, with an unknown table.
func TestJoinAtFrameBoundary(t *testing.T) {
	c := busyConv(t, 30)
	full, _ := run(c.pieces, 0, parser.Options{})
	if len(full) != 30 {
		t.Fatalf("whole view: %d calls", len(full))
	}
	var recovered, partialCalls int
	for k := 3; k < len(c.pieces); k++ {
		calls, st := run(c.pieces[k:], 0, parser.Options{})
		neverWrong(t, full, calls)
		for _, cl := range calls {
			if cl.Flags&parser.FlagPartial != 0 {
				partialCalls++
			} else {
				recovered++
			}
		}
		if st.Resyncs.Load() != 0 {
			t.Errorf("join at piece %d: %d resyncs at a frame boundary", k, st.Resyncs.Load())
		}
	}
	t.Logf("calls complete %d, partial %d", recovered, partialCalls)
	if recovered == 0 {
		t.Error("no call recovered whole after joining")
	}
}

// TestJoinAtAnyByte drops the first n bytes of both directions: the reader
// starts mid-frame and must find the framing without reporting anything
// wrong.
func TestJoinAtAnyByte(t *testing.T) {
	c := busyConv(t, 12)
	full, _ := run(c.pieces, 0, parser.Options{})
	total := [2]int{}
	for _, pc := range c.pieces {
		total[pc.dir] += len(pc.data)
	}
	reported := 0
	for n := 1; n < total[C] && n < total[S]; n += 3 {
		var col collector
		st := new(parser.Stats)
		p := New(&parser.ConnInfo{}, &col, st, parser.Options{})
		// The pieces keep their order; each direction loses its first n
		// bytes.
		skip := [2]int{n, n}
		for i, pc := range c.pieces {
			b := pc.data
			k := min(skip[pc.dir], len(b))
			skip[pc.dir] -= k
			if len(b) > k {
				p.Feed(pc.dir, int64(i), b[k:])
			}
		}
		p.Close(1 << 40)
		neverWrong(t, full, col.calls)
		reported += len(col.calls)
	}
	t.Logf("calls reported over all offsets: %d", reported)
}

func TestGapInsideDataKeepsFraming(t *testing.T) {
	c := newConv(t, true)
	c.headers(C, 1, true, get("/file")...)
	c.headers(S, 1, false, ok("application/octet-stream")...)
	c.data(S, 1, true, bytes.Repeat([]byte("z"), 1000))
	c.headers(C, 3, true, get("/next")...)
	c.headers(S, 3, true, ":status", "204")

	var col collector
	st := new(parser.Stats)
	p := New(&parser.ConnInfo{}, &col, st, parser.Options{})
	for i, pc := range c.pieces {
		if pc.dir == S && len(pc.data) == 1009 {
			p.Feed(S, int64(i), pc.data[:100])
			p.Gap(S, int64(i), 500)
			p.Feed(S, int64(i), pc.data[600:])
			continue
		}
		p.Feed(pc.dir, int64(i), pc.data)
	}
	p.Close(100)
	got := summaries(col.calls)
	want := []sum{
		{Method: "GET", Host: "api.example", Path: "/file", Status: 200, GRPC: -1, RespB: 1000, Stream: 1,
			Flags: parser.FlagRespTruncated, Start: 3, End: 5, Proto: parser.ProtoHTTP2},
		{Method: "GET", Host: "api.example", Path: "/next", Status: 204, GRPC: -1, Stream: 3, Start: 6, End: 7, Proto: parser.ProtoHTTP2},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls\n got %+v\nwant %+v", got, want)
	}
	if st.Resyncs.Load() != 0 || st.Gaps.Load() != 1 || st.GapBytes.Load() != 500 {
		t.Errorf("resyncs %d gaps %d gap bytes %d", st.Resyncs.Load(), st.Gaps.Load(), st.GapBytes.Load())
	}
}

func TestGapAcrossFramesResyncs(t *testing.T) {
	c := busyConv(t, 12)
	full, _ := run(c.pieces, 0, parser.Options{})
	var col collector
	st := new(parser.Stats)
	p := New(&parser.ConnInfo{}, &col, st, parser.Options{})
	for i, pc := range c.pieces {
		if i == 12 || i == 13 {
			// Lose two records of the connection, and 5 bytes more.
			p.Gap(pc.dir, int64(i), len(pc.data))
			continue
		}
		if i == 14 {
			p.Gap(pc.dir, int64(i), 5)
			p.Feed(pc.dir, int64(i), pc.data[5:])
			continue
		}
		p.Feed(pc.dir, int64(i), pc.data)
	}
	p.Close(1000)
	neverWrong(t, full, col.calls)
	if len(col.calls) < 8 {
		t.Errorf("only %d calls after the gap", len(col.calls))
	}
	if st.Gaps.Load() != 3 {
		t.Errorf("gaps %d", st.Gaps.Load())
	}
}

func TestGapInsideHeadersDropsOnlyThatBlock(t *testing.T) {
	c := newConv(t, true)
	c.headers(C, 1, true, get("/a")...)
	c.headers(C, 3, true, get("/b")...)
	c.headers(S, 3, true, ":status", "200")
	var col collector
	st := new(parser.Stats)
	p := New(&parser.ConnInfo{}, &col, st, parser.Options{})
	for i, pc := range c.pieces {
		if i == 3 { // HEADERS of stream 1: lose 4 bytes of its block
			p.Feed(C, int64(i), pc.data[:12])
			p.Gap(C, int64(i), 4)
			p.Feed(C, int64(i), pc.data[16:])
			continue
		}
		p.Feed(pc.dir, int64(i), pc.data)
	}
	p.Close(100)
	got := fmt.Sprint(summaries(col.calls))
	// Stream 3's :authority refers to the entry the lost block inserted.
	want := fmt.Sprint([]sum{{Method: "GET", Path: "/b", Status: 200, GRPC: -1, Stream: 3, Flags: partial, Start: 4, End: 5, Proto: parser.ProtoHTTP2}})
	if got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	if st.Resyncs.Load() != 0 || st.HPACKUnknown.Load() != 1 {
		t.Errorf("resyncs %d unknown %d", st.Resyncs.Load(), st.HPACKUnknown.Load())
	}
}

func TestGarbageBeforeFirstFrameIsScannedPast(t *testing.T) {
	c := newConv(t, false)
	c.headers(C, 5, true, get("/x")...)
	c.headers(S, 5, true, ":status", "200")
	pieces := append([]piece{{C, bytes.Repeat([]byte{0xff}, 37)}}, c.pieces...)
	calls, st := run(pieces, 0, parser.Options{})
	got := fmt.Sprint(summaries(calls))
	want := fmt.Sprint([]sum{{Method: "GET", Host: "api.example", Path: "/x", Status: 200, GRPC: -1, Stream: 5, Start: 2, End: 3, Proto: parser.ProtoHTTP2}})
	if got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	if st.Resyncs.Load() != 1 {
		t.Errorf("resyncs %d", st.Resyncs.Load())
	}
}
