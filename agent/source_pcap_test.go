package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apisonar/apisonar/agent/tcpreasm"
	"github.com/apisonar/apisonar/agent/tcpreasm/pcaptest"
	"github.com/apisonar/apisonar/parser"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/pcap")

const pcapDir = "../testdata/pcap"

// streamSink keeps, per connection and direction, the byte count, the
// holes and a running SHA-256 of the reassembled stream: enough to compare
// with what tshark's "follow tcp" reassembles from the same file.
type streamSink struct {
	conns map[uint64]*streamConn
}

type streamConn struct {
	info   parser.ConnInfo
	n      [2]int
	gaps   [2]int
	gapN   [2]int
	sum    [2]hash.Hash
	first  [2][]byte
	closed bool
}

func newStreamSink() *streamSink { return &streamSink{conns: map[uint64]*streamConn{}} }

func (s *streamSink) conn(id uint64, info *parser.ConnInfo) *streamConn {
	c := s.conns[id]
	if c == nil {
		c = &streamConn{info: *info, sum: [2]hash.Hash{sha256.New(), sha256.New()}}
		s.conns[id] = c
	}
	return c
}

func (s *streamSink) Data(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, data []byte) {
	c := s.conn(id, info)
	c.n[dir] += len(data)
	c.sum[dir].Write(data)
	if len(c.first[dir]) < 64 {
		c.first[dir] = append(c.first[dir], data[:min(len(data), 64)]...)
	}
}

func (s *streamSink) Gap(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, n int) {
	c := s.conn(id, info)
	c.gaps[dir]++
	c.gapN[dir] += n
}

func (s *streamSink) Close(id uint64, ts int64) {
	if c := s.conns[id]; c != nil {
		c.closed = true
	}
}

func (s *streamSink) Sweep(int64) {}

// report renders the streams in a stable text form.
func (s *streamSink) report(sum ReplaySummary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "packets %d, tcp %d, skipped %d, connections %d, gaps %d (%d bytes), truncated %v\n",
		sum.Packets, sum.TCPPackets, sum.Skipped, sum.TCPConns, sum.Gaps, sum.GapBytes, sum.Truncated)
	ids := make([]uint64, 0, len(s.conns))
	for id := range s.conns {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		c := s.conns[id]
		fmt.Fprintf(&b, "conn %d client %s server %s closed %v\n", id, c.info.Client, c.info.Server, c.closed)
		for d := range 2 {
			line, _, _ := bytes.Cut(c.first[d], []byte("\r\n"))
			fmt.Fprintf(&b, "  %-6s %7d bytes sha256 %x gaps %d (%d bytes) first %q\n",
				parser.Direction(d), c.n[d], c.sum[d].Sum(nil)[:8], c.gaps[d], c.gapN[d], line)
		}
	}
	return b.String()
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update to rewrite it on purpose)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestReplayStreams reassembles every capture in testdata/pcap and compares
// the byte streams with golden files. The goldens of the undamaged captures
// were checked against tshark's own reassembly (`tshark -qz
// follow,tcp,raw,N`): same byte counts and SHA-256 per direction. The
// link-type variants must give the same streams as their originals.
func TestReplayStreams(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures in %s: %v", pcapDir, err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			sink := newStreamSink()
			sum, err := ReplayFileWith(context.Background(), f, sink, nil, ReplayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join(pcapDir, "streams", name+".txt"), sink.report(sum))
		})
	}
}

// TestReplayLinkTypesAgree proves each link-type variant decodes to exactly
// the streams of the capture it was derived from.
func TestReplayLinkTypesAgree(t *testing.T) {
	variants := map[string][]string{
		"curl-python.pcap": {"curl-python-null-le.pcap", "curl-python-null-be.pcap", "curl-python-loop.pcap",
			"curl-python-dltraw12.pcap", "curl-python-rawip.pcap"},
		"go-nginx.pcap": {"go-nginx.pcapng", "go-nginx-ipv4.pcap"},
	}
	streams := func(name string) string {
		sink := newStreamSink()
		sum, err := ReplayFileWith(context.Background(), filepath.Join(pcapDir, name), sink, nil, ReplayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Skipped != 0 {
			t.Errorf("%s: %d packets skipped", name, sum.Skipped)
		}
		return sink.report(sum)
	}
	for orig, vs := range variants {
		want := streams(orig)
		for _, v := range vs {
			if got := streams(v); got != want {
				t.Errorf("%s and %s disagree:\n%s\nvs\n%s", v, orig, got, want)
			}
		}
	}
}

func TestReplayNotACapture(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]byte{
		"empty":     nil,
		"short":     []byte("ab"),
		"text":      []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"bad_pcap":  {0xd4, 0xc3, 0xb2, 0xa1, 9, 0, 4, 0},
		"bad_ng":    {0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 1, 2, 3, 4},
		"elf_magic": {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReplayFileWith(context.Background(), p, newStreamSink(), nil, ReplayOptions{})
			if !errors.Is(err, ErrNotCapture) {
				t.Fatalf("err = %v, want ErrNotCapture", err)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestReplayTruncatedWarns(t *testing.T) {
	f := filepath.Join(pcapDir, "go-nginx-truncated.pcap")
	sum, err := ReplayFileWith(context.Background(), f, newStreamSink(), nil, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The file was cut 1000 bytes into the record of frame 21.
	if !sum.Truncated || sum.Packets != 20 {
		t.Fatalf("truncated %v after %d packets, want true after 20", sum.Truncated, sum.Packets)
	}
	if len(sum.Warnings) != 1 || !strings.Contains(sum.Warnings[0], f) {
		t.Errorf("warnings %q should name the file once", sum.Warnings)
	}
	if sum.ReadBytes <= 0 || sum.ReadBytes >= sum.FileSize {
		t.Errorf("read %d of %d bytes", sum.ReadBytes, sum.FileSize)
	}
}

func TestReplayCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Cancellation is looked at every progressEvery records; a small file
	// finishes before that, so a generated one is used.
	path := filepath.Join(t.TempDir(), "many.pcap")
	writeSynthetic(t, path, 3000)
	_, err := ReplayFileWith(ctx, path, newStreamSink(), nil, ReplayOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

var _ tcpreasm.Sink = (*Tracker)(nil)

// writeSynthetic writes a generated keep-alive HTTP/1.1 capture with about
// calls calls and returns what was written.
func writeSynthetic(tb testing.TB, path string, calls int) pcaptest.Summary {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	// About 2.9 KB of packets per call.
	sum, err := pcaptest.WriteHTTP(f, pcaptest.Options{TargetBytes: int64(calls) * 2900, Parallel: 8, CallsPerConn: 50, Seed: 1})
	if err != nil {
		tb.Fatal(err)
	}
	return sum
}

const grpcCorpus = "../../shared/corpora/grpc-pcap"

// TestReplayGRPCCorpus reads the gRPC captures of another project (pcapng,
// BSD loopback link type, IPv6) and checks the reassembled streams of the
// port-50051 connection against tshark's reassembly of the same files:
// byte counts and SHA-256 prefixes per direction, taken with
// testdata/pcap/tshark_streams.py. The client stream must open with the
// HTTP/2 preface.
func TestReplayGRPCCorpus(t *testing.T) {
	cases := []struct {
		file                 string
		clientN, serverN     int
		clientSum, serverSum string
		totalPayload         uint64
	}{
		{"unary.pcapng", 203, 156, "c97c7902d57f2102", "b19b62717dea99f7", 52088 + 203 + 156},
		{"server-streaming.pcapng", 199, 517, "77a0d913b3e33db0", "efa6112df0f43297", 199 + 517},
		{"client-streaming.pcapng", 296, 260, "0fed5e3c95d46999", "8945dcf926f2954a", 296 + 260},
		{"bidi-streaming.pcapng", 359, 323, "467b4a387e1cc74d", "7c79ddae465052a2", 359 + 323},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			sink := newStreamSink()
			sum, err := ReplayFileWith(context.Background(), filepath.Join(grpcCorpus, tc.file), sink, nil, ReplayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Truncated || sum.Gaps != 0 {
				t.Errorf("truncated %v, %d gaps", sum.Truncated, sum.Gaps)
			}
			if got := sum.Reassembly.PayloadBytes; got != tc.totalPayload {
				t.Errorf("payload bytes %d, tshark counts %d", got, tc.totalPayload)
			}
			var found bool
			for _, c := range sink.conns {
				if c.info.Server.Port() != 50051 {
					continue
				}
				found = true
				if !c.info.Server.Addr().Is6() {
					t.Errorf("server %v should be IPv6", c.info.Server)
				}
				for d, want := range [2]struct {
					n   int
					sum string
				}{{tc.clientN, tc.clientSum}, {tc.serverN, tc.serverSum}} {
					if got := fmt.Sprintf("%x", c.sum[d].Sum(nil)[:8]); c.n[d] != want.n || got != want.sum {
						t.Errorf("%s: %d bytes sha256 %s, tshark has %d bytes %s", parser.Direction(d), c.n[d], got, want.n, want.sum)
					}
				}
				if !bytes.HasPrefix(c.first[parser.FromClient], []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) {
					t.Errorf("client stream starts %q, want the HTTP/2 preface", c.first[parser.FromClient])
				}
			}
			if !found {
				t.Error("no connection to port 50051")
			}
		})
	}
}

func TestReplayProgressEndsAtFileSize(t *testing.T) {
	var last ReplayProgress
	calls := 0
	_, err := ReplayFileWith(context.Background(), filepath.Join(pcapDir, "go-nginx.pcap"), newStreamSink(),
		func(p ReplayProgress) { last = p; calls++ }, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || last.BytesRead != last.FileSize || last.FileSize == 0 || last.Packets != 44 {
		t.Errorf("%d progress calls, last %+v; want a final one at the file size after 44 packets", calls, last)
	}
}

// TestReplayGzipPcap: pcapgo reads gzip-compressed pcap transparently; the
// streams must be those of the plain file.
func TestReplayGzipPcap(t *testing.T) {
	src := filepath.Join(pcapDir, "curl-python.pcap")
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	gz := filepath.Join(t.TempDir(), "curl-python.pcap.gz")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(gz, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	report := func(path string) string {
		sink := newStreamSink()
		sum, err := ReplayFileWith(context.Background(), path, sink, nil, ReplayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sink.report(sum)
	}
	if a, b := report(gz), report(src); a != b {
		t.Errorf("gzip copy reads differently:\n%s\nvs\n%s", a, b)
	}
}
