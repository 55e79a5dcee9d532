package http2

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/apisonar/apisonar/parser"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// conv writes both sides of an HTTP/2 conversation with x/net's framer and
// HPACK encoder (independent of the code under test) and remembers which
// side wrote each piece, in order.
type conv struct {
	t      testing.TB
	pieces []piece
	buf    [2]bytes.Buffer
	fr     [2]*http2.Framer
	enc    [2]*hpack.Encoder
	hb     [2]bytes.Buffer
}

type piece struct {
	dir  parser.Direction
	data []byte
}

func newConv(t testing.TB, preface bool) *conv {
	c := &conv{t: t}
	for i := range c.fr {
		c.fr[i] = http2.NewFramer(&c.buf[i], nil)
		c.enc[i] = hpack.NewEncoder(&c.hb[i])
	}
	if preface {
		c.raw(parser.FromClient, []byte(http2.ClientPreface))
		c.settings(parser.FromClient)
		c.settings(parser.FromServer)
	}
	return c
}

func (c *conv) flush(dir parser.Direction) {
	if c.buf[dir].Len() > 0 {
		c.pieces = append(c.pieces, piece{dir, bytes.Clone(c.buf[dir].Bytes())})
		c.buf[dir].Reset()
	}
}

func (c *conv) raw(dir parser.Direction, b []byte) *conv {
	c.pieces = append(c.pieces, piece{dir, bytes.Clone(b)})
	return c
}

func (c *conv) settings(dir parser.Direction, s ...http2.Setting) *conv {
	if err := c.fr[dir].WriteSettings(s...); err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

// block encodes name, value pairs with dir's encoder.
func (c *conv) block(dir parser.Direction, kv ...string) []byte {
	c.hb[dir].Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		if err := c.enc[dir].WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]}); err != nil {
			c.t.Fatal(err)
		}
	}
	return bytes.Clone(c.hb[dir].Bytes())
}

func (c *conv) headers(dir parser.Direction, sid uint32, end bool, kv ...string) *conv {
	err := c.fr[dir].WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: c.block(dir, kv...), EndStream: end, EndHeaders: true})
	if err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

// headersSplit sends a header block as HEADERS + CONTINUATION frames of at
// most n bytes each, with padding and priority on the HEADERS frame.
func (c *conv) headersSplit(dir parser.Direction, sid uint32, end bool, n int, kv ...string) *conv {
	b := c.block(dir, kv...)
	first := b[:min(n, len(b))]
	rest := b[len(first):]
	err := c.fr[dir].WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: first, EndStream: end,
		EndHeaders: len(rest) == 0, PadLength: 7, Priority: http2.PriorityParam{StreamDep: 0, Weight: 15}})
	if err != nil {
		c.t.Fatal(err)
	}
	for len(rest) > 0 {
		f := rest[:min(n, len(rest))]
		rest = rest[len(f):]
		if err := c.fr[dir].WriteContinuation(sid, len(rest) == 0, f); err != nil {
			c.t.Fatal(err)
		}
	}
	c.flush(dir)
	return c
}

func (c *conv) data(dir parser.Direction, sid uint32, end bool, b []byte) *conv {
	if err := c.fr[dir].WriteData(sid, end, b); err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

func (c *conv) dataPadded(dir parser.Direction, sid uint32, end bool, b []byte, pad int) *conv {
	if err := c.fr[dir].WriteDataPadded(sid, end, b, make([]byte, pad)); err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

func (c *conv) rst(dir parser.Direction, sid uint32) *conv {
	if err := c.fr[dir].WriteRSTStream(sid, http2.ErrCodeCancel); err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

func (c *conv) goAway(dir parser.Direction, last uint32) *conv {
	if err := c.fr[dir].WriteGoAway(last, http2.ErrCodeNo, nil); err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

func (c *conv) push(dir parser.Direction, sid, promised uint32, kv ...string) *conv {
	err := c.fr[dir].WritePushPromise(http2.PushPromiseParam{StreamID: sid, PromiseID: promised, BlockFragment: c.block(dir, kv...), EndHeaders: true})
	if err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

func (c *conv) ping(dir parser.Direction) *conv {
	if err := c.fr[dir].WritePing(false, [8]byte{1, 2, 3}); err != nil {
		c.t.Fatal(err)
	}
	if err := c.fr[dir].WriteWindowUpdate(0, 1000); err != nil {
		c.t.Fatal(err)
	}
	if err := c.fr[dir].WritePriority(3, http2.PriorityParam{Weight: 1}); err != nil {
		c.t.Fatal(err)
	}
	c.flush(dir)
	return c
}

// grpcMsg frames one gRPC message.
func grpcMsg(compressed bool, body []byte) []byte {
	b := []byte{0, 0, 0, 0, 0}
	if compressed {
		b[0] = 1
	}
	n := len(body)
	b[1], b[2], b[3], b[4] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return append(b, body...)
}

var (
	cliAddr = netip.MustParseAddrPort("10.0.0.1:40000")
	srvAddr = netip.MustParseAddrPort("10.0.0.2:8443")
)

// collector keeps clones of emitted calls.
type collector struct{ calls []*parser.Call }

func (c *collector) Emit(call *parser.Call) { c.calls = append(c.calls, call.Clone()) }

// run feeds the pieces to a fresh parser in chunks of at most split bytes
// (0: whole pieces), with event time = piece index + 1, then closes it at
// time 1000.
func run(pieces []piece, split int, opts parser.Options) ([]*parser.Call, *parser.Stats) {
	var col collector
	st := new(parser.Stats)
	// The source's guess: cliAddr is the client, and the traced process
	// holds that end.
	p := New(&parser.ConnInfo{ID: 7, Client: cliAddr, Server: srvAddr, Side: parser.SideClient}, &col, st, opts)
	for i, pc := range pieces {
		b := pc.data
		for len(b) > 0 {
			n := len(b)
			if split > 0 {
				n = min(n, split)
			}
			p.Feed(pc.dir, int64(i+1), b[:n])
			b = b[n:]
		}
	}
	p.Close(1000)
	return col.calls, st
}
