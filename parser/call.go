package parser

import (
	"net/netip"
)

// Protocol is the application protocol of a connection or call.
type Protocol uint8

const (
	ProtoUnknown Protocol = iota
	ProtoHTTP1
	ProtoHTTP2
	ProtoGRPC
	// ProtoNone marks a connection that was looked at and is not HTTP.
	ProtoNone
)

// String returns the name used in JSON lines: "http/1.1", "h2", "grpc".
func (p Protocol) String() string {
	switch p {
	case ProtoHTTP1:
		return "http/1.1"
	case ProtoHTTP2:
		return "h2"
	case ProtoGRPC:
		return "grpc"
	case ProtoNone:
		return "none"
	}
	return "unknown"
}

// Direction tells which peer sent a run of bytes.
type Direction uint8

const (
	// FromClient is the request direction: bytes the client sent.
	FromClient Direction = 0
	// FromServer is the response direction: bytes the server sent.
	FromServer Direction = 1
)

// Other returns the opposite direction.
func (d Direction) Other() Direction { return d ^ 1 }

func (d Direction) String() string {
	if d == FromServer {
		return "server"
	}
	return "client"
}

// ConnInfo describes one TCP connection. It is filled by the source (eBPF,
// packet capture) and shared by every call on the connection.
type ConnInfo struct {
	// ID is unique among the connections a source has open at once.
	ID     uint64
	Client netip.AddrPort
	Server netip.AddrPort
	// PID and Comm name the traced process that owns the socket; zero and
	// empty when the source cannot know (packet capture).
	PID  uint32
	Comm string
	// TLS is true when the bytes are TLS plaintext seen through uprobes.
	TLS bool
	// Side says which end of the connection the traced process (PID) is.
	// When client and server both run on the host, each call is seen
	// twice, once from each side.
	Side Side
}

// Side is the end of a connection a process holds.
type Side uint8

const (
	// SideUnknown: packet capture, or a process whose role is not known.
	SideUnknown Side = iota
	SideClient
	SideServer
)

// String returns "client", "server" or "".
func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideServer:
		return "server"
	}
	return ""
}

// Flip returns the other end.
func (s Side) Flip() Side {
	switch s {
	case SideClient:
		return SideServer
	case SideServer:
		return SideClient
	}
	return s
}

// Header names a request or response header a parser keeps the value of.
// Values are kept only so that later stages can derive a hashed principal or
// a content type; they never leave the agent.
type Header uint8

const (
	HdrContentType Header = iota
	HdrAuthorization
	HdrCookie
	HdrAPIKey // X-API-Key, Api-Key, ApiKey
	HdrXForwardedFor
	HdrUserAgent
	NumHeaders
)

// HeaderFor maps a lower-case header name to the Header kept for it.
func HeaderFor(lowerName []byte) (Header, bool) {
	switch string(lowerName) {
	case "content-type":
		return HdrContentType, true
	case "authorization":
		return HdrAuthorization, true
	case "cookie":
		return HdrCookie, true
	case "x-api-key", "api-key", "apikey":
		return HdrAPIKey, true
	case "x-forwarded-for":
		return HdrXForwardedFor, true
	case "user-agent":
		return HdrUserAgent, true
	}
	return 0, false
}

// Call flags.
const (
	// FlagPartial: some headers could not be recovered (HPACK miss, a gap).
	FlagPartial uint16 = 1 << iota
	// FlagReqTruncated / FlagRespTruncated: the body was not seen whole
	// (a gap, a payload prefix cap, or the connection ended early).
	FlagReqTruncated
	FlagRespTruncated
	// FlagNoResponse: the connection ended or was reset before a response.
	FlagNoResponse
	// FlagUpgrade: the call switched protocols (101 Switching Protocols).
	FlagUpgrade
	// FlagReset: the stream was reset (HTTP/2 RST_STREAM).
	FlagReset
)

// Call is one request and its response: the unit that leaves the parser.
//
// Byte slices alias parser-owned buffers and are valid only while the
// Emitter runs.
type Call struct {
	Protocol Protocol
	Conn     *ConnInfo

	// Start is the event time of the first request byte, End of the last
	// response byte (Unix nanoseconds).
	Start, End int64

	Method []byte
	// Host is the Host header (HTTP/1.1) or :authority (HTTP/2).
	Host []byte
	// Path without the query; Query without the leading '?'.
	Path  []byte
	Query []byte

	// Status is the HTTP status code, 0 when no response was seen.
	Status int
	// GRPCStatus is the grpc-status code, -1 when absent.
	GRPCStatus  int
	GRPCMessage []byte

	// ReqBytes and RespBytes count body bytes (after de-chunking; for
	// HTTP/2 the DATA payload; for gRPC including the 5-byte prefixes).
	ReqBytes, RespBytes int64
	// ReqMessages and RespMessages count gRPC messages per direction.
	ReqMessages, RespMessages int32
	// StreamID is the HTTP/2 stream, 0 for HTTP/1.
	StreamID uint32

	ReqHeaders      [NumHeaders][]byte
	RespContentType []byte

	// ReqBody and RespBody are bounded prefixes of the bodies, for schema
	// and sensitive-data checks. Never exported.
	ReqBody, RespBody []byte

	Flags uint16
}

// Reset clears c for reuse, keeping nothing.
func (c *Call) Reset() {
	*c = Call{GRPCStatus: -1}
}

// Clone returns a deep copy that owns its bytes.
func (c *Call) Clone() *Call {
	n := *c
	cp := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		return append([]byte(nil), b...)
	}
	n.Method, n.Host, n.Path, n.Query = cp(c.Method), cp(c.Host), cp(c.Path), cp(c.Query)
	n.GRPCMessage, n.RespContentType = cp(c.GRPCMessage), cp(c.RespContentType)
	n.ReqBody, n.RespBody = cp(c.ReqBody), cp(c.RespBody)
	for i := range n.ReqHeaders {
		n.ReqHeaders[i] = cp(c.ReqHeaders[i])
	}
	if c.Conn != nil {
		ci := *c.Conn
		n.Conn = &ci
	}
	return &n
}

// Emitter receives calls as they complete. It must not retain c or its
// slices after returning.
type Emitter interface {
	Emit(c *Call)
}

// EmitFunc adapts a function to Emitter.
type EmitFunc func(c *Call)

// Emit calls f(c).
func (f EmitFunc) Emit(c *Call) { f(c) }
