package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/apisonar/apisonar/bpf"
	"github.com/apisonar/apisonar/parser"
)

// EBPFSourceOptions tune the eBPF source. The zero value gives defaults.
type EBPFSourceOptions struct {
	// SweepInterval is how often idle connections are expired in the
	// tracker. 0 means 5 seconds.
	SweepInterval time.Duration
	// MaxProcs bounds the per-pid cache of process names. 0 means 4096.
	MaxProcs int
	// MaxConns bounds the per-connection record sequence table used to
	// spot lost records. 0 means DefaultMaxConns.
	MaxConns int
	// DisableTLS leaves TLS libraries unprobed: TLS connections are then
	// not seen at all (their ciphertext is never parsed).
	DisableTLS bool
	// TLS tunes the TLS library attach manager.
	TLS TLSOptions
}

// EBPFSourceStats count what the source did with the kernel's records.
type EBPFSourceStats struct {
	Records       uint64 // records read
	DataBytes     uint64 // payload bytes handed to the tracker
	Closes        uint64 // close records
	Execs         uint64 // exec records (passed to the TLS manager when TLS is on)
	LostRecordGap uint64 // holes in a connection's record sequence
	CapGaps       uint64 // syscalls whose tail was beyond the copy cap
	CapGapBytes   uint64 // bytes in those tails
	ReadErrors    uint64 // records that could not be decoded
}

// EBPFSource reads the kernel side's records and drives a Tracker: it maps
// kernel monotonic time to Unix time, turns the socket's view (role,
// egress/ingress) into the parser's client/server directions, and turns
// bytes the kernel did not copy, and records it lost, into gaps.
//
// Run owns the Tracker and the Tracer: it is the only goroutine to use the
// Tracker, and it closes the Tracer before returning.
type EBPFSource struct {
	tr   *bpf.Tracer
	tls  *TLSManager // nil when TLS is disabled
	trk  *Tracker
	log  *slog.Logger
	opts EBPFSourceOptions

	// offset turns bpf_ktime_get_ns (CLOCK_MONOTONIC) into Unix ns. It is
	// taken once so that event times never jump with wall-clock steps.
	offset int64
	last   int64

	info  parser.ConnInfo // reused: the tracker copies it for a new id
	comms map[uint32]string
	seqs  map[uint64]seqState

	records, bytes, closes, execs, seqGaps, capGaps, capBytes, readErrs atomic.Uint64
	// kernelFinal keeps the kernel counters read just before detaching,
	// so that Counters still reports them after Run returned.
	kernelFinal atomic.Pointer[bpf.Stats]
}

// seqState is the next expected record sequence per direction.
type seqState struct {
	next [2]uint32
	seen [2]bool
}

// NewEBPFSource returns a source reading tr into trk.
func NewEBPFSource(tr *bpf.Tracer, trk *Tracker, opts EBPFSourceOptions, logger *slog.Logger) *EBPFSource {
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = 5 * time.Second
	}
	if opts.MaxProcs <= 0 {
		opts.MaxProcs = 4096
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &EBPFSource{
		tr:     tr,
		trk:    trk,
		log:    logger,
		opts:   opts,
		offset: monoOffset(),
		comms:  make(map[uint32]string),
		seqs:   make(map[uint64]seqState),
	}
}

// monoOffset is Unix time minus CLOCK_MONOTONIC, read back to back.
func monoOffset() int64 {
	var ts unix.Timespec
	wall := time.Now().UnixNano()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return wall - ts.Nano()
}

// Run reads records until ctx is cancelled, then detaches the tracer,
// flushes every open connection and returns nil. Any other error from the
// tracer is returned after the same clean-up.
func (s *EBPFSource) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.snapshotKernel(); s.tr.Close() })
	defer stop()
	defer func() {
		s.snapshotKernel()
		s.tr.Close()
	}()
	if s.tls != nil {
		tlsCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { s.tls.Run(tlsCtx); close(done) }()
		// Runs before the tracer is closed: no scan attaches to a
		// tracer being torn down.
		defer func() { cancel(); <-done }()
	}

	var rec bpf.Record
	nextSweep := time.Now().Add(s.opts.SweepInterval)
	s.tr.SetDeadline(nextSweep)
	for {
		err := s.tr.Read(&rec)
		switch {
		case err == nil:
			s.handle(&rec)
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, bpf.ErrClosed):
			s.trk.CloseAll(s.now())
			if ctx.Err() != nil {
				return nil
			}
			return err
		default:
			s.readErrs.Add(1)
			s.log.Warn("bad record", "err", err)
		}
		if now := time.Now(); !now.Before(nextSweep) {
			s.trk.Sweep(s.now())
			nextSweep = now.Add(s.opts.SweepInterval)
			s.tr.SetDeadline(nextSweep)
		}
	}
}

// now is the current event time: the latest of the wall clock mapped the
// same way as record times and the last record seen, so that sweeps never
// move backwards relative to the records.
func (s *EBPFSource) now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return s.last
	}
	if n := ts.Nano() + s.offset; n > s.last {
		return n
	}
	return s.last
}

// handle turns one record into tracker calls. It allocates only for a
// process name it has not seen and for a connection it has not seen.
func (s *EBPFSource) handle(rec *bpf.Record) {
	s.records.Add(1)
	ts := rec.Time + s.offset
	if ts > s.last {
		s.last = ts
	}
	if rec.Kind == bpf.KindClose {
		s.closes.Add(1)
		s.trk.Close(rec.ConnID, ts)
		delete(s.seqs, rec.ConnID)
		return
	}
	if rec.Kind == bpf.KindExec {
		s.execs.Add(1)
		if s.tls != nil {
			s.tls.Exec(rec.PID) // never blocks: queued or counted as dropped
		}
		return
	}
	if rec.Kind != bpf.KindData {
		s.readErrs.Add(1)
		return
	}

	server := rec.Role == bpf.RoleServer
	info := &s.info
	info.ID = rec.ConnID
	if server {
		info.Client, info.Server = rec.Remote, rec.Local
		info.Side = parser.SideServer
	} else {
		// A client, or a side the kernel could not tell: the tracker swaps
		// the ends if the first bytes prove this wrong. An unknown side is
		// not claimed.
		info.Client, info.Server = rec.Local, rec.Remote
		info.Side = parser.SideClient
		if rec.Role == bpf.RoleUnknown {
			info.Side = parser.SideUnknown
		}
	}
	info.PID = rec.PID
	info.Comm = s.comm(rec.PID, rec.CommBytes())
	info.TLS = rec.TLS

	dir := parser.FromClient
	if server == (rec.Dir == bpf.Egress) {
		dir = parser.FromServer
	}

	s.checkSeq(rec, info, dir, ts)
	if len(rec.Payload) > 0 {
		s.bytes.Add(uint64(len(rec.Payload)))
		s.trk.Data(rec.ConnID, info, dir, ts, rec.Payload)
	}
	if rec.Truncated {
		n := rec.Missing()
		s.capGaps.Add(1)
		s.capBytes.Add(uint64(n))
		if n > 0 {
			s.trk.Gap(rec.ConnID, info, dir, ts, n)
		}
	}
}

// checkSeq reports a gap of unknown size when records of this connection
// and direction went missing (the ring buffer was full).
func (s *EBPFSource) checkSeq(rec *bpf.Record, info *parser.ConnInfo, dir parser.Direction, ts int64) {
	d := rec.Dir & 1
	st, ok := s.seqs[rec.ConnID]
	if !ok && len(s.seqs) >= s.opts.MaxConns {
		// Forgetting every sequence only loses gap detection for the
		// records in flight; it keeps the table bounded.
		clear(s.seqs)
	}
	if st.seen[d] && rec.Seq != st.next[d] {
		s.seqGaps.Add(1)
		s.trk.Gap(rec.ConnID, info, dir, ts, 0)
	}
	st.seen[d] = true
	st.next[d] = rec.Seq + 1
	s.seqs[rec.ConnID] = st
}

// comm returns the interned process name of pid, re-interning when the
// process exec'd into another name.
func (s *EBPFSource) comm(pid uint32, b []byte) string {
	if c, ok := s.comms[pid]; ok && c == string(b) {
		return c
	}
	if len(s.comms) >= s.opts.MaxProcs {
		clear(s.comms)
	}
	c := string(b)
	s.comms[pid] = c
	return c
}

func (s *EBPFSource) snapshotKernel() {
	if k, err := s.tr.Stats(); err == nil {
		s.kernelFinal.Store(&k)
	}
}

// Stats returns the source's own counters.
func (s *EBPFSource) Stats() EBPFSourceStats {
	return EBPFSourceStats{
		Records:       s.records.Load(),
		DataBytes:     s.bytes.Load(),
		Closes:        s.closes.Load(),
		Execs:         s.execs.Load(),
		LostRecordGap: s.seqGaps.Load(),
		CapGaps:       s.capGaps.Load(),
		CapGapBytes:   s.capBytes.Load(),
		ReadErrors:    s.readErrs.Load(),
	}
}

// Counters returns the source's and the kernel side's counters by metric
// name, for the agent's own metrics.
func (s *EBPFSource) Counters() map[string]uint64 {
	st := s.Stats()
	m := map[string]uint64{
		"ebpf.records":          st.Records,
		"ebpf.data_bytes":       st.DataBytes,
		"ebpf.close_records":    st.Closes,
		"ebpf.exec_records":     st.Execs,
		"ebpf.lost_record_gaps": st.LostRecordGap,
		"ebpf.cap_gaps":         st.CapGaps,
		"ebpf.cap_gap_bytes":    st.CapGapBytes,
		"ebpf.bad_records":      st.ReadErrors,
	}
	if s.tls != nil {
		ts := s.tls.Stats()
		m["tls.scans"] = ts.Scans
		m["tls.scan_nanos"] = ts.ScanNanos
		m["tls.files_attached"] = ts.Attached
		m["tls.files_detached"] = ts.Detached
		m["tls.files_rejected"] = ts.Rejected
		m["tls.files"] = ts.Files
		m["tls.maps_errors"] = ts.MapsErrors
		m["tls.exec_events"] = ts.ExecEvents
		m["tls.exec_dropped"] = ts.ExecDropped
		m["tls.exec_attached"] = ts.ExecAttached
		gs := s.tls.GoStats()
		m["tls.go_binaries_attached"] = gs.Attached
		m["tls.go_binaries_detached"] = gs.Detached
		m["tls.go_binaries_rejected"] = gs.Rejected
		m["tls.go_binaries_ignored"] = gs.Ignored
		m["tls.go_binaries"] = gs.Files
	}
	k, err := s.tr.Stats()
	if err != nil {
		if f := s.kernelFinal.Load(); f != nil {
			k, err = *f, nil
		}
	}
	if err == nil {
		m["ebpf.kernel.records"] = k.Records
		m["ebpf.kernel.bytes"] = k.Bytes
		m["ebpf.kernel.lost_records"] = k.LostRecords
		m["ebpf.kernel.lost_bytes"] = k.LostBytes
		m["ebpf.kernel.truncated"] = k.Truncated
		m["ebpf.kernel.truncated_bytes"] = k.TruncatedBytes
		m["ebpf.kernel.read_errors"] = k.ReadErrors
		m["ebpf.kernel.step_limit"] = k.StepLimit
		m["ebpf.kernel.not_http"] = k.NotHTTP
		m["ebpf.kernel.conns"] = k.Conns
		m["ebpf.kernel.closes"] = k.Closes
		m["ebpf.kernel.tls_calls"] = k.TLSCalls
		m["ebpf.kernel.tls_no_conn"] = k.TLSNoConn
		m["ebpf.kernel.tls_nested"] = k.TLSNested
		m["ebpf.kernel.tls_skipped_syscalls"] = k.TLSSkipped
		m["ebpf.kernel.go_tls_entry_hits"] = k.GoTLSEnter
		m["ebpf.kernel.go_tls_ret_hits"] = k.GoTLSRet
		m["ebpf.kernel.go_tls_calls"] = k.GoTLSCalls
		m["ebpf.kernel.go_tls_no_conn"] = k.GoTLSNoConn
		m["ebpf.kernel.go_tls_short_writes"] = k.GoTLSShort
		m["ebpf.kernel.go_tls_reentries"] = k.GoTLSReentry
		m["ebpf.kernel.execs"] = k.Execs
	}
	return m
}

// OpenEBPFSource loads and attaches the kernel side, seeds it from the
// socket table and returns a source feeding trk. A failed seed is logged
// and not fatal: only the role of pre-existing HTTP/2 connections suffers.
func OpenEBPFSource(cfg bpf.Config, trk *Tracker, opts EBPFSourceOptions, logger *slog.Logger) (*EBPFSource, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tr, err := bpf.Open(cfg, logger.With("component", "bpf"))
	if err != nil {
		return nil, err
	}
	if _, err := SeedListeners(tr, logger); err != nil {
		logger.Warn("seeding from the socket table failed", "err", err)
	}
	s := NewEBPFSource(tr, trk, opts, logger.With("component", "source.ebpf"))
	if !opts.DisableTLS {
		s.tls = NewTLSManager(tr, opts.TLS, logger.With("component", "tls"))
		s.tls.Start()
	}
	return s, nil
}

// TLS returns the TLS library attach manager, nil when TLS is disabled.
func (s *EBPFSource) TLS() *TLSManager { return s.tls }
