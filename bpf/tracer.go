package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Errors a user can act on. Open wraps the underlying error with one of
// these when it applies, so callers test with errors.Is.
var (
	// ErrNotPermitted: the process may not load eBPF programs.
	ErrNotPermitted = errors.New("not permitted to load eBPF programs: run as root or grant CAP_BPF and CAP_PERFMON")
	// ErrNoTracefs: tracepoints cannot be attached without tracefs.
	ErrNoTracefs = errors.New("tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)")
	// ErrNoBTF: the kernel exposes no BTF (/sys/kernel/btf/vmlinux), which
	// CO-RE needs.
	ErrNoBTF = errors.New("kernel BTF is missing (/sys/kernel/btf/vmlinux); a kernel built with CONFIG_DEBUG_INFO_BTF is required")
	// ErrClosed is returned by Read after Close.
	ErrClosed = os.ErrClosed
)

// Defaults and bounds of Config.
const (
	DefaultPayloadCap   = 16 << 10
	MaxPayloadCap       = 256 << 10
	DefaultRingBytes    = 8 << 20
	DefaultMaxConns     = 65536
	DefaultPollInterval = 50 * time.Millisecond
)

// Config tunes the kernel side. The zero value gives the defaults.
type Config struct {
	// PayloadCap is how many bytes of one syscall (or one mmsg message)
	// are copied; the rest is counted as truncated and reported to user
	// space as a gap. 0 means DefaultPayloadCap; at most MaxPayloadCap.
	PayloadCap int
	// RingBytes sizes the ring buffer: a power of two and a multiple of
	// the page size. 0 means DefaultRingBytes.
	RingBytes int
	// WakeupBytes is how much unread data makes the kernel wake the reader
	// early; below it the reader drains every PollInterval. 0 means
	// RingBytes/32.
	WakeupBytes int
	// MaxConns bounds the kernel's connection table (LRU). 0 means
	// DefaultMaxConns.
	MaxConns int
	// SelfPID is the process that is never traced. 0 means this process.
	SelfPID int
	// PollInterval is the longest a record waits in the ring before Read
	// sees it. 0 means DefaultPollInterval.
	PollInterval time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.PayloadCap == 0 {
		c.PayloadCap = DefaultPayloadCap
	}
	if c.PayloadCap < 0 || c.PayloadCap > MaxPayloadCap {
		return c, fmt.Errorf("payload cap %d out of range (1..%d)", c.PayloadCap, MaxPayloadCap)
	}
	if c.RingBytes == 0 {
		c.RingBytes = DefaultRingBytes
	}
	page := os.Getpagesize()
	if c.RingBytes < page || c.RingBytes&(c.RingBytes-1) != 0 {
		return c, fmt.Errorf("ring buffer size %d must be a power of two of at least %d", c.RingBytes, page)
	}
	if c.WakeupBytes <= 0 {
		c.WakeupBytes = c.RingBytes / 32
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.SelfPID == 0 {
		c.SelfPID = os.Getpid()
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	return c, nil
}

// Tracer is the loaded and attached kernel side.
type Tracer struct {
	cfg    Config
	log    *slog.Logger
	coll   *ebpf.Collection
	links  []link.Link
	rd     *ringbuf.Reader
	raw    ringbuf.Record
	events *ebpf.Map
	stats  *ebpf.Map
	listen *ebpf.Map

	mu        sync.Mutex // guards deadline, closed and uprobes across goroutines
	deadline  time.Time
	closed    bool
	uprobes   map[FileID]*sslLinks
	goUprobes map[FileID]*goLinks

	closeOnce sync.Once
	closeErr  error
}

// Open loads the kernel side with CO-RE, attaches every tracepoint and
// opens the ring buffer reader. It mounts nothing: tracefs must already be
// mounted.
func Open(cfg Config, logger *slog.Logger) (*Tracer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("bpf: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, wrapPerm(fmt.Errorf("bpf: raise RLIMIT_MEMLOCK: %w", err))
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("bpf: %w: %v", ErrNoBTF, err)
	}
	if !tracefsMounted() {
		return nil, fmt.Errorf("bpf: %w", ErrNoTracefs)
	}

	spec, err := loadApisonar()
	if err != nil {
		return nil, fmt.Errorf("bpf: read embedded object: %w", err)
	}
	spec.Maps[apisonarMapEvents].MaxEntries = uint32(cfg.RingBytes)
	spec.Maps[apisonarMapConns].MaxEntries = uint32(cfg.MaxConns)
	for name, v := range map[string]any{
		"self_tgid":    uint32(cfg.SelfPID),
		"payload_cap":  uint32(cfg.PayloadCap),
		"wakeup_bytes": uint64(cfg.WakeupBytes),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("bpf: set %s: %w", name, err)
		}
	}

	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			logger.Error("verifier rejected a program", "log", strings.Join(tail(ve.Log, 20), "\n"))
		}
		return nil, wrapPerm(fmt.Errorf("bpf: load: %w", err))
	}
	t := &Tracer{
		cfg:    cfg,
		log:    logger,
		coll:   coll,
		events: coll.Maps[apisonarMapEvents],
		stats:  coll.Maps[apisonarMapStats],
		listen: coll.Maps[apisonarMapListenPorts],
	}

	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if isUprobe(spec.Programs[name].SectionName) {
			// Bound to library files later, by AttachSSL.
			continue
		}
		group, event, ok := tracepointOf(spec.Programs[name].SectionName)
		if !ok {
			t.Close()
			return nil, fmt.Errorf("bpf: program %s: section %q is not a tracepoint", name, spec.Programs[name].SectionName)
		}
		l, err := link.Tracepoint(group, event, coll.Programs[name], nil)
		if err != nil {
			t.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("bpf: tracepoint %s:%s does not exist on this kernel: %w", group, event, err)
			}
			return nil, wrapPerm(fmt.Errorf("bpf: attach %s:%s: %w", group, event, err))
		}
		t.links = append(t.links, l)
	}

	t.rd, err = ringbuf.NewReader(t.events)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("bpf: open ring buffer: %w", err)
	}
	// CO-RE relocation parsed the kernel's BTF (tens of MiB); it is
	// garbage now, and an agent's resident size is watched.
	debug.FreeOSMemory()
	logger.Info("attached", "tracepoints", len(t.links), "payload_cap", cfg.PayloadCap,
		"ring_bytes", cfg.RingBytes, "self_pid", cfg.SelfPID)
	return t, nil
}

func tracepointOf(section string) (group, event string, ok bool) {
	parts := strings.Split(section, "/")
	if len(parts) != 3 || parts[0] != "tracepoint" {
		return "", "", false
	}
	return parts[1], parts[2], true
}

func tracefsMounted() bool {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(dir + "/events/syscalls"); err == nil {
			return true
		}
	}
	return false
}

func wrapPerm(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("bpf: %w (%s)", ErrNotPermitted, strings.TrimPrefix(err.Error(), "bpf: "))
	}
	return err
}

func tail(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

// Config returns the effective configuration (defaults filled in).
func (t *Tracer) Config() Config { return t.cfg }

// SetDeadline makes Read return os.ErrDeadlineExceeded once d has passed
// without a record. The zero time removes the deadline.
func (t *Tracer) SetDeadline(d time.Time) {
	t.mu.Lock()
	t.deadline = d
	t.mu.Unlock()
}

// Read fills rec with the next record. rec.Payload aliases the reader's
// buffer and is valid until the next Read. Records are submitted without a
// wakeup, so Read drains the ring every PollInterval (or sooner when the
// kernel sees it filling). It returns ErrClosed after Close and
// os.ErrDeadlineExceeded after a deadline set with SetDeadline.
func (t *Tracer) Read(rec *Record) error {
	for {
		t.mu.Lock()
		user := t.deadline
		t.mu.Unlock()
		d := time.Now().Add(t.cfg.PollInterval)
		if !user.IsZero() && user.Before(d) {
			d = user
		}
		t.rd.SetDeadline(d)
		err := t.rd.ReadInto(&t.raw)
		if err == nil {
			return rec.decode(t.raw.RawSample)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if !user.IsZero() && !time.Now().Before(user) {
				return os.ErrDeadlineExceeded
			}
			continue
		}
		if errors.Is(err, os.ErrClosed) || errors.Is(err, ringbuf.ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("bpf: read ring buffer: %w", err)
	}
}

// Stats are the kernel side's counters, summed over CPUs.
type Stats struct {
	Records, Bytes            uint64 // submitted to the ring
	LostRecords, LostBytes    uint64 // refused by a full ring
	Truncated, TruncatedBytes uint64 // syscalls with bytes beyond the cap
	ReadErrors                uint64 // user memory that could not be read
	StepLimit                 uint64 // syscalls cut short by the loop bound
	NotHTTP                   uint64 // connections marked not interesting
	Conns                     uint64 // connections tracked
	Closes                    uint64 // close records
	TLSCalls                  uint64 // TLS library calls that returned plaintext
	TLSNoConn                 uint64 // of those, calls whose socket was unknown
	TLSNested                 uint64 // TLS calls inside another, ignored
	TLSSkipped                uint64 // ciphertext syscalls inside TLS calls, not copied
	GoTLSEnter                uint64 // Go crypto/tls Read/Write entry probe hits
	GoTLSRet                  uint64 // Go crypto/tls RET probe hits
	GoTLSCalls                uint64 // Go crypto/tls calls that returned plaintext
	GoTLSNoConn               uint64 // Go calls whose socket was not found
	GoTLSShort                uint64 // Go Writes that failed after their plaintext was reported
	GoTLSReentry              uint64 // Go calls entered again after stack growth, ignored
	Execs                     uint64 // exec records (submitted or lost)
}

// Stats reads the kernel counters. It may be called from any goroutine;
// after Close it returns ErrClosed.
func (t *Tracer) Stats() (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return Stats{}, ErrClosed
	}
	var per []apisonarCounters
	if err := t.stats.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("bpf: read counters: %w", err)
	}
	var s Stats
	for _, c := range per {
		s.Records += c.Records
		s.Bytes += c.Bytes
		s.LostRecords += c.LostRecords
		s.LostBytes += c.LostBytes
		s.Truncated += c.Truncated
		s.TruncatedBytes += c.TruncatedBytes
		s.ReadErrors += c.ReadErrors
		s.StepLimit += c.StepLimit
		s.NotHTTP += c.NotHttp
		s.Conns += c.Conns
		s.Closes += c.Closes
		s.TLSCalls += c.TlsCalls
		s.TLSNoConn += c.TlsNoConn
		s.TLSNested += c.TlsNested
		s.TLSSkipped += c.TlsSkipped
		s.GoTLSEnter += c.GoTlsEnter
		s.GoTLSRet += c.GoTlsRet
		s.GoTLSCalls += c.GoTlsCalls
		s.GoTLSNoConn += c.GoTlsNoConn
		s.GoTLSShort += c.GoTlsShort
		s.GoTLSReentry += c.GoTlsReentry
		s.Execs += c.Execs
	}
	return s, nil
}

// SeedListeners tells the kernel side which local TCP ports have
// listening sockets (port -> number of listeners), so that connections
// opened before the tracer started, whose first traced bytes do not say
// which side they are, get the right role. Listeners created later are
// learnt by the kernel side itself.
func (t *Tracer) SeedListeners(ports map[uint16]uint32) error {
	for port, n := range ports {
		if err := t.listen.Update(port, n, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("bpf: seed listener port %d: %w", port, err)
		}
	}
	return nil
}

// Close detaches every program, frees the kernel objects and wakes a
// blocked Read. It is safe to call more than once and concurrently with
// Read.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		var errs []error
		errs = append(errs, t.closeUprobes(), t.closeGoUprobes())
		for _, l := range t.links {
			errs = append(errs, l.Close())
		}
		if t.rd != nil {
			errs = append(errs, t.rd.Close())
		}
		t.coll.Close()
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// CheckSupport tells, without loading anything, whether Open can be
// expected to work here: effective root (or CAP_BPF and CAP_PERFMON),
// kernel BTF and a mounted tracefs. It returns the first missing piece.
func CheckSupport() error {
	if os.Geteuid() != 0 && !hasCaps() {
		return ErrNotPermitted
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return ErrNoBTF
	}
	if !tracefsMounted() {
		return ErrNoTracefs
	}
	return nil
}

// hasCaps reports whether CAP_BPF and CAP_PERFMON are both effective.
func hasCaps() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_BPF) && has(unix.CAP_PERFMON)
}
