package tcpreasm

import (
	"net/netip"
	"slices"

	"github.com/apisonar/apisonar/parser"
)

// Sink receives the reassembled streams. The agent's connection Tracker
// implements it; ids are unique among the flows an Assembler has open.
type Sink interface {
	Data(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, data []byte)
	Gap(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, n int)
	Close(id uint64, ts int64)
	Sweep(now int64)
}

// Options bound the Assembler. Zero values mean the defaults below.
type Options struct {
	// MaxFlows caps open flows; the least recently active one is closed
	// to make room.
	MaxFlows int
	// MaxBufferedPerDir and MaxSegmentsPerDir bound what one direction
	// holds while waiting for a missing segment.
	MaxBufferedPerDir int
	MaxSegmentsPerDir int
	// MaxBufferedTotal bounds early bytes held over all flows.
	MaxBufferedTotal int
	// ReorderTimeout (ns of packet time) is how long a hole may stay open
	// before it is declared lost.
	ReorderTimeout int64
	// IdleTimeout (ns of packet time) closes a silent flow.
	IdleTimeout int64
	// SweepInterval (ns of packet time) is how often Segment runs Sweep.
	SweepInterval int64
}

// Defaults. The per-direction buffer covers a few receive windows of a
// busy loopback connection; the total keeps a hostile capture with many
// holes to a fixed budget.
const (
	DefaultMaxFlows          = 65536
	DefaultMaxBufferedPerDir = 1 << 20
	DefaultMaxSegmentsPerDir = 1024
	DefaultMaxBufferedTotal  = 64 << 20
	DefaultReorderTimeout    = int64(2e9)
	DefaultIdleTimeout       = int64(10 * 60 * 1e9)
	DefaultSweepInterval     = int64(1e9)
)

func (o Options) withDefaults() Options {
	if o.MaxFlows <= 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if o.MaxBufferedPerDir <= 0 {
		o.MaxBufferedPerDir = DefaultMaxBufferedPerDir
	}
	if o.MaxSegmentsPerDir <= 0 {
		o.MaxSegmentsPerDir = DefaultMaxSegmentsPerDir
	}
	if o.MaxBufferedTotal <= 0 {
		o.MaxBufferedTotal = DefaultMaxBufferedTotal
	}
	if o.ReorderTimeout <= 0 {
		o.ReorderTimeout = DefaultReorderTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	return o
}

// Stats counts what the Assembler did and what it could not do.
type Stats struct {
	Segments      uint64 // TCP segments seen
	PayloadBytes  uint64 // payload bytes delivered in order
	Flows         uint64 // flows opened
	Closed        uint64 // flows ended by FIN or RST
	Expired       uint64 // flows closed after IdleTimeout
	Evicted       uint64 // flows closed to stay under MaxFlows
	Reused        uint64 // flows replaced by a new SYN on the same 4-tuple
	Ignored       uint64 // segments of no known flow without payload or SYN
	Retransmitted uint64 // payload bytes trimmed as already delivered
	OutOfOrder    uint64 // segments held until a hole filled
	Gaps          uint64 // holes declared lost
	GapBytes      uint64 // bytes in those holes (and cut off by snaplen)
	Snapped       uint64 // segments cut at the snapshot length
	Open          int    // flows open now
	Buffered      int    // early bytes held now
}

// Assembler reassembles TCP flows and drives a Sink. Not safe for
// concurrent use.
type Assembler struct {
	opts   Options
	sink   Sink
	flows  map[flowKey]*flow
	head   *flow // most recently active
	tail   *flow
	nextID uint64
	stats  Stats
	// lastSweep is the packet time of the last Sweep.
	lastSweep int64
}

// flowKey names a flow regardless of direction: lo < hi.
type flowKey struct {
	lo, hi netip.AddrPort
}

func keyOf(a, b netip.AddrPort) (k flowKey, aIsLo bool) {
	if a.Compare(b) <= 0 {
		return flowKey{a, b}, true
	}
	return flowKey{b, a}, false
}

type flow struct {
	key  flowKey
	info parser.ConnInfo
	// clientIsLo says which end of key the ConnInfo calls the client.
	clientIsLo bool
	half       [2]half // by parser.Direction
	last       int64
	prev, next *flow
}

// half is one direction of a flow.
type half struct {
	// started is false until the first SYN or byte fixes next.
	started bool
	// next is the sequence number of the next byte to deliver.
	next uint32
	// fin is set once the FIN has been reached in order.
	fin bool
	// early holds segments beyond next, sorted by seq.
	early      []earlySeg
	earlyBytes int
	// holeSince is the packet time the oldest early segment arrived.
	holeSince int64
}

type earlySeg struct {
	seq     uint32
	data    []byte
	missing int
	fin     bool
}

// NewAssembler returns an Assembler that drives sink.
func NewAssembler(opts Options, sink Sink) *Assembler {
	return &Assembler{
		opts:  opts.withDefaults(),
		sink:  sink,
		flows: make(map[flowKey]*flow),
	}
}

// Stats returns the counters.
func (a *Assembler) Stats() Stats {
	s := a.stats
	s.Open = len(a.flows)
	return s
}

// seqDiff is a - b in sequence space (RFC 1982 style), so that numbers
// that wrapped around compare correctly.
func seqDiff(a, b uint32) int32 { return int32(a - b) }

// Segment processes one decoded segment captured at ts.
func (a *Assembler) Segment(ts int64, s *Segment) {
	a.stats.Segments++
	if ts-a.lastSweep >= a.opts.SweepInterval {
		a.Sweep(ts)
	}
	k, srcIsLo := keyOf(s.Src, s.Dst)
	f := a.flows[k]
	syn := s.Flags&FlagSYN != 0
	if f != nil && syn {
		dir := f.dirOf(srcIsLo)
		h := &f.half[dir]
		// A SYN that does not match what this direction already
		// started with is a new connection reusing the tuple.
		if h.started && seqDiff(s.Seq+1, h.next) != 0 {
			a.stats.Reused++
			a.end(f, ts)
			f = nil
		}
	}
	if f == nil {
		if s.Flags&FlagRST != 0 || (!syn && len(s.Payload) == 0 && s.Missing == 0) {
			// A bare ACK, FIN or RST of a flow not tracked (or
			// already closed) carries nothing to reassemble.
			a.stats.Ignored++
			return
		}
		f = a.open(k, srcIsLo, s, ts)
	} else {
		a.touch(f)
	}
	f.last = ts
	dir := f.dirOf(srcIsLo)
	h := &f.half[dir]

	// The peer acknowledged bytes of the other direction that are still
	// missing: the receiver has them, so the capture lost them and no
	// retransmission will come. Declare the hole now.
	if s.Flags&FlagACK != 0 {
		o := &f.half[dir.Other()]
		if o.started && len(o.early) > 0 && seqDiff(s.Ack, o.early[0].seq) >= 0 {
			a.skipHole(f, dir.Other(), ts)
		}
	}

	seq := s.Seq
	if syn {
		h.started = true
		h.next = seq + 1
		seq++
	}
	if s.Flags&FlagRST != 0 {
		a.stats.Closed++
		a.end(f, ts)
		return
	}
	fin := s.Flags&FlagFIN != 0
	if len(s.Payload) > 0 || s.Missing > 0 || fin {
		if !h.started {
			// Joined mid-connection: this direction starts here.
			h.started = true
			h.next = seq
		}
		a.add(f, dir, ts, seq, s.Payload, s.Missing, fin)
	}
	if f.half[0].fin && f.half[1].fin {
		a.stats.Closed++
		a.end(f, ts)
	}
}

func (f *flow) dirOf(srcIsLo bool) parser.Direction {
	if srcIsLo == f.clientIsLo {
		return parser.FromClient
	}
	return parser.FromServer
}

// open starts a flow for the segment s, making room if the table is full.
func (a *Assembler) open(k flowKey, srcIsLo bool, s *Segment, ts int64) *flow {
	for len(a.flows) >= a.opts.MaxFlows && a.tail != nil {
		a.stats.Evicted++
		a.end(a.tail, ts)
	}
	a.nextID++
	f := &flow{key: k}
	switch {
	case s.Flags&FlagSYN != 0 && s.Flags&FlagACK == 0:
		f.clientIsLo = srcIsLo // the SYN comes from the client
	case s.Flags&FlagSYN != 0:
		f.clientIsLo = !srcIsLo // the SYN-ACK comes from the server
	default:
		// No handshake seen: guess by port. The tracker corrects the
		// guess from the first bytes when they name their side.
		f.clientIsLo = !serverFirst(k.lo.Port(), k.hi.Port())
	}
	f.info.ID = a.nextID
	if f.clientIsLo {
		f.info.Client, f.info.Server = k.lo, k.hi
	} else {
		f.info.Client, f.info.Server = k.hi, k.lo
	}
	a.flows[k] = f
	a.stats.Flows++
	a.pushFront(f)
	return f
}

// serverFirst reports whether port a looks more like the server's than b:
// a well-known port beats a registered one, which beats an ephemeral one
// (Linux and IANA ranges); otherwise the lower port.
func serverFirst(a, b uint16) bool {
	ra, rb := portRank(a), portRank(b)
	if ra != rb {
		return ra < rb
	}
	return a <= b
}

func portRank(p uint16) int {
	switch {
	case p < 1024:
		return 0
	case p < 32768:
		return 1
	}
	return 2
}

// add places payload starting at seq in direction dir.
func (a *Assembler) add(f *flow, dir parser.Direction, ts int64, seq uint32, data []byte, missing int, fin bool) {
	h := &f.half[dir]
	if h.fin {
		// Bytes after the FIN are a retransmission or garbage.
		a.stats.Retransmitted += uint64(len(data))
		return
	}
	d := seqDiff(seq, h.next)
	if d > 0 {
		a.hold(f, dir, ts, seq, data, missing, fin)
		return
	}
	if !a.trimDeliver(f, dir, ts, seq, data, missing, fin) {
		return
	}
	a.drain(f, dir, ts)
}

// trimDeliver delivers the part of a segment at or before h.next that is
// new. It reports whether anything moved next forward.
func (a *Assembler) trimDeliver(f *flow, dir parser.Direction, ts int64, seq uint32, data []byte, missing int, fin bool) bool {
	h := &f.half[dir]
	old := int(-seqDiff(seq, h.next)) // bytes already delivered
	total := len(data) + missing
	if old > total || (old == total && !fin) {
		a.stats.Retransmitted += uint64(len(data))
		return false
	}
	if old > 0 {
		if old <= len(data) {
			a.stats.Retransmitted += uint64(old)
			data = data[old:]
		} else {
			a.stats.Retransmitted += uint64(len(data))
			missing -= old - len(data)
			data = nil
		}
	}
	if len(data) > 0 {
		a.stats.PayloadBytes += uint64(len(data))
		a.sink.Data(f.info.ID, &f.info, dir, ts, data)
		h.next += uint32(len(data))
	}
	if missing > 0 {
		a.stats.Snapped++
		a.stats.Gaps++
		a.stats.GapBytes += uint64(missing)
		a.sink.Gap(f.info.ID, &f.info, dir, ts, missing)
		h.next += uint32(missing)
	}
	if fin {
		h.fin = true
		h.next++
	}
	return true
}

// drain delivers early segments that the in-order stream has reached.
func (a *Assembler) drain(f *flow, dir parser.Direction, ts int64) {
	h := &f.half[dir]
	for len(h.early) > 0 && !h.fin {
		e := h.early[0]
		if seqDiff(e.seq, h.next) > 0 {
			break
		}
		h.early = h.early[1:]
		h.earlyBytes -= len(e.data)
		a.stats.Buffered -= len(e.data)
		a.trimDeliver(f, dir, ts, e.seq, e.data, e.missing, e.fin)
	}
	if h.fin {
		a.dropEarly(h)
	}
	if len(h.early) == 0 {
		h.early = h.early[:0:0]
	} else {
		h.holeSince = ts
	}
}

// hold keeps a segment that arrived before the bytes in front of it.
func (a *Assembler) hold(f *flow, dir parser.Direction, ts int64, seq uint32, data []byte, missing int, fin bool) {
	h := &f.half[dir]
	if len(h.early) == 0 {
		h.holeSince = ts
	}
	i, found := slices.BinarySearchFunc(h.early, seq, func(e earlySeg, s uint32) int {
		return int(seqDiff(e.seq, s))
	})
	if found && len(h.early[i].data)+h.early[i].missing >= len(data)+missing {
		// Same start and no longer: a retransmission of a held segment.
		a.stats.Retransmitted += uint64(len(data))
		return
	}
	a.stats.OutOfOrder++
	e := earlySeg{seq: seq, data: append([]byte(nil), data...), missing: missing, fin: fin}
	if found {
		h.earlyBytes -= len(h.early[i].data)
		a.stats.Buffered -= len(h.early[i].data)
		h.early[i] = e
	} else {
		h.early = slices.Insert(h.early, i, e)
	}
	h.earlyBytes += len(data)
	a.stats.Buffered += len(data)

	switch {
	case h.earlyBytes > a.opts.MaxBufferedPerDir, len(h.early) > a.opts.MaxSegmentsPerDir:
		a.skipHole(f, dir, ts)
	case ts-h.holeSince > a.opts.ReorderTimeout:
		a.skipHole(f, dir, ts)
	}
	if a.stats.Buffered > a.opts.MaxBufferedTotal {
		a.shed(ts)
	}
}

// skipHole declares the bytes before the first early segment lost, tells
// the sink, and delivers what follows.
func (a *Assembler) skipHole(f *flow, dir parser.Direction, ts int64) {
	h := &f.half[dir]
	for len(h.early) > 0 && !h.fin {
		n := seqDiff(h.early[0].seq, h.next)
		if n > 0 {
			a.stats.Gaps++
			a.stats.GapBytes += uint64(n)
			a.sink.Gap(f.info.ID, &f.info, dir, ts, int(n))
			h.next = h.early[0].seq
		}
		a.drain(f, dir, ts)
		// One hole at a time while the buffer is within bounds.
		if h.earlyBytes <= a.opts.MaxBufferedPerDir && len(h.early) <= a.opts.MaxSegmentsPerDir {
			break
		}
	}
}

// flushAll delivers everything a flow holds, declaring every hole lost.
func (a *Assembler) flushAll(f *flow, ts int64) {
	for d := range f.half {
		h := &f.half[d]
		for len(h.early) > 0 && !h.fin {
			a.skipHole(f, parser.Direction(d), ts)
		}
		a.dropEarly(h)
	}
}

func (a *Assembler) dropEarly(h *half) {
	a.stats.Buffered -= h.earlyBytes
	h.earlyBytes = 0
	h.early = nil
}

// shed brings the total of early bytes under its bound, flushing the least
// recently active flows first.
func (a *Assembler) shed(ts int64) {
	for f := a.tail; f != nil && a.stats.Buffered > a.opts.MaxBufferedTotal; f = f.prev {
		if f.half[0].earlyBytes+f.half[1].earlyBytes > 0 {
			a.flushAll(f, ts)
		}
	}
}

// end flushes a flow, closes it at the sink and forgets it.
func (a *Assembler) end(f *flow, ts int64) {
	a.flushAll(f, ts)
	a.sink.Close(f.info.ID, ts)
	a.unlink(f)
	delete(a.flows, f.key)
}

// Sweep closes flows idle for longer than IdleTimeout, declares holes older
// than ReorderTimeout lost, and lets the sink expire its own state, all at
// packet time now.
func (a *Assembler) Sweep(now int64) {
	a.lastSweep = now
	for f := a.tail; f != nil && now-f.last > a.opts.IdleTimeout; f = a.tail {
		a.stats.Expired++
		a.end(f, now)
	}
	if a.stats.Buffered > 0 {
		for f := a.head; f != nil; {
			next := f.next
			for d := range f.half {
				h := &f.half[d]
				if len(h.early) > 0 && now-h.holeSince > a.opts.ReorderTimeout {
					a.skipHole(f, parser.Direction(d), now)
				}
			}
			if f.half[0].fin && f.half[1].fin {
				a.stats.Closed++
				a.end(f, now)
			}
			f = next
		}
	}
	a.sink.Sweep(now)
}

// Flush delivers everything held and closes every flow at ts: the end of
// the input.
func (a *Assembler) Flush(ts int64) {
	for a.tail != nil {
		a.end(a.tail, ts)
	}
}

func (a *Assembler) touch(f *flow) {
	if a.head == f {
		return
	}
	a.unlink(f)
	a.pushFront(f)
}

func (a *Assembler) pushFront(f *flow) {
	f.prev = nil
	f.next = a.head
	if a.head != nil {
		a.head.prev = f
	}
	a.head = f
	if a.tail == nil {
		a.tail = f
	}
}

func (a *Assembler) unlink(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else if a.head == f {
		a.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else if a.tail == f {
		a.tail = f.prev
	}
	f.prev, f.next = nil, nil
}
