package agent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apisonar/apisonar/bpf"
	"github.com/apisonar/apisonar/parser"
)

// The exec trigger: a process from a TLS file never seen before is probed
// because of its exec record, within a fraction of a second. The periodic
// scan is an hour away in these tests, so it cannot be what finds the
// file; Start's scan runs before the file exists.

// startExecAgent starts the agent with no periodic scan in reach.
func startExecAgent(t *testing.T) *liveAgent {
	t.Helper()
	return startAgentWith(t, EBPFSourceOptions{TLS: TLSOptions{ScanInterval: time.Hour}})
}

// copyFile copies src to a new file (a new inode) at dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// watchProbed reports, once the file appears in files(), how long after
// start it did; <0 while it has not.
func watchProbed(t *testing.T, id bpf.FileID, files func() []bpf.FileID) (start func(), took func() time.Duration) {
	var began atomic.Int64
	var got atomic.Int64
	got.Store(-1)
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if b := began.Load(); b != 0 && slices.Contains(files(), id) {
				got.Store(time.Now().UnixNano() - b)
				return
			}
		}
	}()
	return func() { began.Store(time.Now().UnixNano()) }, func() time.Duration { return time.Duration(got.Load()) }
}

// checkExecOnly asserts that no periodic scan ran and that the exec path
// probed at least one file.
func checkExecOnly(t *testing.T, m *TLSManager) {
	t.Helper()
	st := m.Stats()
	t.Logf("TLS stats: %+v", st)
	if st.Scans != 1 {
		t.Errorf("%d scans, want only Start's", st.Scans)
	}
	if st.ExecEvents == 0 || st.ExecAttached == 0 {
		t.Errorf("exec events %d, files probed on exec %d; want both > 0", st.ExecEvents, st.ExecAttached)
	}
}

// goDelay is how long after its start the new Go client makes its first
// request. The exec record reaches user space within the tracer's
// PollInterval (50 ms) and inspecting a stripped build of the peer takes
// about 10 ms (a build with DWARF: about 120 ms), so this leaves room for a
// loaded machine.
const goDelay = 250 * time.Millisecond

// A Go HTTPS client from a binary never seen before, started after the
// agent, calls goDelay after its start: its calls are captured.
func TestLiveExecGoTLSNewBinary(t *testing.T) {
	requireBPF(t)
	built := buildGoTLSPeer(t, true)
	a := startExecAgent(t)
	m, tr := a.src.TLS(), a.src.tr

	srv, port := goTLSServer(t, built, "server")
	// The server's binary is found by its exec too: no scan is due.
	waitGoProbed(t, a, built)

	bin := filepath.Join(t.TempDir(), "gotlspeer")
	copyFile(t, built, bin)
	id, err := bpf.StatFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tr.GoTLSFiles(), id) {
		t.Fatal("the new binary is probed before it ran")
	}
	begin, took := watchProbed(t, id, tr.GoTLSFiles)
	cert := tlsPeerFile(t, "cert.pem")
	begin()
	cli, out := runOut(t, []string{"GOTLSPEER_DELAY=" + goDelay.String()}, bin, "client", "h1", cert, port, "/items/e1", "/items/e2")
	if out != "200 HTTP/1.1 item e1\n200 HTTP/1.1 item e2\n" {
		t.Errorf("client output: %q", out)
	}
	d := took()
	t.Logf("new Go binary probed %v after the client was started", d)
	if d < 0 {
		t.Errorf("the new binary was never probed while the client ran")
	}
	checkExecOnly(t, m)
	checkGoCalls(t, a.stop(t), []int{cli, srv.pid()}, map[int]parser.Protocol{cli: parser.ProtoHTTP1}, []tlsCall{
		{cli, parser.SideClient, "GET", "/items/e1", 200},
		{cli, parser.SideClient, "GET", "/items/e2", 200},
		{srv.pid(), parser.SideServer, "GET", "/items/e1", 200},
		{srv.pid(), parser.SideServer, "GET", "/items/e2", 200},
	})
}

// pyDelay is how long the python client waits after loading the TLS
// library before it connects: more than the longest gap between the exec
// checks of a process's maps in its first second (250 ms).
const pyDelay = 500 * time.Millisecond

// pyLoad is how long the python client runs before it loads the TLS
// library, as a program that imports ssl late does.
const pyLoad = 300 * time.Millisecond

// A python client on its own copy of libssl (a new file), started after the
// agent, loads the library some time after its start and connects shortly
// after that: its calls are captured.
func TestLiveExecLibSSLCopy(t *testing.T) {
	cert := tlsPeerFile(t, "cert.pem")
	peer := tlsPeerFile(t, "peer.py")
	dir, lib := copyLibSSL(t)
	id, err := bpf.StatFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	a := startExecAgent(t)
	m, tr := a.src.TLS(), a.src.tr
	srv, port := pythonTLSServer(t, nil)
	if slices.Contains(tr.SSLFiles(), id) {
		t.Fatal("the copy is probed before any process maps it")
	}

	begin, took := watchProbed(t, id, tr.SSLFiles)
	// The client starts, loads the TLS library only after pyLoad (import
	// ssl maps libssl; the exec record has long been handled by then, so
	// only the later checks of its maps can find the library), waits
	// pyDelay and runs peer.py's client.
	script := fmt.Sprintf(`import sys, time, runpy
time.sleep(%g)
import ssl
time.sleep(%g)
sys.argv = [%q, "client", %q, %q, "/py/exec1", "/py/exec2"]
runpy.run_path(%q, run_name="__main__")
`, pyLoad.Seconds(), pyDelay.Seconds(), peer, cert, port, peer)
	begin()
	cmd := exec.Command("/usr/bin/python3", "-c", script)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+dir)
	var errOut limitedBuffer
	cmd.Stderr = &errOut
	outB, err := cmd.Output()
	if err != nil {
		t.Fatalf("python client: %v: %s", err, errOut.b)
	}
	cli := cmd.ProcessState.Pid()
	if out := string(outB); out != "200 hi exec1\n200 hi exec2\n" {
		t.Errorf("client output: %q", out)
	}
	d := took()
	t.Logf("libssl copy probed %v after the client was started", d)
	if d < 0 {
		t.Errorf("the libssl copy was never probed while the client ran")
	}
	checkExecOnly(t, m)
	checkTLSCalls(t, a.stop(t), []int{cli, srv.pid()}, []tlsCall{
		{cli, parser.SideClient, "GET", "/py/exec1", 200},
		{cli, parser.SideClient, "GET", "/py/exec2", 200},
		{srv.pid(), parser.SideServer, "GET", "/py/exec1", 200},
		{srv.pid(), parser.SideServer, "GET", "/py/exec2", 200},
	})
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if n := 4096 - len(l.b); n > 0 {
		l.b = append(l.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

// Exec never blocks the ring reader: beyond ExecQueue waiting events, and
// for pids no kernel sends, events are dropped and counted.
func TestTLSExecQueueBounded(t *testing.T) {
	m := NewTLSManager(nil, TLSOptions{ExecQueue: 2}, nil)
	for _, pid := range []uint32{100, 101, 102, 103, 0, 1<<22 + 1, uint32(os.Getpid())} {
		m.Exec(pid) // no Run: nothing drains the queue
	}
	if st := m.Stats(); st.ExecEvents != 7 || st.ExecDropped != 5 || st.ExecAttached != 0 {
		t.Errorf("stats %+v: want 7 events, 5 dropped, 0 attached", st)
	}
}
