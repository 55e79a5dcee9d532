package http1

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// event is one thing that happens on a test connection: bytes from a peer,
// a gap, or the close.
type event struct {
	kind byte // 'c' client bytes, 's' server bytes, 'g' gap, 'x' close
	dir  parser.Direction
	ts   int64
	data string
	n    int
}

func cli(ts int64, s string) event { return event{kind: 'c', dir: parser.FromClient, ts: ts, data: s} }
func srv(ts int64, s string) event { return event{kind: 's', dir: parser.FromServer, ts: ts, data: s} }
func gap(dir parser.Direction, ts int64, n int) event {
	return event{kind: 'g', dir: dir, ts: ts, n: n}
}
func closeAt(ts int64) event { return event{kind: 'x', ts: ts} }

// crlf turns the readable "\n" line ends of a test message into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// summary renders a call as one readable line, the unit tests compare.
func summary(c *parser.Call) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", c.Method, c.Path)
	if c.Query != nil {
		fmt.Fprintf(&b, "?%s", c.Query)
	}
	if c.Host != nil {
		fmt.Fprintf(&b, " host=%s", c.Host)
	}
	fmt.Fprintf(&b, " -> %d req=%d resp=%d t=%d..%d", c.Status, c.ReqBytes, c.RespBytes, c.Start, c.End)
	if c.RespContentType != nil {
		fmt.Fprintf(&b, " ct=%s", c.RespContentType)
	}
	if c.ReqHeaders[parser.HdrUserAgent] != nil {
		fmt.Fprintf(&b, " ua=%s", c.ReqHeaders[parser.HdrUserAgent])
	}
	if c.ReqHeaders[parser.HdrAuthorization] != nil {
		fmt.Fprintf(&b, " auth=%s", c.ReqHeaders[parser.HdrAuthorization])
	}
	if len(c.ReqBody) > 0 {
		fmt.Fprintf(&b, " reqbody=%q", c.ReqBody)
	}
	if len(c.RespBody) > 0 {
		fmt.Fprintf(&b, " respbody=%q", c.RespBody)
	}
	for _, f := range []struct {
		bit  uint16
		name string
	}{
		{parser.FlagPartial, "partial"},
		{parser.FlagReqTruncated, "reqtrunc"},
		{parser.FlagRespTruncated, "resptrunc"},
		{parser.FlagNoResponse, "noresp"},
		{parser.FlagUpgrade, "upgrade"},
	} {
		if c.Flags&f.bit != 0 {
			b.WriteString(" " + f.name)
		}
	}
	return b.String()
}

// counts is the part of parser.Stats a test looks at.
type counts struct {
	Errors, Resyncs, TooBig, NoResp, Drops, Upgrades, Truncated uint64
}

func snapshot(s *parser.Stats) counts {
	return counts{
		Errors: s.Errors.Load(), Resyncs: s.Resyncs.Load(), TooBig: s.HeaderTooBig.Load(),
		NoResp: s.NoResponse.Load(), Drops: s.PendingDrops.Load(), Upgrades: s.Upgrades.Load(),
		Truncated: s.Truncated.Load(),
	}
}

// result is what running a script produced.
type result struct {
	calls    []string
	stats    counts
	switchTo parser.Protocol
	left     [2]string
}

// run plays events against a fresh parser. split cuts every Feed into
// pieces of at most split bytes (0: whole).
func run(t testing.TB, opts parser.Options, events []event, split int) result {
	t.Helper()
	var res result
	var stats parser.Stats
	handed := 0
	info := &parser.ConnInfo{ID: 7}
	p := New(info, parser.EmitFunc(func(c *parser.Call) {
		if c.Conn != info {
			t.Errorf("call without its connection: %v", c.Conn)
		}
		if c.Protocol != parser.ProtoHTTP1 {
			t.Errorf("protocol %v", c.Protocol)
		}
		res.calls = append(res.calls, summary(c))
	}), &stats, opts)
	for _, e := range events {
		switch e.kind {
		case 'c', 's':
			d := []byte(e.data)
			for len(d) > 0 {
				n := len(d)
				if split > 0 {
					n = min(n, split)
				}
				if res.switchTo != parser.ProtoUnknown {
					// What the next protocol's parser would be fed.
					if res.switchTo == parser.ProtoHTTP2 {
						res.left[e.dir] += string(d[:n])
					}
					d = d[n:]
					continue
				}
				p.Feed(e.dir, e.ts, d[:n])
				d = d[n:]
				if to, left := p.Switch(); to != parser.ProtoUnknown {
					res.switchTo = to
					res.left[0] += string(left[0])
					res.left[1] += string(left[1])
					if c := p.UpgradedRequest(); c != nil {
						res.calls = append(res.calls, "handed to h2: "+summary(c))
						handed++
					}
				}
			}
		case 'g':
			p.Gap(e.dir, e.ts, e.n)
		case 'x':
			p.Close(e.ts)
		}
	}
	res.stats = snapshot(&stats)
	if got := stats.Calls.Load(); got != uint64(len(res.calls)-handed) {
		t.Errorf("stats.Calls = %d, emitted %d", got, len(res.calls))
	}
	return res
}

type parserCase struct {
	name   string
	opts   parser.Options
	events []event
	want   []string
	stats  counts
	// switchTo and left are checked when switchTo is set.
	switchTo parser.Protocol
	left     [2]string
}

var (
	getA   = crlf("GET /a?x=1 HTTP/1.1\nHost: api.test\nUser-Agent: ua/1\n\n")
	getB   = crlf("GET /b HTTP/1.1\nHost: api.test\n\n")
	getC   = crlf("GET /c HTTP/1.1\nHost: api.test\n\n")
	ok5    = crlf("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\nhello")
	ok0    = crlf("HTTP/1.1 200 OK\nContent-Length: 0\n\n")
	nf3    = crlf("HTTP/1.1 404 Not Found\nContent-Length: 3\n\nnop")
	postJS = crlf("POST /users HTTP/1.1\nHost: api.test\nContent-Type: application/json\nContent-Length: 13\n\n") + `{"name":"al"}`
)

func parserCases() []parserCase {
	withBody := parser.Options{MaxBodyPrefix: 64}
	return []parserCase{
		{
			name:   "get_with_content_length_response",
			events: []event{cli(1, getA), srv(2, ok5)},
			want:   []string{"GET /a?x=1 host=api.test -> 200 req=0 resp=5 t=1..2 ct=text/plain ua=ua/1"},
		},
		{
			name:   "body_prefixes_kept_when_asked",
			opts:   withBody,
			events: []event{cli(1, postJS), srv(3, ok5)},
			want:   []string{`POST /users host=api.test -> 200 req=13 resp=5 t=1..3 ct=text/plain reqbody="{\"name\":\"al\"}" respbody="hello"`},
		},
		{
			name:   "body_prefix_bounded_but_bytes_counted",
			opts:   parser.Options{MaxBodyPrefix: 4},
			events: []event{cli(1, postJS), srv(3, ok5)},
			want:   []string{`POST /users host=api.test -> 200 req=13 resp=5 t=1..3 ct=text/plain reqbody="{\"na" respbody="hell"`},
		},
		{
			name:   "keep_alive_two_calls",
			events: []event{cli(1, getA), srv(2, ok5), cli(3, getB), srv(4, nf3)},
			want: []string{
				"GET /a?x=1 host=api.test -> 200 req=0 resp=5 t=1..2 ct=text/plain ua=ua/1",
				"GET /b host=api.test -> 404 req=0 resp=3 t=3..4",
			},
		},
		{
			name:   "pipelined_three_requests_one_write",
			events: []event{cli(1, getA+getB+getC), srv(2, ok5+nf3), srv(3, ok0)},
			want: []string{
				"GET /a?x=1 host=api.test -> 200 req=0 resp=5 t=1..2 ct=text/plain ua=ua/1",
				"GET /b host=api.test -> 404 req=0 resp=3 t=1..2",
				"GET /c host=api.test -> 200 req=0 resp=0 t=1..3",
			},
		},
		{
			name: "chunked_response_with_extensions",
			events: []event{cli(1, getB), srv(2, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"+
				"5;name=val\nhello\n6\n world\n0\n\n"))},
			want: []string{"GET /b host=api.test -> 200 req=0 resp=11 t=1..2"},
		},
		{
			name: "chunked_with_trailers",
			opts: withBody,
			events: []event{
				cli(1, crlf("POST /up HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n3\nabc\n2\nde\n0\nX-Sum: 9\nX-More: 1\n\n")),
				srv(5, ok0),
			},
			want: []string{`POST /up host=h -> 200 req=5 resp=0 t=1..5 reqbody="abcde"`},
		},
		{
			name:   "head_response_has_no_body",
			events: []event{cli(1, crlf("HEAD /h HTTP/1.1\nHost: h\n\n")+getB), srv(2, crlf("HTTP/1.1 200 OK\nContent-Length: 1000\n\n")+nf3)},
			want: []string{
				"HEAD /h host=h -> 200 req=0 resp=0 t=1..2",
				"GET /b host=api.test -> 404 req=0 resp=3 t=1..2",
			},
		},
		{
			name:   "no_content_and_not_modified_have_no_body",
			events: []event{cli(1, getA+getB+getC), srv(2, crlf("HTTP/1.1 204 No Content\n\nHTTP/1.1 304 Not Modified\nContent-Length: 50\n\n")+nf3)},
			want: []string{
				"GET /a?x=1 host=api.test -> 204 req=0 resp=0 t=1..2 ua=ua/1",
				"GET /b host=api.test -> 304 req=0 resp=0 t=1..2",
				"GET /c host=api.test -> 404 req=0 resp=3 t=1..2",
			},
		},
		{
			name: "continue_then_200",
			events: []event{
				cli(1, crlf("PUT /f HTTP/1.1\nHost: h\nExpect: 100-continue\nContent-Length: 4\n\n")),
				srv(2, crlf("HTTP/1.1 100 Continue\n\n")),
				cli(3, "data"),
				srv(4, crlf("HTTP/1.1 201 Created\nContent-Length: 0\n\n")),
			},
			want: []string{"PUT /f host=h -> 201 req=4 resp=0 t=1..4"},
		},
		{
			name: "early_hints_then_200",
			events: []event{cli(1, getB), srv(2, crlf("HTTP/1.1 103 Early Hints\nLink: </s.css>\n\n")+
				crlf("HTTP/1.1 102 Processing\n\n")+ok5)},
			want: []string{"GET /b host=api.test -> 200 req=0 resp=5 t=1..2 ct=text/plain"},
		},
		{
			name: "response_until_close",
			events: []event{
				cli(1, crlf("GET /old HTTP/1.0\n\n")),
				srv(2, crlf("HTTP/1.0 200 OK\nContent-Type: text/html\n\n")+"<html>"),
				srv(3, "</html>"),
				closeAt(9),
			},
			want: []string{"GET /old -> 200 req=0 resp=13 t=1..3 ct=text/html"},
		},
		{
			name: "connection_close_response_with_length",
			events: []event{
				cli(1, crlf("GET /x HTTP/1.1\nHost: h\nConnection: close\n\n")),
				srv(2, crlf("HTTP/1.1 200 OK\nConnection: close\nContent-Length: 2\n\nok")),
				closeAt(3),
			},
			want: []string{"GET /x host=h -> 200 req=0 resp=2 t=1..2"},
		},
		{
			name:   "request_without_length_has_no_body",
			events: []event{cli(1, crlf("DELETE /users/7 HTTP/1.1\nHost: h\n\n")+getB), srv(2, ok0+ok0)},
			want: []string{
				"DELETE /users/7 host=h -> 200 req=0 resp=0 t=1..2",
				"GET /b host=api.test -> 200 req=0 resp=0 t=1..2",
			},
		},
		{
			name:   "no_response_at_close",
			events: []event{cli(1, getA+getB), srv(2, ok5), closeAt(3)},
			want: []string{
				"GET /a?x=1 host=api.test -> 200 req=0 resp=5 t=1..2 ct=text/plain ua=ua/1",
				"GET /b host=api.test -> 0 req=0 resp=0 t=1..3 noresp",
			},
			stats: counts{NoResp: 1},
		},
		{
			name:   "response_cut_by_close_is_truncated",
			events: []event{cli(1, getB), srv(2, crlf("HTTP/1.1 200 OK\nContent-Length: 10\n\n")+"abc"), closeAt(3)},
			want:   []string{"GET /b host=api.test -> 200 req=0 resp=3 t=1..2 resptrunc"},
			stats:  counts{Truncated: 1},
		},
		{
			name: "header_names_any_case",
			events: []event{cli(1, crlf("GET /k HTTP/1.1\nhOsT: Mixed.Case\nAUTHORIZATION: Bearer t\n\n")),
				srv(2, crlf("HTTP/1.1 200 OK\ncontent-type: application/json\nCONTENT-LENGTH: 2\n\n{}"))},
			want: []string{"GET /k host=Mixed.Case -> 200 req=0 resp=2 t=1..2 ct=application/json auth=Bearer t"},
		},
		{
			name: "obs_fold_is_an_error",
			events: []event{
				cli(1, crlf("POST /f HTTP/1.1\nHost: h\nX-A: 1\n Content-Length: 5\n\nhello\n")+getB),
				srv(2, crlf("HTTP/1.1 400 Bad Request\nContent-Length: 0\n\n")+ok0),
			},
			want: []string{
				"POST /f host=h -> 400 req=0 resp=0 t=1..2 partial reqtrunc",
				"GET /b host=api.test -> 200 req=0 resp=0 t=1..2",
			},
			stats: counts{Errors: 1, Resyncs: 1, Truncated: 1},
		},
		{
			name:   "absolute_form_target_gives_path_and_host",
			events: []event{cli(1, crlf("GET http://proxy.test:8080/p/q?z=2 HTTP/1.1\n\n")), srv(2, ok0)},
			want:   []string{"GET /p/q?z=2 host=proxy.test:8080 -> 200 req=0 resp=0 t=1..2"},
		},
		{
			name:   "bare_lf_line_ends_are_survived",
			events: []event{cli(1, "GET /lf HTTP/1.1\nHost: h\n\n"), srv(2, "HTTP/1.1 200 OK\nContent-Length: 1\n\nz")},
			want:   []string{"GET /lf host=h -> 200 req=0 resp=1 t=1..2"},
		},
		{
			name:   "identical_duplicate_content_length_is_accepted",
			events: []event{cli(1, crlf("POST /d HTTP/1.1\nContent-Length: 2\nContent-Length: 2\n\nhi")), srv(2, ok0)},
			want:   []string{"POST /d -> 200 req=2 resp=0 t=1..2"},
		},
		{
			name: "smuggle_cl_and_te",
			events: []event{
				cli(1, crlf("POST /s HTTP/1.1\nHost: h\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n")+getB),
				srv(2, crlf("HTTP/1.1 400 Bad Request\nContent-Length: 0\n\n")+ok0),
			},
			want: []string{
				"POST /s host=h -> 400 req=0 resp=0 t=1..2 partial reqtrunc",
				"GET /b host=api.test -> 200 req=0 resp=0 t=1..2",
			},
			stats: counts{Errors: 1, Resyncs: 1, Truncated: 1},
		},
		{
			name: "smuggle_two_content_length",
			events: []event{
				cli(1, crlf("POST /s HTTP/1.1\nContent-Length: 3\nContent-Length: 30\n\nabc\n")+getB),
				srv(2, crlf("HTTP/1.1 400 Bad Request\nContent-Length: 0\n\n")+ok0),
			},
			want: []string{
				"POST /s -> 400 req=0 resp=0 t=1..2 partial reqtrunc",
				"GET /b host=api.test -> 200 req=0 resp=0 t=1..2",
			},
			stats: counts{Errors: 1, Resyncs: 1, Truncated: 1},
		},
		{
			name: "smuggle_te_not_chunked_last",
			events: []event{
				cli(1, crlf("POST /s HTTP/1.1\nTransfer-Encoding: chunked, gzip\n\nzzz\n")+getB),
				srv(2, crlf("HTTP/1.1 400 Bad Request\nContent-Length: 0\n\n")+ok0),
			},
			want: []string{
				"POST /s -> 400 req=0 resp=0 t=1..2 partial reqtrunc",
				"GET /b host=api.test -> 200 req=0 resp=0 t=1..2",
			},
			stats: counts{Errors: 1, Resyncs: 1, Truncated: 1},
		},
		{
			name: "smuggle_response_cl_and_te",
			events: []event{
				cli(1, getB+getC),
				srv(2, crlf("HTTP/1.1 200 OK\nContent-Length: 3\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n")),
			},
			want: []string{
				"GET /b host=api.test -> 200 req=0 resp=0 t=1..2 partial resptrunc",
				"GET /c host=api.test -> 0 req=0 resp=0 t=1..2 partial noresp",
			},
			stats: counts{Errors: 1, Resyncs: 1, NoResp: 1, Truncated: 1},
		},
		{
			name:   "garbage_request_then_valid_one",
			events: []event{cli(1, "\x16\x03\x01 junk junk\r\nmore junk\r\n"+getB), srv(2, ok0)},
			want:   []string{"GET /b host=api.test -> 200 req=0 resp=0 t=1..2"},
			stats:  counts{Errors: 1, Resyncs: 1},
		},
		{
			name:   "bad_header_field_is_an_error",
			events: []event{cli(1, crlf("GET /bad HTTP/1.1\nBad Name: x\n\n")+getB), srv(2, ok0+nf3)},
			want: []string{
				"GET /bad -> 200 req=0 resp=0 t=1..2 partial reqtrunc",
				"GET /b host=api.test -> 404 req=0 resp=3 t=1..2",
			},
			stats: counts{Errors: 1, Resyncs: 1, Truncated: 1},
		},
		{
			name:   "bare_cr_in_header_is_an_error",
			events: []event{cli(1, crlf("GET /bad HTTP/1.1\nX: a\rb\n\n")+getB), srv(2, ok0+nf3)},
			want: []string{
				"GET /bad -> 200 req=0 resp=0 t=1..2 partial reqtrunc",
				"GET /b host=api.test -> 404 req=0 resp=3 t=1..2",
			},
			stats: counts{Errors: 1, Resyncs: 1, Truncated: 1},
		},
		{
			name: "bad_chunk_size_is_an_error",
			events: []event{
				cli(1, getB+getC),
				srv(2, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nzz\nhello\n0\n\n")+ok0),
			},
			want: []string{
				"GET /b host=api.test -> 200 req=0 resp=0 t=1..2 partial resptrunc",
				"GET /c host=api.test -> 0 req=0 resp=0 t=1..2 partial noresp",
			},
			stats: counts{Errors: 2, Resyncs: 1, NoResp: 1, Truncated: 1},
		},
		{
			name:   "header_block_over_limit_dropped",
			opts:   parser.Options{MaxHeaderBytes: 128},
			events: []event{cli(1, crlf("GET /big HTTP/1.1\nX-Pad: "+strings.Repeat("p", 200)+"\n\n")+getB), srv(2, ok0)},
			want:   []string{"GET /b host=api.test -> 200 req=0 resp=0 t=1..2"},
			stats:  counts{TooBig: 1, Resyncs: 1},
		},
		{
			name: "gap_inside_body_skips_known_length",
			opts: withBody,
			events: []event{
				cli(1, getB),
				srv(2, crlf("HTTP/1.1 200 OK\nContent-Length: 20\n\n")+"0123"),
				gap(parser.FromServer, 3, 10),
				srv(4, "456789"),
				cli(5, getC), srv(6, ok0),
			},
			want: []string{
				`GET /b host=api.test -> 200 req=0 resp=20 t=1..4 respbody="0123" resptrunc`,
				"GET /c host=api.test -> 200 req=0 resp=0 t=5..6",
			},
			stats: counts{Truncated: 1},
		},
		{
			name: "gap_inside_chunk_skips_known_length",
			events: []event{
				cli(1, getB),
				srv(2, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n10\n")+"0123"),
				gap(parser.FromServer, 3, 8),
				srv(4, crlf("abcd\n0\n\n")),
			},
			want:  []string{"GET /b host=api.test -> 200 req=0 resp=16 t=1..4 resptrunc"},
			stats: counts{Truncated: 1},
		},
		{
			name: "gap_in_request_body_then_next_request",
			events: []event{
				cli(1, crlf("POST /p HTTP/1.1\nContent-Length: 100\n\n")+"abc"),
				gap(parser.FromClient, 2, 0),
				cli(3, "more body bytes\r\n"+getC),
				srv(4, ok0),
				srv(5, nf3),
			},
			want: []string{
				"POST /p -> 200 req=3 resp=0 t=1..4 partial reqtrunc",
				"GET /c host=api.test -> 404 req=0 resp=3 t=3..5",
			},
			stats: counts{Resyncs: 1, Truncated: 1},
		},
		{
			name: "server_gap_unknown_never_pairs_wrongly",
			events: []event{
				cli(1, getA),
				srv(2, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhel")),
				gap(parser.FromServer, 3, 0),
				srv(4, "lo\r\n0\r\n\r\n"),
				cli(5, getB),
				srv(6, nf3),
			},
			want: []string{
				"GET /a?x=1 host=api.test -> 200 req=0 resp=3 t=1..3 ua=ua/1 partial resptrunc",
				"GET /b host=api.test -> 404 req=0 resp=3 t=5..6",
			},
			stats: counts{Resyncs: 1, Truncated: 1},
		},
		{
			name: "client_gap_response_to_lost_request_is_dropped",
			events: []event{
				cli(1, "GET /lost HTTP/1.1\r\nHo"),
				gap(parser.FromClient, 2, 0),
				srv(3, ok5),
				cli(4, getB),
				srv(5, nf3),
			},
			want: []string{
				"GET /b host=api.test -> 404 req=0 resp=3 t=4..5",
			},
			stats: counts{Resyncs: 1, Truncated: 1, Errors: 1},
		},
		{
			name: "gap_mid_line_then_garbage_resyncs_at_next_line",
			events: []event{
				cli(1, getA),
				gap(parser.FromClient, 2, 0),
				cli(3, "ue: 1\r\nX-Other: 2\r\n\r\n"+getB),
				srv(4, ok5+nf3),
			},
			want: []string{
				"GET /a?x=1 host=api.test -> 200 req=0 resp=5 t=1..4 ct=text/plain ua=ua/1",
				"GET /b host=api.test -> 404 req=0 resp=3 t=3..4",
			},
			stats: counts{Resyncs: 1},
		},
		{
			name: "pending_queue_bounded",
			opts: parser.Options{MaxPending: 2},
			events: []event{
				cli(1, getA+getB+getC),
				srv(2, ok5+nf3+ok0),
			},
			want: []string{
				"GET /b host=api.test -> 404 req=0 resp=3 t=1..2",
				"GET /c host=api.test -> 200 req=0 resp=0 t=1..2",
			},
			stats: counts{Drops: 1},
		},
		{
			name: "upgrade_h2c_switches",
			events: []event{
				cli(1, crlf("GET /up HTTP/1.1\nHost: h\nConnection: Upgrade, HTTP2-Settings\nUpgrade: h2c\nHTTP2-Settings: AAMAAABkAAQAAP__\n\n")),
				srv(2, crlf("HTTP/1.1 101 Switching Protocols\nConnection: Upgrade\nUpgrade: h2c\n\n")+"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
			},
			want:     []string{"handed to h2: GET /up host=h -> 101 req=0 resp=0 t=1..2 upgrade"},
			stats:    counts{Upgrades: 1},
			switchTo: parser.ProtoHTTP2,
			left:     [2]string{"", "\x00\x00\x00\x04\x00\x00\x00\x00\x00"},
		},
		{
			name: "upgrade_refused_stays_http1",
			events: []event{
				cli(1, crlf("GET /up HTTP/1.1\nHost: h\nConnection: Upgrade\nUpgrade: h2c\n\n")),
				cli(2, getB),
				srv(3, ok5+nf3),
			},
			want: []string{
				"GET /up host=h -> 200 req=0 resp=5 t=1..3 ct=text/plain",
				"GET /b host=api.test -> 404 req=0 resp=3 t=2..3",
			},
		},
		{
			name: "h2c_bytes_sent_before_101_are_handed_over",
			events: []event{
				cli(1, crlf("GET /up HTTP/1.1\nHost: h\nConnection: Upgrade, HTTP2-Settings\nUpgrade: h2c\n\n")),
				cli(2, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
				srv(3, crlf("HTTP/1.1 101 Switching Protocols\nConnection: Upgrade\nUpgrade: h2c\n\n")),
				srv(4, "\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
			},
			want:     []string{"handed to h2: GET /up host=h -> 101 req=0 resp=0 t=1..3 upgrade"},
			stats:    counts{Upgrades: 1},
			switchTo: parser.ProtoHTTP2,
			left:     [2]string{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\x00\x00\x00\x04\x00\x00\x00\x00\x00"},
		},
		{
			name: "upgrade_answer_lost_then_http_resumes",
			events: []event{
				cli(1, crlf("GET /ws HTTP/1.1\nHost: h\nConnection: Upgrade\nUpgrade: websocket\n\n")),
				cli(2, getB),
				gap(parser.FromServer, 3, 0),
				srv(4, nf3),
			},
			want: []string{
				"GET /ws host=h -> 0 req=0 resp=0 t=1..3 partial noresp",
				"GET /b host=api.test -> 404 req=0 resp=3 t=2..4",
			},
			stats: counts{Resyncs: 1, NoResp: 1},
		},
		{
			name: "connect_refused_stays_http1",
			events: []event{
				cli(1, crlf("CONNECT db.test:443 HTTP/1.1\nHost: db.test:443\n\n")+getB),
				srv(2, crlf("HTTP/1.1 407 Proxy Authentication Required\nContent-Length: 0\n\n")+nf3),
			},
			want: []string{
				"CONNECT db.test:443 host=db.test:443 -> 407 req=0 resp=0 t=1..2",
				"GET /b host=api.test -> 404 req=0 resp=3 t=1..2",
			},
		},
		{
			name: "websocket_upgrade_stops_parsing",
			events: []event{
				cli(1, crlf("GET /ws HTTP/1.1\nHost: h\nConnection: Upgrade\nUpgrade: websocket\n\n")),
				srv(2, crlf("HTTP/1.1 101 Switching Protocols\nConnection: Upgrade\nUpgrade: websocket\n\n")+"\x81\x05hello"),
				cli(3, "\x81\x85garbage"),
			},
			want:     []string{"GET /ws host=h -> 101 req=0 resp=0 t=1..2 upgrade"},
			stats:    counts{Upgrades: 1},
			switchTo: parser.ProtoNone,
		},
		{
			name: "connect_tunnel_stops_parsing",
			events: []event{
				cli(1, crlf("CONNECT db.test:443 HTTP/1.1\nHost: db.test:443\n\n")),
				srv(2, crlf("HTTP/1.1 200 Connection Established\n\n")+"\x16\x03\x03"),
			},
			want:     []string{"CONNECT db.test:443 host=db.test:443 -> 200 req=0 resp=0 t=1..2 upgrade"},
			stats:    counts{Upgrades: 1},
			switchTo: parser.ProtoNone,
		},
		{
			name: "gap_known_but_longer_than_body_resyncs",
			events: []event{
				cli(1, getA),
				srv(2, crlf("HTTP/1.1 200 OK\nContent-Length: 4\n\n")+"ab"),
				gap(parser.FromServer, 3, 40),
				srv(4, ok0),
				cli(5, getB),
				srv(6, nf3),
			},
			want: []string{
				"GET /a?x=1 host=api.test -> 200 req=0 resp=2 t=1..3 ua=ua/1 partial resptrunc",
				"GET /b host=api.test -> 404 req=0 resp=3 t=5..6",
			},
			stats: counts{Resyncs: 1, Truncated: 1, Errors: 1},
		},
		{
			name: "gap_in_request_body_known_length",
			opts: withBody,
			events: []event{
				cli(1, crlf("PUT /blob HTTP/1.1\nContent-Length: 10\n\n")+"abc"),
				gap(parser.FromClient, 2, 4),
				cli(3, "xyz"),
				srv(4, ok0),
			},
			want:  []string{`PUT /blob -> 200 req=10 resp=0 t=1..4 reqbody="abc" reqtrunc`},
			stats: counts{Truncated: 1},
		},
		{
			name:   "no_body_prefix_by_default",
			events: []event{cli(1, postJS), srv(2, ok5)},
			want:   []string{"POST /users host=api.test -> 200 req=13 resp=5 t=1..2 ct=text/plain"},
		},
		{
			name:   "request_cut_inside_header_block_at_close",
			events: []event{cli(1, getA), cli(2, "GET /half HTTP/1.1\r\nHo"), srv(3, ok5), closeAt(4)},
			want:   []string{"GET /a?x=1 host=api.test -> 200 req=0 resp=5 t=1..3 ct=text/plain ua=ua/1"},
			stats:  counts{Truncated: 1},
		},
		{
			name: "split_inside_header_name",
			events: []event{
				cli(1, "GET /s HTTP/1.1\r\nHo"), cli(2, "st: split.test\r\nUser-Ag"), cli(3, "ent: x\r\n\r\n"),
				srv(4, "HTTP/1.1 200 OK\r\nContent-Ty"), srv(5, "pe: a/b\r\nContent-Length: 1\r\n\r"), srv(6, "\n!"),
			},
			want: []string{"GET /s host=split.test -> 200 req=0 resp=1 t=1..6 ct=a/b ua=x"},
		},
		{
			name: "joined_mid_stream_response_without_request_dropped",
			events: []event{
				srv(1, nf3),
				cli(2, getB),
				srv(3, ok5),
			},
			want:  []string{"GET /b host=api.test -> 200 req=0 resp=5 t=2..3 ct=text/plain"},
			stats: counts{Errors: 1},
		},
		{
			name:   "leading_empty_lines_skipped",
			events: []event{cli(1, "\r\n\r\n"+getB), srv(2, "\r\n"+ok0)},
			want:   []string{"GET /b host=api.test -> 200 req=0 resp=0 t=1..2"},
		},
	}
}

func TestParser(t *testing.T) {
	for _, tc := range parserCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := run(t, tc.opts, tc.events, 0)
			if !slices.Equal(got.calls, tc.want) {
				t.Errorf("calls:\n got %q\nwant %q", got.calls, tc.want)
			}
			if got.stats != tc.stats {
				t.Errorf("stats: got %+v, want %+v", got.stats, tc.stats)
			}
			if tc.switchTo != parser.ProtoUnknown {
				if got.switchTo != tc.switchTo || got.left != tc.left {
					t.Errorf("switch: got %v %q, want %v %q", got.switchTo, got.left, tc.switchTo, tc.left)
				}
			}
		})
	}
}

// TestParserSplits feeds every case byte by byte and cut at every point of
// every write, and expects the very same calls and counters.
func TestParserSplits(t *testing.T) {
	for _, tc := range parserCases() {
		t.Run(tc.name, func(t *testing.T) {
			whole := run(t, tc.opts, tc.events, 0)
			if got := run(t, tc.opts, tc.events, 1); !sameResult(got, whole) {
				t.Fatalf("byte by byte:\n got %q %+v\nwant %q %+v", got.calls, got.stats, whole.calls, whole.stats)
			}
			for i, e := range tc.events {
				for cut := 1; cut < len(e.data); cut++ {
					evs := slices.Concat(tc.events[:i],
						[]event{{kind: e.kind, dir: e.dir, ts: e.ts, data: e.data[:cut]}, {kind: e.kind, dir: e.dir, ts: e.ts, data: e.data[cut:]}},
						tc.events[i+1:])
					if got := run(t, tc.opts, evs, 0); !sameResult(got, whole) {
						t.Fatalf("event %d cut at %d:\n got %q %+v\nwant %q %+v", i, cut, got.calls, got.stats, whole.calls, whole.stats)
					}
				}
			}
		})
	}
}

func sameResult(a, b result) bool {
	return slices.Equal(a.calls, b.calls) && a.stats == b.stats && a.switchTo == b.switchTo && a.left == b.left
}

// TestTokenChars checks the token bit sets against RFC 9110's tchar rule
// spelled out character by character.
func TestTokenChars(t *testing.T) {
	const tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for c := 0; c < 256; c++ {
		want := strings.IndexByte(tchar, byte(c)) >= 0
		if got := isTokenChar(byte(c)); got != want {
			t.Errorf("isTokenChar(%q) = %v, want %v", byte(c), got, want)
		}
	}
}

// TestWarmParserDoesNotAllocate guards the zero-allocation hot path with
// pipelining, chunked bodies and kept body prefixes.
func TestWarmParserDoesNotAllocate(t *testing.T) {
	p := New(&parser.ConnInfo{}, parser.EmitFunc(func(*parser.Call) {}), &parser.Stats{}, parser.Options{MaxBodyPrefix: 32})
	req := []byte(postJS + getA + crlf("POST /c HTTP/1.1\nTransfer-Encoding: chunked\n\n4\nabcd\n0\n\n"))
	resp := []byte(ok5 + crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3;x=y\nabc\n0\nT: 1\n\n") + nf3)
	exchange := func() {
		p.Feed(parser.FromClient, 1, req[:40])
		p.Feed(parser.FromClient, 1, req[40:])
		p.Feed(parser.FromServer, 2, resp[:7])
		p.Feed(parser.FromServer, 2, resp[7:])
	}
	exchange()
	if n := testing.AllocsPerRun(100, exchange); n != 0 {
		t.Errorf("%v allocations per exchange", n)
	}
}
