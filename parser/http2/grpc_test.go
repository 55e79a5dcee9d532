package http2

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/apisonar/apisonar/parser"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// rawCodec carries []byte messages, so the test needs no generated code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// tape records what a server-side connection read (the client's bytes) and
// wrote (the server's), in the order the server saw them.
type tape struct {
	mu     sync.Mutex
	pieces []piece
}

func (tp *tape) add(dir parser.Direction, b []byte) {
	tp.mu.Lock()
	tp.pieces = append(tp.pieces, piece{dir, append([]byte(nil), b...)})
	tp.mu.Unlock()
}

func (tp *tape) snapshot() []piece {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]piece(nil), tp.pieces...)
}

type tapedConn struct {
	net.Conn
	tp *tape
}

func (c *tapedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.tp.add(parser.FromClient, b[:n])
	}
	return n, err
}

func (c *tapedConn) Write(b []byte) (int, error) {
	c.tp.add(parser.FromServer, b)
	return c.Conn.Write(b)
}

type tapedListener struct {
	net.Listener
	tp *tape
}

func (l *tapedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapedConn{c, l.tp}, nil
}

// handle serves every method of the test service by name.
func handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	recv := func() ([]byte, error) {
		var b []byte
		err := ss.RecvMsg(&b)
		return b, err
	}
	send := func(s string) error { b := []byte(s); return ss.SendMsg(&b) }
	switch method {
	case "/test.Echo/Unary":
		m, err := recv()
		if err != nil {
			return err
		}
		return send("echo:" + string(m))
	case "/test.Echo/ClientStream":
		n := 0
		for {
			if _, err := recv(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			n++
		}
		return send("got all")
	case "/test.Echo/ServerStream":
		if _, err := recv(); err != nil {
			return err
		}
		for _, s := range []string{"one", "two", "three", "four"} {
			if err := send(s); err != nil {
				return err
			}
		}
		return nil
	case "/test.Echo/Bidi":
		for {
			m, err := recv()
			if errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
			if err := send(string(m)); err != nil {
				return err
			}
		}
	case "/test.Echo/Missing":
		return status.Error(codes.NotFound, "no such item: 50% off")
	case "/test.Echo/Secret":
		return status.Error(codes.Unauthenticated, "token required")
	case "/test.Echo/Slow":
		<-ss.Context().Done()
		return status.Error(codes.DeadlineExceeded, "too slow")
	}
	return status.Error(codes.Unimplemented, method)
}

// serveTaped starts the test service on loopback; the tape records its
// connections.
func serveTaped(t *testing.T) (string, *tape) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("no loopback: %v", err)
	}
	tp := &tape{}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(handle))
	go srv.Serve(&tapedListener{ln, tp})
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), tp
}

// recordGRPC runs a real grpc-go client and server over loopback and
// returns the bytes of their one connection.
func recordGRPC(t *testing.T) []piece {
	t.Helper()
	addr, tp := serveTaped(t)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	msg := func(s string) *[]byte { b := []byte(s); return &b }
	var out []byte
	if err := cc.Invoke(ctx, "/test.Echo/Unary", msg("hi"), &out); err != nil || string(out) != "echo:hi" {
		t.Fatalf("unary: %q %v", out, err)
	}
	stream := func(method string, client, server bool) grpc.ClientStream {
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: client, ServerStreams: server}, method)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cs := stream("/test.Echo/ClientStream", true, false)
	for _, m := range []string{"a", "bb", "ccc"} {
		if err := cs.SendMsg(msg(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(&out); err != nil {
		t.Fatal(err)
	}
	ss := stream("/test.Echo/ServerStream", false, true)
	if err := ss.SendMsg(msg("go")); err != nil {
		t.Fatal(err)
	}
	ss.CloseSend()
	n := 0
	for ss.RecvMsg(&out) == nil {
		n++
	}
	if n != 4 {
		t.Fatalf("server stream: %d messages", n)
	}
	bs := stream("/test.Echo/Bidi", true, true)
	for _, m := range []string{"x", "y"} {
		if err := bs.SendMsg(msg(m)); err != nil {
			t.Fatal(err)
		}
		if err := bs.RecvMsg(&out); err != nil {
			t.Fatal(err)
		}
	}
	bs.CloseSend()
	if err := bs.RecvMsg(&out); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: %v", err)
	}
	for method, code := range map[string]codes.Code{"/test.Echo/Missing": codes.NotFound, "/test.Echo/Secret": codes.Unauthenticated} {
		err := cc.Invoke(ctx, method, msg("q"), &out)
		if status.Code(err) != code {
			t.Fatalf("%s: %v", method, err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	err = cc.Invoke(short, "/test.Echo/Slow", msg("q"), &out)
	cancelShort()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("slow: %v", err)
	}
	// One more call after the deadline so that the stream above is done on
	// the wire before the tape is read.
	if err := cc.Invoke(ctx, "/test.Echo/Unary", msg("last"), &out); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	return tp.snapshot()
}

func TestGRPCGoConnection(t *testing.T) {
	pieces := recordGRPC(t)
	calls, st := run(pieces, 0, parser.Options{})
	byPath := map[string][]*parser.Call{}
	for _, c := range calls {
		if c.Protocol != parser.ProtoGRPC {
			t.Errorf("stream %d: protocol %v", c.StreamID, c.Protocol)
		}
		if c.Flags&parser.FlagPartial != 0 {
			t.Errorf("stream %d: partial on a connection seen whole", c.StreamID)
		}
		byPath[string(c.Path)] = append(byPath[string(c.Path)], c)
	}
	want := []struct {
		path        string
		grpcStatus  int
		msg         string
		reqM, respM int32
		reqB, respB int64
	}{
		{"/test.Echo/Unary", 0, "", 1, 1, 5 + 2, 5 + 7},
		{"/test.Echo/ClientStream", 0, "", 3, 1, 15 + 6, 5 + 7},
		{"/test.Echo/ServerStream", 0, "", 1, 4, 5 + 2, 20 + 3 + 3 + 5 + 4},
		{"/test.Echo/Bidi", 0, "", 2, 2, 12, 12},
		{"/test.Echo/Missing", int(codes.NotFound), "no such item: 50% off", 1, 0, 6, 0},
		{"/test.Echo/Secret", int(codes.Unauthenticated), "token required", 1, 0, 6, 0},
	}
	for _, w := range want {
		cs := byPath[w.path]
		if len(cs) == 0 {
			t.Errorf("%s: no call", w.path)
			continue
		}
		c := cs[0]
		if string(c.Method) != "POST" || c.Status != 200 || c.GRPCStatus != w.grpcStatus || string(c.GRPCMessage) != w.msg ||
			c.ReqMessages != w.reqM || c.RespMessages != w.respM || c.ReqBytes != w.reqB || c.RespBytes != w.respB {
			t.Errorf("%s: got %+v", w.path, summarize(c))
		}
		if c.End < c.Start {
			t.Errorf("%s: ends before it starts", w.path)
		}
	}
	if n := len(byPath["/test.Echo/Unary"]); n != 2 {
		t.Errorf("unary calls: %d", n)
	}
	// The deadline: the server answers DEADLINE_EXCEEDED, or the client
	// resets the stream first; either way one call, never a success.
	if slow := byPath["/test.Echo/Slow"]; len(slow) != 1 {
		t.Errorf("slow calls: %d", len(slow))
	} else if c := slow[0]; c.GRPCStatus != int(codes.DeadlineExceeded) && c.Flags&parser.FlagReset == 0 {
		t.Errorf("slow: %+v", summarize(c))
	}
	if len(calls) != 8 {
		t.Errorf("%d calls, want 8", len(calls))
	}
	if st.Errors.Load() != 0 || st.H2FrameErrors.Load() != 0 || st.Resyncs.Load() != 0 || st.HPACKUnknown.Load() != 0 {
		t.Errorf("errors %d frame errors %d resyncs %d unknown %d", st.Errors.Load(), st.H2FrameErrors.Load(), st.Resyncs.Load(), st.HPACKUnknown.Load())
	}

	t.Run("joined_mid_stream", func(t *testing.T) {
		total := [2]int{}
		for _, pc := range pieces {
			total[pc.dir] += len(pc.data)
		}
		reported, partialCalls, seenWhole, asGRPC := 0, 0, 0, 0
		for n := 1; n < total[C] && n < total[S]; n += 7 {
			var col collector
			p := New(&parser.ConnInfo{}, &col, new(parser.Stats), parser.Options{})
			skip := [2]int{n, n}
			for i, pc := range pieces {
				k := min(skip[pc.dir], len(pc.data))
				skip[pc.dir] -= k
				if len(pc.data) > k {
					p.Feed(pc.dir, int64(i), pc.data[k:])
				}
			}
			p.Close(1 << 40)
			neverWrong(t, calls, col.calls)
			for _, c := range col.calls {
				// A call that began after the join: its request and
				// response were seen whole.
				whole := len(c.Path) > 0 && c.Status != 0 &&
					c.Flags&(parser.FlagReqTruncated|parser.FlagRespTruncated|parser.FlagNoResponse|parser.FlagReset) == 0
				if whole {
					seenWhole++
					if c.Protocol == parser.ProtoGRPC {
						asGRPC++
					} else {
						t.Logf("not recognised as gRPC: %+v", summarize(c))
					}
				}
				reported++
				if c.Flags&parser.FlagPartial != 0 {
					partialCalls++
				}
			}
		}
		t.Logf("joined at every 7th byte: %d calls reported, %d partial; %d of the %d seen whole recognised as gRPC",
			reported, partialCalls, asGRPC, seenWhole)
		// Every call on this connection is gRPC. One that began after the
		// join is recognised even when its content type is an HPACK entry
		// indexed before the join: by grpc-status in its trailers or by
		// its message framing.
		if seenWhole == 0 || asGRPC != seenWhole {
			t.Errorf("%d of %d whole joined calls recognised as gRPC", asGRPC, seenWhole)
		}
	})
}

// pythonClient drives the test service with python grpcio, whose HPACK
// encoder (grpc core's) is not Go's.
const pythonClient = `
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
unary = ch.unary_unary('/test.Echo/Unary')
assert unary(b'hi') == b'echo:hi'
try:
    ch.unary_unary('/test.Echo/Missing')(b'q')
    raise SystemExit('no error')
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND
assert len(list(ch.unary_stream('/test.Echo/ServerStream')(b'go'))) == 4
assert ch.stream_unary('/test.Echo/ClientStream')(iter([b'a', b'b', b'c'])) == b'got all'
assert list(ch.stream_stream('/test.Echo/Bidi')(iter([b'x', b'y']))) == [b'x', b'y']
for i in range(5):
    unary(b'again')
ch.close()
`

func TestGRPCPythonClient(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import grpc").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 grpcio missing: %v", err)
		}
		t.Skipf("python3 grpcio missing: %v", err)
	}
	addr, tp := serveTaped(t)
	out, err := exec.Command(py, "-c", pythonClient, addr).CombinedOutput()
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	time.Sleep(50 * time.Millisecond)
	calls, st := run(tp.snapshot(), 0, parser.Options{})
	count := map[string]int{}
	for _, c := range calls {
		count[string(c.Path)]++
		if c.Protocol != parser.ProtoGRPC || c.Status != 200 || c.Flags != 0 {
			t.Errorf("%s: %+v", c.Path, summarize(c))
		}
		want := map[string][3]int32{
			"/test.Echo/Unary": {0, 1, 1}, "/test.Echo/Missing": {int32(codes.NotFound), 1, 0},
			"/test.Echo/ServerStream": {0, 1, 4}, "/test.Echo/ClientStream": {0, 3, 1}, "/test.Echo/Bidi": {0, 2, 2},
		}[string(c.Path)]
		if int32(c.GRPCStatus) != want[0] || c.ReqMessages != want[1] || c.RespMessages != want[2] {
			t.Errorf("%s: status %d messages %d/%d, want %v", c.Path, c.GRPCStatus, c.ReqMessages, c.RespMessages, want)
		}
	}
	if count["/test.Echo/Unary"] != 6 || len(calls) != 10 {
		t.Errorf("calls by path %v", count)
	}
	if st.HPACKUnknown.Load() != 0 || st.Errors.Load() != 0 {
		t.Errorf("unknown %d errors %d", st.HPACKUnknown.Load(), st.Errors.Load())
	}
}
