package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the agent's whole configuration: defaults, then the YAML file,
// then APISONAR_* environment variables, then flags (applied by cmd/).
type Config struct {
	// Source is "ebpf" (default) or "afpacket".
	Source string `yaml:"source"`
	// Interface is the network interface for the afpacket source.
	Interface string `yaml:"interface"`
	// Specs are OpenAPI/Swagger files or folders of them.
	Specs []string `yaml:"specs"`
	// SpecScopes bind specs (by info.title) to the services they describe,
	// in place of their servers: hosts (Host or :authority without port)
	// and server ports. A spec without a scope is bound by its servers.
	SpecScopes []SpecScope `yaml:"spec_scopes"`
	// OTLPEndpoint overrides OTEL_EXPORTER_OTLP_ENDPOINT when set.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Listen is the local HTTP API address; empty disables it.
	Listen string `yaml:"listen"`
	// StateDir holds persisted inventory state; empty disables it.
	StateDir string `yaml:"state_dir"`
	// StateFlush is how often the inventory is saved to StateDir.
	StateFlush time.Duration `yaml:"state_flush"`
	// Output is "jsonl" (calls and findings on stdout) or "none".
	Output string `yaml:"output"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`

	// Version is the agent's version, for resource attributes.
	Version string `yaml:"-"`

	Capture CaptureConfig `yaml:"capture"`
	Parser  ParserConfig  `yaml:"parser"`
	Conns   ConnsConfig   `yaml:"connections"`
}

// SpecScope binds the spec titled Title to services: those reached as one
// of Hosts (any host when empty) on one of Ports (any port when empty).
type SpecScope struct {
	Title string   `yaml:"title"`
	Hosts []string `yaml:"hosts"`
	Ports []int    `yaml:"ports"`
}

// CaptureConfig tunes the kernel side.
type CaptureConfig struct {
	// PayloadBytes is how many bytes of one syscall are copied at most.
	PayloadBytes int `yaml:"payload_bytes"`
	// RingBytes is the ring buffer size (a power of two, a multiple of the
	// page size).
	RingBytes int `yaml:"ring_bytes"`
	// DrainInterval is how often the ring buffer is drained.
	DrainInterval time.Duration `yaml:"drain_interval"`
}

// ParserConfig bounds the parsers.
type ParserConfig struct {
	MaxBodyPrefix  int `yaml:"max_body_prefix"`
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	MaxPending     int `yaml:"max_pending"`
	MaxStreams     int `yaml:"max_streams"`
}

// ConnsConfig bounds the connection table.
type ConnsConfig struct {
	Max         int           `yaml:"max"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		Source:     "ebpf",
		Listen:     "127.0.0.1:9464",
		StateDir:   "/var/lib/apisonar",
		StateFlush: 30 * time.Second,
		Output:     "jsonl",
		LogLevel:   "info",
		Capture: CaptureConfig{
			PayloadBytes:  16 << 10,
			RingBytes:     8 << 20,
			DrainInterval: 50 * time.Millisecond,
		},
		Parser: ParserConfig{
			MaxBodyPrefix:  4 << 10,
			MaxHeaderBytes: 64 << 10,
			MaxPending:     32,
			MaxStreams:     256,
		},
		Conns: ConnsConfig{
			Max:         DefaultMaxConns,
			IdleTimeout: 10 * time.Minute,
		},
	}
}

// LoadConfigFile applies a YAML file over cfg. Unknown keys are errors: a
// typo must not silently leave a default in place.
func LoadConfigFile(cfg *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, errors.Unwrap(err))
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return fmt.Errorf("config %s: %s", path, strings.Join(te.Errors, "; "))
		}
		return fmt.Errorf("config %s: %v", path, err)
	}
	return nil
}

// ApplyEnv applies APISONAR_* variables over cfg. getenv is os.Getenv in
// production.
func ApplyEnv(cfg *Config, getenv func(string) string) error {
	str := map[string]*string{
		"APISONAR_SOURCE":        &cfg.Source,
		"APISONAR_INTERFACE":     &cfg.Interface,
		"APISONAR_OTLP_ENDPOINT": &cfg.OTLPEndpoint,
		"APISONAR_LISTEN":        &cfg.Listen,
		"APISONAR_STATE_DIR":     &cfg.StateDir,
		"APISONAR_OUTPUT":        &cfg.Output,
		"APISONAR_LOG_LEVEL":     &cfg.LogLevel,
	}
	for k, p := range str {
		if v, ok := lookup(getenv, k); ok {
			*p = v
		}
	}
	if v, ok := lookup(getenv, "APISONAR_SPEC"); ok {
		cfg.Specs = nil
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.Specs = append(cfg.Specs, s)
			}
		}
	}
	ints := map[string]*int{
		"APISONAR_PAYLOAD_BYTES":   &cfg.Capture.PayloadBytes,
		"APISONAR_RING_BYTES":      &cfg.Capture.RingBytes,
		"APISONAR_MAX_BODY_PREFIX": &cfg.Parser.MaxBodyPrefix,
		"APISONAR_MAX_CONNECTIONS": &cfg.Conns.Max,
	}
	for k, p := range ints {
		if v, ok := lookup(getenv, k); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("environment %s=%q: not a whole number", k, v)
			}
			*p = n
		}
	}
	return nil
}

func lookup(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error {
	switch c.Source {
	case "ebpf":
	case "afpacket":
		if c.Interface == "" {
			return errors.New("source afpacket needs an interface (--interface, interface:)")
		}
	default:
		return fmt.Errorf("source %q: want ebpf or afpacket", c.Source)
	}
	switch c.Output {
	case "jsonl", "none":
	default:
		return fmt.Errorf("output %q: want jsonl or none", c.Output)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.Capture.PayloadBytes < 64 || c.Capture.PayloadBytes > 1<<20 {
		return fmt.Errorf("capture.payload_bytes %d: want 64 to 1048576", c.Capture.PayloadBytes)
	}
	if r := c.Capture.RingBytes; r < 64<<10 || r&(r-1) != 0 {
		return fmt.Errorf("capture.ring_bytes %d: want a power of two of at least 65536", r)
	}
	if c.Capture.DrainInterval <= 0 {
		return fmt.Errorf("capture.drain_interval %v: want a positive duration", c.Capture.DrainInterval)
	}
	if c.Parser.MaxBodyPrefix < 0 || c.Parser.MaxBodyPrefix > 1<<20 {
		return fmt.Errorf("parser.max_body_prefix %d: want 0 to 1048576", c.Parser.MaxBodyPrefix)
	}
	if c.Parser.MaxHeaderBytes < 1024 || c.Parser.MaxHeaderBytes > 1<<20 {
		return fmt.Errorf("parser.max_header_bytes %d: want 1024 to 1048576", c.Parser.MaxHeaderBytes)
	}
	if c.Parser.MaxStreams < 1 || c.Parser.MaxStreams > 65536 {
		return fmt.Errorf("parser.max_streams %d: want 1 to 65536", c.Parser.MaxStreams)
	}
	if c.Parser.MaxPending < 1 || c.Parser.MaxPending > 4096 {
		return fmt.Errorf("parser.max_pending %d: want 1 to 4096", c.Parser.MaxPending)
	}
	if c.Conns.Max < 1 || c.Conns.Max > 10_000_000 {
		return fmt.Errorf("connections.max %d: want 1 to 10000000", c.Conns.Max)
	}
	seen := map[string]bool{}
	for i, sc := range c.SpecScopes {
		if sc.Title == "" {
			return fmt.Errorf("spec_scopes[%d]: title is empty; it names the spec (info.title) to scope", i)
		}
		if seen[sc.Title] {
			return fmt.Errorf("spec_scopes[%d]: title %q is scoped twice", i, sc.Title)
		}
		seen[sc.Title] = true
		if len(sc.Hosts) == 0 && len(sc.Ports) == 0 {
			return fmt.Errorf("spec_scopes[%d] (%s): give hosts, ports or both", i, sc.Title)
		}
		for _, p := range sc.Ports {
			if p < 1 || p > 65535 {
				return fmt.Errorf("spec_scopes[%d] (%s): port %d out of range", i, sc.Title, p)
			}
		}
	}
	if c.StateFlush < time.Second {
		return fmt.Errorf("state_flush %v: want at least 1s", c.StateFlush)
	}
	if c.Conns.IdleTimeout <= 0 {
		return fmt.Errorf("connections.idle_timeout %v: want a positive duration", c.Conns.IdleTimeout)
	}
	return nil
}
