package http1

import (
	"bytes"
	"encoding/binary"

	"github.com/apisonar/apisonar/parser"
)

// readHead consumes bytes of a header block. A block that arrives whole in
// one Feed is parsed in place; otherwise it is gathered in the direction's
// buffer, up to the header limit, and its lines are checked as they
// complete, so that a bad line is reported where it stands however the
// bytes were cut.
func (p *Parser) readHead(dir parser.Direction, ts int64, data []byte) int {
	h := &p.half[dir]
	if len(h.buf) == 0 {
		// Empty lines between messages are tolerated (RFC 9112 §2.2), and
		// a CRLF after a body is a common client mistake.
		i := 0
		for i < len(data) && (data[i] == '\r' || data[i] == '\n') {
			i++
		}
		if i > 0 {
			return i
		}
		h.start = ts
		h.valid = 0
		// head judges the start line first: a bad one costs the line
		// alone, as it does when the block is gathered piece by piece.
		if n := p.head(dir, ts, data[:min(len(data), p.maxHeader)]); n > 0 {
			return n
		}
	}
	old := len(h.buf)
	take := min(len(data), p.maxHeader-old)
	h.buf = append(h.buf, data[:take]...)
	if h.valid == 0 {
		// The start line is judged as soon as it is whole.
		k := bytes.IndexByte(h.buf[old:], '\n')
		if k < 0 {
			return p.headTooBig(dir, ts, take)
		}
		if !startLineOK(dir, h.buf[:old+k]) {
			h.buf = h.buf[:0]
			p.malformed(dir, ts)
			return k + 1
		}
		h.valid, h.fields = old+k+1, fields{}
	}
	pos, st := readFields(h.buf, h.valid, &h.fields, dir == parser.FromClient)
	if st == fieldsMore {
		h.valid = pos
		return p.headTooBig(dir, ts, take)
	}
	// Parsed again from the start, so that what is kept points into
	// the buffer as it is now; it stops where this pass stopped.
	p.head(dir, ts, h.buf)
	h.clear()
	return pos - old
}

// headTooBig drops a header block that filled the buffer without ending.
func (p *Parser) headTooBig(dir parser.Direction, ts int64, took int) int {
	h := &p.half[dir]
	if len(h.buf) >= p.maxHeader {
		p.stats.HeaderTooBig.Add(1)
		h.buf = h.buf[:0]
		p.startResync(dir, ts, false)
	}
	return took
}

// startLineOK reports whether line (without its LF) is a request line
// (client) or a status line (server).
func startLineOK(dir parser.Direction, line []byte) bool {
	line = trimCR(line)
	if dir == parser.FromClient {
		_, _, _, ok := requestLine(line)
		return ok
	}
	_, ok := statusLine(line)
	return ok
}

// head parses a header block at the start of b and sets up the body that
// follows. It returns the block's length, or -1 when b does not hold the
// whole block yet (nothing is changed then).
func (p *Parser) head(dir parser.Direction, ts int64, b []byte) int {
	h := &p.half[dir]
	var n int
	var ok bool
	if dir == parser.FromClient {
		n, ok = p.request(ts, b)
	} else {
		n, ok = p.response(ts, b)
	}
	if !ok && n > 0 {
		h.buf = h.buf[:0]
		p.stats.Errors.Add(1)
		// A fault found mid-line resumes the search at the next line.
		p.startResync(dir, ts, b[n-1] == '\n')
	}
	return n
}

// fields is what a header block says about framing and what is kept.
type fields struct {
	// lineAt, colonAt and checkedTo follow the check of an incomplete
	// last line: where it starts, where its colon is (-1: not seen),
	// and how far it was checked.
	lineAt, colonAt, checkedTo int

	cl      int64
	hasCL   bool
	te      bool // a Transfer-Encoding was present
	chunked bool // its final coding is chunked
	teBad   bool // chunked was applied twice or not last
	connUpg bool // Connection: upgrade
	upgH2C  bool // Upgrade: h2c
	upgrade bool // any Upgrade header
	host    []byte
	kept    [parser.NumHeaders][]byte
	ctype   []byte
}

// fieldsStatus is how far readFields got.
type fieldsStatus uint8

const (
	fieldsDone fieldsStatus = iota // the empty line ending the block was read
	fieldsMore                     // the block goes on past the bytes at hand
	fieldsBad                      // a malformed line or a length conflict
)

// readFields parses the field lines of block b from pos (just after the
// start line, or where an earlier call stopped) into f. It returns where
// it stopped: after the block's empty line (fieldsDone), at the start of
// an incomplete line (fieldsMore), or just past the offending byte
// (fieldsBad; past the line when the whole line is the fault).
//
// An incomplete last line is checked too, from where the last call left
// it, so that a bad byte is found at the same place however the bytes were
// cut, and without reading a long line again on every call.
func readFields(b []byte, pos int, f *fields, request bool) (int, fieldsStatus) {
	var lower [24]byte
	for {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 0 {
			return partialField(b, pos, f)
		}
		start := pos
		line := trimCR(b[pos : pos+i])
		pos += i + 1
		if len(line) == 0 {
			return pos, fieldsDone
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold (RFC 9112 §5.2): one reader joins the line to the
			// previous value, another reads it as a field of its own.
			// That disagreement is a smuggling vector, so it is an error.
			return start + 1, fieldsBad
		}
		// One pass over the name: find the colon, check the token and
		// lower-case it (short names only; no longer one is of interest).
		c := 0
		for ; c < len(line) && line[c] != ':'; c++ {
			ch := line[c]
			if !isTokenChar(ch) {
				return start + c + 1, fieldsBad
			}
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			if c < len(lower) {
				lower[c] = ch
			}
		}
		switch {
		case c == 0:
			return start + 1, fieldsBad
		case c == len(line):
			return pos, fieldsBad
		}
		if j := valueBad(line[c+1:]); j >= 0 {
			return start + c + 1 + j + 1, fieldsBad
		}
		value := trimOWS(line[c+1:])
		if c > len(lower) {
			continue
		}
		ln := lower[:c]
		switch string(ln) {
		case "content-length":
			n, ok := parseLength(value)
			if !ok || (f.hasCL && n != f.cl) {
				return pos, fieldsBad
			}
			f.cl, f.hasCL = n, true
			continue
		case "transfer-encoding":
			f.te = true
			for v := value; len(v) > 0; {
				var tok []byte
				if k := bytes.IndexByte(v, ','); k >= 0 {
					tok, v = trimOWS(v[:k]), v[k+1:]
				} else {
					tok, v = trimOWS(v), nil
				}
				if len(tok) == 0 {
					continue
				}
				if f.chunked {
					f.teBad = true
				}
				f.chunked = bytes.EqualFold(tok, chunked)
			}
			continue
		case "connection":
			if hasToken(value, upgradeTok) {
				f.connUpg = true
			}
			continue
		case "upgrade":
			f.upgrade = true
			if hasToken(value, h2cTok) {
				f.upgH2C = true
			}
			continue
		case "host":
			if request && f.host == nil {
				f.host = value
			}
			continue
		}
		if request {
			if k, ok := parser.HeaderFor(ln); ok && f.kept[k] == nil {
				f.kept[k] = value
			}
		} else if string(ln) == "content-type" && f.ctype == nil {
			f.ctype = value
		}
	}
}

// partialField checks the incomplete line at b[start:] as far as it goes.
func partialField(b []byte, start int, f *fields) (int, fieldsStatus) {
	end := len(b)
	if end > start && b[end-1] == '\r' {
		end-- // may be the CR of a CRLF
	}
	if end == start {
		return start, fieldsMore
	}
	if b[start] == ' ' || b[start] == '\t' {
		return start + 1, fieldsBad
	}
	if f.lineAt != start || f.checkedTo == 0 {
		f.lineAt, f.colonAt, f.checkedTo = start, -1, start
	}
	k := f.checkedTo
	if f.colonAt < 0 {
		for ; k < end && b[k] != ':'; k++ {
			if !isTokenChar(b[k]) {
				return k + 1, fieldsBad
			}
		}
		if k == end {
			f.checkedTo = k
			return start, fieldsMore
		}
		if k == start {
			return start + 1, fieldsBad
		}
		f.colonAt = k
		k++
	}
	if j := valueBad(b[k:end]); j >= 0 {
		return k + j + 1, fieldsBad
	}
	f.checkedTo = end
	return start, fieldsMore
}

var (
	chunked    = []byte("chunked")
	upgradeTok = []byte("upgrade")
	h2cTok     = []byte("h2c")
)

// request parses a request header block, queues the request and sets up its
// body. It reports false when the block is malformed.
func (p *Parser) request(ts int64, blk []byte) (int, bool) {
	h := &p.half[parser.FromClient]
	i := bytes.IndexByte(blk, '\n')
	if i < 0 {
		return -1, true
	}
	method, target, _, ok := requestLine(trimCR(blk[:i]))
	if !ok {
		return i + 1, false
	}
	var f fields
	end, st := readFields(blk, i+1, &f, true)
	if st == fieldsMore {
		return -1, true
	}
	ok = st == fieldsDone
	rq := p.push()
	p.curReq = rq.seq
	rq.start = h.start
	rq.afterGap, h.afterGap = h.afterGap, false
	rq.method = rq.put(method)
	rq.head = string(method) == "HEAD"
	rq.connect = string(method) == "CONNECT"
	rq.h2c = f.upgH2C && f.connUpg
	rq.switching = rq.connect || (f.upgrade && f.connUpg)
	path, query, authority := splitTarget(target)
	rq.path = rq.put(path)
	rq.query = rq.put(query)
	switch {
	case f.host != nil:
		rq.host = rq.put(f.host)
	case authority != nil:
		rq.host = rq.put(authority)
	}
	for k, v := range f.kept {
		rq.hdr[k] = rq.put(v)
	}
	rq.bodyOff = len(rq.arena)

	switch {
	case !ok, f.te && f.hasCL, f.te && !f.chunked, f.teBad:
		// A malformed field block, or the shape of request smuggling
		// (RFC 9112 §6.1, §6.3): the body cannot be framed with
		// confidence, so it is not framed at all. The request stays
		// queued, flagged, because the server will likely answer it
		// (400) and that answer must not pair with the next request.
		rq.flags |= parser.FlagPartial | parser.FlagReqTruncated
		rq.done = true
		return end, false
	case rq.connect:
		// What follows CONNECT is the tunnel, whatever the headers say.
		rq.done = true
		h.st = stWait
	case f.te:
		h.st = stChunkSize
		h.buf = h.buf[:0]
	case f.cl > 0:
		h.st, h.remain = stBody, f.cl
	default:
		rq.done = true
		if rq.switching {
			h.st = stWait
		}
	}
	return end, true
}

// put copies b into the request's arena and returns where it lies.
func (rq *request) put(b []byte) span {
	if len(b) == 0 {
		return span{}
	}
	s := span{off: int32(len(rq.arena)), n: int32(len(b))}
	rq.arena = append(rq.arena, b...)
	return s
}

// response parses a response header block, pairs it with the oldest pending
// request and sets up its body. It reports false when malformed.
func (p *Parser) response(ts int64, blk []byte) (int, bool) {
	h := &p.half[parser.FromServer]
	i := bytes.IndexByte(blk, '\n')
	if i < 0 {
		return -1, true
	}
	status, ok := statusLine(trimCR(blk[:i]))
	if !ok {
		return i + 1, false
	}
	var f fields
	end, st := readFields(blk, i+1, &f, false)
	if st == fieldsMore {
		return -1, true
	}
	if st == fieldsBad {
		return end, false
	}
	if p.half[parser.FromClient].st == stWait && p.current() == nil {
		// The answer to the client's upgrade was lost (a gap) or its
		// request evicted; a status line proves the connection is still
		// HTTP/1, so what the client held is requests.
		p.resumeClient()
	}
	final := status >= 200 || status == 101
	r := &p.resp
	*r = response{
		active: true,
		status: status,
		start:  h.start,
		ctype:  append(r.ctype[:0], f.ctype...),
		body:   r.body[:0],
	}
	afterGap := h.afterGap
	if final {
		h.afterGap = false
	}
	var rq *request
	switch {
	case p.skip > 0:
		r.orphan = true
		if final {
			p.skip--
		}
	case p.qlen == 0:
		// Nobody asked: the request was lost before tracing began.
		r.orphan = true
		if final {
			p.stats.Errors.Add(1)
		}
	default:
		rq = p.at(0)
		if (afterGap || rq.afterGap) && r.start < rq.start {
			// The answer to a request lost in a gap.
			r.orphan, rq = true, nil
			if final {
				p.stats.Errors.Add(1)
			}
		} else {
			r.seq = rq.seq
		}
	}

	switch {
	case status == 101:
		if rq != nil && rq.h2c && f.upgH2C {
			r.upgrade = parser.ProtoHTTP2
		} else {
			r.tunnel = true
		}
		p.finishResponse(ts)
		return end, true
	case status < 200, status == 204, status == 304, rq != nil && rq.head:
		p.finishResponse(ts)
		return end, true
	case rq != nil && rq.connect && status < 300:
		r.tunnel = true
		p.finishResponse(ts)
		return end, true
	case f.te && f.hasCL:
		r.flags |= parser.FlagPartial
		return end, false
	case f.te && f.chunked && !f.teBad:
		h.st = stChunkSize
		h.buf = h.buf[:0]
	case f.te, !f.hasCL:
		// Delimited by the end of the connection (RFC 9112 §6.3 item 8).
		h.st = stUntilClose
	case f.cl > 0:
		h.st, h.remain = stBody, f.cl
	default:
		p.finishResponse(ts)
	}
	return end, true
}

// requestLine splits "METHOD SP target SP HTTP/1.x".
func requestLine(line []byte) (method, target, version []byte, ok bool) {
	a := bytes.IndexByte(line, ' ')
	if a <= 0 {
		return nil, nil, nil, false
	}
	method = line[:a]
	rest := line[a+1:]
	b := bytes.IndexByte(rest, ' ')
	if b <= 0 {
		return nil, nil, nil, false
	}
	target, version = rest[:b], rest[b+1:]
	if !tokenOK(method) || !targetOK(target) || !versionOK(version) {
		return nil, nil, nil, false
	}
	return method, target, version, true
}

// statusLine parses "HTTP/1.x SP 3DIGIT [SP reason]".
func statusLine(line []byte) (int, bool) {
	if len(line) < 12 || !versionOK(line[:8]) || line[8] != ' ' {
		return 0, false
	}
	d := line[9:12]
	if d[0] < '1' || d[0] > '9' || d[1] < '0' || d[1] > '9' || d[2] < '0' || d[2] > '9' {
		return 0, false
	}
	if len(line) > 12 && (line[12] != ' ' || !valueOK(line[13:])) {
		return 0, false
	}
	return int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0'), true
}

func versionOK(v []byte) bool {
	return len(v) == 8 && string(v[:7]) == "HTTP/1." && (v[7] == '0' || v[7] == '1')
}

// splitTarget splits a request target into path and query. For the absolute
// form it also returns the authority, which stands in for a missing Host.
func splitTarget(t []byte) (path, query, authority []byte) {
	if t[0] != '/' && t[0] != '*' {
		if i := bytes.Index(t, schemeSep); i > 0 {
			rest := t[i+3:]
			j := bytes.IndexAny(rest, "/?")
			if j < 0 {
				return slash, nil, rest
			}
			authority, t = rest[:j], rest[j:]
			if t[0] == '?' {
				return slash, t[1:], authority
			}
		}
	}
	if q := bytes.IndexByte(t, '?'); q >= 0 {
		return t[:q], t[q+1:], authority
	}
	return t, nil, authority
}

var (
	schemeSep = []byte("://")
	slash     = []byte("/")
)

// parseLength parses a Content-Length value: digits only, bounded well
// below overflow.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// hasToken reports whether the comma-separated list v holds tok
// (case-insensitive).
func hasToken(v, tok []byte) bool {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var t []byte
		if i < 0 {
			t, v = v, nil
		} else {
			t, v = v[:i], v[i+1:]
		}
		if bytes.EqualFold(trimOWS(t), tok) {
			return true
		}
	}
	return false
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// tokenOK reports whether b is a non-empty RFC 9110 token.
func tokenOK(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTokenChar(c) {
			return false
		}
	}
	return true
}

// Token characters (RFC 9110 §5.6.2) as bit sets over bytes 0-63 and
// 64-127: digits, letters and !#$%&'*+-.^_`|~.
const (
	tokenLo uint64 = 0x03ff6cfa00000000
	tokenHi uint64 = 0x57ffffffc7fffffe
)

func isTokenChar(c byte) bool {
	if c < 64 {
		return tokenLo>>c&1 != 0
	}
	return c < 128 && tokenHi>>(c-64)&1 != 0
}

// valueBad returns the index of the first control character (a bare CR
// among them) in a field value, -1 when there is none; tabs and obs-text
// are allowed. Eight bytes are tested at once, and only a word that holds
// a suspect byte is looked at byte by byte.
func valueBad(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		// A byte below 0x20 (hasless) or equal to 0x7f (haszero of x^0x7f..).
		y := x ^ 0x7f7f7f7f7f7f7f7f
		if ((x-0x2020202020202020)&^x|(y-0x0101010101010101)&^y)&0x8080808080808080 != 0 {
			if j := valueBytesBad(b[i : i+8]); j >= 0 {
				return i + j
			}
		}
	}
	if j := valueBytesBad(b[i:]); j >= 0 {
		return i + j
	}
	return -1
}

// valueOK reports whether b holds no control character but tabs.
func valueOK(b []byte) bool { return valueBad(b) < 0 }

func valueBytesBad(b []byte) int {
	for i, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}

// targetOK rejects an empty target and one with controls or spaces.
func targetOK(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
