// Command gen derives the edited captures in testdata/pcap from the
// recorded ones: link-type variants and damaged copies (a lost segment, a
// capture that starts mid-connection, reordered and repeated segments, a
// file cut inside a record). Run from the repository root:
//
//	go run ./testdata/pcap/gen
//
// With -synthetic FILE it instead writes a generated HTTP/1.1 keep-alive
// capture of about -size bytes (for load and speed runs; not committed):
//
//	go run ./testdata/pcap/gen -synthetic /tmp/big.pcap -size 1000000000
//
// Frame numbers below are tshark's (1-based) in the recorded files.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/apisonar/apisonar/agent/tcpreasm/pcaptest"
)

const dir = "testdata/pcap"

type frame struct {
	ci   gopacket.CaptureInfo
	data []byte
}

func read(name string) ([]frame, layers.LinkType) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		log.Fatal(err)
	}
	var out []frame
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		out = append(out, frame{ci, data})
	}
	return out, r.LinkType()
}

// write stores frames as a little-endian microsecond pcap of link type lt.
func write(name string, lt layers.LinkType, frames []frame) {
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(262144, lt); err != nil {
		log.Fatal(err)
	}
	for _, fr := range frames {
		fr.ci.CaptureLength = len(fr.data)
		fr.ci.Length = len(fr.data) + (fr.ci.Length - fr.ci.CaptureLength)
		if err := w.WritePacket(fr.ci, fr.data); err != nil {
			log.Fatal(err)
		}
	}
}

// relink replaces the 14-byte Ethernet header of every frame with hdr(ethertype).
func relink(frames []frame, hdr func(etype uint16) []byte) []frame {
	out := make([]frame, len(frames))
	for i, fr := range frames {
		et := binary.BigEndian.Uint16(fr.data[12:14])
		d := append(hdr(et), fr.data[14:]...)
		ci := fr.ci
		ci.Length = ci.Length - 14 + len(d) - (len(fr.data) - 14)
		out[i] = frame{ci, d}
	}
	return out
}

func family(et uint16) uint32 {
	if et == 0x86dd {
		return 10
	}
	return 2
}

func without(frames []frame, nums ...int) []frame {
	var out []frame
	for i, fr := range frames {
		if !slices.Contains(nums, i+1) {
			out = append(out, fr)
		}
	}
	return out
}

func synthetic(path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	sum, err := pcaptest.WriteHTTP(f, pcaptest.Options{TargetBytes: size, Parallel: 16, CallsPerConn: 100, Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d bytes, %d packets, %d connections, %d calls, statuses %v\n",
		path, sum.Bytes, sum.Packets, sum.Conns, sum.Calls, sum.Statuses)
}

func main() {
	synth := flag.String("synthetic", "", "write a generated capture to this file instead")
	size := flag.Int64("size", 100<<20, "approximate size of the generated capture in bytes")
	flag.Parse()
	if *synth != "" {
		synthetic(*synth, *size)
		return
	}
	cp, _ := read("curl-python.pcap")
	write("curl-python-null-le.pcap", layers.LinkTypeNull, relink(cp, func(et uint16) []byte {
		return binary.LittleEndian.AppendUint32(nil, family(et))
	}))
	write("curl-python-null-be.pcap", layers.LinkTypeNull, relink(cp, func(et uint16) []byte {
		return binary.BigEndian.AppendUint32(nil, family(et))
	}))
	write("curl-python-loop.pcap", layers.LinkTypeLoop, relink(cp, func(et uint16) []byte {
		return binary.BigEndian.AppendUint32(nil, family(et))
	}))
	write("curl-python-dltraw12.pcap", 12, relink(cp, func(uint16) []byte { return nil }))

	gn, lt := read("go-nginx.pcap")
	// Frame 19 carries 32768 bytes of the /big.bin body; the client's ACK
	// in frame 20 covers it, so the hole is known lost at once.
	write("go-nginx-gap.pcap", lt, without(gn, 19))
	// Frame 12 is the whole "GET /api/gone" request: its 410 answer
	// arrives for a request nobody saw.
	write("go-nginx-lost-request.pcap", lt, without(gn, 12))
	// Start at frame 10 (the POST): no handshake, two calls already done.
	write("go-nginx-midstream.pcap", lt, gn[9:])
	// Frames 18 and 19 swapped, frame 15 sent again after 16, frame 24
	// repeated at once: reordering and retransmissions.
	re := slices.Clone(gn)
	re[17], re[18] = re[18], re[17]
	re = slices.Insert(re, 16, gn[14])
	re = slices.Insert(re, 25, gn[23])
	write("go-nginx-reordered.pcap", lt, re)

	// A copy cut in the middle of frame 21's record.
	src, err := os.ReadFile(filepath.Join(dir, "go-nginx.pcap"))
	if err != nil {
		log.Fatal(err)
	}
	off := 24
	for i := 0; i < 20; i++ {
		off += 16 + int(binary.LittleEndian.Uint32(src[off+8:off+12]))
	}
	cut := off + 16 + 1000
	if err := os.WriteFile(filepath.Join(dir, "go-nginx-truncated.pcap"), src[:cut], 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Println("cut go-nginx-truncated.pcap at byte", cut, "of", len(src))
}
