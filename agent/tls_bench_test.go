package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/apisonar/apisonar/bpf"
	"github.com/apisonar/apisonar/parser"
)

// benchAgent is the eBPF source with the real tracker and parsers,
// counting the calls it emits for the processes it watches.
type benchAgent struct {
	src    *EBPFSource
	cancel context.CancelFunc
	done   chan error
	pids   [2]atomic.Uint32
	calls  atomic.Int64
}

// watch sets the processes whose calls are counted.
func (a *benchAgent) watch(pids ...int) {
	for i := range a.pids {
		var p uint32
		if i < len(pids) {
			p = uint32(pids[i])
		}
		a.pids[i].Store(p)
	}
}

func openBenchAgent(b *testing.B, opts EBPFSourceOptions) *benchAgent {
	b.Helper()
	if err := bpf.CheckSupport(); err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatalf("eBPF benchmarks must run under CI=true: %v", err)
		}
		b.Skipf("eBPF not available: %v", err)
	}
	a := &benchAgent{done: make(chan error, 1)}
	var stats parser.Stats
	trk := NewTracker(TrackerOptions{}, NewParserFactory(parser.Options{}, &stats),
		parser.EmitFunc(func(c *parser.Call) {
			if c.Conn != nil && c.Conn.PID != 0 && (c.Conn.PID == a.pids[0].Load() || c.Conn.PID == a.pids[1].Load()) {
				a.calls.Add(1)
			}
		}))
	src, err := OpenEBPFSource(bpf.Config{}, trk, opts, nil)
	if err != nil {
		b.Fatalf("open eBPF source: %v", err)
	}
	a.src = src
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- src.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-a.done; err != nil {
			b.Errorf("source: %v", err)
		}
	})
	return a
}

// settle waits until the agent has emitted want calls, or its count has
// stood still for a second: the ring is drained on an interval.
func (a *benchAgent) settle(want int64) int64 {
	last, still := a.calls.Load(), time.Now()
	for {
		time.Sleep(20 * time.Millisecond)
		n := a.calls.Load()
		if n >= want || (n == last && time.Since(still) > time.Second) {
			return n
		}
		if n != last {
			last, still = n, time.Now()
		}
	}
}

// uprobeRuns sums the run counts and run times of the uprobe programs this
// process loaded (the tracer's TLS entry and return programs), as the
// kernel counts them while BPF statistics are enabled.
func uprobeRuns(b *testing.B) (uint64, time.Duration) {
	b.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Fatal(err)
	}
	var runs uint64
	var rt time.Duration
	seen := map[ebpf.ProgramID]bool{}
	for _, fd := range fds {
		if l, _ := os.Readlink("/proc/self/fd/" + fd.Name()); l != "anon_inode:bpf-prog" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		var id ebpf.ProgramID
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
				id = ebpf.ProgramID(n)
			}
		}
		if id == 0 || seen[id] {
			continue
		}
		seen[id] = true
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if p.Type() == ebpf.Kprobe {
			st, err := p.Stats()
			if err != nil {
				b.Fatalf("program %d stats: %v", id, err)
			}
			runs += st.RunCount
			rt += st.Runtime
		}
		p.Close()
	}
	return runs, rt
}

// cpuOf is the user and system CPU time a process has used so far.
func cpuOf(b *testing.B, pid int) time.Duration {
	b.Helper()
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command: state is field 3, utime 14,
	// stime 15 (clock ticks of 1/100 s on Linux).
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTLSNginxKeepAlive drives b.N HTTPS requests over one
// keep-alive connection from h2load to nginx on loopback, without the
// agent, with only its syscall tracepoints, and with its TLS probes too.
// An op is one request; ns/op includes starting h2load and one TLS
// handshake, the same in every case. Every case reports the CPU time of
// nginx and h2load per request (the traced processes' cost); with the
// agent also its own CPU time (this process), and with TLS probes, per
// request: uprobe program runs (entry and return, both processes) and
// their run time in BPF, TLS calls that returned plaintext (kernel
// counter) and calls the agent emitted for nginx and h2load (2: one from
// each side).
func BenchmarkTLSNginxKeepAlive(b *testing.B) {
	if _, err := exec.LookPath("h2load"); err != nil {
		b.Fatal("h2load (nghttp2-client) is not installed")
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "tlspeer"))
	if err != nil {
		b.Fatal(err)
	}
	// nginx and h2load run on their own copy of libssl, and the agent
	// probes only that copy and scans no processes: on a shared host,
	// other programs' TLS calls then neither run the probes counted here
	// nor add calls.
	libDir, lib := copyLibSSL(b)
	env := []string{"LD_LIBRARY_PATH=" + libDir}
	tlsOpts := TLSOptions{ProcRoot: b.TempDir(), SystemLibs: []string{lib}}
	ng, port := startNginxTLSEnv(b, env, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if got, err := libSSLMaps(ng); err != nil || !slices.Equal(got, []string{lib}) {
		b.Fatalf("nginx maps libssl %v (%v), want only the copy", got, err)
	}
	protos := []struct {
		name string
		args []string
	}{
		{"h1", []string{"--h1", fmt.Sprintf("https://127.0.0.1:%d/h1.txt", port)}},
		{"h2", []string{fmt.Sprintf("https://127.0.0.1:%d/h2.txt", port)}},
	}
	b.Run("agent=off", func(b *testing.B) {
		for _, p := range protos {
			b.Run(p.name, func(b *testing.B) { driveH2load(b, nil, env, ng, p.args) })
		}
	})
	// The syscall tracepoints alone: TLS connections are then ciphertext,
	// marked not interesting after their first bytes.
	b.Run("agent=on,tls=off", func(b *testing.B) {
		a := openBenchAgent(b, EBPFSourceOptions{DisableTLS: true, TLS: tlsOpts})
		for _, p := range protos {
			b.Run(p.name, func(b *testing.B) { driveH2load(b, a, env, ng, p.args) })
		}
	})
	b.Run("agent=on", func(b *testing.B) {
		a := openBenchAgent(b, EBPFSourceOptions{TLS: tlsOpts})
		// Counting costs a clock read per program run; it is on only
		// here, where programs run.
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			b.Fatalf("enable BPF statistics: %v", err)
		}
		defer stats.Close()
		for _, p := range protos {
			b.Run(p.name, func(b *testing.B) { driveH2load(b, a, env, ng, p.args) })
		}
	})
}

func driveH2load(b *testing.B, a *benchAgent, env []string, ng int, args []string) {
	b.Helper()
	n := b.N
	var (
		k0            bpf.Stats
		runs0, calls0 int64
		rt0           time.Duration
	)
	if a != nil {
		var err error
		if k0, err = a.src.tr.Stats(); err != nil {
			b.Fatal(err)
		}
		r, rt := uprobeRuns(b)
		runs0, rt0, calls0 = int64(r), rt, a.calls.Load()
	}
	ng0, self0 := cpuOf(b, ng), selfCPU()
	cmd := exec.Command("h2load", append([]string{"-n", fmt.Sprint(n), "-c", "1", "-m", "1"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if a != nil {
		a.watch(ng)
	}
	b.ResetTimer()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if a != nil {
		a.watch(ng, cmd.Process.Pid)
	}
	err := cmd.Wait()
	out := stdout.Bytes()
	b.StopTimer()
	if err != nil {
		b.Fatalf("h2load: %v\n%s", err, out)
	}
	checkH2load(b, string(out), n)
	per := func(v float64) float64 { return v / float64(n) }
	b.ReportMetric(per(float64(cpuOf(b, ng)-ng0)), "nginx-cpu-ns/op")
	b.ReportMetric(per(float64(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())), "h2load-cpu-ns/op")
	if a == nil {
		return
	}
	got := a.settle(calls0+2*int64(n)) - calls0
	k1, err := a.src.tr.Stats()
	if err != nil {
		b.Fatal(err)
	}
	runs1, rt1 := uprobeRuns(b)
	b.ReportMetric(per(float64(selfCPU()-self0)), "agent-cpu-ns/op")
	b.ReportMetric(per(float64(int64(runs1)-runs0)), "uprobe-runs/op")
	b.ReportMetric(per(float64(rt1-rt0)), "uprobe-bpf-ns/op")
	b.ReportMetric(per(float64(k1.TLSCalls-k0.TLSCalls)), "tls_calls/op")
	b.ReportMetric(per(float64(got)), "calls/op")
	if lost := k1.LostRecords - k0.LostRecords; lost > 0 {
		b.Logf("%d ring records lost", lost)
	}
}

// BenchmarkTLSScan100Procs times the attach manager's scan of /proc with
// 100 processes mapping one copy of libssl (as a hundred containers from
// one image would, though here without their own mount namespaces): the
// first scan attaches the file once, then each op is one steady-state
// scan.
func BenchmarkTLSScan100Procs(b *testing.B) {
	const procs = 100
	libDir, lib := copyLibSSL(b)
	id, err := bpf.StatFile(lib)
	if err != nil {
		b.Fatal(err)
	}
	peer, err := filepath.Abs(filepath.Join("testdata", "tlspeer", "peer.py"))
	if err != nil {
		b.Fatal(err)
	}
	// No periodic scan; the exec trigger may probe the copy as the
	// peers start, the benchmark's first scan otherwise.
	a := openBenchAgent(b, EBPFSourceOptions{TLS: TLSOptions{ScanInterval: time.Hour}})
	m, tr := a.src.TLS(), a.src.tr
	files0, st0 := tr.SSLFiles(), m.Stats()

	ready := make(chan error, procs)
	for range procs {
		cmd := exec.Command("/usr/bin/python3", peer, "idle")
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libDir)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { stdin.Close(); cmd.Wait() })
		go func() {
			l, err := bufio.NewReader(stdout).ReadString('\n')
			if err == nil && l != "ready\n" {
				err = fmt.Errorf("idle peer said %q", l)
			}
			if err == nil {
				var got []string
				got, err = libSSLMaps(cmd.Process.Pid)
				if err == nil && !slices.Equal(got, []string{lib}) {
					err = fmt.Errorf("peer %d maps libssl %v, want only the copy", cmd.Process.Pid, got)
				}
			}
			ready <- err
		}()
	}
	timeout := time.After(2 * time.Minute)
	for range procs {
		select {
		case err := <-ready:
			if err != nil {
				b.Fatal(err)
			}
		case <-timeout:
			b.Fatal("idle peers not ready after 2 minutes")
		}
	}

	start := time.Now()
	m.Scan()
	first := time.Since(start)
	st1 := m.Stats()
	if got := newFiles(files0, tr.SSLFiles()); !slices.Equal(got, []bpf.FileID{id}) {
		b.Fatalf("files probed by exec or scan: %v, want only the copy %v", got, id)
	}
	if n := st1.Attached - st0.Attached; n != 1 {
		b.Fatalf("attached %d files for %d processes sharing one, want 1", n, procs)
	}
	// The kernel installs a probe's breakpoints in every process mapping
	// the file: attach time grows with the processes, scan or not. Time
	// it alone, again on the shared copy, and on a copy nobody maps.
	if err := tr.DetachSSL(id); err != nil {
		b.Fatal(err)
	}
	attachShared := timeAttach(b, tr, lib)
	_, idle := copyLibSSL(b)
	attachIdle := timeAttach(b, tr, idle)
	idleID, err := bpf.StatFile(idle)
	if err != nil {
		b.Fatal(err)
	}
	if err := tr.DetachSSL(idleID); err != nil {
		b.Fatal(err)
	}

	for b.Loop() {
		m.Scan()
	}
	if st := m.Stats(); st.Attached != st1.Attached || st.Detached != st1.Detached {
		b.Fatalf("steady scans attached %d and detached %d files, want none",
			st.Attached-st1.Attached, st.Detached-st1.Detached)
	}
	b.ReportMetric(float64(first.Nanoseconds()), "first-scan-ns")
	b.ReportMetric(float64(attachShared.Nanoseconds()), "attach-mapped-ns")
	b.ReportMetric(float64(attachIdle.Nanoseconds()), "attach-unmapped-ns")
	b.ReportMetric(procs, "procs-on-copy")
}

// timeAttach times probing one libssl file that has no probes yet.
func timeAttach(b *testing.B, tr *bpf.Tracer, path string) time.Duration {
	b.Helper()
	start := time.Now()
	_, fresh, err := tr.AttachSSL(path)
	d := time.Since(start)
	if err != nil || !fresh {
		b.Fatalf("attach %s: fresh %v, %v", path, fresh, err)
	}
	return d
}
