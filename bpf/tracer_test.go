package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// requireBPF skips when the kernel side cannot be loaded here, except under
// CI=true where the machine is meant to support it and a skip would hide a
// failure.
func requireBPF(t *testing.T) {
	t.Helper()
	if err := CheckSupport(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("eBPF tests must run under CI=true: %v", err)
		}
		t.Skipf("eBPF not available: %v", err)
	}
}

// captured is a record that owns its payload.
type captured struct {
	Record
	payload []byte
}

func (c captured) String() string {
	return fmt.Sprintf("conn=%d kind=%d pid=%d comm=%s role=%s dir=%s %s->%s total=%d off=%d len=%d trunc=%v %.40q",
		c.ConnID, c.Kind, c.PID, c.CommBytes(), c.Role, c.Dir, c.Local, c.Remote, c.Total, c.Offset,
		len(c.payload), c.Truncated, c.payload)
}

// recorder opens a tracer and keeps every record it reads until stop.
type recorder struct {
	tr   *Tracer
	mu   sync.Mutex
	recs []captured
	done chan error
}

func record(t *testing.T, cfg Config) *recorder {
	t.Helper()
	requireBPF(t)
	tr, err := Open(cfg, nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	r := &recorder{tr: tr, done: make(chan error, 1)}
	go func() {
		var rec Record
		for {
			err := tr.Read(&rec)
			if errors.Is(err, ErrClosed) {
				r.done <- nil
				return
			}
			if err != nil {
				r.done <- err
				return
			}
			c := captured{Record: rec, payload: bytes.Clone(rec.Payload)}
			c.Payload = c.payload
			r.mu.Lock()
			r.recs = append(r.recs, c)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop lets the last records drain, detaches and returns what was read.
func (r *recorder) stop(t *testing.T) []captured {
	t.Helper()
	if r.tr == nil {
		return r.recs
	}
	time.Sleep(3 * r.tr.cfg.PollInterval)
	r.tr.Close()
	if err := <-r.done; err != nil {
		t.Errorf("read: %v", err)
	}
	r.tr = nil
	return r.recs
}

func (r *recorder) stats(t *testing.T) Stats {
	t.Helper()
	s, err := r.tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func byPID(recs []captured, pid int) []captured {
	var out []captured
	for _, c := range recs {
		if int(c.PID) == pid && c.Kind == KindData {
			out = append(out, c)
		}
	}
	return out
}

// stream concatenates the payload of one connection and direction.
func stream(recs []captured, conn uint64, dir Dir) []byte {
	var b []byte
	for _, c := range recs {
		if c.ConnID == conn && c.Dir == dir && c.Kind == KindData {
			b = append(b, c.payload...)
		}
	}
	return b
}

func freePort(t *testing.T, network, addr string) int {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitDial(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

// start runs a long-lived child process, killed at the end of the test.
func start(t *testing.T, dir string, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// pythonHTTP serves dir on 127.0.0.1 with python's http.server.
func pythonHTTP(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	port := freePort(t, "tcp4", "127.0.0.1:0")
	cmd := start(t, dir, "/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", fmt.Sprint(port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitDial(t, addr)
	return cmd, addr
}

// curl runs curl to completion and returns its pid.
func curl(t *testing.T, args ...string) int {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "-o", "/dev/null"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v: %s", args, err, out)
	}
	return cmd.ProcessState.Pid()
}

func TestCurlToPythonHTTPServer(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello, tracer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	server, addr := pythonHTTP(t, dir)
	r := record(t, Config{})
	client := curl(t, "http://"+addr+"/hello.txt")
	recs := r.stop(t)

	serverAddr := netip.MustParseAddrPort(addr)
	cl := byPID(recs, client)
	if len(cl) == 0 {
		t.Fatalf("no records from curl (pid %d); got %d records", client, len(recs))
	}
	req := cl[0]
	if req.Dir != Egress || req.Role != RoleClient || req.Proto != ProtoHTTP1 {
		t.Errorf("curl's first record: want egress client http1, got %v", req)
	}
	if string(req.CommBytes()) != "curl" {
		t.Errorf("comm: got %q, want curl", req.CommBytes())
	}
	if req.Remote != serverAddr || req.Local.Addr() != serverAddr.Addr() || req.Local.Port() == serverAddr.Port() {
		t.Errorf("curl's tuple: got %s -> %s, want an ephemeral port -> %s", req.Local, req.Remote, serverAddr)
	}
	if !bytes.HasPrefix(req.payload, []byte("GET /hello.txt HTTP/1.1\r\n")) {
		t.Errorf("curl's request: got %q", req.payload)
	}
	if resp := stream(recs, req.ConnID, Ingress); !bytes.HasPrefix(resp, []byte("HTTP/1.0 200 OK\r\n")) ||
		!bytes.HasSuffix(resp, []byte("hello, tracer\n")) {
		t.Errorf("curl's response stream: got %q", resp)
	}

	srv := byPID(recs, server.Process.Pid)
	var got *captured
	for i := range srv {
		if srv[i].Remote == req.Local {
			got = &srv[i]
			break
		}
	}
	if got == nil {
		t.Fatalf("no server-side record for the connection from %s; server records: %v", req.Local, srv)
	}
	if got.Role != RoleServer || got.Local != serverAddr || string(got.CommBytes()) != "python3" {
		t.Errorf("server's record: want server role on %s by python3, got %v", serverAddr, got)
	}
	if in := stream(recs, got.ConnID, Ingress); !bytes.HasPrefix(in, []byte("GET /hello.txt HTTP/1.1\r\n")) {
		t.Errorf("server's ingress stream: got %q", in)
	}
	if out := stream(recs, got.ConnID, Egress); !bytes.HasPrefix(out, []byte("HTTP/1.0 200 OK\r\n")) {
		t.Errorf("server's egress stream: got %q", out)
	}
	closed := map[uint64]bool{}
	for _, c := range recs {
		if c.Kind == KindClose {
			closed[c.ConnID] = true
		}
	}
	if !closed[req.ConnID] || !closed[got.ConnID] {
		t.Errorf("close records: client %v, server %v; want both", closed[req.ConnID], closed[got.ConnID])
	}
}

// A line protocol that is not HTTP: the connection is marked and nothing
// of it is copied.
func TestRawTCPEchoIsNotCopied(t *testing.T) {
	port := freePort(t, "tcp4", "127.0.0.1:0")
	echo := fmt.Sprintf(`
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen()
while True:
    c, _ = s.accept()
    while True:
        b = c.recv(4096)
        if not b: break
        c.sendall(b)
    c.close()
`, port)
	server := start(t, "", "/usr/bin/python3", "-c", echo)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitDial(t, addr)
	r := record(t, Config{})
	before := r.stats(t)

	client := exec.Command("/usr/bin/python3", "-c", fmt.Sprintf(`
import socket
c = socket.create_connection(("127.0.0.1", %d))
for i in range(5):
    c.sendall(b"HELO echo line %%d, nothing like a request line\n" %% i)
    c.recv(4096)
c.close()
`, port))
	if out, err := client.CombinedOutput(); err != nil {
		t.Fatalf("echo client: %v: %s", err, out)
	}
	after := r.stats(t)
	recs := r.stop(t)
	for _, pid := range []int{server.Process.Pid, client.ProcessState.Pid()} {
		if got := byPID(recs, pid); len(got) > 0 {
			t.Errorf("pid %d: %d records of a non-HTTP connection, first %v", pid, len(got), got[0])
		}
	}
	if after.NotHTTP-before.NotHTTP < 2 {
		t.Errorf("not-HTTP connections counted: %d, want both ends (2)", after.NotHTTP-before.NotHTTP)
	}
}

// The tracer never traces its own process: here a Go client in the test
// process talks to python; python's side is traced, ours is not.
func TestSelfIsNotTraced(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "self.txt"), []byte("self\n"), 0o644)
	server, addr := pythonHTTP(t, dir)
	r := record(t, Config{SelfPID: os.Getpid()})
	resp, err := http.Get("http://" + addr + "/self.txt")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	recs := r.stop(t)
	if own := byPID(recs, os.Getpid()); len(own) > 0 {
		t.Errorf("%d records of the tracer's own process, first %v", len(own), own[0])
	}
	var seen bool
	for _, c := range byPID(recs, server.Process.Pid) {
		if bytes.HasPrefix(c.payload, []byte("GET /self.txt ")) {
			seen = true
		}
	}
	if !seen {
		t.Errorf("the server side of the same request was not traced")
	}
}

// A request body written in one syscall larger than the cap: the first
// PayloadCap bytes arrive in chunks, the rest is announced as truncated.
func TestWriteBeyondCapIsTruncated(t *testing.T) {
	const capBytes = 8192
	server, addr := pythonHTTP(t, t.TempDir())
	_ = server
	r := record(t, Config{PayloadCap: capBytes})
	before := r.stats(t)

	// One write of headers+body from a raw client, so the syscall size is
	// known exactly.
	body := strings.Repeat("x", 100_000)
	msg := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", addr, len(body), body)
	client := exec.Command("/usr/bin/python3", "-c", fmt.Sprintf(`
import socket, sys
c = socket.create_connection(("127.0.0.1", %d))
c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
n = c.send(sys.stdin.buffer.read())
print(n)
c.recv(65536)
`, netip.MustParseAddrPort(addr).Port()))
	client.Stdin = strings.NewReader(msg)
	out, err := client.Output()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	var sent int
	fmt.Sscan(string(out), &sent)
	after := r.stats(t)
	recs := r.stop(t)

	var chunks []captured
	for _, c := range byPID(recs, client.ProcessState.Pid()) {
		if c.Dir == Egress {
			chunks = append(chunks, c)
		}
	}
	if len(chunks) == 0 {
		t.Fatal("no egress records from the client")
	}
	if int(chunks[0].Total) != sent || sent <= capBytes {
		t.Fatalf("first chunk: total %d, send() returned %d (want > cap %d)", chunks[0].Total, sent, capBytes)
	}
	var off uint32
	for i, c := range chunks {
		if c.Offset != off || len(c.payload) > ChunkSize {
			t.Fatalf("chunk %d: %v, want offset %d and at most %d bytes", i, c, off, ChunkSize)
		}
		off += uint32(len(c.payload))
		if c.Truncated {
			if off != capBytes || c.Missing() != sent-capBytes {
				t.Errorf("truncated at %d missing %d; want at %d missing %d", off, c.Missing(), capBytes, sent-capBytes)
			}
			break
		}
		if i == len(chunks)-1 {
			t.Errorf("no chunk flagged truncated: %v", chunks)
		}
	}
	if !bytes.Equal(stream(chunks, chunks[0].ConnID, Egress)[:capBytes], []byte(msg[:capBytes])) {
		t.Errorf("copied prefix differs from what was sent")
	}
	if after.Truncated <= before.Truncated || after.TruncatedBytes-before.TruncatedBytes < uint64(sent-capBytes) {
		t.Errorf("truncation counters: %+v -> %+v", before, after)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"cap_too_large":       {PayloadCap: MaxPayloadCap + 1},
		"ring_not_power_of_2": {RingBytes: 3 << 20},
		"ring_below_a_page":   {RingBytes: 1024},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Open(cfg, nil); err == nil {
				t.Fatal("Open accepted a bad config")
			}
		})
	}
}

// sgServer answers every connection with one fixed response after reading
// a request head, using plain recv and sendall.
const sgServer = `
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = c.recv(65536)
        if not b: break
        buf += b
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nscatter back")
    c.close()
`

// sgClient sends the request of argv[2] with the vectored syscalls named by
// argv[3] and reads the response with their receiving counterparts.
const sgClient = `
import ctypes, os, socket, sys
port, req, mode = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
RESP_LEN = 70
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
keep = []
def iovs(parts):
    arr = (iovec * len(parts))()
    for i, p in enumerate(parts):
        if p:
            b = ctypes.create_string_buffer(p, len(p)); keep.append(b)
            arr[i] = iovec(ctypes.cast(b, ctypes.c_void_p), len(p))
    keep.append(arr)
    return arr
c = socket.create_connection(("127.0.0.1", port))
fd = c.fileno()
got = b""
if mode == "writev_readv":
    os.writev(fd, [req[:7], b"", req[7:15], req[15:]])
    while len(got) < RESP_LEN:
        a, b = bytearray(10), bytearray(200)
        n = os.readv(fd, [a, b])
        if n == 0: break
        got += (bytes(a) + bytes(b))[:n]
elif mode == "sendmsg_recvmsg":
    c.sendmsg([req[:5], req[5:]])
    while len(got) < RESP_LEN:
        d, _, _, _ = c.recvmsg(4096)
        if not d: break
        got += d
elif mode == "sendmmsg_recvmmsg":
    msgs = (mmsghdr * 2)()
    for i, parts in enumerate([[req[:10], b"", req[10:20]], [req[20:]]]):
        msgs[i].hdr.iov = iovs(parts); msgs[i].hdr.iovlen = len(parts)
    if libc.sendmmsg(fd, msgs, 2, 0) != 2: sys.exit("sendmmsg")
    while len(got) < RESP_LEN:
        rm = (mmsghdr * 2)()
        bufs = [ctypes.create_string_buffer(4096) for _ in range(2)]
        for i in range(2):
            arr = (iovec * 1)(iovec(ctypes.cast(bufs[i], ctypes.c_void_p), 4096))
            keep.append(arr); rm[i].hdr.iov = arr; rm[i].hdr.iovlen = 1
        n = libc.recvmmsg(fd, rm, 2, 0x10000, None)  # MSG_WAITFORONE
        if n <= 0: break
        for i in range(n):
            got += bufs[i].raw[:rm[i].len]
elif mode == "tiny_iovecs":
    os.writev(fd, [req[i:i+1] for i in range(len(req))])
    while len(got) < RESP_LEN:
        d = c.recv(4096)
        if not d: break
        got += d
if len(got) != RESP_LEN: sys.exit("short response: %r" % got)
`

const sgResponse = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nscatter back"

// The vectored syscalls: what the client sent and received, reassembled
// from its records, must be exactly the bytes that moved.
func TestVectoredSyscalls(t *testing.T) {
	if len(sgResponse) != 70 {
		t.Fatalf("sgClient expects a 70-byte response, have %d", len(sgResponse))
	}
	port := freePort(t, "tcp4", "127.0.0.1:0")
	srv := start(t, "", "/usr/bin/python3", "-c", sgServer, fmt.Sprint(port))
	_ = srv
	waitDial(t, fmt.Sprintf("127.0.0.1:%d", port))

	tiny := "GET /tiny HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Pad: 0123456789\r\n", 6) + "\r\n"
	tests := []struct {
		mode, req string
		// copied is how much of the request is expected in the records;
		// the rest must be announced as missing.
		copied int
	}{
		{"writev_readv", "GET /writev HTTP/1.1\r\nHost: x\r\n\r\n", -1},
		{"sendmsg_recvmsg", "GET /sendmsg HTTP/1.1\r\nHost: x\r\n\r\n", -1},
		{"sendmmsg_recvmmsg", "GET /sendmmsg HTTP/1.1\r\nHost: x\r\n\r\n", -1},
		// One byte per iovec: each byte costs two loop steps, so the
		// step bound (128) stops the copy after 64 bytes.
		{"tiny_iovecs", tiny, 64},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			r := record(t, Config{})
			before := r.stats(t)
			pid, _ := runClient(t, "/usr/bin/python3", "-c", sgClient, fmt.Sprint(port), tc.req, tc.mode)
			after := r.stats(t)
			recs := byPID(r.stop(t), pid)
			if len(recs) == 0 {
				t.Fatal("no records from the client")
			}
			conn := recs[0].ConnID
			out, in := stream(recs, conn, Egress), stream(recs, conn, Ingress)
			if string(in) != sgResponse {
				t.Errorf("ingress: got %q, want %q", in, sgResponse)
			}
			if tc.copied < 0 {
				if string(out) != tc.req {
					t.Errorf("egress: got %q, want %q", out, tc.req)
				}
				return
			}
			if string(out) != tc.req[:tc.copied] {
				t.Errorf("egress: got %q, want the first %d bytes %q", out, tc.copied, tc.req[:tc.copied])
			}
			var missing int
			for _, c := range recs {
				if c.Dir == Egress {
					missing += c.Missing()
				}
			}
			if missing != len(tc.req)-tc.copied {
				t.Errorf("bytes announced missing: %d, want %d", missing, len(tc.req)-tc.copied)
			}
			if after.StepLimit <= before.StepLimit {
				t.Errorf("step limit counter did not move: %d -> %d", before.StepLimit, after.StepLimit)
			}
		})
	}
}

func runClient(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", name, err, out)
	}
	return cmd.ProcessState.Pid(), string(out)
}

// Read reuses the reader's buffer and the caller's Record: once warm it
// must not allocate per record. The ring is filled first so that every
// measured Read returns a record without waiting.
func TestReadDoesNotAllocateWarm(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644)
	_, addr := pythonHTTP(t, dir)
	requireBPF(t)
	tr, err := Open(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	urls := make([]string, 60)
	for i := range urls {
		urls[i] = "http://" + addr + "/a"
	}
	curl(t, urls...)
	time.Sleep(100 * time.Millisecond)

	var rec Record
	if err := tr.Read(&rec); err != nil {
		t.Fatal(err)
	}
	n := 0
	allocs := testing.AllocsPerRun(200, func() {
		if tr.Read(&rec) == nil {
			n++
		}
	})
	if n < 201 {
		t.Fatalf("only %d records were read; the measurement needs the ring full", n)
	}
	if allocs != 0 {
		t.Errorf("allocations per Read: %v, want 0", allocs)
	}
}

func BenchmarkRecordDecode(b *testing.B) {
	raw := make([]byte, headerSize+512)
	ev := (*apisonarEvent)(unsafe.Pointer(&raw[0]))
	ev.Kind, ev.Family, ev.Len, ev.Lport, ev.Rport = uint8(KindData), afInet6, 512, 8080, 51000
	ev.Laddr = [16]byte{15: 1}
	var rec Record
	b.ReportAllocs()
	for b.Loop() {
		if err := rec.decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecodeRejectsMalformedRecords(t *testing.T) {
	var rec Record
	if err := rec.decode(make([]byte, headerSize-1)); err == nil {
		t.Error("a record shorter than the header was accepted")
	}
	raw := make([]byte, headerSize+10)
	(*apisonarEvent)(unsafe.Pointer(&raw[0])).Len = 11
	if err := rec.decode(raw); err == nil {
		t.Error("a record claiming more payload than it has was accepted")
	}
	if headerSize != 104 {
		t.Errorf("header size %d, the C side's struct event is 104 bytes", headerSize)
	}
}

// FuzzRecordDecode: whatever the ring hands over, decode returns an error
// or a record whose payload lies inside the sample.
func FuzzRecordDecode(f *testing.F) {
	ok := make([]byte, headerSize+5)
	ok[36] = 5 // len
	f.Add(ok)
	f.Add(make([]byte, headerSize))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec Record
		if err := rec.decode(raw); err != nil {
			return
		}
		if len(rec.Payload) > len(raw)-headerSize || rec.Missing() < 0 {
			t.Fatalf("payload %d bytes from a %d-byte sample", len(rec.Payload), len(raw))
		}
	})
}

// The offsets below are struct event's, counted by hand from the C source;
// decode must agree with them, whatever bpf2go generated.
func TestDecodeFieldsAtCLayoutOffsets(t *testing.T) {
	raw := make([]byte, 104+4)
	le := binary.LittleEndian
	le.PutUint64(raw[0:], 42)                                                     // conn_id
	le.PutUint64(raw[8:], 1_000_000)                                              // ts_ns
	le.PutUint32(raw[16:], 300)                                                   // pid
	le.PutUint32(raw[20:], 301)                                                   // tid
	le.PutUint32(raw[24:], 7)                                                     // fd
	le.PutUint32(raw[28:], 10_000)                                                // total
	le.PutUint32(raw[32:], 4096)                                                  // offset
	le.PutUint32(raw[36:], 4)                                                     // len
	le.PutUint32(raw[40:], 9)                                                     // seq
	le.PutUint16(raw[44:], 8080)                                                  // lport
	le.PutUint16(raw[46:], 51000)                                                 // rport
	copy(raw[48:], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}) // laddr, v4-mapped
	copy(raw[64:], net.ParseIP("2001:db8::2").To16())                             // raddr
	copy(raw[80:], "nginx")                                                       // comm
	raw[96], raw[97], raw[98], raw[99], raw[100], raw[101] = 1, 2, 1, 1, 10, 1
	copy(raw[104:], "body")

	var r Record
	if err := r.decode(raw); err != nil {
		t.Fatal(err)
	}
	want := Record{
		Kind: KindData, ConnID: 42, Time: 1_000_000, PID: 300, TID: 301, FD: 7,
		Role: RoleServer, Dir: Ingress, Proto: ProtoHTTP1,
		Local:  netip.MustParseAddrPort("10.0.0.1:8080"),
		Remote: netip.MustParseAddrPort("[2001:db8::2]:51000"),
		Total:  10_000, Offset: 4096, Seq: 9, Truncated: true, Payload: []byte("body"),
	}
	copy(want.Comm[:], "nginx")
	if fmt.Sprintf("%+v", r) != fmt.Sprintf("%+v", want) {
		t.Errorf("decoded:\n%+v\nwant:\n%+v", r, want)
	}
	if r.Missing() != 10_000-4096-4 {
		t.Errorf("missing %d, want %d", r.Missing(), 10_000-4096-4)
	}
}

// An unprivileged user gets ErrNotPermitted, not a raw errno. The test
// binary re-runs itself as nobody to find out.
func TestOpenUnprivilegedIsNotPermitted(t *testing.T) {
	if os.Getenv("APISONAR_UNPRIVILEGED_CHILD") == "1" {
		_, err := Open(Config{}, nil)
		if !errors.Is(err, ErrNotPermitted) {
			fmt.Printf("want ErrNotPermitted, got %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("ok: %v\n", err)
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		// Already unprivileged: check directly.
		if _, err := Open(Config{}, nil); !errors.Is(err, ErrNotPermitted) {
			t.Fatalf("want ErrNotPermitted, got %v", err)
		}
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "apisonar-unpriv")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bpf.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestOpenUnprivilegedIsNotPermitted$")
	cmd.Env = append(os.Environ(), "APISONAR_UNPRIVILEGED_CHILD=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v: %s", err, out)
	}
	t.Logf("as nobody: %s", strings.TrimSpace(string(out)))
	if !strings.HasPrefix(string(out), "ok: ") {
		t.Errorf("as nobody: %s", out)
	}
}

// An exec yields an EXEC record with the new process's pid and name, and
// nothing else.
func TestExecRecord(t *testing.T) {
	r := record(t, Config{})
	before := r.stats(t)
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.ProcessState.Pid()
	after := r.stats(t)
	recs := r.stop(t)
	var got []captured
	for _, c := range recs {
		if c.Kind == KindExec && int(c.PID) == pid {
			got = append(got, c)
		}
		if c.Kind == KindExec && int(c.PID) == os.Getpid() {
			t.Errorf("exec record of the tracer's own process: %v", c)
		}
	}
	if len(got) != 1 {
		t.Fatalf("exec records of /bin/true (pid %d): %d, want 1; %d records in all", pid, len(got), len(recs))
	}
	c := got[0]
	if string(c.CommBytes()) != "true" || c.TID != uint32(pid) || c.Time == 0 || len(c.payload) != 0 ||
		c.ConnID != 0 || c.TLS || c.Truncated {
		t.Errorf("exec record: %v tid=%d time=%d", c, c.TID, c.Time)
	}
	if after.Execs <= before.Execs {
		t.Errorf("exec counter %d, was %d", after.Execs, before.Execs)
	}
}
