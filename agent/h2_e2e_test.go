package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apisonar/apisonar/parser"
)

// The HTTP/2 and gRPC live tests drive real peers through the kernel side,
// the tracker and the HTTP/2 parser, and compare every call with what the
// peer that made it saw. The peers are testdata/h2peer (x/net/http2 and
// grpc-go), its python grpcio client, curl, nghttp, h2load and nghttpd.

// h2Truth is one call as its client saw it (testdata/h2peer's JSON line).
type h2Truth struct {
	Phase      string `json:"phase"`
	Stream     uint32 `json:"stream"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	Query      string `json:"query"`
	Status     int    `json:"status"`
	GRPCStatus int    `json:"grpc_status"`
	ReqBytes   int64  `json:"req_bytes"`
	RespBytes  int64  `json:"resp_bytes"`
	ReqMsgs    int32  `json:"req_msgs"`
	RespMsgs   int32  `json:"resp_msgs"`

	// capped: the response went out in syscalls larger than the kernel's
	// copy cap, so its size can only be reported as truncated.
	capped bool
}

func (w h2Truth) String() string {
	s := fmt.Sprintf("stream %d %s %s", w.Stream, w.Method, w.Path)
	if w.Query != "" {
		s += "?" + w.Query
	}
	s += fmt.Sprintf(" -> %d (req %d, resp %d bytes)", w.Status, w.ReqBytes, w.RespBytes)
	if w.GRPCStatus >= 0 {
		s += fmt.Sprintf(" grpc %d, msgs %d/%d", w.GRPCStatus, w.ReqMsgs, w.RespMsgs)
	}
	return s
}

// callString shows every field of a call that the checks compare.
func callString(c *parser.Call) string {
	s := fmt.Sprintf("%s stream %d %q %q", c.Protocol, c.StreamID, c.Method, c.Path)
	if len(c.Query) > 0 {
		s += fmt.Sprintf("?%q", c.Query)
	}
	s += fmt.Sprintf(" -> %d (req %d, resp %d bytes)", c.Status, c.ReqBytes, c.RespBytes)
	if c.Protocol == parser.ProtoGRPC {
		s += fmt.Sprintf(" grpc %d %q, msgs %d/%d", c.GRPCStatus, c.GRPCMessage, c.ReqMessages, c.RespMessages)
	}
	if c.Flags != 0 {
		s += fmt.Sprintf(" flags %s", flagNames(c.Flags))
	}
	if c.Conn != nil {
		s += fmt.Sprintf(" [%s -> %s pid %d %s, side %s]", c.Conn.Client, c.Conn.Server, c.Conn.PID, c.Conn.Comm, c.Conn.Side)
	}
	return s
}

func flagNames(f uint16) string {
	var n []string
	for _, x := range []struct {
		f    uint16
		name string
	}{
		{parser.FlagPartial, "partial"}, {parser.FlagReqTruncated, "req_truncated"},
		{parser.FlagRespTruncated, "resp_truncated"}, {parser.FlagNoResponse, "no_response"},
		{parser.FlagUpgrade, "upgrade"}, {parser.FlagReset, "reset"},
	} {
		if f&x.f != 0 {
			n = append(n, x.name)
		}
	}
	return strings.Join(n, "|")
}

// peerOutput is what an h2peer client printed: its connections and calls.
type peerOutput struct {
	conns  []netip.AddrPort
	truths []h2Truth
}

func parsePeerOutput(t *testing.T, out string) peerOutput {
	t.Helper()
	var p peerOutput
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "conn "):
			p.conns = append(p.conns, netip.MustParseAddrPort(strings.TrimPrefix(l, "conn ")))
		case strings.HasPrefix(l, "{"):
			var w h2Truth
			if err := json.Unmarshal([]byte(l), &w); err != nil {
				t.Fatalf("peer line %q: %v", l, err)
			}
			p.truths = append(p.truths, w)
		}
	}
	return p
}

// oneConn is the single connection a client must have used.
func (p peerOutput) oneConn(t *testing.T) netip.AddrPort {
	t.Helper()
	if len(p.conns) != 1 {
		t.Fatalf("the client should use one connection, opened %v", p.conns)
	}
	return p.conns[0]
}

// buildH2Peer compiles testdata/h2peer once for the whole test.
func buildH2Peer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "h2peer")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./testdata/h2peer")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build h2peer: %v: %s", err, out)
	}
	return bin
}

// runBounded runs a short-lived peer to completion within limit and returns
// its pid and standard output.
func runBounded(t *testing.T, limit time.Duration, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\nstdout: %s\nstderr: %s", name, args, err, out, stderr.String())
	}
	return cmd.ProcessState.Pid(), string(out)
}

// startH2Server spawns an h2peer server and returns it with its address.
func startH2Server(t *testing.T, peer, kind string) (*child, netip.AddrPort) {
	t.Helper()
	srv := spawn(t, peer, kind, "127.0.0.1:0")
	return srv, netip.MustParseAddrPort(strings.TrimPrefix(srv.line(t), "listening "))
}

// byStream indexes one side's calls of one connection by stream id,
// failing on a stream reported twice.
func byStream(t *testing.T, side string, calls []*parser.Call) map[uint32]*parser.Call {
	t.Helper()
	m := make(map[uint32]*parser.Call, len(calls))
	for _, c := range calls {
		if prev := m[c.StreamID]; prev != nil {
			t.Errorf("%s side: stream %d reported twice:\n  %s\n  %s", side, c.StreamID, callString(prev), callString(c))
		}
		m[c.StreamID] = c
	}
	return m
}

// checkExact compares a call on a connection the agent saw from its first
// byte with the client's truth: every field must be there and equal.
func checkExact(t *testing.T, side string, c *parser.Call, w h2Truth) {
	t.Helper()
	var bad []string
	if string(c.Method) != w.Method || string(c.Path) != w.Path || string(c.Query) != w.Query {
		bad = append(bad, "request line")
	}
	if c.Status != w.Status {
		bad = append(bad, "status")
	}
	if c.ReqBytes != w.ReqBytes || c.RespBytes != w.RespBytes {
		bad = append(bad, "sizes")
	}
	wantProto := parser.ProtoHTTP2
	if w.GRPCStatus >= 0 {
		wantProto = parser.ProtoGRPC
		if c.GRPCStatus != w.GRPCStatus {
			bad = append(bad, "grpc_status")
		}
		if c.ReqMessages != w.ReqMsgs || c.RespMessages != w.RespMsgs {
			bad = append(bad, "message counts")
		}
	}
	if c.Protocol != wantProto {
		bad = append(bad, "protocol")
	}
	if c.Flags != 0 {
		bad = append(bad, "flags")
	}
	if len(bad) > 0 {
		t.Errorf("%s side, wrong %s:\n  got  %s\n  want %s", side, strings.Join(bad, ", "), callString(c), w)
	}
}

// checkNeverWrong compares a call on a connection the agent joined
// mid-stream with the client's truth: a field may be missing (the call is
// then flagged partial or truncated), but a field that is there must be
// right.
func checkNeverWrong(t *testing.T, side string, c *parser.Call, w h2Truth) {
	t.Helper()
	var bad []string
	if len(c.Method) > 0 && string(c.Method) != w.Method {
		bad = append(bad, "method")
	}
	if len(c.Path) > 0 && string(c.Path) != w.Path {
		bad = append(bad, "path")
	}
	if len(c.Query) > 0 && string(c.Query) != w.Query {
		bad = append(bad, "query")
	}
	if len(c.Path) > 0 && len(c.Query) == 0 && w.Query != "" && c.Flags&parser.FlagPartial == 0 {
		bad = append(bad, "query lost without the partial flag")
	}
	if c.Status != 0 && c.Status != w.Status {
		bad = append(bad, "status")
	}
	if c.GRPCStatus != -1 && c.GRPCStatus != w.GRPCStatus {
		bad = append(bad, "grpc_status")
	}
	if (len(c.Method) == 0 || len(c.Path) == 0 || c.Status == 0) && c.Flags&(parser.FlagPartial|parser.FlagNoResponse|parser.FlagReset) == 0 {
		bad = append(bad, "missing fields without a flag")
	}
	if c.Flags&parser.FlagReqTruncated == 0 && c.ReqBytes != w.ReqBytes {
		bad = append(bad, "request size")
	}
	if c.Flags&parser.FlagRespTruncated == 0 && c.RespBytes != w.RespBytes {
		bad = append(bad, "response size")
	}
	if c.Protocol == parser.ProtoGRPC {
		if c.Flags&parser.FlagReqTruncated == 0 && c.ReqMessages != w.ReqMsgs {
			bad = append(bad, "request messages")
		}
		if c.Flags&parser.FlagRespTruncated == 0 && c.RespMessages != w.RespMsgs {
			bad = append(bad, "response messages")
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s side, wrong %s:\n  got  %s\n  want %s", side, strings.Join(bad, ", "), callString(c), w)
	}
}

// checkConn checks that a call names the connection and process it was
// seen on.
func checkConn(t *testing.T, side string, c *parser.Call, client, server netip.AddrPort, pid int, comm string) {
	t.Helper()
	if c.Conn.Client != client || c.Conn.Server != server || int(c.Conn.PID) != pid || c.Conn.Comm != comm {
		t.Errorf("%s side stream %d: connection %s -> %s pid %d %q, want %s -> %s pid %d %q",
			side, c.StreamID, c.Conn.Client, c.Conn.Server, c.Conn.PID, c.Conn.Comm, client, server, pid, comm)
	}
}

func logH2Calls(t *testing.T, name string, calls []*parser.Call) {
	t.Helper()
	for _, c := range calls {
		t.Logf("%s: %s", name, callString(c))
	}
}

// connCalls returns both sides' calls of the connection from client to
// the server run by serverPID, the client side being clientPID.
func connCalls(calls []*parser.Call, serverPID, clientPID int, client netip.AddrPort) (srv, cli []*parser.Call) {
	srv = callsOf(calls, serverPID, func(c *parser.Call) bool { return c.Conn.Client == client })
	cli = callsOf(calls, clientPID, func(c *parser.Call) bool { return c.Conn.Client == client })
	return srv, cli
}

// TestLiveHTTP2 runs HTTP/2 and gRPC peers under the tracer: Go's
// x/net/http2 with prior knowledge and through the HTTP/1.1 Upgrade,
// nghttp and h2load against nghttpd, grpc-go for every call kind and error
// status, and python grpcio (the gRPC C core's HPACK encoder); then, with a
// second agent, connections joined mid-stream.
func TestLiveHTTP2(t *testing.T) {
	requireBPF(t)
	peer := buildH2Peer(t)

	h2Srv, h2Addr := startH2Server(t, peer, "h2server")
	grpcSrv, grpcAddr := startH2Server(t, peer, "grpcserver")

	docs := t.TempDir()
	files := map[string]int{"hello.txt": 14, "load.txt": 9, "big.bin": 40000}
	for name, size := range files {
		b := []byte(strings.Repeat("x", size))
		if name == "hello.txt" {
			b = []byte("hello, tracer\n")
		}
		if err := os.WriteFile(filepath.Join(docs, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ngPort := pickPort(t)
	ngSrv := spawn(t, "nghttpd", "--no-tls", "-d", docs, fmt.Sprint(ngPort))
	ngAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ngPort))
	waitListen(t, ngAddr.String())

	a := startAgent(t)

	goPID, goOut := runBounded(t, 20*time.Second, peer, "h2client", "http://"+h2Addr.String())
	curlPID, _ := runBounded(t, 20*time.Second, "curl", "-sS", "--http2", "-o", "/dev/null", "-o", "/dev/null",
		"http://"+h2Addr.String()+"/items/up1", "http://"+h2Addr.String()+"/items/up2")
	ngPID, ngOut := runBounded(t, 20*time.Second, "nghttp", "-nv",
		"http://"+ngAddr.String()+"/hello.txt", "http://"+ngAddr.String()+"/missing.txt", "http://"+ngAddr.String()+"/big.bin")
	loadPID, loadOut := runBounded(t, 60*time.Second, "h2load", "-n", "200", "-c", "2", "http://"+ngAddr.String()+"/load.txt")
	grpcPID, grpcOut := runBounded(t, 20*time.Second, peer, "grpcclient", grpcAddr.String())
	pyPID, pyOut := runBounded(t, 30*time.Second, "/usr/bin/python3", "testdata/h2peer/grpcio_client.py", grpcAddr.String())

	calls := a.stop(t)
	if len(calls) == 0 {
		t.Fatal("no calls at all")
	}

	t.Run("go_h2c_prior_knowledge", func(t *testing.T) {
		out := parsePeerOutput(t, goOut)
		cliAddr := out.oneConn(t)
		srv, cli := connCalls(calls, h2Srv.pid(), goPID, cliAddr)
		checkAll(t, out.truths, srv, cli, func(side string, c *parser.Call, pid int) {
			checkConn(t, side, c, cliAddr, h2Addr, pid, "h2peer")
		}, h2Srv.pid(), goPID)
	})

	t.Run("h2c_upgrade_by_curl", func(t *testing.T) {
		cli := callsOf(calls, curlPID, nil)
		if len(cli) == 0 {
			t.Fatal("no call on curl's side")
		}
		srv, _ := connCalls(calls, h2Srv.pid(), curlPID, cli[0].Conn.Client)
		logH2Calls(t, "server", srv)
		logH2Calls(t, "curl", cli)
		// RFC 7540 3.2: the upgraded request is stream 1, answered in
		// HTTP/2.
		if srv1, cli1 := checkUpgrade(t, "server", srv), checkUpgrade(t, "curl", cli); !srv1 || !cli1 {
			t.Errorf("the HTTP/2 answer on stream 1 to the upgraded GET /items/up1 is missing (server side %v, curl side %v)", srv1, cli1)
		}
	})

	t.Run("nghttp_to_nghttpd", func(t *testing.T) {
		truths := parseNghttp(t, ngOut, files)
		if len(truths) != 3 {
			t.Fatalf("nghttp made %d requests, want 3:\n%s", len(truths), ngOut)
		}
		for i := range truths {
			// nghttpd writes the 40000-byte file in one syscall, beyond the
			// default 16 KiB copy cap: the server side can only report it
			// truncated.
			truths[i].capped = truths[i].Path == "/big.bin"
		}
		t.Logf("kernel and source counters: %v", a.src.Counters())
		cli := callsOf(calls, ngPID, nil)
		if len(cli) == 0 {
			t.Fatal("no call on nghttp's side")
		}
		cliAddr := cli[0].Conn.Client
		srv, _ := connCalls(calls, ngSrv.pid(), ngPID, cliAddr)
		checkAll(t, truths, srv, cli, func(side string, c *parser.Call, pid int) {
			comm := map[string]string{"server": "nghttpd", "client": "nghttp"}[side]
			checkConn(t, side, c, cliAddr, ngAddr, pid, comm)
		}, ngSrv.pid(), ngPID)
	})

	t.Run("h2load_200_requests_on_2_connections", func(t *testing.T) {
		if !strings.Contains(loadOut, "200 succeeded") || !strings.Contains(loadOut, "status codes: 200 2xx") {
			t.Fatalf("h2load did not complete 200 requests with 200:\n%s", loadOut)
		}
		cli := callsOf(calls, loadPID, nil)
		srv := callsOf(calls, ngSrv.pid(), pathPrefix("/load.txt"))
		for side, got := range map[string][]*parser.Call{"server": srv, "client": cli} {
			conns := map[netip.AddrPort]int{}
			bad := 0
			for _, c := range got {
				conns[c.Conn.Client]++
				if string(c.Method) != "GET" || string(c.Path) != "/load.txt" || c.Status != 200 ||
					c.RespBytes != 9 || c.Protocol != parser.ProtoHTTP2 || c.Flags != 0 {
					if bad++; bad <= 3 {
						t.Errorf("%s side: %s", side, callString(c))
					}
				}
			}
			if len(got) != 200 || len(conns) != 2 || bad != 0 {
				t.Errorf("%s side: %d calls on %d connections (%d wrong), want 200 on 2", side, len(got), len(conns), bad)
			}
		}
	})

	t.Run("grpc_go_every_call_kind_and_error_status", func(t *testing.T) {
		out := parsePeerOutput(t, grpcOut)
		cliAddr := out.oneConn(t)
		wantPlan := []struct {
			method string
			code   int
		}{
			{"Unary", 0}, {"ServerStream", 0}, {"ClientStream", 0}, {"Bidi", 0},
			{"Unary", 5}, {"Unary", 16}, {"Unary", 4},
		}
		if len(out.truths) != len(wantPlan) {
			t.Fatalf("client made %d calls, want %d", len(out.truths), len(wantPlan))
		}
		for i, p := range wantPlan {
			if w := out.truths[i]; w.Path != "/apisonar.test.Echo/"+p.method || w.GRPCStatus != p.code {
				t.Fatalf("the client's call %d was %s, want %s with code %d", i, w, p.method, p.code)
			}
		}
		srv, cli := connCalls(calls, grpcSrv.pid(), grpcPID, cliAddr)
		checkAll(t, out.truths, srv, cli, func(side string, c *parser.Call, pid int) {
			checkConn(t, side, c, cliAddr, grpcAddr, pid, "h2peer")
		}, grpcSrv.pid(), grpcPID)
	})

	t.Run("python_grpcio_client", func(t *testing.T) {
		out := parsePeerOutput(t, pyOut)
		if len(out.truths) != 5 {
			t.Fatalf("client made %d calls, want 5:\n%s", len(out.truths), pyOut)
		}
		cli := callsOf(calls, pyPID, nil)
		if len(cli) == 0 {
			t.Fatal("no call on the python side")
		}
		cliAddr := cli[0].Conn.Client
		srv, _ := connCalls(calls, grpcSrv.pid(), pyPID, cliAddr)
		checkAll(t, out.truths, srv, cli, func(side string, c *parser.Call, pid int) {
			// The client's process name is checked below.
			comm := map[string]string{"server": "h2peer", "client": c.Conn.Comm}[side]
			checkConn(t, side, c, cliAddr, grpcAddr, pid, comm)
		}, grpcSrv.pid(), pyPID)
		if t.Failed() {
			return
		}
		// grpcio reads and writes on its own threads ("default-executo"),
		// and the kernel side names a record after the calling thread.
		if comm := cli[0].Conn.Comm; comm != "python3" {
			knownDefect(t, "client calls name the thread %q, not the process python3", comm)
		}
	})

	t.Run("joined_mid_stream", func(t *testing.T) { joinedMidStream(t, peer) })
}

// joiningClient is a client run with -join (h2peer's or the grpcio
// script): it has made its first calls and waits, its connection open, for
// the agent to start.
type joiningClient struct {
	c      *child
	before []string
}

func startJoining(t *testing.T, name string, args ...string) *joiningClient {
	t.Helper()
	j := &joiningClient{c: spawn(t, name, args...)}
	for {
		l := j.c.line(t)
		if l == "ready" {
			return j
		}
		j.before = append(j.before, l)
	}
}

// finish releases the second batch and returns everything the client
// printed.
func (j *joiningClient) finish(t *testing.T) peerOutput {
	t.Helper()
	fmt.Fprintln(j.c.stdin, "go")
	done := make(chan string, 1)
	go func() {
		var rest strings.Builder
		for {
			l, err := j.c.out.ReadString('\n')
			rest.WriteString(l)
			if err != nil {
				break
			}
		}
		done <- rest.String()
	}()
	select {
	case rest := <-done:
		if err := j.c.cmd.Wait(); err != nil {
			t.Fatalf("joining client: %v", err)
		}
		return parsePeerOutput(t, strings.Join(j.before, "\n")+"\n"+rest)
	case <-time.After(20 * time.Second):
		t.Fatal("joining client did not finish in 20s")
		return peerOutput{}
	}
}

// checkJoined checks one side of a connection the agent joined after its
// first calls: nothing of those calls is reported, every later call is,
// and no reported field is wrong. It counts the partial calls, and the gRPC
// calls that were not recognised as such.
func checkJoined(t *testing.T, side string, truths []h2Truth, calls []*parser.Call) (partial, notGRPC int) {
	t.Helper()
	got := byStream(t, side, calls)
	for _, w := range truths {
		c := got[w.Stream]
		delete(got, w.Stream)
		switch {
		case w.Phase == "before" && c != nil:
			t.Errorf("%s side: a call made before the agent started was reported: %s", side, callString(c))
		case w.Phase == "after" && c == nil:
			t.Errorf("%s side: no call for %s", side, w)
		case c != nil:
			t.Logf("%s side: %s", side, callString(c))
			checkNeverWrong(t, side, c, w)
			if c.Flags&parser.FlagPartial != 0 {
				partial++
			}
			if w.GRPCStatus >= 0 && c.Protocol != parser.ProtoGRPC {
				notGRPC++
			}
		}
	}
	for _, c := range got {
		t.Errorf("%s side: a call the client did not make: %s", side, callString(c))
	}
	return partial, notGRPC
}

// joinedMidStream starts an agent on h2c and gRPC connections (grpc-go's
// and grpcio's encoders) that are open and have carried calls, so their
// HPACK tables hold entries the agent never saw: later calls are reported,
// perhaps partial, never wrong.
func joinedMidStream(t *testing.T, peer string) {
	h2Srv, h2Addr := startH2Server(t, peer, "h2server")
	grpcSrv, grpcAddr := startH2Server(t, peer, "grpcserver")

	h2Cli := startJoining(t, peer, "h2client", "-join", "http://"+h2Addr.String())
	grpcCli := startJoining(t, peer, "grpcclient", "-join", grpcAddr.String())
	pyCli := startJoining(t, "/usr/bin/python3", "testdata/h2peer/grpcio_client.py", "-join", grpcAddr.String())

	a := startAgent(t)
	h2Out := h2Cli.finish(t)
	grpcOut := grpcCli.finish(t)
	pyOut := pyCli.finish(t)
	calls := a.stop(t)

	for _, tc := range []struct {
		name       string
		out        peerOutput
		srvPID     int
		cli        *joiningClient
		server     netip.AddrPort
		wantTruths int
		// cliComm is the client's process name; "" leaves it unchecked
		// (grpcio's threads, a known defect checked elsewhere).
		cliComm string
	}{
		{"h2c", h2Out, h2Srv.pid(), h2Cli, h2Addr, 6, "h2peer"},
		{"grpc_go", grpcOut, grpcSrv.pid(), grpcCli, grpcAddr, 6, "h2peer"},
		{"python_grpcio", pyOut, grpcSrv.pid(), pyCli, grpcAddr, 5, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.out.truths) != tc.wantTruths {
				t.Fatalf("client made %d calls, want %d", len(tc.out.truths), tc.wantTruths)
			}
			var cliAddr netip.AddrPort
			if len(tc.out.conns) > 0 {
				cliAddr = tc.out.oneConn(t)
			} else if cli := callsOf(calls, tc.cli.c.pid(), nil); len(cli) > 0 {
				// grpcio does not tell its local address; its calls do.
				cliAddr = cli[0].Conn.Client
			} else {
				t.Fatal("no call on the client's side")
			}
			srv, cli := connCalls(calls, tc.srvPID, tc.cli.c.pid(), cliAddr)
			partial, notGRPC := checkJoined(t, "server", tc.out.truths, srv)
			p, n := checkJoined(t, "client", tc.out.truths, cli)
			partial, notGRPC = partial+p, notGRPC+n
			for _, c := range append(srv, cli...) {
				comm := "h2peer"
				if c.Conn.Side == parser.SideClient && tc.cliComm == "" {
					comm = c.Conn.Comm
				}
				checkConn(t, c.Conn.Side.String(), c, cliAddr, tc.server, int(c.Conn.PID), comm)
				if side := c.Conn.Side; (side == parser.SideServer) != (int(c.Conn.PID) == tc.srvPID) {
					t.Errorf("pid %d is called the %s side", c.Conn.PID, side)
				}
			}
			t.Logf("%d of %d calls partial", partial, len(srv)+len(cli))
			if notGRPC > 0 && !t.Failed() {
				// Both grpc-go's and the C core's encoders index
				// content-type: application/grpc on the first call, so a
				// joined decoder only sees a reference to an entry it
				// never saw.
				knownDefect(t, "%d of %d gRPC calls reported as plain h2 (no grpc_status, no message counts): "+
					"their content-type is a dynamic-table entry from before the join", notGRPC, len(srv)+len(cli))
			}
		})
	}
}

// knownDefect fails a subtest on a defect that was once known; it stays a
// failure (never a skip) so that it cannot come back unseen.
func knownDefect(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Errorf("defect: "+format, args...)
}

// checkAll matches both sides' calls of one connection to the client's
// truths by stream id: one call per truth on each side, nothing else.
func checkAll(t *testing.T, truths []h2Truth, srv, cli []*parser.Call, conn func(side string, c *parser.Call, pid int), srvPID, cliPID int) {
	t.Helper()
	for _, s := range []struct {
		name  string
		calls []*parser.Call
		pid   int
	}{{"server", srv, srvPID}, {"client", cli, cliPID}} {
		got := byStream(t, s.name, s.calls)
		for _, w := range truths {
			c := got[w.Stream]
			if c == nil {
				t.Errorf("%s side: no call for %s", s.name, w)
				continue
			}
			delete(got, w.Stream)
			switch {
			case w.GRPCStatus == 4 && w.Status == 0:
				checkDeadline(t, s.name, c, w)
			case w.capped:
				checkNeverWrong(t, s.name, c, w)
				if len(c.Method) == 0 || len(c.Path) == 0 || c.Status == 0 {
					t.Errorf("%s side: a capped response lost its request or status: %s", s.name, callString(c))
				}
			default:
				checkExact(t, s.name, c, w)
			}
			conn(s.name, c, s.pid)
		}
		for _, c := range got {
			t.Errorf("%s side: a call the client did not make: %s", s.name, callString(c))
		}
	}
}

// checkDeadline checks a call whose client gave up at its deadline. Who
// ends the stream is a race: the server's DEADLINE_EXCEEDED trailers or
// the client's RST_STREAM. Either is honest; any other status is not.
func checkDeadline(t *testing.T, side string, c *parser.Call, w h2Truth) {
	t.Helper()
	t.Logf("%s side, deadline call: %s", side, callString(c))
	if string(c.Method) != w.Method || string(c.Path) != w.Path || c.ReqBytes != w.ReqBytes ||
		c.ReqMessages != w.ReqMsgs || c.RespMessages != 0 || c.Protocol != parser.ProtoGRPC {
		t.Errorf("%s side, deadline call:\n  got  %s\n  want %s", side, callString(c), w)
	}
	trailers := c.GRPCStatus == 4 && c.Status == 200
	reset := c.GRPCStatus == -1 && c.Flags&parser.FlagReset != 0
	// The server answered nothing; when the connection ends before its
	// reads show the client's RST_STREAM (a loaded machine), the honest
	// server-side call is one with no response and no status.
	unanswered := side == "server" && c.GRPCStatus == -1 && c.Status == 0 && c.Flags&parser.FlagNoResponse != 0
	if unanswered && !reset {
		t.Logf("server side saw no end of the deadline call: reported without response, no status invented")
	}
	if !trailers && !reset && !unanswered {
		t.Errorf("%s side, deadline call ends neither with grpc-status 4 nor with a reset: %s", side, callString(c))
	}
}

// checkUpgrade checks one side of curl's h2c upgrade: GET /items/up1 goes
// as HTTP/1.1 and is answered 101 then, on stream 1, in HTTP/2; GET
// /items/up2 follows on stream 3. It returns whether stream 1 was
// reported.
func checkUpgrade(t *testing.T, side string, calls []*parser.Call) (stream1 bool) {
	t.Helper()
	var s1, s3 *parser.Call
	for _, c := range calls {
		switch {
		case c.Protocol == parser.ProtoHTTP1:
			t.Errorf("%s side: the upgrade was reported as an HTTP/1.1 call %s; its answer is on stream 1", side, callString(c))
		case c.StreamID == 3:
			s3 = c
		case c.StreamID == 1:
			s1 = c
			// The upgraded request, answered in HTTP/2: exact, and
			// flagged as the call that switched protocols.
			if c.Flags&parser.FlagUpgrade == 0 {
				t.Errorf("%s side: stream 1 not flagged upgrade: %s", side, callString(c))
			}
			u := *c
			u.Flags &^= parser.FlagUpgrade
			checkExact(t, side, &u, h2Truth{Stream: 1, Method: "GET", Path: "/items/up1", Status: 200, RespBytes: 12, GRPCStatus: -1})
		default:
			t.Errorf("%s side: unexpected call %s", side, callString(c))
		}
	}
	if s3 == nil {
		t.Errorf("%s side: no call on stream 3 of the upgraded connection", side)
	} else {
		checkExact(t, side, s3, h2Truth{Stream: 3, Method: "GET", Path: "/items/up2", Status: 200, RespBytes: 12, GRPCStatus: -1})
	}
	return s1 != nil
}

var (
	nghttpSend   = regexp.MustCompile(`send HEADERS frame <.*stream_id=(\d+)>`)
	nghttpHeader = regexp.MustCompile(`^\s+(:method|:path): (\S+)`)
	nghttpRecv   = regexp.MustCompile(`recv \(stream_id=(\d+)\) (:status|content-length): (\d+)`)
)

// parseNghttp reads nghttp -v's frame log: the stream id and request of
// each HEADERS it sent, and the status it received. The response size is
// the served file's (a 404 sends its content-length).
func parseNghttp(t *testing.T, out string, files map[string]int) []h2Truth {
	t.Helper()
	var truths []h2Truth
	idx := map[uint32]int{}
	var cur *h2Truth
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if m := nghttpSend.FindStringSubmatch(l); m != nil {
			id, _ := strconv.Atoi(m[1])
			truths = append(truths, h2Truth{Stream: uint32(id), GRPCStatus: -1})
			cur = &truths[len(truths)-1]
			idx[uint32(id)] = len(truths) - 1
			continue
		}
		if m := nghttpHeader.FindStringSubmatch(l); m != nil && cur != nil {
			if m[1] == ":method" {
				cur.Method = m[2]
			} else {
				cur.Path = m[2]
			}
			continue
		}
		if !strings.HasPrefix(l, " ") {
			cur = nil
		}
		if m := nghttpRecv.FindStringSubmatch(l); m != nil {
			id, _ := strconv.Atoi(m[1])
			i, ok := idx[uint32(id)]
			if !ok {
				continue
			}
			n, _ := strconv.Atoi(m[3])
			if m[2] == ":status" {
				truths[i].Status = n
			} else {
				truths[i].RespBytes = int64(n)
			}
		}
	}
	for i := range truths {
		if size, ok := files[strings.TrimPrefix(truths[i].Path, "/")]; ok && truths[i].Status == 200 && int64(size) != truths[i].RespBytes {
			t.Fatalf("nghttp got %d bytes of %s, want %d", truths[i].RespBytes, truths[i].Path, size)
		}
	}
	return truths
}

// TestLiveHTTP2UnderLoad has h2load make 20000 requests, ten in flight on
// each of two connections, under the tracer: every call is reported on
// both sides, or the loss shows in the source's counters; none is wrong.
// h2load's throughput with and without the agent is logged, not judged.
func TestLiveHTTP2UnderLoad(t *testing.T) {
	requireBPF(t)
	docs := t.TempDir()
	if err := os.WriteFile(filepath.Join(docs, "load.txt"), []byte("hello, load\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := pickPort(t)
	srv := spawn(t, "nghttpd", "--no-tls", "-d", docs, fmt.Sprint(port))
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	waitListen(t, addr.String())
	const n = 20000
	load := func() (int, string) {
		pid, out := runBounded(t, 60*time.Second, "h2load", "-n", fmt.Sprint(n), "-c", "2", "-m", "10", "http://"+addr.String()+"/load.txt")
		if !strings.Contains(out, fmt.Sprintf("%d succeeded", n)) {
			t.Fatalf("h2load failed:\n%s", out)
		}
		return pid, out
	}
	finished := regexp.MustCompile(`finished in .*`)
	_, out := load()
	t.Logf("without the agent: %s", finished.FindString(out))

	a := startAgent(t)
	pid, out := load()
	t.Logf("with the agent:    %s", finished.FindString(out))
	calls := a.stop(t)
	counters := a.src.Counters()
	t.Logf("counters: %v", counters)

	lost := counters["ebpf.kernel.lost_records"] + counters["ebpf.lost_record_gaps"] + counters["ebpf.cap_gaps"]
	for side, got := range map[string][]*parser.Call{
		"server": callsOf(calls, srv.pid(), func(c *parser.Call) bool { return c.Conn.Server == addr }),
		"client": callsOf(calls, pid, nil),
	} {
		exact, bad := 0, 0
		for _, c := range got {
			w := h2Truth{Stream: c.StreamID, Method: "GET", Path: "/load.txt", Status: 200, RespBytes: 12, GRPCStatus: -1}
			if c.Flags == 0 && string(c.Method) == w.Method && string(c.Path) == w.Path && c.Status == w.Status && c.RespBytes == w.RespBytes {
				exact++
				continue
			}
			if bad++; bad <= 3 {
				checkNeverWrong(t, side, c, w)
				t.Logf("%s side, not exact: %s", side, callString(c))
			}
		}
		t.Logf("%s side: %d calls, %d exact", side, len(got), exact)
		if len(got) != n && lost == 0 {
			t.Errorf("%s side: %d calls of %d and no loss counted", side, len(got), n)
		}
		if len(got) > n {
			t.Errorf("%s side: %d calls of %d", side, len(got), n)
		}
	}
}
