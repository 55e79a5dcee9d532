// Package otelcoltest runs a real OpenTelemetry Collector for end-to-end
// tests: built once by the collector builder from the embedded manifest
// (an OTLP receiver and the debug exporter) into
// $HOME/.cache/apisonar-test, started on loopback ports, and read back
// through the debug exporter's detailed output.
//
// It is test support only; nothing in the agent imports it.
package otelcoltest
