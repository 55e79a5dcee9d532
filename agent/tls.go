package agent

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/apisonar/apisonar/bpf"
)

// TLSOptions tune the TLS library attach manager. The zero value gives
// defaults.
type TLSOptions struct {
	// ProcRoot is where processes are listed. "" means /proc.
	ProcRoot string
	// ScanInterval is how often all of /proc is scanned for library files
	// not yet probed, the safety net behind the exec trigger. 0 means 2
	// seconds.
	ScanInterval time.Duration
	// ExecQueue bounds the exec events waiting to be looked at and, four
	// times over, the processes whose maps are being watched after an
	// exec; beyond it exec events are dropped and counted. 0 means 1024.
	ExecQueue int
	// SystemLibs are library files probed at start whether or not a
	// process maps them yet, so that processes started later that load
	// them are covered from their first call. nil means the usual Debian,
	// Red Hat and Alpine locations of libssl.so.3 and libssl.so.1.1.
	SystemLibs []string
}

// DefaultSystemLibs are the libssl locations probed at start.
var DefaultSystemLibs = []string{
	"/lib/x86_64-linux-gnu/libssl.so.3",
	"/usr/lib/x86_64-linux-gnu/libssl.so.3",
	"/lib/x86_64-linux-gnu/libssl.so.1.1",
	"/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
	"/usr/lib64/libssl.so.3",
	"/usr/lib64/libssl.so.1.1",
	"/lib/libssl.so.3",
	"/usr/lib/libssl.so.3",
}

// TLSStats count the attach manager's work.
type TLSStats struct {
	Scans      uint64 // passes over /proc
	ScanNanos  uint64 // time spent in them
	Attached   uint64 // library files probed
	Detached   uint64 // library files no longer mapped, probes removed
	Rejected   uint64 // library files skipped (not OpenSSL-compatible, unreadable)
	Files      uint64 // library files probed now
	MapsErrors uint64 // processes whose maps could not be read (mostly: exited)

	ExecEvents   uint64 // exec events handed to the manager
	ExecDropped  uint64 // of those, dropped: queue or watch list full, or not a valid pid
	ExecAttached uint64 // files (libssl or Go executables) probed because of an exec
}

// execChecks are the times after an exec event at which the process's maps
// are read again: the dynamic loader maps a linked libssl within
// milliseconds, an interpreter only when the program loads it (python at
// import ssl). The gaps stay at most 250 ms over the first second. The
// executable itself is inspected at once.
var execChecks = []time.Duration{
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 175 * time.Millisecond, 250 * time.Millisecond,
	375 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond,
	time.Second, 1500 * time.Millisecond, 2 * time.Second,
}

// tlsFile is one probed library file.
type tlsFile struct {
	path   string
	pinned bool  // a system library: kept for processes yet to start
	seen   int64 // scan number that last found it mapped
}

// TLSManager finds the TLS libraries processes map and puts the tracer's
// probes on each distinct file once.
//
// Uprobes bind to a file (device and inode), not to a process: one
// attachment covers every process that maps the file, including processes
// started later. The manager therefore only has to notice new files: the
// system libssl is probed at start, and /proc/*/maps is scanned on an
// interval for others (a container's own copy, reached through
// /proc/PID/root, or a library at an unusual path).
//
// Exec events (the kernel's sched_process_exec records, handed over with
// Exec) make a new program's files probed within milliseconds instead of
// on the next scan: the executable (Go crypto/tls) is inspected at once,
// and the process's maps are read at once and again at execChecks after
// the exec, until a libssl shows up or the process exits, because at exec
// the dynamic loader has not mapped anything yet and an interpreter maps
// libssl only when the program asks for it. Only that process is read,
// never all of /proc. Exec handles no more than ExecQueue events at a
// time; the rest are dropped and counted, and the periodic scan remains
// the safety net for them and for anything the checks missed (a library
// loaded more than two seconds after exec). A call made between the
// mapping of a new file and its probing is not seen.
//
// Files that turn out not to be OpenSSL-compatible are logged once,
// counted and never retried. A file no process maps any more is detached,
// unless it is a system library.
//
// Scan may be called from any goroutine, also while Run scans on its
// interval (scans and exec checks take turns); Exec and Stats from any.
type TLSManager struct {
	tr   *bpf.Tracer
	log  *slog.Logger
	opts TLSOptions

	// scanMu lets one scan run at a time; it guards what follows.
	scanMu   sync.Mutex
	files    map[bpf.FileID]*tlsFile
	rejected map[bpf.FileID]bool
	scan     int64
	golang   *goTLS // Go executables (crypto/tls), see gotls.go

	// execQ carries exec'd pids from Exec to Run's exec worker.
	execQ   chan uint32
	execBuf []byte // maps buffer of the exec worker (under scanMu)

	scans, scanNanos, attached, detached, rejectedN, nfiles, mapsErrs atomic.Uint64
	execEvents, execDropped, execAttached                             atomic.Uint64
}

// NewTLSManager returns a manager for tr. Nothing is attached until Start.
func NewTLSManager(tr *bpf.Tracer, opts TLSOptions, logger *slog.Logger) *TLSManager {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.ScanInterval <= 0 {
		opts.ScanInterval = 2 * time.Second
	}
	if opts.SystemLibs == nil {
		opts.SystemLibs = DefaultSystemLibs
	}
	if opts.ExecQueue <= 0 {
		opts.ExecQueue = 1024
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &TLSManager{
		tr:       tr,
		log:      logger,
		opts:     opts,
		files:    make(map[bpf.FileID]*tlsFile),
		rejected: make(map[bpf.FileID]bool),
		golang:   newGoTLS(tr, logger),
		execQ:    make(chan uint32, opts.ExecQueue),
	}
}

// Start probes the system libraries and runs a first scan, so that TLS
// traffic is seen as soon as Start returns.
func (m *TLSManager) Start() {
	for _, p := range m.opts.SystemLibs {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if f := m.attach(p); f != nil {
			f.pinned = true
		}
	}
	m.Scan()
}

// Run scans every ScanInterval and looks at the processes named by Exec
// until ctx is done.
func (m *TLSManager) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { m.runExec(ctx); close(done) }()
	defer func() { <-done }()
	tick := time.NewTicker(m.opts.ScanInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			m.Scan()
		}
	}
}

// Scan reads every process's memory map, probes the TLS library files not
// probed yet and detaches the ones no longer mapped.
func (m *TLSManager) Scan() {
	m.scanMu.Lock()
	defer m.scanMu.Unlock()
	start := time.Now()
	m.scan++
	ents, err := os.ReadDir(m.opts.ProcRoot)
	if err != nil {
		m.log.Warn("list processes", "err", err)
		return
	}
	var buf []byte
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		buf, _, err = m.scanPID(pid, buf)
		if err != nil {
			m.mapsErrs.Add(1)
		}
		m.golang.scanPID(m.opts.ProcRoot, pid, m.scan)
	}
	m.golang.sweep(m.scan)
	for id, f := range m.files {
		if f.pinned || f.seen == m.scan {
			continue
		}
		if err := m.tr.DetachSSL(id); err != nil {
			m.log.Warn("detach TLS probes", "path", f.path, "err", err)
		}
		delete(m.files, id)
		m.detached.Add(1)
	}
	m.nfiles.Store(uint64(len(m.files)))
	m.scans.Add(1)
	m.scanNanos.Add(uint64(time.Since(start)))
}

// scanPID looks for TLS libraries in one process's maps. buf is reused
// between calls. found tells that the process maps a libssl that is now
// probed or known to be unusable.
func (m *TLSManager) scanPID(pid int, buf []byte) (_ []byte, found bool, _ error) {
	buf, err := readFileInto(filepath.Join(m.opts.ProcRoot, strconv.Itoa(pid), "maps"), buf)
	if err != nil {
		return buf, false, err
	}
	if !bytes.Contains(buf, []byte("/libssl.so")) {
		return buf, false, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(buf))
	for sc.Scan() {
		id, path, ok := parseMapsLine(sc.Bytes())
		if !ok || !isLibSSL(path) {
			continue
		}
		if f, ok := m.files[id]; ok {
			f.seen = m.scan
			found = true
			continue
		}
		if m.rejected[id] {
			found = true
			continue
		}
		// Through the process's root, so that a library inside another
		// mount namespace (a container) is opened as that process sees
		// it.
		full := filepath.Join(m.opts.ProcRoot, strconv.Itoa(pid), "root", path)
		got, err := bpf.StatFile(full)
		if err != nil || got != id {
			// Replaced or gone since the map was read: next scan.
			continue
		}
		if f := m.attach(full); f != nil {
			f.seen = m.scan
		}
		found = found || m.files[id] != nil || m.rejected[id]
	}
	return buf, found, nil
}

// Exec tells the manager that process pid has just exec'd a program, so
// that its TLS files are probed promptly. It never blocks: when ExecQueue
// events are already waiting, the event is dropped and counted (the
// periodic scan still covers the process).
func (m *TLSManager) Exec(pid uint32) {
	m.execEvents.Add(1)
	if pid == 0 || pid > 1<<22 || int(pid) == os.Getpid() {
		// Not a process this manager can look at (pid_max is at most
		// 2^22): a record no kernel would send.
		m.execDropped.Add(1)
		return
	}
	select {
	case m.execQ <- pid:
	default:
		m.execDropped.Add(1)
	}
}

// execWatch is one pending maps check of an exec'd process.
type execWatch struct {
	due  time.Time
	pid  int
	gen  uint64 // the exec it belongs to; a newer exec of the pid supersedes it
	step int    // index into execChecks
}

type execHeap []execWatch

func (h execHeap) Len() int           { return len(h) }
func (h execHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h execHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *execHeap) Push(x any)        { *h = append(*h, x.(execWatch)) }
func (h *execHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// runExec looks at each exec'd process at once and then at execChecks,
// until ctx is done. At most 4*ExecQueue processes are watched.
func (m *TLSManager) runExec(ctx context.Context) {
	var (
		pending execHeap
		gens    = make(map[int]uint64) // pid -> its latest exec
		gen     uint64
		limit   = 4 * m.opts.ExecQueue
		timer   = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	for {
		timer.Stop()
		if len(pending) > 0 {
			timer.Reset(time.Until(pending[0].due))
		}
		select {
		case <-ctx.Done():
			return
		case pid32 := <-m.execQ:
			pid := int(pid32)
			start := time.Now()
			if m.inspectExec(pid, true) {
				delete(gens, pid)
				continue
			}
			if _, ok := gens[pid]; len(pending) >= 2*limit || (!ok && len(gens) >= limit) {
				m.execDropped.Add(1)
				continue
			}
			gen++
			gens[pid] = gen
			heap.Push(&pending, execWatch{due: start.Add(execChecks[0]), pid: pid, gen: gen})
		case <-timer.C:
			now := time.Now()
			for len(pending) > 0 && !pending[0].due.After(now) {
				w := heap.Pop(&pending).(execWatch)
				if gens[w.pid] != w.gen {
					continue // superseded by a later exec of the pid
				}
				if m.inspectExec(w.pid, false) || w.step+1 == len(execChecks) {
					delete(gens, w.pid)
					continue
				}
				w.due = w.due.Add(execChecks[w.step+1] - execChecks[w.step])
				w.step++
				heap.Push(&pending, w)
			}
		}
	}
}

// inspectExec probes the TLS files of one process: its executable when exe
// is set, and the libssl it maps. done tells that watching it further is
// pointless: it maps a libssl already handled, or it is gone.
func (m *TLSManager) inspectExec(pid int, exe bool) (done bool) {
	m.scanMu.Lock()
	defer m.scanMu.Unlock()
	before := m.attached.Load() + m.golang.attached.Load()
	if exe {
		m.golang.scanPID(m.opts.ProcRoot, pid, m.scan)
	}
	buf, found, err := m.scanPID(pid, m.execBuf)
	m.execBuf = buf
	if n := m.attached.Load() + m.golang.attached.Load() - before; n > 0 {
		m.execAttached.Add(n)
		m.log.Debug("probed on exec", "pid", pid, "files", n)
	}
	return found || err != nil
}

// attach probes one file, recording it as probed or rejected.
func (m *TLSManager) attach(path string) *tlsFile {
	id, fresh, err := m.tr.AttachSSL(path)
	if err != nil {
		if id != (bpf.FileID{}) && !m.rejected[id] {
			m.rejected[id] = true
			m.rejectedN.Add(1)
			m.log.Warn("TLS library skipped", "path", path, "file", id.String(), "err", err)
		}
		return nil
	}
	f, ok := m.files[id]
	if !ok {
		f = &tlsFile{path: path, seen: m.scan}
		m.files[id] = f
	}
	if fresh {
		m.attached.Add(1)
	}
	m.nfiles.Store(uint64(len(m.files)))
	return f
}

// Stats returns the manager's counters.
func (m *TLSManager) Stats() TLSStats {
	return TLSStats{
		Scans:      m.scans.Load(),
		ScanNanos:  m.scanNanos.Load(),
		Attached:   m.attached.Load(),
		Detached:   m.detached.Load(),
		Rejected:   m.rejectedN.Load(),
		Files:      m.nfiles.Load(),
		MapsErrors: m.mapsErrs.Load(),

		ExecEvents:   m.execEvents.Load(),
		ExecDropped:  m.execDropped.Load(),
		ExecAttached: m.execAttached.Load(),
	}
}

// isLibSSL matches OpenSSL's libssl.so and its versioned names, not NSS's
// libssl3.so.
func isLibSSL(path string) bool {
	base := filepath.Base(path)
	return base == "libssl.so" || strings.HasPrefix(base, "libssl.so.")
}

// parseMapsLine splits one /proc/PID/maps line:
//
//	address perms offset major:minor inode path
//
// It returns the file's identity and path; ok is false for anonymous and
// deleted mappings and for malformed lines.
func parseMapsLine(line []byte) (bpf.FileID, string, bool) {
	var fields [5][]byte
	rest := line
	for i := range fields {
		rest = bytes.TrimLeft(rest, " ")
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			return bpf.FileID{}, "", false
		}
		fields[i], rest = rest[:j], rest[j:]
	}
	path := string(bytes.TrimLeft(rest, " "))
	if !strings.HasPrefix(path, "/") || strings.HasSuffix(path, " (deleted)") {
		return bpf.FileID{}, "", false
	}
	majmin := fields[3]
	k := bytes.IndexByte(majmin, ':')
	if k < 0 {
		return bpf.FileID{}, "", false
	}
	major, err1 := strconv.ParseUint(string(majmin[:k]), 16, 32)
	minor, err2 := strconv.ParseUint(string(majmin[k+1:]), 16, 32)
	ino, err3 := strconv.ParseUint(string(fields[4]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || ino == 0 {
		return bpf.FileID{}, "", false
	}
	return bpf.FileID{Dev: unix.Mkdev(uint32(major), uint32(minor)), Ino: ino}, path, true
}

// readFileInto reads a whole (proc) file into buf's storage.
func readFileInto(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	if cap(buf) < 64<<10 {
		buf = make([]byte, 0, 64<<10)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, fmt.Errorf("read %s: %w", path, err)
		}
	}
}
