package baseline

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// hllP is the HyperLogLog precision: 2^hllP one-byte registers, a standard
// error of about 1.04/sqrt(2^hllP) = 3.3%.
const (
	hllP         = 10
	hllRegisters = 1 << hllP
)

// hll is a HyperLogLog sketch of distinct callers whose registers are
// updated with atomics, four to a 32-bit word. Once warm, an update is one
// atomic load (a register only ever grows, and rarely), so concurrent
// writers do not contend.
type hll struct {
	w [hllRegisters / 4]atomic.Uint32
}

func (h *hll) add(x uint64) {
	idx := x >> (64 - hllP)
	rank := uint32(bits.LeadingZeros64(x<<hllP|1<<(hllP-1))) + 1
	word := &h.w[idx>>2]
	shift := (idx & 3) * 8
	for {
		old := word.Load()
		if (old>>shift)&0xff >= rank {
			return
		}
		if word.CompareAndSwap(old, old&^(0xff<<shift)|rank<<shift) {
			return
		}
	}
}

// estimate returns the distinct count (HyperLogLog with linear counting
// for small cardinalities).
func (h *hll) estimate() uint64 {
	var sum float64
	zeros := 0
	for i := range h.w {
		v := h.w[i].Load()
		for s := 0; s < 32; s += 8 {
			r := (v >> s) & 0xff
			if r == 0 {
				zeros++
			}
			sum += math.Ldexp(1, -int(r))
		}
	}
	m := float64(hllRegisters)
	est := 0.7213 / (1 + 1.079/m) * m * m / sum
	if est <= 2.5*m && zeros > 0 {
		est = m * math.Log(m/float64(zeros))
	}
	return uint64(est + 0.5)
}

func (h *hll) registers() []byte {
	out := make([]byte, hllRegisters)
	for i := range h.w {
		v := h.w[i].Load()
		for j := 0; j < 4; j++ {
			out[i*4+j] = byte(v >> (8 * j))
		}
	}
	return out
}

// merge folds saved registers in (max per register).
func (h *hll) merge(regs []byte) {
	if len(regs) != hllRegisters {
		return
	}
	for i, r := range regs {
		word := &h.w[i>>2]
		shift := uint32(i&3) * 8
		for {
			old := word.Load()
			if (old>>shift)&0xff >= uint32(r) {
				break
			}
			if word.CompareAndSwap(old, old&^(0xff<<shift)|uint32(r)<<shift) {
				break
			}
		}
	}
}

// Latency buckets: four per power of two from 1 µs (2^10 ns) up to about
// 2^37 ns (137 s); bucket 0 holds faster calls, the last one slower. The
// relative error of a quantile is below 19% (a quarter octave).
const (
	latMinShift = 10
	latSub      = 4
	latOctaves  = 27
	latBuckets  = latOctaves*latSub + 2
)

func latencyBucket(ns int64) int {
	if ns < 1<<latMinShift {
		return 0
	}
	e := bits.Len64(uint64(ns)) - 1 // floor(log2)
	if e >= latMinShift+latOctaves {
		return latBuckets - 1
	}
	sub := int(uint64(ns)>>(e-2)) & (latSub - 1)
	return 1 + (e-latMinShift)*latSub + sub
}

// latencyUpper returns the upper bound of bucket b in nanoseconds.
func latencyUpper(b int) float64 {
	if b == 0 {
		return 1 << latMinShift
	}
	if b >= latBuckets-1 {
		return math.Ldexp(1, latMinShift+latOctaves)
	}
	b--
	e := latMinShift + b/latSub
	sub := b % latSub
	return math.Ldexp(1, e) * (1 + float64(sub+1)/latSub)
}

// quantile returns the q-quantile (0..1) of merged bucket counts, as the
// upper bound of the bucket holding it.
func quantile(counts []uint64, q float64) float64 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for b, c := range counts {
		seen += c
		if seen >= rank {
			return latencyUpper(b)
		}
	}
	return latencyUpper(len(counts) - 1)
}
