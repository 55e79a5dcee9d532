package parser

import "sync/atomic"

// Stats counts what the parsers did and, above all, what they could not do.
// One Stats is shared by all parsers of an agent; fields are updated
// atomically. The agent exports them as its own metrics (apisonar.parser.*).
type Stats struct {
	Calls          atomic.Uint64 // calls emitted
	Resyncs        atomic.Uint64 // times a parser dropped bytes to find a message start again
	Errors         atomic.Uint64 // malformed messages
	Gaps           atomic.Uint64 // gaps reported by the source
	GapBytes       atomic.Uint64 // bytes reported lost by the source
	Truncated      atomic.Uint64 // bodies not seen whole
	HeaderTooBig   atomic.Uint64 // header blocks over the limit, dropped
	PendingDrops   atomic.Uint64 // requests or streams evicted over MaxPending
	NoResponse     atomic.Uint64 // requests that never saw a response
	HPACKUnknown   atomic.Uint64 // header fields an HPACK decoder could not resolve
	H2Frames       atomic.Uint64 // HTTP/2 frames read
	H2FrameErrors  atomic.Uint64 // HTTP/2 frames that were malformed
	DirSwaps       atomic.Uint64 // connections whose client/server sides proved swapped
	GRPCCompressed atomic.Uint64 // gRPC messages sent with the compressed flag
	Upgrades       atomic.Uint64 // connections handed over or given up after 101 or a CONNECT tunnel
}
