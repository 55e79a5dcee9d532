package baseline

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apisonar/apisonar/baseline/route"
	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/parser"
)

// SnapshotVersion is the format version of Snapshot; Restore refuses
// others.
const SnapshotVersion = 1

// Snapshot is the inventory at one moment: for the local HTTP API, for the
// OpenAPI export and, with its sketch registers, for persistence.
type Snapshot struct {
	Version   int                `json:"version"`
	Endpoints []EndpointSnapshot `json:"endpoints"`
	Findings  []Finding          `json:"findings"`
	Orphans   []Orphan           `json:"orphans"`
	Stats     Stats              `json:"stats"`
}

// EndpointSnapshot is one endpoint's statistics.
type EndpointSnapshot struct {
	Service string `json:"service"`
	// ServiceKey is how the service was reached (Host, or server address);
	// Restore binds the endpoint back to it.
	ServiceKey  string            `json:"service_key"`
	Method      string            `json:"method"`
	Route       string            `json:"route"`
	Declared    bool              `json:"declared"`
	Spec        string            `json:"spec,omitempty"`
	SpecVersion string            `json:"spec_version,omitempty"`
	OperationID string            `json:"operation_id,omitempty"`
	Deprecated  bool              `json:"deprecated,omitempty"`
	Removed     bool              `json:"removed,omitempty"`
	Overflow    bool              `json:"overflow,omitempty"`
	Count       uint64            `json:"count"`
	FirstSeen   time.Time         `json:"first_seen"`
	LastSeen    time.Time         `json:"last_seen"`
	Status      map[string]uint64 `json:"status"` // "none", "1xx" .. "5xx"
	StatusCodes []int             `json:"status_codes"`
	Latency     LatencySummary    `json:"latency"`
	Callers     uint64            `json:"distinct_callers"`
	// Principals on an object endpoint, most objects first.
	Principals []PrincipalObjects `json:"principals,omitempty"`
	// Buckets are the event-time counters of the last BucketWidth x 60,
	// oldest first; empty buckets are left out.
	Buckets   []TimeBucket    `json:"buckets,omitempty"`
	ReqBytes  SizeSummary     `json:"request_bytes"`
	RespBytes SizeSummary     `json:"response_bytes"`
	Params    []ParamSnapshot `json:"params,omitempty"`
	// Auth lists how callers identified themselves: "jwt", "bearer",
	// "basic", "apikey", "session", and "none" for calls with no
	// credential.
	Auth []string `json:"auth,omitempty"`
	// LatencyBuckets and CallerRegisters are the sketches, kept so that a
	// restart continues them.
	LatencyBuckets  []uint64 `json:"latency_buckets,omitempty"`
	CallerRegisters []byte   `json:"caller_registers,omitempty"`
	// CallerSparse is the sparse form used while few registers are set:
	// index<<8 | value per non-zero register.
	CallerSparse []uint32 `json:"caller_sparse,omitempty"`
}

// TimeBucket counts calls in one event-time bucket.
type TimeBucket struct {
	Start    time.Time `json:"start"`
	Calls    uint64    `json:"calls"`
	Failures uint64    `json:"failures"` // 5xx, no response, or a gRPC error status
}

// LatencySummary gives quantiles in milliseconds (bucket upper bounds).
type LatencySummary struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
}

// SizeSummary sums and bounds body sizes.
type SizeSummary struct {
	Sum uint64 `json:"sum"`
	Max int64  `json:"max"`
}

// ParamSnapshot is a parameter of the endpoint's route: a path parameter
// with the kinds of values seen, or a query parameter name.
type ParamSnapshot struct {
	Name  string   `json:"name"`
	In    string   `json:"in"` // "path" or "query"
	Kinds []string `json:"kinds,omitempty"`
}

// Orphan is a declared operation that no call has reached.
type Orphan struct {
	Spec        string `json:"spec"`
	SpecVersion string `json:"spec_version"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	OperationID string `json:"operation_id,omitempty"`
	Deprecated  bool   `json:"deprecated,omitempty"`
}

// authNames name PrincipalKinds as EndpointSnapshot.Auth lists them.
var authNames = [...]string{"none", "jwt", "bearer", "basic", "apikey", "session"}

var statusClassNames = [6]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Snapshot copies the inventory's state. It reads atomics only and may run
// while calls are observed; figures of one endpoint may then be a few
// calls apart.
func (inv *Inventory) Snapshot() *Snapshot {
	snap := &Snapshot{Version: SnapshotVersion, Stats: inv.Stats()}
	seenOps := map[*spec.Operation]bool{}
	idx := inv.services.Load()
	var fs []*findingState
	visit := func(e *Endpoint) {
		snap.Endpoints = append(snap.Endpoints, inv.endpointSnapshot(e))
		if e.Op != nil {
			seenOps[e.Op] = true
		}
		e.mu.Lock()
		fs = append(fs, e.static...)
		e.mu.Unlock()
		if d := e.drift.Load(); d != nil {
			for _, f := range d.params {
				fs = append(fs, f)
			}
			for _, f := range d.statuses {
				fs = append(fs, f)
			}
			for _, f := range d.fields {
				fs = append(fs, f)
			}
		}
	}
	for _, s := range idx.all {
		s.eps.each(visit)
	}
	if inv.overflow.total() > 0 {
		visit(inv.overflow)
	}
	for _, f := range fs {
		snap.Findings = append(snap.Findings, inv.render(f))
	}
	sort.Slice(snap.Endpoints, func(i, j int) bool {
		a, b := snap.Endpoints[i], snap.Endpoints[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Route != b.Route {
			return a.Route < b.Route
		}
		return a.Method < b.Method
	})
	sort.Slice(snap.Findings, func(i, j int) bool {
		a, b := snap.Findings[i], snap.Findings[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		return a.Kind+a.Service+a.Route+a.Method+a.Summary < b.Kind+b.Service+b.Route+b.Method+b.Summary
	})
	if inv.opts.Catalog != nil {
		for _, a := range inv.opts.Catalog.APIs {
			for _, op := range a.Current.Ops {
				if !seenOps[op] {
					snap.Orphans = append(snap.Orphans, Orphan{Spec: a.Title, SpecVersion: a.Current.Version,
						Method: spec.MethodName(op.Method), Path: op.Path, OperationID: op.OperationID, Deprecated: op.Deprecated})
				}
			}
		}
	}
	return snap
}

// Findings returns every finding raised so far with its current figures.
func (inv *Inventory) Findings() []Finding { return inv.Snapshot().Findings }

func (inv *Inventory) endpointSnapshot(e *Endpoint) EndpointSnapshot {
	es := EndpointSnapshot{
		Service:    e.svc.name,
		ServiceKey: e.svc.key,
		Method:     spec.MethodName(e.Method),
		Route:      e.Route.Template,
		Declared:   e.Op != nil,
		Removed:    e.Removed,
		Overflow:   e.Overflow,
		Status:     map[string]uint64{},
		Count:      e.total(),
	}
	if e.Op != nil {
		es.Spec, es.SpecVersion, es.OperationID, es.Deprecated = e.API.Title, e.Op.Doc.Version, e.Op.OperationID, e.Op.Deprecated
	}
	if f := e.firstSeen(); f != 0 {
		es.FirstSeen = eventTime(f)
	}
	if l := e.lastSeen(); l != 0 {
		es.LastSeen = eventTime(l)
	}
	es.Buckets = inv.buckets(e)
	es.Principals = objectSnapshot(e, e.lastSeen())
	lat := make([]uint64, latBuckets)
	e.eachShard(func(sh *shard) {
		for c := range sh.status {
			if v := sh.status[c].Load(); v > 0 {
				es.Status[statusClassNames[c]] += v
			}
		}
		es.ReqBytes.Sum += sh.reqBytes.Load()
		es.RespBytes.Sum += sh.respBytes.Load()
		es.ReqBytes.Max = max(es.ReqBytes.Max, sh.reqMax.Load())
		es.RespBytes.Max = max(es.RespBytes.Max, sh.respMax.Load())
		for b := range sh.latency {
			lat[b] += uint64(sh.latency[b].Load())
		}
	})
	es.Latency = LatencySummary{P50: quantile(lat, .5) / 1e6, P90: quantile(lat, .9) / 1e6, P99: quantile(lat, .99) / 1e6}
	es.LatencyBuckets = lat
	for w := range e.codes {
		v := e.codes[w].Load()
		for b := 0; b < 64; b++ {
			if v&(1<<b) != 0 {
				es.StatusCodes = append(es.StatusCodes, w*64+b)
			}
		}
	}
	ak := e.authKinds.Load()
	for k, name := range authNames {
		if ak&(1<<k) != 0 {
			es.Auth = append(es.Auth, name)
		}
	}
	es.Callers = e.callers.estimate()
	regs := e.callers.registers()
	var sparse []uint32
	for i, r := range regs {
		if r != 0 {
			sparse = append(sparse, uint32(i)<<8|uint32(r))
		}
	}
	// A JSON number costs about four bytes where a base64 register costs
	// one and a third: sparse wins below a quarter of registers set.
	if len(sparse)*4 < len(regs) {
		es.CallerSparse = sparse
	} else {
		es.CallerRegisters = regs
	}
	kinds := e.Route.ParamKinds()
	n := 0
	for _, seg := range strings.Split(e.Route.Template, "/") {
		if !strings.HasPrefix(seg, "{") {
			continue
		}
		p := ParamSnapshot{Name: strings.Trim(seg, "{}"), In: "path"}
		if n < len(kinds) {
			for k := route.Integer; k <= route.String; k++ {
				if kinds[n]&(1<<k) != 0 {
					p.Kinds = append(p.Kinds, k.String())
				}
			}
		}
		n++
		es.Params = append(es.Params, p)
	}
	if q := e.query.Load(); q != nil {
		names := make([]string, 0, len(*q))
		for k := range *q {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			es.Params = append(es.Params, ParamSnapshot{Name: k, In: "query"})
		}
	}
	return es
}

// Restore loads a snapshot saved by an earlier run into an empty
// Inventory: endpoints come back with their counts, first and last seen
// and sketches, and findings come back as already raised, so OnFinding is
// not called for them again. Endpoints whose service or route no longer
// fit (other caps, other specs) are skipped and counted in the error.
func (inv *Inventory) Restore(s *Snapshot) error {
	if s.Version != SnapshotVersion {
		return fmt.Errorf("inventory snapshot version %d, want %d", s.Version, SnapshotVersion)
	}
	type epKey struct{ svc, method, route string }
	restored := map[epKey]*Endpoint{}
	skipped := 0
	for _, es := range s.Endpoints {
		if es.Overflow {
			restoreCounts(inv.overflow, &es)
			continue
		}
		e := inv.restoreEndpoint(&es)
		if e == nil {
			skipped++
			continue
		}
		restoreCounts(e, &es)
		restored[epKey{es.ServiceKey, es.Method, es.Route}] = e
		restored[epKey{es.Service, es.Method, es.Route}] = e
	}
	for _, f := range s.Findings {
		e := restored[epKey{f.Service, f.Method, f.Route}]
		if e == nil {
			continue
		}
		inv.restoreFinding(e, &f)
	}
	// An undeclared endpoint whose shadow finding was still waiting for an
	// answer showing the route exists keeps waiting.
	for _, e := range restored {
		if e.Op != nil || len(e.svc.apis) == 0 || !e.svc.covers(e.Route.Template) {
			continue
		}
		e.mu.Lock()
		has := false
		for _, x := range e.static {
			has = has || x.kind == KindShadowAPI
		}
		e.mu.Unlock()
		e.shadowPending.Store(!has)
	}
	if skipped > 0 {
		return fmt.Errorf("inventory snapshot: %d of %d endpoints did not fit and were dropped", skipped, len(s.Endpoints))
	}
	return nil
}

// restoreEndpoint finds or creates the endpoint of a saved one, routing its
// template as a path would be (parameter placeholders classify as
// parameters, literal segments stay literal).
func (inv *Inventory) restoreEndpoint(es *EndpointSnapshot) *Endpoint {
	var h []byte
	var ap netip.AddrPort
	if a, err := netip.ParseAddrPort(es.ServiceKey); err == nil {
		ap = a
	} else {
		h = []byte(es.ServiceKey)
	}
	c := callForRestore(h, ap, es.Method, es.Route)
	svc := inv.serviceFor(c)
	if svc == nil {
		return nil
	}
	m := spec.MethodIndex([]byte(es.Method))
	var r *route.Route
	var op *spec.Operation
	var api *spec.API
	removed := false
	if es.Declared {
		for o, dr := range svc.declared {
			if dr.Template == es.Route && o.Method == m {
				if op == nil || !o.Deprecated && o.Doc == svc.apisCurrent(o) {
					op, r = o, dr
				}
			}
		}
		if op != nil {
			for _, a := range svc.apis {
				if a.Title == op.Doc.Title {
					api = a
					removed = op.Doc != a.Current
				}
			}
		}
	}
	if r == nil {
		r = svc.routes.Lookup([]byte(es.Route))
	}
	if e := svc.eps.get(int(r.ID)*spec.NumMethods + m); e != nil {
		return e
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if r.Overflow || inv.endpoints.Load() >= int64(inv.opts.MaxEndpoints) {
		return nil
	}
	e := inv.newEndpoint(svc, m, r)
	e.Op, e.API, e.Removed = op, api, removed
	svc.eps.set(int(r.ID)*spec.NumMethods+m, e)
	inv.endpoints.Add(1)
	return e
}

// buckets merges the shards' time buckets. Bucket epochs are kept modulo
// 2^20 widths; the newest epoch seen anchors them back to absolute time.
func (inv *Inventory) buckets(e *Endpoint) []TimeBucket {
	last := e.lastSeen()
	if last == 0 {
		return nil
	}
	lastQ := last / inv.opts.BucketWidth
	type acc struct{ calls, fails uint64 }
	byQ := map[int64]*acc{}
	e.eachShard(func(sh *shard) {
		for i := range sh.buckets {
			v := sh.buckets[i].Load()
			if v == 0 {
				continue
			}
			epoch := int64(v >> (64 - bucketEpochBits))
			// The absolute bucket whose low bits are epoch, at or before lastQ.
			q := lastQ - ((lastQ - epoch) & bucketEpochMask)
			if lastQ-q >= defaultBuckets {
				continue // older than the ring
			}
			a := byQ[q]
			if a == nil {
				a = &acc{}
				byQ[q] = a
			}
			a.calls += (v >> bucketErrBits) & (1<<bucketCallBits - 1)
			a.fails += v & (1<<bucketErrBits - 1)
		}
	})
	out := make([]TimeBucket, 0, len(byQ))
	for q, a := range byQ {
		out = append(out, TimeBucket{Start: eventTime(q * inv.opts.BucketWidth), Calls: a.calls, Failures: a.fails})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

func (s *service) apisCurrent(o *spec.Operation) *spec.Doc {
	for _, a := range s.apis {
		if a.Title == o.Doc.Title {
			return a.Current
		}
	}
	return nil
}

func restoreCounts(e *Endpoint, es *EndpointSnapshot) {
	sh := e.shard(0)
	sh.count.Add(es.Count)
	if !es.FirstSeen.IsZero() {
		minInt64(&sh.first, es.FirstSeen.UnixNano())
	}
	if !es.LastSeen.IsZero() {
		maxInt64(&sh.last, es.LastSeen.UnixNano())
	}
	for c, name := range statusClassNames {
		sh.status[c].Add(es.Status[name])
	}
	sh.reqBytes.Add(es.ReqBytes.Sum)
	sh.respBytes.Add(es.RespBytes.Sum)
	maxInt64(&sh.reqMax, es.ReqBytes.Max)
	maxInt64(&sh.respMax, es.RespBytes.Max)
	for b, v := range es.LatencyBuckets {
		if b < latBuckets {
			sh.latency[b].Add(uint32(min(v, 1<<32-1)))
		}
	}
	for _, code := range es.StatusCodes {
		if code >= 0 && code < 640 {
			e.codes[code>>6].Or(1 << (code & 63))
		}
	}
	e.callers.merge(es.CallerRegisters)
	if len(es.CallerSparse) > 0 {
		regs := make([]byte, hllRegisters)
		for _, v := range es.CallerSparse {
			if i := v >> 8; i < hllRegisters {
				regs[i] = byte(v)
			}
		}
		e.callers.merge(regs)
	}
	for _, a := range es.Auth {
		for k, name := range authNames {
			if a == name {
				e.authKinds.Or(1 << k)
			}
		}
	}
}

func (inv *Inventory) restoreFinding(e *Endpoint, f *Finding) {
	st := &findingState{ep: e, kind: f.Kind, severity: f.Severity, owasp: f.OWASP, raised: f.Time.UnixNano()}
	switch f.Kind {
	case KindShadowAPI, KindZombieAPI:
		st.fromEndpoint = true
		if r, ok := f.Evidence["reason"].(string); ok {
			st.subject = r
		}
		e.mu.Lock()
		for _, x := range e.static {
			if x.kind == st.kind {
				e.mu.Unlock()
				return
			}
		}
		e.static = append(e.static, st)
		e.mu.Unlock()
		return
	}
	st.count.Store(f.Count)
	st.first.Store(f.FirstSeen.UnixNano())
	st.last.Store(f.LastSeen.UnixNano())
	subject, ok := evidenceSubject(f)
	if !ok {
		return
	}
	st.subject = subject
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.drift.Load()
	if old.find(st.kind, subject) != nil {
		return
	}
	next := old.clone()
	next.put(st)
	e.drift.Store(next)
}

// evidenceSubject reads the drift subject back from a finding's evidence
// (after a JSON round trip numbers are float64).
func evidenceSubject(f *Finding) (string, bool) {
	for _, k := range []string{"parameter", "field", "status"} {
		switch v := f.Evidence[k].(type) {
		case string:
			return v, true
		case float64:
			return strconv.Itoa(int(v)), true
		case int:
			return strconv.Itoa(v), true
		}
	}
	return "", false
}

func callForRestore(host []byte, server netip.AddrPort, method, path string) *parser.Call {
	c := &parser.Call{Host: host, Method: []byte(method), Path: []byte(path), GRPCStatus: -1}
	if server.IsValid() {
		c.Conn = &parser.ConnInfo{Server: server}
	}
	return c
}

// WithoutSketches returns a copy of s without the raw sketch registers,
// for readers (the local HTTP API) that want the figures and not the
// kilobytes per endpoint that persistence needs.
func (s *Snapshot) WithoutSketches() *Snapshot {
	out := *s
	out.Endpoints = make([]EndpointSnapshot, len(s.Endpoints))
	for i, e := range s.Endpoints {
		e.LatencyBuckets, e.CallerRegisters, e.CallerSparse = nil, nil, nil
		out.Endpoints[i] = e
	}
	return &out
}
