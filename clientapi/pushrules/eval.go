package pushrules

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
)

// RoomContext is the room state conditions look at, shared by every recipient of
// an event.
type RoomContext struct {
	// MemberCount is the number of joined members.
	MemberCount int
	// SenderPowerLevel is the event sender's power level in the room.
	SenderPowerLevel int64
	// NotificationPowerLevels is the power levels event's "notifications"
	// object. A key it lacks requires 50 ("room" defaults to 50 in
	// m.room.power_levels; Synapse uses 50 for any missing key).
	NotificationPowerLevels map[string]int64
}

// Result is the outcome of evaluating an event for one recipient: the rule that
// matched and what its actions ask for.
type Result struct {
	RuleID string
	Kind   Kind
	// Notify: the event generates a notification.
	Notify bool
	// Highlight: the highlight tweak is set (true when given without a value).
	Highlight bool
	// Sound is the sound tweak's value, "" if none.
	Sound string
	// Actions are the rule's actions, for push gateways.
	Actions []Action
}

// Evaluator decides, for one user, which rule an event matches. It is built
// once from the user's rule set (globs compiled, paths canonicalised) and is
// safe for concurrent use; Evaluate does not allocate.
type Evaluator struct {
	userID string
	// ordered holds override, content, underride rules in priority order, with
	// room and sender rules spliced in between content and underride via maps.
	override, content, postcontent, underride []compiledRule
	room, sender                              map[string]*compiledRule
}

type compiledRule struct {
	result        Result
	conds         []compiledCond
	legacyMention bool
	// never: the rule has a condition of an unknown kind.
	never bool
	// body matches content rules' pattern against content.body.
	body *glob
}

type compiledCond struct {
	kind     string
	path     string
	glob     *glob
	value    Value
	op       memberCountOp
	count    int
	notifKey string
}

// NewEvaluator compiles a user's rule set.
func NewEvaluator(userID string, rs *Ruleset) *Evaluator {
	ev := &Evaluator{userID: userID, room: map[string]*compiledRule{}, sender: map[string]*compiledRule{}}
	for _, k := range Kinds {
		for _, r := range rs.Rules(k) {
			if !r.Enabled {
				continue
			}
			cr := compileRule(k, r)
			switch k {
			case Override:
				ev.override = append(ev.override, cr)
			case Content:
				ev.content = append(ev.content, cr)
			case PostContent:
				ev.postcontent = append(ev.postcontent, cr)
			case Underride:
				ev.underride = append(ev.underride, cr)
			case Room:
				if _, dup := ev.room[r.RuleID]; !dup {
					c := cr
					ev.room[r.RuleID] = &c
				}
			case Sender:
				if _, dup := ev.sender[r.RuleID]; !dup {
					c := cr
					ev.sender[r.RuleID] = &c
				}
			}
		}
	}
	return ev
}

func compileRule(k Kind, r *Rule) compiledRule {
	cr := compiledRule{
		result:        Result{RuleID: r.RuleID, Kind: k, Actions: r.Actions},
		legacyMention: r.Default && isLegacyMentionRule(r.RuleID),
	}
	for _, a := range r.Actions {
		switch {
		case a.notify:
			cr.result.Notify = true
		case a.tweak == "highlight":
			cr.result.Highlight = a.value == nil || bytes.Equal(bytes.TrimSpace(a.value), []byte("true"))
		case a.tweak == "sound":
			_ = json.Unmarshal(a.value, &cr.result.Sound)
		}
	}
	switch k {
	case Content:
		cr.body = compileGlob(r.Pattern, true)
	case Override, PostContent, Underride:
		for i := range r.Conditions {
			c := &r.Conditions[i]
			cc := compiledCond{kind: c.Kind}
			switch c.Kind {
			case CondEventMatch:
				cc.path = CanonicalPath(c.Key)
				cc.glob = compileGlob(c.Pattern, cc.path == "content.body")
			case CondEventPropertyIs, CondEventPropertyContains:
				cc.path = CanonicalPath(c.Key)
				cc.value = c.Value
			case CondRoomMemberCount:
				var ok bool
				if cc.op, cc.count, ok = parseMemberCount(c.Is); !ok {
					cr.never = true
				}
			case CondSenderNotificationPermission:
				cc.notifKey = c.Key
			case CondContainsDisplayName:
			default:
				// "Unrecognised conditions MUST NOT match any events,
				// effectively making the push rule disabled."
				cr.never = true
			}
			cr.conds = append(cr.conds, cc)
		}
	}
	return cr
}

// Evaluate returns the first enabled rule that matches the event for this user,
// or nil when none does (then the user must not be notified). displayName is the
// user's display name in the event's room. Events the user sent never match
// ("Homeservers MUST NOT notify the Push Gateway for events that the user has
// sent themselves").
func (ev *Evaluator) Evaluate(e *Event, room *RoomContext, displayName string) *Result {
	if e.Sender == ev.userID {
		return nil
	}
	for i := range ev.override {
		if ev.override[i].match(e, room, displayName) {
			return &ev.override[i].result
		}
	}
	for i := range ev.content {
		if ev.content[i].match(e, room, displayName) {
			return &ev.content[i].result
		}
	}
	for i := range ev.postcontent {
		if ev.postcontent[i].match(e, room, displayName) {
			return &ev.postcontent[i].result
		}
	}
	if r, ok := ev.room[e.RoomID]; ok {
		return &r.result
	}
	if r, ok := ev.sender[e.Sender]; ok {
		return &r.result
	}
	for i := range ev.underride {
		if ev.underride[i].match(e, room, displayName) {
			return &ev.underride[i].result
		}
	}
	return nil
}

func (cr *compiledRule) match(e *Event, room *RoomContext, displayName string) bool {
	if cr.never || (cr.legacyMention && e.hasMentions) {
		return false
	}
	if cr.body != nil {
		return e.hasBody && cr.body.matchBody(e.lowerBody)
	}
	for i := range cr.conds {
		if !cr.conds[i].match(e, room, displayName) {
			return false
		}
	}
	return true
}

func (c *compiledCond) match(e *Event, room *RoomContext, displayName string) bool {
	switch c.kind {
	case CondEventMatch:
		p, ok := e.props[c.path]
		// "If the property … does not have a string value, then the condition
		// will not match, even if pattern is *."
		if !ok || p.isArray || p.v.Type != StringValue {
			return false
		}
		if c.glob.wordBoundary {
			return c.glob.matchBody(e.lowerBody)
		}
		return c.glob.matchWhole(p.v.Str)
	case CondEventPropertyIs:
		p, ok := e.props[c.path]
		return ok && !p.isArray && p.v.Equal(c.value)
	case CondEventPropertyContains:
		p, ok := e.props[c.path]
		if !ok || !p.isArray {
			return false
		}
		for _, v := range p.arr {
			if v.Equal(c.value) {
				return true
			}
		}
		return false
	case CondContainsDisplayName:
		if displayName == "" || !e.hasBody {
			return false
		}
		return containsWord(e.lowerBody, displayName)
	case CondRoomMemberCount:
		if room == nil {
			return false
		}
		n := room.MemberCount
		switch c.op {
		case opLt:
			return n < c.count
		case opGt:
			return n > c.count
		case opLe:
			return n <= c.count
		case opGe:
			return n >= c.count
		default:
			return n == c.count
		}
	case CondSenderNotificationPermission:
		if room == nil {
			return false
		}
		need, ok := room.NotificationPowerLevels[c.notifKey]
		if !ok {
			need = 50
		}
		return room.SenderPowerLevel >= need
	}
	return false
}

// glob is a compiled glob-style pattern (Appendices, "Glob-style matching": '*'
// matches zero or more characters, '?' exactly one), matched case-insensitively.
type glob struct {
	// literal is the lower-cased pattern when it has no wildcards.
	literal   string
	isLiteral bool
	matchAll  bool
	re        *regexp.Regexp
	// wordBoundary: match a substring of content.body that starts and ends at a
	// word boundary, instead of the whole value.
	wordBoundary bool
}

// wordClass is the spec's set of non-boundary characters.
const wordClass = `a-z0-9_`

func compileGlob(pattern string, wordBoundary bool) *glob {
	g := &glob{wordBoundary: wordBoundary}
	if !strings.ContainsAny(pattern, "*?") {
		g.isLiteral, g.literal = true, strings.ToLower(pattern)
		return g
	}
	if !wordBoundary && strings.Trim(pattern, "*") == "" {
		g.matchAll = true
		return g
	}
	var b strings.Builder
	b.WriteString(`(?is)`)
	if wordBoundary {
		b.WriteString(`(?:^|[^` + wordClass + `])`)
	} else {
		b.WriteString(`^`)
	}
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(`.*?`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if wordBoundary {
		b.WriteString(`(?:[^` + wordClass + `]|$)`)
	} else {
		b.WriteString(`$`)
	}
	// The expression is built from quoted parts, so it always compiles.
	g.re = regexp.MustCompile(b.String())
	return g
}

// matchWhole matches the entire value.
func (g *glob) matchWhole(s string) bool {
	switch {
	case g.matchAll:
		return true
	case g.isLiteral:
		return strings.EqualFold(s, g.literal)
	default:
		return g.re.MatchString(s)
	}
}

// matchBody matches a word-bounded substring of the lower-cased body.
func (g *glob) matchBody(lowerBody string) bool {
	if g.isLiteral {
		return containsWord(lowerBody, g.literal)
	}
	return g.re.MatchString(lowerBody)
}

// containsWord reports whether word occurs in lowerText (already lower-cased)
// case-insensitively, starting and ending at word boundaries: the start or end of
// the text, or a character outside [A-Za-z0-9_].
func containsWord(lowerText, word string) bool {
	if word == "" {
		return false
	}
	if hasUpper(word) {
		word = strings.ToLower(word)
	}
	for off := 0; ; {
		i := strings.Index(lowerText[off:], word)
		if i < 0 {
			return false
		}
		start, end := off+i, off+i+len(word)
		if (start == 0 || !isWordByte(lowerText[start-1])) && (end == len(lowerText) || !isWordByte(lowerText[end])) {
			return true
		}
		off = start + 1
	}
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 0x80 {
			return true
		}
	}
	return false
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}
