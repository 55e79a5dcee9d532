package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apisonar/apisonar/bpf"
)

// requireLive skips without the privileges to load eBPF programs, except
// under CI=true, where a skipped eBPF test is a failure.
func requireLive(t *testing.T) {
	t.Helper()
	if err := bpf.CheckSupport(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("eBPF tests must run under CI=true: %v", err)
		}
		t.Skipf("eBPF not available: %v", err)
	}
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is needed (make deps installs it): %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// buildBinary builds apisonar once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "apisonar")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never answered", url)
}

// bpfProgIDs lists the ids of the loaded BPF programs.
func bpfProgIDs(t *testing.T) map[int]string {
	t.Helper()
	out, err := exec.Command("bpftool", "-j", "prog", "show").Output()
	if err != nil {
		t.Fatalf("bpftool prog show: %v", err)
	}
	var progs []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(out, &progs); err != nil {
		t.Fatalf("bpftool output: %v", err)
	}
	ids := map[int]string{}
	for _, p := range progs {
		ids[p.ID] = p.Name
	}
	return ids
}

// progIDsOf lists the BPF programs a process holds, from its fdinfo.
func progIDsOf(t *testing.T, pid int) map[int]bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("fdinfo: %v", err)
	}
	ids := map[int]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			var id int
			if _, err := fmt.Sscanf(line, "prog_id:\t%d", &id); err == nil {
				ids[id] = true
			}
		}
	}
	return ids
}

func TestRunTapsCallsAndDetachesOnSignal(t *testing.T) {
	requireLive(t)
	python := requireTool(t, "python3")
	curl := requireTool(t, "curl")
	requireTool(t, "bpftool")
	bin := buildBinary(t)

	srvPort, apiPort := freePort(t), freePort(t)
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello from the other side\n"), 0o644)
	srv := exec.Command(python, "-m", "http.server", fmt.Sprint(srvPort), "--bind", "127.0.0.1", "--directory", root)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", srvPort))

	var stdout, stderr bytes.Buffer
	agent := exec.Command(bin, "run", "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort), "--output", "jsonl")
	agent.Stdout, agent.Stderr = &stdout, &stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill() })
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", apiPort))

	url := fmt.Sprintf("http://127.0.0.1:%d/hello.txt?lang=en", srvPort)
	for i := 0; i < 3; i++ {
		if out, err := exec.Command(curl, "-sS", "-o", "/dev/null", url).CombinedOutput(); err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
	}
	// The inventory shows the path with its counts once the calls arrive.
	var inv struct {
		Endpoints []struct {
			Method, Path, Side string
			Count              int
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/inventory/seen", apiPort))
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&inv)
		resp.Body.Close()
		n := 0
		for _, e := range inv.Endpoints {
			if e.Path == "/hello.txt" && e.Method == "GET" && e.Side == "server" {
				n = e.Count
			}
		}
		if n == 3 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats", apiPort)); err == nil {
		b := new(bytes.Buffer)
		b.ReadFrom(resp.Body)
		t.Logf("stats: %s", b)
	}
	ours := progIDsOf(t, agent.Process.Pid)
	if len(ours) == 0 {
		t.Fatalf("no programs loaded while running")
	}

	agent.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("agent did not stop on SIGINT\n%s", stderr.String())
	}
	// The kernel frees programs shortly after their last reference goes.
	var left []int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		after := bpfProgIDs(t)
		left = left[:0]
		for id := range ours {
			if _, ok := after[id]; ok {
				left = append(left, id)
			}
		}
		if len(left) == 0 {
			break
		}
	}
	if len(left) != 0 {
		t.Errorf("programs %v still loaded after exit", left)
	}

	server, client := 0, 0
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c struct {
			Type, Protocol, Method, Path, Side string
			Status                             int
			ResponseBytes                      int `json:"response_bytes"`
			Process                            struct {
				Pid  int
				Name string
			}
			Server struct {
				Address string
				Port    int
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		if c.Type != "call" || c.Path != "/hello.txt" {
			continue
		}
		if c.Method != "GET" || c.Status != 200 || c.Protocol != "http/1.1" || c.ResponseBytes != 26 ||
			c.Server.Port != srvPort || c.Server.Address != "127.0.0.1" {
			t.Errorf("call line: %s", sc.Text())
		}
		switch c.Side {
		case "server":
			server++
			if c.Process.Pid != srv.Process.Pid || !strings.HasPrefix(c.Process.Name, "python") {
				t.Errorf("server side process: %s", sc.Text())
			}
		case "client":
			client++
			if c.Process.Name != "curl" {
				t.Errorf("client side process: %s", sc.Text())
			}
		}
		if strings.Contains(sc.Text(), fmt.Sprint(apiPort)) {
			t.Errorf("the agent's own API traffic was traced: %s", sc.Text())
		}
	}
	if server != 3 || client != 3 {
		t.Fatalf("server-side calls %d, client-side %d, want 3 and 3\nstdout:\n%s\nstderr:\n%s", server, client, stdout.String(), stderr.String())
	}
}

func TestRunWithoutPrivilegesIsOneLineExit2(t *testing.T) {
	requireLive(t) // needs root to drop to an unprivileged user
	setpriv := requireTool(t, "setpriv")
	bin := buildBinary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", bin, "run", "--listen", "")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("want exit 2, got %v; stderr %q", err, stderr.String())
	}
	msg := stderr.String()
	if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "CAP_BPF") || strings.Contains(msg, "goroutine") {
		t.Fatalf("want one clear line naming the privilege, got %q", msg)
	}
}
