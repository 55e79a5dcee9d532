package agent

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apisonar/apisonar/bpf"
	"github.com/apisonar/apisonar/parser"
)

func tlsPeerFile(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "tlspeer", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsCall is what a decrypted call must show.
type tlsCall struct {
	pid    int
	side   parser.Side
	method string
	path   string
	status int
}

func (w tlsCall) String() string {
	return fmt.Sprintf("pid %d side %d %s %s -> %d", w.pid, w.side, w.method, w.path, w.status)
}

// checkTLSCalls asserts that every wanted call was reported exactly once
// (not also from the ciphertext), marked TLS, and that the processes in
// pids reported nothing else.
func checkTLSCalls(t *testing.T, calls []*parser.Call, pids []int, wants []tlsCall) {
	t.Helper()
	of := map[int]bool{}
	for _, p := range pids {
		of[p] = true
	}
	got := map[tlsCall]int{}
	for _, c := range calls {
		if c.Conn == nil || !of[int(c.Conn.PID)] {
			continue
		}
		k := tlsCall{int(c.Conn.PID), c.Conn.Side, string(c.Method), string(c.Path), c.Status}
		got[k]++
		if !c.Conn.TLS {
			t.Errorf("call not marked TLS: %v", k)
		}
	}
	for _, w := range wants {
		if got[w] != 1 {
			t.Errorf("call %v reported %d times, want once", w, got[w])
		}
		delete(got, w)
	}
	var extra []string
	for k, n := range got {
		extra = append(extra, fmt.Sprintf("%v (x%d)", k, n))
	}
	sort.Strings(extra)
	for _, e := range extra {
		t.Errorf("unexpected call %s", e)
	}
	if t.Failed() {
		for _, c := range calls {
			if c.Conn != nil && of[int(c.Conn.PID)] {
				t.Logf("seen: pid %d comm %s side %d tls %v proto %v %s %s -> %d flags %#x", c.Conn.PID, c.Conn.Comm,
					c.Conn.Side, c.Conn.TLS, c.Protocol, c.Method, c.Path, c.Status, c.Flags)
			}
		}
	}
}

// runOut runs a peer to completion with extra environment and returns its
// pid and stdout; a non-zero exit fails the test.
func runOut(t *testing.T, env []string, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v (%s)", name, args, err, out)
	}
	return cmd.ProcessState.Pid(), string(out)
}

// pythonTLSServer starts the python peer's HTTPS server and returns it and
// its port.
func pythonTLSServer(t *testing.T, env []string) (*child, string) {
	t.Helper()
	c := spawnEnv(t, env, "/usr/bin/python3", tlsPeerFile(t, "peer.py"), "server",
		tlsPeerFile(t, "cert.pem"), tlsPeerFile(t, "key.pem"))
	port := c.line(t)
	waitListen(t, "127.0.0.1:"+port)
	return c, port
}

// spawnEnv is spawn with extra environment variables.
func spawnEnv(t *testing.T, env []string, name string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &child{cmd: cmd, out: bufio.NewReader(stdout), stdin: stdin}
}

func TestLiveTLSOpenSSLPeers(t *testing.T) {
	cert, key := tlsPeerFile(t, "cert.pem"), tlsPeerFile(t, "key.pem")

	t.Run("curl to openssl s_server", func(t *testing.T) {
		a := startAgentWith(t, EBPFSourceOptions{})
		port := pickPort(t)
		srv := spawn(t, "openssl", "s_server", "-quiet", "-www", "-accept", fmt.Sprint(port), "-cert", cert, "-key", key)
		waitListen(t, fmt.Sprintf("127.0.0.1:%d", port))
		pid, out := runOut(t, nil, "curl", "-sS", "--http1.1", "--cacert", cert,
			fmt.Sprintf("https://127.0.0.1:%d/s-server/page", port))
		if !strings.Contains(out, "<HTML>") && !strings.Contains(out, "<pre>") {
			t.Errorf("curl's output through the probes: %.200q", out)
		}
		// s_server's own plaintext goes through a BIO_f_ssl, which calls
		// OpenSSL's internal functions, not the probed entry points: only
		// curl's side is seen, and s_server's ciphertext must not be.
		checkTLSCalls(t, a.stop(t), []int{pid, srv.pid()}, []tlsCall{
			{pid, parser.SideClient, "GET", "/s-server/page", 200},
		})
	})

	t.Run("python ssl server and client", func(t *testing.T) {
		a := startAgentWith(t, EBPFSourceOptions{})
		srv, port := pythonTLSServer(t, nil)
		pid, out := runOut(t, nil, "/usr/bin/python3", tlsPeerFile(t, "peer.py"), "client", cert, port,
			"/py/one", "/py/two", "/missing")
		if out != "200 hi one\n200 hi two\n404 no\n" {
			t.Errorf("python client output: %q", out)
		}
		calls := a.stop(t)
		checkTLSCalls(t, calls, []int{pid, srv.pid()}, []tlsCall{
			{pid, parser.SideClient, "GET", "/py/one", 200},
			{pid, parser.SideClient, "GET", "/py/two", 200},
			{pid, parser.SideClient, "GET", "/missing", 404},
			{srv.pid(), parser.SideServer, "GET", "/py/one", 200},
			{srv.pid(), parser.SideServer, "GET", "/py/two", 200},
			{srv.pid(), parser.SideServer, "GET", "/missing", 404},
		})
	})

	t.Run("nginx h1 and h2 with curl and nghttp", func(t *testing.T) {
		a := startAgentWith(t, EBPFSourceOptions{})
		ng, port := startNginxTLS(t, cert, key)
		c1, out1 := runOut(t, nil, "curl", "-sS", "--http1.1", "--cacert", cert,
			fmt.Sprintf("https://127.0.0.1:%d/h1.txt", port))
		c2, out2 := runOut(t, nil, "curl", "-sS", "--http2", "--cacert", cert,
			fmt.Sprintf("https://127.0.0.1:%d/h2.txt", port))
		c3, out3 := runOut(t, nil, "nghttp", "-n", "-s", fmt.Sprintf("https://127.0.0.1:%d/nghttp.txt", port))
		if out1 != "file h1.txt\n" || out2 != "file h2.txt\n" {
			t.Errorf("curl outputs: %q %q", out1, out2)
		}
		if !strings.Contains(out3, "/nghttp.txt") {
			t.Errorf("nghttp stats output: %q", out3)
		}
		calls := a.stop(t)
		checkTLSCalls(t, calls, []int{c1, c2, c3, ng}, []tlsCall{
			{c1, parser.SideClient, "GET", "/h1.txt", 200},
			{c2, parser.SideClient, "GET", "/h2.txt", 200},
			{c3, parser.SideClient, "GET", "/nghttp.txt", 200},
			{ng, parser.SideServer, "GET", "/h1.txt", 200},
			{ng, parser.SideServer, "GET", "/h2.txt", 200},
			{ng, parser.SideServer, "GET", "/nghttp.txt", 200},
		})
		var h2 int
		for _, c := range calls {
			if c.Conn != nil && int(c.Conn.PID) == ng && c.Protocol == parser.ProtoHTTP2 {
				h2++
			}
		}
		if h2 != 2 {
			t.Errorf("nginx calls over HTTP/2: %d, want 2 (curl --http2 and nghttp, via ALPN)", h2)
		}
	})
}

// startNginxTLS runs nginx in one process (no workers, so calls carry the
// pid we started) serving three small files over TLS with HTTP/2 by ALPN.
func startNginxTLS(t testing.TB, cert, key string) (int, int) {
	t.Helper()
	return startNginxTLSEnv(t, nil, cert, key)
}

// startNginxTLSEnv is startNginxTLS with extra environment variables.
func startNginxTLSEnv(t testing.TB, env []string, cert, key string) (int, int) {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nginx is not installed")
		}
		t.Skip("nginx is not installed")
	}
	dir := t.TempDir()
	www := filepath.Join(dir, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"h1.txt", "h2.txt", "nghttp.txt"} {
		if err := os.WriteFile(filepath.Join(www, f), []byte("file "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := pickPort(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
	access_log off;
	keepalive_requests 100000000;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
	server {
		listen 127.0.0.1:%[2]d ssl http2;
		ssl_certificate %[3]s;
		ssl_certificate_key %[4]s;
		root %[5]s;
	}
}
`, dir, port, cert, key, www)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nginx", "-c", cf, "-p", dir)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListen(t, fmt.Sprintf("127.0.0.1:%d", port))
	return cmd.Process.Pid, port
}

// tlsSized is a call and the body sizes it must report.
type tlsSized struct {
	call      tlsCall
	req, resp int64
}

// checkTLSSizes asserts the request and response body sizes of calls that
// checkTLSCalls found once each.
func checkTLSSizes(t *testing.T, calls []*parser.Call, wants []tlsSized) {
	t.Helper()
	for _, w := range wants {
		for _, c := range calls {
			if c.Conn == nil || int(c.Conn.PID) != w.call.pid || c.Conn.Side != w.call.side ||
				string(c.Method) != w.call.method || string(c.Path) != w.call.path || c.Status != w.call.status {
				continue
			}
			if c.ReqBytes != w.req || c.RespBytes != w.resp {
				t.Errorf("call %v: request %d, response %d body bytes; want %d, %d", w.call, c.ReqBytes, c.RespBytes, w.req, w.resp)
			}
		}
	}
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyLibSSL copies the system libssl.so.3 and libcrypto.so.3 into a new
// directory, as a container image holds its own: the same code at another
// path, in another inode. It returns the directory and the libssl copy.
func copyLibSSL(t testing.TB) (string, string) {
	t.Helper()
	var sys string
	for _, p := range DefaultSystemLibs {
		if strings.HasSuffix(p, "libssl.so.3") {
			if _, err := os.Stat(p); err == nil {
				sys = p
				break
			}
		}
	}
	if sys == "" {
		t.Fatal("no system libssl.so.3 to copy")
	}
	dir := t.TempDir()
	for _, name := range []string{"libssl.so.3", "libcrypto.so.3"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(sys), name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, filepath.Join(dir, "libssl.so.3")
}

// mappedLibSSL lists the libssl files a process maps.
func mappedLibSSL(t testing.TB, pid int) []string {
	t.Helper()
	libs, err := libSSLMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	return libs
}

func libSSLMaps(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 6 && isLibSSL(f[5]) {
			seen[f[5]] = true
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// newFiles returns the files in after and not in before.
func newFiles(before, after []bpf.FileID) []bpf.FileID {
	var out []bpf.FileID
	for _, id := range after {
		if !slices.Contains(before, id) {
			out = append(out, id)
		}
	}
	return out
}

// TestLiveTLSLateAndKeepAlive covers peers that start after the agent (the
// system libssl, probed at start, must cover them without a scan) and
// several requests on one TLS connection, one after another and
// pipelined, each reported once with its own sizes and status.
func TestLiveTLSLateAndKeepAlive(t *testing.T) {
	cert := tlsPeerFile(t, "cert.pem")
	peer := tlsPeerFile(t, "peer.py")

	t.Run("python peers started after the agent and a scan", func(t *testing.T) {
		a := startAgentWith(t, EBPFSourceOptions{})
		m := a.src.TLS()
		first := m.Stats().Scans
		waitFor(t, time.Minute, "a periodic scan", func() bool { return m.Stats().Scans > first })
		srv, port := pythonTLSServer(t, nil)
		pid, out := runOut(t, nil, "/usr/bin/python3", peer, "client", cert, port, "/py/late", "/later")
		if out != "200 hi late\n404 no\n" {
			t.Errorf("python client output: %q", out)
		}
		checkTLSCalls(t, a.stop(t), []int{pid, srv.pid()}, []tlsCall{
			{pid, parser.SideClient, "GET", "/py/late", 200},
			{pid, parser.SideClient, "GET", "/later", 404},
			{srv.pid(), parser.SideServer, "GET", "/py/late", 200},
			{srv.pid(), parser.SideServer, "GET", "/later", 404},
		})
	})

	t.Run("keep-alive and pipelined requests on one TLS connection", func(t *testing.T) {
		a := startAgentWith(t, EBPFSourceOptions{})
		srv, port := pythonTLSServer(t, nil)
		ka, kaOut := runOut(t, nil, "/usr/bin/python3", peer, "client", cert, port,
			"/py/one", "post:/up-ka:1000", "/py/three-longer", "/missing")
		if kaOut != "200 hi one\n201 got 1000\n200 hi three-longer\n404 no\n" {
			t.Errorf("keep-alive client output: %q", kaOut)
		}
		pl, plOut := runOut(t, nil, "/usr/bin/python3", peer, "pipeline", cert, port,
			"/py/p1", "post:/up-pl:300", "/py/p3", "/nope")
		if plOut != "200 hi p1\n201 got 300\n200 hi p3\n404 no\n" {
			t.Errorf("pipelining client output: %q", plOut)
		}
		calls := a.stop(t)
		var sized []tlsSized
		for _, side := range []struct {
			ka, pl int
			side   parser.Side
		}{{ka, pl, parser.SideClient}, {srv.pid(), srv.pid(), parser.SideServer}} {
			sized = append(sized,
				tlsSized{tlsCall{side.ka, side.side, "GET", "/py/one", 200}, 0, 6},
				tlsSized{tlsCall{side.ka, side.side, "POST", "/up-ka", 201}, 1000, 8},
				tlsSized{tlsCall{side.ka, side.side, "GET", "/py/three-longer", 200}, 0, 15},
				tlsSized{tlsCall{side.ka, side.side, "GET", "/missing", 404}, 0, 2},
				tlsSized{tlsCall{side.pl, side.side, "GET", "/py/p1", 200}, 0, 5},
				tlsSized{tlsCall{side.pl, side.side, "POST", "/up-pl", 201}, 300, 7},
				tlsSized{tlsCall{side.pl, side.side, "GET", "/py/p3", 200}, 0, 5},
				tlsSized{tlsCall{side.pl, side.side, "GET", "/nope", 404}, 0, 2},
			)
		}
		var wants []tlsCall
		for _, s := range sized {
			wants = append(wants, s.call)
		}
		checkTLSCalls(t, calls, []int{ka, pl, srv.pid()}, wants)
		checkTLSSizes(t, calls, sized)
		// Each client used one connection for all its requests.
		for _, pid := range []int{ka, pl} {
			conns := map[netip.AddrPort]bool{}
			for _, c := range callsOf(calls, pid, nil) {
				conns[c.Conn.Client] = true
			}
			if len(conns) != 1 {
				t.Errorf("client %d: calls on %d connections, want 1", pid, len(conns))
			}
		}
	})
}

// TestLiveTLSLibraryCopy runs a client on its own copy of libssl, as a
// container would: the manager must find it by scanning, probe it, see
// its calls, and drop it once no process maps it.
func TestLiveTLSLibraryCopy(t *testing.T) {
	cert := tlsPeerFile(t, "cert.pem")
	dir, lib := copyLibSSL(t)
	id, err := bpf.StatFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	a := startAgentWith(t, EBPFSourceOptions{})
	m, tr := a.src.TLS(), a.src.tr
	before := m.Stats()
	if slices.Contains(tr.SSLFiles(), id) {
		t.Fatal("the copy is probed before any process maps it")
	}
	srv, port := pythonTLSServer(t, nil)
	cli := spawnEnv(t, []string{"LD_LIBRARY_PATH=" + dir}, "/usr/bin/python3", tlsPeerFile(t, "peer.py"),
		"hold", cert, port, "/py/copy", "/py/copy-again")
	if l := cli.line(t); l != "ready" {
		t.Fatalf("client said %q", l)
	}
	if got := mappedLibSSL(t, cli.pid()); len(got) != 1 || got[0] != lib {
		t.Fatalf("client maps libssl %v, want only the copy %s", got, lib)
	}
	waitFor(t, time.Minute, "the manager to probe the copy", func() bool { return slices.Contains(tr.SSLFiles(), id) })
	if st := m.Stats(); st.Attached <= before.Attached {
		t.Errorf("attached counter %d, was %d before the copy was probed", st.Attached, before.Attached)
	}

	fmt.Fprintln(cli.stdin, "go")
	if l1, l2 := cli.line(t), cli.line(t); l1 != "200 hi copy" || l2 != "200 hi copy-again" {
		t.Errorf("client output %q, %q", l1, l2)
	}
	if err := cli.cmd.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}
	waitFor(t, time.Minute, "the manager to drop the copy", func() bool {
		return !slices.Contains(tr.SSLFiles(), id) && m.Stats().Detached > before.Detached
	})

	checkTLSCalls(t, a.stop(t), []int{cli.pid(), srv.pid()}, []tlsCall{
		{cli.pid(), parser.SideClient, "GET", "/py/copy", 200},
		{cli.pid(), parser.SideClient, "GET", "/py/copy-again", 200},
		{srv.pid(), parser.SideServer, "GET", "/py/copy", 200},
		{srv.pid(), parser.SideServer, "GET", "/py/copy-again", 200},
	})
}

// TestLiveTLSSharedLibraryAttachedOnce starts many processes on one copy
// of libssl: the file is probed once, not once per process, whether their
// exec events or a scan find it first.
func TestLiveTLSSharedLibraryAttachedOnce(t *testing.T) {
	const procs = 20
	dir, lib := copyLibSSL(t)
	id, err := bpf.StatFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	// No periodic scan: the test's own scans and the exec events are the
	// only triggers.
	a := startAgentWith(t, EBPFSourceOptions{TLS: TLSOptions{ScanInterval: time.Hour}})
	m, tr := a.src.TLS(), a.src.tr
	files0, st0 := tr.SSLFiles(), m.Stats()
	var kids []*child
	for range procs {
		kids = append(kids, spawnEnv(t, []string{"LD_LIBRARY_PATH=" + dir}, "/usr/bin/python3", tlsPeerFile(t, "peer.py"), "idle"))
	}
	for _, k := range kids {
		if l := k.line(t); l != "ready" {
			t.Fatalf("idle peer said %q", l)
		}
		if got := mappedLibSSL(t, k.pid()); len(got) != 1 || got[0] != lib {
			t.Fatalf("peer %d maps libssl %v, want only the copy", k.pid(), got)
		}
	}
	m.Scan()
	files1, st1 := tr.SSLFiles(), m.Stats()
	if got := newFiles(files0, files1); !slices.Equal(got, []bpf.FileID{id}) {
		t.Errorf("files probed: %v, want only the copy %v", got, id)
	}
	if n := st1.Attached - st0.Attached; n != 1 {
		t.Errorf("attached %d files for %d processes sharing one, want 1 (%d on exec)", n, procs,
			st1.ExecAttached-st0.ExecAttached)
	}
	m.Scan()
	if st2 := m.Stats(); st2.Attached != st1.Attached {
		t.Errorf("a second scan attached %d more", st2.Attached-st1.Attached)
	}
	t.Logf("%d processes: %d of %d exec events probed a file; two scans took %v together",
		procs, st1.ExecAttached-st0.ExecAttached, st1.ExecEvents-st0.ExecEvents,
		time.Duration(m.Stats().ScanNanos-st0.ScanNanos))

	for _, k := range kids {
		k.stdin.Close()
	}
	for _, k := range kids {
		if err := k.cmd.Wait(); err != nil {
			t.Fatalf("idle peer: %v", err)
		}
	}
	m.Scan()
	if slices.Contains(tr.SSLFiles(), id) {
		t.Error("the copy is still probed after every process using it exited")
	}
	if st := m.Stats(); st.Detached != st1.Detached+1 {
		t.Errorf("detached %d files after the peers exited, want 1", st.Detached-st1.Detached)
	}
}

// countTLSCalls checks that pid reported exactly n calls from side, every
// one a TLS GET of path answered 200 with a body of respBytes over proto.
func countTLSCalls(t *testing.T, calls []*parser.Call, pid int, side parser.Side, proto parser.Protocol, path string, respBytes int64, n int) {
	t.Helper()
	var good int
	bad := map[string]int{}
	for _, c := range callsOf(calls, pid, nil) {
		if c.Conn.Side == side && c.Conn.TLS && c.Protocol == proto && string(c.Method) == "GET" &&
			string(c.Path) == path && c.Status == 200 && c.RespBytes == respBytes {
			good++
			continue
		}
		bad[fmt.Sprintf("side %v tls %v proto %v %s %s -> %d (%d bytes) flags %#x", c.Conn.Side, c.Conn.TLS,
			c.Protocol, c.Method, c.Path, c.Status, c.RespBytes, c.Flags)]++
	}
	if good != n || len(bad) > 0 {
		t.Errorf("pid %d (%v side): %d calls as expected, want %d; others: %v", pid, side, good, n, bad)
	}
}

// logKernelCounters shows what the kernel side counted, for a failed
// count.
func logKernelCounters(t *testing.T, a *liveAgent) {
	t.Helper()
	if !t.Failed() {
		return
	}
	cs := a.src.Counters()
	keys := make([]string, 0, len(cs))
	for k := range cs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%s = %d", k, cs[k])
	}
}

var h2loadDone = regexp.MustCompile(`requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored`)
var h2loadStatus = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)

// checkH2load asserts that h2load made n requests and every one got a 2xx.
func checkH2load(t testing.TB, out string, n int) {
	t.Helper()
	d, s := h2loadDone.FindStringSubmatch(out), h2loadStatus.FindStringSubmatch(out)
	want := fmt.Sprint(n)
	if d == nil || s == nil || d[1] != want || d[2] != want || d[3] != want || d[4] != "0" || d[5] != "0" ||
		s[1] != want || s[2] != "0" || s[3] != "0" || s[4] != "0" {
		t.Fatalf("h2load did not get %d good responses:\n%s", n, out)
	}
}

// TestLiveTLSUnderLoad drives nginx over TLS hard enough that the probes
// run thousands of times a second: every response must still be right,
// and the agent must report each call exactly once from each side.
func TestLiveTLSUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("h2load"); err != nil {
		t.Fatal("h2load (nghttp2-client) is not installed")
	}
	cert, key := tlsPeerFile(t, "cert.pem"), tlsPeerFile(t, "key.pem")

	t.Run("h2load over HTTP/2, 5000 requests on 10 connections", func(t *testing.T) {
		const n = 5000
		a := startAgentWith(t, EBPFSourceOptions{})
		ng, port := startNginxTLS(t, cert, key)
		pid, out := runOut(t, nil, "h2load", "-n", fmt.Sprint(n), "-c", "10", "-m", "4",
			fmt.Sprintf("https://127.0.0.1:%d/h2.txt", port))
		checkH2load(t, out, n)
		calls := a.stop(t)
		countTLSCalls(t, calls, ng, parser.SideServer, parser.ProtoHTTP2, "/h2.txt", 12, n)
		countTLSCalls(t, calls, pid, parser.SideClient, parser.ProtoHTTP2, "/h2.txt", 12, n)
		logKernelCounters(t, a)
	})

	t.Run("h2load over HTTP/1.1, 3000 requests on 8 keep-alive connections", func(t *testing.T) {
		const n = 3000
		a := startAgentWith(t, EBPFSourceOptions{})
		ng, port := startNginxTLS(t, cert, key)
		pid, out := runOut(t, nil, "h2load", "--h1", "-n", fmt.Sprint(n), "-c", "8",
			fmt.Sprintf("https://127.0.0.1:%d/h1.txt", port))
		checkH2load(t, out, n)
		calls := a.stop(t)
		countTLSCalls(t, calls, ng, parser.SideServer, parser.ProtoHTTP1, "/h1.txt", 12, n)
		countTLSCalls(t, calls, pid, parser.SideClient, parser.ProtoHTTP1, "/h1.txt", 12, n)
		logKernelCounters(t, a)
	})

	t.Run("8 python clients, 50 keep-alive requests each", func(t *testing.T) {
		const clients, reqs = 8, 50
		a := startAgentWith(t, EBPFSourceOptions{})
		ng, port := startNginxTLS(t, cert, key)
		paths := slices.Repeat([]string{"/h1.txt"}, reqs)
		type result struct {
			pid int
			out string
			err error
		}
		results := make(chan result, clients)
		for range clients {
			go func() {
				cmd := exec.Command("/usr/bin/python3", append([]string{tlsPeerFile(t, "peer.py"), "client", cert,
					fmt.Sprint(port)}, paths...)...)
				out, err := cmd.Output()
				r := result{out: string(out), err: err}
				if cmd.ProcessState != nil {
					r.pid = cmd.ProcessState.Pid()
				}
				results <- r
			}()
		}
		var pids []int
		for range clients {
			r := <-results
			if r.err != nil {
				t.Fatalf("python client %d: %v", r.pid, r.err)
			}
			if want := strings.Repeat("200 file h1.txt\n\n", reqs); r.out != want {
				t.Errorf("python client %d output %q, want %d times 200", r.pid, r.out, reqs)
			}
			pids = append(pids, r.pid)
		}
		calls := a.stop(t)
		countTLSCalls(t, calls, ng, parser.SideServer, parser.ProtoHTTP1, "/h1.txt", 12, clients*reqs)
		for _, pid := range pids {
			countTLSCalls(t, calls, pid, parser.SideClient, parser.ProtoHTTP1, "/h1.txt", 12, reqs)
		}
		logKernelCounters(t, a)
	})
}
