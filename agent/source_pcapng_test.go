package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/apisonar/apisonar/agent/tcpreasm"
)

// ngFile builds pcapng files block by block in one byte order.
type ngFile struct {
	o interface {
		binary.ByteOrder
		binary.AppendByteOrder
	}
	buf bytes.Buffer
}

func (f *ngFile) block(typ uint32, body []byte) *ngFile {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	n := uint32(12 + len(body))
	f.buf.Write(f.o.AppendUint32(f.o.AppendUint32(nil, typ), n))
	f.buf.Write(body)
	f.buf.Write(f.o.AppendUint32(nil, n))
	return f
}

func (f *ngFile) shb() *ngFile {
	b := f.o.AppendUint32(nil, ngBOM)
	b = f.o.AppendUint16(b, 1)
	b = f.o.AppendUint16(b, 0)
	b = f.o.AppendUint64(b, ^uint64(0))
	return f.block(ngSHB, b)
}

// idb declares an interface; opts are raw option TLVs.
func (f *ngFile) idb(link uint16, opts ...[]byte) *ngFile {
	b := f.o.AppendUint16(nil, link)
	b = f.o.AppendUint16(b, 0)
	b = f.o.AppendUint32(b, 65535)
	for _, o := range opts {
		b = append(b, o...)
	}
	return f.block(ngIDB, b)
}

func (f *ngFile) opt(code uint16, v ...byte) []byte {
	b := f.o.AppendUint16(f.o.AppendUint16(nil, code), uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (f *ngFile) epb(iface uint32, ts uint64, capLen uint32, data []byte) *ngFile {
	b := f.o.AppendUint32(nil, iface)
	b = f.o.AppendUint32(b, uint32(ts>>32))
	b = f.o.AppendUint32(b, uint32(ts))
	b = f.o.AppendUint32(b, capLen)
	b = f.o.AppendUint32(b, uint32(len(data)))
	return f.block(ngEPB, append(b, data...))
}

type ngRecord struct {
	ts   int64
	link tcpreasm.LinkType
	data string
}

func readNg(b []byte) ([]ngRecord, error) {
	r, err := newNgReader(bufio.NewReaderSize(bytes.NewReader(b), 1<<20))
	if err != nil {
		return nil, err
	}
	var out []ngRecord
	for {
		data, ts, _, link, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ngRecord{ts, link, string(data)})
	}
}

func TestNgReader(t *testing.T) {
	le := func() *ngFile { return &ngFile{o: binary.LittleEndian} }
	be := func() *ngFile { return &ngFile{o: binary.BigEndian} }
	cases := []struct {
		name    string
		file    *ngFile
		want    []ngRecord
		wantErr bool
	}{
		{
			name: "microseconds_by_default",
			file: le().shb().idb(1).epb(0, 1_500_000, 3, []byte("abc")),
			want: []ngRecord{{1_500_000_000, 1, "abc"}},
		},
		{
			name: "big_endian_section",
			file: be().shb().idb(1).epb(0, 2_000_001, 2, []byte("hi")),
			want: []ngRecord{{2_000_001_000, 1, "hi"}},
		},
		{
			name: "sll2_link_type_above_255_kept",
			file: le().shb().idb(276).epb(0, 0, 1, []byte("x")),
			want: []ngRecord{{0, tcpreasm.LinkSLL2, "x"}},
		},
		{
			name: "nanosecond_resolution",
			file: func() *ngFile { f := le(); return f.shb().idb(1, f.opt(9, 9)).epb(0, 1_000_000_007, 1, []byte("x")) }(),
			want: []ngRecord{{1_000_000_007, 1, "x"}},
		},
		{
			name: "binary_resolution_2_pow_minus_10",
			file: func() *ngFile { f := le(); return f.shb().idb(1, f.opt(9, 0x80|10)).epb(0, 1024+512, 1, []byte("x")) }(),
			want: []ngRecord{{1_500_000_000, 1, "x"}},
		},
		{
			name: "timestamp_offset_in_seconds",
			file: func() *ngFile {
				f := le()
				return f.shb().idb(1, f.opt(14, 10, 0, 0, 0, 0, 0, 0, 0)).epb(0, 1, 1, []byte("x"))
			}(),
			want: []ngRecord{{10_000_001_000, 1, "x"}},
		},
		{
			name: "two_interfaces_two_link_types",
			file: le().shb().idb(1).idb(0).epb(1, 0, 1, []byte("b")).epb(0, 0, 1, []byte("a")),
			want: []ngRecord{{0, 0, "b"}, {0, 1, "a"}},
		},
		{
			name: "unknown_blocks_are_skipped",
			file: le().shb().idb(1).block(0x0bad, []byte("whatever")).epb(0, 0, 1, []byte("x")),
			want: []ngRecord{{0, 1, "x"}},
		},
		{
			name:    "absurd_resolution_is_corrupt_not_a_panic",
			file:    func() *ngFile { f := le(); return f.shb().idb(1, f.opt(9, 0x7f)).epb(0, 5, 1, []byte("x")) }(),
			wantErr: true,
		},
		{
			name:    "capture_length_beyond_block_is_corrupt",
			file:    le().shb().idb(1).epb(0, 0, 1<<30, []byte("x")),
			wantErr: true,
		},
		{
			name:    "packet_of_undeclared_interface",
			file:    le().shb().idb(1).epb(3, 0, 1, []byte("x")),
			wantErr: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readNg(tc.file.buf.Bytes())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("records %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("record %d: %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestNgReaderCutMidBlock(t *testing.T) {
	f := (&ngFile{o: binary.LittleEndian}).shb().idb(1).epb(0, 0, 3, []byte("abc")).epb(0, 0, 3, []byte("def"))
	b := f.buf.Bytes()
	got, err := readNg(b[:len(b)-5])
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 1 {
		t.Fatalf("got %d records, err %v; want 1 record then ErrUnexpectedEOF", len(got), err)
	}
}
