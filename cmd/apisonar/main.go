package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/apisonar/apisonar/agent"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

const usage = `apisonar: passive API discovery and runtime API security

Usage:
  apisonar run    [--config FILE] [--spec PATH]... [--otlp-endpoint URL] [--listen ADDR]
                  [--state-dir DIR] [--output jsonl|none] [--source ebpf|afpacket --interface IF]
  apisonar replay FILE.pcap|FILE.pcapng [--spec PATH]... [--output jsonl|none] [--otlp-endpoint URL]
                  [--inventory-out FILE] [--config FILE]
  apisonar version

Run 'apisonar COMMAND -h' for the flags of a command.
`

// usageError is a user mistake: one line on stderr, exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func realMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stdout, stderr, getenv)
	case "replay":
		err = cmdReplay(args[1:], stdout, stderr, getenv)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "apisonar", versionString())
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "apisonar: unknown command %q (want run, replay or version)\n", args[0])
		return 2
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "apisonar: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || agent.IsUserError(err) {
		return 2
	}
	return 1
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
		if v != "" {
			return v
		}
	}
	return "dev"
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// common holds the flags run and replay share.
type common struct {
	config       string
	specs        stringList
	otlpEndpoint string
	output       string
	logLevel     string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "YAML configuration `file` (env APISONAR_CONFIG)")
	fs.Var(&c.specs, "spec", "OpenAPI 3.x or Swagger 2.0 `path` (file or folder); repeatable (env APISONAR_SPEC, comma-separated)")
	fs.StringVar(&c.otlpEndpoint, "otlp-endpoint", "", "OTLP `URL` (overrides OTEL_EXPORTER_OTLP_ENDPOINT; env APISONAR_OTLP_ENDPOINT)")
	fs.StringVar(&c.output, "output", "", "jsonl or none: calls and findings as JSON lines on stdout (env APISONAR_OUTPUT)")
	fs.StringVar(&c.logLevel, "log-level", "", "debug, info, warn or error (env APISONAR_LOG_LEVEL)")
}

// load builds the configuration: defaults, file, environment, flags.
func (c *common) load(fs *flag.FlagSet, getenv func(string) string) (agent.Config, error) {
	cfg := agent.DefaultConfig()
	path := c.config
	if path == "" {
		path = getenv("APISONAR_CONFIG")
	}
	if path != "" {
		if err := agent.LoadConfigFile(&cfg, path); err != nil {
			return cfg, usageError{err.Error()}
		}
	}
	if err := agent.ApplyEnv(&cfg, getenv); err != nil {
		return cfg, usageError{err.Error()}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["spec"] {
		cfg.Specs = c.specs
	}
	if set["otlp-endpoint"] {
		cfg.OTLPEndpoint = c.otlpEndpoint
	}
	if set["output"] {
		cfg.Output = c.output
	}
	if set["log-level"] {
		cfg.LogLevel = c.logLevel
	}
	return cfg, nil
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("apisonar "+name, flag.ContinueOnError)
	// A mistake is one line, printed by realMain; -h prints the flags.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterspersed parses flags that may stand before and after positional
// arguments (apisonar replay FILE --spec x).
func parseInterspersed(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stderr, "Usage of %s:\n", fs.Name())
				fs.SetOutput(stderr)
				fs.PrintDefaults()
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newLogger(stderr io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l}))
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cmdRun(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("run", stderr)
	var c common
	c.register(fs)
	listen := fs.String("listen", "", "local HTTP API `address` (default 127.0.0.1:9464; env APISONAR_LISTEN)")
	stateDir := fs.String("state-dir", "", "`dir`ectory for persisted state (env APISONAR_STATE_DIR)")
	source := fs.String("source", "", "ebpf (default) or afpacket (env APISONAR_SOURCE)")
	iface := fs.String("interface", "", "network interface for --source afpacket (env APISONAR_INTERFACE)")
	pos, err := parseInterspersed(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{fmt.Sprintf("run takes no arguments, got %q", pos[0])}
	}
	cfg, err := c.load(fs, getenv)
	if err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			cfg.Listen = *listen
		case "state-dir":
			cfg.StateDir = *stateDir
		case "source":
			cfg.Source = *source
		case "interface":
			cfg.Interface = *iface
		}
	})
	log, ctx, cancel, err := settle(&cfg, stderr)
	if err != nil {
		return err
	}
	defer cancel()
	p, err := agent.NewLivePipeline(cfg, stdout, log)
	if err != nil {
		return err
	}
	return p.RunLive(ctx)
}

// settle validates the final configuration and returns what both commands
// run with: the logger and a context cancelled by SIGINT or SIGTERM.
func settle(cfg *agent.Config, stderr io.Writer) (*slog.Logger, context.Context, context.CancelFunc, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, nil, usageError{err.Error()}
	}
	cfg.Version = versionString()
	ctx, cancel := signalContext()
	return newLogger(stderr, cfg.LogLevel), ctx, cancel, nil
}

func cmdReplay(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("replay", stderr)
	var c common
	c.register(fs)
	invOut := fs.String("inventory-out", "", "write the observed inventory as an OpenAPI 3 document to `file`")
	pos, err := parseInterspersed(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"replay needs exactly one capture file (apisonar replay FILE.pcap)"}
	}
	cfg, err := c.load(fs, getenv)
	if err != nil {
		return err
	}
	log, ctx, cancel, err := settle(&cfg, stderr)
	if err != nil {
		return err
	}
	defer cancel()
	p, err := agent.NewReplayPipeline(cfg, stdout, log)
	if err != nil {
		return err
	}
	return p.Replay(ctx, pos[0], agent.ReplayOutput{InventoryOut: *invOut, Stderr: stderr})
}
