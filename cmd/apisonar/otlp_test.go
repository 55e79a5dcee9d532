package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apisonar/apisonar/internal/otelcoltest"
)

// TestRunExportsToCollector runs the real binary as root against a real
// OpenTelemetry Collector: curl drives python's http.server, which serves
// files laid out as a version of the "Shop" API that drifted from its
// spec. The collector must receive the findings as log records and the
// per-endpoint metrics, with routes (never raw paths) as attributes.
func TestRunExportsToCollector(t *testing.T) {
	requireLive(t)
	python := requireTool(t, "python3")
	curl := requireTool(t, "curl")
	bin := buildBinary(t)
	col := otelcoltest.Start(t, otelcoltest.Binary(t), otelcoltest.FreePort(t), otelcoltest.FreePort(t))

	root := t.TempDir()
	files := map[string]string{
		"api/items/7":    `{"id":7,"name":"lamp","price":12.5}`,
		"api/items/8":    `{"id":8,"name":"desk","price":99}`,
		"api/export":     `id,name` + "\n",
		"api/admin/dump": `{"users":3}`,
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srvPort, apiPort := freePort(t), freePort(t)
	srv := exec.Command(python, "-m", "http.server", fmt.Sprint(srvPort), "--bind", "127.0.0.1", "--directory", root)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", srvPort))

	var stdout, stderr otelcoltest.SyncBuffer
	agent := exec.Command(bin, "run", "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort), "--output", "jsonl",
		"--spec", "../../testdata/specs", "--state-dir", t.TempDir(),
		"--otlp-endpoint", fmt.Sprintf("http://127.0.0.1:%d", col.HTTPPort))
	agent.Env = append(os.Environ(), "OTEL_METRIC_EXPORT_INTERVAL=500", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=ci")
	agent.Stdout, agent.Stderr = &stdout, &stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", apiPort))

	base := fmt.Sprintf("http://127.0.0.1:%d", srvPort)
	for _, path := range []string{"/api/items/7", "/api/items/8", "/api/items/7", "/api/export", "/api/admin/dump", "/api/admin/dump"} {
		if out, err := exec.Command(curl, "-sS", "-o", "/dev/null", base+path).CombinedOutput(); err != nil {
			t.Fatalf("curl %s: %v %s", path, err, out)
		}
	}

	// Findings arrive when raised; the metrics on the next export.
	want := []string{"shadow_api GET /api/admin/dump", "zombie_api GET /api/export"}
	findings := func() []string {
		var ks []string
		for _, r := range otelcoltest.FindingRecords(col.Out.String()) {
			a := otelcoltest.Attrs(r)
			ks = append(ks, strings.Join([]string{unstr(a["apisonar.finding.kind"]), unstr(a["http.request.method"]), unstr(a["http.route"])}, " "))
		}
		sort.Strings(ks)
		return ks
	}
	histogram := func() string { return otelcoltest.LastMetric(col.Out.String(), "http.server.request.duration") }
	if !otelcoltest.WaitFor(20*time.Second, func() bool {
		return len(findings()) >= len(want) && strings.Contains(histogram(), "Count: 3")
	}) {
		t.Logf("agent stderr:\n%s", stderr.String())
	}
	if g := findings(); strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings at the collector:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range otelcoltest.FindingRecords(col.Out.String()) {
		for _, s := range []string{"EventName: apisonar.finding", "apisonar.service: Str(Shop)"} {
			if !strings.Contains(r, s) {
				t.Errorf("finding record lacks %q:\n%s", s, r)
			}
		}
	}
	for _, s := range []string{"service.name: Str(apisonar)", "deployment.environment.name: Str(ci)", "host.name: Str("} {
		if !strings.Contains(col.Out.String(), s) {
			t.Errorf("resource attribute %q never reached the collector", s)
		}
	}

	m := histogram()
	if m == "" {
		t.Fatalf("no http.server.request.duration at the collector:\n%s", col.Out.String())
	}
	for _, s := range []string{"Unit: s", "DataType: Histogram", "http.route: Str(/api/items/{itemId})", "http.request.method: Str(GET)",
		"http.response.status_code: Int(200)", fmt.Sprintf("server.port: Int(%d)", srvPort)} {
		if !strings.Contains(m, s) {
			t.Errorf("http.server.request.duration lacks %q:\n%s", s, m)
		}
	}
	if strings.Contains(col.Out.String(), "/api/items/7") {
		t.Errorf("a raw path reached the collector; only routes may")
	}

	agent.Process.Signal(syscall.SIGTERM)
	if err := agent.Wait(); err != nil {
		t.Errorf("agent exit: %v\n%s", err, stderr.String())
	}
	// The jsonl stream carried the same findings.
	var lines int
	for _, l := range bytes.Split([]byte(stdout.String()), []byte("\n")) {
		if bytes.Contains(l, []byte(`"type":"finding"`)) {
			lines++
		}
	}
	if lines != len(want) {
		t.Errorf("%d finding lines on stdout, want %d", lines, len(want))
	}
}

// unstr turns the debug exporter's Str(x) into x.
func unstr(v string) string {
	return strings.TrimSuffix(strings.TrimPrefix(v, "Str("), ")")
}
