package baseline

import (
	"bytes"
	"hash/maphash"
	"math"
	"math/bits"
	"sort"
	"sync/atomic"

	"github.com/apisonar/apisonar/parser"
)

// Per principal on an object endpoint (a route with a parameter), the
// distinct object ids it touched, over the last 1, 6 and 24 hours of event
// time: the ground a BOLA detector stands on.
//
// Each principal keeps 24 hourly slots; a slot is a 256-bit linear-counting
// bitmap of hashed object ids plus the hour it belongs to. A window is the
// OR of its hours' bitmaps, so ids seen in several hours count once. The
// estimate is exact-ish for small counts, within about 10% up to a few
// hundred, and saturates near 1,400 (reported as such).
const (
	objSlots     = 24
	objBits      = 256
	objWords     = objBits / 64
	objHourNanos = int64(3600e9)
)

type objSlot struct {
	hour atomic.Int64 // hour number + 1; 0 means empty
	bits [objWords]atomic.Uint64
}

// principalObjects has no call counter on purpose: observers on several
// goroutines hit the same principal, and a shared counter written per call
// is what keeps them from scaling. Once warm, add only loads.
type principalObjects struct {
	principal string
	first     int64
	slots     [objSlots]objSlot
}

func (p *principalObjects) add(ts int64, id uint64) {
	hour := ts/objHourNanos + 1
	s := &p.slots[hour%objSlots]
	if h := s.hour.Load(); h != hour {
		if h > hour || !s.hour.CompareAndSwap(h, hour) {
			// An older hour than the slot holds (out-of-order event
			// time), or another writer is turning the slot: this id is
			// counted by the slot's current hour or dropped with it.
			if s.hour.Load() != hour {
				return
			}
		} else {
			for i := range s.bits {
				s.bits[i].Store(0)
			}
		}
	}
	w, b := (id>>6)%objWords, id&63
	if s.bits[w].Load()&(1<<b) == 0 {
		s.bits[w].Or(1 << b)
	}
}

// distinct estimates the distinct ids over the hours hours ending at the
// hour of now.
func (p *principalObjects) distinct(now int64, hours int64) (n uint64, saturated bool) {
	cur := now/objHourNanos + 1
	var or [objWords]uint64
	for i := range p.slots {
		s := &p.slots[i]
		h := s.hour.Load()
		if h == 0 || h > cur || cur-h >= hours {
			continue
		}
		for w := range or {
			or[w] |= s.bits[w].Load()
		}
	}
	ones := 0
	for _, w := range or {
		ones += bits.OnesCount64(w)
	}
	if ones == objBits {
		return uint64(objBits * math.Log(objBits)), true
	}
	return uint64(-objBits*math.Log(1-float64(ones)/objBits) + 0.5), false
}

// objectTable is an endpoint's principals, copied on write.
type objectTable struct {
	byHash   map[uint64]*principalObjects
	overflow *principalObjects
}

// objectID hashes the parameter segments of path (those set in mask). The
// object windows are not persisted, so a per-process random seed serves:
// ids cannot be steered into collisions, and the hash is a few ns.
func (inv *Inventory) objectID(path []byte, mask uint32) uint64 {
	var h uint64
	i := 0
	for p := 0; p < len(path) && i < 32 && mask>>i != 0; {
		for p < len(path) && path[p] == '/' {
			p++
		}
		q := len(path)
		if k := bytes.IndexByte(path[p:], '/'); k >= 0 {
			q = p + k
		}
		if q == p {
			break
		}
		if mask&(1<<i) != 0 {
			h = bits.RotateLeft64(h, 17) ^ maphash.Bytes(inv.objSeed, path[p:q])
		}
		p = q
		i++
	}
	return h
}

// observeObject counts the object a call addressed for its principal.
func (o *Observer) observeObject(e *Endpoint, c *parser.Call, ts int64, principal uint64) {
	inv := o.inv
	id := inv.objectID(c.Path, e.Route.ParamMask)
	if t := e.objects.Load(); t != nil {
		if p, ok := t.byHash[principal]; ok {
			p.add(ts, id)
			return
		}
	}
	o.addPrincipal(e, c, ts, principal).add(ts, id)
}

func (o *Observer) addPrincipal(e *Endpoint, c *parser.Call, ts int64, principal uint64) *principalObjects {
	inv := o.inv
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.objects.Load()
	if old != nil {
		if p, ok := old.byHash[principal]; ok {
			return p
		}
	}
	next := &objectTable{byHash: map[uint64]*principalObjects{}}
	if old != nil {
		for k, v := range old.byHash {
			next.byHash[k] = v
		}
		next.overflow = old.overflow
	}
	if len(next.byHash) >= inv.opts.MaxPrincipalsPerEndpoint || inv.principals.Load() >= int64(inv.opts.MaxPrincipals) {
		inv.principalOverflow.Add(1)
		if next.overflow == nil {
			next.overflow = &principalObjects{principal: "_overflow", first: ts}
			e.objects.Store(next)
		}
		return next.overflow
	}
	// The exported name is worked out once per principal and endpoint;
	// the per-call path only has the keyed 64-bit hash.
	var p Principal
	principalOf(c, inv.opts.TrustedProxies, &p)
	po := &principalObjects{principal: p.String(inv.opts.Key), first: ts}
	next.byHash[principal] = po
	e.objects.Store(next)
	inv.principals.Add(1)
	return po
}

// PrincipalObjects is one principal's distinct objects on an endpoint.
type PrincipalObjects struct {
	Principal string `json:"principal"`
	Objects1h uint64 `json:"objects_1h"`
	Objects6h uint64 `json:"objects_6h"`
	Objects24 uint64 `json:"objects_24h"`
	// Saturated: the 24 h count is at the sketch's ceiling, a lower bound.
	Saturated bool `json:"saturated,omitempty"`
}

func objectSnapshot(e *Endpoint, now int64) []PrincipalObjects {
	t := e.objects.Load()
	if t == nil {
		return nil
	}
	var out []PrincipalObjects
	add := func(p *principalObjects) {
		po := PrincipalObjects{Principal: p.principal}
		po.Objects1h, _ = p.distinct(now, 1)
		po.Objects6h, _ = p.distinct(now, 6)
		po.Objects24, po.Saturated = p.distinct(now, 24)
		out = append(out, po)
	}
	for _, p := range t.byHash {
		add(p)
	}
	if t.overflow != nil {
		add(t.overflow)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Objects24 != out[j].Objects24 {
			return out[i].Objects24 > out[j].Objects24
		}
		return out[i].Principal < out[j].Principal
	})
	return out
}
