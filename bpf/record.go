package bpf

import (
	"fmt"
	"net/netip"
	"unsafe"
)

// ChunkSize is the most payload one record carries.
const ChunkSize = 4096

// headerSize is the fixed part of every record; the C side keeps it a
// multiple of 8 (see the padding rules beside struct event).
const headerSize = int(unsafe.Sizeof(apisonarEvent{}))

// Kind tells a data record from a close record and an exec record.
type Kind uint8

const (
	KindData  = Kind(apisonarRecKindKIND_DATA)
	KindClose = Kind(apisonarRecKindKIND_CLOSE)
	// KindExec: process PID (thread TID) completed an execve and is now
	// named Comm; Time is when. Nothing else is set and there is no
	// payload.
	KindExec = Kind(apisonarRecKindKIND_EXEC)
)

// Role is which end of the connection the traced socket is.
type Role uint8

const (
	RoleUnknown = Role(apisonarConnRoleROLE_UNKNOWN)
	RoleClient  = Role(apisonarConnRoleROLE_CLIENT)
	RoleServer  = Role(apisonarConnRoleROLE_SERVER)
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return "unknown"
}

// Dir is the direction of the bytes as seen by the traced socket.
type Dir uint8

const (
	Egress  = Dir(apisonarDirectionDIR_EGRESS)
	Ingress = Dir(apisonarDirectionDIR_INGRESS)
)

func (d Dir) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// Proto is the kernel's guess of the connection's protocol.
type Proto uint8

const (
	ProtoUnknown = Proto(apisonarConnProtoPROTO_UNKNOWN)
	ProtoHTTP1   = Proto(apisonarConnProtoPROTO_HTTP1)
	ProtoHTTP2   = Proto(apisonarConnProtoPROTO_HTTP2)
	ProtoNone    = Proto(apisonarConnProtoPROTO_NONE)
)

// Record is one ring buffer record. A Tracer fills the same Record again
// on every Read; Payload aliases the reader's buffer.
type Record struct {
	Kind   Kind
	ConnID uint64
	// Time is CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
	Time     int64
	PID, TID uint32
	FD       uint32
	// Comm is the thread's command name, NUL padded.
	Comm  [16]byte
	Role  Role
	Dir   Dir
	Proto Proto
	// Local and Remote are this socket's and its peer's address; IPv4
	// peers of a dual-stack socket are unmapped to plain IPv4.
	Local, Remote netip.AddrPort
	// Total is the byte count of the syscall (or mmsg message) this chunk
	// belongs to, Offset the chunk's position in it.
	Total, Offset uint32
	// Seq numbers the records of one connection and direction.
	Seq uint32
	// Truncated: bytes [Offset+len(Payload), Total) were not copied.
	Truncated bool
	// TLS: the connection's bytes are TLS plaintext taken from a TLS
	// library call (Total is the call's byte count; FD is 0).
	TLS     bool
	Payload []byte
}

// CommBytes returns the command name without its NUL padding.
func (r *Record) CommBytes() []byte {
	for i, c := range r.Comm {
		if c == 0 {
			return r.Comm[:i]
		}
	}
	return r.Comm[:]
}

// Missing returns how many bytes of the record's syscall follow the
// payload but were not copied.
func (r *Record) Missing() int {
	if !r.Truncated {
		return 0
	}
	n := int(r.Total) - int(r.Offset) - len(r.Payload)
	if n < 0 {
		return 0
	}
	return n
}

// decode fills r from one raw ring buffer sample without allocating.
func (r *Record) decode(raw []byte) error {
	if len(raw) < headerSize {
		return fmt.Errorf("bpf: short record: %d bytes, header is %d", len(raw), headerSize)
	}
	// Copy the header out rather than pointing into raw: the sample's
	// alignment is the reader's business, and 104 bytes are cheap.
	var hdr apisonarEvent
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&hdr)), headerSize), raw)
	ev := &hdr
	n := int(ev.Len)
	if n > len(raw)-headerSize {
		return fmt.Errorf("bpf: record claims %d payload bytes, has %d", n, len(raw)-headerSize)
	}
	r.Kind = Kind(ev.Kind)
	r.ConnID = ev.ConnId
	r.Time = int64(ev.TsNs)
	r.PID, r.TID, r.FD = ev.Pid, ev.Tid, ev.Fd
	for i, c := range ev.Comm {
		r.Comm[i] = byte(c)
	}
	r.Role, r.Dir, r.Proto = Role(ev.Role), Dir(ev.Dir), Proto(ev.Proto)
	r.Local = netip.AddrPortFrom(addr(ev.Family, &ev.Laddr), ev.Lport)
	r.Remote = netip.AddrPortFrom(addr(ev.Family, &ev.Raddr), ev.Rport)
	r.Total, r.Offset, r.Seq = ev.Total, ev.Offset, ev.Seq
	r.Truncated = ev.Flags&uint8(apisonarRecFlagFLAG_TRUNCATED) != 0
	r.TLS = ev.Flags&uint8(apisonarRecFlagFLAG_TLS) != 0
	r.Payload = raw[headerSize : headerSize+n]
	return nil
}

const (
	afInet  = 2
	afInet6 = 10
)

func addr(family uint8, b *[16]uint8) netip.Addr {
	switch family {
	case afInet:
		return netip.AddrFrom4([4]byte(b[:4]))
	case afInet6:
		return netip.AddrFrom16(*b).Unmap()
	}
	return netip.Addr{}
}
