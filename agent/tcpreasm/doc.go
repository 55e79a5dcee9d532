// Package tcpreasm turns captured packets back into the two ordered byte
// streams of each TCP connection, for sources that see packets rather than
// socket reads: capture files and AF_PACKET.
//
// It owns two things. A Decoder takes one captured frame of a known link
// type (Ethernet, Linux cooked v1/v2, raw IP, BSD loopback), walks it down
// to TCP with gopacket's layers and a reused DecodingLayerParser, and fills
// a Segment without allocating. An Assembler keeps a bounded table of flows
// and, per flow and direction, the next expected sequence number and a small
// sorted buffer of segments that arrived early. It hands in-order payload to
// a Sink (in the agent, the connection Tracker) as Data, reports bytes it
// will never see as Gap so the parser can resynchronise, and ends flows with
// Close on FIN, RST, idle expiry or eviction.
//
// Invariants:
//   - Time is the packet's timestamp (Unix nanoseconds). Idle expiry and the
//     reorder timeout move with packet time only, so a capture replays the
//     same way however fast it is read.
//   - Memory is bounded: at most Options.MaxFlows flows, at most
//     MaxBufferedPerDir early bytes and MaxSegmentsPerDir early segments per
//     direction, and at most MaxBufferedTotal early bytes over all flows.
//     When a bound is hit, the hole is declared lost (a counted Gap) rather
//     than waiting for it.
//   - In-order payload is passed to the Sink straight from the packet, without
//     a copy; only early segments are copied. Bytes handed to the Sink are
//     valid only during the call.
//   - Nothing is dropped silently: retransmitted bytes, holes, evictions,
//     expiries and undecodable frames are counted in Stats.
//
// Lifecycle: one Assembler per source, used by one goroutine. Feed it with
// Segment in packet order, call Sweep as packet time advances (or let Segment
// do it), and Flush at the end of input to deliver what is buffered and close
// every flow.
package tcpreasm
