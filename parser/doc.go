// Package parser turns the two byte streams of one TCP connection into API
// calls.
//
// The package root holds the vocabulary every protocol shares: the Call that
// leaves the parsers, the connection description (ConnInfo), the direction of
// a byte stream, the StreamParser interface that a protocol implements, the
// protocol detector that looks at the first bytes of a connection, and the
// counters (Stats) that make every loss visible. The protocols live in
// subpackages: parser/http1 and parser/http2 (HTTP/2 with a tolerant HPACK
// decoder, and gRPC on top of it).
//
// Invariants:
//   - No I/O, no clock, no globals. Time is the event time handed in with the
//     bytes (Unix nanoseconds); parsers never read the wall clock.
//   - A *Call and every byte slice it holds are valid only while the Emitter
//     runs. A consumer that keeps anything copies it (Call.Clone).
//   - Bytes handed to StreamParser.Feed are valid only during the call; a
//     parser that needs them later copies them into its own bounded buffer.
//   - Hostile input costs bounded memory and ends in a counted resync or drop,
//     never a panic.
//   - Never invent data: what could not be recovered is flagged (Partial,
//     truncation flags), not guessed.
package parser
