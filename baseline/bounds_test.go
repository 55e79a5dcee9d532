package baseline

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// hostilePath is one call of a client that never repeats itself: random
// depth, random words, numbers, hex ids and UUIDs, random query names.
func hostilePath(rng *rand.Rand, b *strings.Builder) string {
	b.Reset()
	for range 1 + rng.IntN(6) {
		b.WriteByte('/')
		switch rng.IntN(4) {
		case 0:
			fmt.Fprintf(b, "%d", rng.Uint64())
		case 1:
			fmt.Fprintf(b, "%016x", rng.Uint64())
		case 2:
			fmt.Fprintf(b, "%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()&(1<<48-1))
		default:
			for range 3 + rng.IntN(8) {
				b.WriteByte(byte('a' + rng.IntN(26)))
			}
		}
	}
	if rng.IntN(4) == 0 {
		fmt.Fprintf(b, "?q%d=1&p%d=2", rng.IntN(1<<20), rng.IntN(1<<20))
	}
	return b.String()
}

func heapMiB() float64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// A million random paths (and random query names and hosts) against a
// service with a spec, so that every new endpoint of it is a shadow finding
// and its declared ones collect drift: the endpoint table fills to its cap
// and stays there, the overflow endpoint counts the rest, and the heap
// stops growing once the caps are reached. -short runs 100,000.
func TestMillionRandomPathsStayBounded(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	base := heapMiB()
	inv := New(Options{Catalog: loadShop(t)})
	rng := rand.New(rand.NewPCG(11, 12))
	var b strings.Builder
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	var atQuarter float64
	for i := range n {
		var req string
		if i%8 == 0 {
			// Declared routes with random query names: drift findings
			// and query names per endpoint are capped too.
			req = fmt.Sprintf("GET /api/items/%d?x%d=1", rng.IntN(1000), rng.IntN(1<<20))
		} else {
			req = methods[rng.IntN(len(methods))] + " " + hostilePath(rng, &b)
		}
		c := call(req, 200+rng.IntN(4)*100, int64(i/1000), "")
		if i%2 == 1 {
			// Random hosts: new services, each with its own route table,
			// until the service cap.
			c.Host = fmt.Appendf(nil, "h%d.example:8080", rng.IntN(1500))
		}
		inv.Observe(c)
		if i == n/4 {
			atQuarter = heapMiB() - base
		}
	}
	atEnd := heapMiB() - base
	st := inv.Stats()
	t.Logf("%d random calls: %d endpoints (cap %d), %d services (cap %d), %d calls past the endpoint cap, %d past the service cap, %d route overflows, %d route collapses; heap %.1f MiB after %d calls, %.1f MiB after %d",
		n, st.Endpoints, DefaultMaxEndpoints, st.Services, DefaultMaxServices, st.EndpointOverflow, st.ServiceOverflow,
		st.RouteOverflow, st.RouteCollapses, atQuarter, n/4, atEnd, n)
	if st.Endpoints != DefaultMaxEndpoints || st.EndpointOverflow == 0 {
		t.Fatalf("%d endpoints and %d calls past the cap, want the table full at %d and the rest on the overflow endpoint",
			st.Endpoints, st.EndpointOverflow, DefaultMaxEndpoints)
	}
	snap := inv.Snapshot()
	var total uint64
	for _, e := range snap.Endpoints {
		total += e.Count
	}
	if total != uint64(n) {
		t.Fatalf("counted %d calls of %d", total, n)
	}
	if atEnd > 256 {
		t.Fatalf("heap %.1f MiB after %d calls, over 256", atEnd, n)
	}
	if grew := atEnd - atQuarter; grew > 16 {
		t.Fatalf("heap grew %.1f MiB between call %d and call %d: memory follows the traffic, not the caps", grew, n/4, n)
	}
	runtime.KeepAlive(inv)
}
