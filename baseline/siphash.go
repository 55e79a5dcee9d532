package baseline

import (
	"encoding/binary"
	"math/bits"
)

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein): a keyed 64-bit hash,
// fast on short inputs, so that caller identities can be counted in
// sketches without being stored and without letting an outsider craft
// collisions against a known hash.
func sipHash24(k0, k1 uint64, tag byte, p []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	// The tag byte (the principal's kind) is hashed as if it led p.
	n := len(p) + 1
	var buf [8]byte
	buf[0] = tag
	first := true
	for {
		var m uint64
		if first {
			k := copy(buf[1:], p)
			p = p[k:]
			if k < 7 {
				// Final block.
				buf[7] = 0
				for i := k + 1; i < 7; i++ {
					buf[i] = 0
				}
				m = binary.LittleEndian.Uint64(buf[:]) &^ (0xff << 56)
				m |= uint64(n) << 56
				v3 ^= m
				round()
				round()
				v0 ^= m
				break
			}
			m = binary.LittleEndian.Uint64(buf[:])
			first = false
		} else if len(p) >= 8 {
			m = binary.LittleEndian.Uint64(p)
			p = p[8:]
		} else {
			var last [8]byte
			copy(last[:], p)
			m = binary.LittleEndian.Uint64(last[:]) | uint64(n)<<56
			v3 ^= m
			round()
			round()
			v0 ^= m
			break
		}
		v3 ^= m
		round()
		round()
		v0 ^= m
	}
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
