package baseline

import (
	"encoding/binary"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/apisonar/apisonar/baseline/route"
	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/parser"
)

// Options configure an Inventory. The zero value works: no specs, default
// caps, an all-zero principal key (set Key in production so that hashed
// principals cannot be recomputed by whoever reads the findings).
type Options struct {
	// Catalog holds the declared APIs; nil means none.
	Catalog *spec.Catalog
	// Scopes bind APIs to services by configuration (see spec.Scope).
	Scopes []spec.Scope
	// MaxEndpoints caps endpoints over all services; past it, calls count
	// on one overflow endpoint. 0 means DefaultMaxEndpoints.
	MaxEndpoints int
	// MaxServices caps services; past it, calls count on the overflow
	// endpoint. 0 means DefaultMaxServices.
	MaxServices int
	// Route bounds each service's learned route table.
	Route route.Options
	// Shards is the number of Observers that write without sharing cache
	// lines (rounded up to a power of two). 0 means DefaultShards.
	Shards int
	// BucketWidth is the width of an event-time bucket in nanoseconds;
	// endpoints keep the last 60. 0 means one minute.
	BucketWidth int64
	// Key keys the principal hashes (HMAC-SHA256 for exported principals,
	// SipHash for the distinct-caller sketches).
	Key []byte
	// TrustedProxies: when the client address is in one of these, the
	// last X-Forwarded-For address is the caller's.
	TrustedProxies []netip.Prefix
	// MaxPrincipalsPerEndpoint caps the principals whose distinct objects
	// an object endpoint tracks; later ones share an overflow entry. 0
	// means DefaultMaxPrincipalsPerEndpoint.
	MaxPrincipalsPerEndpoint int
	// MaxPrincipals caps those entries over all endpoints (about 1 KiB
	// each). 0 means DefaultMaxPrincipals.
	MaxPrincipals int
	// OnFinding, when set, is called once for each finding as it is first
	// raised (not for findings restored from a snapshot). It runs on the
	// observing goroutine and must not block.
	OnFinding func(Finding)
	Logger    *slog.Logger
}

// Defaults for Options.
const (
	DefaultMaxEndpoints = 10000
	DefaultMaxServices  = 1024
	DefaultShards       = 4
	// Defaults for the per-principal object tracking.
	DefaultMaxPrincipalsPerEndpoint = 64
	DefaultMaxPrincipals            = 20000
	MaxShards                       = 8
	DefaultBucketWidth              = int64(60e9)
	defaultBuckets                  = 60
)

// OverflowService names the service of the overflow endpoint.
const OverflowService = "_overflow"

// Inventory is the endpoint inventory of one agent: services, their
// endpoints and per-endpoint statistics, and the spec findings raised on
// them. See the package documentation for its concurrency rules.
type Inventory struct {
	opts    Options
	k0, k1  uint64
	objSeed maphash.Seed
	log     *slog.Logger

	services atomic.Pointer[serviceIndex]
	mu       sync.Mutex // guards creating services, endpoints, findings
	nextObs  atomic.Uint32
	def      *Observer

	endpoints atomic.Int64
	overflow  *Endpoint

	principals        atomic.Int64
	principalOverflow atomic.Uint64
	endpointOverflow  atomic.Uint64
	serviceOverflow   atomic.Uint64
	// observed counts calls per shard, each on its own cache line, so
	// that Observers do not write a shared counter.
	observed [MaxShards]paddedCounter
}

type paddedCounter struct {
	n atomic.Uint64
	_ [120]byte
}

type serviceIndex struct {
	byHost map[string]*service
	byAddr map[netip.AddrPort]*service
	all    []*service
}

type service struct {
	// key is how the service was first reached (Host, or the server
	// address when there was none); name is how findings call it: the
	// spec title when one spec describes it, else key with a port.
	key      string
	name     string
	apis     []*spec.API
	routes   *route.Table
	declared map[*spec.Operation]*route.Route
	eps      epTable
}

// New returns an empty Inventory.
func New(opts Options) *Inventory {
	if opts.MaxEndpoints <= 0 {
		opts.MaxEndpoints = DefaultMaxEndpoints
	}
	if opts.MaxServices <= 0 {
		opts.MaxServices = DefaultMaxServices
	}
	if opts.MaxPrincipalsPerEndpoint <= 0 {
		opts.MaxPrincipalsPerEndpoint = DefaultMaxPrincipalsPerEndpoint
	}
	if opts.MaxPrincipals <= 0 {
		opts.MaxPrincipals = DefaultMaxPrincipals
	}
	if opts.Shards <= 0 {
		opts.Shards = DefaultShards
	}
	opts.Shards = min(opts.Shards, MaxShards)
	for opts.Shards&(opts.Shards-1) != 0 {
		opts.Shards++
	}
	if opts.BucketWidth <= 0 {
		opts.BucketWidth = DefaultBucketWidth
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	inv := &Inventory{opts: opts, log: opts.Logger.With("component", "baseline"), objSeed: maphash.MakeSeed()}
	var key [16]byte
	copy(key[:], opts.Key)
	if len(opts.Key) > 16 {
		// Longer keys are folded in, so no key byte is ignored.
		for i, b := range opts.Key[16:] {
			key[i%16] ^= b
		}
	}
	inv.k0 = binary.LittleEndian.Uint64(key[:8])
	inv.k1 = binary.LittleEndian.Uint64(key[8:])
	inv.services.Store(&serviceIndex{byHost: map[string]*service{}, byAddr: map[netip.AddrPort]*service{}})
	osvc := &service{key: OverflowService, name: OverflowService, routes: route.NewTable(route.Options{MaxRoutes: 1})}
	inv.overflow = inv.newEndpoint(osvc, spec.MethodOther, osvc.routes.Overflow())
	inv.overflow.Overflow = true
	inv.def = inv.NewObserver()
	return inv
}

// Observer feeds calls into an Inventory from one goroutine. Each Observer
// writes its own shard of the per-endpoint counters; give every goroutine
// that observes calls its own Observer. Observer implements parser.Emitter.
type Observer struct {
	inv   *Inventory
	shard int
	p     Principal
	// The last Authorization header and its principal hash: calls on a
	// keep-alive connection repeat the same token, and decoding a JWT is
	// the costliest step of a call.
	authLen  int
	authHash uint64
	authKind PrincipalKind
	auth     [authCacheSize]byte
	// The last client address hashed, for calls without a credential.
	ip     netip.Addr
	ipHash uint64
}

const authCacheSize = 512

// NewObserver returns an Observer with the next shard (shards are reused
// round-robin past Options.Shards).
func (inv *Inventory) NewObserver() *Observer {
	n := int(inv.nextObs.Add(1) - 1)
	return &Observer{inv: inv, shard: n & (inv.opts.Shards - 1)}
}

// Emit observes c; see Observe.
func (o *Observer) Emit(c *parser.Call) { o.Observe(c) }

// Observe is the Inventory's default Observer, for callers with a single
// goroutine. It must not be used from several goroutines at once.
func (inv *Inventory) Observe(c *parser.Call) *Endpoint { return inv.def.Observe(c) }

// Observe adds one call: route lookup, every per-endpoint statistic and
// the spec drift checks. It does not allocate once the call's endpoint is
// known (except when it raises a finding), and takes no lock. It returns
// the endpoint the call was counted on.
func (o *Observer) Observe(c *parser.Call) *Endpoint {
	inv := o.inv
	inv.observed[o.shard].n.Add(1)
	ts := c.Start
	if ts == 0 {
		ts = c.End
	}
	svc := inv.serviceFor(c)
	var ep *Endpoint
	if svc == nil {
		ep = inv.overflow
	} else {
		ep = inv.endpointFor(svc, c, ts)
	}
	if ep.shadowPending.Load() && routeExists(c.Status) {
		inv.lateShadow(ep, ts, c.Status)
	}
	sh := ep.shard(o.shard)
	sh.count.Add(1)
	if sh.first.Load() == 0 || ts < sh.first.Load() {
		minInt64(&sh.first, ts)
	}
	if ts > sh.last.Load() {
		maxInt64(&sh.last, ts)
	}
	class := 0
	if c.Status >= 100 && c.Status < 600 {
		class = c.Status / 100
	}
	sh.status[class].Add(1)
	if c.Status >= 0 && c.Status < 640 {
		w := &ep.codes[c.Status>>6]
		if bit := uint64(1) << (c.Status & 63); w.Load()&bit == 0 {
			w.Or(bit)
		}
	}
	if c.ReqBytes > 0 {
		sh.reqBytes.Add(uint64(c.ReqBytes))
		if c.ReqBytes > sh.reqMax.Load() {
			maxInt64(&sh.reqMax, c.ReqBytes)
		}
	}
	if c.RespBytes > 0 {
		sh.respBytes.Add(uint64(c.RespBytes))
		if c.RespBytes > sh.respMax.Load() {
			maxInt64(&sh.respMax, c.RespBytes)
		}
	}
	if c.Status != 0 && c.End >= c.Start && c.Start > 0 {
		sh.latency[latencyBucket(c.End-c.Start)].Add(1)
	}
	// A gRPC call fails in its trailers, behind an HTTP 200.
	failed := class == 5 || class == 0 || (c.Protocol == parser.ProtoGRPC && c.GRPCStatus > 0)
	inv.countBucket(sh, ts, failed)
	h, kind := o.principalHash(c)
	ep.callers.add(h)
	if bit := uint32(1) << kind; ep.authKinds.Load()&bit == 0 {
		ep.authKinds.Or(bit)
	}
	if ep.Route.ParamMask != 0 && !ep.Overflow {
		o.observeObject(ep, c, ts, h)
	}
	if len(c.Query) > 0 {
		inv.observeQuery(ep, c, ts)
	}
	if ep.Op != nil {
		inv.checkDrift(ep, c, ts, sh.count.Load())
	}
	return ep
}

func (o *Observer) principalHash(c *parser.Call) (uint64, PrincipalKind) {
	auth := c.ReqHeaders[parser.HdrAuthorization]
	if len(auth) > 0 && len(auth) == o.authLen && string(auth) == string(o.auth[:o.authLen]) {
		return o.authHash, o.authKind
	}
	noCred := len(auth) == 0 && len(c.ReqHeaders[parser.HdrAPIKey]) == 0 && len(c.ReqHeaders[parser.HdrCookie]) == 0
	if noCred && c.Conn != nil && len(o.inv.opts.TrustedProxies) == 0 && o.ip.IsValid() && c.Conn.Client.Addr() == o.ip {
		return o.ipHash, PrincipalIP
	}
	principalOf(c, o.inv.opts.TrustedProxies, &o.p)
	h := o.p.hash64(o.inv.k0, o.inv.k1)
	if noCred && c.Conn != nil && len(o.inv.opts.TrustedProxies) == 0 {
		o.ip, o.ipHash = c.Conn.Client.Addr(), h
	}
	switch o.p.Kind {
	case PrincipalJWTSub, PrincipalBearer, PrincipalBasic:
		if len(auth) <= authCacheSize {
			o.authLen = copy(o.auth[:], auth)
			o.authHash, o.authKind = h, o.p.Kind
		}
	}
	return h, o.p.Kind
}

func (inv *Inventory) countBucket(sh *shard, ts int64, failed bool) {
	q := ts / inv.opts.BucketWidth
	epoch := uint64(q) & bucketEpochMask
	b := &sh.buckets[uint64(q)%defaultBuckets]
	add := uint64(bucketCallOne)
	if failed {
		add++
	}
	for {
		v := b.Load()
		if v>>(64-bucketEpochBits) == epoch {
			b.Add(add)
			return
		}
		if v>>(64-bucketEpochBits) > epoch && v != 0 {
			// A call older than the bucket's minute (out-of-order event
			// time across a ring turn): too old to count in the ring.
			return
		}
		if b.CompareAndSwap(v, epoch<<(64-bucketEpochBits)|add) {
			return
		}
	}
}

// serviceFor finds the call's service by Host (or :authority), else by the
// server address, creating it on first sight.
func (inv *Inventory) serviceFor(c *parser.Call) *service {
	idx := inv.services.Load()
	if len(c.Host) > 0 {
		if s, ok := idx.byHost[string(c.Host)]; ok {
			return s
		}
	} else {
		var ap netip.AddrPort
		if c.Conn != nil {
			ap = c.Conn.Server
		}
		if s, ok := idx.byAddr[ap]; ok {
			return s
		}
	}
	return inv.addService(c)
}

func (inv *Inventory) addService(c *parser.Call) *service {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	idx := inv.services.Load()
	var ap netip.AddrPort
	if c.Conn != nil {
		ap = c.Conn.Server
	}
	host := string(c.Host)
	if host != "" {
		if s, ok := idx.byHost[host]; ok {
			return s
		}
	} else if s, ok := idx.byAddr[ap]; ok {
		return s
	}
	if len(idx.all) >= inv.opts.MaxServices {
		inv.serviceOverflow.Add(1)
		return nil
	}
	name := host
	switch {
	case name == "" && ap.IsValid():
		name = ap.String()
	case name == "":
		name = "unknown"
	case !hasPort(name) && ap.Port() != 0:
		name = name + ":" + strconv.Itoa(int(ap.Port()))
	}
	key := host
	if key == "" {
		key = name
	}
	s := inv.newService(key, name, host, int(ap.Port()))
	next := &serviceIndex{byHost: make(map[string]*service, len(idx.byHost)+1), byAddr: make(map[netip.AddrPort]*service, len(idx.byAddr)+1)}
	for k, v := range idx.byHost {
		next.byHost[k] = v
	}
	for k, v := range idx.byAddr {
		next.byAddr[k] = v
	}
	next.all = append(append([]*service(nil), idx.all...), s)
	if host != "" {
		next.byHost[host] = s
	} else {
		next.byAddr[ap] = s
	}
	inv.services.Store(next)
	return s
}

func hasPort(h string) bool {
	i := len(h) - 1
	for i >= 0 && h[i] >= '0' && h[i] <= '9' {
		i--
	}
	return i >= 0 && i < len(h)-1 && h[i] == ':' && (h[0] != '[' || h[i-1] == ']')
}

// newService binds the APIs that apply to a host and port and interns
// their operations' templates in the service's route table, so that
// declared routes and learned ones share one ID space.
func (inv *Inventory) newService(key, name, host string, port int) *service {
	s := &service{key: key, name: name, routes: route.NewTable(inv.opts.Route), declared: map[*spec.Operation]*route.Route{}}
	if inv.opts.Catalog != nil {
		s.apis = inv.opts.Catalog.Resolve(host, port, inv.opts.Scopes)
	}
	for _, a := range s.apis {
		docs := append([]*spec.Doc{a.Current}, a.Older...)
		for _, d := range docs {
			for _, op := range d.Ops {
				s.declared[op] = s.routes.Intern(declaredTemplate(a, op))
			}
		}
	}
	if len(s.apis) == 1 && s.apis[0].Title != "" {
		// A service described by one spec is known by the spec's title,
		// as the people who own the spec call it. With several candidate
		// specs, the address stays the less surprising name.
		s.name = s.apis[0].Title
	}
	return s
}

// declaredTemplate is the route of an operation as seen on the wire: the
// current version's first server base path and the path template.
func declaredTemplate(a *spec.API, op *spec.Operation) string {
	if len(a.Current.Servers) == 0 {
		return op.Path
	}
	return a.Current.Servers[0].BasePath + op.Path
}

// endpointFor resolves the call's route (a declared operation when the
// service has a spec and one matches, else the learned template) and
// returns its endpoint, creating it on first sight.
func (inv *Inventory) endpointFor(s *service, c *parser.Call, ts int64) *Endpoint {
	m := spec.MethodIndex(c.Method)
	var (
		r       *route.Route
		op      *spec.Operation
		api     *spec.API
		removed bool
	)
	path := c.Path
	if c.Protocol == parser.ProtoGRPC {
		// gRPC methods are routes as they are: /pkg.Service/Method.
		if r = s.routes.Interned(path); r == nil {
			r = s.routes.Intern(string(path))
		}
	}
	for _, a := range s.apis {
		if r != nil {
			break
		}
		if o, _ := a.Match(m, path); o != nil {
			op, api, r = o, a, s.declared[o]
			break
		}
	}
	if r == nil {
		for _, a := range s.apis {
			if o := a.MatchRemoved(m, path); o != nil {
				op, api, r, removed = o, a, s.declared[o], true
				break
			}
		}
	}
	if r == nil {
		if inv.endpoints.Load() < int64(inv.opts.MaxEndpoints) {
			r = s.routes.Lookup(path)
		} else if r = s.routes.Find(path); r == nil {
			// The endpoint table is full: a route learned now could never
			// have an endpoint, and learning it anyway would let the route
			// tables (services × routes each) grow long after the
			// endpoints stopped. The call counts on the overflow endpoint.
			r = s.routes.Overflow()
		}
	}
	if e := s.eps.get(int(r.ID)*spec.NumMethods + m); e != nil {
		return e
	}
	return inv.addEndpoint(s, m, r, op, api, removed, ts, c.Status)
}

func (inv *Inventory) newEndpoint(s *service, m int, r *route.Route) *Endpoint {
	return &Endpoint{svc: s, Method: m, Route: r}
}

func (inv *Inventory) addEndpoint(s *service, m int, r *route.Route, op *spec.Operation, api *spec.API, removed bool, ts int64, status int) *Endpoint {
	inv.mu.Lock()
	i := int(r.ID)*spec.NumMethods + m
	if e := s.eps.get(i); e != nil {
		inv.mu.Unlock()
		return e
	}
	if r.Overflow || inv.endpoints.Load() >= int64(inv.opts.MaxEndpoints) {
		inv.mu.Unlock()
		if inv.endpointOverflow.Add(1) == 1 {
			inv.log.Warn("endpoint table full; further new endpoints count on the overflow endpoint",
				"max_endpoints", inv.opts.MaxEndpoints, "service", s.name, "route", r.Template)
		}
		return inv.overflow
	}
	e := inv.newEndpoint(s, m, r)
	e.Op, e.API, e.Removed = op, api, removed
	raised := inv.staticFindings(e, ts, status)
	s.eps.set(i, e)
	inv.endpoints.Add(1)
	inv.mu.Unlock()
	inv.notify(raised)
	return e
}

// Stats counts what the inventory holds and what it had to fold into
// overflow buckets.
type Stats struct {
	Observed         uint64 `json:"observed"`
	Services         int    `json:"services"`
	Endpoints        int64  `json:"endpoints"`
	EndpointOverflow uint64 `json:"endpoint_overflow"`
	ServiceOverflow  uint64 `json:"service_overflow"`
	RouteOverflow    uint64 `json:"route_overflow"`
	RouteCollapses   uint64 `json:"route_collapses"`
	// Principals tracked on object endpoints, and calls whose principal
	// went to an endpoint's overflow entry.
	Principals        int64  `json:"principals"`
	PrincipalOverflow uint64 `json:"principal_overflow"`
}

// Stats returns the inventory's own counters.
func (inv *Inventory) Stats() Stats {
	st := Stats{
		Endpoints:        inv.endpoints.Load(),
		EndpointOverflow: inv.endpointOverflow.Load(),
		ServiceOverflow:  inv.serviceOverflow.Load(),

		Principals:        inv.principals.Load(),
		PrincipalOverflow: inv.principalOverflow.Load(),
	}
	for i := range inv.observed {
		st.Observed += inv.observed[i].n.Load()
	}
	idx := inv.services.Load()
	st.Services = len(idx.all)
	for _, s := range idx.all {
		st.RouteOverflow += s.routes.Overflowed()
		st.RouteCollapses += s.routes.Collapses()
	}
	return st
}
