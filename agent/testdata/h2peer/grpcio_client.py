"""A python grpcio client of h2peer's apisonar.test.Echo service.

grpcio runs on the gRPC C core, whose HTTP/2 framing and HPACK encoder
differ from grpc-go's. Messages are google.protobuf.StringValue, encoded by
hand (field 1, length-delimited) so that no generated code is needed.

    /usr/bin/python3 grpcio_client.py [-join] HOST:PORT

Prints one JSON line per call with what the client saw, in the format of
h2peer's Go clients; calls run one after the other on one channel, so the
i-th call (from 0) is on stream 2i+1. With -join, as with h2peer's
clients, a first batch runs, "ready" is printed, and a second batch runs on
the same connection once a line arrives on stdin.
"""

import json
import sys

import grpc

SERVICE = "/apisonar.test.Echo/"


def encode(s):
    b = s.encode()
    assert len(b) < 128
    return b"\x0a" + bytes([len(b)]) + b


def decode(b):
    return b[2:].decode() if b else ""


def main():
    join = sys.argv[1] == "-join"
    channel = grpc.insecure_channel(sys.argv[-1])
    grpc.channel_ready_future(channel).result(timeout=5)
    script = [
        ("", "Unary", ["hello"]),
        ("", "ServerStream", ["abc"]),
        ("", "ClientStream", ["a", "bb"]),
        ("", "Unary", ["missing"]),
        ("", "Unary", ["secret"]),
    ]
    if join:
        # The second batch repeats the first's method (its :path is now a
        # dynamic-table reference the agent never saw) and adds new ones.
        script = [
            ("before", "Unary", ["hello"]),
            ("before", "Unary", ["world"]),
            ("after", "Unary", ["hello"]),
            ("after", "ServerStream", ["abc"]),
            ("after", "Unary", ["missing"]),
        ]
    for i, (phase, method, send) in enumerate(script):
        if phase == "after" and script[i - 1][0] == "before":
            print("ready", flush=True)
            sys.stdin.readline()
        path = SERVICE + method
        t = {"phase": phase, "stream": 2 * i + 1, "method": "POST", "path": path, "query": "",
             "status": 200, "grpc_status": 0,
             "req_bytes": sum(5 + len(encode(s)) for s in send), "resp_bytes": 0,
             "req_msgs": len(send), "resp_msgs": 0}
        replies = []
        try:
            if method == "Unary":
                call = channel.unary_unary(path)
                replies = [call(encode(send[0]), timeout=5)]
            elif method == "ServerStream":
                call = channel.unary_stream(path)
                replies = list(call(encode(send[0]), timeout=5))
            else:
                call = channel.stream_unary(path)
                replies = [call(iter([encode(s) for s in send]), timeout=5)]
        except grpc.RpcError as e:
            t["grpc_status"] = e.code().value[0]
        t["resp_msgs"] = len(replies)
        t["resp_bytes"] = sum(5 + len(r) for r in replies)
        print(json.dumps(t), flush=True)
    channel.close()


if __name__ == "__main__":
    main()
