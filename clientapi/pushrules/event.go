package pushrules

import (
	"errors"
	"strings"

	"github.com/tidwall/gjson"
)

// Event is an event prepared for evaluation: every scalar and array property
// indexed by its dot-separated path. It is built once per event and then
// evaluated against any number of recipients' rules, and is safe for concurrent
// use.
type Event struct {
	Sender   string
	Type     string
	RoomID   string
	StateKey *string

	props map[string]prop
	// hasMentions: content has an m.mentions property, which switches the
	// legacy body-based mention rules off.
	hasMentions bool
	// lowerBody is content.body lower-cased, for word-boundary matching.
	lowerBody string
	hasBody   bool
}

// prop is a property value: a scalar, or an array of the scalars in it.
type prop struct {
	v       Value
	arr     []Value
	isArray bool
}

// maxDepth bounds how deeply nested properties are indexed.
const maxDepth = 32

// NewEvent indexes an event given as JSON (client or federation format: both
// have type, sender, room_id, state_key and content at the top level).
func NewEvent(raw []byte) (*Event, error) {
	if !gjson.ValidBytes(raw) {
		return nil, errors.New("event is not valid JSON")
	}
	root := gjson.ParseBytes(raw)
	if !root.IsObject() {
		return nil, errors.New("event is not a JSON object")
	}
	e := &Event{props: make(map[string]prop, 16)}
	buf := make([]byte, 0, 64)
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "signatures", "hashes", "unsigned", "auth_events", "prev_events":
			// Never matched against, and large; skip.
			return true
		}
		e.index(appendSegment(buf[:0], k.Str), v, 1)
		return true
	})
	if p, ok := e.props["sender"]; ok && p.v.Type == StringValue {
		e.Sender = p.v.Str
	}
	if p, ok := e.props["type"]; ok && p.v.Type == StringValue {
		e.Type = p.v.Str
	}
	if p, ok := e.props["room_id"]; ok && p.v.Type == StringValue {
		e.RoomID = p.v.Str
	}
	if p, ok := e.props["state_key"]; ok && p.v.Type == StringValue {
		sk := p.v.Str
		e.StateKey = &sk
	}
	if p, ok := e.props["content.body"]; ok && p.v.Type == StringValue {
		e.hasBody = true
		e.lowerBody = strings.ToLower(p.v.Str)
	}
	e.hasMentions = root.Get("content").IsObject() && gjson.Get(root.Get("content").Raw, `m\.mentions`).Exists()
	return e, nil
}

func (e *Event) index(path []byte, v gjson.Result, depth int) {
	switch {
	case v.IsObject():
		if depth >= maxDepth {
			return
		}
		v.ForEach(func(k, child gjson.Result) bool {
			p := append(path, '.')
			e.index(appendSegment(p, k.Str), child, depth+1)
			return true
		})
	case v.IsArray():
		var arr []Value
		v.ForEach(func(_, item gjson.Result) bool {
			if sv, ok := scalar(item); ok {
				arr = append(arr, sv)
			}
			return true
		})
		e.props[string(path)] = prop{arr: arr, isArray: true}
	default:
		if sv, ok := scalar(v); ok {
			e.props[string(path)] = prop{v: sv}
		}
	}
}

// scalar converts a gjson scalar into a Value; non-integer numbers and numbers
// outside canonical JSON's range are not values.
func scalar(v gjson.Result) (Value, bool) {
	switch v.Type {
	case gjson.String:
		return Value{Type: StringValue, Str: v.Str}, true
	case gjson.True:
		return Value{Type: BoolValue, Bool: true}, true
	case gjson.False:
		return Value{Type: BoolValue}, true
	case gjson.Null:
		return Value{Type: NullValue}, true
	case gjson.Number:
		n, ok := parseCanonicalInt([]byte(v.Raw))
		return Value{Type: IntValue, Int: n}, ok
	}
	return Value{}, false
}

// appendSegment appends a property name with '.' and '\' escaped (Appendices,
// "Dot-separated property paths").
func appendSegment(dst []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '.' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, name[i])
	}
	return dst
}

// CanonicalPath rewrites a dot-separated property path with only '.' and '\'
// escaped, so that equal paths compare equal. Per the spec, a backslash before
// any other character is a literal backslash.
func CanonicalPath(path string) string {
	var segs []string
	var cur strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '\\' && i+1 < len(path) && (path[i+1] == '.' || path[i+1] == '\\'):
			cur.WriteByte(path[i+1])
			i++
		case c == '.':
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	segs = append(segs, cur.String())
	var out []byte
	for i, s := range segs {
		if i > 0 {
			out = append(out, '.')
		}
		out = appendSegment(out, s)
	}
	return string(out)
}

// Property returns the scalar at a canonical path.
func (e *Event) Property(path string) (Value, bool) {
	p, ok := e.props[path]
	if !ok || p.isArray {
		return Value{}, false
	}
	return p.v, true
}
