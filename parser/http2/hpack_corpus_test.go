package http2

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// corpusDir resolves a folder of /work/shared/corpora (the shared corpora
// live beside the module root). Without it the test skips, except under
// CI=true where a missing corpus is a failure.
func corpusDir(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "corpora", name)
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("corpus %s missing: %v", name, err)
		}
		t.Skipf("corpus %s not present: %v", name, err)
	}
	return dir
}

type hpackCase struct {
	Wire    string              `json:"wire"`
	Headers []map[string]string `json:"headers"`
}

type hpackStory struct {
	Cases []hpackCase `json:"cases"`
}

type wantField struct{ name, value string }

// story is one corpus story ready to decode: the wire bytes and expected
// fields of each case.
type story struct {
	name  string
	wires [][]byte
	want  [][]wantField
}

// loadStories reads every story of a corpus folder. Stories without wire
// bytes (raw-data) are encoded with x/net's hpack.Encoder, an independent
// encoder, so they exercise its indexing choices.
func loadStories(t testing.TB, dir string) []story {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "story_*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no stories in %s: %v", dir, err)
	}
	sort.Strings(files)
	var out []story
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var s hpackStory
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		st := story{name: filepath.Base(f)}
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, c := range s.Cases {
			var want []wantField
			for _, h := range c.Headers {
				for k, v := range h {
					want = append(want, wantField{k, v})
				}
			}
			var wire []byte
			if c.Wire != "" {
				wire, err = hex.DecodeString(c.Wire)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
			} else {
				buf.Reset()
				for _, w := range want {
					if err := enc.WriteField(hpack.HeaderField{Name: w.name, Value: w.value}); err != nil {
						t.Fatal(err)
					}
				}
				wire = bytes.Clone(buf.Bytes())
			}
			st.wires = append(st.wires, wire)
			st.want = append(st.want, want)
		}
		out = append(out, st)
	}
	return out
}

// recorder is a fieldSink that keeps copies of what it is given.
type recorder struct {
	got []gotField
}

type gotField struct {
	name, value string
	known       bool
}

func (r *recorder) field(name, value []byte, known bool) {
	r.got = append(r.got, gotField{string(name), string(value), known})
}

type tally struct{ exact, unknown, wrong, errs int }

func (t tally) recovered() float64 {
	n := t.exact + t.unknown + t.wrong
	if n == 0 {
		return 0
	}
	return 100 * float64(t.exact) / float64(n)
}

// replay decodes a story from case k with a decoder that has either seen
// the connection from its start (k == 0) or joins at case k.
func replay(s story, k int) tally {
	var d decoder
	d.reset()
	if k == 0 {
		d.startKnown()
	}
	var tl tally
	for i := k; i < len(s.wires); i++ {
		var r recorder
		err := d.decode(s.wires[i], &r)
		if err != nil {
			tl.errs++
		}
		want := s.want[i]
		for j, w := range want {
			if j >= len(r.got) {
				tl.unknown++ // never decoded: lost to the error
				continue
			}
			g := r.got[j]
			switch {
			case !g.known:
				tl.unknown++
			case g.name == w.name && g.value == w.value:
				tl.exact++
			default:
				tl.wrong++
			}
		}
		if len(r.got) > len(want) {
			tl.wrong += len(r.got) - len(want)
		}
	}
	return tl
}

var hpackFolders = []string{"go-hpack", "nghttp2", "nghttp2-change-table-size", "node-http2-hpack", "python-hpack", "raw-data"}

func TestHPACKCorpusFromStart(t *testing.T) {
	root := corpusDir(t, "hpack")
	for _, folder := range hpackFolders {
		t.Run(folder, func(t *testing.T) {
			for _, s := range loadStories(t, filepath.Join(root, folder)) {
				tl := replay(s, 0)
				if tl.errs != 0 || tl.unknown != 0 || tl.wrong != 0 {
					t.Errorf("%s: exact %d unknown %d wrong %d errors %d", s.name, tl.exact, tl.unknown, tl.wrong, tl.errs)
				}
			}
		})
	}
}

// midStreamFloor pins how many fields are recovered exactly when a decoder
// joins a story at case k with an empty table (the percentages are logged).
// Measured with this decoder; fewer is a regression.
var midStreamFloor = map[string]map[int]int{
	"go-hpack":                  {1: 39075, 5: 37731, 10: 36022, 20: 34551},
	"nghttp2":                   {1: 37641, 5: 35530, 10: 34600, 20: 32915},
	"nghttp2-change-table-size": {1: 36699, 5: 34819, 10: 33944, 20: 32594},
	"node-http2-hpack":          {1: 37641, 5: 35530, 10: 34600, 20: 32915},
	"python-hpack":              {1: 38012, 5: 36246, 10: 35353, 20: 33712},
	"raw-data":                  {1: 38012, 5: 36246, 10: 35353, 20: 33712},
}

func TestHPACKCorpusJoinMidStream(t *testing.T) {
	root := corpusDir(t, "hpack")
	ks := []int{1, 5, 10, 20}
	for _, folder := range hpackFolders {
		stories := loadStories(t, filepath.Join(root, folder))
		for _, k := range ks {
			var sum tally
			for _, s := range stories {
				if k >= len(s.wires) {
					continue
				}
				tl := replay(s, k)
				sum.exact += tl.exact
				sum.unknown += tl.unknown
				sum.wrong += tl.wrong
				sum.errs += tl.errs
			}
			t.Logf("%-26s k=%-2d exact %6d unknown %6d wrong %d errors %d recovered %.2f%%",
				folder, k, sum.exact, sum.unknown, sum.wrong, sum.errs, sum.recovered())
			if sum.wrong != 0 {
				t.Errorf("%s k=%d: %d wrong fields", folder, k, sum.wrong)
			}
			if floor, ok := midStreamFloor[folder][k]; !ok {
				t.Errorf("%s k=%d: no pinned floor (measured %d)", folder, k, sum.exact)
			} else if sum.exact < floor {
				t.Errorf("%s k=%d: %d fields recovered, pinned %d", folder, k, sum.exact, floor)
			}
		}
	}
}
