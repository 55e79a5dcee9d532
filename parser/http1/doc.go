// Package http1 turns the two byte streams of an HTTP/1.0 or HTTP/1.1
// connection into calls.
//
// A Parser serves one connection. The owner hands it the bytes each peer
// sent, in event-time order, cut anywhere (a header name may be split over
// two Feeds, a body spans many). Requests are read from the client stream and
// queued; each final response read from the server stream is paired with the
// oldest queued request, which is how keep-alive and pipelining work on the
// wire. A call is emitted when its response ends (or, flagged, when the
// connection closes first). Interim 1xx responses are skipped; HEAD answers,
// 204 and 304 have no body; a response with neither Content-Length nor
// chunked coding runs to the end of the connection.
//
// What it owns:
//   - per direction, a buffer for an incomplete header block, chunk line,
//     resync probe, or the bytes a client sent while its Upgrade or CONNECT
//     was unanswered; bounded by Options.HeaderLimit;
//   - a queue of requests waiting for responses, bounded by
//     Options.MaxPending (evicting the oldest, counted in PendingDrops);
//     each queued request keeps its own arena for the method, target, kept
//     header values and body prefix;
//   - one response scratch area and one reused parser.Call.
//
// Invariants:
//   - Bodies are counted, not kept: at most Options.MaxBodyPrefix bytes per
//     message are copied. Memory per connection is bounded by the header
//     limit, the pending bound and the body prefix, whatever the peers send.
//   - Framing follows RFC 9112 strictly where peers could disagree: both
//     Content-Length and Transfer-Encoding, two different Content-Lengths, a
//     request whose last coding is not chunked, obs-fold lines, bare CRs and
//     malformed chunk sizes or extensions are errors (Stats.Errors). A
//     request with such a header block stays queued, flagged FlagPartial and
//     FlagReqTruncated, so that the server's answer (usually 400) cannot pair
//     with the next request; its body is not framed.
//   - A response is never paired with a request it may not answer. After a
//     gap or an error a direction resynchronises (Stats.Resyncs) at the next
//     line that starts like a request or status line. Server side, every
//     request still waiting is emitted at once (FlagNoResponse, FlagPartial)
//     because the lost bytes may have held their answers. Client side, the
//     first request found is marked, and a response that began before it is
//     taken for the answer to a lost request. Responses left without a
//     request are dropped and counted in Stats.Errors.
//   - A gap of known size inside a body of known length is skipped without a
//     resync; the body is flagged truncated and its prefix stops at the hole.
//   - Malformed input never panics and never stalls: every step consumes
//     bytes or changes state.
//   - Once warm, parsing and emitting a call allocates nothing. The emitted
//     Call and its slices alias parser buffers and are valid only while
//     Emit runs. Header names are compared case-insensitively in place.
//   - No clock: Start is the event time of a request's first byte, End that
//     of its response's last byte (or of the Close for a request without
//     one).
//
// Lifecycle: New, then any sequence of Feed and Gap, then Close. After each
// Feed the owner asks Switch: a 101 answer to "Upgrade: h2c" hands the
// connection to HTTP/2 with the bytes that followed in each direction; any
// other 101, or a 2xx answer to CONNECT, returns parser.ProtoNone and the
// connection is no longer parsed (Stats.Upgrades counts both). A refused
// upgrade keeps the connection HTTP/1 and the held client bytes are parsed.
// After Close, or once switched, Feed and Gap are ignored; the leftover
// bytes stay valid through Close.
package http1
