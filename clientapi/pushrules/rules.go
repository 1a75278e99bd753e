// Package pushrules implements the Matrix push rules of the Client-Server API
// ("Push Notifications", "Push Rules"): the rule model and its JSON form, the
// spec's default rule set, a user's changes to it, and an evaluator that decides,
// per event and recipient, whether and how to notify.
//
// mautrix-go's pushrules package is not used: it has no default rule set,
// compiles globs on every evaluation, matches event_match against non-string
// values and by substring, and casts numbers in event_property_is — all contrary
// to the spec (Client-Server API, "Conditions").
package pushrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Kind is a push rule kind, listed in the order rules are checked.
type Kind string

// The rule kinds (Client-Server API, "Push Rules"), and MSC4306's postcontent
// kind: rules with conditions, like override rules, checked after the content
// rules and before the room rules.
const (
	Override    Kind = "override"
	Content     Kind = "content"
	PostContent Kind = "postcontent"
	Room        Kind = "room"
	Sender      Kind = "sender"
	Underride   Kind = "underride"
)

// Kinds are all kinds in priority order.
var Kinds = [...]Kind{Override, Content, PostContent, Room, Sender, Underride}

// HasConditions reports whether rules of kind k carry conditions.
func (k Kind) HasConditions() bool { return k == Override || k == PostContent || k == Underride }

// ParseKind returns the kind named s.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// Condition kinds (Client-Server API, "Conditions").
const (
	CondEventMatch                   = "event_match"
	CondEventPropertyIs              = "event_property_is"
	CondEventPropertyContains        = "event_property_contains"
	CondContainsDisplayName          = "contains_display_name"
	CondRoomMemberCount              = "room_member_count"
	CondSenderNotificationPermission = "sender_notification_permission"
)

// ValueType is the JSON type of a Value.
type ValueType uint8

// Value types: the non-compound canonical JSON values event_property_is and
// event_property_contains compare.
const (
	NoValue ValueType = iota
	StringValue
	IntValue
	BoolValue
	NullValue
)

// Value is a non-compound canonical JSON value: a string, an integer in
// [-(2^53)+1, (2^53)-1], a boolean or null.
type Value struct {
	Type ValueType
	Str  string
	Int  int64
	Bool bool
}

// maxSafeInt is canonical JSON's integer bound (Appendices, "Canonical JSON").
const maxSafeInt = 1<<53 - 1

// parseValue decodes a scalar JSON value. ok is false for objects, arrays,
// non-integers and integers outside the canonical range.
func parseValue(raw []byte) (Value, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return Value{}, false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return Value{}, false
		}
		return Value{Type: StringValue, Str: s}, true
	case 't', 'f':
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return Value{}, false
		}
		return Value{Type: BoolValue, Bool: b}, true
	case 'n':
		if string(raw) != "null" {
			return Value{}, false
		}
		return Value{Type: NullValue}, true
	default:
		n, ok := parseCanonicalInt(raw)
		return Value{Type: IntValue, Int: n}, ok
	}
}

// parseCanonicalInt parses a JSON number that is an integer within the
// canonical JSON range.
func parseCanonicalInt(raw []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n > maxSafeInt || n < -maxSafeInt {
		return 0, false
	}
	return n, true
}

// MarshalJSON writes the value.
func (v Value) MarshalJSON() ([]byte, error) {
	switch v.Type {
	case StringValue:
		return json.Marshal(v.Str)
	case IntValue:
		return strconv.AppendInt(nil, v.Int, 10), nil
	case BoolValue:
		return strconv.AppendBool(nil, v.Bool), nil
	default:
		return []byte("null"), nil
	}
}

// Equal reports exact equality: same type and same value, no casting.
func (v Value) Equal(o Value) bool {
	if v.Type != o.Type {
		return false
	}
	switch v.Type {
	case StringValue:
		return v.Str == o.Str
	case IntValue:
		return v.Int == o.Int
	case BoolValue:
		return v.Bool == o.Bool
	}
	return true
}

// Condition is one push condition. Conditions of unknown kinds are kept as they
// were given and never match.
type Condition struct {
	Kind    string
	Key     string
	Pattern string
	// Is is room_member_count's comparison, e.g. "2" or ">=10".
	Is    string
	Value Value

	hasKey, hasPattern, hasIs bool
	// raw is the condition as the client sent it, for unknown kinds.
	raw json.RawMessage
}

// EventMatch builds an event_match condition.
func EventMatch(key, pattern string) Condition {
	return Condition{Kind: CondEventMatch, Key: key, Pattern: pattern, hasKey: true, hasPattern: true}
}

// PropertyIs builds an event_property_is condition.
func PropertyIs(key string, v Value) Condition {
	return Condition{Kind: CondEventPropertyIs, Key: key, Value: v, hasKey: true}
}

// PropertyContains builds an event_property_contains condition.
func PropertyContains(key string, v Value) Condition {
	return Condition{Kind: CondEventPropertyContains, Key: key, Value: v, hasKey: true}
}

// MemberCount builds a room_member_count condition.
func MemberCount(is string) Condition {
	return Condition{Kind: CondRoomMemberCount, Is: is, hasIs: true}
}

// SenderPermission builds a sender_notification_permission condition.
func SenderPermission(key string) Condition {
	return Condition{Kind: CondSenderNotificationPermission, Key: key, hasKey: true}
}

// ContainsDisplayName builds a contains_display_name condition.
func ContainsDisplayName() Condition { return Condition{Kind: CondContainsDisplayName} }

// Known reports whether the condition's kind is one the spec defines.
func (c *Condition) Known() bool {
	switch c.Kind {
	case CondEventMatch, CondEventPropertyIs, CondEventPropertyContains, CondContainsDisplayName,
		CondRoomMemberCount, CondSenderNotificationPermission:
		return true
	}
	return false
}

// UnmarshalJSON decodes a condition, checking the parameters of known kinds.
func (c *Condition) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return errors.New("a condition must be a JSON object")
	}
	*c = Condition{}
	str := func(name string, dst *string, has *bool) error {
		raw, ok := m[name]
		if !ok {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("condition field %q must be a string", name)
		}
		*has = true
		return nil
	}
	var hasKind bool
	if err := str("kind", &c.Kind, &hasKind); err != nil {
		return err
	}
	if !hasKind {
		return errors.New("a condition needs a kind")
	}
	if !c.Known() {
		c.raw = append(json.RawMessage(nil), b...)
		return nil
	}
	if err := str("key", &c.Key, &c.hasKey); err != nil {
		return err
	}
	if err := str("pattern", &c.Pattern, &c.hasPattern); err != nil {
		return err
	}
	if err := str("is", &c.Is, &c.hasIs); err != nil {
		return err
	}
	switch c.Kind {
	case CondEventMatch:
		if !c.hasKey || !c.hasPattern {
			return errors.New("event_match needs key and pattern")
		}
	case CondEventPropertyIs, CondEventPropertyContains:
		raw, ok := m["value"]
		if !c.hasKey || !ok {
			return fmt.Errorf("%s needs key and value", c.Kind)
		}
		v, ok := parseValue(raw)
		if !ok {
			return fmt.Errorf("%s value must be a string, an integer, a boolean or null", c.Kind)
		}
		c.Value = v
	case CondRoomMemberCount:
		if !c.hasIs {
			return errors.New("room_member_count needs is")
		}
		if _, _, ok := parseMemberCount(c.Is); !ok {
			return fmt.Errorf("room_member_count: bad is %q (expected a number optionally prefixed by ==, <, >, >= or <=)", c.Is)
		}
	case CondSenderNotificationPermission:
		if !c.hasKey {
			return errors.New("sender_notification_permission needs key")
		}
	}
	return nil
}

// MarshalJSON writes the condition in the spec's shape.
func (c Condition) MarshalJSON() ([]byte, error) {
	if c.raw != nil {
		return c.raw, nil
	}
	var b bytes.Buffer
	b.WriteString(`{"kind":`)
	writeJSONString(&b, c.Kind)
	if c.hasKey {
		b.WriteString(`,"key":`)
		writeJSONString(&b, c.Key)
	}
	if c.hasPattern {
		b.WriteString(`,"pattern":`)
		writeJSONString(&b, c.Pattern)
	}
	if c.hasIs {
		b.WriteString(`,"is":`)
		writeJSONString(&b, c.Is)
	}
	if c.Kind == CondEventPropertyIs || c.Kind == CondEventPropertyContains {
		b.WriteString(`,"value":`)
		vb, _ := c.Value.MarshalJSON()
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

// memberCountOp is a room_member_count comparison.
type memberCountOp uint8

const (
	opEq memberCountOp = iota
	opLt
	opGt
	opLe
	opGe
)

// parseMemberCount parses room_member_count's "is": a decimal integer optionally
// prefixed by ==, <, >, >= or <= ("==" when absent).
func parseMemberCount(is string) (memberCountOp, int, bool) {
	op := opEq
	switch {
	case strings.HasPrefix(is, "=="):
		is = is[2:]
	case strings.HasPrefix(is, ">="):
		op, is = opGe, is[2:]
	case strings.HasPrefix(is, "<="):
		op, is = opLe, is[2:]
	case strings.HasPrefix(is, ">"):
		op, is = opGt, is[1:]
	case strings.HasPrefix(is, "<"):
		op, is = opLt, is[1:]
	}
	if is == "" || len(is) > 10 {
		return 0, 0, false
	}
	for i := 0; i < len(is); i++ {
		if is[i] < '0' || is[i] > '9' {
			return 0, 0, false
		}
	}
	n, err := strconv.Atoi(is)
	if err != nil || n > math.MaxInt32 {
		return 0, 0, false
	}
	return op, n, true
}

// Rule is one push rule.
type Rule struct {
	RuleID  string
	Default bool
	Enabled bool
	// Conditions apply to override, postcontent and underride rules.
	Conditions []Condition
	// Pattern applies to content rules.
	Pattern string
	Actions []Action
	// Kind is the kind of the rule (not part of its JSON form).
	Kind Kind
}

// ruleJSON is the wire form of a rule.
type ruleJSON struct {
	RuleID     string      `json:"rule_id"`
	Default    bool        `json:"default"`
	Enabled    bool        `json:"enabled"`
	Conditions []Condition `json:"conditions,omitempty"`
	Pattern    *string     `json:"pattern,omitempty"`
	Actions    []Action    `json:"actions"`
}

// MarshalJSON writes the rule with the keys of its kind: conditions for
// override/postcontent/underride (even when empty), pattern for content rules.
func (r *Rule) MarshalJSON() ([]byte, error) {
	j := ruleJSON{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Actions: r.Actions}
	if j.Actions == nil {
		j.Actions = []Action{}
	}
	switch r.Kind {
	case Override, PostContent, Underride:
		conds := r.Conditions
		if conds == nil {
			conds = []Condition{}
		}
		// Written by hand: omitempty would drop an empty conditions list.
		type withConds struct {
			RuleID     string      `json:"rule_id"`
			Default    bool        `json:"default"`
			Enabled    bool        `json:"enabled"`
			Conditions []Condition `json:"conditions"`
			Actions    []Action    `json:"actions"`
		}
		return json.Marshal(withConds{r.RuleID, r.Default, r.Enabled, conds, j.Actions})
	case Content:
		p := r.Pattern
		j.Pattern = &p
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads a rule in its wire form (kind is set by the container).
func (r *Rule) UnmarshalJSON(b []byte) error {
	var j ruleJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Rule{RuleID: j.RuleID, Default: j.Default, Enabled: j.Enabled, Conditions: j.Conditions, Actions: j.Actions}
	if j.Pattern != nil {
		r.Pattern = *j.Pattern
	}
	return nil
}

// Action is one push rule action, kept in its JSON form.
type Action struct {
	raw json.RawMessage
	// notify, or a tweak name for set_tweak actions.
	notify bool
	tweak  string
	value  json.RawMessage
}

// Notify is the "notify" action.
var Notify = Action{raw: json.RawMessage(`"notify"`), notify: true}

// SetTweak is a set_tweak action with a value; value may be nil (no value key).
func SetTweak(name string, value any) Action {
	a := Action{tweak: name}
	m := map[string]any{"set_tweak": name}
	if value != nil {
		m["value"] = value
		a.value, _ = json.Marshal(value)
	}
	a.raw, _ = json.Marshal(m)
	return a
}

// MarshalJSON writes the action as it was given.
func (a Action) MarshalJSON() ([]byte, error) { return a.raw, nil }

// UnmarshalJSON accepts "notify", {"set_tweak": name, "value"?: …}, and the
// historical "dont_notify" and "coalesce". Those two are kept as given (clients
// read back what they wrote, as from Synapse) but do nothing: "Clients and
// homeservers MUST ignore these actions" (Client-Server API, "Historical
// Actions"), so ["dont_notify"] acts as [].
func (a *Action) UnmarshalJSON(b []byte) error {
	*a = Action{raw: append(json.RawMessage(nil), b...)}
	var s string
	if json.Unmarshal(b, &s) == nil {
		switch s {
		case "notify":
			a.notify = true
			return nil
		case "dont_notify", "coalesce":
			return nil
		}
		return fmt.Errorf("unknown action %q", s)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return errors.New("an action must be a string or an object")
	}
	tw, ok := m["set_tweak"]
	if !ok || json.Unmarshal(tw, &a.tweak) != nil {
		return errors.New("an action object needs a set_tweak string")
	}
	a.value = m["value"]
	return nil
}

// Tweak returns the name and raw value of a set_tweak action ("" for other
// actions; value nil when the action gives none).
func (a Action) Tweak() (name string, value json.RawMessage) { return a.tweak, a.value }

// ParseActions decodes a JSON array of actions.
func ParseActions(b []byte) ([]Action, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return nil, errors.New("actions must be an array")
	}
	out := make([]Action, 0, len(raws))
	for _, r := range raws {
		var a Action
		if err := a.UnmarshalJSON(r); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Ruleset is a user's full rule set, each kind in priority order.
type Ruleset struct {
	Override    []*Rule `json:"override"`
	Content     []*Rule `json:"content"`
	PostContent []*Rule `json:"postcontent,omitempty"`
	Room        []*Rule `json:"room"`
	Sender      []*Rule `json:"sender"`
	Underride   []*Rule `json:"underride"`
}

// Rules returns the rules of one kind.
func (rs *Ruleset) Rules(k Kind) []*Rule {
	switch k {
	case Override:
		return rs.Override
	case Content:
		return rs.Content
	case PostContent:
		return rs.PostContent
	case Room:
		return rs.Room
	case Sender:
		return rs.Sender
	case Underride:
		return rs.Underride
	}
	return nil
}

// Find returns the rule of kind k with the given ID, or nil.
func (rs *Ruleset) Find(k Kind, ruleID string) *Rule {
	for _, r := range rs.Rules(k) {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

// MarshalJSON writes every spec kind, empty kinds as []; postcontent (an
// MSC4306 addition clients may not expect) only when it has rules.
func (rs *Ruleset) MarshalJSON() ([]byte, error) {
	nz := func(r []*Rule) []*Rule {
		if r == nil {
			return []*Rule{}
		}
		return r
	}
	type plain struct {
		Override    []*Rule `json:"override"`
		Content     []*Rule `json:"content"`
		PostContent []*Rule `json:"postcontent,omitempty"`
		Room        []*Rule `json:"room"`
		Sender      []*Rule `json:"sender"`
		Underride   []*Rule `json:"underride"`
	}
	return json.Marshal(plain{nz(rs.Override), nz(rs.Content), rs.PostContent, nz(rs.Room), nz(rs.Sender), nz(rs.Underride)})
}
