package http2

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/apisonar/apisonar/parser"
	"golang.org/x/net/http2/hpack"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the committed fuzz seed corpus")

// FuzzFrames feeds arbitrary bytes to both directions of a parser, cut at
// arbitrary sizes, with a gap somewhere: nothing may panic, and what the
// parser holds stays within its bounds.
func FuzzFrames(f *testing.F) {
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"), uint8(3), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint8, gapAt uint16) {
		opts := parser.Options{MaxStreams: 8, MaxHeaderBytes: 4096, MaxBodyPrefix: 16}
		st := new(parser.Stats)
		calls := 0
		p := New(&parser.ConnInfo{}, parser.EmitFunc(func(c *parser.Call) {
			calls++
			if len(c.ReqBody) > 16 || len(c.RespBody) > 16 {
				t.Fatalf("body prefix over its bound: %d %d", len(c.ReqBody), len(c.RespBody))
			}
		}), st, opts)
		step := int(split%64) + 1
		for i := 0; i < len(data); i += step {
			chunk := data[i:min(i+step, len(data))]
			dir := parser.Direction((i / step) % 2)
			if split&0x80 != 0 {
				dir = parser.FromClient // one direction only, like the h2spec streams
			}
			if int(gapAt) != 0 && i <= int(gapAt) && int(gapAt) < i+step {
				p.Gap(dir, int64(i), int(gapAt%17))
			}
			p.Feed(dir, int64(i), chunk)
			if len(p.streams) > opts.MaxStreams {
				t.Fatalf("%d open streams", len(p.streams))
			}
			for d := range p.dirs {
				ds := &p.dirs[d]
				if len(ds.block) > opts.MaxHeaderBytes || len(ds.buf) > maxControlFrame {
					t.Fatalf("buffers over bounds: block %d buf %d", len(ds.block), len(ds.buf))
				}
				if ds.dec.size > hardTableCap || len(ds.dec.arena) > 2*hardTableCap+hardTableCap {
					t.Fatalf("table over bounds: %d / arena %d", ds.dec.size, len(ds.dec.arena))
				}
			}
		}
		p.Close(1 << 40)
		if uint64(calls) != st.Calls.Load() {
			t.Fatalf("%d calls emitted, %d counted", calls, st.Calls.Load())
		}
	})
}

// splitBlocks cuts fuzz input into header blocks, each led by its length.
func splitBlocks(data []byte) [][]byte {
	var blocks [][]byte
	for len(data) > 0 {
		n := min(int(data[0]), len(data)-1)
		blocks = append(blocks, data[1:1+n])
		data = data[1+n:]
	}
	return blocks
}

// FuzzHPACK compares the tolerant decoder with x/net's hpack.Decoder on the
// same sequence of header blocks. Seen from the start, both must agree
// field for field; joined at block k, every field the tolerant decoder
// calls known must be the one x/net decoded.
func FuzzHPACK(f *testing.F) {
	f.Add([]byte("\x04\x82\x86\x84\x41\x0a\x40\x03abc\x03def\xbe"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, join uint8) {
		blocks := splitBlocks(data)
		ref := hpack.NewDecoder(4096, nil)
		var want [][]hpack.HeaderField
		for _, b := range blocks {
			fs, err := ref.DecodeFull(b)
			if err != nil {
				break // x/net ends the connection here; compare what came before
			}
			want = append(want, fs)
		}
		for _, k := range []int{0, int(join) % (len(want) + 1)} {
			var d decoder
			d.reset()
			if k == 0 {
				d.startKnown()
			}
			for i := k; i < len(want); i++ {
				var r recorder
				if err := d.decode(blocks[i], &r); err != nil {
					if k == 0 {
						t.Fatalf("block %d: x/net decodes it, we fail: %v", i, err)
					}
					break
				}
				if len(r.got) != len(want[i]) {
					t.Fatalf("join %d block %d: %d fields, x/net %d", k, i, len(r.got), len(want[i]))
				}
				for j, g := range r.got {
					w := want[i][j]
					if k == 0 && !g.known {
						t.Fatalf("block %d field %d unknown from the start", i, j)
					}
					if g.known && (g.name != w.Name || g.value != w.Value) {
						t.Fatalf("join %d block %d field %d: %q: %q, x/net %q: %q", k, i, j, g.name, g.value, w.Name, w.Value)
					}
				}
				if d.size > hardTableCap {
					t.Fatalf("table %d bytes", d.size)
				}
			}
		}
		// Blocks x/net refuses must still cost nothing but an error.
		var d decoder
		d.reset()
		for _, b := range blocks {
			d.decode(b, &recorder{})
		}
	})
}

// TestFuzzSeeds checks that the committed seed corpus is what the seed
// generator writes from real conversations and the shared corpora, and
// rewrites it with -update-seeds.
func TestFuzzSeeds(t *testing.T) {
	write := func(target, name string, args ...any) {
		dir := filepath.Join("testdata", "fuzz", target)
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case uint8:
				fmt.Fprintf(&b, "byte(%q)\n", v)
			case uint16:
				fmt.Fprintf(&b, "uint16(%d)\n", v)
			}
		}
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		old, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(old, b.Bytes()) {
			t.Errorf("%s is not what the generator writes (%v); run with -update-seeds", path, err)
		}
	}
	c := busyConv(t, 6)
	var streams [2][]byte
	for _, pc := range c.pieces {
		streams[pc.dir] = append(streams[pc.dir], pc.data...)
	}
	write("FuzzFrames", "busy_client_whole", streams[C], uint8(0xbf), uint16(0))
	write("FuzzFrames", "busy_server_split", streams[S], uint8(0x86), uint16(0))
	write("FuzzFrames", "busy_both_gap", append(bytes.Clone(streams[C][:min(600, len(streams[C]))]), streams[S][:min(600, len(streams[S]))]...), uint8(9), uint16(333))
	write("FuzzFrames", "joined_mid_frame", streams[S][37:], uint8(0x90), uint16(0))
	h2spec, err := filepath.Glob(filepath.Join(corpusDir(t, "http2-h2spec-streams"), "h2spec", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range h2spec {
		if i%20 != 0 {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzFrames", "h2spec_"+filepath.Base(f)[:12], data, uint8(0xff), uint16(0))
	}
	hpackRoot := corpusDir(t, "hpack")
	stories := loadStories(t, filepath.Join(hpackRoot, "nghttp2-change-table-size"))
	stories = append(stories, loadStories(t, filepath.Join(hpackRoot, "python-hpack"))[:3]...)
	for i, s := range stories {
		if i%4 != 0 {
			continue
		}
		var in []byte
		for _, w := range s.wires[:min(12, len(s.wires))] {
			if len(w) > 255 {
				continue
			}
			in = append(in, byte(len(w)))
			in = append(in, w...)
		}
		write("FuzzHPACK", "story_"+fmt.Sprint(i), in, uint8(i%7))
	}
}
