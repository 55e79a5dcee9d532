package spec

import (
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// Methods are the HTTP methods an operation can have, in a fixed order:
// MethodIndex maps a request method to its place here.
var methodNames = [...]string{"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE", "QUERY", "CONNECT"}

// NumMethods is the number of method slots; the last one, MethodOther,
// holds every method not in the list.
const (
	MethodOther = len(methodNames)
	NumMethods  = MethodOther + 1
)

// MethodIndex returns the slot of method m (case-sensitive, as on the
// wire), or MethodOther.
func MethodIndex(m []byte) int {
	for i, n := range methodNames {
		if string(m) == n {
			return i
		}
	}
	return MethodOther
}

// MethodName returns the method of slot i; "OTHER" for MethodOther.
func MethodName(i int) string {
	if i >= 0 && i < len(methodNames) {
		return methodNames[i]
	}
	return "OTHER"
}

// Server is where a document says its API is served. An empty Host matches
// any host; Port 0 matches any port.
type Server struct {
	Host     string
	Port     int
	BasePath string // "" or "/api/v3", never a trailing slash
}

// Doc is one loaded document: one version of one API.
type Doc struct {
	File     string
	Title    string
	Version  string // info.version
	OpenAPI  string // "2.0" for Swagger documents, else the openapi field
	Servers  []Server
	Ops      []*Operation
	Warnings []string
	// T is the document in OpenAPI 3 form (Swagger 2.0 converted).
	T *openapi3.T
}

// Operation is one declared method on one path template.
type Operation struct {
	Doc         *Doc
	Method      int    // slot, see MethodIndex
	Path        string // template as declared, e.g. "/pets/{petId}"
	OperationID string
	Deprecated  bool
	// Secured is true when the operation (or the document) requires a
	// credential.
	Secured bool
	// Query holds the names of the declared query parameters.
	Query map[string]struct{}

	statuses statusSet
	// fields per response key ("200", "2XX", "default"): the top-level
	// JSON properties the schema declares.
	fields map[string]*FieldSet
}

// FieldSet is the set of top-level properties a response schema declares.
// Open schemas (additionalProperties, no properties at all) accept any
// field.
type FieldSet struct {
	Names map[string]struct{}
	Open  bool
}

// Documents reports whether status is one of the operation's declared
// responses (exactly, by range such as 2XX, or through default).
func (o *Operation) Documents(status int) bool { return o.statuses.has(status) }

// DeclaredStatuses lists the response keys as declared.
func (o *Operation) DeclaredStatuses() []string { return o.statuses.keys }

// Fields returns the declared top-level fields of the JSON response for
// status, or nil when the operation declares no JSON schema for it.
func (o *Operation) Fields(status int) *FieldSet {
	if o.fields == nil {
		return nil
	}
	code := strconv.Itoa(status)
	if f, ok := o.fields[code]; ok {
		return f
	}
	if f, ok := o.fields[code[:1]+"XX"]; ok {
		return f
	}
	return o.fields["default"]
}

// statusSet is a bitmap over status codes 0..599 plus the declared keys.
type statusSet struct {
	bits [10]uint64
	all  bool
	keys []string
}

func (s *statusSet) has(code int) bool {
	if s.all {
		return true
	}
	if code < 0 || code >= 640 {
		return false
	}
	return s.bits[code>>6]&(1<<(code&63)) != 0
}

func (s *statusSet) add(key string) {
	s.keys = append(s.keys, key)
	k := strings.ToUpper(key)
	switch {
	case k == "DEFAULT":
		s.all = true
	case len(k) == 3 && k[1:] == "XX" && k[0] >= '1' && k[0] <= '5':
		base := int(k[0]-'0') * 100
		for c := base; c < base+100; c++ {
			s.bits[c>>6] |= 1 << (c & 63)
		}
	default:
		if c, err := strconv.Atoi(k); err == nil && c >= 0 && c < 640 {
			s.bits[c>>6] |= 1 << (c & 63)
		}
	}
}

func newDoc(file string, t *openapi3.T) *Doc {
	d := &Doc{File: file, OpenAPI: t.OpenAPI, T: t}
	if d.OpenAPI == "" {
		d.OpenAPI = "2.0"
	}
	if t.Info != nil {
		d.Title, d.Version = t.Info.Title, t.Info.Version
	}
	d.Servers = servers(t.Servers)
	docSecured := len(t.Security) > 0
	if t.Paths == nil {
		return d
	}
	for _, path := range t.Paths.InMatchingOrder() {
		item := t.Paths.Value(path)
		if item == nil {
			continue
		}
		for m, op := range item.Operations() {
			o := &Operation{
				Doc:         d,
				Method:      MethodIndex([]byte(strings.ToUpper(m))),
				Path:        path,
				OperationID: op.OperationID,
				Deprecated:  op.Deprecated,
				Secured:     docSecured,
				Query:       map[string]struct{}{},
			}
			if op.Security != nil {
				o.Secured = len(*op.Security) > 0
			}
			for _, ps := range [2]openapi3.Parameters{item.Parameters, op.Parameters} {
				for _, p := range ps {
					if p != nil && p.Value != nil && p.Value.In == openapi3.ParameterInQuery {
						o.Query[p.Value.Name] = struct{}{}
					}
				}
			}
			if op.Responses != nil {
				keys := op.Responses.Keys()
				sort.Strings(keys)
				for _, k := range keys {
					o.statuses.add(k)
					if fs := jsonFields(op.Responses.Value(k)); fs != nil {
						if o.fields == nil {
							o.fields = map[string]*FieldSet{}
						}
						o.fields[strings.ToUpper(k)] = fs
						if strings.EqualFold(k, "default") {
							o.fields["default"] = fs
						}
					}
				}
			}
			d.Ops = append(d.Ops, o)
		}
	}
	sort.Slice(d.Ops, func(i, j int) bool {
		if d.Ops[i].Path != d.Ops[j].Path {
			return d.Ops[i].Path < d.Ops[j].Path
		}
		return d.Ops[i].Method < d.Ops[j].Method
	})
	return d
}

// jsonFields returns the top-level properties of a JSON response schema,
// or nil when the response declares no JSON schema.
func jsonFields(r *openapi3.ResponseRef) *FieldSet {
	if r == nil || r.Value == nil {
		return nil
	}
	for ct, mt := range r.Value.Content {
		if !isJSON(ct) || mt == nil || mt.Schema == nil {
			continue
		}
		fs := &FieldSet{Names: map[string]struct{}{}}
		collectFields(mt.Schema, fs, 0)
		return fs
	}
	return nil
}

func isJSON(ct string) bool {
	ct = strings.ToLower(ct)
	return strings.HasPrefix(ct, "application/json") || strings.Contains(ct, "+json") || ct == "*/*"
}

func collectFields(s *openapi3.SchemaRef, fs *FieldSet, depth int) {
	if s == nil || s.Value == nil || depth > 8 {
		fs.Open = true
		return
	}
	v := s.Value
	if v.Type != nil && v.Type.Is("array") {
		// A list response: the fields are those of its items.
		collectFields(v.Items, fs, depth+1)
		return
	}
	for _, group := range [3]openapi3.SchemaRefs{v.AllOf, v.OneOf, v.AnyOf} {
		for _, sub := range group {
			collectFields(sub, fs, depth+1)
		}
	}
	for name := range v.Properties {
		fs.Names[name] = struct{}{}
	}
	ap := v.AdditionalProperties
	if (ap.Has != nil && *ap.Has) || ap.Schema != nil {
		fs.Open = true
	}
	if len(v.Properties) == 0 && len(v.AllOf)+len(v.OneOf)+len(v.AnyOf) == 0 {
		// No declared properties: nothing to hold observed fields against.
		fs.Open = true
	}
}

// servers turns server URLs (with their variables' defaults) into hosts,
// ports and base paths.
func servers(ss openapi3.Servers) []Server {
	var out []Server
	for _, s := range ss {
		if s == nil {
			continue
		}
		raw := s.URL
		for name, v := range s.Variables {
			if v != nil {
				raw = strings.ReplaceAll(raw, "{"+name+"}", v.Default)
			}
		}
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		srv := Server{Host: strings.ToLower(u.Hostname()), BasePath: strings.TrimRight(u.Path, "/")}
		// Only an explicit port scopes the spec: behind a proxy or a TLS
		// terminator the scheme's default port says little about the
		// port the traced server listens on.
		if p := u.Port(); p != "" {
			srv.Port, _ = strconv.Atoi(p)
		}
		out = append(out, srv)
	}
	if len(out) == 0 {
		out = append(out, Server{})
	}
	return out
}
