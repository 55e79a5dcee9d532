package bpf

import (
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/arch/x86/x86asm"
)

// Go crypto/tls probes.
//
// A Go program links crypto/tls statically, so its plaintext is caught on
// the program's own file: an entry probe on crypto/tls.(*Conn).Read and
// .Write, and a plain uprobe on every RET instruction of those two
// functions. Never a uretprobe: it swaps the return address on the stack,
// and Go copies stacks when they grow and walks them for GC and
// tracebacks, which a foreign return address breaks. The RETs are found by
// decoding the function linearly from its entry to its end with the Go
// team's x86 decoder; a probe only ever lands on an instruction boundary
// that decoding confirmed, and a function with any undecodable byte makes
// the whole binary rejected. Function bounds come from the ELF symbol
// table, or from .gopclntab when the binary is stripped (-ldflags=-s -w
// removes .symtab and DWARF but not pclntab, which the runtime needs).
//
// The kernel side keys a call by goroutine (the g pointer in R14 under
// ABIInternal) and tgid, because a goroutine blocked in the netpoller may
// return on another thread. A Read's plaintext is copied at a RET (n in
// RAX); a Write's at its entry, so that it is in the ring before the peer
// can answer (apisonar.bpf.c says why), with the RET only checking n. An
// entry seen twice with the same arguments and no RET between is the
// stack-growth restart (morestack re-runs the function) and is ignored.
// The socket is found through the receiver: tls.Conn.conn (an interface
// holding a *net.TCPConn) -> net.conn.fd (*netFD) -> netFD.pfd.Sysfd, and
// checked against netFD.raddr's port. Those struct offsets are read from the
// binary's DWARF when it has any, otherwise from a table per Go version;
// a version before 1.17 (no register ABI) or missing from the table is
// rejected, never guessed. The offsets travel in each probe's BPF cookie,
// so one loaded program serves every binary and a process started after
// the attachment needs nothing from user space.

// Errors InspectGo returns. ErrNotGo and ErrNoGoTLS say the file is not
// a candidate; ErrGoUnsupported says it is one that cannot be probed
// safely (the error text says why).
var (
	ErrNotGo         = errors.New("not a Go binary")
	ErrNoGoTLS       = errors.New("Go binary without crypto/tls (*Conn).Read/Write")
	ErrGoUnsupported = errors.New("Go binary not supported")
)

// Go function names probed, as the symbol table and pclntab spell them.
const (
	goTLSRead  = "crypto/tls.(*Conn).Read"
	goTLSWrite = "crypto/tls.(*Conn).Write"
)

// goCookieMagic marks a cookie carrying offsets (bits 56-63); see the C.
const goCookieMagic = 0x60

// maxGoFuncSize bounds the code decoded per function; (*Conn).Read and
// .Write are a few hundred bytes.
const maxGoFuncSize = 64 << 10

// GoOffsets are the struct offsets the kernel side follows from a
// *tls.Conn to the socket's file descriptor.
//
// RAddr and Port let the kernel side check that the chain really led to a
// *net.TCPConn: the remote port Go recorded must be the socket's. Another
// concrete type in tls.Conn.conn (a wrapper, a unix socket, a pipe) then
// gives a mismatch and is skipped, not attributed to a wrong connection.
type GoOffsets struct {
	Conn  uint8 // tls.Conn.conn (interface; its data word is 8 further)
	FD    uint8 // net.TCPConn -> embedded net.conn -> fd (*netFD)
	Sysfd uint8 // netFD.pfd (poll.FD) + poll.FD.Sysfd
	RAddr uint8 // netFD.raddr (interface holding a *net.TCPAddr)
	Port  uint8 // net.TCPAddr.Port
}

func (o GoOffsets) cookie() uint64 {
	return uint64(goCookieMagic)<<56 | uint64(o.Port)<<32 | uint64(o.RAddr)<<24 |
		uint64(o.Sysfd)<<16 | uint64(o.FD)<<8 | uint64(o.Conn)
}

// goOffsetTable holds the layouts of released Go versions (amd64), by
// minor version, for binaries without DWARF. Every entry was checked
// against the DWARF of a binary of that version; TestGoOffsetsDWARFAgree
// keeps the current toolchain's entry honest.
var goOffsetTable = map[int]GoOffsets{
	17: go117, 18: go117, 19: go117, 20: go117, 21: go117,
	22: go117, 23: go117, 24: go117, 25: go117, 26: go117,
}

// go117 is the layout from Go 1.17 on: poll.FD starts with its 16-byte
// fdMutex, netFD with its 56-byte poll.FD, and TCPAddr with the IP slice.
var go117 = GoOffsets{Conn: 0, FD: 0, Sysfd: 16, RAddr: 112, Port: 24}

// GoFunc is one probed function.
type GoFunc struct {
	Name       string
	Entry, End uint64   // virtual addresses, End exclusive
	EntryOff   uint64   // file offset of the entry
	RetOffs    []uint64 // file offsets of its RET instructions
	Insns      int      // instructions decoded
}

// GoBinary is what InspectGo learnt about one executable.
type GoBinary struct {
	GoVersion   string // as debug/buildinfo reports it
	Minor       int    // 1.Minor
	Stripped    bool   // no symbol table: bounds from .gopclntab
	OffsetsFrom string // "dwarf" or "table"
	Offsets     GoOffsets
	Read, Write GoFunc
}

// InspectGo reads a Go executable and finds where and how to probe its
// crypto/tls. It never returns a probe location decoding did not confirm.
func InspectGo(path string) (bin *GoBinary, err error) {
	// debug/elf, debug/dwarf and debug/gosym read hostile input; a panic
	// in them must cost one skipped file, not the agent.
	defer func() {
		if r := recover(); r != nil {
			bin, err = nil, fmt.Errorf("%w: malformed binary: %v", ErrGoUnsupported, r)
		}
	}()
	r, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// buildinfo first: it is cheap and turns every non-Go file away.
	bi, err := buildinfo.Read(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotGo, err)
	}
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotGo, err)
	}
	b := &GoBinary{GoVersion: bi.GoVersion}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%w: %s is not amd64 (%v)", ErrGoUnsupported, bi.GoVersion, f.Machine)
	}
	minor, ok := goMinor(bi.GoVersion)
	if !ok {
		return nil, fmt.Errorf("%w: unknown Go version %q", ErrGoUnsupported, bi.GoVersion)
	}
	b.Minor = minor
	if minor < 17 {
		return nil, fmt.Errorf("%w: %s predates the register ABI (Go 1.17)", ErrGoUnsupported, bi.GoVersion)
	}

	read, write, stripped, err := goFuncBounds(f)
	if err != nil {
		return nil, err
	}
	b.Stripped = stripped
	for _, fn := range []*GoFunc{&read, &write} {
		if err := findRets(f, fn); err != nil {
			return nil, err
		}
	}
	b.Read, b.Write = read, write

	if d, err := f.DWARF(); err == nil {
		off, err := dwarfOffsets(d)
		if err == nil {
			b.Offsets, b.OffsetsFrom = off, "dwarf"
			return b, nil
		}
		if !errors.Is(err, errNoDWARFTypes) {
			return nil, err
		}
	}
	off, ok := goOffsetTable[minor]
	if !ok {
		return nil, fmt.Errorf("%w: no DWARF and no known struct layout for %s", ErrGoUnsupported, bi.GoVersion)
	}
	b.Offsets, b.OffsetsFrom = off, "table"
	return b, nil
}

// goMinor parses "go1.26.8", "go1.22rc1", "go1.26.8 X:nodwarf5".
func goMinor(v string) (int, bool) {
	v, ok := strings.CutPrefix(v, "go1.")
	if !ok {
		return 0, false
	}
	end := 0
	for end < len(v) && v[end] >= '0' && v[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(v[:end])
	return n, err == nil
}

// goFuncBounds finds (*Conn).Read and .Write in the symbol table, or in
// .gopclntab when there is none.
func goFuncBounds(f *elf.File) (read, write GoFunc, stripped bool, err error) {
	read.Name, write.Name = goTLSRead, goTLSWrite
	syms, serr := f.Symbols()
	if serr == nil {
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) != elf.STT_FUNC {
				continue
			}
			switch s.Name {
			case goTLSRead:
				read.Entry, read.End = s.Value, s.Value+s.Size
			case goTLSWrite:
				write.Entry, write.End = s.Value, s.Value+s.Size
			}
		}
	} else if !errors.Is(serr, elf.ErrNoSymbols) {
		return read, write, false, fmt.Errorf("%w: symbol table: %v", ErrGoUnsupported, serr)
	} else {
		stripped = true
		tab, err := pclnTable(f)
		if err != nil {
			return read, write, true, err
		}
		for _, fn := range []*GoFunc{&read, &write} {
			if g := tab.LookupFunc(fn.Name); g != nil {
				fn.Entry, fn.End = g.Entry, g.End
			}
		}
	}
	if read.Entry == 0 || write.Entry == 0 {
		return read, write, stripped, ErrNoGoTLS
	}
	return read, write, stripped, nil
}

func pclnTable(f *elf.File) (*gosym.Table, error) {
	sec := f.Section(".gopclntab")
	text := f.Section(".text")
	if sec == nil || text == nil {
		return nil, fmt.Errorf("%w: stripped and no .gopclntab", ErrGoUnsupported)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%w: read .gopclntab: %v", ErrGoUnsupported, err)
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return nil, fmt.Errorf("%w: parse .gopclntab: %v", ErrGoUnsupported, err)
	}
	return tab, nil
}

// findRets decodes fn from entry to end and records its RETs as file
// offsets.
func findRets(f *elf.File, fn *GoFunc) error {
	if fn.End <= fn.Entry || fn.End-fn.Entry > maxGoFuncSize {
		return fmt.Errorf("%w: %s has implausible bounds %#x-%#x", ErrGoUnsupported, fn.Name, fn.Entry, fn.End)
	}
	code, err := textBytes(f, fn.Entry, fn.End)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGoUnsupported, fn.Name, err)
	}
	rets, n, err := retOffsets(code)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGoUnsupported, fn.Name, err)
	}
	if len(rets) == 0 {
		return fmt.Errorf("%w: %s has no RET", ErrGoUnsupported, fn.Name)
	}
	fn.Insns = n
	base, err := fileOffset(f, fn.Entry)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGoUnsupported, fn.Name, err)
	}
	if _, err := fileOffset(f, fn.End-1); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGoUnsupported, fn.Name, err)
	}
	fn.EntryOff = base
	fn.RetOffs = fn.RetOffs[:0]
	for _, r := range rets {
		fn.RetOffs = append(fn.RetOffs, base+r)
	}
	return nil
}

// retOffsets decodes code linearly as 64-bit x86 and returns the offsets
// of its RET instructions and the number of instructions. Any byte that
// does not decode is an error: then no boundary after it can be trusted.
func retOffsets(code []byte) ([]uint64, int, error) {
	var rets []uint64
	n := 0
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Len <= 0 || off+inst.Len > len(code) {
			return nil, n, fmt.Errorf("undecodable instruction at +%#x: %v", off, err)
		}
		if inst.Op == 0 {
			// The decoder's answer for a prefix with nothing after it
			// (a truncated instruction): not a boundary to trust.
			return nil, n, fmt.Errorf("undecodable instruction at +%#x: lone prefix % x", off, code[off:off+inst.Len])
		}
		switch inst.Op {
		case x86asm.RET:
			rets = append(rets, uint64(off))
		case x86asm.LRET, x86asm.IRET, x86asm.IRETD, x86asm.IRETQ:
			// Not something Go emits: a sign the bytes are not what
			// we think they are.
			return nil, n, fmt.Errorf("unexpected %v at +%#x", inst.Op, off)
		}
		off += inst.Len
		n++
	}
	return rets, n, nil
}

// textBytes reads [start, end) from the executable section holding it.
func textBytes(f *elf.File, start, end uint64) ([]byte, error) {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_EXECINSTR == 0 {
			continue
		}
		if start >= s.Addr && end <= s.Addr+s.Size {
			buf := make([]byte, end-start)
			if _, err := s.ReadAt(buf, int64(start-s.Addr)); err != nil {
				return nil, err
			}
			return buf, nil
		}
	}
	return nil, fmt.Errorf("%#x-%#x is in no executable section", start, end)
}

// fileOffset maps a virtual address to its offset in the file through
// the executable PT_LOAD segment that holds it; uprobes take offsets.
func fileOffset(f *elf.File, addr uint64) (uint64, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 {
			continue
		}
		if addr >= p.Vaddr && addr < p.Vaddr+p.Filesz {
			return addr - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("address %#x is in no executable segment", addr)
}

var errNoDWARFTypes = errors.New("DWARF lacks the connection types")

// dwarfOffsets reads the struct layouts along tls.Conn -> fd from DWARF.
func dwarfOffsets(d *dwarf.Data) (GoOffsets, error) {
	type field struct{ typ, member string }
	want := map[field]int64{
		{"crypto/tls.Conn", "conn"}:   -1,
		{"net.TCPConn", "conn"}:       -1,
		{"net.conn", "fd"}:            -1,
		{"net.netFD", "pfd"}:          -1,
		{"internal/poll.FD", "Sysfd"}: -1,
		{"net.netFD", "raddr"}:        -1,
		{"net.TCPAddr", "Port"}:       -1,
	}
	structs := map[string]bool{}
	for k := range want {
		structs[k.typ] = true
	}
	sizes := map[field]int64{}
	left := len(structs)
	r := d.Reader()
	for left > 0 {
		e, err := r.Next()
		if err != nil {
			return GoOffsets{}, fmt.Errorf("%w: DWARF: %v", ErrGoUnsupported, err)
		}
		if e == nil {
			break
		}
		if e.Tag == dwarf.TagCompileUnit {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if e.Tag != dwarf.TagStructType || !structs[name] {
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		delete(structs, name)
		left--
		for e.Children {
			m, err := r.Next()
			if err != nil || m == nil {
				return GoOffsets{}, fmt.Errorf("%w: DWARF: truncated struct %s", ErrGoUnsupported, name)
			}
			if m.Tag == 0 {
				break
			}
			if m.Tag != dwarf.TagMember {
				if m.Children {
					r.SkipChildren()
				}
				continue
			}
			mname, _ := m.Val(dwarf.AttrName).(string)
			k := field{name, mname}
			if _, ok := want[k]; !ok {
				continue
			}
			loc, ok := m.Val(dwarf.AttrDataMemberLoc).(int64)
			if !ok {
				return GoOffsets{}, fmt.Errorf("%w: DWARF: no offset for %s.%s", ErrGoUnsupported, name, mname)
			}
			want[k] = loc
			if to, ok := m.Val(dwarf.AttrType).(dwarf.Offset); ok {
				if t, err := d.Type(to); err == nil {
					sizes[k] = t.Size()
				}
			}
		}
	}
	var missing []string
	for k, v := range want {
		if v < 0 {
			missing = append(missing, k.typ+"."+k.member)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return GoOffsets{}, fmt.Errorf("%w: %s", errNoDWARFTypes, strings.Join(missing, ", "))
	}
	// The shapes the kernel side relies on: an interface (two words), a
	// pointer and an int.
	if sizes[field{"crypto/tls.Conn", "conn"}] != 16 || sizes[field{"net.conn", "fd"}] != 8 ||
		sizes[field{"internal/poll.FD", "Sysfd"}] != 8 || sizes[field{"net.netFD", "raddr"}] != 16 ||
		sizes[field{"net.TCPAddr", "Port"}] != 8 {
		return GoOffsets{}, fmt.Errorf("%w: unexpected field sizes in DWARF %v", ErrGoUnsupported, sizes)
	}
	conn := want[field{"crypto/tls.Conn", "conn"}]
	fd := want[field{"net.TCPConn", "conn"}] + want[field{"net.conn", "fd"}]
	sysfd := want[field{"net.netFD", "pfd"}] + want[field{"internal/poll.FD", "Sysfd"}]
	raddr := want[field{"net.netFD", "raddr"}]
	port := want[field{"net.TCPAddr", "Port"}]
	for _, v := range []int64{conn, fd, sysfd, raddr, port} {
		if v > 0xff {
			return GoOffsets{}, fmt.Errorf("%w: offsets in DWARF beyond what the kernel side takes (%d, %d, %d, %d, %d)",
				ErrGoUnsupported, conn, fd, sysfd, raddr, port)
		}
	}
	o := GoOffsets{Conn: uint8(conn), FD: uint8(fd), Sysfd: uint8(sysfd), RAddr: uint8(raddr), Port: uint8(port)}
	return o, nil
}

// goLinks are the probes on one Go executable.
type goLinks struct {
	path  string
	bin   *GoBinary
	links []link.Link
}

// AttachGoTLS inspects the Go executable at path and puts the crypto/tls
// probes on it: entry probes on (*Conn).Read and .Write and a probe on
// each of their RETs. They fire in every process running that file, now
// or later. A file already attached is not attached again (fresh is then
// false). Errors wrapping ErrNotGo or ErrNoGoTLS mean the file is not a
// candidate; ErrGoUnsupported, a candidate that cannot be probed safely.
func (t *Tracer) AttachGoTLS(path string) (id FileID, bin *GoBinary, fresh bool, err error) {
	id, err = StatFile(path)
	if err != nil {
		return FileID{}, nil, false, fmt.Errorf("bpf: %w", err)
	}
	t.mu.Lock()
	l, ok := t.goUprobes[id]
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return id, nil, false, ErrClosed
	}
	if ok {
		return id, l.bin, false, nil
	}
	bin, err = InspectGo(path)
	if err != nil {
		return id, nil, false, fmt.Errorf("bpf: %s: %w", path, err)
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return id, bin, false, fmt.Errorf("bpf: open %s: %w", path, err)
	}
	cookie := bin.Offsets.cookie()
	l = &goLinks{path: path, bin: bin}
	probe := func(prog string, off uint64) error {
		pl, err := ex.Uprobe("go_crypto_tls", t.coll.Programs[prog], &link.UprobeOptions{Address: off, Cookie: cookie})
		if err != nil {
			return wrapPerm(fmt.Errorf("bpf: uprobe %s+%#x in %s: %w", prog, off, path, err))
		}
		l.links = append(l.links, pl)
		return nil
	}
	// RETs first: an entry whose return is not probed yet would leave a
	// call pending until its goroutine's next call.
	for _, fn := range []GoFunc{bin.Read, bin.Write} {
		for _, r := range fn.RetOffs {
			if err := probe(apisonarProgGoTlsRet, r); err != nil {
				closeLinks(l.links)
				return id, bin, false, err
			}
		}
	}
	if err := probe(apisonarProgGoTlsRead, bin.Read.EntryOff); err != nil {
		closeLinks(l.links)
		return id, bin, false, err
	}
	if err := probe(apisonarProgGoTlsWrite, bin.Write.EntryOff); err != nil {
		closeLinks(l.links)
		return id, bin, false, err
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.goUprobes[id]; dup || t.closed {
		// Attached concurrently, or closed meanwhile: keep one set.
		closeLinks(l.links)
		if t.closed {
			return id, bin, false, ErrClosed
		}
		return id, bin, false, nil
	}
	if t.goUprobes == nil {
		t.goUprobes = make(map[FileID]*goLinks)
	}
	t.goUprobes[id] = l
	t.log.Info("attached Go TLS probes", "path", path, "file", id.String(), "go", bin.GoVersion,
		"stripped", bin.Stripped, "offsets", bin.OffsetsFrom, "probes", len(l.links))
	return id, bin, true, nil
}

// DetachGoTLS removes the probes of one Go executable. Unknown ids are
// not an error.
func (t *Tracer) DetachGoTLS(id FileID) error {
	return detachFile(t, t.goUprobes, id, "detached Go TLS probes")
}

// GoTLSFiles lists the Go executables that have probes, sorted.
func (t *Tracer) GoTLSFiles() []FileID { return sortedFiles(t, t.goUprobes) }

func (t *Tracer) closeGoUprobes() error {
	t.mu.Lock()
	all := t.goUprobes
	t.goUprobes = nil
	t.mu.Unlock()
	return closeFiles(all)
}

func (l *goLinks) probePath() string       { return l.path }
func (l *goLinks) probeLinks() []link.Link { return l.links }
