package events

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// numberMode selects how numbers are treated while canonicalising.
type numberMode uint8

const (
	// numIntegral is the appendix's Canonical JSON: any number whose value is
	// an integer in [-(2^53)+1, (2^53)-1] is accepted and written in plain
	// integer form (so -0 becomes 0 and 1e10 becomes 10000000000, as in the
	// appendix's examples); any other number is an error.
	numIntegral numberMode = iota
	// numStrict is for events in room versions 6 and later, where servers
	// "MUST strictly enforce" canonical JSON: only integer literals in range are
	// accepted. Fractions and exponents are rejected even when the value is
	// integral, as every other server (which decodes 1.0 and 1e2 as floats)
	// rejects them. -0 is read as the integer 0.
	numStrict
	// numLegacy is for events in room versions 1–5, which "might not be fully
	// compliant" (appendix, Canonical JSON). The events in those rooms were
	// hashed and signed by servers that encode numbers as Python's json module
	// does, so this mode reproduces it: integers of any size are kept as
	// written, and numbers with a fraction or exponent become floats written
	// as Python's repr() writes them (1.0, 1e+16, 1e-05).
	numLegacy
)

const (
	maxSafeInteger = 1<<53 - 1
	// maxNesting bounds recursion on hostile input; real events nest a few
	// levels deep.
	maxNesting = 512
)

// canonMember records one object member written to the output while its
// object is still open, so the members can be sorted when it closes.
type canonMember struct {
	// key is the member's decoded key: out[keyStart:keyEnd], or
	// arena[keyStart:keyEnd] when the canonical key needed escapes.
	keyStart, keyEnd int
	inArena          bool
	// start and end delimit `"key":value` in out, without separating comma.
	start, end int
}

// sortEntry is a member being sorted; its key is sortKeys[keyStart:keyEnd].
type sortEntry struct {
	keyStart, keyEnd, start, end int
}

type canonicalizer struct {
	in          []byte
	pos         int
	out         []byte
	mode        numberMode
	limit       int
	depth       int
	members     []canonMember
	arena       []byte
	scratch     []byte
	sortEntries []sortEntry
	sortKeys    []byte
}

var canonicalizerPool = sync.Pool{New: func() any { return new(canonicalizer) }}

// CanonicalJSON re-encodes raw as Canonical JSON (Appendices, "Canonical
// JSON"): object keys sorted by Unicode codepoint, no insignificant
// whitespace, UTF-8 with the shortest escapes, and numbers as integers in
// [-(2^53)+1, (2^53)-1]. A number written with a fraction or exponent is
// accepted only when its value is such an integer (the appendix's example turns
// 1e10 into 10000000000). Duplicate keys, lone UTF-16 surrogates and invalid
// UTF-8 are errors. Errors wrap ErrNotJSON or ErrBadJSON.
func CanonicalJSON(raw []byte) ([]byte, error) {
	return canonicalize(make([]byte, 0, len(raw)), raw, numIntegral, 0)
}

// canonicalize appends the canonical form of raw to dst. limit, when positive,
// is the largest output allowed; larger output fails with ErrTooLarge.
func canonicalize(dst, raw []byte, mode numberMode, limit int) ([]byte, error) {
	c := canonicalizerPool.Get().(*canonicalizer)
	c.in, c.pos, c.out, c.mode, c.limit, c.depth = raw, 0, dst, mode, limit, 0
	err := c.run()
	out := c.out
	c.in, c.out = nil, nil
	c.members, c.arena, c.scratch = c.members[:0], c.arena[:0], c.scratch[:0]
	c.sortEntries, c.sortKeys = c.sortEntries[:0], c.sortKeys[:0]
	// Keep only moderately sized scratch space in the pool.
	if cap(c.scratch) <= 1<<20 && cap(c.arena) <= 1<<20 && cap(c.members) <= 1<<14 && cap(c.sortEntries) <= 1<<14 && cap(c.sortKeys) <= 1<<20 {
		canonicalizerPool.Put(c)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (c *canonicalizer) run() error {
	c.skipSpace()
	if c.pos >= len(c.in) {
		return notJSON("empty input")
	}
	if err := c.value(); err != nil {
		return err
	}
	c.skipSpace()
	if c.pos != len(c.in) {
		return notJSON("unexpected data after the JSON value at offset %d", c.pos)
	}
	return nil
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) value() error {
	if c.pos >= len(c.in) {
		return notJSON("unexpected end of input")
	}
	var err error
	switch ch := c.in[c.pos]; {
	case ch == '{':
		err = c.object()
	case ch == '[':
		err = c.array()
	case ch == '"':
		_, err = c.str()
	case ch == 't':
		err = c.literal("true")
	case ch == 'f':
		err = c.literal("false")
	case ch == 'n':
		err = c.literal("null")
	case ch == '-' || (ch >= '0' && ch <= '9'):
		err = c.number()
	default:
		return notJSON("unexpected character %q at offset %d", ch, c.pos)
	}
	if err != nil {
		return err
	}
	if c.limit > 0 && len(c.out) > c.limit {
		return tooLarge("canonical JSON exceeds %d bytes", c.limit)
	}
	return nil
}

func (c *canonicalizer) literal(lit string) error {
	if len(c.in)-c.pos < len(lit) || string(c.in[c.pos:c.pos+len(lit)]) != lit {
		return notJSON("invalid literal at offset %d", c.pos)
	}
	c.pos += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

func (c *canonicalizer) key(m *canonMember) []byte {
	if m.inArena {
		return c.arena[m.keyStart:m.keyEnd]
	}
	return c.out[m.keyStart:m.keyEnd]
}

func (c *canonicalizer) object() error {
	c.depth++
	if c.depth > maxNesting {
		return badJSON("JSON nested more than %d levels deep", maxNesting)
	}
	c.pos++ // '{'
	c.out = append(c.out, '{')
	bodyStart := len(c.out)
	base := len(c.members)
	arenaBase := len(c.arena)
	sorted := true

	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		c.depth--
		return nil
	}
	for {
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return notJSON("expected an object key at offset %d", c.pos)
		}
		if len(c.members) > base {
			c.out = append(c.out, ',')
		}
		m := canonMember{start: len(c.out)}
		escaped, err := c.str()
		if err != nil {
			return err
		}
		if escaped {
			m.keyStart = len(c.arena)
			c.arena = appendUnquoteCanonical(c.arena, c.out[m.start+1:len(c.out)-1])
			m.keyEnd, m.inArena = len(c.arena), true
		} else {
			m.keyStart, m.keyEnd = m.start+1, len(c.out)-1
		}
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return notJSON("expected ':' at offset %d", c.pos)
		}
		c.pos++
		c.out = append(c.out, ':')
		c.skipSpace()
		if err := c.value(); err != nil {
			return err
		}
		m.end = len(c.out)
		if n := len(c.members); n > base {
			switch cmp := bytes.Compare(c.key(&c.members[n-1]), c.key(&m)); {
			case cmp == 0:
				return badJSON("duplicate object key %q", c.key(&m))
			case cmp > 0:
				sorted = false
			}
		}
		c.members = append(c.members, m)
		c.skipSpace()
		if c.pos >= len(c.in) {
			return notJSON("unexpected end of input in object")
		}
		if c.in[c.pos] == ',' {
			c.pos++
			c.skipSpace()
			continue
		}
		if c.in[c.pos] != '}' {
			return notJSON("expected ',' or '}' at offset %d", c.pos)
		}
		c.pos++
		break
	}
	if !sorted {
		if err := c.sortMembers(bodyStart, base); err != nil {
			return err
		}
	}
	c.out = append(c.out, '}')
	c.members = c.members[:base]
	c.arena = c.arena[:arenaBase]
	c.depth--
	return nil
}

// sortMembers rewrites the members of the object whose body starts at
// out[bodyStart] in key order. Sorting compares the decoded keys as UTF-8
// bytes, which orders them by Unicode codepoint.
func (c *canonicalizer) sortMembers(bodyStart, base int) error {
	ms := c.members[base:]
	// Copy the keys side by side and sort pointer-free entries: swapping
	// entries that hold slices costs a write barrier each.
	keys := c.sortKeys[:0]
	entries := c.sortEntries[:0]
	for i := range ms {
		k := c.key(&ms[i])
		entries = append(entries, sortEntry{keyStart: len(keys), keyEnd: len(keys) + len(k), start: ms[i].start, end: ms[i].end})
		keys = append(keys, k...)
	}
	slices.SortFunc(entries, func(a, b sortEntry) int {
		return bytes.Compare(keys[a.keyStart:a.keyEnd], keys[b.keyStart:b.keyEnd])
	})
	for i := 1; i < len(entries); i++ {
		prev, cur := keys[entries[i-1].keyStart:entries[i-1].keyEnd], keys[entries[i].keyStart:entries[i].keyEnd]
		if bytes.Equal(prev, cur) {
			return badJSON("duplicate object key %q", cur)
		}
	}
	c.scratch = append(c.scratch[:0], c.out[bodyStart:]...)
	c.out = c.out[:bodyStart]
	for i := range entries {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.scratch[entries[i].start-bodyStart:entries[i].end-bodyStart]...)
	}
	c.sortKeys, c.sortEntries = keys[:0], entries[:0]
	return nil
}

func (c *canonicalizer) array() error {
	c.depth++
	if c.depth > maxNesting {
		return badJSON("JSON nested more than %d levels deep", maxNesting)
	}
	c.pos++ // '['
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		c.depth--
		return nil
	}
	for first := true; ; first = false {
		if !first {
			c.out = append(c.out, ',')
		}
		if err := c.value(); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return notJSON("unexpected end of input in array")
		}
		if c.in[c.pos] == ',' {
			c.pos++
			c.skipSpace()
			continue
		}
		if c.in[c.pos] != ']' {
			return notJSON("expected ',' or ']' at offset %d", c.pos)
		}
		c.pos++
		break
	}
	c.out = append(c.out, ']')
	c.depth--
	return nil
}

// str copies the string at c.pos to the output in canonical form. It reports
// whether the canonical form contains escape sequences (so that the decoded
// value differs from the bytes between the quotes).
func (c *canonicalizer) str() (escaped bool, err error) {
	c.pos++ // opening quote
	c.out = append(c.out, '"')
	for {
		start := c.pos
		for c.pos < len(c.in) && plainStringByte[c.in[c.pos]] {
			c.pos++
		}
		c.out = append(c.out, c.in[start:c.pos]...)
		if c.pos >= len(c.in) {
			return false, notJSON("unterminated string")
		}
		switch b := c.in[c.pos]; {
		case b == '"':
			c.pos++
			c.out = append(c.out, '"')
			return escaped, nil
		case b < 0x20:
			return false, notJSON("unescaped control character in string at offset %d", c.pos)
		case b >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && size == 1 {
				return false, notJSON("invalid UTF-8 at offset %d", c.pos)
			}
			c.out = append(c.out, c.in[c.pos:c.pos+size]...)
			c.pos += size
		default: // backslash
			r, err := c.escape()
			if err != nil {
				return false, err
			}
			if r < 0x20 || r == '"' || r == '\\' {
				escaped = true
			}
			c.out = appendStringRune(c.out, r)
		}
	}
}

// escape decodes the escape sequence at c.pos (which holds the backslash).
func (c *canonicalizer) escape() (rune, error) {
	if c.pos+1 >= len(c.in) {
		return 0, notJSON("unterminated escape sequence")
	}
	e := c.in[c.pos+1]
	c.pos += 2
	switch e {
	case '"', '\\', '/':
		return rune(e), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, ok := c.hex4()
		if !ok {
			return 0, notJSON("invalid \\u escape at offset %d", c.pos)
		}
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return 0, badJSON("lone UTF-16 surrogate at offset %d", c.pos)
		case r >= 0xD800 && r <= 0xDBFF:
			if c.pos+1 >= len(c.in) || c.in[c.pos] != '\\' || c.in[c.pos+1] != 'u' {
				return 0, badJSON("lone UTF-16 surrogate at offset %d", c.pos)
			}
			c.pos += 2
			lo, ok := c.hex4()
			if !ok {
				return 0, notJSON("invalid \\u escape at offset %d", c.pos)
			}
			if lo < 0xDC00 || lo > 0xDFFF {
				return 0, badJSON("lone UTF-16 surrogate at offset %d", c.pos)
			}
			return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), nil
		}
		return r, nil
	default:
		return 0, notJSON("invalid escape sequence \\%c at offset %d", e, c.pos-1)
	}
}

func (c *canonicalizer) hex4() (rune, bool) {
	if len(c.in)-c.pos < 4 {
		return 0, false
	}
	var r rune
	for _, h := range c.in[c.pos : c.pos+4] {
		var d byte
		switch {
		case h >= '0' && h <= '9':
			d = h - '0'
		case h >= 'a' && h <= 'f':
			d = h - 'a' + 10
		case h >= 'A' && h <= 'F':
			d = h - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	c.pos += 4
	return r, true
}

const hexDigits = "0123456789abcdef"

// plainStringByte marks the bytes that are copied unchanged inside a string:
// printable ASCII other than '"' and '\\'.
var plainStringByte = func() (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// appendStringRune appends r as it appears inside a canonical JSON string:
// the two-character escapes where they exist, \u00XX (lowercase) for other
// control characters, and raw UTF-8 for everything else.
func appendStringRune(dst []byte, r rune) []byte {
	switch r {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
	}
	return utf8.AppendRune(dst, r)
}

// appendJSONString appends s as a canonical JSON string. It reports false if s
// is not valid UTF-8.
func appendJSONString(dst []byte, s string) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b != '"' && b != '\\' && b < utf8.RuneSelf {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		if b < utf8.RuneSelf {
			dst = appendStringRune(dst, rune(b))
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, false
			}
			dst = append(dst, s[i:i+size]...)
			i += size
		}
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), true
}

// appendUnquoteCanonical appends the decoded value of the body (the bytes
// between the quotes) of a canonical JSON string. Canonical strings only use
// the escapes that appendStringRune writes.
func appendUnquoteCanonical(dst, body []byte) []byte {
	for i := 0; i < len(body); i++ {
		b := body[i]
		if b != '\\' || i+1 >= len(body) {
			dst = append(dst, b)
			continue
		}
		i++
		switch body[i] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+4 < len(body) {
				hi, lo := unhex(body[i+3]), unhex(body[i+4])
				dst = append(dst, hi<<4|lo)
				i += 4
			}
		default: // '"' or '\\'
			dst = append(dst, body[i])
		}
	}
	return dst
}

func unhex(h byte) byte {
	switch {
	case h >= '0' && h <= '9':
		return h - '0'
	case h >= 'a' && h <= 'f':
		return h - 'a' + 10
	case h >= 'A' && h <= 'F':
		return h - 'A' + 10
	}
	return 0
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func (c *canonicalizer) number() error {
	start := c.pos
	neg := false
	if c.in[c.pos] == '-' {
		neg = true
		c.pos++
	}
	intStart := c.pos
	switch {
	case c.pos < len(c.in) && c.in[c.pos] == '0':
		c.pos++
	case c.pos < len(c.in) && c.in[c.pos] >= '1' && c.in[c.pos] <= '9':
		for c.pos < len(c.in) && isDigit(c.in[c.pos]) {
			c.pos++
		}
	default:
		return notJSON("invalid number at offset %d", start)
	}
	intDigits := c.in[intStart:c.pos]
	var fracDigits, expDigits []byte
	hasFrac, hasExp, expNeg := false, false, false
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		hasFrac = true
		c.pos++
		fs := c.pos
		for c.pos < len(c.in) && isDigit(c.in[c.pos]) {
			c.pos++
		}
		if c.pos == fs {
			return notJSON("invalid number at offset %d", start)
		}
		fracDigits = c.in[fs:c.pos]
	}
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		hasExp = true
		c.pos++
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			expNeg = c.in[c.pos] == '-'
			c.pos++
		}
		es := c.pos
		for c.pos < len(c.in) && isDigit(c.in[c.pos]) {
			c.pos++
		}
		if c.pos == es {
			return notJSON("invalid number at offset %d", start)
		}
		expDigits = c.in[es:c.pos]
	}
	literal := c.in[start:c.pos]
	isInteger := !hasFrac && !hasExp

	switch c.mode {
	case numStrict:
		if !isInteger {
			return badJSON("number %s is not an integer", literal)
		}
		return c.appendSafeInteger(neg, intDigits, literal)
	case numLegacy:
		if isInteger {
			// Python keeps integers of any size; "-0" reads as 0.
			if len(intDigits) == 1 && intDigits[0] == '0' {
				c.out = append(c.out, '0')
			} else {
				c.out = append(c.out, literal...)
			}
			return nil
		}
		f, err := strconv.ParseFloat(string(literal), 64)
		if err != nil { // out of float64 range: Python cannot encode inf
			return badJSON("number %s is out of range", literal)
		}
		c.out = appendPythonFloat(c.out, f)
		return nil
	default: // numIntegral
		if isInteger {
			return c.appendSafeInteger(neg, intDigits, literal)
		}
		return c.appendIntegralValue(neg, intDigits, fracDigits, expDigits, expNeg, literal)
	}
}

// appendSafeInteger writes an integer literal (digits without sign) if it is
// within the canonical JSON range.
func (c *canonicalizer) appendSafeInteger(neg bool, digits, literal []byte) error {
	if len(digits) == 1 && digits[0] == '0' {
		c.out = append(c.out, '0')
		return nil
	}
	if len(digits) > 16 {
		return badJSON("integer %s is out of range", literal)
	}
	var v uint64
	for _, d := range digits {
		v = v*10 + uint64(d-'0')
	}
	if v > maxSafeInteger {
		return badJSON("integer %s is out of range", literal)
	}
	if neg {
		c.out = append(c.out, '-')
	}
	c.out = append(c.out, digits...)
	return nil
}

// appendIntegralValue writes a number written with a fraction and/or exponent
// as a plain integer, if its exact value is an integer in range.
func (c *canonicalizer) appendIntegralValue(neg bool, intDigits, fracDigits, expDigits []byte, expNeg bool, literal []byte) error {
	// The value is mant × 10^exp, computed exactly on the decimal digits.
	mant := make([]byte, 0, len(intDigits)+len(fracDigits))
	mant = append(mant, intDigits...)
	mant = append(mant, fracDigits...)
	for len(mant) > 0 && mant[0] == '0' {
		mant = mant[1:]
	}
	if len(mant) == 0 {
		c.out = append(c.out, '0')
		return nil
	}
	// Saturate the exponent: anything beyond a million decides the outcome
	// on its own for mantissas of any size this package accepts.
	exp := 0
	for _, d := range expDigits {
		if exp < 1_000_000 {
			exp = exp*10 + int(d-'0')
		}
	}
	if expNeg {
		exp = -exp
	}
	exp -= len(fracDigits)
	for len(mant) > 0 && mant[len(mant)-1] == '0' {
		mant = mant[:len(mant)-1]
		exp++
	}
	if exp < 0 {
		return badJSON("number %s is not an integer", literal)
	}
	if len(mant)+exp > 16 {
		return badJSON("number %s is out of range", literal)
	}
	var v uint64
	for _, d := range mant {
		v = v*10 + uint64(d-'0')
	}
	for range exp {
		v *= 10
	}
	if v > maxSafeInteger {
		return badJSON("number %s is out of range", literal)
	}
	if neg {
		c.out = append(c.out, '-')
	}
	c.out = strconv.AppendUint(c.out, v, 10)
	return nil
}

// appendPythonFloat writes f as Python's repr(float) does, which is how
// Python's json module (and so the servers that signed events in room
// versions 1–5) encode floats: the shortest round-tripping digits, in
// positional notation with a ".0" when the decimal exponent is in [-4, 16),
// and as d.ddde±XX otherwise.
func appendPythonFloat(dst []byte, f float64) []byte {
	if f == 0 {
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	var buf [40]byte
	s := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // [-]d[.ddd]e±XX
	if s[0] == '-' {
		dst = append(dst, '-')
		s = s[1:]
	}
	ePos := bytes.IndexByte(s, 'e')
	var digitsBuf [24]byte
	digits := append(digitsBuf[:0], s[0])
	if ePos > 1 {
		digits = append(digits, s[2:ePos]...) // skip the '.'
	}
	exp, _ := strconv.Atoi(string(s[ePos+1:]))
	decpt := exp + 1 // position of the decimal point relative to digits
	switch {
	case decpt <= -4 || decpt > 16:
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		x := decpt - 1
		if x < 0 {
			dst = append(dst, '-')
			x = -x
		} else {
			dst = append(dst, '+')
		}
		if x < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(x), 10)
	case decpt <= 0:
		dst = append(dst, '0', '.')
		for range -decpt {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	case decpt < len(digits):
		dst = append(dst, digits[:decpt]...)
		dst = append(dst, '.')
		return append(dst, digits[decpt:]...)
	default:
		dst = append(dst, digits...)
		for range decpt - len(digits) {
			dst = append(dst, '0')
		}
		return append(dst, '.', '0')
	}
}
