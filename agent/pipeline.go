package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/apisonar/apisonar/parser"
)

// Pipeline is the whole agent, wired top to bottom:
//
//	source (eBPF ring | AF_PACKET | capture file)
//	  → Tracker (connections, protocol detection)
//	  → parser (HTTP/1.1, HTTP/2, gRPC) → *parser.Call
//	  → Pipeline.Emit: raw inventory, JSON lines tap
//
// Everything is constructed in NewPipeline before anything runs. The source
// goroutine owns the tracker and the parsers; Emit runs on it.
type Pipeline struct {
	cfg   Config
	log   *slog.Logger
	stats parser.Stats

	seen    *SeenTable
	out     *JSONLWriter // nil with --output none
	tracker *Tracker

	// source counters, published by the running source.
	sourceCounters func() map[string]uint64
	ready          chan struct{}
}

// NewPipeline builds every stage from cfg. Calls and findings go to stdout
// as JSON lines when cfg.Output is "jsonl".
func NewPipeline(cfg Config, stdout io.Writer, log *slog.Logger) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, UserError{err}
	}
	p := &Pipeline{cfg: cfg, log: log, seen: NewSeenTable(0), ready: make(chan struct{})}
	if cfg.Output == "jsonl" {
		p.out = NewJSONLWriter(stdout)
	}
	popts := parser.Options{
		MaxBodyPrefix:  cfg.Parser.MaxBodyPrefix,
		MaxHeaderBytes: cfg.Parser.MaxHeaderBytes,
		MaxPending:     cfg.Parser.MaxPending,
	}
	p.tracker = NewTracker(TrackerOptions{
		MaxConns:    cfg.Conns.Max,
		IdleTimeout: int64(cfg.Conns.IdleTimeout),
	}, NewParserFactory(popts, &p.stats), parser.EmitFunc(p.Emit))
	return p, nil
}

// Emit is the stage after the parsers: every call passes here once.
func (p *Pipeline) Emit(c *parser.Call) {
	p.seen.Observe(c)
	if p.out != nil {
		p.out.WriteCall(c, "")
	}
}

// Tracker returns the pipeline's connection table (for sources).
func (p *Pipeline) Tracker() *Tracker { return p.tracker }

// Stats returns the parsers' counters.
func (p *Pipeline) Stats() *parser.Stats { return &p.stats }

// Counters returns every counter of the agent by name.
func (p *Pipeline) Counters() map[string]uint64 {
	s := &p.stats
	m := map[string]uint64{
		"parser.calls":           s.Calls.Load(),
		"parser.resyncs":         s.Resyncs.Load(),
		"parser.errors":          s.Errors.Load(),
		"parser.gaps":            s.Gaps.Load(),
		"parser.gap_bytes":       s.GapBytes.Load(),
		"parser.truncated":       s.Truncated.Load(),
		"parser.header_too_big":  s.HeaderTooBig.Load(),
		"parser.pending_drops":   s.PendingDrops.Load(),
		"parser.no_response":     s.NoResponse.Load(),
		"parser.hpack_unknown":   s.HPACKUnknown.Load(),
		"parser.h2_frames":       s.H2Frames.Load(),
		"parser.h2_frame_errors": s.H2FrameErrors.Load(),
	}
	if p.sourceCounters != nil {
		for k, v := range p.sourceCounters() {
			m[k] = v
		}
	}
	return m
}

// liveSource is a running capture: eBPF or AF_PACKET.
type liveSource interface {
	Run(ctx context.Context) error
	Counters() map[string]uint64
}

// RunLive captures until ctx ends: the source, the local API and the
// periodic flush of JSON lines run together; the first to fail stops all.
func (p *Pipeline) RunLive(ctx context.Context) error {
	src, err := p.newLiveSource()
	if err != nil {
		return err
	}
	p.sourceCounters = src.Counters
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer p.tracker.CloseAll(time.Now().UnixNano())
		return src.Run(ctx)
	})
	if p.cfg.Listen != "" {
		api := &API{Seen: p.seen, Counters: p.Counters, Log: p.log, Ready: func() bool { return true }}
		g.Go(func() error {
			if err := api.Serve(ctx, p.cfg.Listen); err != nil {
				return fmt.Errorf("local API on %s: %w", p.cfg.Listen, err)
			}
			return nil
		})
	}
	if p.out != nil {
		g.Go(func() error { return p.flushLoop(ctx) })
	}
	err = g.Wait()
	if p.out != nil {
		p.out.Flush()
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (p *Pipeline) flushLoop(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := p.out.Flush(); err != nil {
				return fmt.Errorf("writing JSON lines: %w", err)
			}
		}
	}
}

// UserError wraps an error caused by the user's input (flags, files): the
// command prints it on one line and exits 2.
type UserError struct{ Err error }

func (e UserError) Error() string { return e.Err.Error() }
func (e UserError) Unwrap() error { return e.Err }

// IsUserError reports whether err is a user mistake.
func IsUserError(err error) bool {
	var u UserError
	return errors.As(err, &u)
}
