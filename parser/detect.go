package parser

import "bytes"

// H2Preface is the HTTP/2 client connection preface.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

var h1Methods = [...][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("HEAD "),
	[]byte("DELETE "), []byte("PATCH "), []byte("OPTIONS "), []byte("CONNECT "),
	[]byte("TRACE "),
}

// Guess is what Detect concluded from the first bytes of one direction.
type Guess struct {
	Proto Protocol
	// Request is true when the bytes look like the client side (a request
	// line, the HTTP/2 preface or client frames), false for a response.
	Request bool
	// Sure is false when more bytes could change the answer.
	Sure bool
	// Sided is true when Request can be trusted to tell the side (a
	// request line, a status line, the preface, a client HEADERS frame).
	// HTTP/2 frames such as SETTINGS or DATA are sent by both peers.
	Sided bool
}

// Detect looks at the first bytes a peer sent on a connection and names the
// protocol. It never allocates.
func Detect(b []byte) Guess {
	if len(b) == 0 {
		return Guess{}
	}
	if bytes.HasPrefix(b, h2Preface) {
		return Guess{Proto: ProtoHTTP2, Request: true, Sure: true, Sided: true}
	}
	if len(b) < len(h2Preface) && bytes.HasPrefix(h2Preface, b) {
		return Guess{Proto: ProtoHTTP2, Request: true}
	}
	for _, m := range h1Methods {
		if bytes.HasPrefix(b, m) {
			return Guess{Proto: ProtoHTTP1, Request: true, Sure: true, Sided: true}
		}
		if len(b) < len(m) && bytes.HasPrefix(m, b) {
			return Guess{Proto: ProtoHTTP1, Request: true}
		}
	}
	if bytes.HasPrefix(b, []byte("HTTP/1.")) {
		return Guess{Proto: ProtoHTTP1, Sure: true, Sided: true}
	}
	if len(b) < 7 && bytes.HasPrefix([]byte("HTTP/1."), b) {
		return Guess{Proto: ProtoHTTP1}
	}
	if ok, req := h2FrameShape(b); ok {
		// Only a client HEADERS frame names the side.
		return Guess{Proto: ProtoHTTP2, Request: req, Sure: true, Sided: req}
	}
	if len(b) < 9 {
		return Guess{}
	}
	return Guess{Proto: ProtoNone, Sure: true}
}

// h2FrameShape reports whether b starts with a plausible HTTP/2 frame header
// (connection joined after the preface), and whether its stream id parity
// and type suggest the client side.
func h2FrameShape(b []byte) (ok, request bool) {
	if len(b) < 9 {
		return false, false
	}
	length := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	typ := b[3]
	flags := b[4]
	sid := uint32(b[5]&0x7f)<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8])
	if length > 1<<14 || typ > 9 {
		return false, false
	}
	switch typ {
	case 0x4: // SETTINGS: stream 0, length multiple of 6, flags ACK only
		if sid != 0 || length%6 != 0 || flags&^0x1 != 0 {
			return false, false
		}
		return true, false
	case 0x8: // WINDOW_UPDATE
		if length != 4 {
			return false, false
		}
		return true, false
	case 0x6: // PING
		if sid != 0 || length != 8 {
			return false, false
		}
		return true, false
	case 0x1: // HEADERS: odd stream ids are opened by the client
		if sid == 0 {
			return false, false
		}
		return true, sid%2 == 1 && flags&0x1 == 0
	case 0x0: // DATA
		if sid == 0 {
			return false, false
		}
		return true, false
	case 0x3: // RST_STREAM
		if sid == 0 || length != 4 {
			return false, false
		}
		return true, false
	case 0x7: // GOAWAY
		if sid != 0 || length < 8 {
			return false, false
		}
		return true, false
	}
	return false, false
}
