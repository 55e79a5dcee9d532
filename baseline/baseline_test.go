package baseline

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/apisonar/apisonar/baseline/spec"
	"github.com/apisonar/apisonar/parser"
)

// The reference vector from the SipHash paper (appendix A): key 00..0f,
// message 00..0e.
func TestSipHashReferenceVector(t *testing.T) {
	msg := make([]byte, 14)
	for i := range msg {
		msg[i] = byte(i + 1)
	}
	got := sipHash24(0x0706050403020100, 0x0f0e0d0c0b0a0908, 0x00, msg)
	if got != 0xa129ca6149be45e5 {
		t.Fatalf("SipHash-2-4 = %#x, want 0xa129ca6149be45e5", got)
	}
}

func TestHLLEstimateWithinError(t *testing.T) {
	for _, n := range []int{1, 10, 100, 1000, 50000} {
		var h hll
		for i := 0; i < n; i++ {
			h.add(sipHash24(1, 2, 0, []byte(fmt.Sprint(i))))
			h.add(sipHash24(1, 2, 0, []byte(fmt.Sprint(i)))) // repeats do not count
		}
		got := float64(h.estimate())
		// Three standard errors (3 x 3.3%), plus one for tiny counts.
		if d := got - float64(n); d > 0.1*float64(n)+1 || -d > 0.1*float64(n)+1 {
			t.Errorf("distinct %d estimated %v", n, got)
		}
	}
}

func TestLatencyBucketsBracketValues(t *testing.T) {
	for _, ns := range []int64{0, 999, 1024, 1500, 2047, 2048, 1e6, 1234567, 3e9, 1 << 36, 1 << 40} {
		b := latencyBucket(ns)
		if b < 0 || b >= latBuckets {
			t.Fatalf("bucket(%d) = %d out of range", ns, b)
		}
		if b < latBuckets-1 && float64(ns) >= latencyUpper(b) {
			t.Errorf("%d ns in bucket %d whose upper bound is %v", ns, b, latencyUpper(b))
		}
		if b > 0 && float64(ns) < latencyUpper(b-1) {
			t.Errorf("%d ns in bucket %d but below the previous bound %v", ns, b, latencyUpper(b-1))
		}
	}
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func jwt(payload string) string {
	return b64url(`{"alg":"HS256","typ":"JWT"}`) + "." + b64url(payload) + ".c2lnbmF0dXJl"
}

func TestPrincipalOf(t *testing.T) {
	client := netip.MustParseAddrPort("203.0.113.9:51000")
	proxy := netip.MustParseAddrPort("10.0.0.2:40000")
	cases := []struct {
		name    string
		hdr     map[parser.Header]string
		client  netip.AddrPort
		kind    PrincipalKind
		id      string
		display string // when set, the exported form
	}{
		{"jwt_sub_decoded", map[parser.Header]string{parser.HdrAuthorization: "Bearer " + jwt(`{"iss":"x","sub":"user-42","n":{"sub":"inner"}}`)}, client, PrincipalJWTSub, "user-42", ""},
		{"jwt_sub_after_nested_values", map[parser.Header]string{parser.HdrAuthorization: "bearer " + jwt(`{"a":[1,{"b":"}"}],"sub":"bob"}`)}, client, PrincipalJWTSub, "bob", ""},
		{"opaque_bearer", map[parser.Header]string{parser.HdrAuthorization: "Bearer abc.def"}, client, PrincipalBearer, "abc.def", ""},
		{"basic_user_without_password", map[parser.Header]string{parser.HdrAuthorization: "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}, client, PrincipalBasic, "alice", ""},
		{"api_key", map[parser.Header]string{parser.HdrAPIKey: "k-123"}, client, PrincipalAPIKey, "k-123", ""},
		{"session_cookie_among_others", map[parser.Header]string{parser.HdrCookie: "theme=dark; JSESSIONID=xyz789; lang=en"}, client, PrincipalSession, "xyz789", ""},
		{"no_credential_is_client_ip", map[parser.Header]string{parser.HdrCookie: "theme=dark"}, client, PrincipalIP, "", "ip:203.0.113.9"},
		{"xff_from_trusted_proxy", map[parser.Header]string{parser.HdrXForwardedFor: "198.51.100.1, 192.0.2.7"}, proxy, PrincipalIP, "", "ip:192.0.2.7"},
		{"xff_from_untrusted_client_ignored", map[parser.Header]string{parser.HdrXForwardedFor: "192.0.2.7"}, client, PrincipalIP, "", "ip:203.0.113.9"},
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &parser.Call{Conn: &parser.ConnInfo{Client: tc.client}}
			for h, v := range tc.hdr {
				c.ReqHeaders[h] = []byte(v)
			}
			var p Principal
			principalOf(c, trusted, &p)
			if p.Kind != tc.kind {
				t.Fatalf("kind %v, want %v", p.Kind, tc.kind)
			}
			if tc.id != "" && string(p.ID) != tc.id {
				t.Fatalf("id %q, want %q", p.ID, tc.id)
			}
			s := p.String([]byte("agent-key"))
			if tc.display != "" && s != tc.display {
				t.Fatalf("String() = %q, want %q", s, tc.display)
			}
			if tc.kind != PrincipalIP && strings.Contains(s, tc.id) {
				t.Fatalf("exported principal %q carries the raw identity", s)
			}
		})
	}
}

func loadShop(t testing.TB) *spec.Catalog {
	c, err := spec.Load("../testdata/specs/shop-v1.yaml", "../testdata/specs/shop-v2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	shopServer = netip.MustParseAddrPort("10.1.0.5:8080")
	shopClient = netip.MustParseAddrPort("10.1.0.9:51515")
)

// call builds an observed call: "GET /api/items?limit=5" with a status,
// at event second sec.
func call(req string, status int, sec int64, respBody string) *parser.Call {
	method, target, _ := strings.Cut(req, " ")
	path, query, _ := strings.Cut(target, "?")
	c := &parser.Call{
		Protocol: parser.ProtoHTTP1, Conn: &parser.ConnInfo{Client: shopClient, Server: shopServer},
		Start: 1_700_000_000e9 + sec*1e9, End: 1_700_000_000e9 + sec*1e9 + 3e6,
		Method: []byte(method), Host: []byte("shop.internal:8080"), Path: []byte(path), Query: []byte(query),
		Status: status, GRPCStatus: -1, RespBytes: int64(len(respBody)), RespBody: []byte(respBody),
	}
	if respBody != "" {
		c.RespContentType = []byte("application/json")
	}
	return c
}

type findingKey struct{ kind, method, route, subject string }

func keyOf(f Finding) findingKey {
	k := findingKey{f.Kind, f.Method, f.Route, ""}
	for _, e := range []string{"parameter", "field", "status", "reason"} {
		if v, ok := f.Evidence[e]; ok {
			k.subject = fmt.Sprint(v)
		}
	}
	return k
}

// shopTraffic drives every kind of spec finding once, and calls that must
// raise none.
var shopTraffic = []struct {
	req    string
	status int
	body   string
}{
	{"GET /api/items?limit=5", 200, `[{"id":1,"name":"pen","price":2.5}]`},
	{"GET /api/items/all", 200, ``},
	{"GET /api/items/7", 200, `{"id":7,"name":"ink","price":9}`},
	{"GET /api/items/8", 404, ``},
	{"GET /api/items?limit=5&debug=1", 200, `[]`},
	{"GET /api/items/9", 200, `{"id":9,"name":"nib","cost_price":1.2,"price":3}`},
	{"GET /api/items/10", 500, ``},
	{"DELETE /api/items/7", 204, ``},
	{"GET /api/export", 200, ``},
	{"GET /api/admin/users/12", 200, ``},
	{"GET /api/admin/users/13", 200, ``},
	// Outside the spec's base path /api: another API on the same host
	// (here an OTLP receiver), neither shadow nor anything else.
	{"POST /v1/logs", 200, ``},
	{"GET /apiary/index.html", 200, ``},
}

var shopWant = []findingKey{
	{KindUndocumentedParameter, "GET", "/api/items", "debug"},
	{KindUndocumentedField, "GET", "/api/items/{itemId}", "cost_price"},
	{KindUndocumentedStatus, "GET", "/api/items/{itemId}", "500"},
	{KindZombieAPI, "DELETE", "/api/items/{itemId}", "deprecated"},
	{KindZombieAPI, "GET", "/api/export", "removed"},
	{KindShadowAPI, "GET", "/api/admin/users/{id}", ""},
}

func sortedKeys(fs []Finding) []findingKey {
	var ks []findingKey
	for _, f := range fs {
		ks = append(ks, keyOf(f))
	}
	slices.SortFunc(ks, func(a, b findingKey) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return ks
}

func TestSpecFindingsRaisedOnceThenUpdated(t *testing.T) {
	var raised []Finding
	inv := New(Options{Catalog: loadShop(t), OnFinding: func(f Finding) { raised = append(raised, f) }})
	for round := int64(0); round < 3; round++ {
		for i, tc := range shopTraffic {
			inv.Observe(call(tc.req, tc.status, round*100+int64(i), tc.body))
		}
	}
	want := append([]findingKey(nil), shopWant...)
	slices.SortFunc(want, func(a, b findingKey) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	if got := sortedKeys(raised); !slices.Equal(got, want) {
		t.Fatalf("raised:\n%v\nwant:\n%v", got, want)
	}
	snap := inv.Snapshot()
	if got := sortedKeys(snap.Findings); !slices.Equal(got, want) {
		t.Fatalf("snapshot findings:\n%v\nwant:\n%v", got, want)
	}
	for _, f := range snap.Findings {
		wantCount := uint64(3)
		if f.Kind == KindShadowAPI {
			wantCount = 6 // two paths, one templated route, three rounds
		}
		if f.Count != wantCount {
			t.Errorf("%v: count %d, want %d", keyOf(f), f.Count, wantCount)
		}
		if !f.LastSeen.After(f.FirstSeen) || f.Time != f.FirstSeen {
			t.Errorf("%v: time %v first %v last %v", keyOf(f), f.Time, f.FirstSeen, f.LastSeen)
		}
		if f.Service != "Shop" || f.Summary == "" || f.OWASP == "" && f.Kind != KindUndocumentedParameter && f.Kind != KindUndocumentedStatus {
			t.Errorf("%v: %+v", keyOf(f), f)
		}
	}
	var orphans []string
	for _, o := range snap.Orphans {
		orphans = append(orphans, o.Method+" "+o.Path)
	}
	if len(orphans) != 0 {
		t.Errorf("orphans %v, want none: every current operation was called", orphans)
	}
}

func TestOrphansListDeclaredNeverSeen(t *testing.T) {
	inv := New(Options{Catalog: loadShop(t)})
	inv.Observe(call("GET /api/items", 200, 0, ""))
	var got []string
	for _, o := range inv.Snapshot().Orphans {
		got = append(got, o.Method+" "+o.Path)
	}
	slices.Sort(got)
	want := []string{"DELETE /items/{itemId}", "GET /items/all", "GET /items/{itemId}"}
	if !slices.Equal(got, want) {
		t.Fatalf("orphans %v, want %v", got, want)
	}
}

func TestServiceWithoutSpecRaisesNothing(t *testing.T) {
	n := 0
	inv := New(Options{OnFinding: func(Finding) { n++ }})
	inv.Observe(call("GET /anything/12", 200, 0, ""))
	snap := inv.Snapshot()
	if n != 0 || len(snap.Findings) != 0 {
		t.Fatalf("%d findings without any spec", n)
	}
	if len(snap.Endpoints) != 1 || snap.Endpoints[0].Route != "/anything/{id}" || snap.Endpoints[0].Service != "shop.internal:8080" {
		t.Fatalf("endpoints %+v", snap.Endpoints)
	}
}

func TestEndpointStatistics(t *testing.T) {
	inv := New(Options{})
	for i := 0; i < 100; i++ {
		c := call(fmt.Sprintf("GET /orders/%d", i), 200, int64(i), "")
		c.End = c.Start + int64(i+1)*1e6 // 1..100 ms
		c.ReqBytes, c.RespBytes = 10, int64(100+i)
		c.Conn = &parser.ConnInfo{Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 40)}), 1), Server: shopServer}
		if i%10 == 0 {
			c.Status = 503
		}
		inv.Observe(c)
	}
	es := inv.Snapshot().Endpoints[0]
	if es.Count != 100 || es.Status["2xx"] != 90 || es.Status["5xx"] != 10 {
		t.Fatalf("count %d status %v", es.Count, es.Status)
	}
	if !slices.Equal(es.StatusCodes, []int{200, 503}) {
		t.Fatalf("codes %v", es.StatusCodes)
	}
	if es.ReqBytes.Sum != 1000 || es.RespBytes.Max != 199 {
		t.Fatalf("sizes %+v %+v", es.ReqBytes, es.RespBytes)
	}
	// p50 of 1..100 ms is 50 ms; buckets are a quarter octave wide.
	if es.Latency.P50 < 50 || es.Latency.P50 > 50*1.19 || es.Latency.P99 < 99 || es.Latency.P99 > 99*1.19 {
		t.Fatalf("latency %+v", es.Latency)
	}
	if es.Callers < 38 || es.Callers > 42 { // 40 within the sketch's 3.3% error
		t.Fatalf("distinct callers %d, want 40", es.Callers)
	}
	if es.FirstSeen.Unix() != 1_700_000_000 || es.LastSeen.Unix() != 1_700_000_099 {
		t.Fatalf("first %v last %v", es.FirstSeen, es.LastSeen)
	}
	// One call a second from 1_700_000_000, which is 20 s into a minute:
	// 40 calls in that minute, 60 in the next; failures are the 503s
	// (i % 10 == 0).
	want := []TimeBucket{
		{eventTime(1_699_999_980e9), 40, 4}, // seconds 0..39
		{eventTime(1_700_000_040e9), 60, 6}, // seconds 40..99
	}
	if !slices.Equal(es.Buckets, want) {
		t.Fatalf("buckets %+v, want %+v", es.Buckets, want)
	}
}

func TestEndpointCapHoldsUnderRandomPaths(t *testing.T) {
	inv := New(Options{MaxEndpoints: 50})
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20000; i++ {
		p := fmt.Sprintf("/%c%c%c/%c%c", 'a'+rng.IntN(26), 'a'+rng.IntN(26), 'a'+rng.IntN(26), 'a'+rng.IntN(26), 'a'+rng.IntN(26))
		inv.Observe(call("GET "+p, 200, int64(i), ""))
	}
	st := inv.Stats()
	if st.Endpoints > 50 || st.EndpointOverflow == 0 {
		t.Fatalf("stats %+v", st)
	}
	snap := inv.Snapshot()
	var total uint64
	for _, e := range snap.Endpoints {
		total += e.Count
	}
	if total != 20000 {
		t.Fatalf("calls counted %d of 20000: the overflow bucket lost some", total)
	}
}

func TestObserveWarmDoesNotAllocate(t *testing.T) {
	inv := New(Options{Catalog: loadShop(t)})
	c := call("GET /api/items/7", 200, 0, `{"id":7,"name":"ink"}`)
	c.ReqHeaders[parser.HdrAuthorization] = []byte("Bearer " + jwt(`{"sub":"user-1"}`))
	learned := call("GET /api/admin/users/77", 200, 0, "")
	inv.Observe(c)
	inv.Observe(learned)
	if n := testing.AllocsPerRun(1000, func() { inv.Observe(c); inv.Observe(learned) }); n != 0 {
		t.Fatalf("Observe allocates %.1f times per warm call", n)
	}
}

func TestSnapshotRestoreKeepsCountsAndFindings(t *testing.T) {
	cat := loadShop(t)
	var first []Finding
	inv := New(Options{Catalog: cat, OnFinding: func(f Finding) { first = append(first, f) }})
	for i, tc := range shopTraffic {
		inv.Observe(call(tc.req, tc.status, int64(i), tc.body))
	}
	data, err := json.Marshal(inv.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var saved Snapshot
	if err := json.Unmarshal(data, &saved); err != nil {
		t.Fatal(err)
	}
	var again []Finding
	inv2 := New(Options{Catalog: cat, OnFinding: func(f Finding) { again = append(again, f) }})
	if err := inv2.Restore(&saved); err != nil {
		t.Fatal(err)
	}
	for i, tc := range shopTraffic {
		inv2.Observe(call(tc.req, tc.status, 1000+int64(i), tc.body))
	}
	if len(again) != 0 {
		t.Fatalf("restart raised %d findings again: %v", len(again), sortedKeys(again))
	}
	snap := inv2.Snapshot()
	if got, want := sortedKeys(snap.Findings), sortedKeys(first); !slices.Equal(got, want) {
		t.Fatalf("findings after restore %v, want %v", got, want)
	}
	for _, f := range snap.Findings {
		if f.FirstSeen.Unix() >= 1_700_000_000+1000 || f.LastSeen.Unix() < 1_700_000_000+1000 {
			t.Errorf("%v: first %v last %v: first seen lost or last seen not updated", keyOf(f), f.FirstSeen, f.LastSeen)
		}
		want := uint64(2)
		if f.Kind == KindShadowAPI {
			want = 4
		}
		if f.Count != want {
			t.Errorf("%v: count %d, want %d (saved plus new)", keyOf(f), f.Count, want)
		}
	}
	for _, e := range snap.Endpoints {
		if e.Route == "/api/items/{itemId}" && e.Method == "GET" && e.Count != 8 {
			t.Errorf("GET item count %d, want 8", e.Count)
		}
		// One client throughout: the restored sketch and the new calls
		// still count one caller.
		if e.Callers != 1 {
			t.Errorf("%s %s: %d distinct callers, want 1", e.Method, e.Route, e.Callers)
		}
	}
}

// fillEndpoints makes n endpoints (n/10 services with 10 routes each),
// every one of them called from each of observers goroutines' Observers.
func fillEndpoints(inv *Inventory, n, observers int) {
	for k := 0; k < observers; k++ {
		o := inv.NewObserver()
		for i := 0; i < n; i++ {
			c := call(fmt.Sprintf("GET /svc/r%d/items", i%10), 200, int64(i), "")
			c.Host = []byte(fmt.Sprintf("svc%d.internal", i/10))
			o.Observe(c)
		}
	}
}

// Two observing goroutines (two shards) on every endpoint: the agent's
// usual shape, one per traffic source.
func TestTenThousandEndpointsFitIn64MiB(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	inv := New(Options{MaxEndpoints: 10000, MaxServices: 1000})
	fillEndpoints(inv, 10000, 2)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := inv.Stats().Endpoints; got != 10000 {
		t.Fatalf("%d endpoints", got)
	}
	used := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	t.Logf("10000 endpoints: %.1f MiB heap", used)
	if used > 64 {
		t.Fatalf("10000 endpoints take %.1f MiB, over 64", used)
	}
	runtime.KeepAlive(inv)
}

func BenchmarkObserve(b *testing.B) {
	inv := New(Options{Catalog: loadShop(b)})
	c := call("GET /api/items/7", 200, 0, "")
	c.ReqHeaders[parser.HdrAuthorization] = []byte("Bearer " + jwt(`{"sub":"user-1","iat":1700000000}`))
	inv.Observe(c)
	b.ReportAllocs()
	for b.Loop() {
		c.Start += 1e6
		c.End += 1e6
		inv.Observe(c)
	}
}

func BenchmarkObserveLearnedRoute(b *testing.B) {
	inv := New(Options{})
	c := call("GET /identity/api/v2/vehicle/0be319d8-3c5b-4ba4-9e0f-2a1a4f1d3c55/location", 200, 0, "")
	inv.Observe(c)
	b.ReportAllocs()
	for b.Loop() {
		c.Start += 1e6
		c.End += 1e6
		inv.Observe(c)
	}
}

// BenchmarkObserveParallel: every goroutine has its own Observer and its
// own connection, all calling the same endpoint. Run with -cpu 1,2 and
// compare ns/op: with no shared written cache line, two goroutines halve it.
func BenchmarkObserveParallel(b *testing.B) {
	inv := New(Options{Catalog: loadShop(b)})
	warm := call("GET /api/items/7", 200, 0, "")
	inv.Observe(warm)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		o := inv.NewObserver()
		c := call("GET /api/items/7", 200, 0, "")
		c.ReqHeaders[parser.HdrAuthorization] = []byte("Bearer " + jwt(`{"sub":"user-1","iat":1700000000}`))
		for pb.Next() {
			c.Start += 1e6
			c.End += 1e6
			o.Observe(c)
		}
	})
}

// BenchmarkMemory10kEndpoints reports the heap that 10,000 endpoints take
// with 1, 2 and 4 observing goroutines writing every endpoint (4 is the
// worst case of the default shard count).
func BenchmarkMemory10kEndpoints(b *testing.B) {
	for _, obs := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("observers=%d", obs), func(b *testing.B) {
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				inv := New(Options{MaxEndpoints: 10000, MaxServices: 1000})
				fillEndpoints(inv, 10000, obs)
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
				runtime.KeepAlive(inv)
			}
		})
	}
}

func TestGRPCMethodIsItsOwnRoute(t *testing.T) {
	inv := New(Options{})
	for i := 0; i < 3; i++ {
		c := call("POST /greet.GreetService/GreetManyTimes2", 200, int64(i), "")
		c.Protocol = parser.ProtoGRPC
		c.GRPCStatus = i // OK, CANCELLED, UNKNOWN
		inv.Observe(c)
	}
	eps := inv.Snapshot().Endpoints
	if len(eps) != 1 || eps[0].Route != "/greet.GreetService/GreetManyTimes2" || eps[0].Count != 3 {
		t.Fatalf("endpoints %+v", eps)
	}
	if b := eps[0].Buckets; len(b) != 1 || b[0].Calls != 3 || b[0].Failures != 2 {
		t.Fatalf("buckets %+v, want 3 calls, 2 failed by grpc-status", b)
	}
}

func TestSpecBoundByServerHostOnly(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/pets.yaml"
	body := "openapi: 3.0.3\ninfo: {title: Pets, version: '1'}\nservers: [{url: 'https://pets.example.com/v1'}]\n" +
		"paths:\n  /pets/{id}:\n    get:\n      responses: {'200': {description: ok}}\n"
	if err := writeTemp(p, body); err != nil {
		t.Fatal(err)
	}
	cat, err := spec.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	inv := New(Options{Catalog: cat})
	pets := call("GET /v1/pets/3", 200, 0, "")
	pets.Host = []byte("pets.example.com")
	other := call("GET /v1/owners/3", 200, 0, "")
	other.Host = []byte("owners.example.com")
	inv.Observe(pets)
	inv.Observe(other)
	snap := inv.Snapshot()
	if len(snap.Findings) != 0 {
		t.Fatalf("a host the spec does not describe got findings: %v", sortedKeys(snap.Findings))
	}
	for _, e := range snap.Endpoints {
		switch e.Service {
		case "Pets":
			if !e.Declared || e.Route != "/v1/pets/{id}" {
				t.Errorf("pets endpoint %+v", e)
			}
		case "owners.example.com:8080":
			if e.Declared || e.Route != "/v1/owners/{id}" {
				t.Errorf("owners endpoint %+v", e)
			}
		default:
			t.Errorf("unexpected service %q", e.Service)
		}
	}
}

func writeTemp(p, body string) error { return os.WriteFile(p, []byte(body), 0o644) }

// Several goroutines observing the same and new endpoints while another
// takes snapshots: run under -race to check the lock-free paths.
func TestConcurrentObserveAndSnapshot(t *testing.T) {
	inv := New(Options{Catalog: loadShop(t), MaxEndpoints: 200})
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func(g int) {
			defer func() { done <- struct{}{} }()
			o := inv.NewObserver()
			for i := 0; i < 2000; i++ {
				tc := shopTraffic[i%len(shopTraffic)]
				o.Observe(call(tc.req, tc.status, int64(i), tc.body))
				o.Observe(call(fmt.Sprintf("GET /api/new/%c%d/x", 'a'+g, i%300), 200, int64(i), ""))
			}
		}(g)
	}
	for i := 0; i < 20; i++ {
		inv.Snapshot()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
	snap := inv.Snapshot()
	var sum uint64
	for _, e := range snap.Endpoints {
		sum += e.Count
	}
	if sum != 4*2*2000 || snap.Stats.Observed != sum {
		t.Fatalf("counted %d calls, observed %d, want %d", sum, snap.Stats.Observed, 4*2*2000)
	}
	if got := sortedKeys(snap.Findings); len(got) < len(shopWant) {
		t.Fatalf("findings %v", got)
	}
}

func TestCallerSketchSurvivesSnapshotBothForms(t *testing.T) {
	for _, n := range []int{3, 2000} { // sparse, then dense registers
		inv := New(Options{})
		for i := 0; i < n; i++ {
			c := call("GET /x", 200, int64(i), "")
			c.ReqHeaders[parser.HdrAPIKey] = []byte(fmt.Sprint("key-", i))
			inv.Observe(c)
		}
		data, _ := json.Marshal(inv.Snapshot())
		var s Snapshot
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatal(err)
		}
		inv2 := New(Options{})
		if err := inv2.Restore(&s); err != nil {
			t.Fatal(err)
		}
		before, after := s.Endpoints[0].Callers, inv2.Snapshot().Endpoints[0].Callers
		if before != after || (n == 3 && before != 3) {
			t.Fatalf("n=%d: %d callers before, %d after restore", n, before, after)
		}
	}
}

// TestShadowNeedsAnAnswerThatTheRouteExists: probes of paths the server
// does not have (404, 405, 410, 501) are not shadow APIs; the first answer
// that shows the route exists (here 401 after two 404s) raises it once,
// and a restored inventory still waits for such an answer.
func TestShadowNeedsAnAnswerThatTheRouteExists(t *testing.T) {
	var raised []Finding
	inv := New(Options{Catalog: loadShop(t), OnFinding: func(f Finding) { raised = append(raised, f) }})
	for i, tc := range []struct {
		req    string
		status int
	}{
		{"GET /api/wp-login.php", 404},
		{"POST /api/items/all", 405},
		{"GET /api/old-feed", 410},
		{"PATCH /api/items", 501},
		{"GET /api/internal/metrics", 404},
		{"GET /api/internal/metrics", 404},
		{"GET /api/probe", 0},
	} {
		inv.Observe(call(tc.req, tc.status, int64(i), ""))
	}
	if len(raised) != 0 {
		t.Fatalf("raised on answers that deny the route: %v", sortedKeys(raised))
	}
	// Persist and restore before the answer that counts.
	inv2 := New(Options{Catalog: loadShop(t), OnFinding: func(f Finding) { raised = append(raised, f) }})
	if err := inv2.Restore(inv.Snapshot()); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*Inventory{inv, inv2} {
		raised = raised[:0]
		in.Observe(call("GET /api/internal/metrics", 401, 10, ""))
		in.Observe(call("GET /api/internal/metrics", 200, 11, ""))
		want := []findingKey{{KindShadowAPI, "GET", "/api/internal/metrics", ""}}
		if got := sortedKeys(raised); !slices.Equal(got, want) {
			t.Errorf("after a 401 and a 200: raised %v, want %v", got, want)
		}
		for _, f := range in.Snapshot().Findings {
			if f.Kind == KindShadowAPI && f.Count != 4 {
				t.Errorf("shadow count %d, want 4 (every call to the endpoint)", f.Count)
			}
		}
	}
}
