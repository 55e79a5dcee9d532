package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests run a real OpenTelemetry Collector, built once by
// the collector builder from testdata/otelcol-builder.yaml into
// $HOME/.cache/apisonar-test and reused while the manifest is unchanged.
const builderModule = "go.opentelemetry.io/collector/cmd/builder@v0.140.0"

// unavailable skips, or fails under CI=true, where nothing may skip.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// collectorBinary returns the path of the test collector, building it the
// first time (a few minutes; needs the Go module proxy).
func collectorBinary(t *testing.T) string {
	t.Helper()
	manifest, err := os.ReadFile("testdata/otelcol-builder.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(manifest)
	cache, err := os.UserCacheDir()
	if err != nil {
		unavailable(t, "no cache directory for the collector build: %v", err)
	}
	dir := filepath.Join(cache, "apisonar-test", "otelcol-"+hex.EncodeToString(sum[:6]))
	bin := filepath.Join(dir, "src", "otelcol-apisonar-test")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		unavailable(t, "go toolchain not on PATH, cannot build the collector: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOSUMDB=off", "GOBIN="+filepath.Join(dir, "bin"))
	builder := filepath.Join(dir, "bin", "builder")
	if _, err := os.Stat(builder); err != nil {
		t.Logf("installing %s", builderModule)
		cmd := exec.Command(goBin, "install", builderModule)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			unavailable(t, "cannot install the collector builder (no module proxy?): %v\n%s", err, out)
		}
	}
	// The builder resolves output_path against its working directory;
	// point it into the cache.
	src := filepath.Join(dir, "src")
	m := regexp.MustCompile(`(?m)^(\s*output_path:).*$`).ReplaceAll(manifest, []byte("${1} "+src))
	mpath := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(mpath, m, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("building the OpenTelemetry Collector into %s (a few minutes the first time)", dir)
	cmd := exec.Command(builder, "--config", mpath)
	cmd.Dir = dir
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		unavailable(t, "building the collector failed (no module proxy?): %v\n%s", err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the builder did not produce %s: %v", bin, err)
	}
	return bin
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// collector is one run of the test collector.
type collector struct {
	cmd    *exec.Cmd
	out    *syncBuffer // debug exporter output
	errOut *syncBuffer // the collector's own log
	done   chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCollector runs bin with an OTLP receiver on the two loopback ports
// and the debug exporter at detailed verbosity, without sampling.
func startCollector(t *testing.T, bin string, grpcPort, httpPort int) *collector {
	t.Helper()
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  debug:
    verbosity: detailed
    use_internal_logger: false
    sampling_initial: 1000000
    sampling_thereafter: 1
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [debug]
    metrics:
      receivers: [otlp]
      exporters: [debug]
`, grpcPort, httpPort)
	path := filepath.Join(t.TempDir(), "otelcol.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &collector{out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(bin, "--config", path)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.errOut
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.stop)
	ready := waitFor(30*time.Second, func() bool {
		select {
		case <-c.done:
			return true
		default:
		}
		for _, p := range []int{grpcPort, httpPort} {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 100*time.Millisecond)
			if err != nil {
				return false
			}
			conn.Close()
		}
		return true
	})
	select {
	case <-c.done:
		t.Fatalf("collector exited:\n%s", c.errOut.String())
	default:
	}
	if !ready {
		c.stop()
		t.Fatalf("collector did not listen within 30s:\n%s", c.errOut.String())
	}
	return c
}

func (c *collector) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// debugBlocks cuts the debug exporter's detailed output into the blocks
// that start with marker ("LogRecord #", "Metric #"), each up to the next
// block of any kind.
func debugBlocks(out, marker string) []string {
	starts := []string{"ResourceLog #", "ScopeLogs #", "LogRecord #", "ResourceMetrics #", "ScopeMetrics #", "Metric #"}
	var blocks []string
	var cur *strings.Builder
	for line := range strings.Lines(out) {
		isStart := false
		for _, s := range starts {
			if strings.HasPrefix(line, s) {
				isStart = true
			}
		}
		if isStart {
			if cur != nil {
				blocks = append(blocks, cur.String())
				cur = nil
			}
			if strings.HasPrefix(line, marker) {
				cur = &strings.Builder{}
			}
		}
		if cur != nil {
			cur.WriteString(line)
		}
	}
	if cur != nil {
		blocks = append(blocks, cur.String())
	}
	return blocks
}

// attrLines returns the "-> key: Value" lines of a block as a map (the
// last value wins).
func attrLines(block string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(block) {
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(l, "-> ") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(l, "-> "), ": ")
		if ok {
			m[k] = v
		}
	}
	return m
}

// findingRecords returns the debug blocks of finding log records.
func findingRecords(out string) []string {
	var recs []string
	for _, b := range debugBlocks(out, "LogRecord #") {
		if strings.Contains(b, "\nEventName: apisonar.finding\n") {
			recs = append(recs, b)
		}
	}
	return recs
}

// lastMetric returns the last debug block describing metric name.
func lastMetric(out, name string) string {
	var last string
	for _, b := range debugBlocks(out, "Metric #") {
		if strings.Contains(b, "-> Name: "+name+"\n") {
			last = b
		}
	}
	return last
}

func TestCollectorEndToEnd(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("runs a real collector; not in -short")
	}
	bin := collectorBinary(t)
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(strings.ReplaceAll(proto, "/", "_"), func(t *testing.T) {
			testCollector(t, bin, proto)
		})
	}
}

func testCollector(t *testing.T, bin, proto string) {
	grpcPort, httpPort := freePort(t), freePort(t)
	col := startCollector(t, bin, grpcPort, httpPort)
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

	if !waitFor(20*time.Second, func() bool {
		out := col.out.String()
		return len(findingRecords(out)) == 2 && lastMetric(out, "rpc.server.duration") != "" && lastMetric(out, "apisonar.parser.calls") != ""
	}) {
		t.Fatalf("collector did not receive 2 findings and the metrics; stats %+v\nstdout:\n%s\nstderr:\n%s", e.Stats(), col.out.String(), col.errOut.String())
	}
	out := col.out.String()

	// Log records as the collector decoded them from the wire.
	recs := findingRecords(out)
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
	gotAttrs := attrLines(rec)
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
	h := lastMetric(out, "http.server.request.duration")
	for _, line := range []string{"-> Unit: s", "-> DataType: Histogram", "-> AggregationTemporality: Cumulative",
		"-> http.request.method: Str(GET)", "-> http.route: Str(/users/{id})", "-> http.response.status_code: Int(200)",
		"-> server.address: Str(10.0.0.1)", "-> server.port: Int(8080)", "Count: 2", "Sum: 0.060000",
		"ExplicitBounds #0: 0.005000", "Buckets #2, Count: 1", "Buckets #3, Count: 1"} {
		if !strings.Contains(h, line+"\n") {
			t.Errorf("http.server.request.duration lacks %q:\n%s", line, h)
		}
	}
	r := lastMetric(out, "rpc.server.duration")
	for _, line := range []string{"-> Unit: ms", "-> DataType: Histogram", "-> rpc.system: Str(grpc)",
		"-> rpc.service: Str(greet.GreetService)", "-> rpc.method: Str(Greet)", "-> rpc.grpc.status_code: Int(0)", "Sum: 7.000000"} {
		if !strings.Contains(r, line+"\n") {
			t.Errorf("rpc.server.duration lacks %q:\n%s", line, r)
		}
	}
	p := lastMetric(out, "apisonar.parser.calls")
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
	col.stop()
	before := e.Stats()
	const raised = 7
	for i := range raised {
		f := sampleFinding()
		f.Kind, f.Count = "rate_anomaly", uint64(100+i)
		e.Finding(f)
	}
	if !waitFor(10*time.Second, func() bool { return e.Stats().FindingExportFailures > before.FindingExportFailures }) {
		t.Fatalf("no failed send while the collector was down: %+v", e.Stats())
	}
	if s := e.Stats(); s.FindingsDropped-before.FindingsDropped != raised-queue {
		t.Fatalf("dropped %d during the outage, want %d", s.FindingsDropped-before.FindingsDropped, raised-queue)
	}
	col2 := startCollector(t, bin, grpcPort, httpPort)
	if !waitFor(30*time.Second, func() bool { return len(findingRecords(col2.out.String())) >= queue }) {
		t.Fatalf("after the outage received %d findings, want %d; stats %+v\n%s", len(findingRecords(col2.out.String())), queue, e.Stats(), col2.errOut.String())
	}
	time.Sleep(500 * time.Millisecond) // nothing more may arrive
	recs = findingRecords(col2.out.String())
	if len(recs) != queue {
		t.Fatalf("after the outage received %d findings, want exactly %d", len(recs), queue)
	}
	for i, rec := range recs {
		if got, want := attrLines(rec)["apisonar.count"], fmt.Sprintf("Int(%d)", 100+i); got != want {
			t.Errorf("finding %d after the outage: count %s, want %s (first ones kept, in order)", i, got, want)
		}
	}
	s := e.Stats()
	if s.FindingsExported != 2+queue || s.FindingsDropped != raised-queue || s.FindingsPending != 0 {
		t.Errorf("stats after recovery %+v", s)
	}
	// The drop count reaches the collector as a metric too.
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(lastMetric(col2.out.String(), "apisonar.export.findings.dropped"), fmt.Sprintf("Value: %d\n", raised-queue))
	}) {
		t.Errorf("apisonar.export.findings.dropped did not reach the collector:\n%s", lastMetric(col2.out.String(), "apisonar.export.findings.dropped"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
