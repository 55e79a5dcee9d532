//go:build linux

package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/apisonar/apisonar/parser"
)

// TestTCPFilter runs the kernel filter in x/net's BPF interpreter over IP
// headers: TCP over IPv4 and IPv6 is kept whole, the rest dropped.
func TestTCPFilter(t *testing.T) {
	vm, err := bpf.NewVM(tcpFilter())
	if err != nil {
		t.Fatal(err)
	}
	ip4 := func(proto byte) []byte {
		h := make([]byte, 40)
		h[0], h[9] = 0x45, proto
		return h
	}
	ip6 := func(next byte) []byte {
		h := make([]byte, 60)
		h[0], h[6] = 0x60, next
		return h
	}
	cases := []struct {
		name string
		pkt  []byte
		keep bool
	}{
		{"ipv4_tcp", ip4(6), true},
		{"ipv4_udp", ip4(17), false},
		{"ipv6_tcp", ip6(6), true},
		{"ipv6_icmp", ip6(58), false},
		{"arp_like", []byte{0, 1, 8, 0, 6, 4, 0, 1, 0, 0}, false},
		{"empty", []byte{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := vm.Run(tc.pkt)
			if err != nil && len(tc.pkt) > 0 {
				t.Fatal(err)
			}
			if got := n > 0; got != tc.keep {
				t.Errorf("kept %v (%d bytes), want %v", got, n, tc.keep)
			}
		})
	}
}

// needRoot skips a privileged test with the reason, except under CI=true
// where the environment is expected to allow it.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("AF_PACKET capture needs root, and CI=true requires this test to run")
	}
	t.Skip("AF_PACKET capture needs root")
}

// TestAFPacketLoopback captures curl talking to python's http.server on lo
// and checks that the calls come out of the same Tracker and parsers the
// other sources use.
func TestAFPacketLoopback(t *testing.T) {
	needRoot(t)
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		py, err = exec.LookPath("python3")
	}
	curl, cerr := exec.LookPath("curl")
	if err != nil || cerr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 and curl are needed: %v %v", err, cerr)
		}
		t.Skipf("python3 and curl are needed: %v %v", err, cerr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/hello.txt", []byte("hello over af_packet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(py, "-m", "http.server", "--bind", "127.0.0.1", fmt.Sprint(port))
	srv.Dir = dir
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()

	var mu sync.Mutex
	var calls []*parser.Call
	tr := NewTracker(TrackerOptions{}, NewParserFactory(parser.Options{}, &parser.Stats{}),
		parser.EmitFunc(func(c *parser.Call) {
			if c.Conn.Server.Port() != uint16(port) {
				return // other loopback traffic
			}
			mu.Lock()
			calls = append(calls, c.Clone())
			mu.Unlock()
		}))
	src := &AFPacketSource{Interface: "lo"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, tr) }()

	// Wait for the server, then make the calls once the capture runs.
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("http.server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// tcpdump records the same traffic; replaying its file must give
	// the same calls as the live source (one parser stage for both).
	dump := startTcpdump(t, "lo", port)
	time.Sleep(200 * time.Millisecond)
	for _, p := range []string{"/hello.txt", "/missing", "/hello.txt?x=1"} {
		out, err := exec.Command(curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", base+p).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v %s", p, err, out)
		}
	}
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(calls)
		mu.Unlock()
		if n >= 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	got := describeCalls(calls)
	want := "GET /hello.txt 200 21 bytes\nGET /missing 404\nGET /hello.txt 200 21 bytes"
	if got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}

	pcapFile := dump()
	var replayed []*parser.Call
	rt := NewTracker(TrackerOptions{}, NewParserFactory(parser.Options{}, &parser.Stats{}),
		parser.EmitFunc(func(c *parser.Call) { replayed = append(replayed, c.Clone()) }))
	_, err = ReplayFile(context.Background(), pcapFile, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := describeCalls(replayed); r != got {
		t.Errorf("tcpdump's capture of the same traffic replays to\n%s\nlive afpacket saw\n%s", r, got)
	}
	for i := range min(len(replayed), len(calls)) {
		a, b := calls[i], replayed[i]
		// Loopback packets are stamped once as sent and once as
		// received; tcpdump keeps the other copy (and microseconds).
		near := func(x, y int64) bool { return x-y < 1e6 && y-x < 1e6 }
		if !near(a.Start, b.Start) || !near(a.End, b.End) || a.Conn.Client != b.Conn.Client {
			t.Errorf("call %d: live %d..%d %v, tcpdump %d..%d %v", i, a.Start, a.End, a.Conn.Client, b.Start, b.End, b.Conn.Client)
		}
	}
	st := src.Stats()
	if st.Packets == 0 || st.Reassembly.Flows < 3 {
		t.Errorf("stats %+v", st)
	}
	// Loopback shows each packet as sent and as received; only one copy
	// may reach the reassembler, or every byte would come twice. The
	// source sees all of lo, where other programs' connections may really
	// retransmit on a loaded machine: a second copy of everything would
	// trim as many bytes as it delivers, a real retransmission far fewer.
	if r := st.Reassembly.Retransmitted; r != 0 {
		t.Logf("%d retransmitted bytes of %d delivered on lo", r, st.Reassembly.PayloadBytes)
		if r*4 >= st.Reassembly.PayloadBytes {
			t.Errorf("%d of %d bytes seen twice: outgoing copies were not ignored", r, st.Reassembly.PayloadBytes)
		}
	}
}

func describeCalls(calls []*parser.Call) string {
	var lines []string
	for _, c := range calls {
		line := fmt.Sprintf("%s %s %d", c.Method, c.Path, c.Status)
		if c.Status == 200 {
			// Error pages differ between Python versions.
			line += fmt.Sprintf(" %d bytes", c.RespBytes)
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// startTcpdump records TCP port port on iface into a temporary file until
// the returned function is called; it returns the file.
func startTcpdump(t *testing.T, iface string, port int) func() string {
	t.Helper()
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tcpdump is needed for the equivalence check")
		}
		t.Skip("tcpdump is needed for the equivalence check")
	}
	file := filepath.Join(t.TempDir(), "live.pcap")
	// -Z root: tcpdump would otherwise drop to its own user, who cannot
	// write into the test's private temporary directory.
	cmd := exec.Command(bin, "-Z", "root", "--immediate-mode", "-i", iface, "-U", "-w", file, "-n", fmt.Sprintf("tcp port %d", port))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// tcpdump says "listening on" once its filter is in place.
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
				break
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("tcpdump did not start")
	}
	return func() string {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		return file
	}
}
