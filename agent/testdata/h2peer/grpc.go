package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The service is registered by hand, with well-known wrapper messages, so
// that no generated code is needed:
//
//	service Echo {
//	  rpc Unary(StringValue) returns (StringValue);               // "missing" -> NotFound,
//	                                                              // "secret" -> Unauthenticated,
//	                                                              // "slow" -> waits for the deadline
//	  rpc ServerStream(StringValue) returns (stream StringValue); // three replies
//	  rpc ClientStream(stream StringValue) returns (StringValue); // the count
//	  rpc Bidi(stream StringValue) returns (stream StringValue);  // one reply per message
//	}
const echoService = "apisonar.test.Echo"

// echoHandler is the HandlerType grpc checks the implementation against.
type echoHandler interface{}

func echoDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: echoService,
		HandlerType: (*echoHandler)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Unary",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return unary(ctx, in)
			},
		}},
		Streams: []grpc.StreamDesc{
			{StreamName: "ServerStream", ServerStreams: true, Handler: serverStream},
			{StreamName: "ClientStream", ClientStreams: true, Handler: clientStream},
			{StreamName: "Bidi", ServerStreams: true, ClientStreams: true, Handler: bidi},
		},
	}
}

func unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	switch in.Value {
	case "missing":
		return nil, status.Error(codes.NotFound, "no such item")
	case "secret":
		return nil, status.Error(codes.Unauthenticated, "credentials required")
	case "slow":
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(5 * time.Second):
		}
	}
	return wrapperspb.String("echo:" + in.Value), nil
}

func serverStream(_ any, s grpc.ServerStream) error {
	in := new(wrapperspb.StringValue)
	if err := s.RecvMsg(in); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		if err := s.SendMsg(wrapperspb.String(fmt.Sprintf("%s-%d", in.Value, i))); err != nil {
			return err
		}
	}
	return nil
}

func clientStream(_ any, s grpc.ServerStream) error {
	n := 0
	for {
		if err := s.RecvMsg(new(wrapperspb.StringValue)); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		n++
	}
	return s.SendMsg(wrapperspb.String(fmt.Sprint(n)))
}

func bidi(_ any, s grpc.ServerStream) error {
	for {
		in := new(wrapperspb.StringValue)
		if err := s.RecvMsg(in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := s.SendMsg(wrapperspb.String("echo:" + in.Value)); err != nil {
			return err
		}
	}
}

func grpcServer(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	srv.RegisterService(echoDesc(), struct{}{})
	fmt.Println("listening", l.Addr())
	return srv.Serve(l)
}

// grpcCall is one call of the client's script.
type grpcCall struct {
	method  string // Unary, ServerStream, ClientStream or Bidi
	send    []string
	timeout time.Duration
}

func grpcClient(addr string, join bool) error {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil {
				fmt.Println("conn", c.LocalAddr())
			}
			return c, err
		}))
	if err != nil {
		return err
	}
	defer cc.Close()
	rec := newRecorder()

	batches := [][]grpcCall{{
		{method: "Unary", send: []string{"hello"}},
		{method: "ServerStream", send: []string{"abc"}},
		{method: "ClientStream", send: []string{"a", "bb", "ccc", "dddd"}},
		{method: "Bidi", send: []string{"x", "y", "z"}},
		{method: "Unary", send: []string{"missing"}},
		{method: "Unary", send: []string{"secret"}},
		{method: "Unary", send: []string{"slow"}, timeout: 300 * time.Millisecond},
	}}
	if join {
		// The second batch repeats the first's method (its :path is now a
		// dynamic-table reference the agent never saw) and adds new ones.
		batches = [][]grpcCall{{
			{method: "Unary", send: []string{"hello"}},
			{method: "Unary", send: []string{"world"}},
		}, {
			{method: "Unary", send: []string{"hello"}},
			{method: "ServerStream", send: []string{"abc"}},
			{method: "Unary", send: []string{"missing"}},
			{method: "Bidi", send: []string{"x", "y"}},
		}}
		rec.phase = "before"
	}
	for i, batch := range batches {
		if i > 0 {
			rec.pause()
		}
		for _, c := range batch {
			t, err := doGRPC(cc, c)
			if err != nil {
				return err
			}
			rec.record(t)
		}
	}
	return nil
}

// doGRPC runs one call as a generic stream and counts what went each way.
func doGRPC(cc *grpc.ClientConn, c grpcCall) (truth, error) {
	if c.timeout == 0 {
		c.timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	t := truth{Method: "POST", Path: "/" + echoService + "/" + c.method}
	desc := &grpc.StreamDesc{
		ServerStreams: c.method == "ServerStream" || c.method == "Bidi",
		ClientStreams: c.method == "ClientStream" || c.method == "Bidi",
	}
	s, err := cc.NewStream(ctx, desc, t.Path)
	if err != nil {
		return t, err
	}
	for _, v := range c.send {
		m := wrapperspb.String(v)
		if err := s.SendMsg(m); err != nil {
			return t, fmt.Errorf("%s: send: %w", t.Path, err)
		}
		t.ReqMsgs++
		t.ReqBytes += int64(5 + proto.Size(m))
	}
	if err := s.CloseSend(); err != nil {
		return t, err
	}
	for {
		m := new(wrapperspb.StringValue)
		err = s.RecvMsg(m)
		if err != nil {
			break
		}
		t.RespMsgs++
		t.RespBytes += int64(5 + proto.Size(m))
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	st := status.Convert(err)
	t.GRPCStatus = int(st.Code())
	// Every status but the client's own deadline came from the server in
	// a 200 response; a call the client gave up on has no known status.
	if st.Code() != codes.DeadlineExceeded {
		t.Status = 200
	}
	return t, nil
}
