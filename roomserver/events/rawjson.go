package events

import "bytes"

// Helpers for walking JSON that is already canonical (valid, no whitespace,
// minimal escapes). They do not validate; given other bytes they give wrong
// answers but never panic.

// skipString returns the index just past the string starting at b[i].
// Strings in events are short, so a plain loop beats bytes.IndexByte here.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default:
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
			i++
		}
		return i
	}
}

// memberIter walks the members of a canonical JSON object.
type memberIter struct {
	b []byte
	i int
}

func newMemberIter(obj []byte) memberIter {
	if len(obj) < 2 || obj[0] != '{' {
		return memberIter{}
	}
	return memberIter{b: obj, i: 1}
}

// next returns the next member's raw key (with quotes), raw value, and the
// offsets of the member (key start, value end) within the object.
func (it *memberIter) next() (key, val []byte, start, end int, ok bool) {
	if it.i >= len(it.b) || it.b[it.i] == '}' {
		return nil, nil, 0, 0, false
	}
	if it.b[it.i] == ',' {
		it.i++
	}
	start = it.i
	ke := skipString(it.b, start)
	vs := ke + 1 // past ':'
	if start >= len(it.b) || it.b[start] != '"' || vs >= len(it.b) || it.b[ke] != ':' {
		// Not canonical JSON (only reachable through FromStored with
		// damaged bytes): stop instead of misreading.
		it.i = len(it.b)
		return nil, nil, 0, 0, false
	}
	ve := skipValue(it.b, vs)
	it.i = ve
	return it.b[start:ke], it.b[vs:ve], start, ve, true
}

// elemIter walks the elements of a canonical JSON array.
type elemIter struct {
	b []byte
	i int
}

func newElemIter(arr []byte) elemIter {
	if len(arr) < 2 || arr[0] != '[' {
		return elemIter{}
	}
	return elemIter{b: arr, i: 1}
}

func (it *elemIter) next() ([]byte, bool) {
	if it.i >= len(it.b) || it.b[it.i] == ']' {
		return nil, false
	}
	if it.b[it.i] == ',' {
		it.i++
	}
	s := it.i
	if s >= len(it.b) {
		return nil, false
	}
	it.i = skipValue(it.b, s)
	return it.b[s:it.i], true
}

// keyIs reports whether the raw (quoted) key equals name. name must be plain
// ASCII without characters that need escaping, so its canonical form is
// unique.
func keyIs(rawKey []byte, name string) bool {
	return len(rawKey) == len(name)+2 && string(rawKey[1:len(rawKey)-1]) == name
}

// lookupMember returns the raw value of the member called name in a canonical
// object, or nil.
func lookupMember(obj []byte, name string) []byte {
	it := newMemberIter(obj)
	for {
		k, v, _, _, ok := it.next()
		if !ok {
			return nil
		}
		if keyIs(k, name) {
			return v
		}
	}
}

// decodeString decodes a raw canonical JSON string. ok is false if raw is not
// a string.
func decodeString(raw []byte) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body), true
	}
	return string(appendUnquoteCanonical(make([]byte, 0, len(body)), body)), true
}

// isObject and isArray check the kind of a raw canonical value.
func isObject(raw []byte) bool { return len(raw) > 0 && raw[0] == '{' }
func isArray(raw []byte) bool  { return len(raw) > 0 && raw[0] == '[' }
func isString(raw []byte) bool { return len(raw) > 0 && raw[0] == '"' }
