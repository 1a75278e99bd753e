package pushrules

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Errors from changing a user's rules.
var (
	ErrNotFound         = errors.New("push rule not found")
	ErrReservedRuleID   = errors.New("rule IDs starting with '.' are reserved for server-default rules")
	ErrBadRuleID        = errors.New("rule IDs may not be empty or contain '/' or '\\'")
	ErrRelativeNotFound = errors.New("before/after rule not found")
	ErrDefaultRule      = errors.New("server-default rules cannot be deleted")
	ErrMissingPattern   = errors.New("content rules need a pattern")
)

// UserRules is what a user has changed: their own rules, each kind in priority
// order, and their changes to server-default rules (enabled, actions). Merged
// with Defaults it gives the user's full Ruleset.
type UserRules struct {
	Override    []*Rule
	Content     []*Rule
	PostContent []*Rule
	Room        []*Rule
	Sender      []*Rule
	Underride   []*Rule
	// Changes to server-default rules, keyed by "kind/rule_id".
	DefaultChanges map[string]DefaultChange
}

// DefaultChange is a user's change to a server-default rule.
type DefaultChange struct {
	Enabled *bool     `json:"enabled,omitempty"`
	Actions *[]Action `json:"actions,omitempty"`
}

type userRulesJSON struct {
	Override       []*Rule                  `json:"override,omitempty"`
	Content        []*Rule                  `json:"content,omitempty"`
	PostContent    []*Rule                  `json:"postcontent,omitempty"`
	Room           []*Rule                  `json:"room,omitempty"`
	Sender         []*Rule                  `json:"sender,omitempty"`
	Underride      []*Rule                  `json:"underride,omitempty"`
	DefaultChanges map[string]DefaultChange `json:"default_changes,omitempty"`
}

// ParseUserRules decodes a stored document; nil or empty input gives no changes.
func ParseUserRules(b []byte) (*UserRules, error) {
	u := &UserRules{}
	if len(b) == 0 {
		return u, nil
	}
	var j userRulesJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("decoding push rules: %w", err)
	}
	u.Override, u.Content, u.PostContent, u.Room, u.Sender, u.Underride = j.Override, j.Content, j.PostContent, j.Room, j.Sender, j.Underride
	u.DefaultChanges = j.DefaultChanges
	for _, k := range Kinds {
		for _, r := range *u.list(k) {
			r.Kind = k
		}
	}
	return u, nil
}

// Marshal encodes the document for storage.
func (u *UserRules) Marshal() ([]byte, error) {
	return json.Marshal(userRulesJSON{u.Override, u.Content, u.PostContent, u.Room, u.Sender, u.Underride, u.DefaultChanges})
}

func (u *UserRules) list(k Kind) *[]*Rule {
	switch k {
	case Override:
		return &u.Override
	case Content:
		return &u.Content
	case PostContent:
		return &u.PostContent
	case Room:
		return &u.Room
	case Sender:
		return &u.Sender
	default:
		return &u.Underride
	}
}

// Ruleset merges the user's rules with the server defaults. Server-default rules
// rank below the user's rules of the same kind, except .m.rule.master, which
// ranks above everything (Client-Server API, "Predefined Rules").
func (u *UserRules) Ruleset(userID, localpart string) *Ruleset {
	d := Defaults(userID, localpart)
	apply := func(rules []*Rule) []*Rule {
		for i, r := range rules {
			ch, ok := u.DefaultChanges[string(r.Kind)+"/"+r.RuleID]
			if !ok {
				continue
			}
			c := *r
			if ch.Enabled != nil {
				c.Enabled = *ch.Enabled
			}
			if ch.Actions != nil {
				c.Actions = *ch.Actions
			}
			rules[i] = &c
		}
		return rules
	}
	dOver := apply(d.Override)
	rs := &Ruleset{
		Override:    make([]*Rule, 0, len(dOver)+len(u.Override)),
		Content:     append(append([]*Rule{}, u.Content...), apply(d.Content)...),
		PostContent: append([]*Rule(nil), u.PostContent...),
		Room:        append([]*Rule{}, u.Room...),
		Sender:      append([]*Rule{}, u.Sender...),
		Underride:   append(append([]*Rule{}, u.Underride...), apply(d.Underride)...),
	}
	rs.Override = append(rs.Override, dOver[0]) // .m.rule.master
	rs.Override = append(rs.Override, u.Override...)
	rs.Override = append(rs.Override, dOver[1:]...)
	return rs
}

// ValidateRuleID checks a rule ID for a user-defined rule.
func ValidateRuleID(id string) error {
	if strings.HasPrefix(id, ".") {
		return ErrReservedRuleID
	}
	if id == "" || strings.ContainsAny(id, "/\\") {
		return ErrBadRuleID
	}
	return nil
}

// Put creates or updates a user-defined rule (Client-Server API, PUT
// /pushrules/global/{kind}/{ruleId}). A new rule is enabled and, without before
// or after, becomes the most important user rule of its kind; an updated rule
// keeps its place and enabled state unless before/after move it. With both
// before and after, before wins.
func (u *UserRules) Put(r *Rule, before, after string) error {
	if err := ValidateRuleID(r.RuleID); err != nil {
		return err
	}
	if r.Kind == Content && r.Pattern == "" {
		return ErrMissingPattern
	}
	r.Default = false
	if !r.Kind.HasConditions() {
		r.Conditions = nil
	}
	if r.Kind != Content {
		r.Pattern = ""
	}
	lst := u.list(r.Kind)
	idx := -1
	for i, x := range *lst {
		if x.RuleID == r.RuleID {
			idx = i
			break
		}
	}
	if idx >= 0 {
		r.Enabled = (*lst)[idx].Enabled
		if before == "" && after == "" {
			(*lst)[idx] = r
			return nil
		}
	} else {
		r.Enabled = true
	}
	rel, relAfter := before, false
	if rel == "" && after != "" {
		rel, relAfter = after, true
	}
	pos := 0
	if rel != "" {
		pos = -1
		for i, x := range *lst {
			if x.RuleID == rel && x.RuleID != r.RuleID {
				pos = i
				break
			}
		}
		if pos < 0 {
			return fmt.Errorf("%w: %s", ErrRelativeNotFound, rel)
		}
	}
	if idx >= 0 {
		*lst = append((*lst)[:idx], (*lst)[idx+1:]...)
		if pos > idx {
			pos--
		}
	}
	if relAfter {
		pos++
	}
	*lst = append(*lst, nil)
	copy((*lst)[pos+1:], (*lst)[pos:])
	(*lst)[pos] = r
	return nil
}

// Delete removes a user-defined rule.
func (u *UserRules) Delete(k Kind, ruleID string) error {
	if strings.HasPrefix(ruleID, ".") {
		return ErrDefaultRule
	}
	lst := u.list(k)
	for i, x := range *lst {
		if x.RuleID == ruleID {
			*lst = append((*lst)[:i], (*lst)[i+1:]...)
			return nil
		}
	}
	return ErrNotFound
}

// SetEnabled enables or disables a user rule or a server-default rule.
func (u *UserRules) SetEnabled(k Kind, ruleID string, enabled bool) error {
	return u.change(k, ruleID, func(r *Rule) { r.Enabled = enabled }, func(c *DefaultChange) { c.Enabled = &enabled })
}

// SetActions replaces the actions of a user rule or a server-default rule.
func (u *UserRules) SetActions(k Kind, ruleID string, actions []Action) error {
	if actions == nil {
		actions = []Action{}
	}
	return u.change(k, ruleID, func(r *Rule) { r.Actions = actions }, func(c *DefaultChange) { c.Actions = &actions })
}

func (u *UserRules) change(k Kind, ruleID string, user func(*Rule), def func(*DefaultChange)) error {
	if strings.HasPrefix(ruleID, ".") {
		if Defaults("", "").Find(k, ruleID) == nil {
			return ErrNotFound
		}
		if u.DefaultChanges == nil {
			u.DefaultChanges = map[string]DefaultChange{}
		}
		key := string(k) + "/" + ruleID
		c := u.DefaultChanges[key]
		def(&c)
		u.DefaultChanges[key] = c
		return nil
	}
	for _, x := range *u.list(k) {
		if x.RuleID == ruleID {
			user(x)
			return nil
		}
	}
	return ErrNotFound
}

// CopyRoomRules gives a room that replaced oldRoom (a room upgrade) the user's
// enabled rules about oldRoom, as Synapse does when a user joins the new room:
// the room rule whose ID is oldRoom, and override, postcontent or underride
// rules with an event_match condition on room_id == oldRoom, their condition
// pointing at newRoom instead. A copy's rule ID is the original's with oldRoom
// replaced by newRoom, or newRoom when the ID does not mention oldRoom. Rules the
// user already has under the new ID are left alone. It reports whether
// anything was copied.
func (u *UserRules) CopyRoomRules(oldRoom, newRoom string) bool {
	if oldRoom == "" || newRoom == "" || oldRoom == newRoom {
		return false
	}
	copied := false
	for _, k := range Kinds {
		lst := u.list(k)
		var add []*Rule
		for _, r := range *lst {
			if !r.Enabled || !aboutRoom(k, r, oldRoom) {
				continue
			}
			newID := strings.ReplaceAll(r.RuleID, oldRoom, newRoom)
			if newID == r.RuleID {
				newID = newRoom
			}
			if hasRule(*lst, newID) || hasRule(add, newID) {
				continue
			}
			c := *r
			c.RuleID = newID
			c.Actions = append([]Action(nil), r.Actions...)
			if len(r.Conditions) > 0 {
				c.Conditions = make([]Condition, len(r.Conditions))
				for i, cond := range r.Conditions {
					if cond.Kind == CondEventMatch && cond.Key == "room_id" && cond.Pattern == oldRoom {
						cond.Pattern = newRoom
					}
					c.Conditions[i] = cond
				}
			}
			add = append(add, &c)
		}
		if len(add) > 0 {
			// New rules rank first, as after a PUT without before/after.
			*lst = append(add, *lst...)
			copied = true
		}
	}
	return copied
}

// aboutRoom reports whether rule r of kind k applies to roomID only.
func aboutRoom(k Kind, r *Rule, roomID string) bool {
	switch k {
	case Room:
		return r.RuleID == roomID
	case Override, PostContent, Underride:
		for _, c := range r.Conditions {
			if c.Kind == CondEventMatch && c.Key == "room_id" && c.Pattern == roomID {
				return true
			}
		}
	}
	return false
}

func hasRule(rules []*Rule, id string) bool {
	for _, r := range rules {
		if r.RuleID == id {
			return true
		}
	}
	return false
}
