// Package agent runs apisonar: it owns the sources (the eBPF ring buffer,
// AF_PACKET, capture files), the connection table that routes each
// connection's bytes to its parser, configuration, the outputs (JSON lines,
// the local HTTP API) and the wiring of every stage in Pipeline.
//
// Lifecycle: NewPipeline builds every stage from a Config; RunLive or
// Replay runs them until the context ends or the file is read. A source's
// goroutine owns the Tracker and every parser (no locks on that path); the
// outputs and the API read through their own synchronisation.
//
// Time: sources stamp every event with its own time (kernel monotonic time
// mapped once to wall time, or the packet's capture time); nothing
// downstream reads the clock to judge traffic.
package agent
