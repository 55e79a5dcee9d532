package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := realMain(args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestUserMistakesAreOneLineAndExit2(t *testing.T) {
	dir := t.TempDir()
	notCapture := filepath.Join(dir, "notes.pcap")
	os.WriteFile(notCapture, []byte("these are not packets, just words in a file\n"), 0o644)
	badCfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badCfg, []byte("outptu: none\n"), 0o644)
	strayScope := filepath.Join(dir, "scope.yaml")
	os.WriteFile(strayScope, []byte("spec_scopes:\n  - title: Shopp\n    ports: [8080]\n"), 0o644)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // must appear in the one line
	}{
		{"no_command", nil, nil, "Usage"},
		{"unknown_command", nil, []string{"sniff"}, `unknown command "sniff"`},
		{"unknown_flag", nil, []string{"run", "--bogus"}, "-bogus"},
		{"bad_output", nil, []string{"run", "--output", "xml"}, `output "xml"`},
		{"run_with_argument", nil, []string{"run", "extra"}, `"extra"`},
		{"replay_without_file", nil, []string{"replay"}, "exactly one capture file"},
		{"replay_missing_file", nil, []string{"replay", filepath.Join(dir, "nope.pcap")}, "nope.pcap: no such file"},
		{"replay_directory", nil, []string{"replay", dir}, "is a directory"},
		{"replay_not_a_capture", nil, []string{"replay", notCapture}, "notes.pcap: not a pcap or pcapng capture"},
		{"replay_missing_spec", nil, []string{"replay", notCapture, "--spec", filepath.Join(dir, "api.yaml")}, "api.yaml"},
		{"config_unknown_key", nil, []string{"replay", notCapture, "--config", badCfg}, "outptu"},
		{"config_from_env", map[string]string{"APISONAR_CONFIG": badCfg}, []string{"replay", notCapture}, "bad.yaml"},
		{"env_bad_number", map[string]string{"APISONAR_RING_BYTES": "big"}, []string{"replay", notCapture}, "APISONAR_RING_BYTES"},
		{"afpacket_without_interface", nil, []string{"run", "--source", "afpacket"}, "needs an interface"},
		{"scope_names_no_spec", nil, []string{"replay", "../../testdata/pcap/curl-python.pcap", "--spec", "../../testdata/specs", "--config", strayScope}, `no loaded spec is titled "Shopp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.env, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Fatalf("stderr %q does not name %q", stderr, tt.want)
			}
			if tt.args != nil && strings.Count(stderr, "\n") != 1 {
				t.Fatalf("want one line, got %q", stderr)
			}
			if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
				t.Fatalf("stack trace for a user mistake: %q", stderr)
			}
		})
	}
}

func TestHelpAndVersionExit0(t *testing.T) {
	if code, _, stderr := run(t, nil, "replay", "-h"); code != 0 || !strings.Contains(stderr, "-inventory-out") {
		t.Fatalf("replay -h: %d %q", code, stderr)
	}
	if code, out, _ := run(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "apisonar ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

// TestSpecScopesBindSpecsByConfig replays a capture of nginx serving /api
// on port 18081 with the Shop spec, whose servers name no host or port (it
// would apply everywhere): scoped by config to another port it raises
// nothing, scoped to 18081 it raises its findings.
func TestSpecScopesBindSpecsByConfig(t *testing.T) {
	dir := t.TempDir()
	replay := func(port int) int {
		cfg := filepath.Join(dir, "scope.yaml")
		os.WriteFile(cfg, []byte("spec_scopes:\n  - title: Shop\n    ports: ["+strconv.Itoa(port)+"]\n"), 0o644)
		code, out, stderr := run(t, nil, "replay", "../../testdata/pcap/go-nginx.pcap", "--spec", "../../testdata/specs",
			"--config", cfg, "--output", "jsonl")
		if code != 0 {
			t.Fatalf("replay exit %d: %s", code, stderr)
		}
		return strings.Count(out, `"type":"finding"`)
	}
	if n := replay(18080); n != 0 {
		t.Errorf("Shop scoped to port 18080 raised %d findings on a server at 18081", n)
	}
	if n := replay(18081); n == 0 {
		t.Errorf("Shop scoped to port 18081 raised nothing on a server at 18081")
	}
}
