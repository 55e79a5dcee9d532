package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/apisonar/apisonar/agent/tcpreasm"
)

// ErrNotCapture is returned (wrapped with the file name) by ReplayFile when
// the file is neither pcap nor pcapng.
var ErrNotCapture = errors.New("not a pcap or pcapng capture")

// ReplayProgress is what ReplayFile reports while it reads.
type ReplayProgress struct {
	BytesRead, FileSize int64
	Packets             uint64
}

// ReplaySummary says what a replay read and what it could not use.
type ReplaySummary struct {
	Packets    uint64 // records read from the file
	Bytes      uint64 // captured bytes in those records
	TCPPackets uint64 // records that held a TCP segment
	Skipped    uint64 // records that held no usable TCP segment
	// TCPConns counts TCP connections seen (the reassembler's flows).
	TCPConns uint64
	// Gaps and GapBytes count holes in the byte streams handed to the
	// parsers as gaps (missing segments, cut-off payload).
	Gaps, GapBytes uint64
	// Reassembly holds the reassembler's full counters.
	Reassembly tcpreasm.Stats
	// First and Last are the timestamps of the first and last record.
	First, Last time.Time
	// Wall is how long the replay took.
	Wall time.Duration
	// Truncated is true when the file ended inside a record or a record
	// was corrupt; ReadBytes says how far the file was usable.
	Truncated bool
	ReadBytes int64
	FileSize  int64
	// Warnings are one-line notes for the user (truncation, link types
	// that were skipped).
	Warnings []string
}

// ReplayOptions tune ReplayFile; the zero value is fine.
type ReplayOptions struct {
	Reassembly tcpreasm.Options
}

// recordReader yields capture records: bytes valid until the next call,
// event time (Unix ns), wire length and link type.
type recordReader interface {
	Next() (data []byte, ts int64, wire int, link tcpreasm.LinkType, err error)
}

// maxSnaplen is the largest record pcap tools accept (tcpdump's
// MAXIMUM_SNAPLEN); a record header claiming more is corrupt.
const maxSnaplen = 262144

// progressEvery is how many records pass between looks at the wall clock
// (for progress and cancellation), so the clock stays off the hot path.
const progressEvery = 1024

// ReplayFile reads a pcap or pcapng file, reassembles its TCP connections
// and drives tracker with the bytes, on the packets' own timestamps. At the
// end every connection is closed at the last packet's time. progress, when
// not nil, is called about once a second of wall time.
//
// A file that is not a capture gives an error wrapping ErrNotCapture; one
// that ends inside a record gives a summary with Truncated set and a
// warning, and no error. When ctx ends first, ReplayFile returns ctx.Err()
// and leaves the connections open in the tracker (the caller decides
// whether to flush them).
//
// Memory does not grow with the file: records are read into one buffer,
// and what the reassembler holds is bounded by tcpreasm.Options.
func ReplayFile(ctx context.Context, path string, tracker *Tracker, progress func(ReplayProgress)) (ReplaySummary, error) {
	return replayFile(ctx, path, tracker, progress, ReplayOptions{})
}

// ReplayFileWith is ReplayFile with options and any Sink in place of the
// tracker.
func ReplayFileWith(ctx context.Context, path string, sink tcpreasm.Sink, progress func(ReplayProgress), opts ReplayOptions) (ReplaySummary, error) {
	return replayFile(ctx, path, sink, progress, opts)
}

func replayFile(ctx context.Context, path string, sink tcpreasm.Sink, progress func(ReplayProgress), opts ReplayOptions) (ReplaySummary, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return ReplaySummary{}, err
	}
	defer f.Close()
	var size int64
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	sum, err := replay(ctx, path, f, size, sink, progress, opts)
	sum.Wall = time.Since(start)
	return sum, err
}

// replay reads a capture of size bytes from r; path names it in errors and
// warnings.
func replay(ctx context.Context, path string, r io.Reader, size int64, sink tcpreasm.Sink, progress func(ReplayProgress), opts ReplayOptions) (ReplaySummary, error) {
	sum := ReplaySummary{FileSize: size}
	start := time.Now()
	cr := &countingReader{r: r}
	br := bufio.NewReaderSize(cr, 1<<20)
	rr, err := openCapture(br)
	if err != nil {
		return sum, fmt.Errorf("%s: %w", path, err)
	}

	dec := tcpreasm.NewDecoder()
	asm := tcpreasm.NewAssembler(opts.Reassembly, sink)
	var seg tcpreasm.Segment
	var lastTS int64
	// usable is the file offset after the last whole record.
	usable := cr.n - int64(br.Buffered())
	unsupported := map[tcpreasm.LinkType]bool{}
	lastProgress := start

	for {
		if sum.Packets%progressEvery == 0 && sum.Packets > 0 {
			if err := ctx.Err(); err != nil {
				sum.ReadBytes = cr.n - int64(br.Buffered())
				return sum, err
			}
			if now := time.Now(); progress != nil && now.Sub(lastProgress) >= time.Second {
				lastProgress = now
				progress(ReplayProgress{BytesRead: cr.n - int64(br.Buffered()), FileSize: sum.FileSize, Packets: sum.Packets})
			}
		}
		data, ts, lt, err := readRecord(rr)
		if err != nil {
			if err != io.EOF {
				sum.Truncated = true
				sum.Warnings = append(sum.Warnings, fmt.Sprintf(
					"%s: capture ends in a damaged or cut-off record (%v); used the first %d of %d bytes (%d packets)",
					path, err, usable, sum.FileSize, sum.Packets))
			}
			break
		}
		usable = cr.n - int64(br.Buffered())
		sum.Packets++
		sum.Bytes += uint64(len(data))
		if sum.Packets == 1 {
			sum.First = time.Unix(0, ts).UTC()
		}
		lastTS = ts

		if err := dec.Decode(lt, data, &seg); err != nil {
			sum.Skipped++
			if errors.Is(err, tcpreasm.ErrUnsupportedLink) && !unsupported[lt] {
				unsupported[lt] = true
				sum.Warnings = append(sum.Warnings, fmt.Sprintf("%s: link type %d is not supported; its packets were skipped", path, lt))
			}
			continue
		}
		sum.TCPPackets++
		asm.Segment(ts, &seg)
	}
	if sum.Packets > 0 {
		sum.Last = time.Unix(0, lastTS).UTC()
	}
	asm.Flush(lastTS)
	asm.Sweep(lastTS)

	st := asm.Stats()
	sum.Reassembly = st
	sum.TCPConns = st.Flows
	sum.Gaps, sum.GapBytes = st.Gaps, st.GapBytes
	sum.ReadBytes = usable
	sum.Wall = time.Since(start)
	if progress != nil {
		progress(ReplayProgress{BytesRead: sum.ReadBytes, FileSize: sum.FileSize, Packets: sum.Packets})
	}
	return sum, nil
}

// readRecord reads one record. A damaged file must end the replay with a
// warning, never take the agent down, so a panic in a reader is an error
// too.
func readRecord(rr recordReader) (data []byte, ts int64, link tcpreasm.LinkType, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt record: %v", r)
		}
	}()
	data, ts, _, link, err = rr.Next()
	return data, ts, link, err
}

// Magic numbers at the start of capture files.
const (
	pcapMagicMicro = 0xa1b2c3d4
	pcapMagicNano  = 0xa1b23c4d
	pcapngSHB      = 0x0a0d0d0a
)

// openCapture sniffs the format and returns a reader positioned at the
// first record.
func openCapture(br *bufio.Reader) (recordReader, error) {
	head, _ := br.Peek(24)
	if len(head) < 4 {
		return nil, fmt.Errorf("%w: file is too short", ErrNotCapture)
	}
	le, be := binary.LittleEndian.Uint32(head), binary.BigEndian.Uint32(head)
	switch {
	case le == pcapngSHB:
		r, err := newNgReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: bad pcapng section header: %v", ErrNotCapture, err)
		}
		return r, nil
	case le == pcapMagicMicro, le == pcapMagicNano, be == pcapMagicMicro, be == pcapMagicNano, head[0] == 0x1f && head[1] == 0x8b:
		// pcapgo keeps the link type as uint8; read it from the header
		// (low 28 bits; the top bits describe an FCS).
		var link tcpreasm.LinkType
		if len(head) == 24 {
			if le == pcapMagicMicro || le == pcapMagicNano {
				link = tcpreasm.LinkType(binary.LittleEndian.Uint32(head[20:]) & 0x0fffffff)
			} else {
				link = tcpreasm.LinkType(binary.BigEndian.Uint32(head[20:]) & 0x0fffffff)
			}
		}
		r, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: bad pcap header: %v", ErrNotCapture, err)
		}
		if head[0] == 0x1f {
			// Compressed: the header was not readable before.
			link = tcpreasm.LinkType(r.LinkType())
		}
		// The header's snaplen is only a hint (some writers exceed
		// it, some write 0) and pcapgo sizes its buffer from it, so
		// it is pinned to what capture tools accept.
		r.SetSnaplen(maxSnaplen)
		return &pcapReader{r: r, link: link}, nil
	}
	return nil, ErrNotCapture
}

// pcapReader adapts pcapgo's classic pcap reader.
type pcapReader struct {
	r    *pcapgo.Reader
	link tcpreasm.LinkType
}

func (p *pcapReader) Next() ([]byte, int64, int, tcpreasm.LinkType, error) {
	data, ci, err := p.r.ZeroCopyReadPacketData()
	if err != nil {
		if err == io.ErrUnexpectedEOF || (err == io.EOF && len(data) > 0) {
			return nil, 0, 0, 0, io.ErrUnexpectedEOF
		}
		return nil, 0, 0, 0, err
	}
	return data, ci.Timestamp.UnixNano(), ci.Length, p.link, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
