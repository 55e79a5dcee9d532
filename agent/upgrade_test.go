package agent

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/apisonar/apisonar/parser"
)

// TestH2CUpgradeAnswersOnStreamOne: the request that asks for h2c is
// answered by HTTP/2 frames on stream 1 (RFC 7540 §3.2); the call carries
// the HTTP/1.1 request and the HTTP/2 response, reported once.
func TestH2CUpgradeAnswersOnStreamOne(t *testing.T) {
	var calls []*parser.Call
	var stats parser.Stats
	tr := NewTracker(TrackerOptions{}, NewParserFactory(parser.Options{}, &stats),
		parser.EmitFunc(func(c *parser.Call) { calls = append(calls, c.Clone()) }))

	var srv bytes.Buffer
	srv.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
	fr := http2.NewFramer(&srv, nil)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "text/plain"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, true, []byte("hello, h2c!\n"))

	var cli bytes.Buffer
	cli.WriteString("GET /items/up1?x=1 HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, HTTP2-Settings\r\n" +
		"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	preface := []byte(http2.ClientPreface)

	tr.Data(1, nil, parser.FromClient, 10, cli.Bytes())
	tr.Data(1, nil, parser.FromServer, 20, srv.Bytes())
	var settings bytes.Buffer
	http2.NewFramer(&settings, nil).WriteSettings()
	tr.Data(1, nil, parser.FromClient, 30, append(preface, settings.Bytes()...))
	tr.Close(1, 40)

	if len(calls) != 1 {
		for _, c := range calls {
			t.Logf("%s %s -> %d %v flags %b", c.Method, c.Path, c.Status, c.Protocol, c.Flags)
		}
		t.Fatalf("%d calls, want 1", len(calls))
	}
	c := calls[0]
	if c.Protocol != parser.ProtoHTTP2 || string(c.Method) != "GET" || string(c.Path) != "/items/up1" ||
		string(c.Query) != "x=1" || string(c.Host) != "api.test" || c.Status != 200 || c.RespBytes != 12 ||
		c.StreamID != 1 || c.Flags&parser.FlagUpgrade == 0 || c.Flags&parser.FlagPartial != 0 || c.Start != 10 {
		t.Fatalf("call: %s %s?%s host %s -> %d, %d bytes, stream %d, %v, flags %b, start %d",
			c.Method, c.Path, c.Query, c.Host, c.Status, c.RespBytes, c.StreamID, c.Protocol, c.Flags, c.Start)
	}
}
