// h2peer is a set of HTTP/2 and gRPC peers for the eBPF end-to-end tests:
// real servers and clients built from golang.org/x/net/http2 and grpc-go,
// run as child processes so that their traffic is traced like any other
// program's (the agent never traces its own process).
//
//	h2peer h2server ADDR             h2c server (prior knowledge and Upgrade)
//	h2peer h2client [-join] BASEURL  a fixed sequence of requests on one
//	                                 prior-knowledge connection
//	h2peer grpcserver ADDR           the apisonar.test.Echo service
//	h2peer grpcclient [-join] ADDR   every call kind and three error codes
//	                                 on one connection
//
// Servers print "listening ADDR" when ready. Clients print "conn ADDR" for
// each connection they open (the tests expect exactly one) and one JSON
// line per call with what the client itself saw: the truth the agent's
// calls are compared against. With -join a client runs a first batch of
// calls, prints "ready", waits for a line on stdin (the test starts the
// agent meanwhile) and runs a second batch on the same connection.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

// truth is one call as its client saw it. Stream is derived, not observed:
// the clients issue their calls one after the other on a single connection,
// so the i-th call (from 0) is on client stream 2i+1 (RFC 9113 5.1.1).
type truth struct {
	Phase      string `json:"phase"` // "before" or "after" the agent started; "" when not joining
	Stream     uint32 `json:"stream"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	Query      string `json:"query"`
	Status     int    `json:"status"`
	GRPCStatus int    `json:"grpc_status"` // -1 for plain HTTP/2
	ReqBytes   int64  `json:"req_bytes"`
	RespBytes  int64  `json:"resp_bytes"`
	ReqMsgs    int    `json:"req_msgs"`
	RespMsgs   int    `json:"resp_msgs"`
}

// recorder numbers calls and prints their truth.
type recorder struct {
	n     int
	phase string
	enc   *json.Encoder
}

func newRecorder() *recorder { return &recorder{enc: json.NewEncoder(os.Stdout)} }

func (r *recorder) record(t truth) {
	t.Stream = uint32(2*r.n + 1)
	t.Phase = r.phase
	r.n++
	r.enc.Encode(t)
}

// pause ends the first batch of a joining client: the test starts the agent
// while the connection sits idle, then releases the second batch.
func (r *recorder) pause() {
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	r.phase = "after"
}

func main() {
	args := os.Args[1:]
	if len(args) < 2 {
		usage()
	}
	cmd, args := args[0], args[1:]
	join := false
	if len(args) == 2 && args[0] == "-join" {
		join, args = true, args[1:]
	}
	if len(args) != 1 {
		usage()
	}
	var err error
	switch cmd {
	case "h2server":
		err = h2Server(args[0])
	case "h2client":
		err = h2Client(args[0], join)
	case "grpcserver":
		err = grpcServer(args[0])
	case "grpcclient":
		err = grpcClient(args[0], join)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: h2peer h2server|grpcserver ADDR | h2client [-join] BASEURL | grpcclient [-join] ADDR")
	os.Exit(2)
}
