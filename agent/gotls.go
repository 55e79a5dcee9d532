package agent

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/apisonar/apisonar/bpf"
)

// GoTLSStats count the Go crypto/tls side of the attach manager.
type GoTLSStats struct {
	Attached uint64 // Go executables probed
	Detached uint64 // Go executables no process runs any more, probes removed
	Rejected uint64 // Go executables with crypto/tls that cannot be probed safely
	Ignored  uint64 // executables that are not Go or do not use crypto/tls
	Files    uint64 // Go executables probed now
}

// goTLS finds Go programs that use crypto/tls and probes each executable
// file once (bpf.AttachGoTLS explains the probes). It is driven by the
// TLSManager's scan and by exec events: for a process it looks at
// /proc/PID/exe, which names the executable even inside another mount
// namespace (a container), and inspects each distinct file (device and
// inode) once. Files that are not Go, or have no crypto/tls, are
// remembered and never read again; those that cannot be probed safely
// are logged once and counted. A file no running process executes any
// more is detached.
//
// Since probes bind to the file, a process started later from a file
// already probed is covered from its first instruction. A process from a
// file never seen before is inspected when its exec record arrives (within
// the tracer's PollInterval), so it is covered after that plus the
// inspection, which costs tens of milliseconds (stripped) to a few hundred
// (DWARF of a 30 MB binary), once per file; calls it makes before are not
// seen. Exec events that were dropped leave it to the next scan.
//
// Used under the TLSManager's scanMu; stats from any goroutine.
type goTLS struct {
	tr  *bpf.Tracer
	log *slog.Logger

	files   map[bpf.FileID]*tlsFile
	skipped map[bpf.FileID]bool

	attached, detached, rejected, ignored, nfiles atomic.Uint64
}

func newGoTLS(tr *bpf.Tracer, logger *slog.Logger) *goTLS {
	return &goTLS{
		tr:      tr,
		log:     logger,
		files:   make(map[bpf.FileID]*tlsFile),
		skipped: make(map[bpf.FileID]bool),
	}
}

// scanPID looks at one process's executable.
func (g *goTLS) scanPID(procRoot string, pid int, scan int64) {
	if pid == os.Getpid() {
		return // never traced (the kernel side skips it too): no probes for it
	}
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	exe := filepath.Join(dir, "exe")
	id, err := bpf.StatFile(exe)
	if err != nil {
		return // a kernel thread, or gone
	}
	if f, ok := g.files[id]; ok {
		f.seen = scan
		return
	}
	if g.skipped[id] {
		return
	}
	// The path as the process sees it, through its root, when that still
	// is the same file; else the magic link itself.
	path := exe
	if target, err := os.Readlink(exe); err == nil {
		if p := filepath.Join(dir, "root", target); p != exe {
			if got, err := bpf.StatFile(p); err == nil && got == id {
				path = p
			}
		}
	}
	got, _, fresh, err := g.tr.AttachGoTLS(path)
	switch {
	case err == nil:
	case got != id:
		return // replaced or gone meanwhile: next scan
	case errors.Is(err, bpf.ErrNotGo), errors.Is(err, bpf.ErrNoGoTLS):
		g.skipped[id] = true
		g.ignored.Add(1)
		return
	case errors.Is(err, bpf.ErrGoUnsupported):
		g.skipped[id] = true
		g.rejected.Add(1)
		g.log.Warn("Go TLS binary skipped", "path", path, "file", id.String(), "err", err)
		return
	default:
		// Unreadable now (the process exited mid-read) or an attach
		// failure: tried again on the next scan.
		g.log.Debug("Go TLS attach failed", "path", path, "err", err)
		return
	}
	g.files[id] = &tlsFile{path: path, seen: scan}
	if fresh {
		g.attached.Add(1)
	}
	g.nfiles.Store(uint64(len(g.files)))
}

// sweep detaches the files no process of scan ran.
func (g *goTLS) sweep(scan int64) {
	for id, f := range g.files {
		if f.seen == scan {
			continue
		}
		if err := g.tr.DetachGoTLS(id); err != nil {
			g.log.Warn("detach Go TLS probes", "path", f.path, "err", err)
		}
		delete(g.files, id)
		g.detached.Add(1)
	}
	g.nfiles.Store(uint64(len(g.files)))
}

// GoStats returns the Go crypto/tls counters of the manager.
func (m *TLSManager) GoStats() GoTLSStats {
	g := m.golang
	return GoTLSStats{
		Attached: g.attached.Load(),
		Detached: g.detached.Load(),
		Rejected: g.rejected.Load(),
		Ignored:  g.ignored.Load(),
		Files:    g.nfiles.Load(),
	}
}
