package route

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
)

// Options bound one Table.
type Options struct {
	// MaxChildren is how many distinct literal children a node may have;
	// past it the node collapses and new segments under it become a
	// parameter. 0 means DefaultMaxChildren.
	MaxChildren int
	// MaxRoutes caps the routes (learned and interned) of one Table; past
	// it, new paths map to the overflow route. 0 means DefaultMaxRoutes.
	MaxRoutes int
	// MaxDepth caps the segments of a path; deeper paths map to the
	// overflow route. 0 means DefaultMaxDepth.
	MaxDepth int
}

// Defaults for Options.
const (
	DefaultMaxChildren = 32
	DefaultMaxRoutes   = 4096
	DefaultMaxDepth    = 24
)

// nodesPerRoute bounds the tree's nodes as a multiple of MaxRoutes.
const nodesPerRoute = 4

// OverflowTemplate is the template of the route that stands for every path
// a full Table could not learn.
const OverflowTemplate = "/{overflow}"

// ParamName is the placeholder a learned template uses for a parameter.
const ParamName = "{id}"

// Route is an interned route handle: one per distinct template in a Table.
// Handles are never freed or changed once issued, so callers may keep them
// and compare them by pointer.
type Route struct {
	// ID is dense per Table, from 0, in order of creation.
	ID uint32
	// Template is the path template, e.g. "/users/{id}/orders/{id}".
	Template string
	// Declared is true for a route interned from a spec template.
	Declared bool
	// Overflow marks the Table's overflow route.
	Overflow bool
	// ParamMask has bit i set when the i-th non-empty segment of a path
	// on this route is a parameter value (segments past 31 are not
	// tracked). Together with the path it names the object a call
	// addresses.
	ParamMask uint32
	// params are the parameter nodes along a learned route, in path order.
	params []*node
}

// ParamKinds returns, per parameter of a learned route in path order, the
// set of kinds of values seen there (bit 1<<Kind). Interned routes have no
// learned parameters and return nil.
func (r *Route) ParamKinds() []uint32 {
	if len(r.params) == 0 {
		return nil
	}
	out := make([]uint32, len(r.params))
	for i, p := range r.params {
		out[i] = p.kinds.Load()
	}
	return out
}

type node struct {
	parent *node
	seg    string // literal segment; empty for a parameter node
	param  bool
	depth  int

	kids      atomic.Pointer[kidSet]
	paramKid  atomic.Pointer[node]
	route     atomic.Pointer[Route]
	kinds     atomic.Uint32
	collapsed atomic.Bool
}

// Table learns the route templates of one service from the paths it sees.
//
// Lookup is safe for concurrent use and takes no lock for a path whose
// route is already known: the tree is read through atomic pointers and
// copied on write under a mutex held only while a node or route is added.
type Table struct {
	opts     Options
	root     *node
	overflow *Route

	mu       sync.Mutex
	routes   atomic.Pointer[[]*Route]          // by ID, copied on write
	interned atomic.Pointer[map[string]*Route] // copied on write
	nodes    int
	// Overflowed counts lookups answered with the overflow route.
	overflowed atomic.Uint64
	collapses  atomic.Uint64
}

// NewTable returns an empty Table.
func NewTable(opts Options) *Table {
	if opts.MaxChildren <= 0 {
		opts.MaxChildren = DefaultMaxChildren
	}
	if opts.MaxRoutes <= 0 {
		opts.MaxRoutes = DefaultMaxRoutes
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	t := &Table{opts: opts, root: &node{}}
	t.interned.Store(&map[string]*Route{})
	t.overflow = &Route{ID: 0, Template: OverflowTemplate, Overflow: true}
	routes := []*Route{t.overflow}
	t.routes.Store(&routes)
	return t
}

// Overflow returns the route that stands for paths the Table could not
// learn (too many routes, too deep).
func (t *Table) Overflow() *Route { return t.overflow }

// Len returns the number of routes issued, the overflow route included.
func (t *Table) Len() int { return len(*t.routes.Load()) }

// Routes returns every route issued so far, by ID. The slice is shared and
// must not be modified.
func (t *Table) Routes() []*Route { return *t.routes.Load() }

// Overflowed returns how many lookups were answered with the overflow route.
func (t *Table) Overflowed() uint64 { return t.overflowed.Load() }

// Collapses returns how many nodes collapsed into a parameter.
func (t *Table) Collapses() uint64 { return t.collapses.Load() }

// Lookup returns the route of path (without query), learning it if it is
// new. Empty segments are ignored, so "/a//b/" and "/a/b" share a route.
// It does not allocate once the route is known.
func (t *Table) Lookup(path []byte) *Route {
	n := t.root
	depth := 0
	for i := 0; i < len(path); {
		for i < len(path) && path[i] == '/' {
			i++
		}
		j := len(path)
		if k := bytes.IndexByte(path[i:], '/'); k >= 0 {
			j = i + k
		}
		if j == i {
			break
		}
		seg := path[i:j]
		i = j
		depth++
		if depth > t.opts.MaxDepth {
			t.overflowed.Add(1)
			return t.overflow
		}
		if c := n.kids.Load().find(seg); c != nil {
			n = c
			continue
		}
		k := Classify(seg)
		if k == Literal && n.collapsed.Load() {
			k = String
		}
		if k == Literal {
			c := t.addLiteral(n, seg)
			if c == nil {
				t.overflowed.Add(1)
				return t.overflow
			}
			if c.param {
				k = String
			} else {
				n = c
				continue
			}
		}
		p := n.paramKid.Load()
		if p == nil {
			p = t.addParam(n)
		}
		if bit := uint32(1) << k; p.kinds.Load()&bit == 0 {
			p.kinds.Or(bit)
		}
		n = p
	}
	if r := n.route.Load(); r != nil {
		return r
	}
	return t.addRoute(n)
}

// Find returns the route Lookup would give path if that route exists
// already, learning nothing: nil when Lookup would have to add a node or a
// route. It takes no lock and does not allocate.
func (t *Table) Find(path []byte) *Route {
	n := t.root
	for i := 0; i < len(path); {
		for i < len(path) && path[i] == '/' {
			i++
		}
		j := len(path)
		if k := bytes.IndexByte(path[i:], '/'); k >= 0 {
			j = i + k
		}
		if j == i {
			break
		}
		seg := path[i:j]
		i = j
		if c := n.kids.Load().find(seg); c != nil {
			n = c
			continue
		}
		if Classify(seg) == Literal && !n.collapsed.Load() {
			return nil // Lookup would add a literal child
		}
		if n = n.paramKid.Load(); n == nil {
			return nil
		}
	}
	return n.route.Load()
}

// addLiteral adds the literal child seg under n, or, when n has reached its
// cap, collapses n and returns its parameter child. It returns nil when the
// Table is full.
func (t *Table) addLiteral(n *node, seg []byte) *node {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := n.kids.Load()
	if c := old.find(seg); c != nil {
		return c
	}
	if old.len() >= t.opts.MaxChildren {
		if !n.collapsed.Swap(true) {
			t.collapses.Add(1)
		}
		return t.addParamLocked(n)
	}
	if t.Len() >= t.opts.MaxRoutes || t.nodes >= t.opts.MaxRoutes*nodesPerRoute {
		// Refusing new nodes once routes or nodes are full keeps a flood of
		// random paths (or of deep paths that never end in a route) bounded.
		return nil
	}
	t.nodes++
	c := &node{parent: n, seg: string(seg), depth: n.depth + 1}
	n.kids.Store(old.with(c))
	return c
}

// kidSet holds a node's literal children. Most nodes have a handful, and
// comparing a few short strings is cheaper than hashing the segment, so
// small sets are a slice and only larger ones a map. A kidSet is never
// modified once published; with returns a new one.
type kidSet struct {
	list []*node
	m    map[string]*node
}

const kidListMax = 8

func (k *kidSet) find(seg []byte) *node {
	if k == nil {
		return nil
	}
	if k.m != nil {
		return k.m[string(seg)]
	}
	for _, c := range k.list {
		if c.seg == string(seg) {
			return c
		}
	}
	return nil
}

func (k *kidSet) len() int {
	switch {
	case k == nil:
		return 0
	case k.m != nil:
		return len(k.m)
	}
	return len(k.list)
}

func (k *kidSet) with(c *node) *kidSet {
	n := k.len() + 1
	if n <= kidListMax {
		next := &kidSet{list: make([]*node, 0, n)}
		if k != nil {
			next.list = append(next.list, k.list...)
		}
		next.list = append(next.list, c)
		return next
	}
	next := &kidSet{m: make(map[string]*node, n)}
	if k != nil {
		for _, x := range k.list {
			next.m[x.seg] = x
		}
		for s, x := range k.m {
			next.m[s] = x
		}
	}
	next.m[c.seg] = c
	return next
}

func (t *Table) addParam(n *node) *node {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addParamLocked(n)
}

func (t *Table) addParamLocked(n *node) *node {
	if p := n.paramKid.Load(); p != nil {
		return p
	}
	t.nodes++
	p := &node{parent: n, param: true, depth: n.depth + 1}
	n.paramKid.Store(p)
	return p
}

func (t *Table) addRoute(n *node) *Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := n.route.Load(); r != nil {
		return r
	}
	routes := *t.routes.Load()
	if len(routes) >= t.opts.MaxRoutes {
		t.overflowed.Add(1)
		return t.overflow
	}
	segs := make([]string, n.depth)
	var params []*node
	for c := n; c.parent != nil; c = c.parent {
		if c.param {
			segs[c.depth-1] = ParamName
			params = append(params, c)
		} else {
			segs[c.depth-1] = c.seg
		}
	}
	for i, j := 0, len(params)-1; i < j; i, j = i+1, j-1 {
		params[i], params[j] = params[j], params[i]
	}
	r := &Route{ID: uint32(len(routes)), Template: "/" + strings.Join(segs, "/"), params: params, ParamMask: templateMask(segs)}
	t.publish(routes, r)
	n.route.Store(r)
	return r
}

// publish appends r to the routes slice, copying it so readers holding the
// old slice never see a write.
func (t *Table) publish(routes []*Route, r *Route) {
	next := make([]*Route, len(routes)+1)
	copy(next, routes)
	next[len(routes)] = r
	t.routes.Store(&next)
}

// Intern returns the route handle of a declared template such as
// "/users/{userId}", creating it on first use. Interned routes share the ID
// space of learned ones but are not part of the learned tree: matching a
// path to a declared template is the spec matcher's job. It returns the
// overflow route when the Table is full.
func (t *Table) Intern(template string) *Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.interned.Load()
	if r, ok := old[template]; ok {
		return r
	}
	routes := *t.routes.Load()
	if len(routes) >= t.opts.MaxRoutes {
		t.overflowed.Add(1)
		return t.overflow
	}
	r := &Route{ID: uint32(len(routes)), Template: template, Declared: true, ParamMask: templateMask(strings.Split(template, "/"))}
	t.publish(routes, r)
	next := make(map[string]*Route, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[template] = r
	t.interned.Store(&next)
	return r
}

// Interned returns the interned route whose template is exactly path, or
// nil. It takes no lock and does not allocate: gRPC methods, which are
// routes as they are, are looked up this way on every call.
func (t *Table) Interned(path []byte) *Route {
	return (*t.interned.Load())[string(path)]
}

// templateMask marks the template segments that are parameters ("{id}",
// "{id}.json"), counting non-empty segments only, as Lookup does.
func templateMask(segs []string) uint32 {
	var m uint32
	i := 0
	for _, s := range segs {
		if s == "" {
			continue
		}
		if strings.ContainsRune(s, '{') && i < 32 {
			m |= 1 << i
		}
		i++
	}
	return m
}
