package agent

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadAndValidate(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := LoadConfigFile(&cfg, path); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func TestConfigFiles(t *testing.T) {
	good, _ := filepath.Glob("testdata/config/*.good.yaml")
	bad, _ := filepath.Glob("testdata/config/*.bad.yaml")
	if len(good) == 0 || len(bad) == 0 {
		t.Fatal("no config fixtures")
	}
	for _, f := range good {
		if _, err := loadAndValidate(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, f := range bad {
		_, err := loadAndValidate(f)
		if err == nil {
			t.Errorf("%s: accepted", f)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", f, err)
		}
	}
}

func TestConfigFullFileSetsEveryKey(t *testing.T) {
	cfg, err := loadAndValidate("testdata/config/full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Output != "none" || cfg.Listen != "127.0.0.1:9999" || len(cfg.Specs) != 2 ||
		cfg.Capture.DrainInterval != 20*time.Millisecond || cfg.Conns.IdleTimeout != 2*time.Minute ||
		cfg.Parser.MaxPending != 16 || cfg.Parser.MaxStreams != 512 || cfg.Capture.RingBytes != 16<<20 || cfg.LogLevel != "debug" ||
		len(cfg.SpecScopes) != 2 || cfg.SpecScopes[0].Title != "Swagger Petstore" || len(cfg.SpecScopes[0].Hosts) != 2 ||
		cfg.SpecScopes[1].Ports[0] != 9000 {
		t.Fatalf("not applied: %+v", cfg)
	}
}

func TestConfigEnvOverridesFile(t *testing.T) {
	cfg, err := loadAndValidate("testdata/config/full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"APISONAR_OUTPUT": "jsonl", "APISONAR_SPEC": "a.yaml, b.json",
		"APISONAR_PAYLOAD_BYTES": "4096",
	}
	if err := ApplyEnv(&cfg, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.Output != "jsonl" || len(cfg.Specs) != 2 || cfg.Specs[1] != "b.json" || cfg.Capture.PayloadBytes != 4096 {
		t.Fatalf("env not applied: %+v", cfg)
	}
	env["APISONAR_RING_BYTES"] = "lots"
	if err := ApplyEnv(&cfg, func(k string) string { return env[k] }); err == nil ||
		!strings.Contains(err.Error(), "APISONAR_RING_BYTES") {
		t.Fatalf("bad number accepted or not named: %v", err)
	}
}

func TestConfigMissingFileNamesIt(t *testing.T) {
	cfg := DefaultConfig()
	err := LoadConfigFile(&cfg, "testdata/config/nope.yaml")
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("got %v", err)
	}
}

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
