package http2

import (
	"errors"

	"golang.org/x/net/http2/hpack"
)

// Bounds of the tolerant decoder.
const (
	// defaultTableSize is HPACK's initial dynamic table size (RFC 7541 §4.2,
	// RFC 9113 SETTINGS_HEADER_TABLE_SIZE default).
	defaultTableSize = 4096
	// hardTableCap bounds what one decoder keeps whatever the peers
	// negotiate: a table-size bomb costs at most this (twice, for the arena
	// slack) per direction.
	hardTableCap = 64 << 10
	// entryOverhead is the per-entry size overhead of RFC 7541 §4.1. Every
	// entry, known or not, is at least this big, which is what lets the
	// decoder prove the table holds nothing it has not seen.
	entryOverhead = 32
	// maxInt bounds HPACK integers; anything larger is hostile.
	maxInt = 1 << 24
)

var (
	errTruncated = errors.New("hpack: truncated field")
	errBadInt    = errors.New("hpack: integer overflow")
	errBadIndex  = errors.New("hpack: index out of range")
	errHuffman   = errors.New("hpack: invalid huffman string")
)

// fieldSink receives the decoded fields of one header block. name and value
// are valid only during the call. known is false when the field (or its
// name) refers to a dynamic-table entry inserted before the decoder joined:
// the parser must not use name or value then.
type fieldSink interface {
	field(name, value []byte, known bool)
}

// entry is one dynamic-table entry: name and value live in the arena.
type entry struct {
	off         int
	nlen, vlen  int
	nameUnknown bool
}

// decoder is an HPACK decoder for one direction that survives joining a
// connection mid-stream.
//
// The invariant that makes it safe: ents holds, newest last, exactly the
// entries inserted since the decoder last started from a known point (the
// connection start, a join, a gap), minus those it has evicted. Because
// HPACK indexes the dynamic table newest-first, dynamic index d names
// ents[len-d] whenever d <= len(ents), whatever older entries the real table
// also holds. An index past the known entries is an entry this decoder never
// saw: the field is reported unknown, never guessed. Evicting early only
// turns later hits into unknowns; keeping entries the peer evicted is
// harmless, since a valid encoder no longer refers to them.
type decoder struct {
	arena []byte
	ents  []entry
	head  int // ents[head:] are live, oldest first

	size int // sum of live entry sizes (a lower bound when names are unknown)
	max  int // eviction bound
	// maxExact is true when max is the peer's real table size, learned from
	// a size update or the connection start.
	maxExact bool
	// pastKnown is true when the table holds nothing but ents: an index
	// beyond them is then a peer error rather than a miss.
	pastKnown bool
	// limit is the bound the decoding side announced with
	// SETTINGS_HEADER_TABLE_SIZE (capped), or 0 when not seen.
	limit int

	scratch []byte // huffman output and staged names
	hw      huffWriter
	// unknown counts fields reported unknown in the last block.
	unknown int
	// dropped counts table size updates or entries over the hard cap.
	dropped int
}

// huffWriter lets hpack.HuffmanDecode append to a reused buffer.
type huffWriter struct{ b []byte }

func (w *huffWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// reset forgets the table: what follows is decoded as if joining the
// connection now.
func (d *decoder) reset() {
	d.ents = d.ents[:0]
	d.head = 0
	d.arena = d.arena[:0]
	if cap(d.arena) > 4*defaultTableSize {
		d.arena = nil // grown by a big table once: do not pin it
	}
	d.size = 0
	d.pastKnown = false
	d.maxExact = false
	d.max = defaultTableSize
	if d.limit > 0 {
		d.max = d.limit
	}
}

// startKnown declares that the decoder saw its direction from the
// connection start: the table began empty at the default size.
func (d *decoder) startKnown() {
	d.pastKnown = true
	d.maxExact = true
	d.max = defaultTableSize
	if d.limit > defaultTableSize {
		// SETTINGS raised the bound before we learnt this: keep it.
		d.max = d.limit
		d.maxExact = false
	}
	d.evict(0)
}

// setLimit applies SETTINGS_HEADER_TABLE_SIZE sent by the decoding side. The
// peer's encoder may use up to it; the table is kept that large so that no
// entry is evicted before the peer evicts it. The exact size stays unknown
// until the encoder sends a size update.
func (d *decoder) setLimit(v uint32) {
	l := int(min(v, hardTableCap))
	if v > hardTableCap {
		d.dropped++
	}
	d.limit = l
	if l > d.max {
		d.max = l
		d.maxExact = false
	}
}

func (d *decoder) live() int { return len(d.ents) - d.head }

// evict drops oldest entries until room bytes fit under max.
func (d *decoder) evict(room int) {
	for d.size+room > d.max && d.head < len(d.ents) {
		e := d.ents[d.head]
		d.size -= e.nlen + e.vlen + entryOverhead
		d.head++
	}
	if d.head == len(d.ents) {
		d.ents = d.ents[:0]
		d.head = 0
		d.arena = d.arena[:0]
		d.size = 0
	}
	d.inferKnown()
}

// inferKnown marks the table fully known when no unseen entry can fit next
// to the seen ones.
func (d *decoder) inferKnown() {
	if d.maxExact && d.size+entryOverhead > d.max {
		d.pastKnown = true
	}
}

// sizeUpdate applies a dynamic table size update.
func (d *decoder) sizeUpdate(v int) {
	if v > hardTableCap {
		// A bomb, or a peer far beyond what we keep: keep the cap, and
		// accept that older entries become unknown.
		d.dropped++
		d.max = hardTableCap
		d.maxExact = false
		if d.size > d.max {
			d.pastKnown = false
		}
		d.evict(0)
		return
	}
	d.max = v
	d.maxExact = true
	d.evict(0)
	if cap(d.arena) > 4*max(v, defaultTableSize) {
		d.shrink()
	}
}

// shrink moves the live entries to a new arena sized for the current max,
// releasing what a larger table grew.
func (d *decoder) shrink() {
	arena := make([]byte, 0, 2*max(d.max, defaultTableSize))
	for i := d.head; i < len(d.ents); i++ {
		e := &d.ents[i]
		off := len(arena)
		arena = append(arena, d.arena[e.off:e.off+e.nlen+e.vlen]...)
		e.off = off
	}
	d.arena = arena
}

// insert adds an entry (name and value must not alias the arena).
func (d *decoder) insert(name, value []byte, nameUnknown bool) {
	sz := len(name) + len(value) + entryOverhead
	if sz > d.max {
		// RFC 7541 §4.4: an entry larger than the table empties it. When
		// max is only our bound, the peer may have kept it: what it
		// displaced is unknown either way.
		d.ents, d.head, d.arena, d.size = d.ents[:0], 0, d.arena[:0], 0
		if !d.maxExact {
			d.pastKnown = false
		} else {
			d.pastKnown = true
		}
		if sz > hardTableCap {
			d.dropped++
		}
		return
	}
	d.evict(sz)
	n := len(name) + len(value)
	if len(d.arena)+n > 2*d.max && d.head < len(d.ents) {
		d.compact()
	}
	if d.head > 64 && d.head*2 > len(d.ents) {
		live := copy(d.ents, d.ents[d.head:])
		d.ents = d.ents[:live]
		d.head = 0
	}
	off := len(d.arena)
	d.arena = append(d.arena, name...)
	d.arena = append(d.arena, value...)
	d.ents = append(d.ents, entry{off: off, nlen: len(name), vlen: len(value), nameUnknown: nameUnknown})
	d.size += sz
	d.inferKnown()
}

// compact moves the live entries' bytes to the front of the arena.
func (d *decoder) compact() {
	base := d.ents[d.head].off
	n := copy(d.arena, d.arena[base:])
	d.arena = d.arena[:n]
	for i := d.head; i < len(d.ents); i++ {
		d.ents[i].off -= base
	}
}

// lookup resolves a 1-based HPACK index. ok is false for an entry this
// decoder never saw; err is set for an index no table can hold.
func (d *decoder) lookup(i int) (name, value []byte, nameOK, ok bool, err error) {
	if i <= 0 {
		return nil, nil, false, false, errBadIndex
	}
	if i <= len(staticTable) {
		f := &staticTable[i-1]
		return f.name, f.value, true, true, nil
	}
	di := i - len(staticTable)
	if di > d.live() {
		if d.pastKnown || di > hardTableCap/entryOverhead {
			return nil, nil, false, false, errBadIndex
		}
		return nil, nil, false, false, nil
	}
	e := d.ents[len(d.ents)-di]
	name = d.arena[e.off : e.off+e.nlen]
	value = d.arena[e.off+e.nlen : e.off+e.nlen+e.vlen]
	return name, value, !e.nameUnknown, true, nil
}

// readInt decodes an HPACK integer with an n-bit prefix from p.
func readInt(p []byte, n uint) (v int, rest []byte, err error) {
	if len(p) == 0 {
		return 0, p, errTruncated
	}
	mask := byte(1<<n - 1)
	v = int(p[0] & mask)
	p = p[1:]
	if v < int(mask) {
		return v, p, nil
	}
	var shift uint
	for len(p) > 0 {
		b := p[0]
		p = p[1:]
		v += int(b&0x7f) << shift
		if v > maxInt {
			return 0, p, errBadInt
		}
		if b&0x80 == 0 {
			return v, p, nil
		}
		shift += 7
	}
	return 0, p, errTruncated
}

// readString decodes a string literal. A huffman string is appended to
// d.scratch and returned as offsets into it (scratch may move while the
// field is decoded); a raw string aliases p.
func (d *decoder) readString(p []byte) (raw []byte, soff, slen int, huff bool, rest []byte, err error) {
	if len(p) == 0 {
		return nil, 0, 0, false, p, errTruncated
	}
	huff = p[0]&0x80 != 0
	n, p, err := readInt(p, 7)
	if err != nil {
		return nil, 0, 0, false, p, err
	}
	if n > len(p) {
		return nil, 0, 0, false, p, errTruncated
	}
	s, rest := p[:n], p[n:]
	if !huff {
		return s, 0, 0, false, rest, nil
	}
	d.hw.b = d.scratch
	start := len(d.hw.b)
	if _, err := hpack.HuffmanDecode(&d.hw, s); err != nil {
		d.scratch = d.hw.b
		return nil, 0, 0, false, rest, errHuffman
	}
	d.scratch = d.hw.b
	return nil, start, len(d.scratch) - start, true, rest, nil
}

// decode decodes one complete header block, reporting every field to sink.
// On error the table may have missed insertions, so it is reset; fields
// already reported were decoded exactly.
func (d *decoder) decode(block []byte, sink fieldSink) error {
	d.unknown = 0
	err := d.decodeBlock(block, sink)
	if cap(d.scratch) > 16<<10 {
		d.scratch = nil // a hostile literal grew it; do not pin it
	}
	if err != nil {
		d.reset()
	}
	return err
}

func (d *decoder) decodeBlock(p []byte, sink fieldSink) error {
	for len(p) > 0 {
		b := p[0]
		switch {
		case b&0x80 != 0: // indexed field, §6.1
			i, rest, err := readInt(p, 7)
			if err != nil {
				return err
			}
			p = rest
			name, value, nameOK, ok, err := d.lookup(i)
			if err != nil {
				return err
			}
			if !ok || !nameOK {
				d.unknown++
				sink.field(nil, nil, false)
				continue
			}
			sink.field(name, value, true)
		case b&0xe0 == 0x20: // dynamic table size update, §6.3
			v, rest, err := readInt(p, 5)
			if err != nil {
				return err
			}
			p = rest
			d.sizeUpdate(v)
		default:
			var prefix uint = 4
			indexing := b&0xc0 == 0x40 // §6.2.1; else §6.2.2 / §6.2.3
			if indexing {
				prefix = 6
			}
			rest, err := d.literal(p, prefix, indexing, sink)
			if err != nil {
				return err
			}
			p = rest
		}
	}
	return nil
}

// literal decodes a literal field representation.
func (d *decoder) literal(p []byte, prefix uint, indexing bool, sink fieldSink) ([]byte, error) {
	d.scratch = d.scratch[:0]
	idx, p, err := readInt(p, prefix)
	if err != nil {
		return p, err
	}
	var (
		name          []byte
		nameFromDyn   bool
		nameKnown     = true
		noff, nlen    int
		nameInScratch bool
	)
	if idx == 0 {
		raw, so, sl, huff, rest, err := d.readString(p)
		if err != nil {
			return rest, err
		}
		p = rest
		if huff {
			noff, nlen, nameInScratch = so, sl, true
		} else {
			name = raw
		}
	} else {
		n, _, nameOK, ok, err := d.lookup(idx)
		if err != nil {
			return p, err
		}
		if !ok || !nameOK {
			nameKnown = false
		} else if idx > len(staticTable) {
			nameFromDyn = true
			name = n
		} else {
			name = n
		}
	}
	if nameFromDyn && indexing {
		// The insertion below may evict or move the entry the name
		// came from; stage it first.
		noff = len(d.scratch)
		d.scratch = append(d.scratch, name...)
		nlen, nameInScratch = len(name), true
	}
	raw, so, sl, huff, rest, err := d.readString(p)
	if err != nil {
		return rest, err
	}
	if nameInScratch {
		name = d.scratch[noff : noff+nlen]
	}
	value := raw
	if huff {
		value = d.scratch[so : so+sl]
	}
	if indexing {
		if nameKnown {
			d.insert(name, value, false)
		} else {
			d.insert(nil, value, true)
		}
	}
	if !nameKnown {
		d.unknown++
		sink.field(nil, nil, false)
		return rest, nil
	}
	sink.field(name, value, true)
	return rest, nil
}

type staticField struct{ name, value []byte }

// staticTable is RFC 7541 Appendix A.
var staticTable = [...]staticField{
	{[]byte(":authority"), nil},
	{[]byte(":method"), []byte("GET")},
	{[]byte(":method"), []byte("POST")},
	{[]byte(":path"), []byte("/")},
	{[]byte(":path"), []byte("/index.html")},
	{[]byte(":scheme"), []byte("http")},
	{[]byte(":scheme"), []byte("https")},
	{[]byte(":status"), []byte("200")},
	{[]byte(":status"), []byte("204")},
	{[]byte(":status"), []byte("206")},
	{[]byte(":status"), []byte("304")},
	{[]byte(":status"), []byte("400")},
	{[]byte(":status"), []byte("404")},
	{[]byte(":status"), []byte("500")},
	{[]byte("accept-charset"), nil},
	{[]byte("accept-encoding"), []byte("gzip, deflate")},
	{[]byte("accept-language"), nil},
	{[]byte("accept-ranges"), nil},
	{[]byte("accept"), nil},
	{[]byte("access-control-allow-origin"), nil},
	{[]byte("age"), nil},
	{[]byte("allow"), nil},
	{[]byte("authorization"), nil},
	{[]byte("cache-control"), nil},
	{[]byte("content-disposition"), nil},
	{[]byte("content-encoding"), nil},
	{[]byte("content-language"), nil},
	{[]byte("content-length"), nil},
	{[]byte("content-location"), nil},
	{[]byte("content-range"), nil},
	{[]byte("content-type"), nil},
	{[]byte("cookie"), nil},
	{[]byte("date"), nil},
	{[]byte("etag"), nil},
	{[]byte("expect"), nil},
	{[]byte("expires"), nil},
	{[]byte("from"), nil},
	{[]byte("host"), nil},
	{[]byte("if-match"), nil},
	{[]byte("if-modified-since"), nil},
	{[]byte("if-none-match"), nil},
	{[]byte("if-range"), nil},
	{[]byte("if-unmodified-since"), nil},
	{[]byte("last-modified"), nil},
	{[]byte("link"), nil},
	{[]byte("location"), nil},
	{[]byte("max-forwards"), nil},
	{[]byte("proxy-authenticate"), nil},
	{[]byte("proxy-authorization"), nil},
	{[]byte("range"), nil},
	{[]byte("referer"), nil},
	{[]byte("refresh"), nil},
	{[]byte("retry-after"), nil},
	{[]byte("server"), nil},
	{[]byte("set-cookie"), nil},
	{[]byte("strict-transport-security"), nil},
	{[]byte("transfer-encoding"), nil},
	{[]byte("user-agent"), nil},
	{[]byte("vary"), nil},
	{[]byte("via"), nil},
	{[]byte("www-authenticate"), nil},
}
