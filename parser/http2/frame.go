package http2

// Frame types and flags of RFC 9113 §6.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingHeaderTableSize = 0x1

	frameHeaderLen = 9
	// defaultMaxFrame is SETTINGS_MAX_FRAME_SIZE's initial value; frames a
	// resynchronising reader accepts are no longer than this.
	defaultMaxFrame = 1 << 14
	// maxControlFrame bounds the control frames (SETTINGS, GOAWAY...) the
	// reader buffers; longer ones are skipped and counted.
	maxControlFrame = 1 << 14
)

var clientPreface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// frameHeader is the fixed 9-byte header that starts every frame.
type frameHeader struct {
	length   int
	typ      uint8
	flags    uint8
	stream   uint32
	reserved bool
}

func parseFrameHeader(b *[frameHeaderLen]byte) frameHeader {
	return frameHeader{
		length:   int(b[0])<<16 | int(b[1])<<8 | int(b[2]),
		typ:      b[3],
		flags:    b[4],
		stream:   uint32(b[5]&0x7f)<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8]),
		reserved: b[5]&0x80 != 0,
	}
}

// definedFlags are the flag bits each frame type defines.
var definedFlags = [...]uint8{
	frameData:         flagEndStream | flagPadded,
	frameHeaders:      flagEndStream | flagEndHeaders | flagPadded | flagPriority,
	framePriority:     0,
	frameRSTStream:    0,
	frameSettings:     flagAck,
	framePushPromise:  flagEndHeaders | flagPadded,
	framePing:         flagAck,
	frameGoAway:       0,
	frameWindowUpdate: 0,
	frameContinuation: flagEndHeaders,
}

// plausible reports whether h could start a frame that a conforming peer
// sends. A reader that is not sure where frames start (joined mid-stream,
// after a gap) accepts only such headers; a synchronised reader only uses it
// to notice damage.
func plausible(h frameHeader) bool {
	if h.reserved || h.length > defaultMaxFrame || int(h.typ) >= len(definedFlags) {
		return false
	}
	if h.flags&^definedFlags[h.typ] != 0 {
		return false
	}
	switch h.typ {
	case frameData:
		// An empty DATA frame without END_STREAM carries nothing: too
		// cheap a match for random bytes to sync on.
		return h.stream != 0 && (h.length > 0 || h.flags&flagEndStream != 0) && padOK(h, 1)
	case frameHeaders:
		min := 1
		if h.flags&flagPadded != 0 {
			min++
		}
		if h.flags&flagPriority != 0 {
			min += 5
		}
		return h.stream != 0 && h.length >= min
	case framePriority:
		return h.stream != 0 && h.length == 5
	case frameRSTStream:
		return h.stream != 0 && h.length == 4
	case frameSettings:
		if h.flags&flagAck != 0 {
			return h.stream == 0 && h.length == 0
		}
		return h.stream == 0 && h.length%6 == 0
	case framePushPromise:
		return h.stream != 0 && h.stream%2 == 1 && h.length >= 4 && padOK(h, 5)
	case framePing:
		return h.stream == 0 && h.length == 8
	case frameGoAway:
		return h.stream == 0 && h.length >= 8
	case frameWindowUpdate:
		return h.length == 4
	case frameContinuation:
		// Its block began before we synchronised: useless as a start.
		return false
	}
	return false
}

func padOK(h frameHeader, min int) bool {
	if h.flags&flagPadded == 0 {
		return true
	}
	return h.length >= min
}

// wellFormed reports whether a frame a synchronised reader met is one a
// peer could send; a frame that is not is counted (h2spec attacks are made
// of them) and skipped by its length, which keeps the framing.
func wellFormed(h frameHeader) bool {
	if int(h.typ) >= len(definedFlags) {
		return true // unknown types are ignored, RFC 9113 §4.1
	}
	switch h.typ {
	case frameData, frameHeaders, framePriority, frameRSTStream, framePushPromise, frameContinuation:
		if h.stream == 0 {
			return false
		}
	case frameSettings, framePing, frameGoAway:
		if h.stream != 0 {
			return false
		}
	}
	switch h.typ {
	case framePriority:
		return h.length == 5
	case frameRSTStream, frameWindowUpdate:
		return h.length == 4
	case frameSettings:
		return h.length%6 == 0 && (h.flags&flagAck == 0 || h.length == 0)
	case framePing:
		return h.length == 8
	case frameGoAway:
		return h.length >= 8
	case framePushPromise:
		return h.length >= 4
	}
	return true
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
