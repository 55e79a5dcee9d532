package http1

import (
	"slices"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// FuzzParser feeds two arbitrary byte streams, the client's and the
// server's, interleaved in pieces whose sizes, order and occasional gaps
// come from seed. It checks that nothing panics, that buffers and the
// pending queue stay within their bounds, that every call is sane, and
// that cutting each piece further, byte by byte, changes nothing.
func FuzzParser(f *testing.F) {
	for _, tc := range parserCases() {
		var cli, srv []byte
		for _, e := range tc.events {
			switch e.kind {
			case 'c':
				cli = append(cli, e.data...)
			case 's':
				srv = append(srv, e.data...)
			}
		}
		f.Add(cli, srv, uint64(len(tc.name)))
	}
	f.Add([]byte(postJS+getA), []byte(ok5+nf3), uint64(0xfeed))
	f.Fuzz(func(t *testing.T, cli, srv []byte, seed uint64) {
		opts := parser.Options{MaxBodyPrefix: 16, MaxHeaderBytes: 512, MaxPending: 4}
		evs := fuzzEvents(cli, srv, seed)
		whole := fuzzRun(t, opts, evs, 0)
		split := fuzzRun(t, opts, evs, 1)
		if !slices.Equal(whole.calls, split.calls) || whole.stats != split.stats {
			t.Fatalf("cutting the writes changed the outcome:\nwhole %q %+v\nsplit %q %+v",
				whole.calls, whole.stats, split.calls, split.stats)
		}
	})
}

// fuzzEvents cuts the two streams into interleaved writes. The seed drives
// a small xorshift generator, so a corpus entry always replays the same.
func fuzzEvents(cli, srv []byte, seed uint64) []event {
	x := seed | 1
	next := func() uint64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return x
	}
	var evs []event
	ts := int64(1)
	for len(cli) > 0 || len(srv) > 0 {
		r := next()
		dir := parser.Direction(r & 1)
		if len(cli) == 0 {
			dir = parser.FromServer
		} else if len(srv) == 0 {
			dir = parser.FromClient
		}
		src := &cli
		kind := byte('c')
		if dir == parser.FromServer {
			src, kind = &srv, 's'
		}
		if r>>1&15 == 0 {
			// A lost write: known size half of the time.
			n := int(r >> 8 % 64)
			if r>>5&1 == 0 {
				n = 0
			}
			evs = append(evs, gap(dir, ts, n))
		}
		n := min(len(*src), 1+int(r>>16%200))
		evs = append(evs, event{kind: kind, dir: dir, ts: ts, data: string((*src)[:n])})
		*src = (*src)[n:]
		ts++
	}
	return append(evs, closeAt(ts))
}

// fuzzRun is run with the parser's bounds checked after every step.
func fuzzRun(t *testing.T, opts parser.Options, events []event, split int) result {
	var res result
	var stats parser.Stats
	maxPending := opts.MaxPending
	var p *Parser
	p = New(&parser.ConnInfo{}, parser.EmitFunc(func(c *parser.Call) {
		switch {
		case len(c.Method) == 0:
			t.Fatalf("call without a method: %s", summary(c))
		case c.Status != 0 && (c.Status < 100 || c.Status > 999):
			t.Fatalf("status out of range: %s", summary(c))
		case c.Flags&parser.FlagNoResponse != 0 && c.Status != 0:
			t.Fatalf("no response but a status: %s", summary(c))
		case c.ReqBytes < 0 || c.RespBytes < 0:
			t.Fatalf("negative size: %s", summary(c))
		case int64(len(c.ReqBody)) > c.ReqBytes || int64(len(c.RespBody)) > c.RespBytes:
			t.Fatalf("body prefix longer than the body: %s", summary(c))
		case len(c.ReqBody) > opts.MaxBodyPrefix || len(c.RespBody) > opts.MaxBodyPrefix:
			t.Fatalf("body prefix over the bound: %s", summary(c))
		case c.End < c.Start:
			t.Fatalf("ends before it starts: %s", summary(c))
		}
		res.calls = append(res.calls, summary(c))
	}), &stats, opts)
	check := func() {
		for d := range p.half {
			if n := len(p.half[d].buf); n > opts.HeaderLimit() {
				t.Fatalf("%v buffer holds %d bytes", parser.Direction(d), n)
			}
		}
		if p.qlen > maxPending {
			t.Fatalf("%d pending requests", p.qlen)
		}
	}
	for _, e := range events {
		switch e.kind {
		case 'c', 's':
			d := []byte(e.data)
			for len(d) > 0 {
				n := len(d)
				if split > 0 {
					n = min(n, split)
				}
				p.Feed(e.dir, e.ts, d[:n])
				d = d[n:]
				check()
				if to, _ := p.Switch(); to != parser.ProtoUnknown {
					res.switchTo = to
				}
			}
		case 'g':
			p.Gap(e.dir, e.ts, e.n)
			check()
		case 'x':
			p.Close(e.ts)
		}
	}
	res.stats = snapshot(&stats)
	if stats.Calls.Load() != uint64(len(res.calls)) {
		t.Fatalf("stats.Calls = %d, emitted %d", stats.Calls.Load(), len(res.calls))
	}
	return res
}
