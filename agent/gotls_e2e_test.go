package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apisonar/apisonar/bpf"
	"github.com/apisonar/apisonar/parser"
)

// The Go crypto/tls tests run real Go programs (testdata/gotlspeer, built
// here with the test's toolchain) on both ends of each connection, so the
// plaintext is only visible through the Go TLS uprobes: no libssl is
// involved, and the syscalls carry ciphertext that must not be reported.

// buildGoTLSPeer compiles testdata/gotlspeer; stripped builds it with
// -ldflags=-s -w (no symbol table, no DWARF).
func buildGoTLSPeer(t *testing.T, stripped bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gotlspeer")
	args := []string{"build", "-o", bin}
	if stripped {
		args = append(args, "-ldflags=-s -w")
	}
	cmd := exec.Command("go", append(args, "./testdata/gotlspeer")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build gotlspeer: %v: %s", err, out)
	}
	return bin
}

// startGoTLSAgent starts the agent with a short scan interval, so that a
// Go program started after it is probed within a fraction of a second.
func startGoTLSAgent(t *testing.T) *liveAgent {
	t.Helper()
	return startAgentWith(t, EBPFSourceOptions{TLS: TLSOptions{ScanInterval: 100 * time.Millisecond}})
}

// waitGoProbed waits until the agent has put its Go TLS probes on bin.
func waitGoProbed(t *testing.T, a *liveAgent, bin string) {
	t.Helper()
	id, err := bpf.StatFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(a.src.tr.GoTLSFiles(), id) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (%v) was not probed within 10s; Go stats %+v", bin, id, a.src.TLS().GoStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goTLSServer starts a gotlspeer server mode and returns it and its port.
func goTLSServer(t *testing.T, bin, mode string) (*child, string) {
	t.Helper()
	c := spawn(t, bin, mode, tlsPeerFile(t, "cert.pem"), tlsPeerFile(t, "key.pem"))
	port, ok := strings.CutPrefix(c.line(t), "listening ")
	if !ok {
		t.Fatalf("%s %s did not say where it listens", bin, mode)
	}
	waitListen(t, "127.0.0.1:"+port)
	return c, port
}

// checkGoCalls is checkTLSCalls plus what only Go peers show: the process
// name and the HTTP version the client negotiated.
func checkGoCalls(t *testing.T, calls []*parser.Call, pids []int, proto map[int]parser.Protocol, wants []tlsCall) {
	t.Helper()
	checkTLSCalls(t, calls, pids, wants)
	for _, c := range calls {
		if c.Conn == nil || !slices.Contains(pids, int(c.Conn.PID)) {
			continue
		}
		if c.Conn.Comm != "gotlspeer" {
			t.Errorf("pid %d %s %s: process name %q, want gotlspeer", c.Conn.PID, c.Method, c.Path, c.Conn.Comm)
		}
		if p, ok := proto[int(c.Conn.PID)]; ok && c.Protocol != p {
			t.Errorf("pid %d %s %s: protocol %v, want %v", c.Conn.PID, c.Method, c.Path, c.Protocol, p)
		}
	}
}

func kernelStats(t *testing.T, a *liveAgent) bpf.Stats {
	t.Helper()
	s, err := a.src.tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// goHTTPS runs the HTTPS checks against one build of the peer: the server
// and both clients start after the agent.
func goHTTPS(t *testing.T, bin string) {
	a := startGoTLSAgent(t)
	srv, port := goTLSServer(t, bin, "server")
	waitGoProbed(t, a, bin)
	before := kernelStats(t, a)

	cert := tlsPeerFile(t, "cert.pem")
	h1, out1 := runOut(t, nil, bin, "client", "h1", cert, port, "/items/1", "/items/2", "/missing")
	if out1 != "200 HTTP/1.1 item 1\n200 HTTP/1.1 item 2\n404 HTTP/1.1 no such page\n\n" {
		t.Errorf("h1 client output: %q", out1)
	}
	h2, out2 := runOut(t, nil, bin, "client", "h2", cert, port, "/items/a", "/items/b", "/nope")
	if out2 != "200 HTTP/2.0 item a\n200 HTTP/2.0 item b\n404 HTTP/2.0 no such page\n\n" {
		t.Errorf("h2 client output: %q", out2)
	}
	calls := a.stop(t)
	s := srv.pid()
	checkGoCalls(t, calls, []int{h1, h2, s},
		map[int]parser.Protocol{h1: parser.ProtoHTTP1, h2: parser.ProtoHTTP2}, []tlsCall{
			{h1, parser.SideClient, "GET", "/items/1", 200},
			{h1, parser.SideClient, "GET", "/items/2", 200},
			{h1, parser.SideClient, "GET", "/missing", 404},
			{h2, parser.SideClient, "GET", "/items/a", 200},
			{h2, parser.SideClient, "GET", "/items/b", 200},
			{h2, parser.SideClient, "GET", "/nope", 404},
			{s, parser.SideServer, "GET", "/items/1", 200},
			{s, parser.SideServer, "GET", "/items/2", 200},
			{s, parser.SideServer, "GET", "/missing", 404},
			{s, parser.SideServer, "GET", "/items/a", 200},
			{s, parser.SideServer, "GET", "/items/b", 200},
			{s, parser.SideServer, "GET", "/nope", 404},
		})
	after := a.src.kernelFinal.Load()
	if after == nil {
		t.Fatal("no final kernel counters")
	}
	logGoProbeHits(t, before, *after, 6)
	if t.Failed() {
		t.Logf("kernel counters: %+v", *after)
	}
}

// logGoProbeHits reports the probe hits per request between two counter
// readings (both sides of n requests are traced).
func logGoProbeHits(t *testing.T, before, after bpf.Stats, n int) {
	t.Helper()
	enter, ret := after.GoTLSEnter-before.GoTLSEnter, after.GoTLSRet-before.GoTLSRet
	t.Logf("%d HTTPS requests (client and server traced): %d entry + %d RET probe hits = %.1f per request; "+
		"%d calls with plaintext, %d without a socket, %d re-entries after stack growth",
		n, enter, ret, float64(enter+ret)/float64(n), after.GoTLSCalls-before.GoTLSCalls,
		after.GoTLSNoConn-before.GoTLSNoConn, after.GoTLSReentry-before.GoTLSReentry)
	if enter == 0 || ret == 0 {
		t.Errorf("probe hits: %d entries, %d RETs", enter, ret)
	}
}

func TestLiveGoTLSHTTP(t *testing.T) {
	requireBPF(t)
	goHTTPS(t, buildGoTLSPeer(t, false))
}

// A stripped binary: function bounds from .gopclntab, struct offsets from
// the per-version table.
func TestLiveGoTLSStripped(t *testing.T) {
	requireBPF(t)
	bin := buildGoTLSPeer(t, true)
	info, err := bpf.InspectGo(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Stripped || info.OffsetsFrom != "table" {
		t.Fatalf("stripped build inspected as stripped=%v offsets from %q", info.Stripped, info.OffsetsFrom)
	}
	goHTTPS(t, bin)
}

// grpc-go over TLS; the server runs before the agent starts, so it is
// found by the first scan.
func TestLiveGoTLSGRPC(t *testing.T) {
	requireBPF(t)
	bin := buildGoTLSPeer(t, false)
	srv, port := goTLSServer(t, bin, "grpcserver")
	a := startGoTLSAgent(t)
	waitGoProbed(t, a, bin)
	cert := tlsPeerFile(t, "cert.pem")
	ok, out1 := runOut(t, nil, bin, "grpcclient", cert, port, "hello")
	miss, out2 := runOut(t, nil, bin, "grpcclient", cert, port, "missing")
	if out1 != "0 echo:hello\n" || out2 != "5 \n" {
		t.Errorf("grpc client outputs: %q %q", out1, out2)
	}
	calls := a.stop(t)
	const path = "/apisonar.test.Echo/Unary"
	s := srv.pid()
	checkGoCalls(t, calls, []int{ok, miss}, map[int]parser.Protocol{ok: parser.ProtoGRPC, miss: parser.ProtoGRPC}, []tlsCall{
		{ok, parser.SideClient, "POST", path, 200},
		{miss, parser.SideClient, "POST", path, 200},
	})
	// The server's two calls share every field checkTLSCalls keys on.
	var served []int
	for _, c := range calls {
		if c.Conn == nil || int(c.Conn.PID) != s {
			continue
		}
		if c.Conn.Side != parser.SideServer || !c.Conn.TLS || c.Protocol != parser.ProtoGRPC ||
			string(c.Method) != "POST" || string(c.Path) != path || c.Status != 200 || c.Conn.Comm != "gotlspeer" {
			t.Errorf("server call: %s", callString(c))
		}
		served = append(served, c.GRPCStatus)
	}
	slices.Sort(served)
	if !slices.Equal(served, []int{0, 5}) {
		t.Errorf("server calls' grpc-status: %v, want [0 5]", served)
	}
	grpcStatus := map[int]int{}
	for _, c := range calls {
		if c.Conn != nil && (int(c.Conn.PID) == ok || int(c.Conn.PID) == miss) {
			grpcStatus[int(c.Conn.PID)] = c.GRPCStatus
		}
	}
	if grpcStatus[ok] != 0 || grpcStatus[miss] != 5 {
		t.Errorf("grpc-status seen: ok %d, missing %d; want 0 and 5", grpcStatus[ok], grpcStatus[miss])
	}
}

// Under load, with the probes on: 200 goroutines x 20 requests over
// HTTP/1.1 keep-alive and over HTTP/2 (four connections: the parser keeps
// at most 128 open streams per connection, by design). The programs must
// behave exactly as without probes (the load client checks every body;
// a small client's output is compared with a run before the agent), and
// every request must be reported once on each side.
func TestLiveGoTLSUnderLoad(t *testing.T) {
	requireBPF(t)
	const g, n = 200, 20
	bin := buildGoTLSPeer(t, false)
	cert := tlsPeerFile(t, "cert.pem")
	srv, port := goTLSServer(t, bin, "server")
	args := []string{"client", "h2", cert, port, "/items/x", "/missing", "/items/y"}
	_, unprobed := runOut(t, nil, bin, args...)
	start := time.Now()
	_, warm := runOut(t, nil, bin, "load", "h1", cert, port, strconv.Itoa(g), strconv.Itoa(n))
	_, warm2 := runOut(t, nil, bin, "load", "h2", cert, port, strconv.Itoa(g), strconv.Itoa(n))
	t.Logf("%d requests in %v without probes (%q %q)", 2*g*n, time.Since(start), warm, warm2)

	a := startGoTLSAgent(t)
	waitGoProbed(t, a, bin)
	_, probed := runOut(t, nil, bin, args...)
	if probed != unprobed {
		t.Errorf("client output changed under the probes: %q, before %q", probed, unprobed)
	}
	before := kernelStats(t, a)
	start = time.Now()
	h1, out1 := runOut(t, nil, bin, "load", "h1", cert, port, strconv.Itoa(g), strconv.Itoa(n))
	h2, out2 := runOut(t, nil, bin, "load", "h2", cert, port, strconv.Itoa(g), strconv.Itoa(n))
	elapsed := time.Since(start)
	want := fmt.Sprintf("ok %d\n", g*n)
	if out1 != want || out2 != want {
		t.Errorf("load outputs %q and %q, want %q each", out1, out2, want)
	}
	mid := kernelStats(t, a)
	calls := a.stop(t)
	t.Logf("%d requests in %v with probes", 2*g*n, elapsed)
	logGoProbeHits(t, before, mid, 2*g*n)
	if mid.LostRecords != 0 {
		t.Errorf("ring buffer dropped %d records under load", mid.LostRecords)
	}

	type key struct {
		pid   int
		side  parser.Side
		proto parser.Protocol
		path  string
	}
	seen := map[key]int{}
	for _, c := range calls {
		if c.Conn == nil || !strings.HasPrefix(string(c.Path), "/items/g") {
			continue
		}
		pid := int(c.Conn.PID)
		if pid != h1 && pid != h2 && pid != srv.pid() {
			continue
		}
		want := "item " + strings.TrimPrefix(string(c.Path), "/items/")
		if c.Status != 200 || !c.Conn.TLS || c.RespBytes != int64(len(want)) {
			t.Errorf("call %s", callString(c))
		}
		seen[key{pid, c.Conn.Side, c.Protocol, string(c.Path)}]++
	}
	for _, side := range []struct {
		pid   int
		side  parser.Side
		proto parser.Protocol
	}{
		{h1, parser.SideClient, parser.ProtoHTTP1}, {srv.pid(), parser.SideServer, parser.ProtoHTTP1},
		{h2, parser.SideClient, parser.ProtoHTTP2}, {srv.pid(), parser.SideServer, parser.ProtoHTTP2},
	} {
		missing, twice := 0, 0
		for i := range g {
			for j := range n {
				switch seen[key{side.pid, side.side, side.proto, fmt.Sprintf("/items/g%d-r%d", i, j)}] {
				case 0:
					missing++
				case 1:
				default:
					twice++
				}
			}
		}
		if missing != 0 || twice != 0 {
			t.Errorf("pid %d side %d %v: %d of %d requests missing, %d reported more than once",
				side.pid, side.side, side.proto, missing, g*n, twice)
		}
	}
}

// A Go binary whose (*Conn).Write does not decode is skipped, counted
// once, and gets no probe; the program itself runs as before.
func TestLiveGoTLSRejectsUndecodable(t *testing.T) {
	requireBPF(t)
	good := buildGoTLSPeer(t, false)
	info, err := bpf.InspectGo(good)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// 0x06 (PUSH ES) does not exist in 64-bit mode.
	data[info.Write.EntryOff] = 0x06
	bad := filepath.Join(t.TempDir(), "gotlspeer")
	if err := os.WriteFile(bad, data, 0o755); err != nil {
		t.Fatal(err)
	}
	a := startGoTLSAgent(t)
	srv, _ := goTLSServer(t, bad, "server")
	deadline := time.Now().Add(10 * time.Second)
	for a.src.TLS().GoStats().Rejected == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("undecodable binary not rejected within 10s: %+v", a.src.TLS().GoStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a few more scans
	id, err := bpf.StatFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(a.src.tr.GoTLSFiles(), id) {
		t.Error("undecodable binary was probed")
	}
	if st := a.src.TLS().GoStats(); st.Rejected != 1 {
		t.Errorf("rejections counted %d times, want once: %+v", st.Rejected, st)
	}
	if got := a.src.Counters()["tls.go_binaries_rejected"]; got != 1 {
		t.Errorf("tls.go_binaries_rejected = %d, want 1", got)
	}
	if srv.cmd.ProcessState != nil {
		t.Error("the rejected program exited")
	}
}

// tls.Conn over a wrapper type, not a *net.TCPConn: the kernel side's
// check (the remote port Go recorded against the socket's) fails, so the
// client's calls are skipped and counted, never attributed to whatever
// socket the wrapper's bytes would name, and its ciphertext is not
// reported either. The server, over a plain *net.TCPConn, is seen.
func TestLiveGoTLSWrappedConnSkipped(t *testing.T) {
	requireBPF(t)
	bin := buildGoTLSPeer(t, false)
	a := startGoTLSAgent(t)
	srv, port := goTLSServer(t, bin, "server")
	waitGoProbed(t, a, bin)
	before := kernelStats(t, a)
	pid, out := runOut(t, nil, bin, "wrapped", "h1", tlsPeerFile(t, "cert.pem"), port, "/items/w1", "/items/w2")
	if out != "200 HTTP/1.1 item w1\n200 HTTP/1.1 item w2\n" {
		t.Errorf("wrapped client output: %q", out)
	}
	after := kernelStats(t, a)
	calls := a.stop(t)
	s := srv.pid()
	checkGoCalls(t, calls, []int{pid, s}, nil, []tlsCall{
		{s, parser.SideServer, "GET", "/items/w1", 200},
		{s, parser.SideServer, "GET", "/items/w2", 200},
	})
	if n := after.GoTLSNoConn - before.GoTLSNoConn; n == 0 {
		t.Error("the wrapped client's calls were not counted as without a socket")
	}
}
