package agent

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/apisonar/apisonar/bpf"
)

// SeedResult says what the socket table held when the agent started.
type SeedResult struct {
	// Listeners is the number of listening TCP sockets, Ports the number of
	// distinct local ports they listen on.
	Listeners, Ports int
	// Established counts connections that were already open; ServerSide
	// those whose local port is a listening port (this host serves them).
	Established, ServerSide int
}

const tcpListen = 10 // TCP_LISTEN in the kernel's socket states

// SeedListeners reads the kernel's TCP socket table (netlink sock_diag,
// IPv4 and IPv6) and hands the listening ports to the kernel side. A
// keep-alive connection opened before the agent started is then given the
// right role on its first traced bytes even when those bytes do not tell
// (an HTTP/2 frame in the middle of a connection); its 4-tuple and process
// come from the socket and the thread that moves the bytes.
func SeedListeners(tr *bpf.Tracer, logger *slog.Logger) (SeedResult, error) {
	var socks []*netlink.Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		s, err := netlink.SocketDiagTCP(family)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return SeedResult{}, fmt.Errorf("seed: read TCP socket table (family %d): %w", family, err)
		}
		socks = append(socks, s...)
	}
	ports, res := listenPorts(socks)
	if err := tr.SeedListeners(ports); err != nil {
		return res, fmt.Errorf("seed: %w", err)
	}
	if logger != nil {
		logger.Info("seeded from the socket table", "listeners", res.Listeners, "ports", res.Ports,
			"established", res.Established, "server_side", res.ServerSide)
	}
	return res, nil
}

// listenPorts counts listening sockets per local port and classifies the
// established connections against them.
func listenPorts(socks []*netlink.Socket) (map[uint16]uint32, SeedResult) {
	ports := make(map[uint16]uint32)
	var res SeedResult
	for _, s := range socks {
		if s.State == tcpListen {
			ports[s.ID.SourcePort]++
			res.Listeners++
		}
	}
	res.Ports = len(ports)
	for _, s := range socks {
		if s.State == unix.BPF_TCP_ESTABLISHED {
			res.Established++
			if ports[s.ID.SourcePort] > 0 {
				res.ServerSide++
			}
		}
	}
	return ports, res
}
