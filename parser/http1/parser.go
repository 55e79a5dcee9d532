package http1

import (
	"github.com/apisonar/apisonar/parser"
)

// DefaultMaxPending bounds the requests waiting for responses when
// Options.MaxPending is 0.
const DefaultMaxPending = 32

// state is where a direction stands in its current message.
type state uint8

const (
	// stHead: between messages or inside a header block.
	stHead state = iota
	// stBody: inside a Content-Length body; remain bytes are left.
	stBody
	// stChunkSize: reading a chunk-size line (with extensions).
	stChunkSize
	// stChunkData: inside chunk data; remain bytes are left.
	stChunkData
	// stChunkEnd: expecting the CRLF that closes chunk data.
	stChunkEnd
	// stTrailers: reading trailer fields after the last chunk.
	stTrailers
	// stUntilClose: a response body delimited by the connection's end.
	stUntilClose
	// stResync: discarding bytes until a plausible start line.
	stResync
	// stWait: the client asked to switch protocols (Upgrade, CONNECT);
	// its next bytes are held until the answer tells whether they are
	// still HTTP/1 (a refusal) or belong to the new protocol.
	stWait
	// stIgnore: the peer's bytes are no longer parsed (an upgraded or
	// tunnelled connection, or after Close).
	stIgnore
)

// maxLine bounds a chunk-size or trailer line when the header limit is
// larger; chunk extensions are rarely more than a few dozen bytes.
const maxLine = 4 << 10

// half is the reading state of one direction.
type half struct {
	st state
	// buf holds an incomplete header block, chunk line or resync probe.
	buf []byte
	// valid is how much of an incomplete header block in buf was checked
	// (0: not even the start line), and fields what those lines said;
	// so a block fed byte by byte is read once.
	valid  int
	fields fields
	// remain is what is left of a Content-Length body or a chunk.
	remain int64
	// chunkCR is true when the CR closing chunk data has been seen.
	chunkCR bool
	// lineStart is true in stResync when the next byte starts a line.
	lineStart bool
	// afterGap marks the next message as found by a resync.
	afterGap bool
	// start is the event time of the first byte of the current message.
	start int64
	// last is the event time of the last byte seen in this direction.
	last int64
}

// keepBuf is the largest buffer or arena kept for the next message: a rare
// huge header block must not pin its memory on every idle connection.
const keepBuf = 8 << 10

// clear empties the buffer, giving back an unusually large one.
func (h *half) clear() {
	if cap(h.buf) > keepBuf {
		h.buf, h.fields = nil, fields{}
		return
	}
	h.buf = h.buf[:0]
}

// span locates a field inside a request's arena.
type span struct{ off, n int32 }

// request is a request read from the client, waiting for its response.
type request struct {
	seq    uint64
	start  int64
	method span
	host   span
	path   span
	query  span
	hdr    [parser.NumHeaders]span
	// arena holds the fields above, then the body prefix.
	arena   []byte
	bodyOff int
	bytes   int64
	flags   uint16
	head    bool // HEAD: the response has no body
	connect bool // CONNECT: a 2xx response opens a tunnel
	h2c     bool // asked to upgrade to h2c
	// switching: the request asks to leave HTTP/1 (Upgrade or CONNECT).
	switching bool
	done      bool // the request message was read to its end
	// frozen stops the body prefix at a hole so that it never joins
	// bytes from both sides of lost data.
	frozen bool
	// afterGap: found by a resync, so a response that began before it
	// cannot be its answer.
	afterGap bool
}

// response is the server's message being read.
type response struct {
	active bool
	// orphan: there is no request to pair with; read to keep framing.
	orphan bool
	seq    uint64 // the request it answers
	status int
	start  int64
	bytes  int64
	flags  uint16
	ctype  []byte
	body   []byte
	// upgrade is the protocol a 101 switches to.
	upgrade parser.Protocol
	// tunnel: a 101 to anything but h2c, or a 2xx to CONNECT.
	tunnel bool
	// frozen: the body prefix stopped at a hole.
	frozen bool
}

// Parser parses one HTTP/1.x connection. It implements parser.StreamParser
// and parser.Switcher. It is not safe for concurrent use.
type Parser struct {
	info  *parser.ConnInfo
	emit  parser.Emitter
	stats *parser.Stats

	maxHeader  int
	maxBody    int
	maxPending int

	half [2]half

	// queue is a ring of pending requests: qlen entries from qhead.
	queue  []request
	qhead  int
	qlen   int
	seq    uint64
	curReq uint64 // seq of the request the client is sending
	// waitLost is set when the client sent more than the header limit
	// while waiting for the answer to its upgrade.
	waitLost bool
	// spare is swapped with the client buffer to replay held bytes.
	spare    []byte
	skip     int // responses owed to evicted requests
	resp     response
	call     parser.Call
	switchTo parser.Protocol
	// upgraded is the request handed to HTTP/2 after a 101 to h2c.
	upgraded *parser.Call
	leftover [2][]byte
	closed   bool
}

// New returns a parser for one connection. info is kept and set on every
// call; stats is shared and updated atomically.
func New(info *parser.ConnInfo, emit parser.Emitter, stats *parser.Stats, opts parser.Options) *Parser {
	if stats == nil {
		stats = &parser.Stats{}
	}
	p := &Parser{
		info:       info,
		emit:       emit,
		stats:      stats,
		maxHeader:  opts.HeaderLimit(),
		maxBody:    max(opts.MaxBodyPrefix, 0),
		maxPending: opts.MaxPending,
	}
	if p.maxPending <= 0 {
		p.maxPending = DefaultMaxPending
	}
	return p
}

// Switch reports a protocol change after a 101 or a CONNECT tunnel. The
// leftover bytes stay valid until the parser is used again (Close does not
// touch them).
func (p *Parser) Switch() (parser.Protocol, [2][]byte) {
	return p.switchTo, p.leftover
}

// Feed parses bytes that dir sent at event time ts.
func (p *Parser) Feed(dir parser.Direction, ts int64, data []byte) {
	if dir > parser.FromServer || p.closed || p.switchTo != parser.ProtoUnknown {
		return
	}
	h := &p.half[dir]
	h.last = ts
	for len(data) > 0 {
		if h.st == stIgnore {
			return
		}
		n := p.step(dir, ts, data)
		if p.switchTo != parser.ProtoUnknown {
			if p.switchTo == parser.ProtoHTTP2 && dir == parser.FromServer {
				// Keep the bytes that follow the 101 for the next parser.
				h.buf = append(h.buf[:0], data[n:]...)
				p.leftover[dir] = h.buf
			}
			return
		}
		data = data[n:]
	}
}

// step consumes a prefix of data according to dir's state and returns its
// length. It returns 0 only after changing state, so Feed always advances.
func (p *Parser) step(dir parser.Direction, ts int64, data []byte) int {
	h := &p.half[dir]
	switch h.st {
	case stHead:
		return p.readHead(dir, ts, data)
	case stBody:
		n := int(min(int64(len(data)), h.remain))
		p.body(dir, data[:n])
		h.remain -= int64(n)
		if h.remain == 0 {
			p.messageDone(dir, ts)
		}
		return n
	case stChunkSize, stTrailers:
		return p.readChunkLine(dir, ts, data)
	case stChunkData:
		n := int(min(int64(len(data)), h.remain))
		p.body(dir, data[:n])
		h.remain -= int64(n)
		if h.remain == 0 {
			h.st, h.chunkCR = stChunkEnd, false
		}
		return n
	case stChunkEnd:
		return p.readChunkEnd(dir, ts, data)
	case stUntilClose:
		p.body(dir, data)
		return len(data)
	case stResync:
		return p.resync(dir, ts, data)
	case stWait:
		take := min(len(data), p.maxHeader-len(h.buf))
		h.buf = append(h.buf, data[:take]...)
		if take < len(data) {
			p.waitLost = true
		}
		return len(data)
	}
	return len(data)
}

// readChunkEnd consumes the CRLF after chunk data. A bare LF is accepted; any
// other byte means the chunk size lied.
func (p *Parser) readChunkEnd(dir parser.Direction, ts int64, data []byte) int {
	h := &p.half[dir]
	switch {
	case data[0] == '\r' && !h.chunkCR:
		h.chunkCR = true
		return 1
	case data[0] == '\n':
		h.st = stChunkSize
		h.buf = h.buf[:0]
		return 1
	}
	p.malformed(dir, ts)
	return 0
}

// body accounts body bytes of dir's current message and keeps a prefix.
func (p *Parser) body(dir parser.Direction, b []byte) {
	if len(b) == 0 {
		return
	}
	if dir == parser.FromServer {
		r := &p.resp
		r.bytes += int64(len(b))
		if !r.orphan && !r.frozen {
			if room := p.maxBody - len(r.body); room > 0 {
				r.body = append(r.body, b[:min(room, len(b))]...)
			}
		}
		return
	}
	rq := p.current()
	if rq == nil {
		return
	}
	rq.bytes += int64(len(b))
	if room := p.maxBody - (len(rq.arena) - rq.bodyOff); room > 0 && !rq.frozen {
		rq.arena = append(rq.arena, b[:min(room, len(b))]...)
	}
}

// messageDone ends dir's current message at ts and readies the direction for
// the next one.
func (p *Parser) messageDone(dir parser.Direction, ts int64) {
	h := &p.half[dir]
	h.st = stHead
	h.clear()
	if dir == parser.FromClient {
		if rq := p.current(); rq != nil {
			rq.done = true
			if rq.switching {
				h.st = stWait
			}
		}
		return
	}
	p.finishResponse(ts)
}

// current returns the request the client is still sending, nil when it was
// already emitted or evicted.
func (p *Parser) current() *request {
	if p.qlen == 0 {
		return nil
	}
	rq := p.at(p.qlen - 1)
	if rq.seq != p.curReq {
		return nil
	}
	return rq
}

// at returns the i-th pending request, 0 being the oldest.
func (p *Parser) at(i int) *request {
	return &p.queue[(p.qhead+i)%len(p.queue)]
}

// push appends a request slot to the queue, evicting the oldest pending
// request when the queue is full, and returns the slot for filling.
func (p *Parser) push() *request {
	if p.qlen == p.maxPending {
		p.evictOldest()
	}
	if p.qlen == len(p.queue) {
		p.grow()
	}
	rq := p.at(p.qlen)
	p.qlen++
	p.seq++
	arena := rq.arena[:0]
	if cap(arena) > keepBuf+p.maxBody {
		arena = nil
	}
	*rq = request{seq: p.seq, arena: arena}
	return rq
}

// grow doubles the ring up to maxPending, keeping the order and the arenas
// of the slots.
func (p *Parser) grow() {
	n := min(max(2*len(p.queue), 2), p.maxPending)
	q := make([]request, n)
	for i := range p.queue {
		q[i] = *p.at(i)
	}
	p.queue, p.qhead = q, 0
}

// evictOldest drops the oldest pending request. Its response, when it comes,
// must not be paired with a younger request, so it is owed a skip.
func (p *Parser) evictOldest() {
	rq := p.at(0)
	p.stats.PendingDrops.Add(1)
	if p.resp.active && !p.resp.orphan && p.resp.seq == rq.seq {
		p.resp.orphan = true
	} else {
		p.skip++
	}
	p.pop()
}

func (p *Parser) pop() {
	p.qhead = (p.qhead + 1) % len(p.queue)
	p.qlen--
}

// finishResponse ends the server's current message: interim responses wait
// for the final one, final responses emit their call, and the answer to an
// upgrade or CONNECT decides what the client's held bytes are.
func (p *Parser) finishResponse(ts int64) {
	r := &p.resp
	if !r.active {
		return
	}
	r.active = false
	if r.status >= 100 && r.status < 200 && r.status != 101 {
		return
	}
	if !r.orphan && p.qlen > 0 && p.at(0).seq == r.seq {
		if r.upgrade == parser.ProtoHTTP2 {
			// Its answer comes on HTTP/2 stream 1: hand it over
			// rather than report the 101.
			p.upgraded = p.headCall(ts, 0).Clone()
			p.pop()
		} else {
			p.emitHead(ts, 0)
		}
	}
	switch {
	case r.upgrade != parser.ProtoUnknown:
		p.switchTo = r.upgrade
	case r.tunnel:
		p.switchTo = parser.ProtoNone
	}
	cl := &p.half[parser.FromClient]
	if p.switchTo != parser.ProtoUnknown {
		p.stats.Upgrades.Add(1)
		if cl.st == stWait || (cl.st == stHead && len(cl.buf) > 0) {
			p.leftover[parser.FromClient] = cl.buf
		}
		cl.st = stIgnore
		p.half[parser.FromServer].st = stIgnore
		return
	}
	if cl.st == stWait && !r.orphan && r.seq == p.curReq {
		p.resumeClient()
	}
}

// resumeClient parses the bytes the client sent while waiting for the
// answer to its upgrade, now that the answer kept the connection HTTP/1.
func (p *Parser) resumeClient() {
	cl := &p.half[parser.FromClient]
	held := cl.buf
	cl.buf, p.spare = p.spare[:0], nil
	cl.st = stHead
	if p.waitLost {
		p.waitLost = false
		p.startResync(parser.FromClient, cl.last, true)
	}
	for b := held; len(b) > 0 && cl.st != stIgnore && p.switchTo == parser.ProtoUnknown; {
		b = b[p.step(parser.FromClient, cl.last, b):]
	}
	p.spare = held[:0]
}

// UpgradedRequest returns the request that upgraded the connection to
// h2c, for the HTTP/2 parser to finish on stream 1; nil otherwise.
func (p *Parser) UpgradedRequest() *parser.Call { return p.upgraded }

// emitHead emits the oldest pending request with the response read so far
// (when one is active for it) and removes it from the queue.
func (p *Parser) emitHead(end int64, flags uint16) {
	c := p.headCall(end, flags)
	if c.Flags&parser.FlagReqTruncated != 0 {
		p.stats.Truncated.Add(1)
	}
	if c.Flags&parser.FlagRespTruncated != 0 {
		p.stats.Truncated.Add(1)
	}
	p.pop()
	p.stats.Calls.Add(1)
	if p.emit != nil {
		p.emit.Emit(c)
	}
}

// headCall builds the call of the oldest pending request with the response
// read so far (when one is active for it) in the reused Call.
func (p *Parser) headCall(end int64, flags uint16) *parser.Call {
	rq := p.at(0)
	c := &p.call
	c.Reset()
	c.Protocol = parser.ProtoHTTP1
	c.Conn = p.info
	c.Start, c.End = rq.start, end
	c.Method = rq.field(rq.method)
	c.Host = rq.field(rq.host)
	c.Path = rq.field(rq.path)
	c.Query = rq.field(rq.query)
	for i, s := range rq.hdr {
		c.ReqHeaders[i] = rq.field(s)
	}
	c.ReqBytes = rq.bytes
	if p.maxBody > 0 {
		c.ReqBody = rq.arena[rq.bodyOff:]
	}
	c.Flags = rq.flags | flags
	if !rq.done {
		c.Flags |= parser.FlagReqTruncated
	}
	r := &p.resp
	if r.seq == rq.seq && !r.orphan && (r.status >= 200 || r.status == 101) {
		c.Status = r.status
		c.RespBytes = r.bytes
		if len(r.ctype) > 0 {
			c.RespContentType = r.ctype
		}
		if p.maxBody > 0 {
			c.RespBody = r.body
		}
		c.Flags |= r.flags
		if r.upgrade != parser.ProtoUnknown || r.tunnel {
			c.Flags |= parser.FlagUpgrade
		}
		if r.active {
			// Emitted before the response ended.
			c.Flags |= parser.FlagRespTruncated
		}
	} else {
		c.Flags |= parser.FlagNoResponse
		p.stats.NoResponse.Add(1)
	}
	return c
}

func (rq *request) field(s span) []byte {
	if s.n == 0 {
		return nil
	}
	return rq.arena[s.off : s.off+s.n : s.off+s.n]
}

// Gap records that n bytes sent by dir were lost. Inside a body of known
// length the bytes are skipped and the body flagged truncated; anywhere else
// the direction resynchronises.
func (p *Parser) Gap(dir parser.Direction, ts int64, n int) {
	if dir > parser.FromServer || p.closed || p.switchTo != parser.ProtoUnknown {
		return
	}
	p.stats.Gaps.Add(1)
	if n > 0 {
		p.stats.GapBytes.Add(uint64(n))
	}
	h := &p.half[dir]
	h.last = ts
	flag := parser.FlagReqTruncated
	if dir == parser.FromServer {
		flag = parser.FlagRespTruncated
	}
	switch h.st {
	case stIgnore:
		return
	case stBody, stChunkData:
		if n > 0 && int64(n) <= h.remain {
			p.skipBody(dir, int64(n), flag)
			h.remain -= int64(n)
			if h.remain == 0 {
				if h.st == stBody {
					p.messageDone(dir, ts)
				} else {
					h.st, h.chunkCR = stChunkEnd, false
				}
			}
			return
		}
	case stUntilClose:
		if n > 0 {
			p.skipBody(dir, int64(n), flag)
			return
		}
	case stResync:
		// Still looking; whatever was lost is lost with the rest.
		h.lineStart = false
		return
	}
	// Sources lose whole records, so the bytes after a gap more often
	// than not begin a message: try them as a line start.
	p.startResync(dir, ts, true)
}

// skipBody counts n body bytes that were lost and flags their message.
func (p *Parser) skipBody(dir parser.Direction, n int64, flag uint16) {
	if dir == parser.FromServer {
		p.resp.bytes += n
		p.resp.flags |= flag
		// The prefix must not join bytes from both sides of the hole.
		p.resp.frozen = true
		return
	}
	if rq := p.current(); rq != nil {
		rq.bytes += n
		rq.flags |= flag
		rq.frozen = true
	}
}

// malformed counts a protocol error in dir and resynchronises after it.
func (p *Parser) malformed(dir parser.Direction, ts int64) {
	p.stats.Errors.Add(1)
	p.startResync(dir, ts, true)
}

// startResync abandons dir's current message and looks for the next start
// line. atLine tells whether the next byte starts a line.
//
// Client side: the request being read is kept, flagged, since its response
// can still be paired; the next request found is marked afterGap.
// Server side: lost bytes may have held any number of responses, so every
// pending request is emitted without one rather than risk a wrong pairing.
func (p *Parser) startResync(dir parser.Direction, ts int64, atLine bool) {
	h := &p.half[dir]
	p.stats.Resyncs.Add(1)
	if dir == parser.FromClient {
		if h.st != stHead {
			if rq := p.current(); rq != nil {
				rq.flags |= parser.FlagReqTruncated | parser.FlagPartial
				rq.done = true
			}
		} else if len(h.buf) > 0 {
			p.stats.Truncated.Add(1)
		}
	} else {
		r := &p.resp
		if r.active && !r.orphan && p.qlen > 0 && p.at(0).seq == r.seq &&
			(r.status < 100 || r.status >= 200) {
			r.flags |= parser.FlagRespTruncated | parser.FlagPartial
			p.emitHead(ts, 0)
		}
		r.active = false
		for p.qlen > 0 {
			p.emitHead(ts, parser.FlagPartial)
		}
		p.skip = 0
	}
	h.st = stResync
	h.clear()
	h.lineStart = atLine
	h.afterGap = true
}

// Close ends the connection: a response delimited by the close ends here,
// requests still waiting are emitted flagged FlagNoResponse.
func (p *Parser) Close(ts int64) {
	if p.closed {
		return
	}
	p.closed = true
	if p.switchTo != parser.ProtoUnknown {
		return
	}
	cl, sv := &p.half[parser.FromClient], &p.half[parser.FromServer]
	if cl.st == stHead && len(cl.buf) > 0 {
		// A request cut inside its header block.
		p.stats.Truncated.Add(1)
	}
	r := &p.resp
	if r.active {
		end := sv.last
		switch sv.st {
		case stUntilClose:
			p.finishResponse(end)
		default:
			if !r.orphan && p.qlen > 0 && p.at(0).seq == r.seq {
				r.flags |= parser.FlagRespTruncated
				p.emitHead(end, 0)
			}
			r.active = false
		}
	}
	for p.qlen > 0 {
		p.emitHead(ts, 0)
	}
	cl.st, sv.st = stIgnore, stIgnore
}
