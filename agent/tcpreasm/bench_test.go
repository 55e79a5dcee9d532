package tcpreasm

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/gopacket/pcapgo"

	"github.com/apisonar/apisonar/agent/tcpreasm/pcaptest"
)

// BenchmarkDecodeAssemble decodes and reassembles the frames of a generated
// keep-alive HTTP/1.1 capture held in memory (no file I/O), into a sink
// that drops the bytes: the per-packet cost of this package alone.
func BenchmarkDecodeAssemble(b *testing.B) {
	var buf bytes.Buffer
	if _, err := pcaptest.WriteHTTP(&buf, pcaptest.Options{TargetBytes: 4 << 20, Parallel: 8, CallsPerConn: 50, Seed: 2}); err != nil {
		b.Fatal(err)
	}
	r, err := pcapgo.NewReader(&buf)
	if err != nil {
		b.Fatal(err)
	}
	var frames [][]byte
	var ts []int64
	var total int64
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		frames = append(frames, data)
		ts = append(ts, ci.Timestamp.UnixNano())
		total += int64(len(data))
	}
	dec := NewDecoder()
	var seg Segment
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		a := NewAssembler(Options{}, nopSink{})
		for i, f := range frames {
			if err := dec.Decode(LinkEthernet, f, &seg); err != nil {
				b.Fatal(err)
			}
			a.Segment(ts[i], &seg)
		}
		a.Flush(ts[len(ts)-1])
	}
	b.ReportMetric(float64(len(frames)), "packets/op")
}
