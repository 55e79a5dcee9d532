// Package pcaptest writes synthetic but well-formed packet captures for
// tests, benchmarks and load files: HTTP/1.1 keep-alive calls over TCP
// connections with a full handshake, correct sequence and acknowledgement
// numbers, checksums, segmentation at an MSS and an orderly close.
//
// The output is deterministic for given options, so a benchmark's input is
// the same from run to run. Nothing here is used by the agent itself.
package pcaptest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Options shape a synthetic capture. Zero values take the defaults noted.
type Options struct {
	// TargetBytes stops the capture once this many bytes are written
	// (after the connections in flight close). Default 10 MB.
	TargetBytes int64
	// Parallel is how many connections are open and interleaved at once.
	// Default 16.
	Parallel int
	// CallsPerConn is how many keep-alive calls each connection carries.
	// Default 100.
	CallsPerConn int
	// MSS is the largest TCP payload per segment. Default 1448.
	MSS int
	// Seed makes paths, sizes and ports reproducible.
	Seed uint64
	// Start is the first packet's time. Default 2026-01-02T03:04:05Z.
	Start time.Time
}

// Summary says what was written.
type Summary struct {
	Conns, Calls, Packets int64
	Bytes                 int64 // file bytes
	// Statuses counts responses per status code.
	Statuses map[int]int64
}

// WriteHTTP writes an Ethernet pcap (nanosecond timestamps) of HTTP/1.1
// keep-alive traffic to w.
func WriteHTTP(w io.Writer, o Options) (Summary, error) {
	if o.TargetBytes <= 0 {
		o.TargetBytes = 10 << 20
	}
	if o.Parallel <= 0 {
		o.Parallel = 16
	}
	if o.CallsPerConn <= 0 {
		o.CallsPerConn = 100
	}
	if o.MSS <= 0 {
		o.MSS = 1448
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	pw := pcapgo.NewWriterNanos(cw)
	if err := pw.WriteFileHeader(65535+64, layers.LinkTypeEthernet); err != nil {
		return Summary{}, err
	}
	g := &gen{o: o, pw: pw, rng: rand.New(rand.NewPCG(o.Seed, 0x5eed)), now: o.Start,
		sum: Summary{Statuses: map[int]int64{}}}
	conns := make([]*conn, o.Parallel)
	for cw.n < o.TargetBytes || anyOpen(conns) {
		for i := range conns {
			c := conns[i]
			if c == nil && cw.n < o.TargetBytes {
				c = g.open()
				conns[i] = c
			}
			if c == nil {
				continue
			}
			if c.calls == o.CallsPerConn {
				g.close(c)
				conns[i] = nil
				continue
			}
			g.call(c)
			if g.err != nil {
				return g.sum, g.err
			}
		}
	}
	if err := cw.w.Flush(); err != nil {
		return g.sum, err
	}
	g.sum.Bytes = cw.n
	return g.sum, g.err
}

func anyOpen(cs []*conn) bool {
	for _, c := range cs {
		if c != nil {
			return true
		}
	}
	return false
}

type countWriter struct {
	w *bufio.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type gen struct {
	o     Options
	pw    *pcapgo.Writer
	rng   *rand.Rand
	now   time.Time
	sum   Summary
	err   error
	port  uint16
	frame []byte
	body  []byte
}

type conn struct {
	cport      uint16
	cseq, sseq uint32
	calls      int
}

var (
	clientIP = [4]byte{10, 1, 0, 1}
	serverIP = [4]byte{10, 1, 0, 2}
)

const serverPort = 8080

func (g *gen) open() *conn {
	g.port++
	if g.port < 32768 || g.port > 60999 {
		g.port = 32768
	}
	c := &conn{cport: g.port, cseq: g.rng.Uint32(), sseq: g.rng.Uint32()}
	g.sum.Conns++
	g.seg(c, false, flagSYN, nil)
	c.cseq++
	g.seg(c, true, flagSYN|flagACK, nil)
	c.sseq++
	g.seg(c, false, flagACK, nil)
	return c
}

func (g *gen) close(c *conn) {
	g.seg(c, false, flagFIN|flagACK, nil)
	c.cseq++
	g.seg(c, true, flagFIN|flagACK, nil)
	c.sseq++
	g.seg(c, false, flagACK, nil)
}

var paths = []string{"/api/v1/users/%d", "/api/v1/orders/%d/items", "/api/v1/products/%d", "/health", "/api/v1/search?q=item%d"}

func (g *gen) call(c *conn) {
	c.calls++
	g.sum.Calls++
	p := paths[g.rng.IntN(len(paths))]
	if p != "/health" {
		p = fmt.Sprintf(p, g.rng.IntN(100000))
	}
	method, reqBody := "GET", ""
	if g.rng.IntN(5) == 0 {
		method = "POST"
		reqBody = fmt.Sprintf(`{"name":"item-%d","qty":%d}`, g.rng.IntN(1000), g.rng.IntN(10))
	}
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: shop.example:8080\r\nUser-Agent: pcaptest/1\r\nAccept: application/json\r\n", method, p)
	if reqBody != "" {
		req += fmt.Sprintf("Content-Type: application/json\r\nContent-Length: %d\r\n", len(reqBody))
	}
	req += "\r\n" + reqBody
	g.send(c, false, []byte(req))

	status, text := 200, "OK"
	switch r := g.rng.IntN(20); {
	case r == 0:
		status, text = 404, "Not Found"
	case r == 1:
		status, text = 500, "Internal Server Error"
	case method == "POST":
		status, text = 201, "Created"
	}
	g.sum.Statuses[status]++
	n := 64 + g.rng.IntN(4000)
	if cap(g.body) < n {
		g.body = make([]byte, n)
	}
	body := g.body[:n]
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	body[0], body[n-1] = '"', '"'
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nServer: pcaptest\r\n\r\n", status, text, n)
	g.send(c, true, append([]byte(head), body...))
	g.seg(c, false, flagACK, nil)
}

// send splits data into MSS-sized segments from one side.
func (g *gen) send(c *conn, fromServer bool, data []byte) {
	for len(data) > 0 {
		n := min(len(data), g.o.MSS)
		g.seg(c, fromServer, flagACK|flagPSH, data[:n])
		if fromServer {
			c.sseq += uint32(n)
		} else {
			c.cseq += uint32(n)
		}
		data = data[n:]
	}
}

const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagPSH = 0x08
	flagACK = 0x10
)

// seg writes one Ethernet/IPv4/TCP frame.
func (g *gen) seg(c *conn, fromServer bool, flags byte, payload []byte) {
	if g.err != nil {
		return
	}
	g.now = g.now.Add(time.Duration(20+g.rng.IntN(60)) * time.Microsecond)
	src, dst := clientIP, serverIP
	sport, dport := c.cport, uint16(serverPort)
	seq, ack := c.cseq, c.sseq
	if fromServer {
		src, dst = dst, src
		sport, dport = dport, sport
		seq, ack = c.sseq, c.cseq
	}
	if flags&flagACK == 0 {
		ack = 0
	}
	total := 14 + 20 + 20 + len(payload)
	if cap(g.frame) < total {
		g.frame = make([]byte, total+4096)
	}
	f := g.frame[:total]
	// Ethernet
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	if fromServer {
		f[5], f[11] = 1, 2
	}
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	// IPv4
	ip := f[14:34]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+20+len(payload)))
	binary.BigEndian.PutUint16(ip[4:6], uint16(g.sum.Packets))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8], ip[9] = 64, 6
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], ^fold(sum16(ip, 0)))
	// TCP
	t := f[34:54]
	binary.BigEndian.PutUint16(t[0:2], sport)
	binary.BigEndian.PutUint16(t[2:4], dport)
	binary.BigEndian.PutUint32(t[4:8], seq)
	binary.BigEndian.PutUint32(t[8:12], ack)
	t[12], t[13] = 5<<4, flags
	binary.BigEndian.PutUint16(t[14:16], 65535)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0
	copy(f[54:], payload)
	pseudo := sum16(src[:], 0)
	pseudo = sum16(dst[:], pseudo)
	pseudo += 6 + uint32(20+len(payload))
	binary.BigEndian.PutUint16(t[16:18], ^fold(sum16(f[34:], pseudo)))

	ci := gopacket.CaptureInfo{Timestamp: g.now, CaptureLength: total, Length: total}
	if err := g.pw.WritePacket(ci, f); err != nil {
		g.err = err
	}
	g.sum.Packets++
}

func sum16(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
