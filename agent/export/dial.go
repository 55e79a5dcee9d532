package export

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"google.golang.org/grpc/credentials"
	// The gzip compressor must be registered with gRPC for
	// OTEL_EXPORTER_OTLP_COMPRESSION=gzip to work over gRPC.
	_ "google.golang.org/grpc/encoding/gzip"
)

// endpoints works out the two signal URLs. A base endpoint gets the
// signal's path for HTTP; a signal-specific one is used as it is.
func endpoints(cfg *Config) (logsURL, metricsURL string, err error) {
	one := func(specific, path string) (string, error) {
		raw, appendPath := specific, false
		if raw == "" {
			raw, appendPath = cfg.Endpoint, cfg.Protocol == ProtocolHTTP
		}
		if raw == "" {
			return "", nil
		}
		if !strings.Contains(raw, "://") {
			scheme := "https://"
			if cfg.Insecure {
				scheme = "http://"
			}
			raw = scheme + raw
		}
		u, err := url.Parse(raw)
		if err != nil {
			return "", fmt.Errorf("OTLP endpoint %q: %w", raw, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return "", fmt.Errorf("OTLP endpoint %q: want http(s)://host:port", raw)
		}
		if appendPath {
			u.Path = strings.TrimSuffix(u.Path, "/") + path
		}
		return u.String(), nil
	}
	if logsURL, err = one(cfg.LogsEndpoint, "/v1/logs"); err != nil {
		return "", "", err
	}
	metricsURL, err = one(cfg.MetricsEndpoint, "/v1/metrics")
	return logsURL, metricsURL, err
}

// tlsConfig loads the CA bundle and client certificate, when given.
func tlsConfig(cfg *Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACertFile != "" {
		pem, err := os.ReadFile(cfg.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("OTLP CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("OTLP CA certificate %s: no PEM certificate in it", cfg.CACertFile)
		}
		tc.RootCAs = pool
	}
	if cfg.ClientCertFile != "" || cfg.ClientKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("OTLP client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// dial builds the OTLP clients. Their own retry is off: findings are
// retried by the queue, and metrics are cumulative so the next cycle
// repairs a failed one.
func dial(cfg *Config) (metricSink, sdklog.Exporter, error) {
	logsURL, metricsURL, err := endpoints(cfg)
	if err != nil {
		return nil, nil, err
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	ctx := context.Background()
	var ms metricSink
	var le sdklog.Exporter
	secure := func(u string) bool { return strings.HasPrefix(u, "https://") }
	switch cfg.Protocol {
	case ProtocolGRPC:
		if metricsURL != "" {
			opts := []otlpmetricgrpc.Option{
				otlpmetricgrpc.WithEndpointURL(metricsURL),
				otlpmetricgrpc.WithTimeout(cfg.Timeout),
				otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
				otlpmetricgrpc.WithHeaders(cfg.Headers),
			}
			if secure(metricsURL) {
				opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(tc)))
			}
			if cfg.Compression != "" {
				opts = append(opts, otlpmetricgrpc.WithCompressor(cfg.Compression))
			}
			if ms, err = otlpmetricgrpc.New(ctx, opts...); err != nil {
				return nil, nil, fmt.Errorf("OTLP metrics: %w", err)
			}
		}
		if logsURL != "" {
			opts := []otlploggrpc.Option{
				otlploggrpc.WithEndpointURL(logsURL),
				otlploggrpc.WithTimeout(cfg.Timeout),
				otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}),
				otlploggrpc.WithHeaders(cfg.Headers),
			}
			if secure(logsURL) {
				opts = append(opts, otlploggrpc.WithTLSCredentials(credentials.NewTLS(tc)))
			}
			if cfg.Compression != "" {
				opts = append(opts, otlploggrpc.WithCompressor(cfg.Compression))
			}
			if le, err = otlploggrpc.New(ctx, opts...); err != nil {
				return nil, nil, fmt.Errorf("OTLP logs: %w", err)
			}
		}
	case ProtocolHTTP:
		if metricsURL != "" {
			opts := []otlpmetrichttp.Option{
				otlpmetrichttp.WithEndpointURL(metricsURL),
				otlpmetrichttp.WithTimeout(cfg.Timeout),
				otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}),
				otlpmetrichttp.WithHeaders(cfg.Headers),
			}
			if secure(metricsURL) {
				opts = append(opts, otlpmetrichttp.WithTLSClientConfig(tc))
			}
			if cfg.Compression == "gzip" {
				opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
			}
			if ms, err = otlpmetrichttp.New(ctx, opts...); err != nil {
				return nil, nil, fmt.Errorf("OTLP metrics: %w", err)
			}
		}
		if logsURL != "" {
			opts := []otlploghttp.Option{
				otlploghttp.WithEndpointURL(logsURL),
				otlploghttp.WithTimeout(cfg.Timeout),
				otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}),
				otlploghttp.WithHeaders(cfg.Headers),
			}
			if secure(logsURL) {
				opts = append(opts, otlploghttp.WithTLSClientConfig(tc))
			}
			if cfg.Compression == "gzip" {
				opts = append(opts, otlploghttp.WithCompression(otlploghttp.GzipCompression))
			}
			if le, err = otlploghttp.New(ctx, opts...); err != nil {
				return nil, nil, fmt.Errorf("OTLP logs: %w", err)
			}
		}
	default:
		return nil, nil, fmt.Errorf("OTLP protocol %q is not grpc or http/protobuf", cfg.Protocol)
	}
	return ms, le, nil
}
