package parser

// StreamParser turns the two byte streams of one connection into calls. One
// StreamParser serves one connection and is not safe for concurrent use.
type StreamParser interface {
	// Feed hands over bytes that dir sent, observed at event time ts (Unix
	// nanoseconds). data is valid only during the call.
	Feed(dir Direction, ts int64, data []byte)
	// Gap says that n bytes that dir sent were lost (dropped record, missing
	// segment, payload beyond the copy cap). The parser resynchronises and
	// counts it; n <= 0 means an unknown amount.
	Gap(dir Direction, ts int64, n int)
	// Close ends the connection at ts: a request still waiting for its
	// response is emitted flagged FlagNoResponse, state is released.
	Close(ts int64)
}

// Switcher is implemented by a parser whose connection can change protocol
// mid-way (HTTP/1.1 Upgrade: h2c answered by 101). After each Feed the owner
// asks Switch; when it returns a protocol other than ProtoUnknown, the owner
// builds a parser for it and feeds it the leftover bytes of each direction
// (which stay valid until the next call on the old parser).
type Switcher interface {
	Switch() (to Protocol, leftover [2][]byte)
}

// Options bound what a parser keeps.
type Options struct {
	// MaxBodyPrefix is how many body bytes per direction are kept in
	// Call.ReqBody / Call.RespBody. 0 keeps none.
	MaxBodyPrefix int
	// MaxHeaderBytes bounds one header block (request line and headers, or
	// an HTTP/2 header block with CONTINUATION). Larger blocks are dropped
	// and counted. 0 means the default, 64 KiB.
	MaxHeaderBytes int
	// MaxPending bounds requests waiting for responses on one HTTP/1.1
	// connection (pipelining). 0 means the default.
	MaxPending int
	// MaxStreams bounds the open streams of one HTTP/2 connection; past it
	// the oldest is evicted and counted. 0 means the default, 256 (above
	// the concurrency servers usually grant: nginx 128, Go 250, grpc-go
	// 100 by default).
	MaxStreams int
}

// DefaultMaxHeaderBytes is the header block bound when Options leaves it 0.
const DefaultMaxHeaderBytes = 64 << 10

// HeaderLimit returns the effective MaxHeaderBytes.
func (o Options) HeaderLimit() int {
	if o.MaxHeaderBytes <= 0 {
		return DefaultMaxHeaderBytes
	}
	return o.MaxHeaderBytes
}
