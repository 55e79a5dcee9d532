package export

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/apisonar/apisonar/parser"
)

const scopeName = "github.com/apisonar/apisonar"

// metricSink is the part of an OTLP metric exporter the Exporter uses.
type metricSink interface {
	Export(ctx context.Context, rm *metricdata.ResourceMetrics) error
	Shutdown(ctx context.Context) error
}

// Exporter aggregates per-route request metrics, ships them and findings as
// OTLP, and renders the same metrics for Prometheus.
type Exporter struct {
	cfg   Config
	log   *slog.Logger
	res   *resource.Resource
	now   func() time.Time
	start time.Time

	red *red

	// OTLP side; nil when off.
	metrics metricSink
	logs    *sdklog.LoggerProvider
	logger  log.Logger
	queue   *queue

	stop     chan struct{}
	loopDone chan struct{}
	// loopCtx parents the loop's exports; Shutdown's context cancels it
	// so that a hanging collector cannot hold Shutdown past its deadline.
	loopCtx    context.Context
	loopCancel context.CancelFunc
	shutOnce   sync.Once
	closed     atomic.Bool
	shutErr    error

	// collectMu serialises OTLP collection, which reuses rm and pts.
	collectMu     sync.Mutex
	rm            metricdata.ResourceMetrics
	pts           []point
	metricErrs    atomic.Uint64
	metricExports atomic.Uint64
}

// New builds an Exporter. With OTLP configured it dials nothing yet (the
// OTLP clients connect lazily) but starts the export loop and the findings
// sender; Shutdown stops them. An invalid configuration is an error.
func New(cfg Config, ri ResourceInfo, logger *slog.Logger) (*Exporter, error) {
	cfg = cfg.withDefaults()
	var ms metricSink
	var le sdklog.Exporter
	if cfg.Enabled() {
		var err error
		if ms, le, err = dial(&cfg); err != nil {
			return nil, err
		}
	}
	return newExporter(cfg, ri, logger, ms, le, time.Now), nil
}

// newExporter wires an Exporter around given sinks (fakes in tests).
func newExporter(cfg Config, ri ResourceInfo, logger *slog.Logger, ms metricSink, le sdklog.Exporter, now func() time.Time) *Exporter {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "export")
	e := &Exporter{
		cfg: cfg, log: logger, now: now, start: now(),
		res:      buildResource(ri, cfg.ResourceAttributes),
		red:      newRED(cfg.MaxSeries, now),
		metrics:  ms,
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	if le != nil {
		e.queue = newQueue(le, &cfg, logger)
		e.logs = sdklog.NewLoggerProvider(sdklog.WithResource(e.res), sdklog.WithProcessor(e.queue))
		e.logger = e.logs.Logger(scopeName)
	}
	e.loopCtx, e.loopCancel = context.WithCancel(context.Background())
	if ms != nil {
		go e.loop()
	} else {
		close(e.loopDone)
	}
	return e
}

// buildResource merges what the agent detected with the user's
// OTEL_RESOURCE_ATTRIBUTES, the user's values winning.
func buildResource(ri ResourceInfo, user map[string]string) *resource.Resource {
	m := map[string]string{"service.name": "apisonar"}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("service.version", ri.Version)
	set("host.name", ri.HostName)
	set("k8s.node.name", ri.K8sNodeName)
	for k, v := range user {
		set(k, v)
	}
	kv := make([]attribute.KeyValue, 0, len(m))
	for _, k := range sortedKeys(m) {
		kv = append(kv, attribute.String(k, m[k]))
	}
	return resource.NewSchemaless(kv...)
}

// ObserveCall adds one call to the request-duration histograms. route is
// the templated route ("" when unknown). It does not allocate once the
// call's series exists; it may be called from any goroutine.
func (e *Exporter) ObserveCall(c *parser.Call, route string) {
	e.red.observe(c, route)
}

// Finding queues a finding for the collector. It never blocks: when the
// queue is full the finding is dropped and counted. Without OTLP it does
// nothing.
func (e *Exporter) Finding(f Finding) {
	if e.logger == nil {
		return
	}
	if e.closed.Load() {
		// The SDK's provider ignores records after shutdown; count them.
		e.queue.dropped.Add(1)
		return
	}
	r := f.record(e.now())
	e.logger.Emit(context.Background(), r)
}

// Stats counts what the exporter did and dropped.
type Stats struct {
	// Findings: handed to Finding, sent, dropped on a full queue, left
	// unsent at shutdown, and failed send attempts.
	FindingsQueued, FindingsExported, FindingsDropped, FindingsUnsent, FindingExportFailures uint64
	FindingsPending                                                                          int
	// Metrics: export cycles that succeeded and failed.
	MetricExports, MetricExportFailures uint64
	// Series open per family; calls sent to the overflow series; calls
	// not timed (no response).
	HTTPSeries, RPCSeries int
	SeriesOverflowCalls   uint64
	UnmeasuredCalls       uint64
}

// Stats returns the exporter's own counters.
func (e *Exporter) Stats() Stats {
	var s Stats
	if q := e.queue; q != nil {
		s.FindingsQueued = q.queued.Load()
		s.FindingsExported = q.exported.Load()
		s.FindingsDropped = q.dropped.Load()
		s.FindingsUnsent = q.unsent.Load()
		s.FindingExportFailures = q.failures.Load()
		s.FindingsPending = q.pending()
	}
	s.MetricExports, s.MetricExportFailures = e.metricExports.Load(), e.metricErrs.Load()
	e.red.mu.Lock()
	s.HTTPSeries = len(e.red.fams[0]) + len(e.red.fams[1])
	s.RPCSeries = len(e.red.fams[2]) + len(e.red.fams[3])
	s.SeriesOverflowCalls, s.UnmeasuredCalls = e.red.overflowed, e.red.unmeasured
	e.red.mu.Unlock()
	return s
}

// health returns the agent's counters and the exporter's own, by name.
func (e *Exporter) health() map[string]uint64 {
	m := map[string]uint64{}
	if e.cfg.Health != nil {
		for k, v := range e.cfg.Health() {
			m[k] = v
		}
	}
	s := e.Stats()
	m["export.findings.exported"] = s.FindingsExported
	m["export.findings.dropped"] = s.FindingsDropped + s.FindingsUnsent
	m["export.findings.failures"] = s.FindingExportFailures
	m["export.metrics.failures"] = s.MetricExportFailures
	m["export.series.overflow"] = s.SeriesOverflowCalls
	m["export.calls.unmeasured"] = s.UnmeasuredCalls
	return m
}

// healthMetric describes how one health counter is exported.
type healthMetric struct {
	key, name, unit, prom string
	gauge                 bool
	value                 uint64
}

// gaugeSuffixes mark health names whose values go up and down.
var gaugeSuffixes = []string{".open", ".active", ".current", ".size", ".pending", ".queued"}

// healthMetrics turns health counters into metric descriptions, sorted.
func healthMetrics(m map[string]uint64) []healthMetric {
	out := make([]healthMetric, 0, len(m))
	for _, k := range sortedKeys(m) {
		if k == "" {
			continue
		}
		h := healthMetric{key: k, name: "apisonar." + k, value: m[k]}
		last := k[strings.LastIndexByte(k, '.')+1:]
		h.gauge = slices.ContainsFunc(gaugeSuffixes, func(s string) bool { return strings.HasSuffix(k, s) })
		base := promName(h.name)
		if strings.Contains(last, "bytes") {
			h.unit = "By"
			if !strings.HasSuffix(base, "_bytes") {
				base += "_bytes"
			}
		} else {
			h.unit = "{" + last + "}"
		}
		if !h.gauge {
			base += "_total"
		}
		h.prom = base
		out = append(out, h)
	}
	return out
}

// collect fills e.rm with the current cumulative state. Callers hold
// collectMu; the result is valid until the next collect.
func (e *Exporter) collect() *metricdata.ResourceMetrics {
	now := e.now()
	e.pts = e.red.snapshot(e.pts)

	sm := e.rm.ScopeMetrics
	if len(sm) == 0 {
		sm = []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: scopeName}}}
	}
	ms := sm[0].Metrics[:0]

	// Reuse the histogram data point slices and their bucket slices from
	// the previous cycle: the OTLP exporters copy into protobuf messages
	// synchronously and keep nothing.
	var prev, dps [len(families)][]metricdata.HistogramDataPoint[float64]
	for _, m := range sm[0].Metrics {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
			for i, f := range families {
				if m.Name == f.name {
					prev[i] = h.DataPoints
				}
			}
		}
	}
	for i := range dps {
		dps[i] = prev[i][:0]
	}
	fi := 0
	for i := range e.pts {
		p := &e.pts[i]
		for families[fi] != p.s.fam {
			fi++ // points come in the order of families
		}
		dps[fi] = appendPoint(dps[fi], p, now)
	}
	for i, f := range families {
		if len(dps[i]) > 0 {
			ms = append(ms, metricdata.Metrics{Name: f.name, Description: f.desc, Unit: f.unit,
				Data: metricdata.Histogram[float64]{DataPoints: dps[i], Temporality: metricdata.CumulativeTemporality}})
		}
	}
	for _, h := range healthMetrics(e.health()) {
		dp := []metricdata.DataPoint[int64]{{StartTime: e.start, Time: now, Value: clampInt64(h.value)}}
		var data metricdata.Aggregation
		if h.gauge {
			dp[0].StartTime = time.Time{}
			data = metricdata.Gauge[int64]{DataPoints: dp}
		} else {
			data = metricdata.Sum[int64]{DataPoints: dp, Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
		}
		ms = append(ms, metricdata.Metrics{Name: h.name, Unit: h.unit, Data: data})
	}
	sm[0].Metrics = ms
	e.rm = metricdata.ResourceMetrics{Resource: e.res, ScopeMetrics: sm}
	return &e.rm
}

func appendPoint(dps []metricdata.HistogramDataPoint[float64], p *point, now time.Time) []metricdata.HistogramDataPoint[float64] {
	nb := len(p.s.fam.bounds) + 1
	var buckets []uint64
	if len(dps) < cap(dps) {
		buckets = dps[:len(dps)+1][len(dps)].BucketCounts
	}
	if cap(buckets) < nb {
		buckets = make([]uint64, nb)
	}
	buckets = buckets[:nb]
	copy(buckets, p.counts[:nb])
	return append(dps, metricdata.HistogramDataPoint[float64]{
		Attributes:   p.s.attrs,
		StartTime:    p.s.start,
		Time:         now,
		Count:        p.count,
		Bounds:       p.s.fam.bounds,
		BucketCounts: buckets,
		Min:          metricdata.NewExtrema(p.min),
		Max:          metricdata.NewExtrema(p.max),
		Sum:          p.sum,
	})
}

// exportMetrics runs one OTLP metric export cycle.
func (e *Exporter) exportMetrics(ctx context.Context) error {
	e.collectMu.Lock()
	defer e.collectMu.Unlock()
	rm := e.collect()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	err := e.metrics.Export(ctx, rm)
	if err != nil {
		// Cumulative temporality: the next cycle carries everything this
		// one failed to deliver, so there is nothing to retry.
		if n := e.metricErrs.Add(1); n == 1 || n%100 == 0 {
			e.log.Warn("metric export failed", "err", err, "failures", n)
		}
		return err
	}
	e.metricExports.Add(1)
	return nil
}

func (e *Exporter) loop() {
	defer close(e.loopDone)
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			_ = e.exportMetrics(e.loopCtx)
		}
	}
}

// Shutdown stops the export loop, sends the metrics a last time and the
// queued findings until ctx ends, and closes the OTLP clients. Findings
// raised afterwards are dropped and counted. It is safe to call twice.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.shutOnce.Do(func() {
		e.closed.Store(true)
		stop := context.AfterFunc(ctx, e.loopCancel)
		defer stop()
		close(e.stop)
		<-e.loopDone
		var errs []error
		if e.logs != nil {
			errs = append(errs, e.logs.Shutdown(ctx))
		}
		if e.metrics != nil {
			errs = append(errs, e.exportMetrics(ctx), e.metrics.Shutdown(ctx))
		}
		e.shutErr = errors.Join(errs...)
		e.loopCancel()
	})
	return e.shutErr
}
