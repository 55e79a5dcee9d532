package agent

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

var benchFile = flag.String("replay.file", "", "BenchmarkReplay reads this capture instead of a generated 10 MB one")

// BenchmarkReplay measures the replay engine end to end up to the calls:
// file reading, decoding, reassembly, the Tracker and the HTTP/1.1 parser,
// with an emitter that only counts. Input: a generated ~10 MB capture of
// keep-alive HTTP/1.1 traffic (or -replay.file).
func BenchmarkReplay(b *testing.B) {
	path := *benchFile
	if path == "" {
		path = filepath.Join(b.TempDir(), "bench.pcap")
		writeSynthetic(b, path, 3500)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	b.ReportAllocs()
	var calls uint64
	for b.Loop() {
		stats := &parser.Stats{}
		tr := NewTracker(TrackerOptions{}, NewParserFactory(parser.Options{MaxBodyPrefix: 256}, stats),
			parser.EmitFunc(func(*parser.Call) { calls++ }))
		if _, err := ReplayFile(context.Background(), path, tr, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(calls)/b.Elapsed().Seconds(), "calls/s")
}
