package export

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"

	"github.com/apisonar/apisonar/parser"
)

// sampleLine is one sample of the text exposition format: a name, an
// optional label set with escaped values, and a number.
var sampleLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? [-+0-9.eInf]+$`)

// FuzzObserveCall feeds hostile methods, paths, routes and statuses: the
// exporter must not panic, must keep within its series cap, and must keep
// every attribute valid UTF-8 and every exposition line well formed.
func FuzzObserveCall(f *testing.F) {
	f.Add("GET", "/users/1", "/users/{id}", 200, -1, false, int64(1e6))
	f.Add("BREW\x00", "/\xff\xfe", "", 999, -1, false, int64(-5))
	f.Add("POST", "/pkg.Svc/Method", "", 200, 14, true, int64(3e9))
	f.Add("POST", "no-slash", "a\"b\\c\nd", 0, 0, true, int64(0))
	f.Fuzz(func(t *testing.T, method, path, route string, status, grpcStatus int, grpc bool, d int64) {
		e := newExporter(Config{MaxSeries: 4}, ResourceInfo{}, nil, nil, nil, fixedClock)
		for i := range 3 {
			c := httpCall(method, path, status, time.Duration(d))
			c.Status = status + i
			if grpc {
				c.Protocol = parser.ProtoGRPC
				c.GRPCStatus = grpcStatus
			}
			e.ObserveCall(c, route+strings.Repeat("x", i))
		}
		s := e.Stats()
		if s.HTTPSeries+s.RPCSeries > 4 {
			t.Fatalf("%d series over a cap of 4", s.HTTPSeries+s.RPCSeries)
		}
		e.collect()
		for _, p := range e.red.snapshot(nil) {
			for _, kv := range p.s.attrs.ToSlice() {
				if v := kv.Value.Emit(); !utf8.ValidString(v) || len(v) > 4*maxRouteLen {
					t.Fatalf("attribute %s = %q", kv.Key, v)
				}
			}
		}
		var b bytes.Buffer
		if err := e.WritePrometheus(&b); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
			if strings.HasPrefix(line, "# ") {
				continue
			}
			if !sampleLine.MatchString(line) {
				t.Fatalf("malformed exposition line %q", line)
			}
		}
	})
}

// FuzzFindingRecord feeds hostile text into a finding: every attribute
// and the body must stay valid UTF-8 (or the whole OTLP batch would be
// refused) and the evidence must stay within its attribute bound.
func FuzzFindingRecord(f *testing.F) {
	f.Add("bola_enumeration", "high", "jwt:sub:5f1c", "distinct_ids", "412", 3)
	f.Add("\xff", "\xc3\x28", "\xe2\x82", "a\x00b", "\xf0\x28\x8c\x28", 200)
	f.Fuzz(func(t *testing.T, kind, severity, principal, evKey, evVal string, fan int) {
		ev := map[string]any{evKey: evVal, "nested": map[string]any{evKey: []string{evVal}}}
		for i := range min(max(fan, 0), 300) {
			ev[fmt.Sprintf("k%d", i)] = i
		}
		fd := Finding{Time: t0, Kind: kind, Severity: severity, Principal: principal, Summary: evVal, Evidence: ev}
		r := fd.record(t0)
		if !utf8.ValidString(r.Body().AsString()) {
			t.Fatalf("body %q", r.Body().AsString())
		}
		evidence := 0
		r.WalkAttributes(func(kv attribute.KeyValue) bool {
			if !utf8.ValidString(string(kv.Key)) || !utf8.ValidString(kv.Value.Emit()) {
				t.Fatalf("attribute %q = %q", kv.Key, kv.Value.Emit())
			}
			if strings.HasPrefix(string(kv.Key), "apisonar.evidence.") {
				evidence++
			}
			return true
		})
		if evidence > maxEvidenceAttrs {
			t.Fatalf("%d evidence attributes", evidence)
		}
	})
}
