package baseline

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// securityScheme is the scheme the export declares for a kind of
// credential the inventory tells apart, by EndpointSnapshot.Auth name.
func securityScheme(name string) *openapi3.SecurityScheme {
	switch name {
	case "jwt":
		return &openapi3.SecurityScheme{Type: "http", Scheme: "bearer", BearerFormat: "JWT"}
	case "bearer":
		return &openapi3.SecurityScheme{Type: "http", Scheme: "bearer"}
	case "basic":
		return &openapi3.SecurityScheme{Type: "http", Scheme: "basic"}
	case "apikey":
		return &openapi3.SecurityScheme{Type: "apiKey", In: "header", Name: "X-API-Key"}
	}
	return &openapi3.SecurityScheme{Type: "apiKey", In: "cookie", Name: "session"}
}

// OpenAPI describes the observed inventory as an OpenAPI 3.0 document:
// one path per route (learned parameters numbered so each name is unique),
// one operation per method with its path and query parameters and the
// types inferred from the values seen, the status codes seen, and the
// credentials callers used. Endpoints of every service go in one document;
// each operation is tagged with its service(s). Figures go in x-apisonar-*
// extensions. The overflow endpoint is left out.
func (s *Snapshot) OpenAPI(title, version string) *openapi3.T {
	doc := &openapi3.T{
		OpenAPI: "3.0.3",
		Info:    &openapi3.Info{Title: title, Version: version, Description: "API inventory observed by apisonar from live traffic."},
		Paths:   openapi3.NewPaths(),
	}
	usedSchemes := map[string]bool{}
	tags := map[string]bool{}
	for _, e := range s.Endpoints {
		if e.Overflow {
			continue
		}
		path, pathParams := numberParams(e.Route, e.Params)
		item := doc.Paths.Value(path)
		if item == nil {
			item = &openapi3.PathItem{}
			doc.Paths.Set(path, item)
		}
		op := item.GetOperation(e.Method)
		if op == nil {
			if e.Method == "OTHER" || e.Method == "CONNECT" {
				continue // not an OpenAPI operation
			}
			op = openapi3.NewOperation()
			op.Responses = openapi3.NewResponses()
			op.Responses.Delete("default")
			op.OperationID = operationID(e.Method, path)
			op.Extensions = map[string]any{}
			item.SetOperation(e.Method, op)
			for _, p := range pathParams {
				op.AddParameter(p)
			}
		}
		op.Tags = appendUnique(op.Tags, e.Service)
		tags[e.Service] = true
		op.Deprecated = op.Deprecated || e.Deprecated
		for _, p := range e.Params {
			if p.In == "query" && op.Parameters.GetByInAndName("query", p.Name) == nil {
				op.AddParameter(openapi3.NewQueryParameter(p.Name).WithSchema(openapi3.NewStringSchema()))
			}
		}
		for _, code := range e.StatusCodes {
			if code < 100 || code > 599 {
				continue
			}
			key := strconv.Itoa(code)
			if op.Responses.Value(key) == nil {
				desc := "Observed " + key + " response"
				op.Responses.Set(key, &openapi3.ResponseRef{Value: openapi3.NewResponse().WithDescription(desc)})
			}
		}
		if op.Responses.Len() == 0 {
			desc := "No response observed"
			op.Responses.Set("default", &openapi3.ResponseRef{Value: &openapi3.Response{Description: &desc}})
		}
		sec := openapi3.SecurityRequirements{}
		for _, a := range e.Auth {
			if a == "none" {
				sec = append(sec, openapi3.SecurityRequirement{})
				continue
			}
			sec = append(sec, openapi3.SecurityRequirement{a: []string{}})
			usedSchemes[a] = true
		}
		if len(sec) > 0 {
			op.Security = &sec
		}
		prev, _ := op.Extensions["x-apisonar-count"].(uint64)
		op.Extensions["x-apisonar-count"] = prev + e.Count
		op.Extensions["x-apisonar-declared"] = e.Declared
		if !e.FirstSeen.IsZero() {
			op.Extensions["x-apisonar-first-seen"] = e.FirstSeen
			op.Extensions["x-apisonar-last-seen"] = e.LastSeen
		}
	}
	if len(usedSchemes) > 0 {
		doc.Components = &openapi3.Components{SecuritySchemes: openapi3.SecuritySchemes{}}
		for name := range usedSchemes {
			doc.Components.SecuritySchemes[name] = &openapi3.SecuritySchemeRef{Value: securityScheme(name)}
		}
	}
	names := make([]string, 0, len(tags))
	for t := range tags {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		doc.Tags = append(doc.Tags, &openapi3.Tag{Name: t})
	}
	return doc
}

// numberParams makes the parameter names of a route unique ("{id}",
// "{id2}", ...) and returns the path parameters with their inferred
// schemas.
func numberParams(route string, params []ParamSnapshot) (string, []*openapi3.Parameter) {
	segs := strings.Split(route, "/")
	seen := map[string]int{}
	var out []*openapi3.Parameter
	pi := 0
	for i, seg := range segs {
		if !strings.HasPrefix(seg, "{") || !strings.HasSuffix(seg, "}") {
			continue
		}
		name := strings.Trim(seg, "{}")
		seen[name]++
		if n := seen[name]; n > 1 {
			name = fmt.Sprintf("%s%d", name, n)
			segs[i] = "{" + name + "}"
		}
		var kinds []string
		for pi < len(params) && params[pi].In != "path" {
			pi++
		}
		if pi < len(params) {
			kinds = params[pi].Kinds
			pi++
		}
		out = append(out, openapi3.NewPathParameter(name).WithSchema(schemaFor(kinds)))
	}
	return strings.Join(segs, "/"), out
}

// schemaFor infers a parameter's schema from the kinds of values seen:
// one kind gives a type and format, a mix gives a plain string.
func schemaFor(kinds []string) *openapi3.Schema {
	if len(kinds) == 1 {
		switch kinds[0] {
		case "integer":
			return openapi3.NewIntegerSchema()
		case "uuid":
			return openapi3.NewUUIDSchema()
		case "date":
			return openapi3.NewStringSchema().WithFormat("date")
		case "email":
			return openapi3.NewStringSchema().WithFormat("email")
		case "hex":
			return openapi3.NewStringSchema().WithPattern("^[0-9a-fA-F]+$")
		}
	}
	return openapi3.NewStringSchema()
}

func operationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	for _, seg := range strings.Split(path, "/") {
		seg = strings.Trim(seg, "{}")
		if seg == "" {
			continue
		}
		b.WriteByte('_')
		for _, r := range seg {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				b.WriteRune(r)
			} else {
				b.WriteByte('_')
			}
		}
	}
	return b.String()
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
