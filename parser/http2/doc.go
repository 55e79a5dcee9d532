// Package http2 turns the two byte streams of an HTTP/2 connection into
// calls, with an HPACK decoder that survives joining a connection
// mid-stream, and gRPC on top.
//
// A Parser serves one connection. Each direction has its own frame reader
// and its own HPACK decoder (a peer's header blocks are compressed against
// the table its encoder keeps, so the two directions never share one). The
// frame reader takes bytes cut anywhere: DATA payloads are streamed through
// without being buffered; other frames are read whole, from the caller's
// bytes when one Feed holds them, else from a bounded buffer. Streams are
// followed by id from their first HEADERS; a call is emitted when the
// response ends (END_STREAM on DATA or trailers), when either side resets the
// stream (FlagReset), or when the connection closes first (FlagNoResponse or
// a truncation flag).
//
// Joining mid-stream. The agent usually starts long after a connection
// opened. Without the client preface, the first bytes of a direction are
// taken as a frame start only if they form a plausible frame header;
// otherwise the reader scans byte by byte for one (a counted resync), and a
// blind synchronisation stays on probation for a few frames. The HPACK
// decoder starts with an unknown past: HPACK numbers the dynamic table
// newest-first, so every entry inserted since the join is resolved exactly,
// while an index beyond them names an entry the decoder never saw. Such a
// field is reported unknown (Stats.HPACKUnknown, FlagPartial), never guessed.
// The table becomes fully known again once a size update leaves no room for
// an unseen entry (at once for a size update to 0). A gap that breaks the
// framing sends the direction back to that state. Responses whose requests
// went by before the join are still reported, flagged partial.
//
// Sides. A source may have guessed client and server wrong on a joined
// connection. The preface, a request block (:method, :path) or a response
// block (:status) fixes the sides; the first such evidence against the
// current guess swaps them internally (Stats.DirSwaps), and the calls then
// carry a copy of the ConnInfo with the two ends exchanged.
//
// What it owns, all bounded:
//   - per direction: a 9-byte frame header, a control-frame buffer, a header
//     block buffer (Options.HeaderLimit), an HPACK table capped at the
//     negotiated size and at 64 KiB whatever the peer announces;
//   - up to Options.MaxStreams open streams (default 256; the oldest is
//     evicted and counted in Stats.PendingDrops), each with an arena for the
//     kept header values and body prefixes of Options.MaxBodyPrefix bytes;
//   - one decoded-block scratch area and one reused parser.Call.
//
// Invariants:
//   - Never invent data: an unresolved header is unknown, a lost body is
//     flagged truncated, a gRPC message count that lost its framing is
//     flagged truncated.
//   - Malformed frames (the h2spec kind) are counted in Stats.H2FrameErrors
//     and skipped by their length, which keeps the framing; nothing panics.
//   - Once warm, reading frames, decoding headers and emitting a call
//     allocates nothing. The emitted Call and its slices alias parser
//     buffers and are valid only while Emit runs.
//   - No clock: Start is the event time of a stream's first HEADERS frame,
//     End that of its last frame.
//
// Lifecycle: New, then any sequence of Feed and Gap, then Close, which
// emits every stream still open. After Close, Feed and Gap are ignored.
package http2
