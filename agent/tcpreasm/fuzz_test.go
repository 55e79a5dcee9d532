package tcpreasm

import (
	"bytes"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// streamRec collects what one direction delivered.
type streamRec struct {
	got  bytes.Buffer
	gaps int
}

func (s *streamRec) Data(_ uint64, _ *parser.ConnInfo, _ parser.Direction, _ int64, d []byte) {
	s.got.Write(d)
}
func (s *streamRec) Gap(_ uint64, _ *parser.ConnInfo, _ parser.Direction, _ int64, n int) {
	s.gaps++
}
func (s *streamRec) Close(uint64, int64) {}
func (s *streamRec) Sweep(int64)         {}

// FuzzSegmentOrder cuts a byte stream into segments (possibly overlapping),
// sends them in an order and with repeats chosen by the fuzzer, all within
// one reorder window, and checks that exactly the original stream comes
// out with no gap.
func FuzzSegmentOrder(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), []byte{3, 1, 4, 1, 5, 9, 2, 6})
	f.Add([]byte("abcdefghijklmnopqrstuvwxyz"), []byte{0, 0, 0, 255, 7, 7})
	f.Add(bytes.Repeat([]byte("x"), 3000), []byte{200, 13, 77, 1, 2, 3, 250, 9, 8})
	f.Fuzz(func(t *testing.T, stream, plan []byte) {
		if len(stream) == 0 || len(plan) == 0 || len(stream) > 4096 {
			return
		}
		// Cut: each plan byte picks a segment length 1..16 and an
		// overlap back into the previous segment.
		type cut struct{ from, to int }
		var cuts []cut
		for pos, i := 0, 0; pos < len(stream); i++ {
			p := plan[i%len(plan)]
			n := 1 + int(p&15)
			back := min(int(p>>4)&3, pos)
			end := min(pos+n, len(stream))
			cuts = append(cuts, cut{pos - back, end})
			pos = end
		}
		// Order: a walk over the cuts driven by plan, with repeats.
		order := make([]int, 0, 2*len(cuts))
		for i := range cuts {
			order = append(order, i)
		}
		for i := range order {
			j := int(plan[(i*7)%len(plan)]) % len(order)
			order[i], order[j] = order[j], order[i]
		}
		for i := 0; i < len(plan) && i < len(cuts); i += 3 {
			order = append(order, int(plan[i])%len(cuts))
		}
		rec := &streamRec{}
		a := NewAssembler(Options{MaxSegmentsPerDir: 1 << 20, MaxBufferedPerDir: 1 << 24}, rec)
		syn := Segment{Src: cli, Dst: srv, Seq: 99, Flags: FlagSYN}
		a.Segment(1, &syn)
		for _, i := range order {
			c := cuts[i]
			seg := Segment{Src: cli, Dst: srv, Seq: 100 + uint32(c.from), Flags: FlagACK, Payload: stream[c.from:c.to]}
			a.Segment(1, &seg)
		}
		a.Flush(2)
		if rec.gaps != 0 || !bytes.Equal(rec.got.Bytes(), stream) {
			t.Fatalf("delivered %d bytes with %d gaps, want the %d-byte stream back", rec.got.Len(), rec.gaps, len(stream))
		}
		if st := a.Stats(); st.Buffered != 0 || st.Open != 0 {
			t.Fatalf("after Flush: %+v", st)
		}
	})
}
