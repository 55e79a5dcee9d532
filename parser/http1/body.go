package http1

import (
	"bytes"

	"github.com/apisonar/apisonar/parser"
)

// readChunkLine consumes bytes of a chunk-size line or a trailer line. A
// line that arrives whole is parsed in place; otherwise it is gathered in
// the direction's buffer. A line as long as the limit is an error, found
// after the same number of bytes however the line was cut.
func (p *Parser) readChunkLine(dir parser.Direction, ts int64, data []byte) int {
	h := &p.half[dir]
	limit := min(p.maxHeader, maxLine)
	i := bytes.IndexByte(data, '\n')
	if i < 0 || len(h.buf)+i >= limit {
		take := min(len(data), limit-len(h.buf))
		h.buf = append(h.buf, data[:take]...)
		if len(h.buf) >= limit {
			h.buf = h.buf[:0]
			p.stats.Errors.Add(1)
			p.startResync(dir, ts, false)
		}
		return take
	}
	if len(h.buf) == 0 {
		p.chunkLine(dir, ts, trimCR(data[:i]))
		return i + 1
	}
	h.buf = append(h.buf, data[:i]...)
	p.chunkLine(dir, ts, trimCR(h.buf))
	if h.st != stIgnore {
		h.buf = h.buf[:0]
	}
	return i + 1
}

// chunkLine handles one complete line of a chunked body.
func (p *Parser) chunkLine(dir parser.Direction, ts int64, line []byte) {
	h := &p.half[dir]
	if h.st == stTrailers {
		if len(line) == 0 {
			p.messageDone(dir, ts)
			return
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 || !tokenOK(line[:c]) || !valueOK(line[c+1:]) {
			h.buf = h.buf[:0]
			p.malformed(dir, ts)
		}
		return
	}
	size, ok := chunkSize(line)
	if !ok {
		h.buf = h.buf[:0]
		p.malformed(dir, ts)
		return
	}
	if size == 0 {
		h.st = stTrailers
		return
	}
	h.st, h.remain = stChunkData, size
}

// chunkSize parses "hex [; ext]" (RFC 9112 §7.1). The size is bounded so
// that byte counts cannot overflow; extensions are checked for controls
// only, since they carry nothing the parser reports.
func chunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, false
	}
	rest := line[i:]
	if len(rest) == 0 {
		return n, true
	}
	return n, chunkExtOK(rest)
}

// chunkExtOK checks chunk extensions: *( ";" token [ "=" ( token /
// quoted-string ) ] ). Nothing in them is reported, but a parser that
// skips them loosely can be made to see a different chunk size than the
// server does, so their shape is checked.
func chunkExtOK(b []byte) bool {
	for len(b) > 0 {
		if b[0] != ';' {
			return false
		}
		b = b[1:]
		n := tokenLen(b)
		if n == 0 {
			return false
		}
		b = b[n:]
		if len(b) == 0 || b[0] != '=' {
			continue
		}
		b = b[1:]
		if len(b) > 0 && b[0] == '"' {
			i := 1
			for ; i < len(b) && b[i] != '"'; i++ {
				c := b[i]
				if c == '\\' {
					i++
					if i < len(b) && b[i] < 0x20 && b[i] != '\t' {
						return false
					}
					continue
				}
				if (c < 0x20 && c != '\t') || c == 0x7f {
					return false
				}
			}
			if i >= len(b) {
				return false
			}
			b = b[i+1:]
			continue
		}
		n = tokenLen(b)
		if n == 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// tokenLen returns the length of the token at the start of b.
func tokenLen(b []byte) int {
	n := 0
	for n < len(b) && isTokenChar(b[n]) {
		n++
	}
	return n
}

// Start-line prefixes that a resync accepts as the beginning of a message.
var (
	probeMethods = [...]string{
		"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "PATCH ", "OPTIONS ",
		"CONNECT ", "TRACE ",
	}
	probeStatus = "HTTP/1."
)

// resync discards bytes until a line that starts like a request line
// (client) or a status line (server). The few bytes of a candidate are kept
// in the buffer; once the prefix is certain the direction reads a header
// block again, starting with them.
func (p *Parser) resync(dir parser.Direction, ts int64, data []byte) int {
	h := &p.half[dir]
	if !h.lineStart {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return len(data)
		}
		h.lineStart = true
		return i + 1
	}
	for i, c := range data {
		if c == '\r' || c == '\n' {
			if len(h.buf) > 0 {
				h.buf, h.lineStart = h.buf[:0], false
				return i
			}
			continue
		}
		if len(h.buf) == 0 {
			h.start = ts
		}
		h.buf = append(h.buf, c)
		full, partial := probe(dir, h.buf)
		if full {
			h.st, h.valid = stHead, 0
			return i + 1
		}
		if !partial {
			h.buf, h.lineStart = h.buf[:0], false
			if i == 0 {
				return 1
			}
			return i
		}
	}
	return len(data)
}

// probe reports whether b is a whole start-line prefix, or could become one.
func probe(dir parser.Direction, b []byte) (full, partial bool) {
	if dir == parser.FromServer {
		if len(b) <= len(probeStatus) && string(b) == probeStatus[:len(b)] {
			return len(b) == len(probeStatus), true
		}
		return false, false
	}
	for _, m := range probeMethods {
		if len(b) <= len(m) && string(b) == m[:len(b)] {
			if len(b) == len(m) {
				return true, true
			}
			partial = true
		}
	}
	return false, partial
}
