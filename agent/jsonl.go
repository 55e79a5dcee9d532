package agent

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/apisonar/apisonar/parser"
)

// JSONLWriter writes calls and findings as JSON lines (contract.md). It
// builds each line in a reused buffer: no allocation per call. Safe for
// concurrent use.
type JSONLWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
	err error
}

// NewJSONLWriter writes to w, buffered; call Flush to push lines out.
func NewJSONLWriter(w io.Writer) *JSONLWriter {
	return &JSONLWriter{w: bufio.NewWriterSize(w, 64<<10), buf: make([]byte, 0, 1024)}
}

// WriteCall writes one call line. route is the templated route, empty when
// not yet known.
func (j *JSONLWriter) WriteCall(c *parser.Call, route string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf = AppendCallJSON(j.buf[:0], c, route)
	j.buf = append(j.buf, '\n')
	j.line(j.buf)
}

// WriteRaw writes one pre-encoded JSON object as a line.
func (j *JSONLWriter) WriteRaw(line []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf = append(append(j.buf[:0], line...), '\n')
	j.line(j.buf)
}

// line writes one whole line. The buffer is pushed out before a line that
// does not fit, never in its middle, so that a reader of a killed agent's
// output sees whole lines only.
func (j *JSONLWriter) line(b []byte) {
	if len(b) > j.w.Available() && j.w.Buffered() > 0 {
		if err := j.w.Flush(); err != nil && j.err == nil {
			j.err = err
		}
	}
	if _, err := j.w.Write(b); err != nil && j.err == nil {
		j.err = err
	}
}

// Flush pushes buffered lines to the underlying writer and returns the
// first write error seen.
func (j *JSONLWriter) Flush() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.w.Flush(); err != nil && j.err == nil {
		j.err = err
	}
	return j.err
}

// AppendCallJSON appends c as a JSON object (without newline) to b. Header
// values, credentials and bodies never appear.
func AppendCallJSON(b []byte, c *parser.Call, route string) []byte {
	b = append(b, `{"type":"call","time":"`...)
	b = AppendTime(b, c.Start)
	b = append(b, `","protocol":"`...)
	b = append(b, c.Protocol.String()...)
	b = append(b, `","method":`...)
	b = AppendJSONString(b, c.Method)
	b = append(b, `,"host":`...)
	b = AppendJSONString(b, c.Host)
	b = append(b, `,"path":`...)
	b = AppendJSONString(b, c.Path)
	if route != "" {
		b = append(b, `,"route":`...)
		b = appendJSONStr(b, route)
	}
	if c.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(c.Status), 10)
	}
	if c.Protocol == parser.ProtoGRPC && c.GRPCStatus >= 0 {
		b = append(b, `,"grpc_status":`...)
		b = strconv.AppendInt(b, int64(c.GRPCStatus), 10)
	}
	if c.End >= c.Start && c.End != 0 {
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendFloat(b, float64(c.End-c.Start)/1e6, 'f', 3, 64)
	}
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendInt(b, c.ReqBytes, 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, c.RespBytes, 10)
	if c.Protocol == parser.ProtoGRPC {
		b = append(b, `,"request_messages":`...)
		b = strconv.AppendInt(b, int64(c.ReqMessages), 10)
		b = append(b, `,"response_messages":`...)
		b = strconv.AppendInt(b, int64(c.RespMessages), 10)
	}
	if ci := c.Conn; ci != nil {
		if ci.Client.IsValid() {
			b = append(b, `,"client":`...)
			b = appendAddr(b, ci.Client)
		}
		if ci.Server.IsValid() {
			b = append(b, `,"server":`...)
			b = appendAddr(b, ci.Server)
		}
		if ci.PID != 0 {
			b = append(b, `,"process":{"pid":`...)
			b = strconv.AppendUint(b, uint64(ci.PID), 10)
			b = append(b, `,"name":`...)
			b = appendJSONStr(b, ci.Comm)
			b = append(b, '}')
		}
		if ci.Side != parser.SideUnknown {
			b = append(b, `,"side":"`...)
			b = append(b, ci.Side.String()...)
			b = append(b, '"')
		}
		if ci.TLS {
			b = append(b, `,"tls":true`...)
		}
	}
	if c.Flags&(parser.FlagPartial|parser.FlagReqTruncated|parser.FlagRespTruncated) != 0 {
		b = append(b, `,"partial":true`...)
	}
	if c.Flags&parser.FlagNoResponse != 0 {
		b = append(b, `,"no_response":true`...)
	}
	if c.Flags&parser.FlagReset != 0 {
		b = append(b, `,"reset":true`...)
	}
	return append(b, '}')
}

func appendAddr(b []byte, ap netip.AddrPort) []byte {
	b = append(b, `{"address":"`...)
	b = ap.Addr().Unmap().AppendTo(b)
	b = append(b, `","port":`...)
	b = strconv.AppendUint(b, uint64(ap.Port()), 10)
	return append(b, '}')
}

// AppendTime appends the Unix-nanosecond event time ts as RFC 3339 in UTC
// with microseconds.
func AppendTime(b []byte, ts int64) []byte {
	return time.Unix(0, ts).UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD; control characters and the characters HTML cares about are
// escaped, so hostile paths cannot break the line.
func AppendJSONString(b []byte, s []byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

func appendJSONStr(b []byte, s string) []byte {
	// Read-only view of s: AppendJSONString never writes to its input.
	return AppendJSONString(b, unsafe.Slice(unsafe.StringData(s), len(s)))
}
