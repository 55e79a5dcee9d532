package export

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/apisonar/apisonar/parser"
)

// t0 is the fixed clock of the unit tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return t0 }

var testConn = parser.ConnInfo{
	ID:     1,
	Client: netip.MustParseAddrPort("10.0.0.9:51000"),
	Server: netip.MustParseAddrPort("10.0.0.1:8080"),
}

// httpCall builds an HTTP/1.1 call that took d.
func httpCall(method, path string, status int, d time.Duration) *parser.Call {
	start := t0.UnixNano()
	return &parser.Call{
		Protocol: parser.ProtoHTTP1, Conn: &testConn,
		Start: start, End: start + int64(d),
		Method: []byte(method), Path: []byte(path),
		Status: status, GRPCStatus: -1,
	}
}

// grpcCall builds a gRPC call on path with the given grpc-status.
func grpcCall(path string, grpcStatus int, d time.Duration) *parser.Call {
	c := httpCall("POST", path, 200, d)
	c.Protocol = parser.ProtoGRPC
	c.GRPCStatus = grpcStatus
	return c
}

// fakeLogs records what it is asked to export, and fails while failing is
// set, like a collector that is down.
type fakeLogs struct {
	// hang makes Export wait for its context, like a collector that
	// accepts the connection and never answers.
	hang    bool
	mu      sync.Mutex
	failing bool
	got     []sdklog.Record
	calls   int
}

func (f *fakeLogs) Export(ctx context.Context, recs []sdklog.Record) error {
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failing {
		return errors.New("collector down")
	}
	for i := range recs {
		f.got = append(f.got, recs[i].Clone())
	}
	return nil
}
func (f *fakeLogs) Shutdown(context.Context) error   { return nil }
func (f *fakeLogs) ForceFlush(context.Context) error { return nil }

func (f *fakeLogs) setFailing(v bool) {
	f.mu.Lock()
	f.failing = v
	f.mu.Unlock()
}

func (f *fakeLogs) received() []sdklog.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sdklog.Record(nil), f.got...)
}

// fakeMetrics keeps the names of the last export.
type fakeMetrics struct {
	hang    bool // wait for the context, like a collector that never answers
	mu      sync.Mutex
	exports int
	last    []string
}

func (f *fakeMetrics) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exports++
	f.last = f.last[:0]
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			f.last = append(f.last, m.Name)
		}
	}
	return nil
}
func (f *fakeMetrics) Shutdown(context.Context) error { return nil }

// attrMap flattens a record's attributes for comparison.
func attrMap(r *sdklog.Record) map[string]string {
	m := map[string]string{}
	r.WalkAttributes(func(kv attribute.KeyValue) bool {
		m[string(kv.Key)] = kv.Value.Type().String() + ":" + kv.Value.Emit()
		return true
	})
	return m
}

func setMap(s attribute.Set) map[string]string {
	m := map[string]string{}
	for _, kv := range s.ToSlice() {
		m[string(kv.Key)] = kv.Value.Type().String() + ":" + kv.Value.Emit()
	}
	return m
}

func mustShutdown(t *testing.T, e *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
