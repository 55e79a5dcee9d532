package export

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Protocols an OTLP exporter speaks, spelled as OTEL_EXPORTER_OTLP_PROTOCOL
// spells them.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Defaults applied by ConfigFromEnv and New to zero fields.
const (
	DefaultInterval  = 10 * time.Second
	DefaultTimeout   = 10 * time.Second
	DefaultQueueSize = 2048
	DefaultMaxSeries = 20000
	DefaultRetryMin  = 500 * time.Millisecond
	DefaultRetryMax  = 30 * time.Second
)

// Config says where and how findings and metrics leave as OTLP. An empty
// Endpoint (and no signal-specific endpoint) turns OTLP off; the
// Prometheus exposition works either way.
type Config struct {
	// Endpoint is the base URL of the collector, e.g. http://otel:4317 for
	// gRPC or http://otel:4318 for HTTP (where /v1/logs and /v1/metrics are
	// appended). Without a scheme it is taken as https unless Insecure.
	Endpoint string
	// LogsEndpoint and MetricsEndpoint, when set, replace Endpoint for one
	// signal; for HTTP they are full URLs used as they are.
	LogsEndpoint, MetricsEndpoint string
	// Protocol is ProtocolGRPC or ProtocolHTTP (the default, as the OTLP
	// specification recommends).
	Protocol string
	Headers  map[string]string
	// Insecure sends in plaintext even when the endpoint has no scheme.
	Insecure bool
	// CACertFile, ClientCertFile and ClientKeyFile configure TLS: a CA
	// bundle to verify the collector, and a client certificate for mTLS.
	CACertFile, ClientCertFile, ClientKeyFile string
	// Compression is "" (none) or "gzip".
	Compression string
	// Timeout bounds one export request.
	Timeout time.Duration

	// Interval is the metric export period.
	Interval time.Duration
	// QueueSize bounds the findings waiting for the collector; past it new
	// findings are dropped and counted.
	QueueSize int
	// RetryMin and RetryMax bound the backoff between attempts to send
	// queued findings while the collector fails.
	RetryMin, RetryMax time.Duration
	// MaxSeries caps the request-duration series (both histograms
	// together); calls that would open one more go to an overflow series,
	// counted.
	MaxSeries int

	// ResourceAttributes come from OTEL_RESOURCE_ATTRIBUTES (and
	// OTEL_SERVICE_NAME); they win over the detected ones.
	ResourceAttributes map[string]string

	// Health, set by the caller, returns the agent's own counters; see the
	// package documentation for how names become metrics. It is called
	// from the export loop and from WritePrometheus, possibly at once.
	Health func() map[string]uint64
}

// Enabled reports whether any OTLP signal has somewhere to go.
func (c *Config) Enabled() bool {
	return c.Endpoint != "" || c.LogsEndpoint != "" || c.MetricsEndpoint != ""
}

// ConfigFromEnv reads the standard OTEL_* variables through getenv (os.Getenv
// in the agent, a map in tests). A non-empty endpointFlag (--otlp-endpoint)
// wins over every endpoint variable; without it OTEL_SDK_DISABLED=true
// turns OTLP off. Unknown protocols and malformed
// numbers are errors naming the variable.
func ConfigFromEnv(getenv func(string) string, endpointFlag string) (Config, error) {
	c := Config{
		Endpoint:        getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
		LogsEndpoint:    getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
		MetricsEndpoint: getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
		Protocol:        ProtocolHTTP,
		CACertFile:      getenv("OTEL_EXPORTER_OTLP_CERTIFICATE"),
		ClientCertFile:  getenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
		ClientKeyFile:   getenv("OTEL_EXPORTER_OTLP_CLIENT_KEY"),
		Compression:     getenv("OTEL_EXPORTER_OTLP_COMPRESSION"),
	}
	if endpointFlag != "" {
		c.Endpoint, c.LogsEndpoint, c.MetricsEndpoint = endpointFlag, "", ""
	} else if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		c.Endpoint, c.LogsEndpoint, c.MetricsEndpoint = "", "", ""
	}
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" {
		c.Protocol = p
	}
	switch c.Protocol {
	case ProtocolGRPC, ProtocolHTTP:
	default:
		return c, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not grpc or http/protobuf", c.Protocol)
	}
	switch c.Compression {
	case "", "none":
		c.Compression = ""
	case "gzip":
	default:
		return c, fmt.Errorf("OTEL_EXPORTER_OTLP_COMPRESSION: %q is not gzip or none", c.Compression)
	}
	var err error
	if c.Headers, err = parseKeyValues(getenv("OTEL_EXPORTER_OTLP_HEADERS")); err != nil {
		return c, fmt.Errorf("OTEL_EXPORTER_OTLP_HEADERS: %w", err)
	}
	if v := getenv("OTEL_EXPORTER_OTLP_INSECURE"); v != "" {
		if c.Insecure, err = strconv.ParseBool(v); err != nil {
			return c, fmt.Errorf("OTEL_EXPORTER_OTLP_INSECURE: %q is not a boolean", v)
		}
	}
	if c.Timeout, err = envMillis(getenv, "OTEL_EXPORTER_OTLP_TIMEOUT", DefaultTimeout); err != nil {
		return c, err
	}
	if c.Interval, err = envMillis(getenv, "OTEL_METRIC_EXPORT_INTERVAL", DefaultInterval); err != nil {
		return c, err
	}
	c.QueueSize = DefaultQueueSize
	if v := getenv("OTEL_BLRP_MAX_QUEUE_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("OTEL_BLRP_MAX_QUEUE_SIZE: %q is not a positive integer", v)
		}
		c.QueueSize = n
	}
	if c.ResourceAttributes, err = parseKeyValues(getenv("OTEL_RESOURCE_ATTRIBUTES")); err != nil {
		return c, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		if c.ResourceAttributes == nil {
			c.ResourceAttributes = map[string]string{}
		}
		c.ResourceAttributes["service.name"] = v
	}
	return c, nil
}

// envMillis reads a duration given in milliseconds, as the OTel
// specification writes them.
func envMillis(getenv func(string) string, name string, def time.Duration) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive number of milliseconds", name, v)
	}
	return time.Duration(n) * time.Millisecond, nil
}

// parseKeyValues reads the W3C-baggage-like list the OTel variables use:
// key1=value1,key2=value2 with percent-encoded values.
func parseKeyValues(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	m := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", part)
		}
		uv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("value of %q: %w", k, err)
		}
		m[k] = uv
	}
	return m, nil
}

// withDefaults fills zero fields so that a hand-built Config works too.
func (c Config) withDefaults() Config {
	if c.Protocol == "" {
		c.Protocol = ProtocolHTTP
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxSeries <= 0 {
		c.MaxSeries = DefaultMaxSeries
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	return c
}

// ResourceInfo is what the agent knows about where it runs.
type ResourceInfo struct {
	// Version is the agent's version (service.version).
	Version string
	// HostName is host.name; K8sNodeName is k8s.node.name, when known.
	HostName    string
	K8sNodeName string
}

// ResourceInfoFromEnv fills ResourceInfo from the host name and the
// variables a DaemonSet usually sets through the downward API
// (K8S_NODE_NAME, or NODE_NAME).
func ResourceInfoFromEnv(getenv func(string) string, version string) ResourceInfo {
	ri := ResourceInfo{Version: version}
	ri.HostName, _ = os.Hostname()
	ri.K8sNodeName = getenv("K8S_NODE_NAME")
	if ri.K8sNodeName == "" {
		ri.K8sNodeName = getenv("NODE_NAME")
	}
	return ri
}
