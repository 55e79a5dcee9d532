package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/apisonar/apisonar/agent/export"
	"github.com/apisonar/apisonar/baseline"
	"github.com/apisonar/apisonar/baseline/spec"
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
	inv     *baseline.Inventory
	obs     *baseline.Observer
	exp     *export.Exporter
	local   localAddrs
	// persist is set for live runs: the inventory is saved to StateDir.
	persist  bool
	findings atomic.Uint64

	// source counters, published by the running source.
	sourceCounters func() map[string]uint64
	ready          chan struct{}
}

// NewLivePipeline builds every stage for live capture: the inventory is
// restored from and saved to cfg.StateDir. Calls and findings go to stdout
// as JSON lines when cfg.Output is "jsonl".
func NewLivePipeline(cfg Config, stdout io.Writer, log *slog.Logger) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, UserError{err}
	}
	if err := checkLive(cfg); err != nil {
		return nil, err
	}
	p, err := newPipeline(cfg, stdout, log, cfg.StateDir != "")
	if err != nil {
		return nil, err
	}
	p.restoreState()
	return p, nil
}

// NewReplayPipeline builds every stage for a capture file: nothing is
// persisted, and hashed principals are keyed for this run only.
func NewReplayPipeline(cfg Config, stdout io.Writer, log *slog.Logger) (*Pipeline, error) {
	return newPipeline(cfg, stdout, log, false)
}

func newPipeline(cfg Config, stdout io.Writer, log *slog.Logger, persist bool) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, UserError{err}
	}
	for _, s := range cfg.Specs {
		if _, err := os.Stat(s); err != nil {
			return nil, UserError{fmt.Errorf("spec %s: %w", s, errors.Unwrap(err))}
		}
	}
	p := &Pipeline{cfg: cfg, log: log, seen: NewSeenTable(0), ready: make(chan struct{}), local: hostAddrs(), persist: persist}
	if cfg.Output == "jsonl" {
		p.out = NewJSONLWriter(stdout)
	}
	var catalog *spec.Catalog
	if len(cfg.Specs) > 0 {
		c, err := spec.Load(cfg.Specs...)
		if err != nil {
			return nil, UserError{err}
		}
		catalog = c
	}
	for i, sc := range cfg.SpecScopes {
		if catalog == nil || !catalog.HasTitle(sc.Title) {
			return nil, UserError{fmt.Errorf("spec_scopes[%d]: no loaded spec is titled %q", i, sc.Title)}
		}
	}
	if err := p.buildInventory(catalog); err != nil {
		return nil, err
	}
	ecfg, err := export.ConfigFromEnv(os.Getenv, cfg.OTLPEndpoint)
	if err != nil {
		return nil, UserError{err}
	}
	ecfg.Health = p.Counters
	exp, err := export.New(ecfg, export.ResourceInfoFromEnv(os.Getenv, cfg.Version), log.With("component", "export"))
	if err != nil {
		return nil, UserError{err}
	}
	p.exp = exp
	return p, nil
}

// shutdownExport flushes the exporter: findings queued during an outage
// get one last chance, bounded in time.
func (p *Pipeline) shutdownExport() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.exp.Shutdown(ctx); err != nil {
		p.log.Warn("exporter shutdown", "err", err)
	}
}

// buildInventory builds the baseline stage. The principal key comes from
// the state directory on live runs (Live sets persist before calling).
func (p *Pipeline) buildInventory(catalog *spec.Catalog) error {
	cfg := p.cfg
	dir := ""
	if p.persist {
		dir = cfg.StateDir
	}
	key, err := loadKey(dir)
	if err != nil {
		// The agent still runs; only persistence and stable principal
		// hashes across restarts are lost. Say so once.
		p.log.Warn("state directory unusable; the inventory will not persist", "dir", dir, "err", err)
		p.persist = false
		if key, err = randomKey(); err != nil {
			return err
		}
	}
	scopes := make([]spec.Scope, 0, len(cfg.SpecScopes))
	for _, sc := range cfg.SpecScopes {
		scopes = append(scopes, spec.Scope{Title: sc.Title, Hosts: sc.Hosts, Ports: sc.Ports})
	}
	p.inv = baseline.New(baseline.Options{
		Catalog:   catalog,
		Scopes:    scopes,
		Key:       key,
		OnFinding: p.writeFinding,
		Logger:    p.log.With("component", "baseline"),
	})
	p.obs = p.inv.NewObserver()
	popts := parser.Options{
		MaxBodyPrefix:  cfg.Parser.MaxBodyPrefix,
		MaxHeaderBytes: cfg.Parser.MaxHeaderBytes,
		MaxPending:     cfg.Parser.MaxPending,
		MaxStreams:     cfg.Parser.MaxStreams,
	}
	p.tracker = NewTracker(TrackerOptions{
		MaxConns:    cfg.Conns.Max,
		IdleTimeout: int64(cfg.Conns.IdleTimeout),
	}, NewParserFactory(popts, &p.stats), parser.EmitFunc(p.Emit))
	return nil
}

// Emit is the stage after the parsers: every call passes here once.
func (p *Pipeline) Emit(c *parser.Call) {
	p.seen.Observe(c)
	route := ""
	if p.countable(c) {
		if ep := p.obs.Observe(c); ep != nil && !ep.Overflow && ep.Route != nil {
			route = ep.Route.Template
		}
	}
	// Both ends of a call on this host give both a server and a client
	// measure, as their own instrumentation would; the client's route is
	// only known when it called a server elsewhere.
	p.exp.ObserveCall(c, route)
	if p.out != nil {
		p.out.WriteCall(c, route)
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
		"parser.dir_swaps":       s.DirSwaps.Load(),
		"parser.grpc_compressed": s.GRPCCompressed.Load(),
		"parser.upgrades":        s.Upgrades.Load(),
	}
	ts := p.tracker.Stats()
	m["conns.opened"], m["conns.closed"], m["conns.evicted"] = ts.Opened, ts.Closed, ts.Evicted
	m["conns.expired"], m["conns.not_http"], m["conns.swapped"] = ts.Expired, ts.NotHTTP, ts.Swapped
	m["conns.open"] = uint64(ts.Open)
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
		api := &API{Seen: p.seen, Counters: p.Counters, Log: p.log, Ready: func() bool { return true },
			Extra: p.inventoryRoutes()}
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
	if p.persist {
		g.Go(func() error { return p.stateLoop(ctx) })
	}
	err = g.Wait()
	if p.out != nil {
		p.out.Flush()
	}
	p.shutdownExport()
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
