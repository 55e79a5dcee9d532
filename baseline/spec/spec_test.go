package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const corpus = "../../../shared/corpora/openapi"

func corpusPath(t testing.TB, rel string) string {
	p := filepath.Join(corpus, rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("corpus file missing (shared/ must sit beside the repository): %v", err)
	}
	return p
}

// Every root document in the shared corpus must load: 2.0 (JSON, YAML,
// split over files), 3.0, 3.1 and 3.2.
func TestLoadEveryCorpusDocument(t *testing.T) {
	root := corpusPath(t, ".")
	n := 0
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || !isSpecName(p) {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if kind, _ := rootKind(data); kind == "" {
			return nil
		}
		n++
		t.Run(strings.TrimPrefix(p, root+"/"), func(t *testing.T) {
			d, err := LoadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if d.Title == "" {
				t.Error("no title")
			}
			// The webhook example declares webhooks only.
			if len(d.Ops) == 0 && !strings.Contains(p, "webhook") {
				t.Error("no operations")
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 38 { // the corpus README's folders hold 38 root documents
		t.Fatalf("only %d root documents found under %s", n, root)
	}
	// The folder form loads them all too, grouped by title.
	c, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.APIs) < 10 {
		t.Fatalf("%d APIs from the corpus folder", len(c.APIs))
	}
}

func TestSwaggerSplitAcrossFilesResolvesRefs(t *testing.T) {
	for _, f := range []string{"oai-examples/v2.0/json/petstore-separate/spec/swagger.json", "oai-examples/v2.0/yaml/petstore-separate/spec/swagger.yaml"} {
		d, err := LoadFile(corpusPath(t, f))
		if err != nil {
			t.Fatal(err)
		}
		var get *Operation
		for _, o := range d.Ops {
			if o.Path == "/pets/{id}" && MethodName(o.Method) == "GET" {
				get = o
			}
		}
		if get == nil {
			t.Fatalf("%s: GET /pets/{id} missing", f)
		}
		fs := get.Fields(200)
		if fs == nil {
			t.Fatalf("%s: no JSON fields for 200 (the $ref to Pet.* did not resolve)", f)
		}
		for _, want := range []string{"id", "name", "tag"} {
			if _, ok := fs.Names[want]; !ok {
				t.Errorf("%s: field %q missing from %v", f, want, fs.Names)
			}
		}
		if !get.Documents(200) || !get.Documents(500) /* default */ {
			t.Errorf("%s: statuses %v", f, get.DeclaredStatuses())
		}
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMalformedSpecNamesFileAndPlace(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, file, body string
		want             []string // substrings of the error
	}{
		{"yaml_syntax_error_has_line", "broken.yaml", "openapi: 3.0.0\ninfo:\n  title: x\n  version: '1'\npaths:\n  /a:\n    get: [unclosed\n", []string{"broken.yaml:", "not valid YAML"}},
		{"json_syntax_error_has_line", "broken.json", "{\n  \"openapi\": \"3.0.0\",\n  \"info\": {\"title\": \"x\" \"version\": \"1\"}\n}\n", []string{"broken.json:3"}},
		{"not_an_openapi_document", "other.yaml", "name: compose\nservices: {}\n", []string{"other.yaml", "not an OpenAPI"}},
		{"missing_ref_target", "ref.yaml", "openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              schema: {$ref: 'missing.yaml#/Thing'}\n", []string{"ref.yaml", "missing.yaml"}},
		{"remote_ref_refused", "remote.yaml", "openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              schema: {$ref: 'http://example.com/s.yaml#/Thing'}\n", []string{"remote.yaml", "refused"}},
		{"device_ref_refused", "dev.yaml", "openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              schema: {$ref: '/dev/zero#/Thing'}\n", []string{"dev.yaml", "not a regular file"}},
		{"unsupported_version", "old.yaml", "swagger: '1.2'\ninfo: {title: x, version: '1'}\npaths: {}\n", []string{"old.yaml", "swagger", "1.2"}},
		{"wrong_type_names_property", "types.yaml", "openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths:\n  /a: 7\n", []string{"types.yaml:4", "paths./a", "mapping"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.file, tc.body)
			_, err := Load(p)
			if err == nil {
				t.Fatal("loaded")
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not *spec.Error: %v", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func crapi(t testing.TB) *API {
	c, err := Load(corpusPath(t, "crapi/crapi-openapi-spec.json"))
	if err != nil {
		t.Fatal(err)
	}
	return c.APIs[0]
}

func TestMatchLiteralBeatsTemplate(t *testing.T) {
	a := crapi(t)
	cases := []struct {
		name, method, path, want string
		pathOnly                 bool
	}{
		{"orders_all_is_not_an_order", "GET", "/workshop/api/shop/orders/all", "/workshop/api/shop/orders/all", false},
		{"order_by_id", "GET", "/workshop/api/shop/orders/17", "/workshop/api/shop/orders/{order_id}", false},
		{"convert_video_is_not_a_video", "GET", "/identity/api/v2/user/videos/convert_video", "/identity/api/v2/user/videos/convert_video", false},
		{"video_by_id", "DELETE", "/identity/api/v2/user/videos/9", "/identity/api/v2/user/videos/{video_id}", false},
		{"recent_is_not_a_post", "GET", "/community/api/v2/community/posts/recent", "/community/api/v2/community/posts/recent", false},
		{"post_comment", "POST", "/community/api/v2/community/posts/abc/comment", "/community/api/v2/community/posts/{postId}/comment", false},
		{"backtracks_from_literal", "GET", "/identity/api/v2/vehicle/resend_email/location", "/identity/api/v2/vehicle/{vehicleId}/location", false},
		{"trailing_slash_route", "GET", "/workshop/api/mechanic/", "/workshop/api/mechanic/", false},
		{"method_not_declared", "DELETE", "/workshop/api/shop/orders/all", "", true},
		{"undeclared_path", "GET", "/workshop/api/shop/secret", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op, pm := a.Match(MethodIndex([]byte(tc.method)), []byte(tc.path))
			got := ""
			if op != nil {
				got = op.Path
			}
			if got != tc.want || pm != (tc.want != "" || tc.pathOnly) {
				t.Fatalf("Match(%s %s) = %q, pathMatched %v; want %q", tc.method, tc.path, got, pm, tc.want)
			}
		})
	}
}

func TestMatchStripsServerBasePath(t *testing.T) {
	c, err := Load(corpusPath(t, "oai-examples/v3.0/petstore.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a := c.APIs[0]
	if op, _ := a.Match(MethodIndex([]byte("GET")), []byte("/v1/pets/12")); op == nil || op.Path != "/pets/{petId}" {
		t.Fatalf("/v1/pets/12 matched %v", op)
	}
	if op, pm := a.Match(MethodIndex([]byte("GET")), []byte("/pets/12")); op != nil || pm {
		t.Fatal("path without the base path matched")
	}
	if got := c.Resolve("petstore.swagger.io:80", 80, nil); len(got) != 1 {
		t.Fatalf("Resolve by server host: %d APIs", len(got))
	}
	if got := c.Resolve("other.example", 80, nil); len(got) != 0 {
		t.Fatalf("Resolve of an unrelated host: %d APIs", len(got))
	}
	if got := c.Resolve("other.example", 8080, []Scope{{Title: a.Title, Ports: []int{8080}}}); len(got) != 1 {
		t.Fatal("a configured scope did not bind the API")
	}
}

const versionedSpec = `openapi: 3.0.3
info: {title: Shop, version: '%s'}
servers: [{url: /api}]
paths:
%s`

func TestVersionsNewestIsCurrentRemovedIsKnown(t *testing.T) {
	dir := t.TempDir()
	op := func(path, extra string) string {
		return fmt.Sprintf("  %s:\n    get:\n%s      responses: {'200': {description: ok}}\n", path, extra)
	}
	writeFile(t, dir, "v1.9.yaml", fmt.Sprintf(versionedSpec, "1.9.0", op("/items", "")+op("/legacy/export", "")+op("/items/{id}", "")))
	writeFile(t, dir, "v1.10.yaml", fmt.Sprintf(versionedSpec, "1.10.0", op("/items", "      deprecated: true\n")+op("/items/{itemId}", "")))
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.APIs) != 1 {
		t.Fatalf("%d APIs, want one with two versions", len(c.APIs))
	}
	a := c.APIs[0]
	if a.Current.Version != "1.10.0" {
		t.Fatalf("current = %s, want 1.10.0 (numeric, not text, order)", a.Current.Version)
	}
	get := MethodIndex([]byte("GET"))
	if op, _ := a.Match(get, []byte("/api/legacy/export")); op != nil {
		t.Fatal("removed operation matched the current version")
	}
	if op := a.MatchRemoved(get, []byte("/api/legacy/export")); op == nil || op.Doc.Version != "1.9.0" {
		t.Fatalf("removed operation not found in 1.9.0: %v", op)
	}
	if op := a.MatchRemoved(get, []byte("/api/items/4")); op != nil {
		t.Fatal("a renamed parameter counted as a removed operation")
	}
	if op, _ := a.Match(get, []byte("/api/items")); op == nil || !op.Deprecated {
		t.Fatal("deprecated flag lost")
	}
}

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.10.0", "1.9.0", 1}, {"2", "10", -1}, {"v2.0", "1.5", 1}, {"1.0.0", "1.0.0-beta", 1},
		{"1.0", "1.0.0", -1}, {"1.0", "1.0.rc1", 1}, {"abc", "abd", -1}, {"3.1.4", "3.1.4", 0},
	}
	for _, tc := range cases {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	a := crapi(t)
	p := []byte("/community/api/v2/community/posts/ConZLXacq3MqhbLQDrbACi/comment")
	m := MethodIndex([]byte("POST"))
	if n := testing.AllocsPerRun(1000, func() { a.Match(m, p) }); n != 0 {
		t.Fatalf("Match allocates %.1f", n)
	}
}

// generatedSpec writes an OpenAPI document with n operations: resources
// with collection and item routes, fixed routes beside templated ones.
func generatedSpec(t testing.TB, n int) string {
	var b strings.Builder
	b.WriteString("openapi: 3.0.3\ninfo: {title: Big, version: '1'}\nservers: [{url: /api/v1}]\npaths:\n")
	ops := 0
	for r := 0; ops < n; r++ {
		res := fmt.Sprintf("resource%d", r)
		for _, p := range []string{"/" + res, "/" + res + "/{id}", "/" + res + "/search", "/" + res + "/{id}/items/{itemId}"} {
			if ops == n {
				break
			}
			fmt.Fprintf(&b, "  %s:\n", p)
			for _, m := range []string{"get", "post"} {
				if ops == n {
					break
				}
				fmt.Fprintf(&b, "    %s:\n      responses: {'200': {description: ok}}\n", m)
				ops++
			}
		}
	}
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func BenchmarkMatch500Ops(b *testing.B) {
	c, err := Load(generatedSpec(b, 500))
	if err != nil {
		b.Fatal(err)
	}
	a := c.APIs[0]
	if len(a.Current.Ops) != 500 {
		b.Fatalf("%d ops", len(a.Current.Ops))
	}
	paths := [][]byte{
		[]byte("/api/v1/resource17/search"),
		[]byte("/api/v1/resource42/9876/items/33"),
		[]byte("/api/v1/resource3/abc"),
		[]byte("/api/v1/nothing/here"),
	}
	get := MethodIndex([]byte("GET"))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a.Match(get, paths[i&3])
		i++
	}
}

// FuzzLoadData: any bytes give a document or an *Error naming the file,
// never a panic.
func FuzzLoadData(f *testing.F) {
	for _, s := range []string{
		"openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /a/{id}:\n    get:\n      responses: {'200': {description: ok}}\n",
		"swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {/a: {get: {responses: {200: {description: ok}}}}}\n",
		`{"openapi":"3.1.0","info":{"title":"t","version":"1"},"paths":{"/x":{"$ref":"#/paths/~1x"}}}`,
		"openapi: 3.0.0\npaths: {/a: {get: {responses: {'200': {$ref: '#/components/responses/x'}}}}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := loadData("fuzz.yaml", data)
		if err != nil {
			var se *Error
			if !errors.As(err, &se) || se.File != "fuzz.yaml" {
				t.Fatalf("error without the file: %v", err)
			}
			return
		}
		NewCatalog([]*Doc{d}).APIs[0].Match(0, []byte("/a/1"))
	})
}
