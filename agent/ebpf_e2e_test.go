package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apisonar/apisonar/bpf"
	"github.com/apisonar/apisonar/parser"
)

// requireBPF skips when the kernel side cannot be loaded here, except under
// CI=true where a skip would hide a failure.
func requireBPF(t *testing.T) {
	t.Helper()
	if err := bpf.CheckSupport(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("eBPF tests must run under CI=true: %v", err)
		}
		t.Skipf("eBPF not available: %v", err)
	}
}

// liveAgent is the eBPF source, tracker and real parsers, collecting calls.
type liveAgent struct {
	src    *EBPFSource
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	calls  []*parser.Call
}

func startAgent(t *testing.T) *liveAgent {
	t.Helper()
	return startAgentWith(t, EBPFSourceOptions{})
}

// startAgentWith is startAgent with source options (TLS tuning, say).
func startAgentWith(t *testing.T, opts EBPFSourceOptions) *liveAgent {
	t.Helper()
	requireBPF(t)
	a := &liveAgent{done: make(chan error, 1)}
	var stats parser.Stats
	trk := NewTracker(TrackerOptions{}, NewParserFactory(parser.Options{}, &stats), parser.EmitFunc(func(c *parser.Call) {
		a.mu.Lock()
		a.calls = append(a.calls, c.Clone())
		a.mu.Unlock()
	}))
	src, err := OpenEBPFSource(bpf.Config{}, trk, opts, nil)
	if err != nil {
		t.Fatalf("open eBPF source: %v", err)
	}
	a.src = src
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- src.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// stop lets the ring drain, cancels the source and returns every call.
func (a *liveAgent) stop(t *testing.T) []*parser.Call {
	t.Helper()
	if a.cancel != nil {
		time.Sleep(300 * time.Millisecond)
		a.cancel()
		if err := <-a.done; err != nil {
			t.Errorf("source: %v", err)
		}
		a.cancel = nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

// child is a long-running peer process killed at the end of the test.
type child struct {
	cmd   *exec.Cmd
	out   *bufio.Reader
	stdin io.WriteCloser
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func spawn(t *testing.T, name string, args ...string) *child {
	t.Helper()
	return spawnEnv(t, nil, name, args...)
}

// line reads one line the child printed, failing the test on timeout.
func (c *child) line(t *testing.T) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := c.out.ReadString('\n')
		ch <- strings.TrimSpace(s)
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("child printed nothing for 10s")
		return ""
	}
}

// run runs a short-lived peer to completion and returns its pid and output.
func run(t *testing.T, stdin string, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v (%s)", name, args, err, out)
	}
	return cmd.ProcessState.Pid(), string(out)
}

// waitListen waits up to 20 s for something to accept on addr.
func waitListen(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

func pickPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// buildPeer compiles testdata/httppeer, a Go net/http server and client.
func buildPeer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "httppeer")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/httppeer")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build httppeer: %v: %s", err, out)
	}
	return bin
}

// want is what one call must show; zero fields are not checked.
type want struct {
	method, path, query string
	status              int
	reqBytes, respBytes int64
}

func (w want) check(t *testing.T, c *parser.Call) {
	t.Helper()
	if string(c.Method) != w.method || string(c.Path) != w.path || string(c.Query) != w.query ||
		c.Status != w.status || c.ReqBytes != w.reqBytes || c.RespBytes != w.respBytes {
		t.Errorf("call %s %s?%s -> %d (req %d, resp %d bytes); want %s %s?%s -> %d (req %d, resp %d)",
			c.Method, c.Path, c.Query, c.Status, c.ReqBytes, c.RespBytes,
			w.method, w.path, w.query, w.status, w.reqBytes, w.respBytes)
	}
}

func callsOf(calls []*parser.Call, pid int, match func(*parser.Call) bool) []*parser.Call {
	var out []*parser.Call
	for _, c := range calls {
		if c.Conn != nil && int(c.Conn.PID) == pid && (match == nil || match(c)) {
			out = append(out, c)
		}
	}
	return out
}

func pathPrefix(p string) func(*parser.Call) bool {
	return func(c *parser.Call) bool { return strings.HasPrefix(string(c.Path), p) }
}

const pipelineClient = `
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(c.getsockname()[1], flush=True)
c.sendall(b"GET /items/p1 HTTP/1.1\r\nHost: peer\r\n\r\n"
          b"GET /items/p2 HTTP/1.1\r\nHost: peer\r\n\r\n"
          b"GET /items/p3 HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")
while c.recv(65536):
    pass
`

// keepAliveClient opens its connection and sends one request before the
// agent starts, waits for a line on stdin, then sends a second one.
const keepAliveClient = `
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def get(path):
    c.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: peer\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(4096)
    head, body = buf.split(b"\r\n\r\n", 1)
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(body) < n:
        body += c.recv(4096)
get(b"/items/before")
print(c.getsockname()[1], flush=True)
sys.stdin.readline()
get(b"/items/after")
c.close()
`

const echoServer = `
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    while True:
        b = c.recv(4096)
        if not b: break
        c.sendall(b)
    c.close()
`

const echoClient = `
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(3):
    c.sendall(b"GET-LIKE? no: a line protocol %d\n" % i)
    c.recv(4096)
c.close()
`

// TestLiveCalls runs real peers we did not write (curl, python's
// http.server, Go net/http) under the tracer and checks the calls that come
// out of the whole source -> tracker -> parser path.
func TestLiveCalls(t *testing.T) {
	requireBPF(t)
	peer := buildPeer(t)

	goSrv := spawn(t, peer, "server", "127.0.0.1:0")
	goAddr := netip.MustParseAddrPort(strings.TrimPrefix(goSrv.line(t), "listening "))
	goSrv6 := spawn(t, peer, "server", "[::1]:0")
	goAddr6 := netip.MustParseAddrPort(strings.TrimPrefix(goSrv6.line(t), "listening "))

	docs := t.TempDir()
	if err := os.WriteFile(filepath.Join(docs, "hello.txt"), []byte("hello, tracer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pyPort := pickPort(t)
	pySrv := spawn(t, "/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", docs, fmt.Sprint(pyPort))
	pyAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(pyPort))
	waitListen(t, pyAddr.String())

	echoPort := pickPort(t)
	echo := spawn(t, "/usr/bin/python3", "-c", echoServer, fmt.Sprint(echoPort))
	echo.line(t)

	h2Port := pickPort(t)
	h2Srv := spawn(t, "nghttpd", "--no-tls", "-d", docs, fmt.Sprint(h2Port))
	h2Addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(h2Port))
	waitListen(t, h2Addr.String())

	// Opened, and used once, before the agent starts.
	early := spawn(t, "/usr/bin/python3", "-c", keepAliveClient, fmt.Sprint(goAddr.Port()))
	earlyPort := early.line(t)

	a := startAgent(t)

	curlPID, _ := run(t, "", "curl", "-sS", "-o", "/dev/null", "http://"+pyAddr.String()+"/hello.txt")
	goCliPID, goCliOut := run(t, "", peer, "client", "http://"+goAddr.String())
	pipePID, pipePort := run(t, "", "/usr/bin/python3", "-c", pipelineClient, fmt.Sprint(goAddr.Port()))
	curl6PID, _ := run(t, "", "curl", "-sS", "-g", "-o", "/dev/null", "http://"+goAddr6.String()+"/items/v6")
	h2PID, _ := run(t, "", "nghttp", "-n", "http://"+h2Addr.String()+"/hello.txt")
	fmt.Fprintln(early.stdin, "go")
	if err := early.cmd.Wait(); err != nil {
		t.Fatalf("keep-alive client: %v", err)
	}
	resp, err := http.Get("http://" + goAddr.String() + "/items/self")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	echoPID, _ := run(t, "", "/usr/bin/python3", "-c", echoClient, fmt.Sprint(echoPort))

	calls := a.stop(t)
	if len(calls) == 0 {
		t.Fatal("no calls at all")
	}

	t.Run("python_http_server_and_curl", func(t *testing.T) {
		srv := callsOf(calls, pySrv.pid(), nil)
		cli := callsOf(calls, curlPID, nil)
		if len(srv) != 1 || len(cli) != 1 {
			t.Fatalf("calls: server side %d, curl side %d; want 1 each", len(srv), len(cli))
		}
		for _, c := range []*parser.Call{srv[0], cli[0]} {
			want{method: "GET", path: "/hello.txt", status: 200, respBytes: 14}.check(t, c)
			if c.Conn.Server != pyAddr || c.Conn.Client.Addr() != pyAddr.Addr() {
				t.Errorf("tuple %s -> %s, want 127.0.0.1:* -> %s", c.Conn.Client, c.Conn.Server, pyAddr)
			}
		}
		if srv[0].Conn.Client != cli[0].Conn.Client {
			t.Errorf("both ends must name the same client: %s vs %s", srv[0].Conn.Client, cli[0].Conn.Client)
		}
		if srv[0].Conn.Comm != "python3" || cli[0].Conn.Comm != "curl" {
			t.Errorf("process names: server %q, client %q", srv[0].Conn.Comm, cli[0].Conn.Comm)
		}
		if srv[0].Conn.Side != parser.SideServer || cli[0].Conn.Side != parser.SideClient {
			t.Errorf("observing sides: python %q, curl %q", srv[0].Conn.Side, cli[0].Conn.Side)
		}
	})

	t.Run("go_net_http_keep_alive_chunked_post", func(t *testing.T) {
		wantSeq := []want{
			{method: "GET", path: "/items/1", status: 200, respBytes: 10},
			{method: "GET", path: "/items/2", query: "full=1", status: 200, respBytes: 10},
			{method: "POST", path: "/echo", status: 201, reqBytes: 1000, respBytes: 8},
			{method: "GET", path: "/chunked", status: 200, respBytes: 21},
			{method: "GET", path: "/missing", status: 404, respBytes: 19},
		}
		lines := strings.Fields(goCliOut)
		if len(lines) != 2 || lines[0] != "conn" {
			t.Fatalf("the Go client should use one kept-alive connection, printed %q", goCliOut)
		}
		cliAddr := netip.MustParseAddrPort(lines[1])
		srv := callsOf(calls, goSrv.pid(), func(c *parser.Call) bool { return c.Conn.Client == cliAddr })
		cli := callsOf(calls, goCliPID, nil)
		for name, got := range map[string][]*parser.Call{"server": srv, "client": cli} {
			if len(got) != len(wantSeq) {
				t.Errorf("%s side: %d calls, want %d", name, len(got), len(wantSeq))
				continue
			}
			for i, w := range wantSeq {
				w.check(t, got[i])
				if got[i].Conn.Client != cliAddr || got[i].Conn.Server != goAddr {
					t.Errorf("%s side call %d: tuple %s -> %s, want %s -> %s", name, i, got[i].Conn.Client, got[i].Conn.Server, cliAddr, goAddr)
				}
			}
		}
		if len(srv) > 0 && srv[0].Conn.Comm != "httppeer" {
			t.Errorf("server process name %q, want httppeer", srv[0].Conn.Comm)
		}
	})

	t.Run("pipelined_requests_on_one_socket", func(t *testing.T) {
		port := strings.TrimSpace(pipePort)
		srv := callsOf(calls, goSrv.pid(), func(c *parser.Call) bool { return fmt.Sprint(c.Conn.Client.Port()) == port })
		cli := callsOf(calls, pipePID, nil)
		for name, got := range map[string][]*parser.Call{"server": srv, "client": cli} {
			if len(got) != 3 {
				t.Errorf("%s side: %d calls, want 3", name, len(got))
				continue
			}
			for i, c := range got {
				want{method: "GET", path: fmt.Sprintf("/items/p%d", i+1), status: 200, respBytes: 11}.check(t, c)
			}
		}
	})

	t.Run("ipv6_loopback", func(t *testing.T) {
		srv := callsOf(calls, goSrv6.pid(), nil)
		cli := callsOf(calls, curl6PID, nil)
		if len(srv) != 1 || len(cli) != 1 {
			t.Fatalf("calls: server side %d, curl side %d; want 1 each", len(srv), len(cli))
		}
		for _, c := range []*parser.Call{srv[0], cli[0]} {
			want{method: "GET", path: "/items/v6", status: 200, respBytes: 11}.check(t, c)
			if c.Conn.Server != goAddr6 || !c.Conn.Client.Addr().Is6() || !c.Conn.Client.Addr().IsLoopback() {
				t.Errorf("tuple %s -> %s, want [::1]:* -> %s", c.Conn.Client, c.Conn.Server, goAddr6)
			}
		}
	})

	t.Run("h2c_prior_knowledge_nghttp_to_nghttpd", func(t *testing.T) {
		srv := callsOf(calls, h2Srv.pid(), nil)
		cli := callsOf(calls, h2PID, nil)
		if len(srv) != 1 || len(cli) != 1 {
			t.Fatalf("calls: server side %d, client side %d; want 1 each", len(srv), len(cli))
		}
		for _, c := range []*parser.Call{srv[0], cli[0]} {
			want{method: "GET", path: "/hello.txt", status: 200, respBytes: 14}.check(t, c)
			if c.Protocol != parser.ProtoHTTP2 || c.Conn.Server != h2Addr {
				t.Errorf("protocol %s to %s, want h2 to %s", c.Protocol, c.Conn.Server, h2Addr)
			}
		}
	})

	t.Run("keep_alive_connection_opened_before_the_agent", func(t *testing.T) {
		before := pathPrefix("/items/before")
		if got := callsOf(calls, goSrv.pid(), before); len(got) != 0 {
			t.Errorf("a call that happened before the agent started was reported: %s", got[0].Path)
		}
		after := pathPrefix("/items/after")
		srv := callsOf(calls, goSrv.pid(), after)
		cli := callsOf(calls, early.pid(), after)
		if len(srv) != 1 || len(cli) != 1 {
			t.Fatalf("calls: server side %d, client side %d; want 1 each", len(srv), len(cli))
		}
		for _, c := range []*parser.Call{srv[0], cli[0]} {
			want{method: "GET", path: "/items/after", status: 200, respBytes: 14}.check(t, c)
			if fmt.Sprint(c.Conn.Client.Port()) != earlyPort || c.Conn.Server != goAddr {
				t.Errorf("tuple %s -> %s, want 127.0.0.1:%s -> %s", c.Conn.Client, c.Conn.Server, earlyPort, goAddr)
			}
		}
		if srv[0].Conn.Comm != "httppeer" || cli[0].Conn.Comm != "python3" {
			t.Errorf("process names: server %q, client %q", srv[0].Conn.Comm, cli[0].Conn.Comm)
		}
	})

	t.Run("agent_own_traffic_is_absent", func(t *testing.T) {
		if own := callsOf(calls, os.Getpid(), nil); len(own) != 0 {
			t.Errorf("%d calls of the agent's own process, first %s %s", len(own), own[0].Method, own[0].Path)
		}
		// The same request is seen from the server it went to.
		if got := callsOf(calls, goSrv.pid(), pathPrefix("/items/self")); len(got) != 1 {
			t.Errorf("server side of the agent's request: %d calls, want 1", len(got))
		}
	})

	t.Run("kernel_counters_survive_shutdown", func(t *testing.T) {
		c := a.src.Counters()
		if c["ebpf.kernel.records"] == 0 || c["ebpf.kernel.not_http"] == 0 || c["ebpf.records"] == 0 {
			t.Errorf("counters after the source stopped: %v", c)
		}
	})

	t.Run("non_http_connection_is_absent", func(t *testing.T) {
		for _, pid := range []int{echo.pid(), echoPID} {
			if got := callsOf(calls, pid, nil); len(got) != 0 {
				t.Errorf("pid %d: %d calls from a line protocol", pid, len(got))
			}
		}
		for _, c := range calls {
			if int(c.Conn.Server.Port()) == echoPort {
				t.Errorf("call on the echo port: %s %s", c.Method, c.Path)
			}
		}
	})
}
