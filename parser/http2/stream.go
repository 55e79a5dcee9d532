package http2

import (
	"bytes"

	"github.com/apisonar/apisonar/parser"
)

// span locates a value in a stream's arena; n < 0 means absent.
type span struct{ off, n int32 }

var none = span{n: -1}

// stream is one HTTP/2 stream being followed: the call it will become.
type stream struct {
	id         uint32
	start, end int64
	flags      uint16

	reqHdr, respHdr bool
	reqDone         bool
	grpc            bool
	status          int
	grpcStatus      int

	arena                                  []byte
	method, host, path, query, ct, grpcMsg span
	reqH                                   [parser.NumHeaders]span

	reqBytes, respBytes int64
	body                [2][]byte
	msgs                [2]msgReader
}

func (s *stream) init(id uint32, start int64) {
	arena, b0, b1 := s.arena[:0], s.body[0][:0], s.body[1][:0]
	*s = stream{id: id, start: start, grpcStatus: -1, arena: arena}
	s.body[0], s.body[1] = b0, b1
	s.method, s.host, s.path, s.query, s.ct, s.grpcMsg = none, none, none, none, none, none
	for i := range s.reqH {
		s.reqH[i] = none
	}
}

func (s *stream) put(v []byte) span {
	sp := span{off: int32(len(s.arena)), n: int32(len(v))}
	s.arena = append(s.arena, v...)
	return sp
}

func (s *stream) get(sp span) []byte {
	if sp.n < 0 {
		return nil
	}
	return s.arena[sp.off : sp.off+sp.n : sp.off+sp.n]
}

// find returns the open stream id, or nil.
func (p *Parser) find(id uint32) *stream {
	if p.last != nil && p.last.id == id {
		return p.last
	}
	for _, st := range p.streams {
		if st.id == id {
			p.last = st
			return st
		}
	}
	return nil
}

// open starts following stream id, evicting the oldest open stream when
// the connection is at its bound.
func (p *Parser) open(id uint32, ts int64) *stream {
	if len(p.streams) >= p.maxStreams {
		p.stats.PendingDrops.Add(1)
		p.release(p.streams[0])
	}
	var st *stream
	if n := len(p.pool); n > 0 {
		st = p.pool[n-1]
		p.pool = p.pool[:n-1]
	} else {
		st = new(stream)
	}
	st.init(id, ts)
	p.streams = append(p.streams, st)
	p.last = st
	return st
}

// release stops following st and keeps it for reuse.
func (p *Parser) release(st *stream) {
	for i, s := range p.streams {
		if s == st {
			copy(p.streams[i:], p.streams[i+1:])
			p.streams[len(p.streams)-1] = nil
			p.streams = p.streams[:len(p.streams)-1]
			break
		}
	}
	if p.last == st {
		p.last = nil
	}
	if cap(st.arena) > keepBuffer {
		st.arena = nil
	}
	p.pool = append(p.pool, st)
}

func (p *Parser) setRequest(st *stream) {
	b := &p.blk
	st.reqHdr = true
	st.method = st.put2(b, kMethod)
	if b.has(kAuthority) {
		st.host = st.put2(b, kAuthority)
	} else {
		st.host = st.put2(b, kHost)
	}
	if b.has(kPath) {
		path := b.get(kPath)
		if i := bytes.IndexByte(path, '?'); i >= 0 {
			st.path = st.put(path[:i])
			st.query = st.put(path[i+1:])
		} else {
			st.path = st.put(path)
		}
	}
	for h := range parser.NumHeaders {
		st.reqH[h] = st.put2(b, kind(h))
	}
	if isGRPC(b.get(kind(parser.HdrContentType))) {
		st.grpc = true
	}
	if b.partial {
		st.flags |= parser.FlagPartial
	}
}

func (p *Parser) setResponse(st *stream) {
	b := &p.blk
	st.respHdr = true
	if b.has(kStatus) {
		st.status = b.status()
		if st.status == 0 {
			p.stats.Errors.Add(1)
		}
	}
	st.ct = st.put2(b, kind(parser.HdrContentType))
	if isGRPC(b.get(kind(parser.HdrContentType))) {
		st.grpc = true
	}
	p.setTrailers(st)
}

// setTrailers takes grpc-status and grpc-message, from trailers or from a
// trailers-only response.
func (p *Parser) setTrailers(st *stream) {
	b := &p.blk
	if b.has(kGRPCStatus) {
		// Only gRPC answers with grpc-status; on a connection joined
		// mid-stream it may be all that is left of the content type.
		st.grpc = true
		st.grpcStatus = atoi(b.get(kGRPCStatus))
	}
	if b.has(kGRPCMessage) {
		st.grpcMsg = st.put(b.get(kGRPCMessage))
		st.grpcMsg.n = int32(percentDecode(st.get(st.grpcMsg)))
	}
	if b.partial {
		st.flags |= parser.FlagPartial
	}
}

func (s *stream) put2(b *blockInfo, k int) span {
	if !b.has(k) {
		return none
	}
	return s.put(b.get(k))
}

// finish emits st as a call and stops following it.
func (p *Parser) finish(st *stream, ts int64) {
	st.end = ts
	if !st.respHdr {
		st.flags |= parser.FlagNoResponse
		p.stats.NoResponse.Add(1)
	}
	c := &p.call
	c.Reset()
	c.Protocol = parser.ProtoHTTP2
	if !st.grpc && p.grpcByShape(st) {
		st.grpc = true
	}
	if st.grpc {
		c.Protocol = parser.ProtoGRPC
		c.ReqMessages = st.msgs[parser.FromClient].count
		c.RespMessages = st.msgs[parser.FromServer].count
		if st.msgs[parser.FromClient].partial() {
			st.flags |= parser.FlagReqTruncated
		}
		if st.msgs[parser.FromServer].partial() {
			st.flags |= parser.FlagRespTruncated
		}
		p.stats.GRPCCompressed.Add(uint64(st.msgs[0].compressed + st.msgs[1].compressed))
		c.GRPCStatus = st.grpcStatus
		c.GRPCMessage = st.get(st.grpcMsg)
	}
	if st.flags&(parser.FlagReqTruncated|parser.FlagRespTruncated) != 0 {
		p.stats.Truncated.Add(1)
	}
	c.Conn = p.conn()
	c.Start, c.End = st.start, st.end
	c.Method = st.get(st.method)
	c.Host = st.get(st.host)
	c.Path = st.get(st.path)
	c.Query = st.get(st.query)
	c.Status = st.status
	c.ReqBytes, c.RespBytes = st.reqBytes, st.respBytes
	c.StreamID = st.id
	for h := range c.ReqHeaders {
		c.ReqHeaders[h] = st.get(st.reqH[h])
	}
	c.RespContentType = st.get(st.ct)
	if len(st.body[0]) > 0 {
		c.ReqBody = st.body[0]
	}
	if len(st.body[1]) > 0 {
		c.RespBody = st.body[1]
	}
	c.Flags = st.flags
	p.release(st)
	p.flushFrames()
	p.stats.Calls.Add(1)
	if p.emit != nil {
		p.emit.Emit(c)
	}
}

func isGRPC(ct []byte) bool {
	return bytes.HasPrefix(ct, []byte("application/grpc"))
}

// atoi parses a small non-negative decimal; -1 when it is not one.
func atoi(b []byte) int {
	if len(b) == 0 || len(b) > 9 {
		return -1
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// percentDecode decodes grpc-message's percent-encoding in place and
// returns the new length; malformed escapes stay as they are.
func percentDecode(b []byte) int {
	w := 0
	for r := 0; r < len(b); r++ {
		c := b[r]
		if c == '%' && r+2 < len(b) {
			hi, ok1 := unhex(b[r+1])
			lo, ok2 := unhex(b[r+2])
			if ok1 && ok2 {
				c = hi<<4 | lo
				r += 2
			}
		}
		b[w] = c
		w++
	}
	return w
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// msgReader counts gRPC length-prefixed messages in one direction of a
// stream; the 5-byte prefixes and bodies may be split across DATA frames
// anywhere.
type msgReader struct {
	hn         uint8  // prefix bytes read
	n          uint32 // length being assembled
	left       uint32 // body bytes of the current message still to come
	count      int32
	compressed int32
	lost       bool
}

func (m *msgReader) feed(b []byte) {
	for len(b) > 0 && !m.lost {
		if m.left > 0 {
			k := min(int(m.left), len(b))
			m.left -= uint32(k)
			b = b[k:]
			continue
		}
		c := b[0]
		b = b[1:]
		if m.hn == 0 {
			if c > 1 {
				m.lost = true // not a gRPC prefix: stop counting
				return
			}
			if c == 1 {
				m.compressed++
			}
			m.hn, m.n = 1, 0
			continue
		}
		m.n = m.n<<8 | uint32(c)
		m.hn++
		if m.hn == 5 {
			m.count++
			m.left, m.hn = m.n, 0
		}
	}
}

// partial reports a message stream not seen whole.
func (m *msgReader) partial() bool { return m.lost || m.left > 0 || m.hn > 0 }

// Header block fields the parser keeps, beside the parser.Header ones.
const (
	kMethod = int(parser.NumHeaders) + iota
	kPath
	kAuthority
	kHost
	kStatus
	kGRPCStatus
	kGRPCMessage
	numKinds
)

func kind(h parser.Header) int { return int(h) }

// maxKeptValue bounds one kept header value.
const maxKeptValue = 8 << 10

// blockInfo collects the fields of one header block that the parser keeps.
// It is the decoder's fieldSink.
type blockInfo struct {
	buf     []byte
	vals    [numKinds]span
	limit   int
	partial bool
}

func (b *blockInfo) reset() {
	if cap(b.buf) > keepBuffer {
		b.buf = nil
	}
	b.buf = b.buf[:0]
	for i := range b.vals {
		b.vals[i] = none
	}
	b.partial = false
}

func (b *blockInfo) has(k int) bool { return b.vals[k].n >= 0 }

func (b *blockInfo) get(k int) []byte {
	sp := b.vals[k]
	if sp.n < 0 {
		return nil
	}
	return b.buf[sp.off : sp.off+sp.n]
}

func (b *blockInfo) status() int {
	v := b.get(kStatus)
	if len(v) != 3 {
		return 0
	}
	n := atoi(v)
	if n < 100 {
		return 0
	}
	return n
}

func (b *blockInfo) field(name, value []byte, known bool) {
	if !known {
		b.partial = true
		return
	}
	k := -1
	if len(name) > 0 && name[0] == ':' {
		switch string(name) {
		case ":method":
			k = kMethod
		case ":path":
			k = kPath
		case ":authority":
			k = kAuthority
		case ":status":
			k = kStatus
		}
	} else {
		switch string(name) {
		case "host":
			k = kHost
		case "grpc-status":
			k = kGRPCStatus
		case "grpc-message":
			k = kGRPCMessage
		default:
			if h, ok := parser.HeaderFor(name); ok {
				k = kind(h)
			}
		}
	}
	if k < 0 {
		return
	}
	if len(value) > maxKeptValue || len(b.buf)+len(value)+2 > b.limit {
		b.partial = true
		return
	}
	if b.has(k) {
		if k != kind(parser.HdrCookie) {
			return // the first one wins
		}
		// RFC 9113 §8.2.3: cookie crumbs join with "; ". They are appended
		// at the end, so the existing value must be there too.
		sp := b.vals[k]
		if int(sp.off+sp.n) != len(b.buf) {
			old := b.get(k)
			sp.off = int32(len(b.buf))
			b.buf = append(b.buf, old...)
		}
		b.buf = append(b.buf, "; "...)
		b.buf = append(b.buf, value...)
		sp.n = int32(len(b.buf)) - sp.off
		b.vals[k] = sp
		return
	}
	b.vals[k] = span{off: int32(len(b.buf)), n: int32(len(value))}
	b.buf = append(b.buf, value...)
}

// grpcByShape recognises a gRPC call whose content type was lost to an
// HPACK entry sent before the agent joined: a POST to /Service/Method
// whose DATA in both directions tiles exactly into length-prefixed
// messages, at least one of them from the client. The content type is
// the only thing inferred; counts and sizes are still measured.
func (p *Parser) grpcByShape(st *stream) bool {
	if st.ct != none || st.reqH[parser.HdrContentType] != none || st.flags&parser.FlagPartial == 0 {
		return false
	}
	if string(st.get(st.method)) != "POST" {
		return false
	}
	// The path may be unknown too; when it is known it must have the
	// /Service/Method shape.
	if path := st.get(st.path); st.path != none && (len(path) < 4 || path[0] != '/' ||
		bytes.Count(path, []byte("/")) != 2 || path[len(path)-1] == '/' || path[1] == '/') {
		return false
	}
	req, resp := &st.msgs[parser.FromClient], &st.msgs[parser.FromServer]
	return req.count > 0 && !req.partial() && !resp.partial()
}

// AdoptUpgrade takes the HTTP/1.1 request that upgraded the connection to
// h2c (RFC 9113 §3.2 predecessor, RFC 7540 §3.2): it becomes stream 1,
// complete from the client, and its response arrives as HTTP/2 frames.
func (p *Parser) AdoptUpgrade(c *parser.Call) {
	if c == nil || p.find(1) != nil {
		return
	}
	st := p.open(1, c.Start)
	st.reqHdr, st.reqDone = true, true
	put := func(b []byte) span {
		if b == nil {
			return none
		}
		return st.put(b)
	}
	st.method, st.host, st.path, st.query = put(c.Method), put(c.Host), put(c.Path), put(c.Query)
	for h := range parser.NumHeaders {
		st.reqH[h] = put(c.ReqHeaders[h])
	}
	st.reqBytes = c.ReqBytes
	st.flags |= parser.FlagUpgrade | (c.Flags & (parser.FlagPartial | parser.FlagReqTruncated))
}
