package export

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apisonar/apisonar/internal/otelcoltest"
)

// The end-to-end tests run a real OpenTelemetry Collector (see
// internal/otelcoltest), built once and cached.

func TestCollectorEndToEnd(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("runs a real collector; not in -short")
	}
	bin := otelcoltest.Binary(t)
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(strings.ReplaceAll(proto, "/", "_"), func(t *testing.T) {
			testCollector(t, bin, proto)
		})
	}
}

func testCollector(t *testing.T, bin, proto string) {
	grpcPort, httpPort := otelcoltest.FreePort(t), otelcoltest.FreePort(t)
	col := otelcoltest.Start(t, bin, grpcPort, httpPort)
	port := grpcPort
	if proto == ProtocolHTTP {
		port = httpPort
	}
	const queue = 4
	cfg, err := ConfigFromEnv(envMap(map[string]string{
		"OTEL_EXPORTER_OTLP_PROTOCOL": proto,
		"OTEL_METRIC_EXPORT_INTERVAL": "300",
		"OTEL_BLRP_MAX_QUEUE_SIZE":    fmt.Sprint(queue),
		"OTEL_EXPORTER_OTLP_TIMEOUT":  "2000",
		"OTEL_RESOURCE_ATTRIBUTES":    "deployment.environment.name=e2e",
	}), fmt.Sprintf("http://127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RetryMin, cfg.RetryMax = 100*time.Millisecond, 500*time.Millisecond
	cfg.Health = func() map[string]uint64 { return map[string]uint64{"parser.calls": 42, "ebpf.lost_records": 3} }
	e, err := New(cfg, ResourceInfo{Version: "0.0.1-test", HostName: "node-a", K8sNodeName: "node-a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mustShutdown(t, e)

	e.ObserveCall(httpCall("GET", "/users/17", 200, 20*time.Millisecond), "/users/{id}")
	e.ObserveCall(httpCall("GET", "/users/18", 200, 40*time.Millisecond), "/users/{id}")
	e.ObserveCall(grpcCall("/greet.GreetService/Greet", 0, 7*time.Millisecond), "")
	f := sampleFinding()
	e.Finding(f)
	f2 := sampleFinding()
	f2.Kind, f2.Severity, f2.Count = "shadow_api", "medium", 2
	e.Finding(f2)

	if !otelcoltest.WaitFor(20*time.Second, func() bool {
		out := col.Out.String()
		return len(otelcoltest.FindingRecords(out)) == 2 && otelcoltest.LastMetric(out, "rpc.server.duration") != "" && otelcoltest.LastMetric(out, "apisonar.parser.calls") != ""
	}) {
		t.Fatalf("collector did not receive 2 findings and the metrics; stats %+v\nstdout:\n%s\nstderr:\n%s", e.Stats(), col.Out.String(), col.ErrOut.String())
	}
	out := col.Out.String()

	// Log records as the collector decoded them from the wire.
	recs := otelcoltest.FindingRecords(out)
	rec := recs[0]
	for _, line := range []string{
		"SeverityText: high", "SeverityNumber: Error(17)", "EventName: apisonar.finding",
		"Body: Str(jwt:sub:5f1c read 412 distinct orders in 1h; peers read at most 9)",
		"Timestamp: 2026-03-01 13:00:00 +0000 UTC",
	} {
		if !strings.Contains(rec, "\n"+line+"\n") {
			t.Errorf("finding record lacks %q:\n%s", line, rec)
		}
	}
	wantAttrs := map[string]string{
		"apisonar.finding.kind":                       "Str(bola_enumeration)",
		"apisonar.finding.severity":                   "Str(high)",
		"apisonar.owasp":                              "Str(API1:2023)",
		"apisonar.service":                            "Str(shop:8080)",
		"http.request.method":                         "Str(GET)",
		"http.route":                                  "Str(/api/v2/orders/{id})",
		"apisonar.principal":                          "Str(jwt:sub:5f1c)",
		"apisonar.first_seen":                         "Str(2026-03-01T12:00:00Z)",
		"apisonar.last_seen":                          "Str(2026-03-01T13:00:00Z)",
		"apisonar.count":                              "Int(412)",
		"apisonar.evidence.distinct_ids":              "Int(412)",
		"apisonar.evidence.baseline.p99_distinct_ids": "Double(9.5)",
		"apisonar.evidence.baseline.principals":       "Int(37)",
		"apisonar.evidence.window":                    "Str(1h)",
		"server.address":                              "Str(10.0.0.1)",
		"server.port":                                 "Int(8080)",
		"client.address":                              "Str(203.0.113.9)",
		"process.pid":                                 "Int(4242)",
		"process.executable.name":                     "Str(shop)",
		"container.id":                                "Str(abc123)",
		"k8s.pod.name":                                "Str(shop-7d9)",
		"k8s.namespace.name":                          "Str(prod)",
	}
	gotAttrs := otelcoltest.Attrs(rec)
	for k, v := range wantAttrs {
		if gotAttrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, gotAttrs[k], v)
		}
	}
	if len(gotAttrs) != len(wantAttrs) {
		t.Errorf("record has %d attributes, want %d: %v", len(gotAttrs), len(wantAttrs), gotAttrs)
	}
	if !strings.Contains(recs[1], "-> apisonar.finding.kind: Str(shadow_api)") || !strings.Contains(recs[1], "SeverityNumber: Warn2(14)") {
		t.Errorf("second finding:\n%s", recs[1])
	}
	for _, res := range []string{"-> service.name: Str(apisonar)", "-> service.version: Str(0.0.1-test)", "-> host.name: Str(node-a)",
		"-> k8s.node.name: Str(node-a)", "-> deployment.environment.name: Str(e2e)"} {
		if !strings.Contains(out, res) {
			t.Errorf("resource attribute %q not received", res)
		}
	}

	// Metrics: names, units, types, attributes.
	h := otelcoltest.LastMetric(out, "http.server.request.duration")
	for _, line := range []string{"-> Unit: s", "-> DataType: Histogram", "-> AggregationTemporality: Cumulative",
		"-> http.request.method: Str(GET)", "-> http.route: Str(/users/{id})", "-> http.response.status_code: Int(200)",
		"-> server.address: Str(10.0.0.1)", "-> server.port: Int(8080)", "Count: 2", "Sum: 0.060000",
		"ExplicitBounds #0: 0.005000", "Buckets #2, Count: 1", "Buckets #3, Count: 1"} {
		if !strings.Contains(h, line+"\n") {
			t.Errorf("http.server.request.duration lacks %q:\n%s", line, h)
		}
	}
	r := otelcoltest.LastMetric(out, "rpc.server.duration")
	for _, line := range []string{"-> Unit: ms", "-> DataType: Histogram", "-> rpc.system: Str(grpc)",
		"-> rpc.service: Str(greet.GreetService)", "-> rpc.method: Str(Greet)", "-> rpc.grpc.status_code: Int(0)", "Sum: 7.000000"} {
		if !strings.Contains(r, line+"\n") {
			t.Errorf("rpc.server.duration lacks %q:\n%s", line, r)
		}
	}
	p := otelcoltest.LastMetric(out, "apisonar.parser.calls")
	for _, line := range []string{"-> Unit: {calls}", "-> DataType: Sum", "-> IsMonotonic: true", "-> AggregationTemporality: Cumulative", "Value: 42"} {
		if !strings.Contains(p, line+"\n") {
			t.Errorf("apisonar.parser.calls lacks %q:\n%s", line, p)
		}
	}
	if strings.Contains(out, "/users/17") {
		t.Error("a raw path reached the collector")
	}

	// Outage: stop the collector, raise more findings than the queue
	// holds, start it again on the same ports.
	col.Stop()
	before := e.Stats()
	const raised = 7
	for i := range raised {
		f := sampleFinding()
		f.Kind, f.Count = "rate_anomaly", uint64(100+i)
		e.Finding(f)
	}
	if !otelcoltest.WaitFor(10*time.Second, func() bool { return e.Stats().FindingExportFailures > before.FindingExportFailures }) {
		t.Fatalf("no failed send while the collector was down: %+v", e.Stats())
	}
	if s := e.Stats(); s.FindingsDropped-before.FindingsDropped != raised-queue {
		t.Fatalf("dropped %d during the outage, want %d", s.FindingsDropped-before.FindingsDropped, raised-queue)
	}
	col2 := otelcoltest.Start(t, bin, grpcPort, httpPort)
	if !otelcoltest.WaitFor(30*time.Second, func() bool { return len(otelcoltest.FindingRecords(col2.Out.String())) >= queue }) {
		t.Fatalf("after the outage received %d findings, want %d; stats %+v\n%s", len(otelcoltest.FindingRecords(col2.Out.String())), queue, e.Stats(), col2.ErrOut.String())
	}
	time.Sleep(500 * time.Millisecond) // nothing more may arrive
	recs = otelcoltest.FindingRecords(col2.Out.String())
	if len(recs) != queue {
		t.Fatalf("after the outage received %d findings, want exactly %d", len(recs), queue)
	}
	for i, rec := range recs {
		if got, want := otelcoltest.Attrs(rec)["apisonar.count"], fmt.Sprintf("Int(%d)", 100+i); got != want {
			t.Errorf("finding %d after the outage: count %s, want %s (first ones kept, in order)", i, got, want)
		}
	}
	s := e.Stats()
	if s.FindingsExported != 2+queue || s.FindingsDropped != raised-queue || s.FindingsPending != 0 {
		t.Errorf("stats after recovery %+v", s)
	}
	// The drop count reaches the collector as a metric too.
	if !otelcoltest.WaitFor(10*time.Second, func() bool {
		return strings.Contains(otelcoltest.LastMetric(col2.Out.String(), "apisonar.export.findings.dropped"), fmt.Sprintf("Value: %d\n", raised-queue))
	}) {
		t.Errorf("apisonar.export.findings.dropped did not reach the collector:\n%s", otelcoltest.LastMetric(col2.Out.String(), "apisonar.export.findings.dropped"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
