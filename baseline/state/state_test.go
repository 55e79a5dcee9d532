package state

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apisonar/apisonar/baseline"
	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/parser"
)

func shop(t testing.TB) *spec.Catalog {
	c, err := spec.Load("../../testdata/specs/shop-v1.yaml", "../../testdata/specs/shop-v2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func get(path string, status int, sec int64) *parser.Call {
	p, q, _ := strings.Cut(path, "?")
	return &parser.Call{
		Protocol: parser.ProtoHTTP1,
		Conn: &parser.ConnInfo{Client: netip.MustParseAddrPort("10.0.0.9:5000"),
			Server: netip.MustParseAddrPort("10.0.0.5:8080")},
		Start: 1_700_000_000e9 + sec*1e9, End: 1_700_000_000e9 + sec*1e9 + 1e6,
		Method: []byte("GET"), Host: []byte("shop.internal"), Path: []byte(p), Query: []byte(q),
		Status: status, GRPCStatus: -1,
	}
}

func TestSaveLoadRestoreRaisesNothingTwice(t *testing.T) {
	dir := t.TempDir()
	cat := shop(t)
	raised := 0
	inv := baseline.New(baseline.Options{Catalog: cat, OnFinding: func(baseline.Finding) { raised++ }})
	for i := int64(0); i < 5; i++ {
		inv.Observe(get("/api/export", 200, i))
		inv.Observe(get("/api/items?debug=1", 200, i))
		inv.Observe(get("/api/hidden/1", 200, i))
	}
	if raised != 3 {
		t.Fatalf("%d findings raised, want 3 (zombie, parameter, shadow)", raised)
	}
	if err := Save(dir, inv.Snapshot()); err != nil {
		t.Fatal(err)
	}
	snap, err := Load(dir)
	if err != nil || snap == nil {
		t.Fatalf("Load: %v, %v", snap, err)
	}
	again := 0
	inv2 := baseline.New(baseline.Options{Catalog: cat, OnFinding: func(baseline.Finding) { again++ }})
	if err := inv2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	inv2.Observe(get("/api/export", 200, 100))
	inv2.Observe(get("/api/items?debug=1", 200, 100))
	inv2.Observe(get("/api/hidden/2", 200, 100))
	if again != 0 {
		t.Fatalf("restart raised %d findings again", again)
	}
	for _, f := range inv2.Snapshot().Findings {
		if f.Count != 6 || f.FirstSeen.Unix() != 1_700_000_000 || f.LastSeen.Unix() != 1_700_000_100 {
			t.Errorf("%s %s: count %d first %v last %v", f.Kind, f.Route, f.Count, f.FirstSeen, f.LastSeen)
		}
	}
}

func TestMissingStateIsAFirstStart(t *testing.T) {
	snap, err := Load(filepath.Join(t.TempDir(), "never-created"))
	if snap != nil || err != nil {
		t.Fatalf("Load of an empty dir = %v, %v", snap, err)
	}
}

// A crash in the middle of Save leaves a partial temporary file; the state
// file is still the previous snapshot, and the next Save clears the debris.
func TestTornWriteLeavesPreviousState(t *testing.T) {
	dir := t.TempDir()
	inv := baseline.New(baseline.Options{})
	inv.Observe(get("/a/1", 200, 0))
	if err := Save(dir, inv.Snapshot()); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, FileName))
	torn := filepath.Join(dir, tmpPrefix+"12345")
	if err := os.WriteFile(torn, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := Load(dir)
	if err != nil || snap == nil || snap.Endpoints[0].Count != 1 {
		t.Fatalf("Load after a torn write: %v %v", snap, err)
	}
	inv.Observe(get("/a/2", 200, 1))
	if err := Save(dir, inv.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(torn); !os.IsNotExist(err) {
		t.Fatal("the torn temporary file survived the next Save")
	}
}

func TestDamagedStateIsReportedAndKeptAside(t *testing.T) {
	dir := t.TempDir()
	inv := baseline.New(baseline.Options{})
	inv.Observe(get("/a/1", 200, 0))
	if err := Save(dir, inv.Snapshot()); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, FileName)
	data, _ := os.ReadFile(p)
	i := strings.Index(string(data), `"count":1`)
	data[i+len(`"count":`)] = '7'
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Load of a damaged file: %v", err)
	}
	if kept, err := os.ReadFile(p + ".corrupt"); err != nil || string(kept) != string(data) {
		t.Fatal("the damaged state was not kept aside as it was")
	}
	if snap, err := Load(dir); snap != nil || err != nil {
		t.Fatalf("after moving the damage aside, Load = %v, %v; want a first start", snap, err)
	}
	if err := Save(dir, inv.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if snap, err := Load(dir); err != nil || snap == nil {
		t.Fatalf("Load after re-save: %v", err)
	}
}

// saverChild is the body of the child process of TestKill9DuringSaves: it
// observes calls and saves after each one, forever, until killed.
func saverChild(dir string) {
	inv := baseline.New(baseline.Options{})
	for i := int64(0); ; i++ {
		inv.Observe(get(fmt.Sprintf("/items/%d", i), 200, i))
		inv.Observe(get(fmt.Sprintf("/r%d/x", i%50), 200, i))
		if err := Save(dir, inv.Snapshot()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv("APISONAR_STATE_SAVER_DIR"); dir != "" {
		saverChild(dir)
	}
	os.Exit(m.Run())
}

// kill -9 a process that saves continuously, at varying moments: the state
// always loads, and is internally consistent (observed calls equal the
// calls counted on endpoints).
func TestKill9DuringSaves(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 5; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "APISONAR_STATE_SAVER_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(150+round*70) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		snap, err := Load(dir)
		if err != nil {
			t.Fatalf("round %d: state after kill -9: %v", round, err)
		}
		if snap == nil {
			continue // killed before its first Save completed
		}
		var sum uint64
		for _, e := range snap.Endpoints {
			sum += e.Count
		}
		if sum != snap.Stats.Observed || sum == 0 {
			t.Fatalf("round %d: endpoints count %d calls, stats say %d", round, sum, snap.Stats.Observed)
		}
		t.Logf("round %d: state holds %s calls", round, strconv.FormatUint(sum, 10))
	}
}

// BenchmarkSave10kEndpoints reports the cost and size of one Save of an
// inventory of 10,000 endpoints (the flush interval should be well above
// it).
func BenchmarkSave10kEndpoints(b *testing.B) {
	inv := baseline.New(baseline.Options{MaxServices: 1000})
	for i := 0; i < 10000; i++ {
		c := get(fmt.Sprintf("/svc/r%d/items", i%10), 200, int64(i))
		c.Host = []byte(fmt.Sprintf("svc%d.internal", i/10))
		inv.Observe(c)
	}
	dir := b.TempDir()
	for b.Loop() {
		if err := Save(dir, inv.Snapshot()); err != nil {
			b.Fatal(err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-file")
}
