package spec

import (
	"sort"
	"strings"
)

// Matcher finds the operation a request path and method belong to,
// following OpenAPI's path-template rules: a literal segment beats a
// template segment at the same place, so "/orders/all" is never
// "/orders/{id}" when both are declared. It is immutable once built and
// safe for concurrent use; Match does not allocate.
type Matcher struct {
	bases []string // server base paths, longest first; "" means none
	root  *mnode
}

type mnode struct {
	lit   map[string]*mnode
	param *mnode
	ops   [NumMethods]*Operation
	any   bool // some op ends here
}

func newMatcher(bases []string) *Matcher {
	seen := map[string]bool{}
	var bs []string
	for _, b := range bases {
		b = strings.TrimRight(b, "/")
		if !seen[b] {
			seen[b] = true
			bs = append(bs, b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return len(bs[i]) > len(bs[j]) })
	return &Matcher{bases: bs, root: &mnode{}}
}

func (m *Matcher) add(o *Operation) {
	n := m.root
	for _, seg := range strings.Split(o.Path, "/") {
		if seg == "" {
			continue
		}
		if strings.ContainsRune(seg, '{') {
			// "{id}" and partly templated segments such as "{id}.json"
			// both match any one segment.
			if n.param == nil {
				n.param = &mnode{}
			}
			n = n.param
			continue
		}
		if n.lit == nil {
			n.lit = map[string]*mnode{}
		}
		c := n.lit[seg]
		if c == nil {
			c = &mnode{}
			n.lit[seg] = c
		}
		n = c
	}
	if n.ops[o.Method] == nil {
		n.ops[o.Method] = o
	}
	n.any = true
}

// Match returns the operation for method (a MethodIndex slot) and path
// (without query). pathMatched is true when the path matches some
// operation's template, even if not with this method.
func (m *Matcher) Match(method int, path []byte) (op *Operation, pathMatched bool) {
	for _, b := range m.bases {
		rest, ok := stripBase(path, b)
		if !ok {
			continue
		}
		if n := m.root.walk(rest); n != nil {
			return n.ops[method], true
		}
	}
	return nil, false
}

// stripBase removes base from the front of path at a segment boundary.
func stripBase(path []byte, base string) ([]byte, bool) {
	if base == "" {
		return path, true
	}
	if len(path) < len(base) || string(path[:len(base)]) != base {
		return nil, false
	}
	rest := path[len(base):]
	if len(rest) > 0 && rest[0] != '/' {
		return nil, false
	}
	return rest, true
}

// walk descends segment by segment, literal first, backtracking to the
// template child when the literal branch leads nowhere.
func (n *mnode) walk(path []byte) *mnode {
	i := 0
	for i < len(path) && path[i] == '/' {
		i++
	}
	if i == len(path) {
		if n.any {
			return n
		}
		return nil
	}
	j := i
	for j < len(path) && path[j] != '/' {
		j++
	}
	seg, rest := path[i:j], path[j:]
	if c, ok := n.lit[string(seg)]; ok {
		if r := c.walk(rest); r != nil {
			return r
		}
	}
	if n.param != nil {
		return n.param.walk(rest)
	}
	return nil
}

// API is every loaded version of one API (documents sharing a title).
type API struct {
	Title   string
	Current *Doc
	// Older versions, newest first.
	Older []*Doc

	current *Matcher
	// removed matches operations that an older version declared and the
	// current one no longer does.
	removed *Matcher
}

// Match returns the current operation for a call, see Matcher.Match.
func (a *API) Match(method int, path []byte) (*Operation, bool) {
	return a.current.Match(method, path)
}

// MatchRemoved returns the newest older version's operation for a call
// that the current version no longer declares, or nil.
func (a *API) MatchRemoved(method int, path []byte) *Operation {
	if a.removed == nil {
		return nil
	}
	op, _ := a.removed.Match(method, path)
	return op
}

// BasePaths lists the current version's server base paths.
func (a *API) BasePaths() []string { return a.current.bases }

// Covers reports whether path lies under one of the API's server base
// paths (current or older versions): a path outside every base path is
// another API's on the same host, not an undeclared operation of this one.
func (a *API) Covers(path string) bool {
	if underAny(a.current.bases, path) {
		return true
	}
	return a.removed != nil && underAny(a.removed.bases, path)
}

func underAny(bases []string, path string) bool {
	if len(bases) == 0 {
		return true
	}
	for _, b := range bases {
		if b == "" || path == b || strings.HasPrefix(path, b) && path[len(b)] == '/' {
			return true
		}
	}
	return false
}

func newAPI(docs []*Doc) *API {
	sortDocs(docs)
	cur := docs[0]
	a := &API{Title: cur.Title, Current: cur, Older: docs[1:]}
	a.current = newMatcher(basePaths(cur))
	have := map[string]bool{}
	for _, o := range cur.Ops {
		a.current.add(o)
		have[opKey(o)] = true
	}
	for _, old := range a.Older {
		for _, o := range old.Ops {
			k := opKey(o)
			if have[k] {
				continue
			}
			have[k] = true // keep the newest older version of it
			if a.removed == nil {
				a.removed = newMatcher(append(basePaths(cur), basePaths(old)...))
			}
			a.removed.add(o)
		}
	}
	return a
}

func basePaths(d *Doc) []string {
	var out []string
	for _, s := range d.Servers {
		out = append(out, s.BasePath)
	}
	return out
}

// opKey names an operation by method and template shape, ignoring
// parameter names: "/pets/{id}" and "/pets/{petId}" are the same route.
func opKey(o *Operation) string {
	var b strings.Builder
	b.WriteString(MethodName(o.Method))
	b.WriteByte(' ')
	for _, seg := range strings.Split(o.Path, "/") {
		if seg == "" {
			continue
		}
		b.WriteByte('/')
		if strings.ContainsRune(seg, '{') {
			b.WriteString("{}")
		} else {
			b.WriteString(seg)
		}
	}
	return b.String()
}

// Catalog is every loaded API.
type Catalog struct {
	APIs []*API
}

// NewCatalog groups documents into APIs by title.
func NewCatalog(docs []*Doc) *Catalog {
	byTitle := map[string][]*Doc{}
	var titles []string
	for _, d := range docs {
		if _, ok := byTitle[d.Title]; !ok {
			titles = append(titles, d.Title)
		}
		byTitle[d.Title] = append(byTitle[d.Title], d)
	}
	c := &Catalog{}
	for _, t := range titles {
		c.APIs = append(c.APIs, newAPI(byTitle[t]))
	}
	return c
}

// Scope binds an API to services by configuration, overriding what its
// servers say. Empty fields match anything.
type Scope struct {
	Title string // the API's title
	Hosts []string
	Ports []int
}

// Resolve returns the APIs that apply to a service reached as host (Host
// header or :authority, with or without port) on server port. APIs whose
// servers (or configured scope) name the host come first; APIs that name
// no host apply to every service and follow. Nil when none applies.
func (c *Catalog) Resolve(host string, port int, scopes []Scope) []*API {
	h := strings.ToLower(host)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	h = strings.Trim(h, "[]")
	var exact, wildcard []*API
	for _, a := range c.APIs {
		if sc, ok := scopeFor(a, scopes); ok {
			if matchList(sc.Hosts, h) && matchPorts(sc.Ports, port) {
				if len(sc.Hosts) > 0 {
					exact = append(exact, a)
				} else {
					wildcard = append(wildcard, a)
				}
			}
			continue
		}
		hostMatch, anyHost := false, false
		for _, s := range a.Current.Servers {
			if s.Port != 0 && port != 0 && s.Port != port {
				continue
			}
			if s.Host == "" {
				anyHost = true
			} else if s.Host == h {
				hostMatch = true
			}
		}
		switch {
		case hostMatch:
			exact = append(exact, a)
		case anyHost:
			wildcard = append(wildcard, a)
		}
	}
	return append(exact, wildcard...)
}

// HasTitle reports whether an API of the catalog has this title.
func (c *Catalog) HasTitle(title string) bool {
	for _, a := range c.APIs {
		if a.Title == title {
			return true
		}
	}
	return false
}

func scopeFor(a *API, scopes []Scope) (Scope, bool) {
	for _, s := range scopes {
		if s.Title == a.Title {
			return s, true
		}
	}
	return Scope{}, false
}

func matchList(list []string, h string) bool {
	if len(list) == 0 {
		return true
	}
	for _, x := range list {
		if strings.EqualFold(x, h) {
			return true
		}
	}
	return false
}

func matchPorts(list []int, p int) bool {
	if len(list) == 0 {
		return true
	}
	for _, x := range list {
		if x == p {
			return true
		}
	}
	return false
}
