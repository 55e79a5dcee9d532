package export

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// EventName is the OTLP event name of every finding.
const EventName = "apisonar.finding"

// Finding mirrors a finding line of contract.md (its "type" is implied).
// Zero fields are "not known" and leave no attribute.
type Finding struct {
	Time      time.Time
	Kind      string // e.g. bola_enumeration
	Severity  string // info, low, medium, high, critical
	OWASP     string // e.g. API1:2023
	Service   string
	Method    string
	Route     string
	Principal string // already hashed by the detector
	FirstSeen time.Time
	LastSeen  time.Time
	Count     uint64
	Summary   string
	// Evidence holds the figures and the baseline; nested maps flatten
	// into dotted keys under apisonar.evidence.
	Evidence map[string]any

	Server      netip.AddrPort
	Client      netip.Addr
	PID         uint32
	ProcessName string
	ContainerID string
	// K8s holds k8s.* attributes without the prefix, e.g. "pod.name".
	K8s map[string]string
}

// severityNumber maps contract.md's severities onto OTel's severity
// numbers, so that backends that sort or filter by number agree with ours.
func severityNumber(s string) log.Severity {
	switch s {
	case "info":
		return log.SeverityInfo
	case "low":
		return log.SeverityWarn
	case "medium":
		return log.SeverityWarn2
	case "high":
		return log.SeverityError
	case "critical":
		return log.SeverityFatal
	}
	return log.SeverityUndefined
}

// maxEvidenceAttrs bounds how many attributes one evidence map yields.
const maxEvidenceAttrs = 64

// record turns a finding into a log record.
func (f *Finding) record(observed time.Time) log.Record {
	var r log.Record
	r.SetEventName(EventName)
	r.SetTimestamp(f.Time)
	r.SetObservedTimestamp(observed)
	r.SetSeverity(severityNumber(f.Severity))
	r.SetSeverityText(f.Severity)
	r.SetBody(attribute.StringValue(validUTF8(f.Summary)))

	kv := make([]attribute.KeyValue, 0, 24)
	str := func(k, v string) {
		if v != "" {
			kv = append(kv, attribute.String(k, validUTF8(v)))
		}
	}
	ts := func(k string, t time.Time) {
		if !t.IsZero() {
			kv = append(kv, attribute.String(k, t.UTC().Format(time.RFC3339Nano)))
		}
	}
	str("apisonar.finding.kind", f.Kind)
	str("apisonar.finding.severity", f.Severity)
	str("apisonar.owasp", f.OWASP)
	str("apisonar.service", f.Service)
	str("http.request.method", f.Method)
	str("http.route", f.Route)
	str("apisonar.principal", f.Principal)
	ts("apisonar.first_seen", f.FirstSeen)
	ts("apisonar.last_seen", f.LastSeen)
	kv = append(kv, attribute.Int64("apisonar.count", clampInt64(f.Count)))
	if f.Server.IsValid() {
		kv = append(kv,
			attribute.String("server.address", f.Server.Addr().Unmap().String()),
			attribute.Int("server.port", int(f.Server.Port())))
	}
	if f.Client.IsValid() {
		kv = append(kv, attribute.String("client.address", f.Client.Unmap().String()))
	}
	if f.PID != 0 {
		kv = append(kv, attribute.Int64("process.pid", int64(f.PID)))
	}
	str("process.executable.name", f.ProcessName)
	str("container.id", f.ContainerID)
	for _, k := range sortedKeys(f.K8s) {
		str("k8s."+k, f.K8s[k])
	}
	n := 0
	kv = flattenEvidence(kv, "apisonar.evidence", f.Evidence, &n)
	r.AddAttributes(kv...)
	return r
}

func clampInt64(u uint64) int64 {
	if u > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(u)
}

// validUTF8 keeps attribute strings valid UTF-8: protobuf refuses a request
// with one invalid string, which would lose the whole batch.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// flattenEvidence appends prefix.key attributes, descending into nested
// maps, at most maxEvidenceAttrs of them in key order.
func flattenEvidence(kv []attribute.KeyValue, prefix string, m map[string]any, n *int) []attribute.KeyValue {
	for _, k := range sortedKeys(m) {
		if *n >= maxEvidenceAttrs {
			return kv
		}
		key := prefix + "." + validUTF8(k)
		switch v := m[k].(type) {
		case nil:
			continue
		case map[string]any:
			kv = flattenEvidence(kv, key, v, n)
			continue
		case string:
			kv = append(kv, attribute.String(key, validUTF8(v)))
		case bool:
			kv = append(kv, attribute.Bool(key, v))
		case int:
			kv = append(kv, attribute.Int(key, v))
		case int32:
			kv = append(kv, attribute.Int64(key, int64(v)))
		case int64:
			kv = append(kv, attribute.Int64(key, v))
		case uint32:
			kv = append(kv, attribute.Int64(key, int64(v)))
		case uint64:
			kv = append(kv, attribute.Int64(key, clampInt64(v)))
		case uint:
			kv = append(kv, attribute.Int64(key, clampInt64(uint64(v))))
		case float32:
			kv = append(kv, attribute.Float64(key, float64(v)))
		case float64:
			kv = append(kv, attribute.Float64(key, v))
		case time.Time:
			kv = append(kv, attribute.String(key, v.UTC().Format(time.RFC3339Nano)))
		case time.Duration:
			kv = append(kv, attribute.Float64(key, v.Seconds()))
		case []string:
			s := make([]string, len(v))
			for i := range v {
				s[i] = validUTF8(v[i])
			}
			kv = append(kv, attribute.StringSlice(key, s))
		case []float64:
			kv = append(kv, attribute.Float64Slice(key, v))
		case []int64:
			kv = append(kv, attribute.Int64Slice(key, v))
		case []int:
			kv = append(kv, attribute.IntSlice(key, v))
		default:
			kv = append(kv, attribute.String(key, validUTF8(fmt.Sprint(v))))
		}
		*n++
	}
	return kv
}

// queue is the log processor between the SDK logger and the OTLP log
// exporter: OnEmit never blocks (a full queue drops the newest record and
// counts it), and one goroutine sends in order, retrying a failed batch
// with exponential backoff. Records in flight count against the bound, so
// the queue never holds more than max records.
type queue struct {
	exp      sdklog.Exporter
	log      *slog.Logger
	max      int
	batch    int
	timeout  time.Duration
	retryMin time.Duration
	retryMax time.Duration

	mu     sync.Mutex
	recs   []sdklog.Record
	closed bool

	wake chan struct{}
	// flush carries Shutdown's context to the sender, which then sends
	// what it can before that context ends and closes done.
	flush chan context.Context
	done  chan struct{}
	// base parents every send; Shutdown's context cancels it when it
	// ends, so that a collector that never answers cannot hold Shutdown.
	base   context.Context
	cancel context.CancelFunc

	queued, exported, dropped, failures, unsent atomic.Uint64
}

func newQueue(exp sdklog.Exporter, cfg *Config, log *slog.Logger) *queue {
	q := &queue{
		exp: exp, log: log,
		max: cfg.QueueSize, batch: min(cfg.QueueSize, 512), timeout: cfg.Timeout,
		retryMin: cfg.RetryMin, retryMax: cfg.RetryMax,
		wake:  make(chan struct{}, 1),
		flush: make(chan context.Context, 1),
		done:  make(chan struct{}),
	}
	q.base, q.cancel = context.WithCancel(context.Background())
	go q.run()
	return q
}

func (q *queue) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }

func (q *queue) OnEmit(_ context.Context, r *sdklog.Record) error {
	q.mu.Lock()
	if q.closed || len(q.recs) >= q.max {
		q.mu.Unlock()
		q.dropped.Add(1)
		return nil
	}
	q.recs = append(q.recs, r.Clone())
	q.mu.Unlock()
	q.queued.Add(1)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// ForceFlush does nothing: the sender sends as soon as a record arrives.
func (q *queue) ForceFlush(context.Context) error { return nil }

// Shutdown sends what is queued until ctx ends; what is left then is
// counted as unsent.
func (q *queue) Shutdown(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		<-q.done
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	stop := context.AfterFunc(ctx, q.cancel)
	defer stop()
	q.flush <- ctx
	<-q.done
	return q.exp.Shutdown(ctx)
}

func (q *queue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.recs)
}

// run is the sender goroutine.
func (q *queue) run() {
	defer close(q.done)
	defer q.cancel()
	base := q.base
	// flushing is Shutdown's context once it arrived: from then on the
	// sender empties the queue and stops.
	var flushing context.Context
	startFlush := func(ctx context.Context) { flushing = ctx }
	backoff := time.Duration(0)
	failing := false
	for {
		if flushing == nil {
			select {
			case <-q.wake:
			case ctx := <-q.flush:
				startFlush(ctx)
			}
		}
		for {
			q.mu.Lock()
			n := min(len(q.recs), q.batch)
			batch := q.recs[:n:n]
			q.mu.Unlock()
			if n == 0 {
				break
			}
			ctx, c := context.WithTimeout(base, q.timeout)
			err := q.exp.Export(ctx, batch)
			c()
			if err != nil {
				q.failures.Add(1)
				if !failing {
					q.log.Warn("sending findings failed; keeping them queued", "err", err, "queued", q.pending())
					failing = true
				}
				if base.Err() != nil {
					break
				}
				backoff = min(max(backoff*2, q.retryMin), q.retryMax)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-base.Done():
				case ctx := <-q.flush:
					startFlush(ctx)
				}
				t.Stop()
				continue
			}
			if failing {
				q.log.Info("sending findings works again")
				failing = false
			}
			backoff = 0
			q.mu.Lock()
			// Zero the sent records so that the backing array does not keep
			// their attributes alive.
			clear(q.recs[:n])
			q.recs = append(q.recs[:0], q.recs[n:]...)
			q.mu.Unlock()
			q.exported.Add(uint64(n))
		}
		if flushing != nil {
			q.mu.Lock()
			q.unsent.Add(uint64(len(q.recs)))
			q.recs = nil
			q.mu.Unlock()
			return
		}
	}
}
