package baseline

import (
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/parser"
)

// Finding kinds raised by the inventory.
const (
	KindShadowAPI              = "shadow_api"
	KindZombieAPI              = "zombie_api"
	KindUndocumentedParameter  = "undocumented_parameter"
	KindUndocumentedStatus     = "undocumented_status"
	KindUndocumentedField      = "undocumented_field"
	owaspImproperInventory     = "API9:2023"
	owaspPropertyAuthorization = "API3:2023"
)

// Finding is one finding as contract.md's JSON lines describe it.
type Finding struct {
	Type      string         `json:"type"` // always "finding"
	Time      time.Time      `json:"time"`
	Kind      string         `json:"kind"`
	Severity  string         `json:"severity"`
	OWASP     string         `json:"owasp,omitempty"`
	Service   string         `json:"service"`
	Method    string         `json:"method,omitempty"`
	Route     string         `json:"route,omitempty"`
	Principal string         `json:"principal,omitempty"`
	FirstSeen time.Time      `json:"first_seen"`
	LastSeen  time.Time      `json:"last_seen"`
	Count     uint64         `json:"count"`
	Summary   string         `json:"summary"`
	Evidence  map[string]any `json:"evidence"`
}

// findingState is a raised finding: what it is, fixed when raised, and its
// count and last seen, updated atomically by every call that backs it.
// Shadow and zombie findings take count and times from their endpoint
// instead (every call to the endpoint backs them).
type findingState struct {
	ep       *Endpoint
	kind     string
	severity string
	owasp    string
	// subject is the parameter name, status code or field name of a
	// drift finding.
	subject string
	raised  int64

	fromEndpoint bool
	count        atomic.Uint64
	first        atomic.Int64
	last         atomic.Int64
}

func (f *findingState) touch(ts int64) {
	f.count.Add(1)
	if ts > f.last.Load() {
		maxInt64(&f.last, ts)
	}
}

func eventTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// staticFindings raises what an endpoint is as soon as it exists: shadow
// (a service with a spec, no operation matched, and the server answered
// as if the route exists) or zombie (a deprecated operation, or one only
// an older version declares). status is the answer to the call at hand.
// The caller holds inv.mu.
func (inv *Inventory) staticFindings(e *Endpoint, ts int64, status int) []*findingState {
	if e.svc == nil || len(e.svc.apis) == 0 || e.Overflow {
		return nil
	}
	var f *findingState
	switch {
	case e.Op == nil:
		if !e.svc.covers(e.Route.Template) {
			return nil
		}
		if !routeExists(status) {
			// A scanner's probe of a path the server does not have is
			// not an API; wait for an answer that says otherwise.
			e.shadowPending.Store(true)
			return nil
		}
		e.shadowPending.Store(false)
		f = &findingState{kind: KindShadowAPI, severity: "medium", owasp: owaspImproperInventory}
	case e.Removed:
		f = &findingState{kind: KindZombieAPI, severity: "high", owasp: owaspImproperInventory, subject: "removed"}
	case e.Op.Deprecated:
		f = &findingState{kind: KindZombieAPI, severity: "medium", owasp: owaspImproperInventory, subject: "deprecated"}
	default:
		return nil
	}
	f.ep, f.raised, f.fromEndpoint = e, ts, true
	e.static = append(e.static, f)
	return []*findingState{f}
}

// routeExists reports whether an answer shows that the server has the
// route: any answer but none at all, 404 Not Found, 405 Method Not
// Allowed, 410 Gone and 501 Not Implemented. 401 and 403 count: a
// protected route is still a route.
func routeExists(status int) bool {
	switch status {
	case 404, 405, 410, 501:
		return false
	}
	return status >= 100 && status < 600
}

// lateShadow raises shadow_api on a pending endpoint at its first answer
// that shows the route exists.
func (inv *Inventory) lateShadow(e *Endpoint, ts int64, status int) {
	inv.mu.Lock()
	var raised []*findingState
	if e.shadowPending.Load() {
		raised = inv.staticFindings(e, ts, status)
	}
	inv.mu.Unlock()
	inv.notify(raised)
}

// covers reports whether a path lies under the base path of one of the
// service's APIs.
func (s *service) covers(path string) bool {
	for _, a := range s.apis {
		if a.Covers(path) {
			return true
		}
	}
	return false
}

func (inv *Inventory) notify(fs []*findingState) {
	if inv.opts.OnFinding == nil {
		return
	}
	for _, f := range fs {
		inv.opts.OnFinding(inv.render(f))
	}
}

// checkDrift compares a call with its declared operation. The status check
// runs on every call (a bitmap test), as does the query check (in
// observeQuery); the
// response field check scans the body prefix, so it runs on a sample: the
// first 64 calls of each shard, then one in 16.
func (inv *Inventory) checkDrift(e *Endpoint, c *parser.Call, ts int64, n uint64) {
	op := e.Op
	if c.Status != 0 && !op.Documents(c.Status) {
		inv.driftStatus(e, c.Status, ts)
	}
	// Query parameters are checked in observeQuery's pass over the query.
	if len(c.RespBody) > 0 && (n <= 64 || n%16 == 0) && c.Status != 0 {
		if fs := op.Fields(c.Status); fs != nil && !fs.Open && isJSONType(c.RespContentType) {
			eachTopField(c.RespBody, func(name []byte) {
				if _, ok := fs.Names[string(name)]; !ok {
					inv.driftField(e, name, ts)
				}
			})
		}
	}
}

func cutByte(b []byte, sep byte) (before, after []byte) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

func isJSONType(ct []byte) bool {
	if len(ct) == 0 {
		return true // a body that parses as JSON object is checked anyway
	}
	for i := 0; i+4 <= len(ct); i++ {
		if ct[i]|0x20 == 'j' && ct[i+1]|0x20 == 's' && ct[i+2]|0x20 == 'o' && ct[i+3]|0x20 == 'n' {
			return true
		}
	}
	return false
}

// eachTopField calls f with each top-level key of a JSON object body, or
// of the first object of a JSON array body. A body cut short (a bounded
// prefix) yields the keys before the cut.
func eachTopField(body []byte, f func([]byte)) {
	i := skipWS(body, 0)
	if i < len(body) && body[i] == '[' {
		i = skipWS(body, i+1)
	}
	if i >= len(body) || body[i] != '{' {
		return
	}
	i++
	for n := 0; n < 256; n++ {
		i = skipWS(body, i)
		if i >= len(body) || body[i] != '"' {
			return
		}
		ks, ke, ok := scanString(body, i)
		if !ok {
			return
		}
		i = skipWS(body, ke)
		if i >= len(body) || body[i] != ':' {
			return
		}
		f(body[ks+1 : ke-1])
		j, ok := skipValue(body, skipWS(body, i+1))
		if !ok {
			return
		}
		i = skipWS(body, j)
		if i >= len(body) || body[i] != ',' {
			return
		}
		i++
	}
}

// maxDriftPerEndpoint bounds the drift findings of one endpoint, so that a
// client sending random query names cannot grow memory.
const maxDriftPerEndpoint = 64

func (e *Endpoint) driftCount(d *driftFindings) int {
	if d == nil {
		return 0
	}
	return len(d.params) + len(d.statuses) + len(d.fields)
}

func (inv *Inventory) driftStatus(e *Endpoint, status int, ts int64) {
	if d := e.drift.Load(); d != nil {
		if f, ok := d.statuses[status]; ok {
			f.touch(ts)
			return
		}
	}
	sev := "low"
	if status >= 500 {
		sev = "medium"
	}
	inv.raiseDrift(e, ts, &findingState{kind: KindUndocumentedStatus, severity: sev, subject: strconv.Itoa(status)})
}

func (inv *Inventory) driftParam(e *Endpoint, name []byte, ts int64) {
	if d := e.drift.Load(); d != nil {
		if f, ok := d.params[string(name)]; ok {
			f.touch(ts)
			return
		}
	}
	inv.raiseDrift(e, ts, &findingState{kind: KindUndocumentedParameter, severity: "low", subject: string(name)})
}

func (inv *Inventory) driftField(e *Endpoint, name []byte, ts int64) {
	if d := e.drift.Load(); d != nil {
		if f, ok := d.fields[string(name)]; ok {
			f.touch(ts)
			return
		}
	}
	inv.raiseDrift(e, ts, &findingState{kind: KindUndocumentedField, severity: "medium", owasp: owaspPropertyAuthorization, subject: string(name)})
}

// raiseDrift adds f to e's drift findings, unless another goroutine raised
// the same one first (then that one is touched), copying the maps so that
// readers never see a write.
func (inv *Inventory) raiseDrift(e *Endpoint, ts int64, f *findingState) {
	e.mu.Lock()
	old := e.drift.Load()
	if existing := old.find(f.kind, f.subject); existing != nil {
		e.mu.Unlock()
		existing.touch(ts)
		return
	}
	if e.driftCount(old) >= maxDriftPerEndpoint {
		e.mu.Unlock()
		return
	}
	f.ep, f.raised = e, ts
	f.first.Store(ts)
	f.touch(ts)
	next := old.clone()
	next.put(f)
	e.drift.Store(next)
	e.mu.Unlock()
	inv.notify([]*findingState{f})
}

func (d *driftFindings) find(kind, subject string) *findingState {
	if d == nil {
		return nil
	}
	switch kind {
	case KindUndocumentedParameter:
		return d.params[subject]
	case KindUndocumentedField:
		return d.fields[subject]
	case KindUndocumentedStatus:
		code, _ := strconv.Atoi(subject)
		return d.statuses[code]
	}
	return nil
}

// put adds f to a copy that no reader has seen yet.
func (d *driftFindings) put(f *findingState) {
	switch f.kind {
	case KindUndocumentedParameter:
		if d.params == nil {
			d.params = map[string]*findingState{}
		}
		d.params[f.subject] = f
	case KindUndocumentedField:
		if d.fields == nil {
			d.fields = map[string]*findingState{}
		}
		d.fields[f.subject] = f
	case KindUndocumentedStatus:
		code, _ := strconv.Atoi(f.subject)
		if d.statuses == nil {
			d.statuses = map[int]*findingState{}
		}
		d.statuses[code] = f
	}
}

func (d *driftFindings) clone() *driftFindings {
	n := &driftFindings{}
	if d == nil {
		return n
	}
	if d.params != nil {
		n.params = make(map[string]*findingState, len(d.params)+1)
		for k, v := range d.params {
			n.params[k] = v
		}
	}
	if d.statuses != nil {
		n.statuses = make(map[int]*findingState, len(d.statuses)+1)
		for k, v := range d.statuses {
			n.statuses[k] = v
		}
	}
	if d.fields != nil {
		n.fields = make(map[string]*findingState, len(d.fields)+1)
		for k, v := range d.fields {
			n.fields[k] = v
		}
	}
	return n
}

// observeQuery walks the query once: it records the parameter names an
// endpoint receives (for the inventory's OpenAPI document), up to
// maxQueryNames, and raises undocumented_parameter for those a declared
// operation does not declare.
func (inv *Inventory) observeQuery(e *Endpoint, c *parser.Call, ts int64) {
	q := c.Query
	for len(q) > 0 {
		var pair []byte
		pair, q = cutByte(q, '&')
		name, _ := cutByte(pair, '=')
		if len(name) == 0 {
			continue
		}
		if e.Op != nil {
			if _, ok := e.Op.Query[string(name)]; !ok {
				inv.driftParam(e, name, ts)
			}
		}
		e.recordQueryName(name)
	}
}

// recordQueryName adds a parameter name to the endpoint's set, copied on
// write, unless it is there or the set is full.
func (e *Endpoint) recordQueryName(name []byte) {
	if m := e.query.Load(); m != nil {
		if _, ok := (*m)[string(name)]; ok || len(*m) >= maxQueryNames {
			return
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.query.Load()
	var next map[string]uint32
	if old == nil {
		next = map[string]uint32{}
	} else {
		next = make(map[string]uint32, len(*old)+1)
		for k, v := range *old {
			next[k] = v
		}
	}
	if len(next) < maxQueryNames {
		next[string(name)] = 0
		e.query.Store(&next)
	}
}

// render turns a finding's state into the exported form with its current
// figures.
func (inv *Inventory) render(f *findingState) Finding {
	e := f.ep
	out := Finding{
		Type:     "finding",
		Time:     eventTime(f.raised),
		Kind:     f.kind,
		Severity: f.severity,
		OWASP:    f.owasp,
		Service:  e.svc.name,
		Method:   spec.MethodName(e.Method),
		Route:    e.Route.Template,
		Evidence: map[string]any{},
	}
	var first, last int64
	if f.fromEndpoint {
		out.Count, first, last = e.total(), e.firstSeen(), e.lastSeen()
	} else {
		out.Count, first, last = f.count.Load(), f.first.Load(), f.last.Load()
	}
	if out.Count == 0 {
		// Raised by the endpoint's first call, before it was counted.
		out.Count = 1
	}
	if first == 0 || (f.raised != 0 && f.raised < first) {
		first = f.raised
	}
	if last < first {
		last = first
	}
	out.FirstSeen, out.LastSeen = eventTime(first), eventTime(last)
	api := e.API
	if api == nil && len(e.svc.apis) > 0 {
		api = e.svc.apis[0]
	}
	if api != nil {
		out.Evidence["spec_title"] = api.Title
		out.Evidence["spec_version"] = api.Current.Version
	}
	out.Evidence["calls"] = out.Count
	ep := out.Method + " " + out.Route
	switch f.kind {
	case KindShadowAPI:
		out.Evidence["declared_operations"] = len(api.Current.Ops)
		out.Summary = fmt.Sprintf("%s on %s matches none of the %d operations of spec %q %s; %s seen.",
			ep, out.Service, len(api.Current.Ops), api.Title, api.Current.Version, calls(out.Count))
	case KindZombieAPI:
		out.Evidence["reason"] = f.subject
		out.Evidence["operation"] = spec.MethodName(e.Op.Method) + " " + e.Op.Path
		if f.subject == "removed" {
			out.Evidence["declared_in_version"] = e.Op.Doc.Version
			out.Summary = fmt.Sprintf("%s on %s answers %s although spec %q removed it in %s (last declared in %s).",
				ep, out.Service, calls(out.Count), api.Title, api.Current.Version, e.Op.Doc.Version)
		} else {
			out.Summary = fmt.Sprintf("%s on %s is deprecated in spec %q %s and still answers calls: %d seen.",
				ep, out.Service, api.Title, api.Current.Version, out.Count)
		}
	case KindUndocumentedParameter:
		out.Evidence["parameter"] = f.subject
		out.Evidence["in"] = "query"
		out.Summary = fmt.Sprintf("%s on %s receives query parameter %q that spec %q %s does not declare; %d calls carried it.",
			ep, out.Service, f.subject, api.Title, api.Current.Version, out.Count)
	case KindUndocumentedStatus:
		code, _ := strconv.Atoi(f.subject)
		out.Evidence["status"] = code
		declared := append([]string(nil), e.Op.DeclaredStatuses()...)
		sort.Strings(declared)
		out.Evidence["declared_statuses"] = declared
		out.Summary = fmt.Sprintf("%s on %s answered status %d, which spec %q %s does not declare (declared: %v); %d times.",
			ep, out.Service, code, api.Title, api.Current.Version, declared, out.Count)
	case KindUndocumentedField:
		out.Evidence["field"] = f.subject
		out.Summary = fmt.Sprintf("%s on %s returns JSON field %q that the response schema of spec %q %s does not declare; in %d responses checked.",
			ep, out.Service, f.subject, api.Title, api.Current.Version, out.Count)
	}
	return out
}

// calls says how many calls, in English.
func calls(n uint64) string {
	if n == 1 {
		return "1 call"
	}
	return strconv.FormatUint(n, 10) + " calls"
}
