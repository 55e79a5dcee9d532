package baseline

import (
	"sync"
	"sync/atomic"

	"github.com/apisonar/apisonar/baseline/route"
	"github.com/apisonar/apisonar/baseline/spec"
)

// Time buckets: a ring of per-minute (by default) counters. Each bucket is
// one 64-bit word: the bucket's epoch in the top 20 bits, calls in the next
// 24, failed calls (5xx or no response) in the low 20, so that a call is
// counted with one atomic add and a new minute is claimed with one CAS.
const (
	bucketErrBits   = 20
	bucketCallBits  = 24
	bucketEpochBits = 64 - bucketErrBits - bucketCallBits
	bucketCallOne   = 1 << bucketErrBits
	bucketEpochMask = 1<<bucketEpochBits - 1
)

// shard holds the counters one Observer writes. Each Observer writes its
// own shard of every endpoint, so two goroutines observing calls to the
// same endpoint never write the same cache line.
type shard struct {
	count     atomic.Uint64
	status    [6]atomic.Uint64 // no response, 1xx .. 5xx
	reqBytes  atomic.Uint64
	respBytes atomic.Uint64
	reqMax    atomic.Int64
	respMax   atomic.Int64
	last      atomic.Int64
	first     atomic.Int64
	_         [128 - 13*8]byte

	buckets [defaultBuckets]atomic.Uint64
	latency [latBuckets]atomic.Uint32
	_       [64]byte
}

// Endpoint is one (service, method, route) and its statistics.
type Endpoint struct {
	svc    *service
	Method int // spec.MethodIndex slot
	Route  *route.Route
	// Op is the declared operation the endpoint matched, nil for a shadow
	// endpoint; Removed is set when it matched an operation that only an
	// older version of the spec declares.
	Op       *spec.Operation
	API      *spec.API
	Removed  bool
	Overflow bool

	// shards are allocated on an Observer's first call to the endpoint,
	// so memory follows the concurrency an endpoint really sees.
	shards  [MaxShards]atomic.Pointer[shard]
	callers hll
	// authKinds is a bitmap of the PrincipalKinds of its callers.
	authKinds atomic.Uint32
	// codes is a bitmap of the status codes seen (0..639).
	codes [10]atomic.Uint64

	// findings raised on this endpoint; drift maps are copied on write
	// under mu, read lock-free.
	mu     sync.Mutex
	static []*findingState // shadow_api, zombie_api
	// shadowPending: an undeclared endpoint under a spec that has not yet
	// answered a call with a status showing it exists (only 404s and the
	// like so far); its first such answer raises shadow_api.
	shadowPending atomic.Bool
	drift         atomic.Pointer[driftFindings]
	// objects tracks, on object endpoints, each principal's distinct
	// object ids (see objects.go).
	objects atomic.Pointer[objectTable]
	// query holds the query parameter names seen (at most maxQueryNames).
	query atomic.Pointer[map[string]uint32]
}

type driftFindings struct {
	params   map[string]*findingState
	statuses map[int]*findingState
	fields   map[string]*findingState
}

const maxQueryNames = 32

// shard returns shard i, allocating it on first use.
func (e *Endpoint) shard(i int) *shard {
	if sh := e.shards[i].Load(); sh != nil {
		return sh
	}
	e.shards[i].CompareAndSwap(nil, new(shard))
	return e.shards[i].Load()
}

func (e *Endpoint) eachShard(f func(*shard)) {
	for i := range e.shards {
		if sh := e.shards[i].Load(); sh != nil {
			f(sh)
		}
	}
}

func (e *Endpoint) total() (n uint64) {
	e.eachShard(func(sh *shard) { n += sh.count.Load() })
	return n
}

func (e *Endpoint) lastSeen() (t int64) {
	e.eachShard(func(sh *shard) { t = max(t, sh.last.Load()) })
	return t
}

func (e *Endpoint) firstSeen() (t int64) {
	e.eachShard(func(sh *shard) {
		if v := sh.first.Load(); v != 0 && (t == 0 || v < t) {
			t = v
		}
	})
	return t
}

func maxInt64(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func minInt64(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if (old != 0 && v >= old) || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// epTable maps route ID × method slot to endpoints. Readers index two
// levels of atomic pointers; writers (under the inventory lock) add chunks
// by copying the small top-level slice.
type epTable struct {
	chunks atomic.Pointer[[]*epChunk]
}

const epChunkSize = 256

type epChunk [epChunkSize]atomic.Pointer[Endpoint]

func (t *epTable) get(i int) *Endpoint {
	cs := t.chunks.Load()
	if cs == nil || i/epChunkSize >= len(*cs) {
		return nil
	}
	return (*cs)[i/epChunkSize][i%epChunkSize].Load()
}

// set stores e at i; the caller holds the inventory lock.
func (t *epTable) set(i int, e *Endpoint) {
	var cs []*epChunk
	if p := t.chunks.Load(); p != nil {
		cs = *p
	}
	if i/epChunkSize >= len(cs) {
		next := make([]*epChunk, i/epChunkSize+1)
		copy(next, cs)
		for k := len(cs); k < len(next); k++ {
			next[k] = new(epChunk)
		}
		cs = next
		t.chunks.Store(&cs)
	}
	cs[i/epChunkSize][i%epChunkSize].Store(e)
}

func (t *epTable) each(f func(*Endpoint)) {
	cs := t.chunks.Load()
	if cs == nil {
		return
	}
	for _, c := range *cs {
		for i := range c {
			if e := c[i].Load(); e != nil {
				f(e)
			}
		}
	}
}
