package baseline

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/parser"
)

// The inventory's OpenAPI document is valid OpenAPI (kin-openapi's
// validator) and reads back through our own loader with the routes,
// parameter types, status codes and credentials that were observed.
func TestInventoryOpenAPIRoundTrip(t *testing.T) {
	inv := New(Options{Catalog: loadShop(t)})
	for i, tc := range shopTraffic {
		inv.Observe(call(tc.req, tc.status, int64(i), tc.body))
	}
	// A service without a spec: learned routes with two parameters of
	// different kinds, credentials of two kinds and none.
	other := func(req string, status int, auth string) {
		c := call(req, status, 50, "")
		c.Host = []byte("billing.internal")
		if auth != "" {
			c.ReqHeaders[parser.HdrAuthorization] = []byte(auth)
		}
		inv.Observe(c)
	}
	other("GET /users/12/invoices/2024-01-31?format=pdf", 200, "Bearer "+jwt(`{"sub":"u1"}`))
	other("GET /users/13/invoices/2024-02-29", 404, "")
	other("GET /users/13/orders/7", 200, "Basic YWxpY2U6eA==")

	doc := inv.Snapshot().OpenAPI("observed", "1")
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("generated document invalid: %v\n%s", err, data)
	}
	p := filepath.Join(t.TempDir(), "inventory.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	validateIndependently(t, p)
	d, err := spec.LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Warnings) > 0 {
		t.Fatalf("warnings on reload: %v", d.Warnings)
	}
	ops := map[string]*spec.Operation{}
	for _, o := range d.Ops {
		ops[spec.MethodName(o.Method)+" "+o.Path] = o
	}
	for _, want := range []string{
		"GET /api/items", "GET /api/items/all", "GET /api/items/{itemId}", "DELETE /api/items/{itemId}",
		"GET /api/export", "GET /api/admin/users/{id}",
		"GET /users/{id}/invoices/{id2}", "GET /users/{id}/orders/{id2}",
	} {
		if ops[want] == nil {
			t.Errorf("operation %s missing; have %v", want, keys(ops))
		}
	}
	if o := ops["GET /users/{id}/invoices/{id2}"]; o != nil {
		if !o.Documents(200) || !o.Documents(404) || o.Documents(500) {
			t.Errorf("statuses %v", o.DeclaredStatuses())
		}
		if _, ok := o.Query["format"]; !ok {
			t.Errorf("query parameter format missing: %v", o.Query)
		}
	}
	op := d.T.Paths.Value("/users/{id}/invoices/{id2}").Get
	types := map[string]string{}
	for _, p := range op.Parameters {
		s := p.Value.Schema.Value
		types[p.Value.Name] = s.Type.Slice()[0] + "/" + s.Format
	}
	if types["id"] != "integer/" || types["id2"] != "string/date" {
		t.Errorf("inferred types %v", types)
	}
	if sec := op.Security; sec == nil || len(*sec) != 2 {
		t.Errorf("security %v, want jwt and none", sec)
	}
	if d.T.Components == nil || d.T.Components.SecuritySchemes["jwt"] == nil || d.T.Components.SecuritySchemes["basic"] == nil {
		t.Errorf("security schemes %v", d.T.Components)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// validateIndependently runs an OpenAPI validator that is not ours: the
// validate-api command of the npm package @seriousme/openapi-schema-validator,
// which checks a document against the OpenAPI project's JSON schemas.
// Install with: npm install -g @seriousme/openapi-schema-validator@2.11.0
func validateIndependently(t *testing.T, file string) {
	t.Helper()
	bin, err := exec.LookPath("validate-api")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("validate-api (npm @seriousme/openapi-schema-validator) is not installed")
		}
		t.Log("skipping the independent validator: validate-api (npm @seriousme/openapi-schema-validator) is not installed")
		return
	}
	out, err := exec.Command(bin, file).CombinedOutput()
	var res struct {
		Valid bool `json:"valid"`
	}
	if err != nil || json.Unmarshal(out, &res) != nil || !res.Valid {
		t.Fatalf("validate-api: %v\n%s", err, out)
	}
	t.Logf("validate-api: %s", strings.TrimSpace(string(out)))
}
