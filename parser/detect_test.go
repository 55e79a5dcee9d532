package parser

import "testing"

func TestDetect(t *testing.T) {
	hdr := func(length int, typ, flags byte, sid uint32) []byte {
		return []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags,
			byte(sid >> 24), byte(sid >> 16), byte(sid >> 8), byte(sid)}
	}
	tests := []struct {
		name string
		in   string
		want Guess
	}{
		{"get_request_line", "GET / HTTP/1.1\r\n", Guess{ProtoHTTP1, true, true, true}},
		{"delete_request_line", "DELETE /x HTTP/1.1\r\n", Guess{ProtoHTTP1, true, true, true}},
		{"method_cut_before_space", "POS", Guess{ProtoHTTP1, true, false, false}},
		{"status_line", "HTTP/1.1 200 OK\r\n", Guess{ProtoHTTP1, false, true, true}},
		{"status_line_cut", "HTTP/", Guess{ProtoHTTP1, false, false, false}},
		{"h2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Guess{ProtoHTTP2, true, true, true}},
		{"h2_preface_cut", "PRI * HTTP/2", Guess{ProtoHTTP2, true, false, false}},
		{"h2_server_settings", string(hdr(18, 4, 0, 0)), Guess{ProtoHTTP2, false, true, false}},
		{"h2_client_headers_mid_stream", string(hdr(40, 1, 4, 7)), Guess{ProtoHTTP2, true, true, true}},
		{"h2_settings_on_stream_is_not_h2", string(hdr(6, 4, 0, 1)), Guess{ProtoNone, false, true, false}},
		{"tls_client_hello_is_none", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Guess{ProtoNone, false, true, false}},
		{"redis_is_none", "*1\r\n$4\r\nPING\r\n", Guess{ProtoNone, false, true, false}},
		{"lowercase_get_is_none", "get / HTTP/1.1\r\n", Guess{ProtoNone, false, true, false}},
		{"too_short_to_tell", "\x00\x01", Guess{}},
		{"empty", "", Guess{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Detect([]byte(tt.in)); got != tt.want {
				t.Errorf("Detect(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzDetect(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Add([]byte{0, 0, 6, 4, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		g := Detect(b)
		if g.Sure && g.Proto == ProtoUnknown {
			t.Fatalf("sure of nothing: %+v", g)
		}
		if g.Sided && !g.Sure {
			t.Fatalf("sided but unsure: %+v", g)
		}
	})
}
