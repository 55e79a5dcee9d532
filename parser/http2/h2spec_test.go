package http2

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/apisonar/apisonar/parser"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// xnetRequests counts the requests x/net's framer reads from a client
// stream before the first error that would end the connection, one per
// stream: an independent floor for what the parser must report.
func xnetRequests(data []byte) int {
	data = bytes.TrimPrefix(data, []byte(http2.ClientPreface))
	fr := http2.NewFramer(nil, bytes.NewReader(data))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	seen := map[uint32]bool{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return len(seen)
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.PseudoValue("method") != "" && mh.PseudoValue("path") != "" {
			seen[mh.StreamID] = true
		}
	}
}

// TestH2SpecStreams feeds the client→server streams recorded while h2spec
// attacked a server: malformed frames, bad settings, unknown types,
// truncated frames. None may panic or hold on to much memory, and the valid
// requests in them must still be reported.
func TestH2SpecStreams(t *testing.T) {
	root := corpusDir(t, "http2-h2spec-streams")
	var files []string
	for _, sub := range []string{"h2spec", "nghttp"} {
		fs, err := filepath.Glob(filepath.Join(root, sub, "*"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	if len(files) < 100 {
		t.Fatalf("only %d streams", len(files))
	}
	var requests, calls, frames, frameErrs, floor int
	var worst uint64
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		st := new(parser.Stats)
		var n, valid int
		emit := parser.EmitFunc(func(c *parser.Call) {
			n++
			if len(c.Method) > 0 && len(c.Path) > 0 && c.Flags&parser.FlagPartial == 0 {
				valid++
			}
		})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		p := New(&parser.ConnInfo{}, emit, st, parser.Options{MaxBodyPrefix: 256})
		for i := 0; i < len(data); i += 1000 {
			p.Feed(parser.FromClient, int64(i), data[i:min(i+1000, len(data))])
		}
		p.Close(1 << 40)
		runtime.ReadMemStats(&after)
		worst = max(worst, after.TotalAlloc-before.TotalAlloc)
		calls += n
		requests += valid
		if x := xnetRequests(data); valid < x {
			t.Errorf("%s: %d requests reported, x/net reads %d", filepath.Base(f), valid, x)
		} else {
			floor += x
		}
		frames += int(st.H2Frames.Load())
		frameErrs += int(st.H2FrameErrors.Load())
	}
	t.Logf("%d streams: %d frames (%d malformed), %d calls, %d complete requests (x/net reads %d before its first error); worst allocation per stream %d bytes",
		len(files), frames, frameErrs, calls, requests, floor, worst)
	// Pinned from a measurement; x/net's count above is the independent
	// check that these are real requests.
	if requests < 282 {
		t.Errorf("%d complete requests reported, want at least 282", requests)
	}
	if worst > 1<<20 {
		t.Errorf("a 17 KiB stream allocated %d bytes", worst)
	}
}
