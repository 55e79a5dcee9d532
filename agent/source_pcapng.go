package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"

	"github.com/apisonar/apisonar/agent/tcpreasm"
)

// ngReader reads pcapng (the IETF pcapng draft: section header, interface
// description, enhanced, simple and obsolete packet blocks; other blocks
// are skipped).
//
// gopacket's pcapgo.NgReader is not used for this format: in v1.1.19 it
// keeps link types as uint8 (LINKTYPE_LINUX_SLL2, 276, reads as 20), sizes
// its packet buffer from the file's claimed snap and capture lengths
// without a bound, and divides by zero on some if_tsresol values. A capture
// is untrusted input; this reader bounds every length by the block that
// holds it and hands out records straight from its read buffer.
type ngReader struct {
	br     *bufio.Reader
	order  binary.ByteOrder
	ifaces []ngIface
	// lastTS stamps simple packet blocks, which carry no time.
	lastTS int64
}

type ngIface struct {
	link tcpreasm.LinkType
	// snaplen bounds simple packet blocks.
	snaplen uint32
	// tsres: units per second are 10^exp, or 2^exp when binary.
	exp    uint8
	binary bool
	offset int64 // if_tsoffset, seconds
}

const (
	ngSHB = 0x0a0d0d0a
	ngIDB = 0x00000001
	ngOPB = 0x00000002 // obsolete packet block
	ngSPB = 0x00000003
	ngEPB = 0x00000006

	ngBOM = 0x1a2b3c4d
	// ngMaxBlock bounds the blocks that are read whole (headers and
	// packets); it fits the read buffer so records are sliced from it.
	ngMaxBlock = 1 << 20
	// ngMaxIfaces bounds interfaces per section.
	ngMaxIfaces = 4096
)

var errNgCorrupt = errors.New("corrupt pcapng block")

func newNgReader(br *bufio.Reader) (*ngReader, error) {
	r := &ngReader{br: br}
	if err := r.section(); err != nil {
		return nil, err
	}
	return r, nil
}

// Next returns the next packet record: its bytes (valid until the next
// call), event time, wire length and link type.
func (r *ngReader) Next() ([]byte, int64, int, tcpreasm.LinkType, error) {
	for {
		data, ts, wire, link, ok, err := r.block()
		if err != nil || ok {
			return data, ts, wire, link, err
		}
	}
}

// block reads one block. ok is true when it was a packet.
func (r *ngReader) block() (data []byte, ts int64, wire int, link tcpreasm.LinkType, ok bool, err error) {
	head, err := r.br.Peek(8)
	if err != nil {
		if len(head) == 0 && err == io.EOF {
			return nil, 0, 0, 0, false, io.EOF
		}
		return nil, 0, 0, 0, false, io.ErrUnexpectedEOF
	}
	typ := binary.LittleEndian.Uint32(head)
	if typ == ngSHB {
		return nil, 0, 0, 0, false, r.section()
	}
	if r.order == nil {
		return nil, 0, 0, 0, false, errNgCorrupt
	}
	typ = r.order.Uint32(head)
	n := r.order.Uint32(head[4:])
	if n < 12 || n%4 != 0 {
		return nil, 0, 0, 0, false, fmt.Errorf("%w: block length %d", errNgCorrupt, n)
	}
	switch typ {
	case ngIDB, ngEPB, ngSPB, ngOPB:
	default:
		// Name resolution, statistics, custom blocks: not needed.
		if _, err := r.br.Discard(int(n)); err != nil {
			return nil, 0, 0, 0, false, io.ErrUnexpectedEOF
		}
		return nil, 0, 0, 0, false, nil
	}
	if n > ngMaxBlock {
		return nil, 0, 0, 0, false, fmt.Errorf("%w: block of %d bytes", errNgCorrupt, n)
	}
	b, err := r.br.Peek(int(n))
	if err != nil {
		return nil, 0, 0, 0, false, io.ErrUnexpectedEOF
	}
	// Peeked bytes stay valid until the next read; Discard does not
	// move them, it only advances past them.
	r.br.Discard(int(n))
	if r.order.Uint32(b[n-4:]) != n {
		return nil, 0, 0, 0, false, fmt.Errorf("%w: trailing length differs", errNgCorrupt)
	}
	body := b[8 : n-4]
	switch typ {
	case ngIDB:
		return nil, 0, 0, 0, false, r.iface(body)
	case ngEPB, ngOPB:
		if len(body) < 20 {
			return nil, 0, 0, 0, false, errNgCorrupt
		}
		var id uint32
		if typ == ngEPB {
			id = r.order.Uint32(body)
		} else {
			id = uint32(r.order.Uint16(body))
		}
		if int(id) >= len(r.ifaces) {
			return nil, 0, 0, 0, false, fmt.Errorf("%w: packet of undeclared interface %d", errNgCorrupt, id)
		}
		ifc := &r.ifaces[id]
		raw := uint64(r.order.Uint32(body[4:]))<<32 | uint64(r.order.Uint32(body[8:]))
		capLen, origLen := r.order.Uint32(body[12:]), r.order.Uint32(body[16:])
		if uint64(capLen) > uint64(len(body)-20) || capLen > maxSnaplen {
			return nil, 0, 0, 0, false, fmt.Errorf("%w: capture length %d", errNgCorrupt, capLen)
		}
		ts = ifc.nanos(raw)
		r.lastTS = ts
		return body[20 : 20+capLen], ts, int(min(origLen, 1<<30)), ifc.link, true, nil
	case ngSPB:
		if len(r.ifaces) == 0 || len(body) < 4 {
			return nil, 0, 0, 0, false, errNgCorrupt
		}
		ifc := &r.ifaces[0]
		origLen := r.order.Uint32(body)
		capLen := min(origLen, uint32(len(body)-4))
		if ifc.snaplen != 0 {
			capLen = min(capLen, ifc.snaplen)
		}
		return body[4 : 4+capLen], r.lastTS, int(min(origLen, 1<<30)), ifc.link, true, nil
	}
	return nil, 0, 0, 0, false, nil
}

// section reads a section header block: it fixes the byte order and forgets
// the previous section's interfaces.
func (r *ngReader) section() error {
	head, err := r.br.Peek(12)
	if err != nil {
		return io.ErrUnexpectedEOF
	}
	switch {
	case binary.LittleEndian.Uint32(head[8:]) == ngBOM:
		r.order = binary.LittleEndian
	case binary.BigEndian.Uint32(head[8:]) == ngBOM:
		r.order = binary.BigEndian
	default:
		return fmt.Errorf("%w: section header has no byte-order magic", errNgCorrupt)
	}
	n := r.order.Uint32(head[4:])
	if n < 28 || n%4 != 0 || n > ngMaxBlock {
		return fmt.Errorf("%w: section header length %d", errNgCorrupt, n)
	}
	b, err := r.br.Peek(int(n))
	if err != nil {
		return io.ErrUnexpectedEOF
	}
	if major := r.order.Uint16(b[12:]); major != 1 {
		return fmt.Errorf("%w: pcapng version %d", errNgCorrupt, major)
	}
	r.br.Discard(int(n))
	r.ifaces = r.ifaces[:0]
	return nil
}

// iface reads an interface description block body.
func (r *ngReader) iface(body []byte) error {
	if len(body) < 8 {
		return errNgCorrupt
	}
	if len(r.ifaces) >= ngMaxIfaces {
		return fmt.Errorf("%w: more than %d interfaces", errNgCorrupt, ngMaxIfaces)
	}
	ifc := ngIface{
		link:    tcpreasm.LinkType(r.order.Uint16(body)),
		snaplen: r.order.Uint32(body[4:]),
		exp:     6, // microseconds unless told otherwise
	}
	opts := body[8:]
	for len(opts) >= 4 {
		code, l := r.order.Uint16(opts), int(r.order.Uint16(opts[2:]))
		if code == 0 || 4+l > len(opts) {
			break
		}
		v := opts[4 : 4+l]
		switch {
		case code == 9 && l >= 1: // if_tsresol
			ifc.binary = v[0]&0x80 != 0
			ifc.exp = v[0] & 0x7f
		case code == 14 && l >= 8: // if_tsoffset
			ifc.offset = int64(r.order.Uint64(v))
		}
		opts = opts[4+(l+3)&^3:]
	}
	if (!ifc.binary && ifc.exp > 19) || (ifc.binary && ifc.exp > 63) {
		return fmt.Errorf("%w: timestamp resolution %d", errNgCorrupt, ifc.exp)
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

var pow10 = [20]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// nanos converts a raw timestamp in the interface's units to Unix ns.
func (i *ngIface) nanos(raw uint64) int64 {
	var per uint64 // units per second
	if i.binary {
		per = 1 << i.exp
	} else {
		per = pow10[i.exp]
	}
	sec, frac := raw/per, raw%per
	// frac * 1e9 / per without overflow.
	hi, lo := bits.Mul64(frac, 1e9)
	ns, _ := bits.Div64(hi, lo, per)
	return (int64(sec)+i.offset)*1e9 + int64(ns)
}
