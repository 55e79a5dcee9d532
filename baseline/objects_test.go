package baseline

import (
	"fmt"
	"math"
	"net/netip"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// objCall is a call to /orders/{id} by a bearer of the JWT sub "who", at
// second sec.
func objCall(who string, id int, sec int64) *parser.Call {
	c := call(fmt.Sprintf("GET /orders/%d", id), 200, sec, "")
	c.ReqHeaders[parser.HdrAuthorization] = []byte("Bearer " + jwt(`{"sub":"`+who+`"}`))
	return c
}

func principalsOf(t *testing.T, inv *Inventory) map[string]PrincipalObjects {
	t.Helper()
	out := map[string]PrincipalObjects{}
	for _, e := range inv.Snapshot().Endpoints {
		if e.Route == "/orders/{id}" {
			for _, p := range e.Principals {
				out[p.Principal] = p
			}
		}
	}
	return out
}

// near reports whether a linear-counting estimate is within five standard
// errors of want: sqrt(m(e^t - t - 1)) for m bits and load t = want/m
// (Whang et al. 1990). The ids are hashed with a per-process random seed,
// so a fixed tolerance such as 12% fails a few runs in a hundred at a few
// hundred ids (one standard error is 5.5% at 300 ids in 256 bits).
func near(got, want uint64) bool {
	t := float64(want) / objBits
	tol := 5*math.Sqrt(objBits*(math.Exp(t)-t-1)) + 1
	return math.Abs(float64(got)-float64(want)) <= tol
}

func TestDistinctObjectsPerPrincipal(t *testing.T) {
	inv := New(Options{Key: []byte("k")})
	// The walker reads 300 different orders within an hour, each twice;
	// the owner reads their own 3 orders over and over.
	for i := 0; i < 300; i++ {
		inv.Observe(objCall("walker", 1000+i, int64(i)))
		inv.Observe(objCall("walker", 1000+i, int64(i)))
		inv.Observe(objCall("owner", 1+i%3, int64(i)))
	}
	var walker, owner Principal
	principalOf(objCall("walker", 0, 0), nil, &walker)
	principalOf(objCall("owner", 0, 0), nil, &owner)
	ps := principalsOf(t, inv)
	w, o := ps[walker.String([]byte("k"))], ps[owner.String([]byte("k"))]
	if !near(w.Objects1h, 300) || !near(w.Objects24, 300) {
		t.Errorf("walker %+v, want about 300 objects", w)
	}
	// Two of 3 ids share a bit in about 1.2% of seeds: 2 is a collision,
	// not an error; anything else is.
	if o.Objects1h < 2 || o.Objects1h > 3 || o.Objects24 != o.Objects1h {
		t.Errorf("owner %+v, want 3 objects", o)
	}
}

func TestDistinctObjectsWindows(t *testing.T) {
	inv := New(Options{})
	hour := int64(3600)
	base := 1_700_002_800 - 1_700_000_000 // an hour boundary, in call()'s seconds
	// 50 orders in hour 0, 40 others in hour 20, 10 others in hour 23.
	for i := 0; i < 50; i++ {
		inv.Observe(objCall("p", i, int64(base)+int64(i)))
	}
	for i := 0; i < 40; i++ {
		inv.Observe(objCall("p", 100+i, int64(base)+20*hour+int64(i)))
	}
	for i := 0; i < 10; i++ {
		inv.Observe(objCall("p", 200+i, int64(base)+23*hour+int64(i)))
	}
	for _, p := range principalsOf(t, inv) {
		if !near(p.Objects1h, 10) || !near(p.Objects6h, 50) || !near(p.Objects24, 100) {
			t.Fatalf("windows %+v, want 1h 10, 6h 50, 24h 100", p)
		}
		return
	}
	t.Fatal("no principal tracked")
}

func TestPrincipalsPerEndpointCapped(t *testing.T) {
	inv := New(Options{MaxPrincipalsPerEndpoint: 8})
	for i := 0; i < 100; i++ {
		c := call(fmt.Sprintf("GET /orders/%d", i), 200, int64(i), "")
		c.Conn = &parser.ConnInfo{Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 1)}
		inv.Observe(c)
	}
	st := inv.Stats()
	ps := principalsOf(t, inv)
	if st.Principals != 8 || st.PrincipalOverflow != 92 || len(ps) != 9 || !near(ps["_overflow"].Objects1h, 92) {
		t.Fatalf("principals %d overflow %d entries %d", st.Principals, st.PrincipalOverflow, len(ps))
	}
	if _, ok := ps["ip:198.51.100.0"]; !ok {
		t.Fatalf("first caller missing: %v", ps)
	}
}

func TestRoutesWithoutParametersTrackNoObjects(t *testing.T) {
	inv := New(Options{})
	inv.Observe(call("GET /health", 200, 0, ""))
	if st := inv.Stats(); st.Principals != 0 {
		t.Fatalf("%d principals on a route without objects", st.Principals)
	}
}
