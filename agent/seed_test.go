package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/apisonar/apisonar/bpf"
)

func sock(state uint8, sport, dport uint16) *netlink.Socket {
	return &netlink.Socket{State: state, ID: netlink.SocketID{
		SourcePort: sport, DestinationPort: dport, Source: net.IPv4(127, 0, 0, 1), Destination: net.IPv4(127, 0, 0, 1),
	}}
}

func TestListenPorts(t *testing.T) {
	const established, timeWait = 1, 6
	socks := []*netlink.Socket{
		sock(tcpListen, 8080, 0),
		sock(tcpListen, 8080, 0), // the IPv6 listener of a dual-stack server
		sock(tcpListen, 22, 0),
		sock(established, 8080, 51000), // served by this host
		sock(established, 51000, 8080), // its client end, also local
		sock(established, 40000, 443),  // a client of a remote server
		sock(timeWait, 8080, 51001),
	}
	ports, res := listenPorts(socks)
	if len(ports) != 2 || ports[8080] != 2 || ports[22] != 1 {
		t.Errorf("ports: %v, want 8080:2 22:1", ports)
	}
	want := SeedResult{Listeners: 3, Ports: 2, Established: 3, ServerSide: 1}
	if res != want {
		t.Errorf("result: %+v, want %+v", res, want)
	}
}

// h2Peers is a raw server and client that speak HTTP/2 frames only, so
// their first bytes seen by the tracer never say which side is which.
const h2Server = `
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
while True:
    b = c.recv(4096)
    if not b: break
    c.sendall(bytes([0, 0, 0, 4, 1, 0, 0, 0, 0]))  # SETTINGS ack
`

const h2Client = `
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
c.recv(4096)
print("connected", flush=True)
sys.stdin.readline()
for i in range(2):
    c.sendall(bytes([0, 0, 8, 6, 0, 0, 0, 0, 0]) + b"pingpong")  # PING
    c.recv(4096)
c.close()
`

// A connection opened before the tracer, joined on an HTTP/2 PING: only
// the listening ports read from the socket table say which end serves.
func TestSeedGivesRolesToJoinedHTTP2Connection(t *testing.T) {
	requireBPF(t)
	srv := spawn(t, "/usr/bin/python3", "-c", h2Server)
	port := srv.line(t)
	cli := spawn(t, "/usr/bin/python3", "-c", h2Client, port)
	cli.line(t)

	tr, err := bpf.Open(bpf.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := SeedListeners(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Listeners == 0 || res.Established < 2 {
		t.Errorf("seed saw %+v; want the test's listener and both ends of its connection", res)
	}

	type seen struct {
		role  bpf.Role
		dir   bpf.Dir
		proto bpf.Proto
		first byte
	}
	got := map[int][]seen{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var rec bpf.Record
		tr.SetDeadline(time.Now().Add(5 * time.Second))
		for len(got[srv.pid()]) < 3 || len(got[cli.pid()]) < 4 {
			if err := tr.Read(&rec); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("read: %v", err)
				}
				return
			}
			if rec.Kind == bpf.KindData && len(rec.Payload) > 0 {
				pid := int(rec.PID)
				got[pid] = append(got[pid], seen{rec.Role, rec.Dir, rec.Proto, rec.Payload[3]})
			}
		}
	}()
	fmt.Fprintln(cli.stdin, "go")
	<-done

	// The server's first recv was already blocked when the tracer
	// attached: a syscall in flight at attach time is not seen, so its
	// first PING is missing; its answer and the second exchange are there.
	const ping, settings = 6, 4
	srvIn := seen{bpf.RoleServer, bpf.Ingress, bpf.ProtoHTTP2, ping}
	srvOut := seen{bpf.RoleServer, bpf.Egress, bpf.ProtoHTTP2, settings}
	cliOut := seen{bpf.RoleClient, bpf.Egress, bpf.ProtoHTTP2, ping}
	cliIn := seen{bpf.RoleClient, bpf.Ingress, bpf.ProtoHTTP2, settings}
	want := map[string]struct {
		pid  int
		recs []seen
	}{
		"server": {srv.pid(), []seen{srvOut, srvIn, srvOut}},
		"client": {cli.pid(), []seen{cliOut, cliIn, cliOut, cliIn}},
	}
	for name, w := range want {
		if fmt.Sprint(got[w.pid]) != fmt.Sprint(w.recs) {
			t.Errorf("%s end: got %v, want %v", name, got[w.pid], w.recs)
		}
	}
}
