package export

import (
	"bytes"
	"encoding/binary"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/apisonar/apisonar/parser"
)

// A histogram family: one OTel instrument and its Prometheus twin.
type family struct {
	name, unit, desc string
	promName         string
	// bounds are the explicit bucket upper bounds (inclusive, as in both
	// OTLP and Prometheus); div converts nanoseconds to the unit.
	bounds []float64
	div    float64
	// promDiv converts the unit to the Prometheus family's base unit;
	// promBounds are the bounds so converted, formatted for le labels.
	promDiv    float64
	promBounds []string
}

// http.server.request.duration uses the bucket boundaries the HTTP semantic
// conventions advise for seconds; the SDK's generic default boundaries
// (0..10000) are meant for milliseconds and would put every HTTP call in
// the first two buckets.
var httpFamily = family{
	name:       "http.server.request.duration",
	unit:       "s",
	desc:       "Duration of HTTP server requests.",
	promName:   "http_server_request_duration_seconds",
	bounds:     []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10},
	div:        1e9,
	promDiv:    1,
	promBounds: []string{"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10"},
}

// rpc.server.duration is in milliseconds per the RPC semantic conventions,
// where the SDK's default explicit boundaries fit. Prometheus wants base
// units, so its twin is in seconds.
var rpcFamily = family{
	name:       "rpc.server.duration",
	unit:       "ms",
	desc:       "Measures the duration of inbound RPC.",
	promName:   "rpc_server_duration_seconds",
	bounds:     []float64{0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000},
	div:        1e6,
	promDiv:    1e3,
	promBounds: []string{"0", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10"},
}

// The client side of the same calls, where the agent sees the client
// (a call to a server elsewhere, or both ends on this host): the same
// buckets, as the semantic conventions advise.
var httpClientFamily = family{
	name:       "http.client.request.duration",
	unit:       "s",
	desc:       "Duration of HTTP client requests.",
	promName:   "http_client_request_duration_seconds",
	bounds:     httpFamily.bounds,
	div:        1e9,
	promDiv:    1,
	promBounds: httpFamily.promBounds,
}

var rpcClientFamily = family{
	name:       "rpc.client.duration",
	unit:       "ms",
	desc:       "Measures the duration of outbound RPC.",
	promName:   "rpc_client_duration_seconds",
	bounds:     rpcFamily.bounds,
	div:        1e6,
	promDiv:    1e3,
	promBounds: rpcFamily.promBounds,
}

// families lists every histogram family in export order.
var families = [...]*family{&httpFamily, &httpClientFamily, &rpcFamily, &rpcClientFamily}

// familyOf picks a call's family.
func familyOf(grpc, client bool) int {
	i := 0
	if grpc {
		i = 2
	}
	if client {
		i++
	}
	return i
}

const maxBuckets = 16

// RouteOther stands for the route of a call whose route is not known (the
// caller passed ""), and MethodOther for a method outside the HTTP
// registry, as the semantic conventions spell it. Raw paths never become
// attribute values.
const (
	RouteOther  = "_OTHER"
	MethodOther = "_OTHER"
)

// maxRouteLen bounds one route attribute; a longer route is cut, and the
// series cap bounds how many there are.
const maxRouteLen = 256

var knownMethods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", MethodOther}

func methodIndex(m []byte) uint8 {
	switch string(m) {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "DELETE":
		return 4
	case "CONNECT":
		return 5
	case "OPTIONS":
		return 6
	case "TRACE":
		return 7
	case "PATCH":
		return 8
	}
	return 9
}

// series is one attribute combination of one family. Its attributes and
// Prometheus labels are built once, when it opens.
type series struct {
	fam    *family
	attrs  attribute.Set
	labels string // Prometheus label pairs, without braces
	start  time.Time

	counts   [maxBuckets]uint64
	count    uint64
	sum      float64
	min, max float64
}

func (s *series) observe(v float64) {
	i := 0
	for i < len(s.fam.bounds) && v > s.fam.bounds[i] {
		i++
	}
	s.counts[i]++
	if s.count == 0 || v < s.min {
		s.min = v
	}
	if s.count == 0 || v > s.max {
		s.max = v
	}
	s.count++
	s.sum += v
}

// red aggregates request duration histograms in place. One mutex guards
// it: the pipeline's goroutine writes, the export loop and scrapes copy.
type red struct {
	mu        sync.Mutex
	maxSeries int
	now       func() time.Time
	key       []byte
	index     map[string]*series
	// series per family, in the order of families.
	fams [len(families)][]*series
	// overflow series, one per family, take calls past maxSeries.
	over [len(families)]*series

	overflowed uint64 // calls that went to an overflow series
	unmeasured uint64 // calls without a response, not timed
}

func newRED(maxSeries int, now func() time.Time) *red {
	r := &red{
		maxSeries: maxSeries,
		now:       now,
		key:       make([]byte, 0, 64+maxRouteLen),
		index:     map[string]*series{},
	}
	over := attribute.NewSet(attribute.Bool("otel.metric.overflow", true))
	for i, f := range families {
		r.over[i] = &series{fam: f, attrs: over, labels: `otel_metric_overflow="true"`, start: now()}
	}
	return r
}

// observe records one call. It allocates only when it opens a series.
func (r *red) observe(c *parser.Call, route string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.Status == 0 || c.End < c.Start || c.Flags&parser.FlagNoResponse != 0 {
		r.unmeasured++
		return
	}
	d := float64(c.End - c.Start)
	if len(route) > maxRouteLen {
		route = route[:maxRouteLen]
	}
	var addr [16]byte
	var port uint16
	if c.Conn != nil && c.Conn.Server.IsValid() {
		addr = c.Conn.Server.Addr().As16()
		port = c.Conn.Server.Port()
	}

	grpc := c.Protocol == parser.ProtoGRPC
	client := c.Conn != nil && c.Conn.Side == parser.SideClient
	if route == "" && !grpc {
		route = RouteOther
	}
	fi := familyOf(grpc, client)
	k := append(r.key[:0], byte(fi))
	if grpc {
		name := c.Path
		if route != "" {
			name = nil
		}
		k = binary.LittleEndian.AppendUint32(k, uint32(int32(c.GRPCStatus)))
		k = append(k, addr[:]...)
		k = binary.LittleEndian.AppendUint16(k, port)
		k = append(k, route...)
		if len(name) > maxRouteLen {
			name = name[:maxRouteLen]
		}
		k = append(k, name...)
	} else {
		k = append(k, methodIndex(c.Method))
		k = binary.LittleEndian.AppendUint32(k, uint32(c.Status))
		k = append(k, addr[:]...)
		k = binary.LittleEndian.AppendUint16(k, port)
		k = append(k, route...)
	}
	r.key = k
	s := r.index[string(k)]
	if s == nil {
		if len(r.index) >= r.maxSeries {
			r.overflowed++
			s = r.over[fi]
		} else {
			s = r.open(c, route, fi)
			r.index[string(k)] = s
		}
	}
	s.observe(d / s.fam.div)
}

// open builds a new series' attributes. Cold path.
func (r *red) open(c *parser.Call, route string, fi int) *series {
	var kv []attribute.KeyValue
	fam := families[fi]
	if grpc := fi >= 2; grpc {
		name := route
		if name == "" {
			name = string(c.Path)
			if len(name) > maxRouteLen {
				name = name[:maxRouteLen]
			}
		}
		svc, method := splitGRPC(strings.ToValidUTF8(name, "\uFFFD"))
		kv = append(kv,
			attribute.String("rpc.system", "grpc"),
			attribute.String("rpc.service", svc),
			attribute.String("rpc.method", method))
		if c.GRPCStatus >= 0 {
			kv = append(kv, attribute.Int("rpc.grpc.status_code", c.GRPCStatus))
		}
	} else {
		// A server names the route it matched (http.route); a client the
		// template of the URL it called (url.template).
		routeKey := "http.route"
		if fam == &httpClientFamily {
			routeKey = "url.template"
		}
		kv = append(kv,
			attribute.String("http.request.method", knownMethods[methodIndex(c.Method)]),
			attribute.String(routeKey, strings.ToValidUTF8(route, "\uFFFD")),
			attribute.Int("http.response.status_code", c.Status))
	}
	if c.Conn != nil && c.Conn.Server.IsValid() {
		kv = append(kv,
			attribute.String("server.address", c.Conn.Server.Addr().Unmap().String()),
			attribute.Int("server.port", int(c.Conn.Server.Port())))
	}
	s := &series{fam: fam, attrs: attribute.NewSet(kv...), start: r.now()}
	s.labels = promLabels(&s.attrs)
	r.fams[fi] = append(r.fams[fi], s)
	return s
}

// splitGRPC splits "/pkg.Service/Method" into its service and method; a
// name of another shape is kept whole as the service.
func splitGRPC(name string) (svc, method string) {
	n := strings.TrimPrefix(name, "/")
	if i := strings.LastIndexByte(n, '/'); i > 0 && i < len(n)-1 {
		return n[:i], n[i+1:]
	}
	return n, ""
}

// point is a copy of one series taken under the lock.
type point struct {
	s        *series
	counts   [maxBuckets]uint64
	count    uint64
	sum      float64
	min, max float64
}

// snapshot copies every series with data into dst (reused), in the order
// of families.
func (r *red) snapshot(dst []point) []point {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(families)
	for _, ss := range r.fams {
		n += len(ss)
	}
	if cap(dst) < n {
		dst = make([]point, 0, n)
	}
	dst = dst[:0]
	add := func(s *series) {
		if s.count == 0 {
			return
		}
		dst = append(dst, point{s: s, counts: s.counts, count: s.count, sum: s.sum, min: s.min, max: s.max})
	}
	for i, ss := range r.fams {
		for _, s := range ss {
			add(s)
		}
		add(r.over[i])
	}
	return dst
}

// promLabels renders a set as Prometheus label pairs: dots become
// underscores, values are escaped as the text format requires.
func promLabels(set *attribute.Set) string {
	var b bytes.Buffer
	for i, kv := range set.ToSlice() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(promName(string(kv.Key)))
		b.WriteString(`="`)
		b.WriteString(escapeLabel(kv.Value.Emit()))
		b.WriteByte('"')
	}
	return b.String()
}

// promName maps an OTel name to the Prometheus character set.
func promName(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// escapeLabel escapes a label value as the text format requires.
func escapeLabel(s string) string {
	return labelEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD"))
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
