package agent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

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
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &child{cmd: cmd, out: bufio.NewReader(stdout)}
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
func startNginxTLS(t *testing.T, cert, key string) (int, int) {
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
events { worker_connections 64; }
http {
	access_log off;
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
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListen(t, fmt.Sprintf("127.0.0.1:%d", port))
	return cmd.Process.Pid, port
}
