package http2

import (
	"bytes"

	"github.com/apisonar/apisonar/parser"
)

// DefaultMaxStreams bounds open streams per connection when
// Options.MaxStreams is 0.
const DefaultMaxStreams = 256

// probationFrames is how many frames after a blind synchronisation must
// look plausible before the reader trusts the framing.
const probationFrames = 3

// dirState is the frame reader of one direction (as the bytes flow, before
// any client/server swap).
type dirState struct {
	dec decoder

	started bool
	preface int // bytes of the client preface matched; -1 once decided
	synced  bool
	// clean is true while every byte of the direction since its start was
	// read in frame order: no gap, no resync.
	clean     bool
	scanning  bool // dropping bytes to find a frame header (counted once)
	probation int

	hdr  [frameHeaderLen]byte
	hdrN int

	fh        frameHeader
	fts       int64 // event time of the frame header
	inPayload bool
	left      int  // payload bytes still to come
	skip      bool // the rest of the frame is discarded
	buf       []byte
	direct    []byte // the whole payload, when one Feed held it

	// DATA streaming.
	needPad  bool
	dataLeft int

	// Header block assembly (HEADERS or PUSH_PROMISE, then CONTINUATION).
	blockOn       bool
	block         []byte
	blockSID      uint32
	blockPromised uint32
	blockPush     bool
	blockEnd      bool
	blockTS       int64
}

// Parser reads one HTTP/2 connection. See the package documentation.
type Parser struct {
	info  *parser.ConnInfo
	emit  parser.Emitter
	stats *parser.Stats
	opts  parser.Options

	maxStreams int
	hdrLimit   int

	dirs [2]dirState
	// swap is xored onto a physical direction to get its role.
	swap parser.Direction
	// swapped is info with the ends exchanged, what calls carry while
	// swap is set: the source's guess of the client was wrong for the
	// addresses too.
	swapped    parser.ConnInfo
	rolesSure  bool
	fromStart  bool
	firstReq   uint32 // lowest client stream whose request was seen
	maxReq     uint32 // highest client stream whose request was seen
	reqGapFrom uint32 // client streams above this may have lost requests

	streams []*stream // open, oldest first
	pool    []*stream
	last    *stream

	blk  blockInfo
	call parser.Call
	// frames is counted here and added to the shared Stats once per call:
	// one atomic per frame would bounce a cache line between sources.
	frames uint64

	closed bool
}

// New returns the parser of one HTTP/2 connection.
func New(info *parser.ConnInfo, emit parser.Emitter, stats *parser.Stats, opts parser.Options) *Parser {
	if stats == nil {
		stats = new(parser.Stats)
	}
	p := &Parser{info: info, emit: emit, stats: stats, opts: opts}
	p.maxStreams = opts.MaxStreams
	if p.maxStreams <= 0 {
		p.maxStreams = DefaultMaxStreams
	}
	p.hdrLimit = opts.HeaderLimit()
	for i := range p.dirs {
		d := &p.dirs[i]
		d.clean = true
		d.dec.reset()
	}
	p.blk.limit = p.hdrLimit
	return p
}

func (p *Parser) role(dir parser.Direction) parser.Direction { return dir ^ p.swap }

// Feed implements parser.StreamParser.
func (p *Parser) Feed(dir parser.Direction, ts int64, data []byte) {
	if p.closed || dir > parser.FromServer || len(data) == 0 {
		return
	}
	d := &p.dirs[dir]
	if !d.started {
		d.started = true
		if data[0] == clientPreface[0] {
			d.preface = 0
		} else {
			d.preface = -1
		}
	}
	for len(data) > 0 {
		if d.preface >= 0 {
			n := min(len(clientPreface)-d.preface, len(data))
			if !bytes.Equal(data[:n], clientPreface[d.preface:d.preface+n]) {
				if d.preface > 0 {
					// Looked like a preface, was not: those bytes are gone.
					d.clean = false
					p.stats.Resyncs.Add(1)
				}
				d.preface = -1
				continue
			}
			d.preface += n
			data = data[n:]
			if d.preface == len(clientPreface) {
				d.preface = -1
				p.sawPreface(dir)
			}
			continue
		}
		if !d.inPayload {
			n := copy(d.hdr[d.hdrN:], data)
			d.hdrN += n
			data = data[n:]
			if d.hdrN < frameHeaderLen {
				return
			}
			fh := parseFrameHeader(&d.hdr)
			if !d.synced || d.probation > 0 {
				if !plausible(fh) || !p.plausibleStream(fh) {
					if d.synced {
						// The blind sync was wrong after all.
						p.loseFraming(dir)
					}
					if !d.scanning {
						d.scanning = true
						d.clean = false
						p.stats.Resyncs.Add(1)
						p.damageAll(p.role(dir))
					}
					copy(d.hdr[:], d.hdr[1:])
					d.hdrN = frameHeaderLen - 1
					continue
				}
				if !d.synced {
					d.synced = true
					d.probation = probationFrames
					if d.scanning {
						// What the dropped bytes carried is lost for
						// every stream open now.
						p.damageAll(p.role(dir))
						d.scanning = false
					}
				} else {
					d.probation--
				}
			}
			d.hdrN = 0
			p.frames++
			p.beginFrame(dir, d, fh, ts)
			if d.left == 0 {
				p.endFrame(dir, d, ts)
			}
			continue
		}
		n := min(d.left, len(data))
		chunk := data[:n]
		data = data[n:]
		d.left -= n
		p.payload(dir, d, chunk)
		if d.left == 0 {
			p.endFrame(dir, d, ts)
		}
	}
}

// plausibleStream rejects frames on streams far from any seen, which a
// reader scanning random bytes would otherwise accept.
func (p *Parser) plausibleStream(fh frameHeader) bool {
	if fh.stream == 0 || p.maxReq == 0 {
		return true
	}
	return fh.stream <= p.maxReq+1<<12
}

// sawPreface learns from the client preface: the direction is the client,
// and the connection is seen from its start, so both tables are known.
func (p *Parser) sawPreface(dir parser.Direction) {
	if p.role(dir) != parser.FromClient && !p.rolesSure {
		p.swapSides()
	}
	p.rolesSure = true
	p.fromStart = p.dirs[dir].clean
	d := &p.dirs[dir]
	d.synced = true
	o := &p.dirs[dir^1]
	if !o.started {
		// The peer's first byte will start its first frame.
		o.started = true
		o.preface = -1
		o.synced = true
	}
	for i := range p.dirs {
		if p.dirs[i].clean && p.fromStart {
			p.dirs[i].dec.startKnown()
		}
	}
}

func (p *Parser) beginFrame(dir parser.Direction, d *dirState, fh frameHeader, ts int64) {
	d.fh = fh
	d.fts = ts
	d.left = fh.length
	d.inPayload = fh.length > 0
	d.skip = false
	d.direct = nil
	d.buf = d.buf[:0]
	if d.blockOn && (fh.typ != frameContinuation || fh.stream != d.blockSID) {
		// RFC 9113 §6.10: nothing may interleave a header block.
		p.stats.H2FrameErrors.Add(1)
		p.blockLost(dir, d)
	}
	if !wellFormed(fh) {
		p.stats.H2FrameErrors.Add(1)
		d.skip = true
		if fh.typ == frameHeaders || fh.typ == frameContinuation || fh.typ == framePushPromise {
			p.blockLost(dir, d)
		}
		return
	}
	switch fh.typ {
	case frameData:
		d.needPad = fh.flags&flagPadded != 0
		d.dataLeft = fh.length
	case frameHeaders, framePushPromise, frameContinuation:
		if fh.typ == frameContinuation && !d.blockOn {
			p.stats.H2FrameErrors.Add(1)
			d.skip = true
			return
		}
		if fh.length > p.hdrLimit {
			p.stats.HeaderTooBig.Add(1)
			d.skip = true
			if fh.typ != frameContinuation {
				d.blockSID = fh.stream
			}
			p.blockLost(dir, d)
		}
	case frameRSTStream, framePriority, frameSettings, framePing, frameGoAway, frameWindowUpdate:
		if fh.length > maxControlFrame {
			p.stats.H2FrameErrors.Add(1)
			d.skip = true
		}
	default:
		d.skip = true // unknown frame types are ignored
	}
}

// payload takes the next piece of the current frame's payload.
func (p *Parser) payload(dir parser.Direction, d *dirState, chunk []byte) {
	if d.skip {
		return
	}
	if d.fh.typ == frameData {
		if d.needPad {
			d.needPad = false
			pad := int(chunk[0])
			chunk = chunk[1:]
			d.dataLeft = d.fh.length - 1 - pad
			if d.dataLeft < 0 {
				p.stats.H2FrameErrors.Add(1)
				d.dataLeft = 0
			}
		}
		n := min(d.dataLeft, len(chunk))
		d.dataLeft -= n
		if n > 0 {
			p.data(dir, d.fh.stream, chunk[:n])
		}
		return
	}
	if len(d.buf) == 0 && len(chunk) == d.fh.length {
		d.direct = chunk
		return
	}
	d.buf = append(d.buf, chunk...)
}

// endFrame acts on a complete frame.
func (p *Parser) endFrame(dir parser.Direction, d *dirState, ts int64) {
	d.inPayload = false
	fh := d.fh
	pl := d.direct
	if pl == nil {
		pl = d.buf
	}
	d.direct = nil
	if d.skip {
		d.buf = d.buf[:0]
		return
	}
	switch fh.typ {
	case frameData:
		if fh.flags&flagEndStream != 0 {
			p.endStream(dir, fh.stream, ts)
		}
	case frameHeaders:
		frag, ok := unpad(pl, fh.flags, 0)
		if ok && fh.flags&flagPriority != 0 {
			if len(frag) < 5 {
				ok = false
			} else {
				frag = frag[5:]
			}
		}
		if !ok {
			p.stats.H2FrameErrors.Add(1)
			d.blockSID = fh.stream
			p.blockLost(dir, d)
			break
		}
		d.blockOn, d.blockPush, d.blockSID, d.blockPromised = true, false, fh.stream, 0
		d.blockEnd = fh.flags&flagEndStream != 0
		d.blockTS = d.fts
		p.fragment(dir, d, frag, fh.flags&flagEndHeaders != 0, ts)
	case framePushPromise:
		frag, ok := unpad(pl, fh.flags, 4)
		if !ok {
			p.stats.H2FrameErrors.Add(1)
			d.blockSID = fh.stream
			p.blockLost(dir, d)
			break
		}
		d.blockOn, d.blockPush, d.blockSID = true, true, fh.stream
		d.blockPromised = be32(frag) & 0x7fffffff
		d.blockEnd = false
		d.blockTS = d.fts
		p.fragment(dir, d, frag[4:], fh.flags&flagEndHeaders != 0, ts)
	case frameContinuation:
		p.fragment(dir, d, pl, fh.flags&flagEndHeaders != 0, ts)
	case frameRSTStream:
		p.reset(fh.stream, ts)
	case frameSettings:
		if fh.flags&flagAck == 0 {
			for s := pl; len(s) >= 6; s = s[6:] {
				if uint16(s[0])<<8|uint16(s[1]) == settingHeaderTableSize {
					// The sender decodes with this table: it bounds
					// the peer's encoder.
					p.dirs[dir^1].dec.setLimit(be32(s[2:]))
				}
			}
		}
	case frameGoAway:
		p.goAway(dir, be32(pl)&0x7fffffff, ts)
	}
	d.buf = d.buf[:0]
	if cap(d.buf) > keepBuffer {
		d.buf = nil // a rare big frame: do not pin it per connection
	}
}

// keepBuffer is the capacity a connection keeps in a reused buffer; more is
// released after use, so that idle connections stay small.
const keepBuffer = 4 << 10

// unpad strips the padding (and a fixed prefix of at least min bytes that
// stays in front) from a HEADERS or PUSH_PROMISE payload.
func unpad(pl []byte, flags uint8, min int) ([]byte, bool) {
	if flags&flagPadded == 0 {
		return pl, len(pl) >= min
	}
	if len(pl) < 1 {
		return nil, false
	}
	pad := int(pl[0])
	pl = pl[1:]
	if pad > len(pl)-min {
		return nil, false
	}
	return pl[:len(pl)-pad], true
}

// fragment adds a piece of a header block and decodes the block once whole.
func (p *Parser) fragment(dir parser.Direction, d *dirState, frag []byte, end bool, ts int64) {
	if end && len(d.block) == 0 {
		p.headerBlock(dir, d, frag, ts)
		return
	}
	if len(d.block)+len(frag) > p.hdrLimit {
		p.stats.HeaderTooBig.Add(1)
		p.blockLost(dir, d)
		return
	}
	d.block = append(d.block, frag...)
	if end {
		p.headerBlock(dir, d, d.block, ts)
	}
}

// blockLost gives up a header block that cannot be decoded whole: the
// table missed its insertions, and its stream lost headers.
func (p *Parser) blockLost(dir parser.Direction, d *dirState) {
	d.dec.reset()
	d.blockOn = false
	d.block = d.block[:0]
	if st := p.find(d.blockSID); st != nil {
		st.flags |= parser.FlagPartial
	}
}

func (p *Parser) headerBlock(dir parser.Direction, d *dirState, block []byte, ts int64) {
	d.blockOn = false
	p.blk.reset()
	if err := d.dec.decode(block, &p.blk); err != nil {
		p.stats.Errors.Add(1)
		p.blk.partial = true
		if d.probation > 0 {
			// Garbage taken for a frame: look for frames again, and
			// report nothing from it.
			p.loseFraming(dir)
			return
		}
	}
	if n := d.dec.dropped; n > 0 {
		// Table sizes or entries beyond the hard cap: a bomb, or a peer
		// beyond what we keep.
		p.stats.HeaderTooBig.Add(uint64(n))
		d.dec.dropped = 0
	}
	if u := d.dec.unknown; u > 0 {
		p.stats.HPACKUnknown.Add(uint64(u))
		p.blk.partial = true
	}
	d.block = d.block[:0]
	if cap(d.block) > keepBuffer {
		d.block = nil
	}
	p.applyBlock(dir, d, ts)
}

// applyBlock gives a decoded header block its meaning: a request, a
// response, or trailers.
func (p *Parser) applyBlock(dir parser.Direction, d *dirState, ts int64) {
	b := &p.blk
	hasReq := b.has(kMethod) || b.has(kPath)
	hasResp := b.has(kStatus)
	r := p.role(dir)
	switch {
	case d.blockPush || hasReq && !hasResp:
		if r != parser.FromClient && !d.blockPush || r == parser.FromClient && d.blockPush {
			if p.rolesSure {
				p.stats.Errors.Add(1)
				return
			}
			p.swapSides()
			r = r.Other()
		}
		p.rolesSure = true
	case hasResp && !hasReq:
		if r != parser.FromServer {
			if p.rolesSure {
				p.stats.Errors.Add(1)
				return
			}
			p.swapSides()
			r = r.Other()
		}
		p.rolesSure = true
	case hasResp && hasReq:
		p.stats.Errors.Add(1)
		return
	}
	if d.blockPush {
		if p.find(d.blockPromised) != nil || d.blockPromised == 0 {
			return
		}
		st := p.open(d.blockPromised, d.blockTS)
		p.setRequest(st)
		st.reqDone = true
		return
	}
	sid := d.blockSID
	st := p.find(sid)
	if r == parser.FromClient {
		if st == nil {
			if !hasReq && !b.partial {
				return // trailers of a stream we do not follow
			}
			st = p.open(sid, d.blockTS)
			if p.firstReq == 0 || sid < p.firstReq {
				p.firstReq = sid
			}
			p.maxReq = max(p.maxReq, sid)
		}
		if !st.reqHdr {
			p.setRequest(st)
		} else if b.partial {
			st.flags |= parser.FlagPartial
		}
		if d.blockEnd {
			st.reqDone = true
		}
		return
	}
	if st == nil {
		if !p.responseOnlyOK(sid) {
			return
		}
		// Its request went by before we joined: report what is known.
		st = p.open(sid, d.blockTS)
		st.flags |= parser.FlagPartial
	}
	if !st.respHdr {
		if !hasResp {
			// A response starts with :status; this block is not its
			// first (or :status was unresolved).
			st.flags |= parser.FlagPartial
		}
		if hasResp {
			code := b.status()
			if code >= 100 && code < 200 && code != 101 && !d.blockEnd {
				return // informational; the final response follows
			}
		}
		p.setResponse(st)
	} else {
		p.setTrailers(st)
	}
	if d.blockEnd {
		p.finish(st, ts)
	}
}

// swapSides exchanges the roles of the two directions.
func (p *Parser) swapSides() {
	p.swap ^= 1
	p.stats.DirSwaps.Add(1)
	if p.info != nil {
		p.swapped = *p.info
		p.swapped.Client, p.swapped.Server = p.info.Server, p.info.Client
		p.swapped.Side = p.info.Side.Flip()
	}
}

// conn is the connection description calls carry.
func (p *Parser) conn() *parser.ConnInfo {
	if p.swap != 0 && p.info != nil {
		return &p.swapped
	}
	return p.info
}

// responseOnlyOK tells whether a response on a stream we hold no request
// for belongs to a request sent before we could see it (rather than to a
// stream already reported).
func (p *Parser) responseOnlyOK(sid uint32) bool {
	if sid%2 == 0 {
		return false // pushed streams start with a PUSH_PROMISE
	}
	if p.reqGapFrom != 0 && sid > p.reqGapFrom {
		return true
	}
	if p.fromStart {
		return false
	}
	return p.firstReq == 0 || sid < p.firstReq
}

// data takes DATA payload bytes of one stream.
func (p *Parser) data(dir parser.Direction, sid uint32, b []byte) {
	st := p.find(sid)
	if st == nil {
		return
	}
	r := p.role(dir)
	if r == parser.FromClient {
		st.reqBytes += int64(len(b))
	} else {
		st.respBytes += int64(len(b))
	}
	if room := p.opts.MaxBodyPrefix - len(st.body[r]); room > 0 {
		st.body[r] = append(st.body[r], b[:min(room, len(b))]...)
	}
	st.msgs[r].feed(b)
}

func (p *Parser) endStream(dir parser.Direction, sid uint32, ts int64) {
	st := p.find(sid)
	if st == nil {
		return
	}
	if p.role(dir) == parser.FromClient {
		st.reqDone = true
		return
	}
	p.finish(st, ts)
}

func (p *Parser) reset(sid uint32, ts int64) {
	st := p.find(sid)
	if st == nil {
		return
	}
	st.flags |= parser.FlagReset
	p.finish(st, ts)
}

// goAway ends the streams the sender will not process: those its peer
// opened above lastID.
func (p *Parser) goAway(dir parser.Direction, lastID uint32, ts int64) {
	opener := uint32(1) // client streams are odd
	if p.role(dir) == parser.FromClient {
		opener = 0
	}
	for i := 0; i < len(p.streams); {
		st := p.streams[i]
		if st.id > lastID && st.id%2 == opener && !st.respHdr {
			p.finish(st, ts) // removes st from p.streams
			continue
		}
		i++
	}
}

// Gap implements parser.StreamParser.
func (p *Parser) Gap(dir parser.Direction, ts int64, n int) {
	if p.closed || dir > parser.FromServer {
		return
	}
	p.stats.Gaps.Add(1)
	if n > 0 {
		p.stats.GapBytes.Add(uint64(n))
	}
	d := &p.dirs[dir]
	d.clean = false
	if d.synced && d.inPayload && n > 0 && n <= d.left {
		// The loss is inside one frame: its content is gone, the framing
		// is not.
		p.skipPayload(dir, d, n)
		if d.left == 0 {
			p.endFrame(dir, d, ts)
		}
		return
	}
	p.loseFraming(dir)
}

// skipPayload accounts for n lost bytes of the current frame's payload.
func (p *Parser) skipPayload(dir parser.Direction, d *dirState, n int) {
	d.left -= n
	if d.skip {
		return
	}
	if d.fh.typ == frameData {
		if d.needPad {
			// The pad length went with the loss: count the rest as data.
			d.needPad = false
			d.dataLeft = d.fh.length - 1
		}
		lost := min(n, d.dataLeft)
		d.dataLeft -= lost
		if st := p.find(d.fh.stream); st != nil {
			// The size is known even though the bytes are not.
			if p.role(dir) == parser.FromClient {
				st.reqBytes += int64(lost)
			} else {
				st.respBytes += int64(lost)
			}
			p.damaged(st, p.role(dir))
		}
		return
	}
	d.skip = true
	switch d.fh.typ {
	case frameHeaders, framePushPromise, frameContinuation:
		if d.fh.typ != frameContinuation {
			d.blockSID = d.fh.stream
		}
		p.blockLost(dir, d)
	}
}

// damaged marks a stream whose bytes in direction r were partly lost.
func (p *Parser) damaged(st *stream, r parser.Direction) {
	if r == parser.FromClient {
		st.flags |= parser.FlagReqTruncated
	} else {
		st.flags |= parser.FlagRespTruncated
	}
	st.msgs[r].lost = true
}

func (p *Parser) flushFrames() {
	if p.frames > 0 {
		p.stats.H2Frames.Add(p.frames)
		p.frames = 0
	}
}

// damageAll marks every open stream as having lost bytes in direction r.
func (p *Parser) damageAll(r parser.Direction) {
	for _, st := range p.streams {
		st.flags |= parser.FlagPartial
		p.damaged(st, r)
	}
}

// loseFraming drops a direction back to looking for a frame header; every
// open stream may have lost frames and the table may have missed entries.
func (p *Parser) loseFraming(dir parser.Direction) {
	d := &p.dirs[dir]
	d.synced = false
	d.clean = false
	d.probation = 0
	d.hdrN = 0
	d.inPayload = false
	d.skip = false
	d.buf = d.buf[:0]
	d.direct = nil
	if d.preface >= 0 {
		d.preface = -1
	}
	d.blockOn = false
	d.block = d.block[:0]
	d.dec.reset()
	r := p.role(dir)
	p.damageAll(r)
	if r == parser.FromClient {
		p.reqGapFrom = max(p.maxReq, 1)
	}
}

// Close implements parser.StreamParser.
func (p *Parser) Close(ts int64) {
	if p.closed {
		return
	}
	for len(p.streams) > 0 {
		st := p.streams[0]
		if st.respHdr {
			st.flags |= parser.FlagRespTruncated
		}
		p.finish(st, ts)
	}
	p.flushFrames()
	p.closed = true
	p.pool = nil
	p.streams = nil
	for i := range p.dirs {
		p.dirs[i] = dirState{}
	}
}
