package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/apisonar/apisonar/parser"
)

// callKey is what both sources must agree on for one call.
func callKey(c *parser.Call) string {
	return fmt.Sprintf("%s %s?%s -> %d req=%d resp=%d client=%d", c.Method, c.Path, c.Query, c.Status,
		c.ReqBytes, c.RespBytes, c.Conn.Client.Port())
}

// TestEBPFAndAFPacketAgree observes the same live traffic through the
// syscall tracepoints and through AF_PACKET at once: the server-side calls
// of the one must equal the calls of the other.
func TestEBPFAndAFPacketAgree(t *testing.T) {
	requireBPF(t)
	needRoot(t)
	python := requireTestTool(t, "python3")
	curl := requireTestTool(t, "curl")

	live := startAgent(t)

	var mu sync.Mutex
	var pkts []*parser.Call
	var stats parser.Stats
	trk := NewTracker(TrackerOptions{}, NewParserFactory(parser.Options{}, &stats), parser.EmitFunc(func(c *parser.Call) {
		mu.Lock()
		pkts = append(pkts, c.Clone())
		mu.Unlock()
	}))
	af := &AFPacketSource{Interface: "lo"}
	ctx, cancel := context.WithCancel(context.Background())
	afDone := make(chan error, 1)
	go func() { afDone <- af.Run(ctx, trk) }()
	defer cancel()

	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "a.json"), []byte(`{"id":1,"name":"first"}`), 0o644)
	os.WriteFile(filepath.Join(root, "big.bin"), make([]byte, 300_000), 0o644)
	port := pickPort(t)
	srv := spawn(t, python, "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1", "--directory", root)
	waitListen(t, fmt.Sprintf("127.0.0.1:%d", port))
	time.Sleep(300 * time.Millisecond) // the ring is up before the traffic starts

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// One keep-alive connection with several requests, then separate ones.
	run(t, "", curl, "-sS", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
		base+"/a.json?x=1", base+"/missing", base+"/big.bin")
	run(t, "", curl, "-sS", "-o", "/dev/null", "-I", base+"/a.json")
	run(t, "", curl, "-sS", "-o", "/dev/null", "-d", "name=second", base+"/a.json")

	ebpfCalls := callsOf(live.stop(t), srv.pid(), nil)
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-afDone; err != nil {
		t.Fatalf("afpacket: %v", err)
	}
	trk.CloseAll(time.Now().UnixNano())

	var a, b []string
	for _, c := range ebpfCalls {
		a = append(a, callKey(c))
	}
	mu.Lock()
	for _, c := range pkts {
		if int(c.Conn.Server.Port()) == port {
			b = append(b, callKey(c))
		}
	}
	mu.Unlock()
	sort.Strings(a)
	sort.Strings(b)
	if len(a) != 5 {
		t.Fatalf("eBPF saw %d server-side calls, want 5:\n%v", len(a), a)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("sources disagree\neBPF:     %v\nAF_PACKET: %v", a, b)
	}
}

func requireTestTool(t *testing.T, name string) string {
	t.Helper()
	p, err := lookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is needed (make deps installs it): %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

var lookPath = exec.LookPath
