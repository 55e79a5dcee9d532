package otelcoltest

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
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

// BuilderModule is the collector builder the binary is built with.
const BuilderModule = "go.opentelemetry.io/collector/cmd/builder@v0.140.0"

//go:embed otelcol-builder.yaml
var manifest []byte

// Unavailable skips, or fails under CI=true, where nothing may skip.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Binary returns the path of the test collector, building it the first
// time (a few minutes; needs the Go module proxy). The build is keyed by
// the manifest's hash, so a changed manifest builds afresh.
func Binary(t testing.TB) string {
	t.Helper()
	sum := sha256.Sum256(manifest)
	cache, err := os.UserCacheDir()
	if err != nil {
		Unavailable(t, "no cache directory for the collector build: %v", err)
	}
	dir := filepath.Join(cache, "apisonar-test", "otelcol-"+hex.EncodeToString(sum[:6]))
	bin := filepath.Join(dir, "src", "otelcol-apisonar-test")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		Unavailable(t, "go toolchain not on PATH, cannot build the collector: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOSUMDB=off", "GOBIN="+filepath.Join(dir, "bin"))
	builder := filepath.Join(dir, "bin", "builder")
	if _, err := os.Stat(builder); err != nil {
		t.Logf("installing %s", BuilderModule)
		cmd := exec.Command(goBin, "install", BuilderModule)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			Unavailable(t, "cannot install the collector builder (no module proxy?): %v\n%s", err, out)
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
		Unavailable(t, "building the collector failed (no module proxy?): %v\n%s", err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the builder did not produce %s: %v", bin, err)
	}
	return bin
}

// SyncBuffer collects a process's output while tests read it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Collector is one run of the test collector.
type Collector struct {
	GRPCPort, HTTPPort int
	Out                *SyncBuffer // debug exporter output
	ErrOut             *SyncBuffer // the collector's own log
	cmd                *exec.Cmd
	done               chan struct{}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs bin with an OTLP receiver on the two loopback ports and the
// debug exporter at detailed verbosity, without sampling. It is stopped
// when the test ends.
func Start(t testing.TB, bin string, grpcPort, httpPort int) *Collector {
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
	c := &Collector{GRPCPort: grpcPort, HTTPPort: httpPort, Out: &SyncBuffer{}, ErrOut: &SyncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(bin, "--config", path)
	c.cmd.Stdout, c.cmd.Stderr = c.Out, c.ErrOut
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.Stop)
	ready := WaitFor(30*time.Second, func() bool {
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
		t.Fatalf("collector exited:\n%s", c.ErrOut.String())
	default:
	}
	if !ready {
		c.Stop()
		t.Fatalf("collector did not listen within 30s:\n%s", c.ErrOut.String())
	}
	return c
}

// Stop ends the collector (SIGTERM, then SIGKILL after 10 s).
func (c *Collector) Stop() {
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

// WaitFor polls cond every 10 ms until it holds or d has passed.
func WaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// Blocks cuts the debug exporter's detailed output into the blocks that
// start with marker ("LogRecord #", "Metric #"), each up to the next block
// of any kind.
func Blocks(out, marker string) []string {
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

// Attrs returns the "-> key: Value" lines of a block as a map (the last
// value wins).
func Attrs(block string) map[string]string {
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

// FindingRecords returns the debug blocks of finding log records.
func FindingRecords(out string) []string {
	var recs []string
	for _, b := range Blocks(out, "LogRecord #") {
		if strings.Contains(b, "\nEventName: apisonar.finding\n") {
			recs = append(recs, b)
		}
	}
	return recs
}

// LastMetric returns the last debug block describing metric name.
func LastMetric(out, name string) string {
	var last string
	for _, b := range Blocks(out, "Metric #") {
		if strings.Contains(b, "-> Name: "+name+"\n") {
			last = b
		}
	}
	return last
}
