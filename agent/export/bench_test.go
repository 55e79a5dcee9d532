package export

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"

	"github.com/apisonar/apisonar/parser"
)

// BenchmarkObserveCall measures the hot path once its series exist: 64
// routes and a gRPC method, as a pipeline would feed them.
func BenchmarkObserveCall(b *testing.B) {
	e := newExporter(Config{}, ResourceInfo{}, nil, nil, nil, time.Now)
	calls := make([]*parser.Call, 0, 65)
	routes := make([]string, 0, 65)
	for i := range 64 {
		calls = append(calls, httpCall("GET", fmt.Sprintf("/items/%d", i), 200, time.Duration(i+1)*time.Millisecond))
		routes = append(routes, fmt.Sprintf("/r%d/{id}", i))
	}
	calls = append(calls, grpcCall("/greet.GreetService/Greet", 0, 3*time.Millisecond))
	routes = append(routes, "")
	for i := range calls {
		e.ObserveCall(calls[i], routes[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j := i % len(calls)
		e.ObserveCall(calls[j], routes[j])
	}
}

// withSeries builds an exporter holding n HTTP series.
func withSeries(n int, ms metricSink) *Exporter {
	e := newExporter(Config{MaxSeries: n + 1, Interval: time.Hour}, ResourceInfo{Version: "bench", HostName: "h"}, nil, nil, nil, time.Now)
	e.metrics = ms
	c := httpCall("GET", "/", 200, 12*time.Millisecond)
	for i := range n {
		e.ObserveCall(c, fmt.Sprintf("/api/v1/resource%d/{id}", i))
	}
	return e
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopCPU runs cycle under b.Loop and reports the process CPU time per
// cycle besides the wall time, which on a shared machine says less.
func loopCPU(b *testing.B, cycle func()) {
	b.ReportAllocs()
	start := cpuTime(b)
	n := 0
	for b.Loop() {
		cycle()
		n++
	}
	b.ReportMetric(float64(cpuTime(b)-start)/float64(n), "cpu-ns/op")
}

// BenchmarkExportCycle measures one export cycle with 10,000 series:
// building the metric data alone, the same through the real OTLP
// HTTP/protobuf exporter to a loopback receiver that discards it, and one
// Prometheus scrape. At a 10 s interval the per-cycle figures divided by
// 10 s give the exporter's steady CPU share and allocation rate.
func BenchmarkExportCycle(b *testing.B) {
	const series = 10000
	b.Run("collect", func(b *testing.B) {
		e := withSeries(series, nil)
		loopCPU(b, func() {
			e.collectMu.Lock()
			e.collect()
			e.collectMu.Unlock()
		})
	})
	b.Run("otlp_http", func(b *testing.B) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/x-protobuf")
		}))
		defer srv.Close()
		exp, err := otlpmetrichttp.New(context.Background(), otlpmetrichttp.WithEndpointURL(srv.URL+"/v1/metrics"),
			otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}))
		if err != nil {
			b.Fatal(err)
		}
		e := withSeries(series, exp)
		loopCPU(b, func() {
			if err := e.exportMetrics(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("prometheus", func(b *testing.B) {
		e := withSeries(series, nil)
		loopCPU(b, func() {
			if err := e.WritePrometheus(io.Discard); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkOpenSeries measures what 10,000 series cost to open and hold:
// B/op is everything allocated while opening them, and retained-B/series
// what one exporter keeps per series after a garbage collection.
func BenchmarkOpenSeries(b *testing.B) {
	const series = 10000
	routes := make([]string, series)
	for i := range routes {
		routes[i] = fmt.Sprintf("/api/v1/resource%d/{id}", i)
	}
	c := httpCall("GET", "/", 200, 12*time.Millisecond)
	open := func() *Exporter {
		e := newExporter(Config{MaxSeries: series}, ResourceInfo{}, nil, nil, nil, time.Now)
		for i := range routes {
			e.ObserveCall(c, routes[i])
		}
		return e
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	kept := open()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(kept)
	b.ReportAllocs()
	for b.Loop() {
		open()
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/series, "retained-B/series")
}
