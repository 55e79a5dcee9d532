package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/apisonar/apisonar/parser"
)

// recParser records what the tracker hands a connection's parser.
type recParser struct {
	log     *[]string
	proto   parser.Protocol
	switch_ parser.Protocol
	left    [2][]byte
}

func (r *recParser) Feed(dir parser.Direction, ts int64, data []byte) {
	*r.log = append(*r.log, fmt.Sprintf("%v feed %s %q", r.proto, dir, data))
	if r.proto == parser.ProtoHTTP1 && strings.Contains(string(data), "101 Switching") {
		r.switch_ = parser.ProtoHTTP2
		r.left[parser.FromServer] = []byte("frames")
	}
}
func (r *recParser) Gap(dir parser.Direction, ts int64, n int) {
	*r.log = append(*r.log, fmt.Sprintf("%v gap %s %d", r.proto, dir, n))
}
func (r *recParser) Close(ts int64) { *r.log = append(*r.log, fmt.Sprintf("%v close", r.proto)) }
func (r *recParser) Switch() (parser.Protocol, [2][]byte) {
	to := r.switch_
	r.switch_ = parser.ProtoUnknown
	return to, r.left
}

func newRecTracker(opts TrackerOptions) (*Tracker, *[]string, map[uint64]*parser.ConnInfo) {
	var log []string
	infos := map[uint64]*parser.ConnInfo{}
	f := func(p parser.Protocol, info *parser.ConnInfo, _ parser.Emitter) parser.StreamParser {
		infos[info.ID] = info
		return &recParser{log: &log, proto: p}
	}
	return NewTracker(opts, f, nil), &log, infos
}

var (
	cli = netip.MustParseAddrPort("10.0.0.1:40000")
	srv = netip.MustParseAddrPort("10.0.0.2:80")
)

func TestTrackerDetectsAndRoutes(t *testing.T) {
	tr, log, _ := newRecTracker(TrackerOptions{})
	info := &parser.ConnInfo{Client: cli, Server: srv}
	tr.Data(1, info, parser.FromClient, 1, []byte("GE"))
	tr.Data(1, info, parser.FromClient, 2, []byte("T / HTTP/1.1\r\n\r\n"))
	tr.Data(1, info, parser.FromServer, 3, []byte("HTTP/1.1 200 OK\r\n\r\n"))
	tr.Close(1, 4)
	want := []string{
		`http/1.1 feed client "GET / HTTP/1.1\r\n\r\n"`,
		`http/1.1 feed server "HTTP/1.1 200 OK\r\n\r\n"`,
		`http/1.1 close`,
	}
	if strings.Join(*log, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(*log, "\n"), strings.Join(want, "\n"))
	}
	if s := tr.Stats(); s.Opened != 1 || s.Closed != 1 || s.Open != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTrackerSwapsWrongGuess(t *testing.T) {
	tr, log, infos := newRecTracker(TrackerOptions{})
	// The source thought srv was the client.
	info := &parser.ConnInfo{Client: srv, Server: cli}
	tr.Data(7, info, parser.FromServer, 1, []byte("GET /a HTTP/1.1\r\n\r\n"))
	tr.Data(7, info, parser.FromClient, 2, []byte("HTTP/1.1 204 No Content\r\n\r\n"))
	want := []string{
		`http/1.1 feed client "GET /a HTTP/1.1\r\n\r\n"`,
		`http/1.1 feed server "HTTP/1.1 204 No Content\r\n\r\n"`,
	}
	if strings.Join(*log, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s", strings.Join(*log, "\n"))
	}
	if got := infos[7]; got.Client != cli || got.Server != srv {
		t.Fatalf("info not swapped: %+v", got)
	}
	if tr.Stats().Swapped != 1 {
		t.Fatalf("swap not counted")
	}
}

func TestTrackerDropsNonHTTP(t *testing.T) {
	tr, log, _ := newRecTracker(TrackerOptions{})
	tr.Data(2, nil, parser.FromClient, 1, []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
	tr.Data(2, nil, parser.FromClient, 2, []byte("GET / HTTP/1.1\r\n\r\n"))
	if len(*log) != 0 {
		t.Fatalf("non-HTTP connection was parsed: %v", *log)
	}
	if tr.Stats().NotHTTP != 1 {
		t.Fatalf("not counted")
	}
	// A connection that never says anything recognisable within the
	// detection window is given up.
	tr.Data(3, nil, parser.FromClient, 1, []byte("POS"))
	tr.Data(3, nil, parser.FromClient, 1, []byte(strings.Repeat("x", 80)))
	if len(*log) != 0 || tr.Stats().NotHTTP != 2 {
		t.Fatalf("log %v stats %+v", *log, tr.Stats())
	}
}

func TestTrackerUpgradeSwitchesParser(t *testing.T) {
	tr, log, _ := newRecTracker(TrackerOptions{})
	tr.Data(4, nil, parser.FromClient, 1, []byte("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"))
	tr.Data(4, nil, parser.FromServer, 2, []byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"))
	tr.Data(4, nil, parser.FromServer, 3, []byte("more"))
	got := strings.Join(*log, "\n")
	for _, w := range []string{`http/1.1 close`, `h2 feed server "frames"`, `h2 feed server "more"`} {
		if !strings.Contains(got, w) {
			t.Fatalf("missing %q in\n%s", w, got)
		}
	}
}

func TestTrackerBoundsAndExpiry(t *testing.T) {
	tr, _, _ := newRecTracker(TrackerOptions{MaxConns: 3, IdleTimeout: 100})
	for id := uint64(1); id <= 5; id++ {
		tr.Data(id, nil, parser.FromClient, int64(id), []byte("GET / HTTP/1.1\r\n\r\n"))
	}
	s := tr.Stats()
	if s.Open != 3 || s.Evicted != 2 {
		t.Fatalf("cap not held: %+v", s)
	}
	// 3, 4, 5 are left; touch 3 so that 4 and 5 are the idle ones.
	tr.Data(3, nil, parser.FromClient, 150, []byte("GET / HTTP/1.1\r\n\r\n"))
	tr.Sweep(200)
	s = tr.Stats()
	if s.Open != 1 || s.Expired != 2 {
		t.Fatalf("sweep: %+v", s)
	}
	tr.CloseAll(300)
	if tr.Stats().Open != 0 || tr.head != nil || tr.tail != nil {
		t.Fatalf("CloseAll left connections")
	}
}
