package export

import (
	"bytes"
	"context"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/apisonar/apisonar/internal/otelcoltest"
	"github.com/apisonar/apisonar/parser"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		flag    string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{
			name: "nothing_set_means_otlp_off_with_defaults",
			check: func(t *testing.T, c Config) {
				if c.Enabled() || c.Protocol != ProtocolHTTP || c.Interval != DefaultInterval || c.QueueSize != DefaultQueueSize || c.Timeout != DefaultTimeout {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "standard_variables_are_read",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":    "http://collector:4317",
				"OTEL_EXPORTER_OTLP_PROTOCOL":    "grpc",
				"OTEL_EXPORTER_OTLP_HEADERS":     "api-key=s%20e,x-tenant = t1",
				"OTEL_EXPORTER_OTLP_TIMEOUT":     "2500",
				"OTEL_EXPORTER_OTLP_INSECURE":    "true",
				"OTEL_METRIC_EXPORT_INTERVAL":    "15000",
				"OTEL_BLRP_MAX_QUEUE_SIZE":       "64",
				"OTEL_RESOURCE_ATTRIBUTES":       "deployment.environment.name=prod,k8s.cluster.name=c1",
				"OTEL_SERVICE_NAME":              "apisonar-edge",
				"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
			},
			check: func(t *testing.T, c Config) {
				want := Config{
					Endpoint: "http://collector:4317", Protocol: "grpc",
					Headers:  map[string]string{"api-key": "s e", "x-tenant": "t1"},
					Insecure: true, Compression: "gzip", Timeout: 2500 * time.Millisecond,
					Interval: 15 * time.Second, QueueSize: 64,
					ResourceAttributes: map[string]string{
						"deployment.environment.name": "prod", "k8s.cluster.name": "c1", "service.name": "apisonar-edge",
					},
				}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got  %+v\nwant %+v", c, want)
				}
			},
		},
		{
			name: "flag_wins_over_every_endpoint_variable",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":      "http://a:4318",
				"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://b:4318/v1/logs",
			},
			flag: "http://flag:4318",
			check: func(t *testing.T, c Config) {
				if c.Endpoint != "http://flag:4318" || c.LogsEndpoint != "" || c.MetricsEndpoint != "" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "sdk_disabled_turns_otlp_off",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"},
			check: func(t *testing.T, c Config) {
				if c.Enabled() {
					t.Errorf("still enabled: %+v", c)
				}
			},
		},
		{name: "unknown_protocol_is_an_error", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "header_without_equals_is_an_error", env: map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, wantErr: "OTEL_EXPORTER_OTLP_HEADERS"},
		{name: "negative_interval_is_an_error", env: map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, wantErr: "OTEL_METRIC_EXPORT_INTERVAL"},
		{name: "non_boolean_insecure_is_an_error", env: map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, wantErr: "OTEL_EXPORTER_OTLP_INSECURE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ConfigFromEnv(envMap(tt.env), tt.flag)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestEndpoints(t *testing.T) {
	tests := []struct {
		name              string
		cfg               Config
		wantLogs, wantMet string
	}{
		{"http_base_gets_signal_paths", Config{Endpoint: "http://c:4318/", Protocol: ProtocolHTTP}, "http://c:4318/v1/logs", "http://c:4318/v1/metrics"},
		{"grpc_base_is_used_as_is", Config{Endpoint: "http://c:4317", Protocol: ProtocolGRPC}, "http://c:4317", "http://c:4317"},
		{"signal_specific_wins_and_is_used_as_is", Config{Endpoint: "http://c:4318", LogsEndpoint: "https://logs:443/custom", Protocol: ProtocolHTTP}, "https://logs:443/custom", "http://c:4318/v1/metrics"},
		{"no_scheme_is_https", Config{Endpoint: "c:4317", Protocol: ProtocolGRPC}, "https://c:4317", "https://c:4317"},
		{"no_scheme_with_insecure_is_http", Config{Endpoint: "c:4317", Protocol: ProtocolGRPC, Insecure: true}, "http://c:4317", "http://c:4317"},
		{"only_metrics", Config{MetricsEndpoint: "http://m:4318/v1/metrics", Protocol: ProtocolHTTP}, "", "http://m:4318/v1/metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, m, err := endpoints(&tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if l != tt.wantLogs || m != tt.wantMet {
				t.Errorf("got %q %q, want %q %q", l, m, tt.wantLogs, tt.wantMet)
			}
		})
	}
	if _, _, err := endpoints(&Config{Endpoint: "ftp://c:21", Protocol: ProtocolHTTP}); err == nil {
		t.Error("ftp endpoint accepted")
	}
}

// sampleFinding is a BOLA finding with every field set.
func sampleFinding() Finding {
	return Finding{
		Time:      t0.Add(time.Hour),
		Kind:      "bola_enumeration",
		Severity:  "high",
		OWASP:     "API1:2023",
		Service:   "shop:8080",
		Method:    "GET",
		Route:     "/api/v2/orders/{id}",
		Principal: "jwt:sub:5f1c",
		FirstSeen: t0,
		LastSeen:  t0.Add(time.Hour),
		Count:     412,
		Summary:   "jwt:sub:5f1c read 412 distinct orders in 1h; peers read at most 9",
		Evidence: map[string]any{
			"distinct_ids": 412,
			"baseline":     map[string]any{"p99_distinct_ids": 9.5, "principals": uint64(37)},
			"window":       "1h",
			"ignored":      nil,
		},
		Server:      netip.MustParseAddrPort("10.0.0.1:8080"),
		Client:      netip.MustParseAddr("203.0.113.9"),
		PID:         4242,
		ProcessName: "shop",
		ContainerID: "abc123",
		K8s:         map[string]string{"pod.name": "shop-7d9", "namespace.name": "prod"},
	}
}

func TestFindingBecomesLogRecord(t *testing.T) {
	logs := &fakeLogs{}
	e := newExporter(Config{}, ResourceInfo{Version: "1.2.3", HostName: "node-a", K8sNodeName: "node-a"}, nil, nil, logs, fixedClock)
	e.Finding(sampleFinding())
	mustShutdown(t, e)

	got := logs.received()
	if len(got) != 1 {
		t.Fatalf("received %d records, want 1", len(got))
	}
	r := &got[0]
	if r.EventName() != "apisonar.finding" {
		t.Errorf("event name %q", r.EventName())
	}
	if r.Severity() != log.SeverityError || r.SeverityText() != "high" {
		t.Errorf("severity %v %q", r.Severity(), r.SeverityText())
	}
	if r.Body().AsString() != "jwt:sub:5f1c read 412 distinct orders in 1h; peers read at most 9" {
		t.Errorf("body %q", r.Body().Emit())
	}
	if !r.Timestamp().Equal(t0.Add(time.Hour)) {
		t.Errorf("timestamp %v, want the finding's event time", r.Timestamp())
	}
	want := map[string]string{
		"apisonar.finding.kind":                       "STRING:bola_enumeration",
		"apisonar.finding.severity":                   "STRING:high",
		"apisonar.owasp":                              "STRING:API1:2023",
		"apisonar.service":                            "STRING:shop:8080",
		"http.request.method":                         "STRING:GET",
		"http.route":                                  "STRING:/api/v2/orders/{id}",
		"apisonar.principal":                          "STRING:jwt:sub:5f1c",
		"apisonar.first_seen":                         "STRING:2026-03-01T12:00:00Z",
		"apisonar.last_seen":                          "STRING:2026-03-01T13:00:00Z",
		"apisonar.count":                              "INT64:412",
		"apisonar.evidence.distinct_ids":              "INT64:412",
		"apisonar.evidence.baseline.p99_distinct_ids": "FLOAT64:9.5",
		"apisonar.evidence.baseline.principals":       "INT64:37",
		"apisonar.evidence.window":                    "STRING:1h",
		"server.address":                              "STRING:10.0.0.1",
		"server.port":                                 "INT64:8080",
		"client.address":                              "STRING:203.0.113.9",
		"process.pid":                                 "INT64:4242",
		"process.executable.name":                     "STRING:shop",
		"container.id":                                "STRING:abc123",
		"k8s.pod.name":                                "STRING:shop-7d9",
		"k8s.namespace.name":                          "STRING:prod",
	}
	if got := attrMap(r); !reflect.DeepEqual(got, want) {
		t.Errorf("attributes\n got  %v\n want %v", got, want)
	}
	res := map[string]string{}
	for _, kv := range r.Resource().Attributes() {
		res[string(kv.Key)] = kv.Value.Emit()
	}
	wantRes := map[string]string{"service.name": "apisonar", "service.version": "1.2.3", "host.name": "node-a", "k8s.node.name": "node-a"}
	if !reflect.DeepEqual(res, wantRes) {
		t.Errorf("resource %v, want %v", res, wantRes)
	}
}

func TestFindingSeverityNumbers(t *testing.T) {
	for sev, want := range map[string]log.Severity{
		"info": log.SeverityInfo, "low": log.SeverityWarn, "medium": log.SeverityWarn2,
		"high": log.SeverityError, "critical": log.SeverityFatal, "bogus": log.SeverityUndefined,
	} {
		if got := severityNumber(sev); got != want {
			t.Errorf("%s: %v, want %v", sev, got, want)
		}
	}
}

func TestFindingWithoutOptionalFieldsHasOnlyWhatIsKnown(t *testing.T) {
	f := Finding{Time: t0, Kind: "shadow_api", Severity: "medium", Service: "s", Summary: "x", Count: 3,
		FirstSeen: t0, LastSeen: t0, Principal: "\xff\xfebad"}
	r := f.record(t0)
	got := map[string]string{}
	r.WalkAttributes(func(kv attribute.KeyValue) bool { got[string(kv.Key)] = kv.Value.Emit(); return true })
	want := map[string]string{
		"apisonar.finding.kind": "shadow_api", "apisonar.finding.severity": "medium", "apisonar.service": "s",
		"apisonar.principal": "\uFFFDbad", "apisonar.first_seen": "2026-03-01T12:00:00Z",
		"apisonar.last_seen": "2026-03-01T12:00:00Z", "apisonar.count": "3",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

func TestUserResourceAttributesWin(t *testing.T) {
	res := buildResource(ResourceInfo{HostName: "detected"}, map[string]string{"host.name": "configured", "service.name": "edge"})
	got := map[string]string{}
	for _, kv := range res.Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	want := map[string]string{"host.name": "configured", "service.name": "edge"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// histogram finds the data points of a named histogram.
func histogram(t *testing.T, rm *metricdata.ResourceMetrics, name string) (metricdata.Metrics, []metricdata.HistogramDataPoint[float64]) {
	t.Helper()
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == name {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok {
				t.Fatalf("%s is %T, want a float histogram", name, m.Data)
			}
			if h.Temporality != metricdata.CumulativeTemporality {
				t.Errorf("%s temporality %v", name, h.Temporality)
			}
			return m, h.DataPoints
		}
	}
	t.Fatalf("no metric %s", name)
	return metricdata.Metrics{}, nil
}

func TestRequestDurationHistograms(t *testing.T) {
	e := newExporter(Config{}, ResourceInfo{}, nil, nil, nil, fixedClock)
	for _, d := range []time.Duration{3 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 1200 * time.Millisecond} {
		e.ObserveCall(httpCall("GET", "/users/17", 200, d), "/users/{id}")
	}
	e.ObserveCall(httpCall("BREW", "/pot", 418, time.Millisecond), "")
	e.ObserveCall(grpcCall("/greet.GreetService/Greet", 0, 7*time.Millisecond), "/greet.GreetService/Greet")
	e.ObserveCall(grpcCall("/greet.GreetService/Greet", 5, 70*time.Millisecond), "")
	noResp := httpCall("GET", "/x", 0, 0)
	noResp.Flags |= 1 << 3 // FlagNoResponse
	e.ObserveCall(noResp, "/x")

	rm := e.collect()
	m, dps := histogram(t, rm, "http.server.request.duration")
	if m.Unit != "s" {
		t.Errorf("http unit %q", m.Unit)
	}
	if len(dps) != 2 {
		t.Fatalf("http series %d, want 2", len(dps))
	}
	wantAttrs := map[string]string{
		"http.request.method": "STRING:GET", "http.route": "STRING:/users/{id}", "http.response.status_code": "INT64:200",
		"server.address": "STRING:10.0.0.1", "server.port": "INT64:8080",
	}
	if got := setMap(dps[0].Attributes); !reflect.DeepEqual(got, wantAttrs) {
		t.Errorf("attrs %v, want %v", got, wantAttrs)
	}
	// 3 ms ≤ 5 ms; 20 ms twice ≤ 25 ms; 1.2 s ≤ 2.5 s.
	wantBuckets := []uint64{1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}
	if !reflect.DeepEqual(dps[0].BucketCounts, wantBuckets) || dps[0].Count != 4 {
		t.Errorf("buckets %v count %d, want %v 4", dps[0].BucketCounts, dps[0].Count, wantBuckets)
	}
	if math.Abs(dps[0].Sum-1.243) > 1e-9 {
		t.Errorf("sum %v, want 1.243", dps[0].Sum)
	}
	if mn, _ := dps[0].Min.Value(); math.Abs(mn-0.003) > 1e-12 {
		t.Errorf("min %v", mn)
	}
	other := setMap(dps[1].Attributes)
	if other["http.request.method"] != "STRING:_OTHER" || other["http.route"] != "STRING:_OTHER" || other["http.response.status_code"] != "INT64:418" {
		t.Errorf("unknown method and route: %v", other)
	}

	m, dps = histogram(t, rm, "rpc.server.duration")
	if m.Unit != "ms" || len(dps) != 2 {
		t.Fatalf("rpc unit %q series %d", m.Unit, len(dps))
	}
	wantRPC := map[string]string{
		"rpc.system": "STRING:grpc", "rpc.service": "STRING:greet.GreetService", "rpc.method": "STRING:Greet",
		"rpc.grpc.status_code": "INT64:0", "server.address": "STRING:10.0.0.1", "server.port": "INT64:8080",
	}
	if got := setMap(dps[0].Attributes); !reflect.DeepEqual(got, wantRPC) {
		t.Errorf("rpc attrs %v, want %v", got, wantRPC)
	}
	// 7 ms falls in (5, 10].
	if dps[0].BucketCounts[2] != 1 || dps[0].Sum != 7 {
		t.Errorf("rpc buckets %v sum %v", dps[0].BucketCounts, dps[0].Sum)
	}
	if got := setMap(dps[1].Attributes)["rpc.grpc.status_code"]; got != "INT64:5" {
		t.Errorf("second rpc status %s", got)
	}
	if s := e.Stats(); s.UnmeasuredCalls != 1 || s.HTTPSeries != 2 || s.RPCSeries != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestClientSideCallsGetClientHistograms(t *testing.T) {
	e := newExporter(Config{}, ResourceInfo{}, nil, nil, nil, fixedClock)
	client := testConn
	client.Side = parser.SideClient
	h := httpCall("GET", "/users/17", 200, 30*time.Millisecond)
	e.ObserveCall(h, "/users/{id}")
	hc := httpCall("GET", "/users/17", 200, 31*time.Millisecond)
	hc.Conn = &client
	e.ObserveCall(hc, "/users/{id}")
	g := grpcCall("/greet.GreetService/Greet", 0, 7*time.Millisecond)
	g.Conn = &client
	e.ObserveCall(g, "/greet.GreetService/Greet")

	rm := e.collect()
	_, dps := histogram(t, rm, "http.server.request.duration")
	if len(dps) != 1 || dps[0].Count != 1 || setMap(dps[0].Attributes)["http.route"] != "STRING:/users/{id}" {
		t.Errorf("server histogram: %+v", dps)
	}
	m, dps := histogram(t, rm, "http.client.request.duration")
	want := map[string]string{
		"http.request.method": "STRING:GET", "url.template": "STRING:/users/{id}", "http.response.status_code": "INT64:200",
		"server.address": "STRING:10.0.0.1", "server.port": "INT64:8080",
	}
	if m.Unit != "s" || len(dps) != 1 || dps[0].Count != 1 || !reflect.DeepEqual(setMap(dps[0].Attributes), want) {
		t.Errorf("client histogram %q: %+v", m.Unit, dps)
	}
	m, dps = histogram(t, rm, "rpc.client.duration")
	if m.Unit != "ms" || len(dps) != 1 || dps[0].Sum != 7 {
		t.Errorf("rpc client histogram %q: %+v", m.Unit, dps)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "rpc.server.duration" {
				t.Errorf("a client-side gRPC call counted as a server one")
			}
		}
	}
	var b bytes.Buffer
	if err := e.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"# TYPE http_client_request_duration_seconds histogram", "# TYPE rpc_client_duration_seconds histogram",
		`url_template="/users/{id}"`} {
		if !strings.Contains(b.String(), l) {
			t.Errorf("Prometheus text lacks %q", l)
		}
	}
}

func TestSeriesCapSendsExtraCallsToOverflow(t *testing.T) {
	e := newExporter(Config{MaxSeries: 3}, ResourceInfo{}, nil, nil, nil, fixedClock)
	for i := range 10 {
		e.ObserveCall(httpCall("GET", "/", 200+i, time.Millisecond), "/r")
	}
	_, dps := histogram(t, e.collect(), "http.server.request.duration")
	if len(dps) != 4 {
		t.Fatalf("series %d, want 3 and the overflow", len(dps))
	}
	last := setMap(dps[3].Attributes)
	if !reflect.DeepEqual(last, map[string]string{"otel.metric.overflow": "BOOL:true"}) || dps[3].Count != 7 {
		t.Errorf("overflow %v count %d", last, dps[3].Count)
	}
	if s := e.Stats(); s.SeriesOverflowCalls != 7 {
		t.Errorf("overflow calls %d, want 7", s.SeriesOverflowCalls)
	}
}

func TestHealthMetrics(t *testing.T) {
	e := newExporter(Config{Health: func() map[string]uint64 {
		return map[string]uint64{"parser.calls": 10, "ebpf.lost_records": 2, "source.bytes": 4096, "tracker.connections.open": 7}
	}}, ResourceInfo{}, nil, nil, nil, fixedClock)
	rm := e.collect()
	type desc struct {
		unit      string
		monotonic bool
		gauge     bool
		value     int64
	}
	got := map[string]desc{}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			got[m.Name] = desc{m.Unit, d.IsMonotonic, false, d.DataPoints[0].Value}
		case metricdata.Gauge[int64]:
			got[m.Name] = desc{m.Unit, false, true, d.DataPoints[0].Value}
		}
	}
	want := map[string]desc{
		"apisonar.parser.calls":             {"{calls}", true, false, 10},
		"apisonar.ebpf.lost_records":        {"{lost_records}", true, false, 2},
		"apisonar.source.bytes":             {"By", true, false, 4096},
		"apisonar.tracker.connections.open": {"{open}", false, true, 7},
		"apisonar.export.findings.exported": {"{exported}", true, false, 0},
		"apisonar.export.findings.dropped":  {"{dropped}", true, false, 0},
		"apisonar.export.findings.failures": {"{failures}", true, false, 0},
		"apisonar.export.metrics.failures":  {"{failures}", true, false, 0},
		"apisonar.export.series.overflow":   {"{overflow}", true, false, 0},
		"apisonar.export.calls.unmeasured":  {"{unmeasured}", true, false, 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestQueueBoundRetriesAndCountsDrops(t *testing.T) {
	logs := &fakeLogs{failing: true}
	e := newExporter(Config{QueueSize: 5, RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond}, ResourceInfo{}, nil, nil, logs, fixedClock)
	for i := range 8 {
		f := sampleFinding()
		f.Count = uint64(i)
		e.Finding(f)
	}
	if s := e.Stats(); s.FindingsDropped != 3 || s.FindingsQueued != 5 {
		t.Fatalf("while down: %+v, want 5 queued and 3 dropped", s)
	}
	if !otelcoltest.WaitFor(2*time.Second, func() bool { return e.Stats().FindingExportFailures >= 2 }) {
		t.Fatal("the sender did not retry")
	}
	logs.setFailing(false)
	if !otelcoltest.WaitFor(5*time.Second, func() bool { return len(logs.received()) == 5 }) {
		t.Fatalf("after recovery received %d, want 5", len(logs.received()))
	}
	for i, r := range logs.received() {
		if got := attrMap(&r)["apisonar.count"]; got != "INT64:"+string(rune('0'+i)) {
			t.Errorf("record %d has count %s: order lost", i, got)
		}
	}
	mustShutdown(t, e)
	if s := e.Stats(); s.FindingsExported != 5 || s.FindingsDropped != 3 || s.FindingsPending != 0 {
		t.Errorf("final %+v", s)
	}
}

func TestFindingNeverBlocksOnADeadCollector(t *testing.T) {
	logs := &fakeLogs{failing: true}
	e := newExporter(Config{QueueSize: 100, RetryMin: time.Hour, RetryMax: time.Hour}, ResourceInfo{}, nil, nil, logs, fixedClock)
	done := make(chan struct{})
	go func() {
		for range 10000 {
			e.Finding(sampleFinding())
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Finding blocked")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = e.Shutdown(ctx)
	s := e.Stats()
	if s.FindingsDropped != 9900 || s.FindingsUnsent != 100 {
		t.Errorf("%+v, want 9900 dropped and 100 unsent", s)
	}
	e.Finding(sampleFinding())
	if e.Stats().FindingsDropped != 9901 {
		t.Error("a finding after shutdown was not counted as dropped")
	}
}

func TestSlowCollectorNeitherBlocksNorHoldsShutdown(t *testing.T) {
	logs := &fakeLogs{hang: true}
	e := newExporter(Config{QueueSize: 10, Timeout: time.Hour}, ResourceInfo{}, nil, nil, logs, fixedClock)
	start := time.Now()
	for range 50 {
		e.Finding(sampleFinding())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("50 findings took %v against a hanging collector", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = e.Shutdown(ctx)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Shutdown outlived its context: %v", d)
	}
	if s := e.Stats(); s.FindingsDropped != 40 || s.FindingsUnsent != 10 {
		t.Errorf("%+v, want 40 dropped and 10 unsent", s)
	}
}

func TestShutdownEndsWithItsContextWhileAMetricExportHangs(t *testing.T) {
	ms := &fakeMetrics{hang: true}
	e := newExporter(Config{Interval: 10 * time.Millisecond, Timeout: time.Hour}, ResourceInfo{}, nil, ms, nil, fixedClock)
	time.Sleep(50 * time.Millisecond) // the loop is now inside a hanging export
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.Shutdown(ctx); err == nil {
		t.Error("Shutdown reported success although the last export could not finish")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
}

func TestShutdownExportsMetricsOnce(t *testing.T) {
	ms := &fakeMetrics{}
	e := newExporter(Config{Interval: time.Hour}, ResourceInfo{}, nil, ms, nil, fixedClock)
	e.ObserveCall(httpCall("GET", "/", 200, time.Millisecond), "/")
	mustShutdown(t, e)
	mustShutdown(t, e)
	if ms.exports != 1 || ms.last[0] != "http.server.request.duration" {
		t.Errorf("exports %d, names %v", ms.exports, ms.last)
	}
}

func TestPrometheusText(t *testing.T) {
	e := newExporter(Config{}, ResourceInfo{Version: "1.0", HostName: "h"}, nil, nil, nil, fixedClock)
	e.ObserveCall(httpCall("GET", "/a/1", 200, 30*time.Millisecond), `/a/{id}"x\`)
	var b bytes.Buffer
	if err := e.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	// Written by hand from the exposition format: cumulative buckets, the
	// route's quote and backslash escaped.
	labels := `http_request_method="GET",http_response_status_code="200",http_route="/a/{id}\"x\\",server_address="10.0.0.1",server_port="8080"`
	want := []string{
		`target_info{host_name="h",service_name="apisonar",service_version="1.0"} 1`,
		`# TYPE http_server_request_duration_seconds histogram`,
		`http_server_request_duration_seconds_bucket{` + labels + `,le="0.025"} 0`,
		`http_server_request_duration_seconds_bucket{` + labels + `,le="0.05"} 1`,
		`http_server_request_duration_seconds_bucket{` + labels + `,le="10"} 1`,
		`http_server_request_duration_seconds_bucket{` + labels + `,le="+Inf"} 1`,
		`http_server_request_duration_seconds_sum{` + labels + `} 0.03`,
		`http_server_request_duration_seconds_count{` + labels + `} 1`,
		`# TYPE apisonar_export_findings_dropped_total counter`,
		`apisonar_export_findings_dropped_total 0`,
	}
	text := b.String()
	for _, w := range want {
		if !strings.Contains(text, w+"\n") {
			t.Errorf("missing line %s\n---\n%s", w, text)
		}
	}
}

// requireTool finds a command, skipping without it, failing under CI.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found under CI=true (apt-get install -y prometheus): %v", name, err)
		}
		t.Skipf("%s not found (Debian package prometheus ships it): %v", name, err)
	}
	return p
}

func TestPromtoolChecksExposition(t *testing.T) {
	promtool := requireTool(t, "promtool")
	e := newExporter(Config{MaxSeries: 4, Health: func() map[string]uint64 {
		return map[string]uint64{"parser.calls": 10, "source.bytes": 99, "tracker.connections.open": 3}
	}}, ResourceInfo{Version: "1.0", HostName: "h", K8sNodeName: "n"}, nil, nil, nil, fixedClock)
	for i, route := range []string{"/a", "/b/{id}", "", "/c", "/d", "/e"} {
		e.ObserveCall(httpCall("GET", "/", 200+i, time.Duration(i+1)*40*time.Millisecond), route)
	}
	e.ObserveCall(grpcCall("/greet.GreetService/Greet", 0, 3*time.Millisecond), "")
	client := testConn
	client.Side = parser.SideClient
	hc := httpCall("GET", "/", 200, 5*time.Millisecond)
	hc.Conn = &client
	e.ObserveCall(hc, "/a")
	var b bytes.Buffer
	if err := e.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "http_client_request_duration_seconds") {
		t.Errorf("no client histogram in the exposition")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &b
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestPrometheusBoundsMatchOTLPBounds(t *testing.T) {
	for _, fam := range []*family{&httpFamily, &rpcFamily} {
		if len(fam.promBounds) != len(fam.bounds) || len(fam.bounds)+1 > maxBuckets {
			t.Fatalf("%s: %d prometheus bounds for %d bounds", fam.name, len(fam.promBounds), len(fam.bounds))
		}
		for i, b := range fam.bounds {
			le, err := strconv.ParseFloat(fam.promBounds[i], 64)
			if err != nil || math.Abs(le-b/fam.promDiv) > 1e-12 {
				t.Errorf("%s bound %d: le=%s, want %v", fam.name, i, fam.promBounds[i], b/fam.promDiv)
			}
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"missing_ca_file":    {Endpoint: "https://c:4317", CACertFile: "testdata/does-not-exist.pem"},
		"unknown_protocol":   {Endpoint: "http://c:4317", Protocol: "http/json"},
		"endpoint_not_a_url": {Endpoint: "http://[::1", Protocol: ProtocolGRPC},
	} {
		t.Run(name, func(t *testing.T) {
			if e, err := New(cfg, ResourceInfo{}, nil); err == nil {
				mustShutdown(t, e)
				t.Fatal("accepted")
			}
		})
	}
}

func TestNewWithoutEndpointKeepsPrometheus(t *testing.T) {
	e, err := New(Config{}, ResourceInfo{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Finding(sampleFinding()) // OTLP off: a no-op, not a panic
	e.ObserveCall(httpCall("GET", "/", 200, time.Millisecond), "/")
	var b bytes.Buffer
	if err := e.WritePrometheus(&b); err != nil || !strings.Contains(b.String(), "http_server_request_duration_seconds_count{") {
		t.Errorf("err %v, exposition:\n%s", err, b.String())
	}
	mustShutdown(t, e)
}

func TestNewDialsLazilyAndShutsDownWithoutACollector(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(strings.ReplaceAll(proto, "/", "_"), func(t *testing.T) {
			// Port 1 on loopback: nothing listens, connections are refused.
			e, err := New(Config{Endpoint: "http://127.0.0.1:1", Protocol: proto, QueueSize: 3, Timeout: time.Second}, ResourceInfo{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				e.Finding(sampleFinding())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_ = e.Shutdown(ctx)
			if s := e.Stats(); s.FindingsDropped != 2 || s.FindingsUnsent != 3 || s.FindingsExported != 0 {
				t.Errorf("%+v, want 2 dropped, 3 unsent", s)
			}
		})
	}
}

func TestRepeatedCollectsKeepSeriesApart(t *testing.T) {
	e := newExporter(Config{}, ResourceInfo{}, nil, nil, nil, fixedClock)
	e.ObserveCall(grpcCall("/a.S/M", 0, 3*time.Millisecond), "")
	e.collect()
	// New HTTP series appear after a collect that had none (300 ms falls in
	// (0.25, 0.5], bucket 7); the reused
	// buffers must not carry the gRPC counts into them.
	e.ObserveCall(httpCall("GET", "/", 200, 3*time.Millisecond), "/x")
	e.ObserveCall(httpCall("GET", "/", 500, 300*time.Millisecond), "/x")
	e.ObserveCall(grpcCall("/a.S/M", 0, 3*time.Millisecond), "")
	for range 2 {
		rm := e.collect()
		_, h := histogram(t, rm, "http.server.request.duration")
		_, r := histogram(t, rm, "rpc.server.duration")
		if len(h) != 2 || h[0].Count != 1 || h[0].BucketCounts[0] != 1 || h[1].BucketCounts[7] != 1 || h[1].Count != 1 {
			t.Fatalf("http points %+v", h)
		}
		// 3 ms twice falls in (0, 5].
		if len(r) != 1 || r[0].Count != 2 || r[0].BucketCounts[1] != 2 || len(r[0].BucketCounts) != 16 {
			t.Fatalf("rpc points %+v", r)
		}
	}
}
