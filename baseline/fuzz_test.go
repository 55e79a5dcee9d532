package baseline

import (
	"strings"
	"testing"

	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/parser"
)

// FuzzObserve feeds hostile calls (any method, host, path, query,
// credentials and body bytes) to an inventory with a spec: it must never
// panic, and the endpoint cap must hold.
func FuzzObserve(f *testing.F) {
	f.Add("GET", "shop.internal", "/api/items/7", "a=1&b", "Bearer "+jwt(`{"sub":"x"}`), "sid=1", `{"id":1,"x":[1,{"y":"}"}]}`, 200)
	f.Add("DELETE", "", "/api/items/all", "", "Basic !!!", "", `[{"k":`, 500)
	f.Add("\x00", "h:99999", "//..//%00", "&&==", "Bearer a.b.c", "session=", `{"\\"":1}`, -1)
	cat, err := spec.Load("../testdata/specs/shop-v1.yaml", "../testdata/specs/shop-v2.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, host, path, query, auth, cookie, body string, status int) {
		inv := New(Options{Catalog: cat, MaxEndpoints: 8, OnFinding: func(Finding) {}})
		c := &parser.Call{
			Protocol: parser.ProtoHTTP1, Method: []byte(method), Host: []byte(host), Path: []byte(path),
			Query: []byte(query), Status: status, Start: 1, End: 2, RespBody: []byte(body), GRPCStatus: -1,
		}
		c.ReqHeaders[parser.HdrAuthorization] = []byte(auth)
		c.ReqHeaders[parser.HdrCookie] = []byte(cookie)
		for i := 0; i < 3; i++ {
			inv.Observe(c)
			c.Path = append(c.Path, "/x"...)
		}
		if strings.HasPrefix(path, "/") {
			c.Protocol = parser.ProtoGRPC
			inv.Observe(c)
		}
		snap := inv.Snapshot()
		if snap.Stats.Endpoints > 8 {
			t.Fatalf("%d endpoints over the cap of 8", snap.Stats.Endpoints)
		}
		var sum uint64
		for _, e := range snap.Endpoints {
			sum += e.Count
		}
		if sum != snap.Stats.Observed {
			t.Fatalf("endpoints count %d calls, %d observed", sum, snap.Stats.Observed)
		}
		snap.OpenAPI("fuzz", "1")
	})
}

func FuzzJSONScanners(f *testing.F) {
	for _, s := range []string{`{"sub":"a"}`, `{"a":{"b":[1,"]"]},"sub":"x\"y"}`, `[{"a":1,"b":`, `{"`, `{"a"::}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		jsonStringField(b, "sub")
		n := 0
		eachTopField(b, func(k []byte) { n++ })
		if n > 256 {
			t.Fatalf("%d fields from one body", n)
		}
		var buf [64]byte
		jwtSub(append([]byte("e30."), b...), buf[:])
	})
}
