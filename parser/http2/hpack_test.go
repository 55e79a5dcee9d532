package http2

import (
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

func dehex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// k is a known field, u an unknown one.
func k(name, value string) gotField { return gotField{name, value, true} }

var u = gotField{}

func TestTolerantDecoder(t *testing.T) {
	type block struct {
		wire    string
		want    []gotField
		wantErr bool
	}
	cases := []struct {
		name   string
		joined bool
		blocks []block
		check  func(t *testing.T, d *decoder)
	}{
		{
			name: "rfc7541_c3_requests_from_start",
			blocks: []block{
				{wire: "828684410f7777772e6578616d706c652e636f6d", want: []gotField{k(":method", "GET"), k(":scheme", "http"), k(":path", "/"), k(":authority", "www.example.com")}},
				{wire: "828684be58086e6f2d6361636865", want: []gotField{k(":method", "GET"), k(":scheme", "http"), k(":path", "/"), k(":authority", "www.example.com"), k("cache-control", "no-cache")}},
				{wire: "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565", want: []gotField{k(":method", "GET"), k(":scheme", "https"), k(":path", "/index.html"), k(":authority", "www.example.com"), k("custom-key", "custom-value")}},
			},
		},
		{
			name:   "rfc7541_c4_huffman_joined_after_first_request",
			joined: true,
			blocks: []block{
				// C.4.2: :authority is index 62, inserted before the join.
				{wire: "828684be5886a8eb10649cbf", want: []gotField{k(":method", "GET"), k(":scheme", "http"), k(":path", "/"), u, k("cache-control", "no-cache")}},
				// C.4.3: 63 is the unseen :authority again, 62 the
				// cache-control entry seen since the join.
				{wire: "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf", want: []gotField{k(":method", "GET"), k(":scheme", "https"), k(":path", "/index.html"), u, k("custom-key", "custom-value")}},
				{wire: "bebfc0", want: []gotField{k("custom-key", "custom-value"), k("cache-control", "no-cache"), u}},
			},
		},
		{
			name:   "join_mid_stream_after_table_update_to_zero",
			joined: true,
			blocks: []block{
				{wire: "be", want: []gotField{u}},
				// Size 0 empties the table, then back to 4096.
				{wire: "20 3fe11f 82 400161 0162 be", want: []gotField{k(":method", "GET"), k("a", "b"), k("a", "b")}},
				// The table is known again: an index past it is the peer's
				// error, not a miss.
				{wire: "bf", wantErr: true},
			},
		},
		{
			name:   "literal_with_unseen_name_is_learned_as_unknown",
			joined: true,
			blocks: []block{
				{wire: "7e 03616263", want: []gotField{u}},
				{wire: "be bf 0f2f 0178", want: []gotField{u, u, u}},
			},
		},
		{
			name:   "table_proved_full_of_seen_entries",
			joined: true,
			blocks: []block{
				// Size update to 64: after a 34-byte entry no unseen
				// entry (at least 32 bytes) fits.
				{wire: "3f21 400161 0162", want: []gotField{k("a", "b")}},
				{wire: "bf", wantErr: true},
			},
		},
		{
			name: "insertion_evicts_the_entry_its_name_came_from",
			blocks: []block{
				{wire: "3f27 4003616263 03646566", want: []gotField{k("abc", "def")}},
				{wire: "7e 0378797a be", want: []gotField{k("abc", "xyz"), k("abc", "xyz")}},
			},
			check: func(t *testing.T, d *decoder) {
				if d.live() != 1 || d.size != 38 {
					t.Errorf("table %d entries %d bytes", d.live(), d.size)
				}
			},
		},
		{
			name:   "table_size_bomb_is_capped",
			joined: true,
			blocks: []block{
				{wire: "3fe1ffff07 82", want: []gotField{k(":method", "GET")}},
			},
			check: func(t *testing.T, d *decoder) {
				if d.max != hardTableCap || d.dropped != 1 {
					t.Errorf("max %d dropped %d", d.max, d.dropped)
				}
			},
		},
		{
			name: "shrinking_the_table_releases_its_memory",
			blocks: []block{
				{wire: "3fe1ff03", want: nil}, // 65536
				{wire: "40 0161 7f81f901" + strings.Repeat("78", 32000), want: []gotField{k("a", strings.Repeat("x", 32000))}},
				{wire: "40 0162 7f81f901" + strings.Repeat("79", 32000), want: []gotField{k("b", strings.Repeat("y", 32000))}},
				{wire: "3fe11f 400163 0164 be", want: []gotField{k("c", "d"), k("c", "d")}},
			},
			check: func(t *testing.T, d *decoder) {
				if d.live() != 1 || cap(d.arena) > 4*defaultTableSize {
					t.Errorf("arena keeps %d bytes for a %d-byte table", cap(d.arena), d.max)
				}
			},
		},
		{
			name: "truncated_and_overflowing_integers_are_errors",
			blocks: []block{
				{wire: "ff", wantErr: true},
				{wire: "7f ffffffffff01", wantErr: true},
				{wire: "400a 6162", wantErr: true},
				{wire: "00 83ffffff", wantErr: true}, // bad huffman padding
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d decoder
			d.reset()
			if !tc.joined {
				d.startKnown()
			}
			for i, b := range tc.blocks {
				var r recorder
				err := d.decode(dehex(t, b.wire), &r)
				if (err != nil) != b.wantErr {
					t.Fatalf("block %d: error %v", i, err)
				}
				if !b.wantErr && !reflect.DeepEqual(r.got, b.want) {
					t.Fatalf("block %d:\n got %+v\nwant %+v", i, r.got, b.want)
				}
			}
			if tc.check != nil {
				tc.check(t, &d)
			}
		})
	}
}
