package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/apisonar/apisonar/bpf"
)

// newLiveSource attaches the configured live source.
func (p *Pipeline) newLiveSource() (liveSource, error) {
	switch p.cfg.Source {
	case "ebpf":
		return p.newEBPF()
	case "afpacket":
		if _, err := net.InterfaceByName(p.cfg.Interface); err != nil {
			return nil, UserError{fmt.Errorf("interface %q: %v", p.cfg.Interface, err)}
		}
		src := &AFPacketSource{Interface: p.cfg.Interface, Logger: p.log.With("component", "source.afpacket")}
		return afpacketLive{src, p.tracker}, nil
	}
	return nil, UserError{fmt.Errorf("source %q is not available", p.cfg.Source)}
}

// checkLive fails early, before any state is touched, when the process
// lacks what the configured source needs.
func checkLive(cfg Config) error {
	if cfg.Source == "ebpf" && os.Geteuid() != 0 {
		if err := bpf.CheckSupport(); err != nil {
			return UserError{err}
		}
	}
	return nil
}

func (p *Pipeline) newEBPF() (liveSource, error) {
	if mounted, err := EnsureTracefs(); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, UserError{fmt.Errorf("run needs root or CAP_BPF+CAP_PERFMON+CAP_SYS_ADMIN: %w", err)}
		}
		return nil, err
	} else if mounted {
		p.log.Info("mounted tracefs", "path", TracefsPath)
	}
	cfg := bpf.Config{
		PayloadCap:   p.cfg.Capture.PayloadBytes,
		RingBytes:    p.cfg.Capture.RingBytes,
		PollInterval: p.cfg.Capture.DrainInterval,
		SelfPID:      os.Getpid(),
	}
	src, err := OpenEBPFSource(cfg, p.tracker, EBPFSourceOptions{}, p.log)
	if err != nil {
		if errors.Is(err, bpf.ErrNotPermitted) {
			return nil, UserError{err}
		}
		return nil, fmt.Errorf("attaching eBPF programs: %w", err)
	}
	return src, nil
}

// afpacketLive adapts AFPacketSource to the pipeline's liveSource.
type afpacketLive struct {
	src     *AFPacketSource
	tracker *Tracker
}

func (a afpacketLive) Run(ctx context.Context) error {
	err := a.src.Run(ctx, a.tracker)
	if errors.Is(err, os.ErrPermission) {
		return UserError{fmt.Errorf("--source afpacket needs root or CAP_NET_RAW: %w", err)}
	}
	return err
}

func (a afpacketLive) Counters() map[string]uint64 {
	s := a.src.Stats()
	r := s.Reassembly
	return map[string]uint64{
		"afpacket.packets": s.Packets, "afpacket.bytes": s.Bytes, "afpacket.skipped": s.Skipped,
		"afpacket.kernel_drops": s.KernelDrops,
		"tcp.segments":          r.Segments, "tcp.payload_bytes": r.PayloadBytes, "tcp.flows": r.Flows,
		"tcp.evicted": r.Evicted, "tcp.expired": r.Expired, "tcp.out_of_order": r.OutOfOrder,
		"tcp.gaps": r.Gaps, "tcp.gap_bytes": r.GapBytes, "tcp.retransmitted_bytes": r.Retransmitted,
	}
}
