package bpf

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// goTLSProgram uses crypto/tls's Conn.Read and Conn.Write; it is built by
// the tests with the test's own toolchain, so the functions inspected are
// real compiler output.
const goTLSProgram = `package main

import (
	"crypto/tls"
	"net"
	"os"
)

func main() {
	c, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		os.Exit(1)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	tc.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	b := make([]byte, 100)
	tc.Read(b)
}
`

const goHelloProgram = `package main

import "fmt"

func main() { fmt.Println("hello") }
`

// buildGo compiles src into a binary; ldflags may be empty.
func buildGo(t testing.TB, src, ldflags string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	args := []string{"build", "-o", bin}
	if ldflags != "" {
		args = append(args, "-ldflags="+ldflags)
	}
	cmd := exec.Command("go", append(args, "main.go")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GO111MODULE=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}

// objdumpRets lists the RET addresses go tool objdump prints for fn.
func objdumpRets(t *testing.T, bin, fn string) []uint64 {
	t.Helper()
	out, err := exec.Command("go", "tool", "objdump", "-s", "^"+regexp.QuoteMeta(fn)+"$", bin).Output()
	if err != nil {
		t.Fatalf("go tool objdump: %v", err)
	}
	var rets []uint64
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[len(f)-1] != "RET" {
			continue
		}
		a, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
		if err != nil {
			t.Fatalf("objdump line %q: %v", line, err)
		}
		rets = append(rets, a)
	}
	return rets
}

func retAddrs(fn GoFunc) []uint64 {
	var out []uint64
	for _, r := range fn.RetOffs {
		out = append(out, r-fn.EntryOff+fn.Entry)
	}
	return out
}

// The RETs found by linear decoding are those the Go toolchain's own
// disassembler lists, for both functions, and each is a 0xC3 byte in the
// file at the offset a probe would use.
func TestGoRetsOfRealFunctions(t *testing.T) {
	bin := buildGo(t, goTLSProgram, "")
	info, err := InspectGo(bin)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []GoFunc{info.Read, info.Write} {
		want := objdumpRets(t, bin, fn.Name)
		if len(want) == 0 {
			t.Fatalf("objdump shows no RET in %s", fn.Name)
		}
		if got := retAddrs(fn); !slices.Equal(got, want) {
			t.Errorf("%s: RETs at %#x, objdump says %#x", fn.Name, got, want)
		}
		for _, off := range fn.RetOffs {
			if data[off] != 0xc3 {
				t.Errorf("%s: byte at file offset %#x is %#x, not RET", fn.Name, off, data[off])
			}
		}
		t.Logf("%s: %d instructions, %d RETs", fn.Name, fn.Insns, len(fn.RetOffs))
	}
}

// A stripped build (no .symtab, no DWARF) is read from .gopclntab and the
// version table, and finds the same probe locations as the full build.
func TestGoStrippedMatchesSymbols(t *testing.T) {
	full, err := InspectGo(buildGo(t, goTLSProgram, ""))
	if err != nil {
		t.Fatal(err)
	}
	stripped, err := InspectGo(buildGo(t, goTLSProgram, "-s -w"))
	if err != nil {
		t.Fatal(err)
	}
	if full.Stripped || full.OffsetsFrom != "dwarf" {
		t.Errorf("full build: stripped=%v offsets from %q", full.Stripped, full.OffsetsFrom)
	}
	if !stripped.Stripped || stripped.OffsetsFrom != "table" {
		t.Errorf("stripped build: stripped=%v offsets from %q", stripped.Stripped, stripped.OffsetsFrom)
	}
	for _, p := range [][2]GoFunc{{full.Read, stripped.Read}, {full.Write, stripped.Write}} {
		if p[0].Entry != p[1].Entry || p[0].EntryOff != p[1].EntryOff || !slices.Equal(p[0].RetOffs, p[1].RetOffs) {
			t.Errorf("%s: symtab %#x %#x, pclntab %#x %#x", p[0].Name, p[0].Entry, p[0].RetOffs, p[1].Entry, p[1].RetOffs)
		}
	}
}

// The version table's entry for this toolchain is what DWARF says.
func TestGoOffsetsDWARFAgreeWithTable(t *testing.T) {
	info, err := InspectGo(buildGo(t, goTLSProgram, ""))
	if err != nil {
		t.Fatal(err)
	}
	if info.OffsetsFrom != "dwarf" {
		t.Fatalf("offsets from %q, want dwarf", info.OffsetsFrom)
	}
	table, ok := goOffsetTable[info.Minor]
	if !ok {
		t.Fatalf("no table entry for %s", info.GoVersion)
	}
	if info.Offsets != table {
		t.Errorf("%s: DWARF offsets %+v, table %+v", info.GoVersion, info.Offsets, table)
	}
}

func TestGoRetOffsetsRejectsUndecodable(t *testing.T) {
	// NOP; RET; PUSH ES (invalid in 64-bit mode); RET
	if _, _, err := retOffsets([]byte{0x90, 0xc3, 0x06, 0xc3}); err == nil {
		t.Error("undecodable byte accepted")
	}
	// A truncated instruction at the end: MOV RAX, imm64 cut short.
	if _, _, err := retOffsets([]byte{0xc3, 0x48, 0xb8, 0x01}); err == nil {
		t.Error("truncated instruction accepted")
	}
	// A far return is not Go code.
	if _, _, err := retOffsets([]byte{0x90, 0xcb}); err == nil {
		t.Error("LRET accepted")
	}
	// RET imm16 and RET are both returns; the bytes of an immediate that
	// happen to be 0xC3 are not.
	rets, n, err := retOffsets([]byte{0x48, 0xc7, 0xc0, 0xc3, 0, 0, 0, 0xc3, 0xc2, 0x08, 0x00})
	if err != nil || n != 3 || !slices.Equal(rets, []uint64{7, 8}) {
		t.Errorf("rets %v, %d instructions, err %v; want [7 8], 3", rets, n, err)
	}
}

// A binary whose (*Conn).Write has a byte that does not decode is
// rejected as a whole.
func TestGoInspectRejectsPatchedBinary(t *testing.T) {
	bin := buildGo(t, goTLSProgram, "")
	info, err := InspectGo(bin)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// The last RET of Write, so that decoding gets that far first.
	data[info.Write.RetOffs[len(info.Write.RetOffs)-1]] = 0x06
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectGo(bad); !errors.Is(err, ErrGoUnsupported) || !strings.Contains(err.Error(), "undecodable") {
		t.Errorf("patched binary: %v, want ErrGoUnsupported (undecodable)", err)
	}
}

func TestGoInspectNonCandidates(t *testing.T) {
	if _, err := InspectGo("/bin/sh"); !errors.Is(err, ErrNotGo) {
		t.Errorf("/bin/sh: %v, want ErrNotGo", err)
	}
	if _, err := InspectGo(buildGo(t, goHelloProgram, "")); !errors.Is(err, ErrNoGoTLS) {
		t.Errorf("hello world: %v, want ErrNoGoTLS", err)
	}
	f := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(f, []byte("\x7fELF but not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectGo(f); !errors.Is(err, ErrNotGo) {
		t.Errorf("garbage: %v, want ErrNotGo", err)
	}
	// Cut short and corrupted copies of a real one: an error, never a
	// panic, never a result.
	data, err := os.ReadFile(buildGo(t, goTLSProgram, "-s -w"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{len(data) / 2, len(data) - 4096} {
		if err := os.WriteFile(f, data[:cut], 0o755); err != nil {
			t.Fatal(err)
		}
		if info, err := InspectGo(f); err == nil {
			t.Errorf("binary cut at %d inspected: %+v", cut, info)
		}
	}
}

func TestGoMinor(t *testing.T) {
	for v, want := range map[string]int{"go1.26.8": 26, "go1.22rc1": 22, "go1.17": 17, "go1.26.8 X:nodwarf5": 26, "go1.9.7": 9} {
		if got, ok := goMinor(v); !ok || got != want {
			t.Errorf("goMinor(%q) = %d, %v; want %d", v, got, ok, want)
		}
	}
	for _, v := range []string{"devel +abc", "go2.0", "go1.", ""} {
		if _, ok := goMinor(v); ok {
			t.Errorf("goMinor(%q) accepted", v)
		}
	}
}

// Attaching puts a probe on each entry and each RET; rejected files get
// none. Attach time is logged for the record.
func TestAttachGoTLS(t *testing.T) {
	requireBPF(t)
	bin := buildGo(t, goTLSProgram, "")
	tr, err := Open(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	start := time.Now()
	id, info, fresh, err := tr.AttachGoTLS(bin)
	took := time.Since(start)
	if err != nil || !fresh {
		t.Fatalf("attach: fresh=%v err=%v", fresh, err)
	}
	n := 2 + len(info.Read.RetOffs) + len(info.Write.RetOffs)
	t.Logf("attached %d probes in %v", n, took)
	tr.mu.Lock()
	got := len(tr.goUprobes[id].links)
	tr.mu.Unlock()
	if got != n {
		t.Errorf("%d probes, want %d", got, n)
	}
	if _, _, fresh, err := tr.AttachGoTLS(bin); err != nil || fresh {
		t.Errorf("second attach: fresh=%v err=%v", fresh, err)
	}
	if _, _, _, err := tr.AttachGoTLS("/bin/sh"); !errors.Is(err, ErrNotGo) {
		t.Errorf("/bin/sh: %v", err)
	}
	if files := tr.GoTLSFiles(); !slices.Equal(files, []FileID{id}) {
		t.Errorf("files %v, want [%v]", files, id)
	}
	if err := tr.DetachGoTLS(id); err != nil {
		t.Fatal(err)
	}
	if files := tr.GoTLSFiles(); len(files) != 0 {
		t.Errorf("files after detach: %v", files)
	}
}

// BenchmarkInspectGo measures reading a Go binary's probe locations and
// offsets (DWARF), the bulk of attach time.
func BenchmarkInspectGo(b *testing.B) {
	bin := buildGo(b, goTLSProgram, "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := InspectGo(bin); err != nil {
			b.Fatal(err)
		}
	}
}
