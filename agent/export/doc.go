// Package export sends what the agent learns to the outside: findings as
// OTLP log records, per-route request metrics and the agent's own health
// as OTLP metrics, and the same metrics in the Prometheus text format.
//
// What it owns: the request-duration histograms (aggregated here, in place,
// not through the OTel SDK's instruments, whose per-record attribute sets
// would allocate on every call), a bounded queue of findings waiting for the
// collector, and the OTLP clients. The OTel SDK's OTLP exporters do the
// wire work: each interval the aggregated state is handed to them as
// metricdata.ResourceMetrics, and findings go through an SDK logger whose
// processor is the queue.
//
// Metrics:
//   - http.server.request.duration (s) by http.request.method,
//     http.route, http.response.status_code, server.address, server.port;
//   - rpc.server.duration (ms) for gRPC by rpc.system, rpc.service,
//     rpc.method, rpc.grpc.status_code, server.address, server.port;
//   - http.client.request.duration (s, url.template in place of
//     http.route) and rpc.client.duration (ms) for calls the agent saw
//     from the client's side; a call with both ends on this host counts
//     in both, as each end's own instrumentation would count it;
//   - apisonar.NAME for every NAME the Config.Health callback returns, plus
//     the exporter's own apisonar.export.* counters. A name whose last
//     segment mentions bytes has unit By; names ending in .open, .active,
//     .current, .size, .pending or .queued are gauges; all others are
//     monotonic cumulative sums.
//
// Invariants:
//   - ObserveCall does not allocate once a call's series exists.
//   - Attributes carry the templated route, never the raw path: a call
//     without a route counts under http.route="_OTHER"; methods outside
//     the HTTP registry count as "_OTHER"; past Config.MaxSeries series a
//     call goes to an overflow series (otel.metric.overflow=true) and is
//     counted in apisonar.export.series.overflow.
//   - A collector that is down or slow never blocks the caller: findings
//     wait in a queue of Config.QueueSize records, retried with
//     exponential backoff; past the bound they are dropped and counted in
//     apisonar.export.findings.dropped. Metrics are cumulative, so a failed
//     cycle is repaired by the next one and is only counted.
//
// Lifecycle: New builds the Exporter and, when OTLP is configured, starts
// its export loop and findings sender; ObserveCall, Finding and
// WritePrometheus may then be called from any goroutine; Shutdown sends
// the metrics one last time and the queued findings until its context
// ends, then closes the clients.
package export
