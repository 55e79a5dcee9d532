//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/apisonar/apisonar/agent/tcpreasm"
)

// AFPacketSource captures live packets from one interface with an AF_PACKET
// socket and a TPACKET_V3 ring shared with the kernel, reassembles their TCP
// connections and drives the same Tracker as the eBPF source. Pure Go (no
// libpcap, no cgo): gopacket's afpacket package needs cgo.
//
// The socket is a datagram packet socket, so every packet starts at its IP
// header whatever the link type. A classic BPF program in the kernel keeps
// only TCP over IPv4 and IPv6; on a loopback interface outgoing copies are
// ignored (each packet would otherwise be seen twice). Packet time is the
// kernel's receive timestamp.
type AFPacketSource struct {
	// Interface to capture on, e.g. "eth0" or "lo".
	Interface string
	// BlockSize and Blocks size the ring (defaults 1 MiB and 32). A block
	// is handed to user space when full or after BlockTimeout.
	BlockSize, Blocks int
	// BlockTimeout bounds how long a partly filled block waits (default
	// 20 ms): the latency of a quiet link.
	BlockTimeout time.Duration
	// Reassembly bounds the TCP reassembler.
	Reassembly tcpreasm.Options
	// Logger, when set, receives start and stop lines.
	Logger *slog.Logger

	packets, bytes, skipped, drops atomic.Uint64
	reasm                          atomic.Pointer[tcpreasm.Stats]
}

// AFPacketStats are the source's counters; safe to read while Run runs.
type AFPacketStats struct {
	Packets, Bytes, Skipped uint64
	// KernelDrops counts packets the kernel dropped because the ring was
	// full; they show up downstream as gaps.
	KernelDrops uint64
	Reassembly  tcpreasm.Stats
}

// Stats returns the counters.
func (s *AFPacketSource) Stats() AFPacketStats {
	st := AFPacketStats{
		Packets: s.packets.Load(), Bytes: s.bytes.Load(), Skipped: s.skipped.Load(),
		KernelDrops: s.drops.Load(),
	}
	if r := s.reasm.Load(); r != nil {
		st.Reassembly = *r
	}
	return st
}

// tcpFilter keeps IPv4 and IPv6 packets whose (first) next header is TCP.
// Offsets are from the IP header: the socket is SOCK_DGRAM.
func tcpFilter() []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipFalse: 2},
		bpf.LoadAbsolute{Off: 9, Size: 1}, // IPv4 protocol
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP, SkipTrue: 3, SkipFalse: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipFalse: 3},
		bpf.LoadAbsolute{Off: 6, Size: 1}, // IPv6 next header
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP, SkipFalse: 1},
		bpf.RetConstant{Val: maxSnaplen},
		bpf.RetConstant{Val: 0},
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Run captures until ctx ends. It owns tracker for that time.
func (s *AFPacketSource) Run(ctx context.Context, tracker *Tracker) error {
	return s.run(ctx, tracker)
}

func (s *AFPacketSource) run(ctx context.Context, sink tcpreasm.Sink) error {
	ifc, err := net.InterfaceByName(s.Interface)
	if err != nil {
		return fmt.Errorf("afpacket: interface %q: %w", s.Interface, err)
	}
	bs, nb := s.BlockSize, s.Blocks
	if bs <= 0 {
		bs = 1 << 20
	}
	if nb <= 0 {
		nb = 32
	}
	page := unix.Getpagesize()
	bs = (bs + page - 1) / page * page
	tov := s.BlockTimeout
	if tov <= 0 {
		tov = 20 * time.Millisecond
	}

	// Protocol 0: nothing is delivered until bind, so no unfiltered
	// packet slips in before the filter and the ring are set.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("afpacket: socket: %w (needs root or CAP_NET_RAW)", err)
	}
	defer unix.Close(fd)

	raw, err := bpf.Assemble(tcpFilter())
	if err != nil {
		return fmt.Errorf("afpacket: filter: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fmt.Errorf("afpacket: attach filter: %w", err)
	}
	if ifc.Flags&net.FlagLoopback != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return fmt.Errorf("afpacket: ignore outgoing on loopback: %w", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fmt.Errorf("afpacket: TPACKET_V3: %w", err)
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(bs),
		Block_nr:       uint32(nb),
		Frame_size:     unix.TPACKET_ALIGNMENT << 7,
		Retire_blk_tov: uint32(tov / time.Millisecond),
	}
	req.Frame_nr = req.Block_size * req.Block_nr / req.Frame_size
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("afpacket: ring of %d x %d bytes: %w", nb, bs, err)
	}
	ring, err := unix.Mmap(fd, 0, bs*nb, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED|unix.MAP_POPULATE)
	if err != nil {
		// MAP_LOCKED fails under a low memlock limit; the ring works
		// without it.
		ring, err = unix.Mmap(fd, 0, bs*nb, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("afpacket: mmap ring: %w", err)
		}
	}
	defer unix.Munmap(ring)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
		return fmt.Errorf("afpacket: bind %s: %w", s.Interface, err)
	}
	if s.Logger != nil {
		s.Logger.Info("packet capture started", "interface", s.Interface, "ring_bytes", bs*nb)
	}

	dec := tcpreasm.NewDecoder()
	asm := tcpreasm.NewAssembler(s.Reassembly, sink)
	var seg tcpreasm.Segment
	var lastTS int64
	publish := func() {
		st := asm.Stats()
		s.reasm.Store(&st)
		if ks, err := unix.GetsockoptTpacketStatsV3(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			// The kernel resets these counters on each read.
			s.drops.Add(uint64(ks.Drops))
		}
	}
	defer func() {
		asm.Flush(lastTS)
		publish()
		if s.Logger != nil {
			st := s.Stats()
			s.Logger.Info("packet capture stopped", "interface", s.Interface,
				"packets", st.Packets, "kernel_drops", st.KernelDrops, "gaps", st.Reassembly.Gaps)
		}
	}()

	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLERR}}
	lastPublish := time.Now()
	for blk := 0; ; {
		if err := ctx.Err(); err != nil {
			return nil
		}
		base := blk * bs
		// struct tpacket_block_desc: version, offset_to_priv, then
		// tpacket_hdr_v1 whose first word is block_status.
		status := (*uint32)(unsafe.Pointer(&ring[base+8]))
		if atomic.LoadUint32(status)&unix.TP_STATUS_USER == 0 {
			_, err := unix.Poll(pfd, 100)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("afpacket: poll: %w", err)
			}
			if now := time.Now(); now.Sub(lastPublish) >= time.Second {
				// A quiet link still ages its flows: kernel packet
				// times are wall-clock, so the wall clock stands in.
				lastPublish = now
				if ts := now.UnixNano(); ts > lastTS {
					asm.Sweep(ts)
				}
				publish()
			}
			continue
		}
		n := int(*(*uint32)(unsafe.Pointer(&ring[base+12])))
		off := int(*(*uint32)(unsafe.Pointer(&ring[base+16])))
		for i := 0; i < n && off > 0 && off < bs; i++ {
			h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&ring[base+off]))
			start := off + int(h.Net)
			end := start + int(h.Snaplen)
			if int(h.Net) >= bs || end > bs {
				break
			}
			ts := int64(h.Sec)*1e9 + int64(h.Nsec)
			lastTS = ts
			s.packets.Add(1)
			s.bytes.Add(uint64(h.Snaplen))
			if err := dec.DecodeIP(ring[base+start:base+end], &seg); err != nil {
				s.skipped.Add(1)
			} else {
				asm.Segment(ts, &seg)
			}
			if h.Next_offset == 0 {
				break
			}
			off += int(h.Next_offset)
		}
		atomic.StoreUint32(status, unix.TP_STATUS_KERNEL)
		blk = (blk + 1) % nb
	}
}
