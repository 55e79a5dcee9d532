package agent

import (
	"sync/atomic"

	"github.com/apisonar/apisonar/parser"
)

// ParserFactory builds the parser for one connection once its protocol is
// known.
type ParserFactory func(proto parser.Protocol, info *parser.ConnInfo, emit parser.Emitter) parser.StreamParser

// TrackerOptions bound the connection table.
type TrackerOptions struct {
	// MaxConns caps tracked connections; the least recently active one is
	// evicted (and counted) to make room. 0 means 65536.
	MaxConns int
	// IdleTimeout (nanoseconds of event time) after which a silent
	// connection is closed by Sweep. 0 means 10 minutes.
	IdleTimeout int64
}

// TrackerStats counts the connection table's life.
type TrackerStats struct {
	Opened, Closed, Evicted, Expired, NotHTTP, Swapped uint64
	Open                                               int
}

// A Tracker owns every live connection of one source: it detects the
// protocol from the first bytes, builds the connection's parser and routes
// each direction's bytes to it. It is used by one goroutine (the source's).
//
// Sources call Data, Gap and Close with a connection id that is unique
// among open connections, and the event time of the bytes.
type Tracker struct {
	opts    TrackerOptions
	emit    parser.Emitter
	factory ParserFactory
	conns   map[uint64]*conn
	// counters are atomic: the local API reads them while the source's
	// goroutine works.
	opened, closed, evicted, expired, notHTTP, swapped atomic.Uint64
	open                                               atomic.Int64
	// lru is a doubly linked list through conn.prev/next, most recent at head.
	head, tail *conn
}

type conn struct {
	info parser.ConnInfo
	p    parser.StreamParser
	// proto is ProtoUnknown until detected, ProtoNone for a connection
	// that is not HTTP (its bytes are dropped).
	proto parser.Protocol
	// swap is set when the source's idea of who is the client proved wrong.
	swap bool
	// pending holds the first bytes of a direction while detection is not
	// yet sure (a request split before the method's space).
	pending    [2][]byte
	last       int64
	prev, next *conn
}

// Default bounds of the connection table.
const (
	DefaultMaxConns    = 65536
	DefaultIdleTimeout = int64(10 * 60 * 1e9)
	// maxDetectBytes is how much of a direction is held while the first
	// bytes are too few to name the protocol.
	maxDetectBytes = 64
)

// NewTracker returns an empty connection table.
func NewTracker(opts TrackerOptions, factory ParserFactory, emit parser.Emitter) *Tracker {
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	return &Tracker{
		opts:    opts,
		emit:    emit,
		factory: factory,
		conns:   make(map[uint64]*conn),
	}
}

// Stats returns the table's counters.
func (t *Tracker) Stats() TrackerStats {
	return TrackerStats{
		Opened: t.opened.Load(), Closed: t.closed.Load(), Evicted: t.evicted.Load(),
		Expired: t.expired.Load(), NotHTTP: t.notHTTP.Load(), Swapped: t.swapped.Load(),
		Open: int(t.open.Load()),
	}
}

// lookup finds or creates the connection id, marking it most recent.
func (t *Tracker) lookup(id uint64, info *parser.ConnInfo, ts int64) *conn {
	c := t.conns[id]
	if c == nil {
		if len(t.conns) >= t.opts.MaxConns {
			t.evict(t.tail, ts)
			t.evicted.Add(1)
		}
		c = &conn{}
		if info != nil {
			c.info = *info
		}
		c.info.ID = id
		t.conns[id] = c
		t.open.Add(1)
		t.opened.Add(1)
		t.pushFront(c)
	} else if t.head != c {
		t.unlink(c)
		t.pushFront(c)
	}
	c.last = ts
	return c
}

// Data routes bytes that dir sent on connection id.
func (t *Tracker) Data(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, data []byte) {
	if len(data) == 0 {
		return
	}
	c := t.lookup(id, info, ts)
	switch c.proto {
	case parser.ProtoNone:
		return
	case parser.ProtoUnknown:
		t.detect(c, dir, ts, data)
		return
	}
	if c.swap {
		dir = dir.Other()
	}
	t.feed(c, dir, ts, data)
}

func (t *Tracker) feed(c *conn, dir parser.Direction, ts int64, data []byte) {
	c.p.Feed(dir, ts, data)
	sw, ok := c.p.(parser.Switcher)
	if !ok {
		return
	}
	to, left := sw.Switch()
	if to == parser.ProtoUnknown {
		return
	}
	old := c.p
	old.Close(ts)
	c.proto = to
	if to == parser.ProtoNone || t.factory == nil {
		c.proto = parser.ProtoNone
		c.p = nil
		return
	}
	c.p = t.factory(to, &c.info, t.emit)
	if c.p == nil {
		c.proto = parser.ProtoNone
		return
	}
	// An h2c upgrade: the request that asked for it is answered on
	// HTTP/2 stream 1.
	if from, ok := old.(interface{ UpgradedRequest() *parser.Call }); ok {
		if to, ok := c.p.(interface{ AdoptUpgrade(*parser.Call) }); ok {
			to.AdoptUpgrade(from.UpgradedRequest())
		}
	}
	// The client's leftover (the HTTP/2 preface) goes first.
	for _, d := range [2]parser.Direction{parser.FromClient, parser.FromServer} {
		if len(left[d]) > 0 {
			c.p.Feed(d, ts, left[d])
		}
	}
}

// detect buffers the first bytes of a connection until parser.Detect is
// sure, then builds the parser and replays what was held.
func (t *Tracker) detect(c *conn, dir parser.Direction, ts int64, data []byte) {
	probe := data
	if len(c.pending[dir]) > 0 {
		c.pending[dir] = append(c.pending[dir], data...)
		probe = c.pending[dir]
	}
	g := parser.Detect(probe)
	if !g.Sure {
		if len(probe) >= maxDetectBytes {
			g = parser.Guess{Proto: parser.ProtoNone, Sure: true}
		} else {
			if len(c.pending[dir]) == 0 {
				c.pending[dir] = append(make([]byte, 0, maxDetectBytes), data...)
			}
			return
		}
	}
	if g.Proto == parser.ProtoNone || g.Proto == parser.ProtoUnknown || t.factory == nil {
		c.proto = parser.ProtoNone
		c.pending = [2][]byte{}
		t.notHTTP.Add(1)
		return
	}
	// A request sent by the side the source called the server, or a
	// response sent by the client: the source's guess was wrong.
	if g.Sided && g.Request != (dir == parser.FromClient) {
		c.swap = true
		c.info.Client, c.info.Server = c.info.Server, c.info.Client
		c.info.Side = c.info.Side.Flip()
		t.swapped.Add(1)
	}
	c.proto = g.Proto
	c.p = t.factory(g.Proto, &c.info, t.emit)
	if c.p == nil {
		c.proto = parser.ProtoNone
		c.pending = [2][]byte{}
		return
	}
	held := c.pending
	c.pending = [2][]byte{}
	other := dir.Other()
	// Bytes held from the other direction came first.
	if len(held[other]) > 0 {
		d := other
		if c.swap {
			d = d.Other()
		}
		t.feed(c, d, ts, held[other])
	}
	d := dir
	if c.swap {
		d = d.Other()
	}
	t.feed(c, d, ts, probe)
}

// Gap reports n bytes lost in dir on connection id.
func (t *Tracker) Gap(id uint64, info *parser.ConnInfo, dir parser.Direction, ts int64, n int) {
	c := t.lookup(id, info, ts)
	if c.p == nil {
		// Nothing parsed yet: what is held can no longer be trusted.
		c.pending[dir] = c.pending[dir][:0]
		return
	}
	if c.swap {
		dir = dir.Other()
	}
	c.p.Gap(dir, ts, n)
}

// Close ends connection id at ts.
func (t *Tracker) Close(id uint64, ts int64) {
	c := t.conns[id]
	if c == nil {
		return
	}
	t.closed.Add(1)
	t.evict(c, ts)
}

// Sweep closes connections silent for longer than the idle timeout.
func (t *Tracker) Sweep(now int64) {
	for c := t.tail; c != nil && now-c.last > t.opts.IdleTimeout; c = t.tail {
		t.expired.Add(1)
		t.evict(c, now)
	}
}

// CloseAll ends every connection, flushing pending requests.
func (t *Tracker) CloseAll(ts int64) {
	for t.tail != nil {
		t.evict(t.tail, ts)
	}
}

func (t *Tracker) evict(c *conn, ts int64) {
	if c == nil {
		return
	}
	if c.p != nil {
		c.p.Close(ts)
	}
	t.unlink(c)
	delete(t.conns, c.info.ID)
	t.open.Add(-1)
}

func (t *Tracker) pushFront(c *conn) {
	c.prev = nil
	c.next = t.head
	if t.head != nil {
		t.head.prev = c
	}
	t.head = c
	if t.tail == nil {
		t.tail = c
	}
}

func (t *Tracker) unlink(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else if t.head == c {
		t.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else if t.tail == c {
		t.tail = c.prev
	}
	c.prev, c.next = nil, nil
}
