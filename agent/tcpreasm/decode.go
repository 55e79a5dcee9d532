package tcpreasm

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// LinkType is a capture file's link-layer header type (the LINKTYPE_ values
// of pcap and pcapng).
type LinkType uint32

// Link types the Decoder understands.
const (
	LinkNull     LinkType = 0   // BSD loopback, host byte order family
	LinkEthernet LinkType = 1   // Ethernet II, with 802.1Q tags
	LinkRawA     LinkType = 12  // DLT_RAW on most systems
	LinkRawB     LinkType = 14  // DLT_RAW on OpenBSD
	LinkRaw      LinkType = 101 // LINKTYPE_RAW
	LinkLoop     LinkType = 108 // OpenBSD loopback, network byte order family
	LinkSLL      LinkType = 113 // Linux cooked capture v1
	LinkIPv4     LinkType = 228
	LinkIPv6     LinkType = 229
	LinkSLL2     LinkType = 276 // Linux cooked capture v2
)

// Supported reports whether the Decoder knows link type l.
func (l LinkType) Supported() bool {
	switch l {
	case LinkNull, LinkEthernet, LinkRawA, LinkRawB, LinkRaw, LinkLoop, LinkSLL, LinkIPv4, LinkIPv6, LinkSLL2:
		return true
	}
	return false
}

// TCP flags kept in Segment.Flags.
const (
	FlagFIN uint8 = 1 << iota
	FlagSYN
	FlagRST
	FlagACK
)

// Segment is one TCP segment as the Assembler needs it.
type Segment struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    uint8
	// Payload aliases the frame and is valid until the next Decode.
	Payload []byte
	// Missing counts payload bytes that were on the wire but not captured
	// (the frame was cut at the snapshot length).
	Missing int
}

// Why a frame yields no segment. The Decoder returns these so that the
// caller can count them; none of them is an error of the capture as a whole.
var (
	ErrUnsupportedLink = errors.New("unsupported link type")
	ErrNotTCP          = errors.New("not a TCP segment")
	ErrFragment        = errors.New("IP fragment")
	ErrMalformed       = errors.New("malformed frame")
)

// maxMissing bounds what a frame may claim was cut off: no IP packet is
// larger than a jumbo IPv6 segment would ever be in practice, and a hostile
// record header must not turn into a gigabyte gap.
const maxMissing = 1 << 18

// Decoder walks captured frames down to TCP. It reuses its layer structs
// and parsers, so Decode does not allocate. Not safe for concurrent use.
type Decoder struct {
	eth   layers.Ethernet
	dot1q layers.Dot1Q
	sll   layers.LinuxSLL
	loop  layers.Loopback
	ip4   layers.IPv4
	ip6   layers.IPv6
	ext   layers.IPv6ExtensionSkipper
	tcp   layers.TCP

	// One parser per first layer; they share the layer structs above.
	fromEth, fromSLL, fromLoop, fromIP4, fromIP6 *gopacket.DecodingLayerParser
	decoded                                      []gopacket.LayerType
}

// NewDecoder returns a Decoder ready for any supported link type.
func NewDecoder() *Decoder {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 8)}
	all := []gopacket.DecodingLayer{&d.eth, &d.dot1q, &d.sll, &d.loop, &d.ip4, &d.ip6, &d.ext, &d.tcp}
	mk := func(first gopacket.LayerType) *gopacket.DecodingLayerParser {
		p := gopacket.NewDecodingLayerParser(first, all...)
		// TCP names its payload after well-known ports (DNS, TLS...);
		// the payload is all that is wanted, so stop there quietly.
		p.IgnoreUnsupported = true
		return p
	}
	d.fromEth = mk(layers.LayerTypeEthernet)
	d.fromSLL = mk(layers.LayerTypeLinuxSLL)
	d.fromLoop = mk(layers.LayerTypeLoopback)
	d.fromIP4 = mk(layers.LayerTypeIPv4)
	d.fromIP6 = mk(layers.LayerTypeIPv6)
	return d
}

// Decode fills seg from one frame of link type link. Payload that the
// capture cut off (snapshot length) is counted in seg.Missing, from the
// lengths the IP header declares. The returned error says why there is no
// segment.
func (d *Decoder) Decode(link LinkType, frame []byte, seg *Segment) error {
	var p *gopacket.DecodingLayerParser
	data := frame
	switch link {
	case LinkEthernet:
		p = d.fromEth
	case LinkSLL:
		p = d.fromSLL
	case LinkNull, LinkLoop:
		p = d.fromLoop
	case LinkIPv4:
		p = d.fromIP4
	case LinkIPv6:
		p = d.fromIP6
	case LinkRaw, LinkRawA, LinkRawB:
		p = d.byVersion(data)
	case LinkSLL2:
		// gopacket has no cooked-v2 layer; its 20-byte header carries
		// the EtherType first, which is all that is needed.
		if len(data) < 20 {
			return ErrMalformed
		}
		switch layers.EthernetType(binary.BigEndian.Uint16(data[0:2])) {
		case layers.EthernetTypeIPv4:
			p = d.fromIP4
		case layers.EthernetTypeIPv6:
			p = d.fromIP6
		default:
			return ErrNotTCP
		}
		data = data[20:]
	default:
		return ErrUnsupportedLink
	}
	if p == nil {
		return ErrNotTCP
	}
	return d.walk(p, data, seg)
}

// DecodeIP fills seg from a packet that starts at the IP header (AF_PACKET
// datagram sockets hand these over).
func (d *Decoder) DecodeIP(pkt []byte, seg *Segment) error {
	p := d.byVersion(pkt)
	if p == nil {
		return ErrNotTCP
	}
	return d.walk(p, pkt, seg)
}

func (d *Decoder) byVersion(b []byte) *gopacket.DecodingLayerParser {
	if len(b) == 0 {
		return nil
	}
	switch b[0] >> 4 {
	case 4:
		return d.fromIP4
	case 6:
		return d.fromIP6
	}
	return nil
}

func (d *Decoder) walk(p *gopacket.DecodingLayerParser, data []byte, seg *Segment) error {
	err := p.DecodeLayers(data, &d.decoded)
	var v4, v6, tcp bool
	for _, lt := range d.decoded {
		switch lt {
		case layers.LayerTypeIPv4:
			v4 = true
		case layers.LayerTypeIPv6:
			v6 = true
		case layers.LayerTypeTCP:
			tcp = true
		}
	}
	if !tcp {
		if v4 && (d.ip4.Flags&layers.IPv4MoreFragments != 0 || d.ip4.FragOffset != 0) {
			return ErrFragment
		}
		if err != nil {
			return ErrMalformed
		}
		return ErrNotTCP
	}
	if v4 && (d.ip4.Flags&layers.IPv4MoreFragments != 0 || d.ip4.FragOffset != 0) {
		return ErrFragment
	}
	// The TCP segment the IP header declares, against what was captured.
	// (The frame's own wire length is not used: edited captures keep the
	// original frame length after stripping headers.)
	captured := len(d.tcp.Contents) + len(d.tcp.Payload)
	declared := captured
	switch {
	case v4:
		declared = int(d.ip4.Length) - len(d.ip4.Contents)
	case v6:
		ext := len(d.ip6.Payload) - captured
		if d.ip6.HopByHop != nil {
			// gopacket consumes hop-by-hop inside the IPv6 layer.
			ext += d.ip6.HopByHop.ActualLength
		}
		declared = int(d.ip6.Length) - ext
	}
	missing := declared - captured
	switch {
	case v4:
		src, ok1 := netip.AddrFromSlice(d.ip4.SrcIP)
		dst, ok2 := netip.AddrFromSlice(d.ip4.DstIP)
		if !ok1 || !ok2 {
			return ErrMalformed
		}
		seg.Src = netip.AddrPortFrom(src, uint16(d.tcp.SrcPort))
		seg.Dst = netip.AddrPortFrom(dst, uint16(d.tcp.DstPort))
	case v6:
		src, ok1 := netip.AddrFromSlice(d.ip6.SrcIP)
		dst, ok2 := netip.AddrFromSlice(d.ip6.DstIP)
		if !ok1 || !ok2 {
			return ErrMalformed
		}
		seg.Src = netip.AddrPortFrom(src, uint16(d.tcp.SrcPort))
		seg.Dst = netip.AddrPortFrom(dst, uint16(d.tcp.DstPort))
	default:
		return ErrMalformed
	}
	t := &d.tcp
	seg.Seq, seg.Ack = t.Seq, t.Ack
	seg.Flags = 0
	if t.FIN {
		seg.Flags |= FlagFIN
	}
	if t.SYN {
		seg.Flags |= FlagSYN
	}
	if t.RST {
		seg.Flags |= FlagRST
	}
	if t.ACK {
		seg.Flags |= FlagACK
	}
	seg.Payload = t.Payload
	if missing < 0 {
		missing = 0
	}
	seg.Missing = min(missing, maxMissing)
	return nil
}
