package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// FuzzReplay feeds arbitrary bytes as a capture file through the readers,
// the decoder, the reassembler and a real Tracker with the agent's parsers.
// It must never panic or hang; a file that is not a capture must say so.
// Seeds: every committed capture, cut to its first 4 KiB. Inputs are large,
// so run it with a short -fuzzminimizetime (the default spends a minute
// minimising each new input).
func FuzzReplay(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 4096)])
	}
	stats := &parser.Stats{}
	factory := NewParserFactory(parser.Options{MaxBodyPrefix: 64}, stats)
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := NewTracker(TrackerOptions{MaxConns: 64}, factory, parser.EmitFunc(func(*parser.Call) {}))
		sum, err := replay(context.Background(), "fuzz.pcap", bytes.NewReader(data), int64(len(data)), tr, nil, ReplayOptions{})
		if err != nil {
			return
		}
		if sum.ReadBytes > int64(len(data)) {
			t.Fatalf("read %d bytes of %d", sum.ReadBytes, len(data))
		}
		if st := tr.Stats(); st.Open != 0 {
			t.Fatalf("%d connections left open after the end of the file", st.Open)
		}
	})
}
