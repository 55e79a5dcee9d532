package route

// Kind says what a path segment looks like. Literal segments are kept in the
// route as they are; every other kind becomes a parameter.
type Kind uint8

const (
	Literal Kind = iota
	// Integer: decimal digits only.
	Integer
	// UUID: 8-4-4-4-12 hex digits.
	UUID
	// Hex: a hex string of 8 or more characters with at least one digit
	// (hashes, object ids).
	Hex
	// Date: YYYY-MM-DD, optionally followed by a time.
	Date
	// Email: local@domain.tld.
	Email
	// Token: any other identifier-looking segment (mixed letters and
	// digits, base64, percent-encoded or very long values).
	Token
	// String: a word under a node that has collapsed because it had too
	// many distinct literal children.
	String
	numKinds
)

// String names the kind as the inventory's OpenAPI export describes it.
func (k Kind) String() string {
	switch k {
	case Literal:
		return "literal"
	case Integer:
		return "integer"
	case UUID:
		return "uuid"
	case Hex:
		return "hex"
	case Date:
		return "date"
	case Email:
		return "email"
	case Token:
		return "token"
	case String:
		return "string"
	}
	return "unknown"
}

// maxLiteralLen is the longest segment that can still be a literal word;
// longer segments are payloads (tokens, encoded blobs), never route names.
const maxLiteralLen = 48

// Classify decides whether a path segment is a literal route word or a
// parameter value, and of which kind. It never allocates.
//
// The rules lean towards keeping a segment literal when unsure: a word taken
// for a parameter merges endpoints that differ, while a parameter taken for
// a word only adds a sibling, and the per-node cap on literal children
// collapses runs of those.
func Classify(seg []byte) Kind {
	n := len(seg)
	if n == 0 {
		return Literal
	}
	if n == 36 && seg[8] == '-' && isUUID(seg) {
		return UUID // the commonest id in paths, worth a fast exit
	}
	var digits, lower, upper, hexLetters, seps, at, other int
	for _, c := range seg {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'z':
			lower++
			if c <= 'f' {
				hexLetters++
			}
		case c >= 'A' && c <= 'Z':
			upper++
			if c <= 'F' {
				hexLetters++
			}
		case c == '-' || c == '_' || c == '.':
			seps++
		case c == '@':
			at++
		default:
			// '%', '=', '+', '~', ':', non-ASCII bytes and the like.
			other++
		}
	}
	switch {
	case digits == n:
		return Integer
	case digits >= 8 && isDate(seg):
		return Date
	case at == 1 && isEmail(seg):
		return Email
	case other > 0 || at > 0 || n > maxLiteralLen:
		return Token
	case isVersion(seg):
		return Literal
	}
	letters := lower + upper
	if letters == 0 {
		// Digits with separators: "12-34", "1.5", "2024_01".
		return Token
	}
	if digits > 0 && seps == 0 && letters == hexLetters && n >= 8 {
		return Hex
	}
	if digits > 0 && (!wordsWithSmallSuffix(seg) || (upper > 0 && lower > 0)) {
		return Token
	}
	// Words in camel case average well over three letters per capital;
	// random base64 has about one capital in two letters.
	if upper > 0 && lower > 0 && (upper*3 > letters || !camelCase(seg) || !pronounceable(seg)) {
		return Token
	}
	if lower == 0 && digits == 0 && upper >= 12 {
		// A long all-capitals run is a code or key, not a word.
		return Token
	}
	return Literal
}

func isHex(c byte) bool {
	return c-'0' < 10 || (c|0x20)-'a' < 6
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isUUID(s []byte) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	for i, c := range s {
		if !isHex(c) && i != 8 && i != 13 && i != 18 && i != 23 {
			return false
		}
	}
	return true
}

// isDate accepts YYYY-MM-DD (or with '_' / '.') and anything after it, so
// that RFC 3339 timestamps count as dates too.
func isDate(s []byte) bool {
	if len(s) < 10 {
		return false
	}
	for i := 0; i < 10; i++ {
		c := s[i]
		switch i {
		case 4, 7:
			if c != '-' && c != '_' && c != '.' {
				return false
			}
		default:
			if !isDigit(c) {
				return false
			}
		}
	}
	month := int(s[5]-'0')*10 + int(s[6]-'0')
	day := int(s[8]-'0')*10 + int(s[9]-'0')
	return month >= 1 && month <= 12 && day >= 1 && day <= 31
}

func isEmail(s []byte) bool {
	at := -1
	for i, c := range s {
		if c == '@' {
			at = i
		}
	}
	if at <= 0 || at >= len(s)-3 {
		return false
	}
	dot := false
	for _, c := range s[at+1:] {
		if c == '.' {
			dot = true
		}
	}
	return dot && s[len(s)-1] != '.'
}

// isVersion accepts API version tokens: v1, V2, v1.2, v2beta1, v1alpha.
func isVersion(s []byte) bool {
	if len(s) < 2 || (s[0] != 'v' && s[0] != 'V') || !isDigit(s[1]) {
		return false
	}
	i := 1
	for i < len(s) && (isDigit(s[i]) || s[i] == '.') {
		i++
	}
	if i == len(s) {
		return i <= 8
	}
	rest := s[i:]
	for _, suffix := range []string{"alpha", "beta", "rc"} {
		if len(rest) >= len(suffix) && string(rest[:len(suffix)]) == suffix {
			for _, c := range rest[len(suffix):] {
				if !isDigit(c) {
					return false
				}
			}
			return len(rest)-len(suffix) <= 3
		}
	}
	return false
}

// wordsWithSmallSuffix accepts segments whose separator-delimited parts are
// each letters optionally followed by one or two digits: oauth2, ipv4, s3,
// ec2-instances, http2_settings. Anything else mixing digits and letters
// is an identifier.
func wordsWithSmallSuffix(s []byte) bool {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '-' && s[i] != '_' && s[i] != '.' {
			continue
		}
		part := s[start:i]
		start = i + 1
		j := 0
		for j < len(part) && !isDigit(part[j]) {
			j++
		}
		if j == 0 && len(part) > 0 {
			return false
		}
		if len(part)-j > 2 {
			return false
		}
		for _, c := range part[j:] {
			if !isDigit(c) {
				return false
			}
		}
	}
	return true
}

// camelCase accepts mixed-case words where every capital starts a word:
// getUser, ListOrders, resetPassword, and all-capital parts (API, HTTP)
// between separators. Random base64 text almost never has that shape.
func camelCase(s []byte) bool {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '-' && s[i] != '_' && s[i] != '.' {
			continue
		}
		if !camelPart(s[start:i]) {
			return false
		}
		start = i + 1
	}
	return true
}

func camelPart(p []byte) bool {
	hasLower := false
	for _, c := range p {
		if c >= 'a' && c <= 'z' {
			hasLower = true
		}
	}
	if !hasLower {
		return len(p) <= 8 // an acronym
	}
	for i, c := range p {
		if c < 'A' || c > 'Z' {
			continue
		}
		if i > 0 && p[i-1] >= 'A' && p[i-1] <= 'Z' {
			return false
		}
		if i+1 >= len(p) || p[i+1] < 'a' || p[i+1] > 'z' {
			return false
		}
	}
	return true
}

// pronounceable rejects letter runs that words do not have: fewer than one
// vowel in five letters, or five consonants in a row. It is applied to
// mixed-case segments only, where random base64 text is the alternative.
func pronounceable(s []byte) bool {
	letters, vowels, run := 0, 0, 0
	for _, c := range s {
		c |= 0x20 // lower-case letters; other bytes are reset below
		if c < 'a' || c > 'z' {
			run = 0
			continue
		}
		letters++
		switch c {
		case 'a', 'e', 'i', 'o', 'u', 'y':
			vowels++
			run = 0
		default:
			run++
			if run >= 5 {
				return false
			}
		}
	}
	return vowels*5 >= letters
}
