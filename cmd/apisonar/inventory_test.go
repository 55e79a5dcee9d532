package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apisonar/apisonar/baseline"
	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/baseline/state"
)

// The inventory's end-to-end proof: testdata/apiservice serves part of
// VAmPI (the corpus file ../shared/corpora/openapi/vampi/openapi3.yml) plus a
// few things the spec does not say; testdata/vampi/openapi3-v0.0.yml is an
// older version of the same API that declares an operation 0.1 removed.
// curl and python's urllib drive it; the real binary watches.

var updateCapture = flag.Bool("update-capture", false, "rewrite testdata/vampi.pcap from the live run")

const (
	// vampiSpec is the corpus file as it is; vampiOld the derived older
	// version in testdata.
	vampiSpec    = "../../../shared/corpora/openapi/vampi/openapi3.yml"
	vampiOld     = "testdata/vampi/openapi3-v0.0.yml"
	vampiCapture = "testdata/vampi.pcap"
	// VAmPI's spec declares http://localhost:5000: the spec applies to the
	// service reached as localhost on port 5000, so that is where the
	// test service listens.
	vampiAddr = "127.0.0.1:5000"
	vampiBase = "http://localhost:5000"
)

// findingKey names a finding: kind, endpoint, service and, for drift, the
// parameter, status or field (for zombies, the reason).
type findingKey struct {
	Kind, Method, Route, Service, Subject string
}

func (k findingKey) String() string {
	return fmt.Sprintf("%s %s %s (%s) %s", k.Kind, k.Method, k.Route, k.Service, k.Subject)
}

type findingLine struct {
	Type     string         `json:"type"`
	Kind     string         `json:"kind"`
	Method   string         `json:"method"`
	Route    string         `json:"route"`
	Service  string         `json:"service"`
	Count    uint64         `json:"count"`
	Evidence map[string]any `json:"evidence"`
}

func (f findingLine) key() findingKey {
	k := findingKey{Kind: f.Kind, Method: f.Method, Route: f.Route, Service: f.Service}
	for _, e := range []string{"parameter", "status", "field", "reason"} {
		if v, ok := f.Evidence[e]; ok {
			k.Subject = fmt.Sprint(v)
		}
	}
	return k
}

// vampiFindings is what driveVAmPI's rounds must raise, with the calls
// that back each finding: nothing else is wrong with the service.
func vampiFindings(rounds int) map[findingKey]uint64 {
	const svc = "VAmPI" // the spec's title
	return map[findingKey]uint64{
		{"shadow_api", "GET", "/admin/export", svc, ""}:                     uint64(rounds),
		{"shadow_api", "POST", "/admin/users/{id}/promote", svc, ""}:        uint64(2 * rounds),
		{"zombie_api", "DELETE", "/books/v1/{book_title}", svc, "removed"}:  uint64(rounds),
		{"undocumented_status", "POST", "/users/v1/register", svc, "409"}:   uint64(rounds),
		{"undocumented_parameter", "GET", "/books/v1", svc, "limit"}:        uint64(2 * rounds),
		{"undocumented_field", "GET", "/users/v1/{username}", svc, "admin"}: uint64(2 * rounds),
	}
}

// vampiObserved are the endpoints driveVAmPI calls.
var vampiObserved = []string{
	"DELETE /books/v1/{book_title}", "GET /", "GET /admin/export", "GET /books/v1", "GET /me",
	"GET /users/v1", "GET /users/v1/{username}", "POST /admin/users/{id}/promote",
	"POST /users/v1/login", "POST /users/v1/register",
}

// vampiCalls is how many calls each endpoint gets from rounds of
// driveVAmPI.
func vampiCalls(rounds int) map[string]uint64 {
	per := map[string]uint64{
		"DELETE /books/v1/{book_title}": 1, "GET /": 1, "GET /admin/export": 1, "GET /books/v1": 3, "GET /me": 2,
		"GET /users/v1": 1, "GET /users/v1/{username}": 3, "POST /admin/users/{id}/promote": 2,
		"POST /users/v1/login": 1, "POST /users/v1/register": 1,
	}
	for k := range per {
		per[k] *= uint64(rounds)
	}
	return per
}

// vampiOrphans are the operations of VAmPI 0.1 that driveVAmPI never calls.
var vampiOrphans = []string{
	"DELETE /users/v1/{username}", "GET /books/v1/{book_title}", "GET /createdb", "GET /users/v1/_debug",
	"POST /books/v1", "PUT /users/v1/{username}/email", "PUT /users/v1/{username}/password",
}

// curlCalls runs one curl over a keep-alive connection for every URL and
// checks the status codes.
func curlCalls(t *testing.T, curl string, want int, extra []string, paths ...string) {
	t.Helper()
	args := append([]string{"-4", "-sS", "-w", "%{http_code}\n"}, extra...)
	for _, p := range paths {
		args = append(args, "-o", "/dev/null", vampiBase+p)
	}
	out, err := exec.Command(curl, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", paths, err, out)
	}
	codes := strings.Fields(string(out))
	if len(codes) != len(paths) {
		t.Fatalf("curl %v: statuses %q", paths, out)
	}
	for i, c := range codes {
		if c != strconv.Itoa(want) {
			t.Fatalf("curl %s: status %s, want %d", paths[i], c, want)
		}
	}
}

// pyClient is python's urllib: one connection per call, Host named as the
// spec's server while connecting over IPv4.
const pyClient = `
import json, sys, urllib.request, urllib.error
base, host = sys.argv[1], sys.argv[2]
def call(method, path, body=None, token=None):
    h = {"Host": host}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = "Bearer " + token
    req = urllib.request.Request(base + path, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
st, body = call("POST", "/users/v1/login", {"username": "name1", "password": "pass1"})
tok = json.loads(body)["auth_token"]
out = [st]
out.append(call("GET", "/me", token=tok)[0])
out.append(call("GET", "/me")[0])
out.append(call("GET", "/users/v1/nobody")[0])
out.append(call("GET", "/books/v1?limit=1")[0])
print(" ".join(map(str, out)))
`

// driveVAmPI calls the service rounds times over: per round 16 calls, see
// vampiFindings for what they must raise.
func driveVAmPI(t *testing.T, curl, python string, rounds int) {
	t.Helper()
	for range rounds {
		curlCalls(t, curl, 200, nil, "/", "/users/v1", "/books/v1?limit=2", "/books/v1",
			"/users/v1/name1", "/users/v1/name2", "/admin/export")
		curlCalls(t, curl, 200, []string{"-X", "POST"}, "/admin/users/17/promote", "/admin/users/18/promote")
		curlCalls(t, curl, 200, []string{"-X", "DELETE"}, "/books/v1/bookTitle10")
		curlCalls(t, curl, 409, []string{"-H", "Content-Type: application/json",
			"-d", `{"username":"name1","password":"pass9","email":"n1@mail.com"}`}, "/users/v1/register")
		out, err := exec.Command(python, "-c", pyClient, "http://"+vampiAddr, "localhost:5000").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "200 200 401 404 200" {
			t.Fatalf("python client: %v: %q, want statuses 200 200 401 404 200", err, out)
		}
	}
}

// startVAmPI builds and starts testdata/apiservice on port 5000.
func startVAmPI(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", vampiAddr)
	if err != nil {
		t.Fatalf("port 5000 (VAmPI's spec names it) is busy: %v", err)
	}
	ln.Close()
	bin := filepath.Join(t.TempDir(), "apiservice")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/apiservice").CombinedOutput(); err != nil {
		t.Fatalf("build apiservice: %v\n%s", err, out)
	}
	srv := exec.Command(bin, "-listen", vampiAddr)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", vampiAddr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("apiservice never listened: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedBuffer is an agent's stdout, read while the agent writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.b.Bytes())
}

type agentProc struct {
	cmd     *exec.Cmd
	stdout  *lockedBuffer
	stderr  *lockedBuffer
	api     string // the local API's base URL
	done    chan struct{}
	waitErr error // valid once done is closed
}

// startAgent runs apisonar run with args and a local API, and waits until
// the API answers (the eBPF programs are attached before it listens).
func startAgent(t *testing.T, bin string, args ...string) *agentProc {
	t.Helper()
	a := &agentProc{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	a.api = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	a.cmd = exec.Command(bin, append([]string{"run", "--listen", strings.TrimPrefix(a.api, "http://")}, args...)...)
	a.cmd.Stdout, a.cmd.Stderr = a.stdout, a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.waitErr = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() { a.cmd.Process.Kill(); <-a.done })
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-a.done:
			t.Fatalf("agent exited at start: %v\n%s", a.waitErr, a.stderr.Bytes())
		default:
		}
		if resp, err := http.Get(a.api + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent API never ready\n%s", a.stderr.Bytes())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the agent with SIGINT, as a person would.
func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-a.done:
		if a.waitErr != nil {
			t.Fatalf("agent exit: %v\n%s", a.waitErr, a.stderr.Bytes())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not stop on SIGINT\n%s", a.stderr.Bytes())
	}
}

func (a *agentProc) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(a.api + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// apiFindings reads /findings (with query q) into counts by key; a key
// listed twice is an error.
func (a *agentProc) apiFindings(t *testing.T, q string) map[findingKey]uint64 {
	t.Helper()
	var r struct{ Findings []findingLine }
	a.getJSON(t, "/findings"+q, &r)
	m := map[findingKey]uint64{}
	for _, f := range r.Findings {
		if _, dup := m[f.key()]; dup {
			t.Errorf("/findings lists %s twice", f.key())
		}
		m[f.key()] = f.Count
	}
	return m
}

// waitFindings polls /findings until it holds want, or times out and
// returns what it last saw.
func (a *agentProc) waitFindings(t *testing.T, want map[findingKey]uint64) map[findingKey]uint64 {
	t.Helper()
	var got map[findingKey]uint64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = a.apiFindings(t, ""); maps.Equal(got, want) {
			break
		}
	}
	return got
}

func sameKeys(a, b map[findingKey]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

func showCounts(m map[findingKey]uint64) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("  %s ×%d", k, v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// jsonlFindings reads the finding lines of JSON lines output: how many
// times each finding was printed.
func jsonlFindings(t *testing.T, out []byte) map[findingKey]uint64 {
	t.Helper()
	m := map[findingKey]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var f findingLine
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		if f.Type == "finding" {
			m[f.key()]++
		}
	}
	return m
}

// replayFindings runs apisonar replay on capture and returns how many
// times each finding was printed (the count a line carries is the one at
// the time it was raised).
func replayFindings(t *testing.T, capture string, args ...string) map[findingKey]uint64 {
	t.Helper()
	code, out, errOut := run(t, nil, append([]string{"replay", capture, "--output", "jsonl"}, args...)...)
	if code != 0 {
		t.Fatalf("replay exit %d: %s", code, errOut)
	}
	return jsonlFindings(t, []byte(out))
}

func onceEach(m map[findingKey]uint64) map[findingKey]uint64 {
	out := map[findingKey]uint64{}
	for k := range m {
		out[k] = 1
	}
	return out
}

// TestInventoryLiveVAmPI is the end-to-end proof on a live host:
// exactly the findings the spec and the service imply, each raised once
// however often its route is hit, the orphans in /inventory, the same
// findings again from a capture of the same traffic, and an inventory
// document that an independent validator and our own loader accept.
func TestInventoryLiveVAmPI(t *testing.T) {
	requireLive(t)
	curl := requireTool(t, "curl")
	python := requireTool(t, "python3")
	tcpdump := requireTool(t, "tcpdump")
	bin := buildBinary(t)
	startVAmPI(t)
	dir := t.TempDir()

	// tcpdump records the same traffic the agent watches.
	capture := filepath.Join(dir, "vampi.pcap")
	var tdErr lockedBuffer
	td := exec.Command(tcpdump, "-i", "lo", "-Q", "in", "-U", "--immediate-mode", "-B", "8192", "-Z", "root", "-w", capture, "tcp port 5000")
	td.Stderr = &tdErr
	if err := td.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { td.Process.Kill(); td.Wait() })
	for deadline := time.Now().Add(10 * time.Second); !bytes.Contains(tdErr.Bytes(), []byte("listening on")); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start: %s", tdErr.Bytes())
		}
	}

	ag := startAgent(t, bin, "--spec", vampiSpec, "--spec", vampiOld, "--state-dir", filepath.Join(dir, "state"), "--output", "jsonl")
	const rounds = 3
	want := vampiFindings(rounds)
	driveVAmPI(t, curl, python, rounds)

	got := ag.waitFindings(t, want)
	if !maps.Equal(got, want) {
		t.Errorf("/findings:\n%s\nwant exactly:\n%s", showCounts(got), showCounts(want))
	}
	shadows := ag.apiFindings(t, "?kind=shadow_api")
	wantShadows := map[findingKey]uint64{}
	for k, v := range want {
		if k.Kind == "shadow_api" {
			wantShadows[k] = v
		}
	}
	if !maps.Equal(shadows, wantShadows) {
		t.Errorf("/findings?kind=shadow_api:\n%s\nwant:\n%s", showCounts(shadows), showCounts(wantShadows))
	}
	var inv baseline.Snapshot
	ag.getJSON(t, "/inventory", &inv)
	var orphans, observed []string
	for _, o := range inv.Orphans {
		if o.Spec == "VAmPI" {
			orphans = append(orphans, o.Method+" "+o.Path)
		}
	}
	liveCalls := map[string]uint64{}
	for _, e := range inv.Endpoints {
		if e.Service == "VAmPI" {
			observed = append(observed, e.Method+" "+e.Route)
			liveCalls[e.Method+" "+e.Route] = e.Count
		}
	}
	sort.Strings(orphans)
	sort.Strings(observed)
	if !slices.Equal(orphans, vampiOrphans) {
		t.Errorf("orphans %q, want %q", orphans, vampiOrphans)
	}
	if !slices.Equal(observed, vampiObserved) {
		t.Errorf("observed endpoints %q, want %q", observed, vampiObserved)
	}
	if want := vampiCalls(rounds); !maps.Equal(liveCalls, want) {
		t.Errorf("calls per endpoint %v, want %v", liveCalls, want)
	}

	time.Sleep(300 * time.Millisecond) // the last packets reach the file
	td.Process.Signal(syscall.SIGINT)
	td.Wait()
	ag.stop(t)
	// A packet tcpdump dropped (a busy host) may be a call the replay
	// cannot see: say so next to any difference below.
	dropped := "tcpdump dropped no packets"
	for _, l := range strings.Split(string(tdErr.Bytes()), "\n") {
		if strings.HasSuffix(l, "packets dropped by kernel") && !strings.HasPrefix(l, "0 ") {
			dropped = "tcpdump: " + l
		}
	}
	t.Log(dropped)

	// Each finding printed once, however many calls back it.
	printed := jsonlFindings(t, ag.stdout.Bytes())
	for k, n := range printed {
		if n != 1 {
			t.Errorf("%s printed %d times, want once", k, n)
		}
	}
	if !sameKeys(printed, want) {
		t.Errorf("JSON lines findings:\n%s\nwant exactly:\n%s", showCounts(printed), showCounts(want))
	}

	// The capture of the same traffic replays to the same findings.
	invOut := filepath.Join(dir, "inventory.json")
	replayed := replayFindings(t, capture, "--spec", vampiSpec, "--spec", vampiOld, "--inventory-out", invOut)
	if !maps.Equal(replayed, onceEach(got)) {
		t.Errorf("replay of the live capture printed:\n%s\nthe live run raised:\n%s\n(%s)", showCounts(replayed), showCounts(got), dropped)
	}
	if !checkInventoryDoc(t, invOut, capture, liveCalls) {
		t.Errorf("the replay's inventory differs from the live one (%s)", dropped)
	}

	if t.Failed() {
		// Keep the capture for a person to look at.
		if b, err := os.ReadFile(capture); err == nil {
			if f, err := os.CreateTemp("", "apisonar-vampi-*.pcap"); err == nil {
				f.Write(b)
				f.Close()
				t.Logf("capture kept in %s", f.Name())
			}
		}
	}
	if *updateCapture && !t.Failed() {
		b, err := os.ReadFile(capture)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vampiCapture, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", vampiCapture, len(b))
	}
}

// TestReplayVAmPICapture replays the committed capture of
// TestInventoryLiveVAmPI's traffic (3 rounds; -update-capture rewrites
// it): the same findings, each printed once, and the same calls per
// endpoint, without privileges.
func TestReplayVAmPICapture(t *testing.T) {
	invOut := filepath.Join(t.TempDir(), "inventory.yaml")
	got := replayFindings(t, vampiCapture, "--spec", vampiSpec, "--spec", vampiOld, "--inventory-out", invOut)
	if want := onceEach(vampiFindings(3)); !maps.Equal(got, want) {
		t.Errorf("replay %s printed:\n%s\nwant each once:\n%s", vampiCapture, showCounts(got), showCounts(want))
	}
	checkInventoryDoc(t, invOut, vampiCapture, vampiCalls(3))
}

// checkInventoryDoc holds an --inventory-out document to an OpenAPI
// validator we did not write, loads it back with baseline/spec, and
// replays the capture against it: every observed endpoint is declared
// there, so nothing is shadow, zombie or drift. It reports whether the
// document counts calls as given.
func checkInventoryDoc(t *testing.T, doc, capture string, calls map[string]uint64) (ok bool) {
	t.Helper()
	ok = true
	if validator, err := exec.LookPath("validate-api"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("validate-api (npm @seriousme/openapi-schema-validator; make deps) is not installed")
		}
		t.Log("skipping the independent validator: validate-api is not installed (make deps)")
	} else {
		out, err := exec.Command(validator, doc).CombinedOutput()
		var res struct {
			Valid bool `json:"valid"`
		}
		if err != nil || json.Unmarshal(out, &res) != nil || !res.Valid {
			t.Fatalf("validate-api %s: %v\n%s", doc, err, out)
		}
	}
	cat, err := spec.Load(doc)
	if err != nil {
		t.Fatalf("our loader rejects the inventory document: %v", err)
	}
	var ops []string
	counts := map[string]uint64{}
	for _, a := range cat.APIs {
		for _, o := range a.Current.Ops {
			name := spec.MethodName(o.Method) + " " + o.Path
			ops = append(ops, name)
			n, _ := strconv.ParseUint(fmt.Sprint(a.Current.T.Paths.Value(o.Path).GetOperation(spec.MethodName(o.Method)).Extensions["x-apisonar-count"]), 10, 64)
			counts[name] = n
		}
	}
	sort.Strings(ops)
	if !slices.Equal(ops, vampiObserved) {
		t.Errorf("inventory document operations %q, want the observed %q", ops, vampiObserved)
	}
	if !maps.Equal(counts, calls) {
		t.Errorf("inventory document x-apisonar-count %v, want %v", counts, calls)
		ok = false
	}
	if again := replayFindings(t, capture, "--spec", doc); len(again) != 0 {
		t.Errorf("replay against the inventory document raised:\n%s", showCounts(again))
	}
	return ok
}

// TestRunKill9KeepsStateAndFindingsOnce kills the agent with SIGKILL while a
// client loop drives traffic, restarts it on the same state directory and
// drives the same routes again: the state file reads back, no finding is
// raised a second time, and the counts lost are at most those of the last
// flush interval.
func TestRunKill9KeepsStateAndFindingsOnce(t *testing.T) {
	requireLive(t)
	curl := requireTool(t, "curl")
	python := requireTool(t, "python3")
	sh := requireTool(t, "sh")
	bin := buildBinary(t)
	startVAmPI(t)
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	const flush = time.Second
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("state_flush: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", cfg, "--spec", vampiSpec, "--spec", vampiOld, "--state-dir", stateDir, "--output", "jsonl"}

	a := startAgent(t, bin, args...)
	driveVAmPI(t, curl, python, 1)
	want := vampiFindings(1)
	if got := a.waitFindings(t, want); !maps.Equal(got, want) {
		t.Fatalf("first run /findings:\n%s\nwant:\n%s", showCounts(got), showCounts(want))
	}
	// Wait for a save that holds every finding.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if snap, err := state.Load(stateDir); err == nil && snap != nil && len(snap.Findings) == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no saved state with %d findings after 10s", len(want))
		}
	}

	// A client loop on a shadow endpoint; each completed call logs its
	// end time in nanoseconds.
	callLog := filepath.Join(dir, "calls.log")
	loop := exec.Command(sh, "-c", `while :; do "$1" -4 -s -o /dev/null "$2" && date +%s%N >> "$3"; done`,
		"loop", curl, vampiBase+"/admin/export", callLog)
	loop.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	stopLoop := func() { syscall.Kill(-loop.Process.Pid, syscall.SIGKILL); loop.Wait() }
	t.Cleanup(stopLoop)
	time.Sleep(3 * flush)
	killed := time.Now()
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	stopLoop()

	// Calls that ended before the last flush interval (and the time the
	// agent takes to see a call) must be in the saved state.
	const seeLatency = 500 * time.Millisecond
	var early, before int
	logb, err := os.ReadFile(callLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Fields(string(logb)) {
		ns, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			t.Fatalf("call log line %q", l)
		}
		end := time.Unix(0, ns)
		if end.Before(killed) {
			before++
		}
		if end.Before(killed.Add(-flush - seeLatency)) {
			early++
		}
	}
	if early == 0 {
		t.Fatalf("the client loop completed no call before %v ahead of the kill (%d in all)", flush+seeLatency, before)
	}
	if _, err := os.Stat(filepath.Join(stateDir, state.FileName+".corrupt")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("state moved aside as corrupt: %v", err)
	}
	snap, err := state.Load(stateDir)
	if err != nil || snap == nil {
		t.Fatalf("state after kill -9: %v (nil: %v)", err, snap == nil)
	}
	saved := uint64(0)
	for _, e := range snap.Endpoints {
		if e.Service == "VAmPI" && e.Method == "GET" && e.Route == "/admin/export" {
			saved = e.Count
		}
	}
	low, high := uint64(1+early), uint64(1+before+1) // +1: the first run's call; +1 a call in flight
	t.Logf("GET /admin/export: %d calls before the kill, %d of them over %v before it; saved count %d",
		1+before, 1+early, flush+seeLatency, saved)
	if saved < low || saved > high {
		t.Fatalf("saved count %d, want between %d and %d", saved, low, high)
	}
	if len(snap.Findings) != len(want) {
		t.Fatalf("saved findings %d, want %d", len(snap.Findings), len(want))
	}

	// Restart on the same state: the count comes back, and the same
	// traffic again raises nothing new.
	b := startAgent(t, bin, args...)
	var inv baseline.Snapshot
	b.getJSON(t, "/inventory", &inv)
	restored := uint64(0)
	for _, e := range inv.Endpoints {
		if e.Service == "VAmPI" && e.Method == "GET" && e.Route == "/admin/export" {
			restored = e.Count
		}
	}
	if restored != saved {
		t.Fatalf("restored count %d, saved %d", restored, saved)
	}
	driveVAmPI(t, curl, python, 1)
	want2 := vampiFindings(2)
	for k := range want2 {
		if k.Route == "/admin/export" {
			want2[k] = saved + 1
		}
	}
	if got := b.waitFindings(t, want2); !maps.Equal(got, want2) {
		t.Errorf("after restart /findings:\n%s\nwant:\n%s", showCounts(got), showCounts(want2))
	}
	b.stop(t)
	if again := jsonlFindings(t, b.stdout.Bytes()); len(again) != 0 {
		t.Errorf("findings raised again after the restart:\n%s", showCounts(again))
	}
	// SIGKILL may cut the last line short: read the complete ones.
	out := a.stdout.Bytes()
	out = out[:bytes.LastIndexByte(out, '\n')+1]
	if first := jsonlFindings(t, out); !sameKeys(first, want) {
		t.Errorf("first run printed:\n%s\nwant:\n%s", showCounts(first), showCounts(want))
	}
	if !bytes.Contains(b.stderr.Bytes(), []byte("restored inventory")) {
		t.Errorf("the restarted agent did not say it restored the inventory:\n%s", b.stderr.Bytes())
	}
	if snap, err := state.Load(stateDir); err != nil || snap == nil || len(snap.Findings) != len(want) {
		t.Fatalf("state after a clean stop: %v", err)
	}
}
