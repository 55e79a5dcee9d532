package export_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/apisonar/apisonar/agent/export"
	"github.com/apisonar/apisonar/parser"
)

// The pipeline builds one Exporter from the environment and the
// --otlp-endpoint flag, feeds it every call and finding, mounts the
// Prometheus exposition, and shuts it down last.
func Example() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := export.ConfigFromEnv(os.Getenv, "" /* --otlp-endpoint */)
	if err != nil {
		log.Error("bad OTLP configuration", "err", err)
		return
	}
	cfg.Health = func() map[string]uint64 {
		return map[string]uint64{"parser.calls": 0, "ebpf.lost_records": 0}
	}
	exp, err := export.New(cfg, export.ResourceInfoFromEnv(os.Getenv, "v0.1.0"), log)
	if err != nil {
		log.Error("OTLP exporter", "err", err)
		return
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = exp.Shutdown(ctx)
	}()

	mux := http.NewServeMux() // the local API's mux
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", export.PrometheusContentType)
		_ = exp.WritePrometheus(w)
	})

	var c parser.Call // as emitted by a parser, with its templated route
	exp.ObserveCall(&c, "/api/v2/products/{id}")
	exp.Finding(export.Finding{Kind: "shadow_api", Severity: "medium", Service: "shop:8080", Summary: "..."})
}
