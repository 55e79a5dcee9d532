package baseline

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/netip"

	"github.com/apisonar/apisonar/parser"
)

// PrincipalKind says what identified the caller of a call.
type PrincipalKind uint8

const (
	PrincipalIP PrincipalKind = iota
	PrincipalJWTSub
	PrincipalBearer // an opaque bearer token
	PrincipalBasic
	PrincipalAPIKey
	PrincipalSession
)

var principalPrefix = [...]string{"ip", "jwt:sub", "bearer", "basic", "apikey", "session"}

// Principal is a caller identity as found in a call. ID aliases the call's
// bytes (or the Principal's own buffer) and is only valid while the call
// is; it is never exported as is: String hashes it.
type Principal struct {
	Kind PrincipalKind
	ID   []byte
	// buf holds decoded identities (JWT sub, Basic user) and IP bytes.
	buf [64]byte
}

// sessionCookies are cookie names that carry a session id in common
// frameworks.
var sessionCookies = [...]string{"session", "sessionid", "session_id", "sid", "jsessionid", "phpsessid",
	"connect.sid", "_session_id", "laravel_session", "asp.net_sessionid", "ci_session"}

// principalOf finds the caller identity of c without allocating: the JWT
// sub claim (decoded, not verified), else an opaque bearer token, else the
// Basic user, else an API key, else a session cookie, else the client
// address (or, when the client is a trusted proxy, the last address of
// X-Forwarded-For).
func principalOf(c *parser.Call, trusted []netip.Prefix, p *Principal) {
	p.ID = nil
	if auth := c.ReqHeaders[parser.HdrAuthorization]; len(auth) > 0 {
		scheme, cred := cutSpace(auth)
		switch {
		case asciiEqualFold(scheme, "bearer") && len(cred) > 0:
			if sub := jwtSub(cred, p.buf[:]); sub != nil {
				p.Kind, p.ID = PrincipalJWTSub, sub
				return
			}
			p.Kind, p.ID = PrincipalBearer, cred
			return
		case asciiEqualFold(scheme, "basic") && len(cred) > 0:
			var tmp [96]byte
			if base64.StdEncoding.DecodedLen(len(cred)) <= len(tmp) {
				if n, err := base64.StdEncoding.Decode(tmp[:], cred); err == nil {
					user := tmp[:n]
					if i := bytes.IndexByte(user, ':'); i >= 0 {
						user = user[:i]
					}
					k := copy(p.buf[:], user)
					p.Kind, p.ID = PrincipalBasic, p.buf[:k]
					return
				}
			}
		}
	}
	if key := c.ReqHeaders[parser.HdrAPIKey]; len(key) > 0 {
		p.Kind, p.ID = PrincipalAPIKey, key
		return
	}
	if ck := c.ReqHeaders[parser.HdrCookie]; len(ck) > 0 {
		if v := sessionCookie(ck); v != nil {
			p.Kind, p.ID = PrincipalSession, v
			return
		}
	}
	p.Kind = PrincipalIP
	if c.Conn == nil {
		p.ID = p.buf[:0]
		return
	}
	addr := c.Conn.Client.Addr()
	if len(trusted) > 0 && len(c.ReqHeaders[parser.HdrXForwardedFor]) > 0 && inPrefixes(trusted, addr) {
		xff := c.ReqHeaders[parser.HdrXForwardedFor]
		last := xff
		if i := bytes.LastIndexByte(xff, ','); i >= 0 {
			last = xff[i+1:]
		}
		if a, ok := parseAddr(bytes.TrimSpace(last)); ok {
			addr = a
		}
	}
	a16 := addr.Unmap().As16()
	n := copy(p.buf[:], a16[:])
	p.ID = p.buf[:n]
}

func parseAddr(b []byte) (netip.Addr, bool) {
	var a netip.Addr
	if err := a.UnmarshalText(b); err != nil {
		return netip.Addr{}, false
	}
	return a, a.IsValid()
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func cutSpace(b []byte) (before, after []byte) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], bytes.TrimLeft(b[i+1:], " ")
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if b[i]|0x20 != s[i]|0x20 {
			return false
		}
	}
	return true
}

// jwtSub returns the sub claim of a JWT's payload, decoded into buf, or nil
// when tok is not a JWT with a string sub that fits.
func jwtSub(tok, buf []byte) []byte {
	d1 := bytes.IndexByte(tok, '.')
	if d1 <= 0 {
		return nil
	}
	d2 := bytes.IndexByte(tok[d1+1:], '.')
	if d2 <= 0 {
		return nil
	}
	payload := tok[d1+1 : d1+1+d2]
	var tmp [1024]byte
	if base64.RawURLEncoding.DecodedLen(len(payload)) > len(tmp) {
		return nil
	}
	// Some issuers pad; RawURLEncoding refuses '='.
	payload = bytes.TrimRight(payload, "=")
	n, err := base64.RawURLEncoding.Decode(tmp[:], payload)
	if err != nil {
		return nil
	}
	v := jsonStringField(tmp[:n], "sub")
	if v == nil || len(v) > len(buf) {
		return nil
	}
	return buf[:copy(buf, v)]
}

// jsonStringField finds a top-level "key": "value" in a JSON object and
// returns the raw value bytes (escapes left as they are: the value is only
// hashed). It is a scanner, not a parser: it skips nested values and gives
// up on anything unexpected.
func jsonStringField(obj []byte, key string) []byte {
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil
	}
	i++
	for {
		i = skipWS(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return nil
		}
		ks, ke, ok := scanString(obj, i)
		if !ok {
			return nil
		}
		i = skipWS(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return nil
		}
		i = skipWS(obj, i+1)
		if string(obj[ks+1:ke-1]) == key {
			if i < len(obj) && obj[i] == '"' {
				vs, ve, ok := scanString(obj, i)
				if !ok {
					return nil
				}
				return obj[vs+1 : ve-1]
			}
			return nil
		}
		j, ok := skipValue(obj, i)
		if !ok {
			return nil
		}
		i = skipWS(obj, j)
		if i >= len(obj) || obj[i] != ',' {
			return nil
		}
		i++
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the bounds of the string starting at b[i] == '"':
// start at the opening quote, end just past the closing one.
func scanString(b []byte, i int) (start, end int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return i, j + 1, true
		}
	}
	return 0, 0, false
}

// skipValue returns the index just past the JSON value at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		_, e, ok := scanString(b, i)
		return e, ok
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				_, e, ok := scanString(b, j)
				if !ok {
					return 0, false
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
			j++
		}
		return j, j > i
	}
}

// sessionCookie returns the value of the first session cookie in a Cookie
// header.
func sessionCookie(h []byte) []byte {
	for len(h) > 0 {
		var pair []byte
		if i := bytes.IndexByte(h, ';'); i >= 0 {
			pair, h = h[:i], h[i+1:]
		} else {
			pair, h = h, nil
		}
		pair = bytes.TrimLeft(pair, " ")
		eq := bytes.IndexByte(pair, '=')
		if eq <= 0 || eq == len(pair)-1 {
			continue
		}
		name := pair[:eq]
		for _, s := range sessionCookies {
			if asciiEqualFold(name, s) {
				return pair[eq+1:]
			}
		}
	}
	return nil
}

// hash64 is the keyed hash that counts a principal in sketches.
func (p *Principal) hash64(k0, k1 uint64) uint64 {
	return sipHash24(k0, k1, byte(p.Kind), p.ID)
}

// String returns the exportable form: "ip:203.0.113.9" for addresses, else
// the kind and the first 16 hex digits of HMAC-SHA256(key, identity). It
// allocates and is meant for findings, not the per-call path.
func (p *Principal) String(key []byte) string {
	prefix := principalPrefix[p.Kind]
	if p.Kind == PrincipalIP {
		if len(p.ID) != 16 {
			return "ip:unknown"
		}
		return "ip:" + netip.AddrFrom16([16]byte(p.ID)).Unmap().String()
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte{byte(p.Kind)})
	m.Write(p.ID)
	return prefix + ":" + hex.EncodeToString(m.Sum(nil)[:8])
}
