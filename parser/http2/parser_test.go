package http2

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/apisonar/apisonar/parser"
	"golang.org/x/net/http2"
)

const (
	C = parser.FromClient
	S = parser.FromServer
)

// sum is the part of a Call a test states by hand.
type sum struct {
	Method, Host, Path, Query string
	Status, GRPC              int
	GRPCMsg                   string
	ReqB, RespB               int64
	ReqM, RespM               int32
	Stream                    uint32
	Flags                     uint16
	Start, End                int64
	Proto                     parser.Protocol
}

func summarize(c *parser.Call) sum {
	return sum{
		Method: string(c.Method), Host: string(c.Host), Path: string(c.Path), Query: string(c.Query),
		Status: c.Status, GRPC: c.GRPCStatus, GRPCMsg: string(c.GRPCMessage),
		ReqB: c.ReqBytes, RespB: c.RespBytes, ReqM: c.ReqMessages, RespM: c.RespMessages,
		Stream: c.StreamID, Flags: c.Flags, Start: c.Start, End: c.End, Proto: c.Protocol,
	}
}

func summaries(calls []*parser.Call) []sum {
	out := make([]sum, 0, len(calls))
	for _, c := range calls {
		out = append(out, summarize(c))
	}
	return out
}

func get(path string) []string {
	return []string{":method", "GET", ":scheme", "http", ":authority", "api.example", ":path", path}
}

func post(path, ct string) []string {
	return []string{":method", "POST", ":scheme", "http", ":authority", "api.example", ":path", path, "content-type", ct}
}

func ok(ct string) []string { return []string{":status", "200", "content-type", ct} }

var grpcTrailersOK = []string{"grpc-status", "0"}

const (
	partial = parser.FlagPartial
	reset   = parser.FlagReset
	noResp  = parser.FlagNoResponse
)

func TestParserCalls(t *testing.T) {
	cases := []struct {
		name      string
		noPreface bool
		build     func(c *conv)
		opts      parser.Options
		want      []sum
		check     func(t *testing.T, calls []*parser.Call, st *parser.Stats)
	}{
		{
			name: "get_with_query_and_headers",
			build: func(c *conv) {
				c.headers(C, 1, true, append(get("/v1/items?id=7&x=y"), "authorization", "Bearer t", "user-agent", "ua/1")...)
				c.headers(S, 1, false, ok("application/json")...)
				c.data(S, 1, true, []byte(`{"a":1}`))
			},
			opts: parser.Options{MaxBodyPrefix: 4},
			want: []sum{{Method: "GET", Host: "api.example", Path: "/v1/items", Query: "id=7&x=y", Status: 200, GRPC: -1,
				RespB: 7, Stream: 1, Start: 4, End: 6, Proto: parser.ProtoHTTP2}},
			check: func(t *testing.T, calls []*parser.Call, st *parser.Stats) {
				c := calls[0]
				if string(c.ReqHeaders[parser.HdrAuthorization]) != "Bearer t" || string(c.ReqHeaders[parser.HdrUserAgent]) != "ua/1" {
					t.Errorf("request headers %q", c.ReqHeaders)
				}
				if string(c.RespContentType) != "application/json" || string(c.RespBody) != `{"a"` {
					t.Errorf("content type %q body %q", c.RespContentType, c.RespBody)
				}
			},
		},
		{
			name: "post_padded_data_continuation_and_control_frames",
			build: func(c *conv) {
				c.headersSplit(C, 3, false, 5, append(post("/upload", "text/plain"), "cookie", "a=1", "cookie", "b=2")...)
				c.ping(C)
				c.dataPadded(C, 3, false, []byte("hello "), 9)
				c.data(C, 3, true, []byte("world"))
				c.ping(S)
				c.headersSplit(S, 3, false, 3, ":status", "201")
				c.dataPadded(S, 3, true, nil, 4)
			},
			want: []sum{{Method: "POST", Host: "api.example", Path: "/upload", Status: 201, GRPC: -1,
				ReqB: 11, Stream: 3, Start: 4, End: 10, Proto: parser.ProtoHTTP2}},
			check: func(t *testing.T, calls []*parser.Call, st *parser.Stats) {
				if got := string(calls[0].ReqHeaders[parser.HdrCookie]); got != "a=1; b=2" {
					t.Errorf("cookie %q", got)
				}
			},
		},
		{
			name: "interleaved_streams_and_informational_response",
			build: func(c *conv) {
				c.headers(C, 1, true, get("/a")...)
				c.headers(C, 3, false, post("/b", "application/json")...)
				c.headers(S, 3, false, ":status", "100")
				c.data(C, 3, true, []byte("{}"))
				c.headers(S, 3, true, ":status", "404")
				c.headers(S, 1, false, ":status", "200")
				c.data(S, 1, true, []byte("x"))
			},
			want: []sum{
				{Method: "POST", Host: "api.example", Path: "/b", Status: 404, GRPC: -1, ReqB: 2, Stream: 3, Start: 5, End: 8, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/a", Status: 200, GRPC: -1, RespB: 1, Stream: 1, Start: 4, End: 10, Proto: parser.ProtoHTTP2},
			},
		},
		{
			name: "rst_stream_and_close_without_response",
			build: func(c *conv) {
				c.headers(C, 1, true, get("/slow")...)
				c.rst(C, 1)
				c.headers(C, 3, true, get("/never")...)
			},
			want: []sum{
				{Method: "GET", Host: "api.example", Path: "/slow", GRPC: -1, Stream: 1, Flags: reset | noResp, Start: 4, End: 5, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/never", GRPC: -1, Stream: 3, Flags: noResp, Start: 6, End: 1000, Proto: parser.ProtoHTTP2},
			},
		},
		{
			name: "goaway_ends_streams_the_server_will_not_process",
			build: func(c *conv) {
				c.headers(C, 1, true, get("/one")...)
				c.headers(C, 3, true, get("/two")...)
				c.goAway(S, 1)
				c.headers(S, 1, true, ":status", "204")
			},
			want: []sum{
				{Method: "GET", Host: "api.example", Path: "/two", GRPC: -1, Stream: 3, Flags: noResp, Start: 5, End: 6, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/one", Status: 204, GRPC: -1, Stream: 1, Start: 4, End: 7, Proto: parser.ProtoHTTP2},
			},
		},
		{
			name: "push_promise_keeps_table_in_sync",
			build: func(c *conv) {
				c.headers(C, 1, true, get("/page")...)
				c.push(S, 1, 2, append(get("/style.css"), "x-pushed", "yes")...)
				c.headers(S, 1, false, append(ok("text/html"), "x-pushed", "yes")...)
				c.data(S, 1, true, []byte("<html>"))
				c.headers(S, 2, true, append(ok("text/css"), "x-pushed", "yes")...)
			},
			want: []sum{
				{Method: "GET", Host: "api.example", Path: "/page", Status: 200, GRPC: -1, RespB: 6, Stream: 1, Start: 4, End: 7, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/style.css", Status: 200, GRPC: -1, Stream: 2, Start: 5, End: 8, Proto: parser.ProtoHTTP2},
			},
		},
		{
			name: "grpc_unary_with_trailers",
			build: func(c *conv) {
				c.headers(C, 1, false, append(post("/pkg.Svc/Get", "application/grpc"), "te", "trailers")...)
				c.data(C, 1, true, grpcMsg(false, []byte("req")))
				c.headers(S, 1, false, ok("application/grpc+proto")...)
				c.data(S, 1, false, grpcMsg(true, []byte("response")))
				c.headers(S, 1, true, "grpc-status", "5", "grpc-message", "not%20found%3A%20x")
			},
			want: []sum{{Method: "POST", Host: "api.example", Path: "/pkg.Svc/Get", Status: 200, GRPC: 5, GRPCMsg: "not found: x",
				ReqB: 8, RespB: 13, ReqM: 1, RespM: 1, Stream: 1, Start: 4, End: 8, Proto: parser.ProtoGRPC}},
			check: func(t *testing.T, calls []*parser.Call, st *parser.Stats) {
				if st.GRPCCompressed.Load() != 1 {
					t.Errorf("compressed %d", st.GRPCCompressed.Load())
				}
			},
		},
		{
			name: "grpc_trailers_only_response",
			build: func(c *conv) {
				c.headers(C, 1, false, post("/pkg.Svc/Get", "application/grpc")...)
				c.data(C, 1, true, grpcMsg(false, nil))
				c.headers(S, 1, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "16", "grpc-message", "no token")
			},
			want: []sum{{Method: "POST", Host: "api.example", Path: "/pkg.Svc/Get", Status: 200, GRPC: 16, GRPCMsg: "no token",
				ReqB: 5, ReqM: 1, Stream: 1, Start: 4, End: 6, Proto: parser.ProtoGRPC}},
		},
		{
			name: "grpc_bidi_messages_split_across_frames_is_one_call",
			build: func(c *conv) {
				c.headers(C, 1, false, post("/chat.Room/Talk", "application/grpc")...)
				m := append(grpcMsg(false, []byte("hello")), grpcMsg(false, []byte("there!"))...)
				c.data(C, 1, false, m[:3])
				c.headers(S, 1, false, ok("application/grpc")...)
				c.data(C, 1, false, m[3:12])
				c.data(S, 1, false, grpcMsg(false, []byte("a")))
				c.data(C, 1, true, m[12:])
				c.data(S, 1, false, grpcMsg(false, []byte("b")))
				c.data(S, 1, false, grpcMsg(false, []byte("c")))
				c.headers(S, 1, true, grpcTrailersOK...)
			},
			want: []sum{{Method: "POST", Host: "api.example", Path: "/chat.Room/Talk", Status: 200, GRPC: 0,
				ReqB: 21, RespB: 18, ReqM: 2, RespM: 3, Stream: 1, Start: 4, End: 12, Proto: parser.ProtoGRPC}},
		},
		{
			name:      "sides_swapped_by_the_source",
			noPreface: true,
			build: func(c *conv) {
				// The server's bytes are labelled FromClient and the other way round.
				c.headers(S, 1, true, get("/swapped")...)
				c.headers(C, 1, true, ":status", "200")
			},
			want: []sum{{Method: "GET", Host: "api.example", Path: "/swapped", Status: 200, GRPC: -1, Stream: 1, Start: 1, End: 2, Proto: parser.ProtoHTTP2}},
			check: func(t *testing.T, calls []*parser.Call, st *parser.Stats) {
				if st.DirSwaps.Load() != 1 {
					t.Errorf("swaps %d", st.DirSwaps.Load())
				}
				ci := calls[0].Conn
				if ci.Client != srvAddr || ci.Server != cliAddr || ci.Side != parser.SideServer {
					t.Errorf("conn %+v: the ends were not exchanged", ci)
				}
			},
		},
		{
			name: "max_pending_evicts_oldest_stream",
			opts: parser.Options{MaxStreams: 2},
			build: func(c *conv) {
				c.headers(C, 1, true, get("/1")...)
				c.headers(C, 3, true, get("/3")...)
				c.headers(C, 5, true, get("/5")...)
				c.headers(S, 5, true, ":status", "200")
				c.headers(S, 1, true, ":status", "200") // its stream was evicted: dropped
			},
			want: []sum{
				{Method: "GET", Host: "api.example", Path: "/5", Status: 200, GRPC: -1, Stream: 5, Start: 6, End: 7, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/3", GRPC: -1, Stream: 3, Flags: noResp, Start: 5, End: 1000, Proto: parser.ProtoHTTP2},
			},
			check: func(t *testing.T, calls []*parser.Call, st *parser.Stats) {
				if st.PendingDrops.Load() != 1 {
					t.Errorf("pending drops %d", st.PendingDrops.Load())
				}
			},
		},
		{
			name: "header_block_over_limit_is_dropped_and_table_reset",
			opts: parser.Options{MaxHeaderBytes: 64},
			build: func(c *conv) {
				c.headers(C, 1, true, append(get("/big"), "x-big", string(make([]byte, 200)))...)
				c.headers(C, 3, true, get("/small")...)
				c.headers(S, 3, true, ":status", "200")
			},
			want: []sum{
				// :authority reuses an entry the dropped block inserted: unknown.
				{Method: "GET", Path: "/small", Status: 200, GRPC: -1, Stream: 3, Flags: partial, Start: 5, End: 6, Proto: parser.ProtoHTTP2},
			},
			check: func(t *testing.T, calls []*parser.Call, st *parser.Stats) {
				if st.HeaderTooBig.Load() != 1 || st.HPACKUnknown.Load() == 0 {
					t.Errorf("too big %d unknown %d", st.HeaderTooBig.Load(), st.HPACKUnknown.Load())
				}
			},
		},
		{
			name: "table_size_update_to_zero_makes_table_known",
			build: func(c *conv) {
				c.headers(C, 1, true, get("/a")...)
				c.enc[C].SetMaxDynamicTableSize(0)
				c.headers(C, 3, true, get("/b")...)
				c.enc[C].SetMaxDynamicTableSize(4096)
				c.headers(C, 5, true, get("/c")...)
				c.headers(C, 7, true, get("/c")...)
			},
			want: []sum{
				{Method: "GET", Host: "api.example", Path: "/a", GRPC: -1, Stream: 1, Flags: noResp, Start: 4, End: 1000, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/b", GRPC: -1, Stream: 3, Flags: noResp, Start: 5, End: 1000, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/c", GRPC: -1, Stream: 5, Flags: noResp, Start: 6, End: 1000, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/c", GRPC: -1, Stream: 7, Flags: noResp, Start: 7, End: 1000, Proto: parser.ProtoHTTP2},
			},
		},
		{
			// After "Upgrade: h2c" and 101 the server speaks first; its
			// stream 1 answers the HTTP/1.1 request, which the HTTP/1.1
			// parser has reported.
			name:      "h2c_upgrade_server_speaks_first",
			noPreface: true,
			build: func(c *conv) {
				c.settings(S)
				c.raw(C, []byte(http2.ClientPreface))
				c.settings(C)
				c.headers(S, 1, false, ok("text/plain")...)
				c.data(S, 1, true, []byte("upgraded"))
				c.headers(C, 3, true, get("/after")...)
				c.headers(S, 3, true, ":status", "200")
			},
			want: []sum{{Method: "GET", Host: "api.example", Path: "/after", Status: 200, GRPC: -1, Stream: 3, Start: 6, End: 7, Proto: parser.ProtoHTTP2}},
		},
		{
			name: "settings_and_size_update_raise_the_table",
			build: func(c *conv) {
				c.settings(C, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 65536})
				c.enc[S].SetMaxDynamicTableSizeLimit(65536)
				c.enc[S].SetMaxDynamicTableSize(16384)
				big := string(bytes.Repeat([]byte("v"), 5000))
				c.headers(C, 1, true, get("/a")...)
				c.headers(S, 1, true, ":status", "200", "content-type", "text/a", "x-big-1", big)
				c.headers(C, 3, true, get("/b")...)
				c.headers(S, 3, true, ":status", "200", "content-type", "text/a", "x-big-2", big)
				c.headers(C, 5, true, get("/c")...)
				c.headers(S, 5, true, ":status", "200", "content-type", "text/a", "x-big-1", big, "x-big-2", big)
			},
			want: []sum{
				{Method: "GET", Host: "api.example", Path: "/a", Status: 200, GRPC: -1, Stream: 1, Start: 5, End: 6, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/b", Status: 200, GRPC: -1, Stream: 3, Start: 7, End: 8, Proto: parser.ProtoHTTP2},
				{Method: "GET", Host: "api.example", Path: "/c", Status: 200, GRPC: -1, Stream: 5, Start: 9, End: 10, Proto: parser.ProtoHTTP2},
			},
			check: func(t *testing.T, calls []*parser.Call, st *parser.Stats) {
				if st.HPACKUnknown.Load() != 0 || string(calls[2].RespContentType) != "text/a" {
					t.Errorf("unknown %d, content type %q", st.HPACKUnknown.Load(), calls[2].RespContentType)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newConv(t, !tc.noPreface)
			tc.build(c)
			for _, split := range []int{0, 1, 7} {
				t.Run(fmt.Sprint("split", split), func(t *testing.T) {
					calls, st := run(c.pieces, split, tc.opts)
					if got := summaries(calls); !reflect.DeepEqual(got, tc.want) {
						t.Fatalf("calls\n got %+v\nwant %+v", got, tc.want)
					}
					if tc.check != nil {
						tc.check(t, calls, st)
					}
					if st.Errors.Load() != 0 || st.H2FrameErrors.Load() != 0 || st.Resyncs.Load() != 0 {
						t.Errorf("errors %d frame errors %d resyncs %d", st.Errors.Load(), st.H2FrameErrors.Load(), st.Resyncs.Load())
					}
				})
			}
		})
	}
}
