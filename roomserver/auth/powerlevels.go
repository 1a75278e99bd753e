package auth

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/exgjson"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// creatorLevel is the power level of v12 room creators: "infinitely high".
// Real levels are at most 2^53-1, so nothing reaches it.
const creatorLevel = math.MaxInt64

// maxSafeInt bounds integers in canonical JSON (and so power levels, v6+).
const maxSafeInt = 1<<53 - 1

// plKey names a top-level level of m.room.power_levels content.
type plKey int

const (
	plUsersDefault plKey = iota
	plEventsDefault
	plStateDefault
	plBan
	plRedact
	plKick
	plInvite
	numPLKeys
)

var (
	plKeyNames = [numPLKeys]string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}
	// plDefaults are the levels that apply when content (or the whole event)
	// lacks them (client-server API, m.room.power_levels).
	plDefaults = [numPLKeys]int64{0, 0, 50, 50, 50, 50, 0}
)

// plFields is what the rules read from m.room.power_levels content, found in
// one pass over it. Absent fields do not Exist; of repeated keys the first
// counts, as with gjson.Get.
type plFields struct {
	top                          [numPLKeys]gjson.Result
	events, notifications, users gjson.Result
}

func splitPowerLevels(content []byte) plFields {
	var f plFields
	gjson.ParseBytes(content).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "events":
			setOnce(&f.events, v)
		case "notifications":
			setOnce(&f.notifications, v)
		case "users":
			setOnce(&f.users, v)
		default:
			if i := slices.Index(plKeyNames[:], k.Str); i >= 0 {
				setOnce(&f.top[i], v)
			}
		}
		return true
	})
	return f
}

func setOnce(dst *gjson.Result, v gjson.Result) {
	if !dst.Exists() {
		*dst = v
	}
}

// powerLevels answers the rules' questions about power: a user's level, the
// invite level, an event type's required level. It reads the raw content of
// the current m.room.power_levels event.
type powerLevels struct {
	rv       id.RoomVersion
	hasEvent bool
	f        plFields
	// creators have creatorLevel in v12. Before v12 creators[0] is the room
	// creator, who has level 100 only while the room has no power levels.
	creators []id.UserID
}

// powerLevels returns the power levels of the auth state, computed once.
func (c *check) powerLevels() *powerLevels {
	if c.plLoaded {
		return &c.pl
	}
	c.plLoaded = true
	c.pl = powerLevels{rv: c.rv}
	if e := c.find(typePowerLevels, ""); e != nil {
		c.pl.hasEvent = true
		c.pl.f = splitPowerLevels(e.Content)
	}
	switch {
	case c.rv.PrivilegedRoomCreators():
		c.pl.creators = append([]id.UserID{c.create.Sender}, additionalCreators(c.create)...)
	case c.rv.CreatorInContent():
		c.pl.creators = []id.UserID{id.UserID(gjson.GetBytes(c.create.Content, "creator").Str)}
	default:
		c.pl.creators = []id.UserID{c.create.Sender}
	}
	return &c.pl
}

func (p *powerLevels) isCreator(user id.UserID) bool {
	return p.rv.PrivilegedRoomCreators() && slices.Contains(p.creators, user)
}

func (p *powerLevels) userLevel(user id.UserID) int64 {
	if p.isCreator(user) {
		return creatorLevel
	}
	if !p.hasEvent {
		if !p.rv.PrivilegedRoomCreators() && user != "" && user == p.creators[0] {
			return 100
		}
		return 0
	}
	if level, ok := parseLevel(p.rv, objectGet(p.f.users, string(user))); ok {
		return level
	}
	return p.level(plUsersDefault)
}

func (p *powerLevels) level(k plKey) int64 {
	if level, ok := parseLevel(p.rv, p.f.top[k]); ok {
		return level
	}
	return plDefaults[k]
}

// eventLevel is the required power level of an event type.
func (p *powerLevels) eventLevel(evtType string, isState bool) int64 {
	if level, ok := parseLevel(p.rv, objectGet(p.f.events, evtType)); ok {
		return level
	}
	if isState {
		return p.level(plStateDefault)
	}
	return p.level(plEventsDefault)
}

// objectGet returns obj[key]. The key is escaped for gjson's path syntax,
// which user IDs and event types (dots, wildcards) would trip; gjson's path
// lookup skips over the values it passes, where ForEach would decode them.
func objectGet(obj gjson.Result, key string) gjson.Result {
	if !obj.IsObject() {
		return gjson.Result{}
	}
	return obj.Get(exgjson.Path(key))
}

// parseLevel reads a power level. From v10 levels must be JSON integers
// (rules 10.1–10.3, 9.1–9.3 in v10–v11). Before, they were read as Python's
// int() reads them, as Synapse does and as eventauth does: booleans, numbers
// (truncated) and strings holding an integer.
func parseLevel(rv id.RoomVersion, v gjson.Result) (int64, bool) {
	if rv.ValidatePowerLevelInts() {
		return strictInt(v)
	}
	switch v.Type {
	case gjson.True:
		return 1, true
	case gjson.False:
		return 0, true
	case gjson.Number:
		return v.Int(), true
	case gjson.String:
		n, err := strconv.ParseInt(strings.TrimSpace(v.Str), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// strictInt accepts a JSON number without fraction or exponent within the
// canonical JSON range. eventauth gap: it accepts any JSON number (50.5,
// 1e3) as an integer in rules 10.1–10.3, and then fails to decode it.
func strictInt(v gjson.Result) (int64, bool) {
	if v.Type != gjson.Number || strings.ContainsAny(v.Raw, ".eE") {
		return 0, false
	}
	n, err := strconv.ParseInt(v.Raw, 10, 64)
	if err != nil || n > maxSafeInt || n < -maxSafeInt {
		return 0, false
	}
	return n, true
}

// authorizePowerLevels applies rules 6, 8, 9 and 10 (5, 7, 8 and 9 in
// v6–v11) to m.room.power_levels events. eventauth gap: its rule 10 checks
// notifications in v1–v5, where the rule does not cover them; accepts
// non-integer numbers in v10+; dereferences nil, and panics, when an entry
// of users whose level equals the sender's is removed; and looks up each key
// of the old maps in the new ones by a linear scan, which is quadratic in
// the size of users. Rules 6, 8 and 9 are applied here too because eventauth
// cannot be stopped before its rule 10.
func (c *check) authorizePowerLevels() error {
	evt := c.evt
	if m := c.membership(evt.Sender.String()); m != event.MembershipJoin {
		return c.fail(ruleSenderNotJoined, fmt.Errorf("sender is %s", m))
	}
	pl := c.powerLevels()
	senderLevel := pl.userLevel(evt.Sender)
	if required := pl.eventLevel(evt.Type, evt.StateKey != nil); required > senderLevel {
		return c.fail(ruleInsufficientPower, fmt.Errorf("%d > %d", required, senderLevel))
	}
	if err := c.checkStateKey(senderLevel); err != nil {
		return err
	}
	next := splitPowerLevels(evt.Content)
	if err := c.validatePowerLevels(next); err != nil {
		return err
	}
	if !pl.hasEvent {
		return nil
	}
	return c.checkPowerLevelChanges(pl.f, next, senderLevel)
}

// validatePowerLevels applies rules 10.1–10.4 (v12), 9.1–9.3 (v10–v11) and
// 10.1/9.1 (v1–v9).
func (c *check) validatePowerLevels(f plFields) error {
	if c.rv.ValidatePowerLevelInts() {
		for i, v := range f.top {
			if _, ok := strictInt(v); v.Exists() && !ok {
				return c.fail(rulePLTopLevelNotInt, fmt.Errorf("%s is %s", plKeyNames[i], v.Raw))
			}
		}
		for _, m := range []struct {
			name string
			v    gjson.Result
		}{{"events", f.events}, {"notifications", f.notifications}} {
			if !m.v.Exists() {
				continue
			}
			if !m.v.IsObject() {
				return c.fail(rulePLMapNotInt, fmt.Errorf("%s is %s", m.name, m.v.Raw))
			}
			var err error
			m.v.ForEach(func(k, v gjson.Result) bool {
				if _, ok := strictInt(v); !ok {
					err = c.fail(rulePLMapNotInt, fmt.Errorf("%s[%q] is %s", m.name, k.Str, v.Raw))
				}
				return err == nil
			})
			if err != nil {
				return err
			}
		}
	}
	if !f.users.Exists() {
		return nil
	}
	if !f.users.IsObject() {
		return c.fail(rulePLUsersInvalid, fmt.Errorf("users is %s", f.users.Raw))
	}
	var err error
	f.users.ForEach(func(k, v gjson.Result) bool {
		if _, _, perr := id.UserID(k.Str).Parse(); perr != nil {
			err = c.fail(rulePLUsersInvalid, perr)
		} else if _, ok := parseLevel(c.rv, v); !ok {
			err = c.fail(rulePLUsersInvalid, fmt.Errorf("users[%q] is %s", k.Str, v.Raw))
		}
		return err == nil
	})
	if err != nil || !c.rv.PrivilegedRoomCreators() {
		return err
	}
	pl := c.powerLevels()
	f.users.ForEach(func(k, _ gjson.Result) bool {
		if pl.isCreator(id.UserID(k.Str)) {
			err = c.fail(rulePLCreatorListed, fmt.Errorf("%s", k.Str))
		}
		return err == nil
	})
	return err
}

// checkPowerLevelChanges applies the rules comparing the new power levels
// with the current ones: 10.6–10.10 in v12, 9.5–9.9 in v10–v11, 10.3–10.7
// in v1–v5 and 9.3–9.7 in v6–v9. A room creator's level (v12) exceeds every
// value, so creators pass them all.
func (c *check) checkPowerLevelChanges(cur, next plFields, senderLevel int64) error {
	for i, name := range plKeyNames {
		was, hadIt := parseLevel(c.rv, cur.top[i])
		now, hasIt := parseLevel(c.rv, next.top[i])
		if hadIt == hasIt && was == now {
			continue
		}
		if hadIt && was > senderLevel {
			return c.fail(rulePLTopLevelCurrentTooHigh, fmt.Errorf("%s is %d, sender has %d", name, was, senderLevel))
		}
		if hasIt && now > senderLevel {
			return c.fail(rulePLTopLevelNewTooHigh, fmt.Errorf("%s to %d, sender has %d", name, now, senderLevel))
		}
	}
	type levelMap struct {
		name      string
		cur, next gjson.Result
	}
	maps := []levelMap{{"events", cur.events, next.events}}
	// Before v6 the rules cover events only (room version 6, "Authorization
	// rules": notifications was added to what were rules 10.4 and 10.5).
	if c.rv.NotificationsPowerLevels() {
		maps = append(maps, levelMap{"notifications", cur.notifications, next.notifications})
	}
	for _, m := range maps {
		if err := c.eachChanged(m.cur, m.next, func(key string, was int64) error {
			if was > senderLevel {
				return c.fail(rulePLMapCurrentTooHigh, fmt.Errorf("%s[%q] is %d, sender has %d", m.name, key, was, senderLevel))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	for _, m := range maps {
		if err := c.eachChanged(m.next, m.cur, func(key string, now int64) error {
			if now > senderLevel {
				return c.fail(rulePLMapNewTooHigh, fmt.Errorf("%s[%q] to %d, sender has %d", m.name, key, now, senderLevel))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	sender := c.evt.Sender.String()
	if err := c.eachChanged(cur.users, next.users, func(user string, was int64) error {
		if user != sender && was >= senderLevel {
			return c.fail(rulePLUsersCurrentTooHigh, fmt.Errorf("%s is %d, sender has %d", user, was, senderLevel))
		}
		return nil
	}); err != nil {
		return err
	}
	return c.eachChanged(next.users, cur.users, func(user string, now int64) error {
		if now > senderLevel {
			return c.fail(rulePLUsersNewTooHigh, fmt.Errorf("%s to %d, sender has %d", user, now, senderLevel))
		}
		return nil
	})
}

// eachChanged calls fn, in document order, for each entry of the object from
// whose level is missing from, or different in, the object to. Entries whose
// value is not a level count as absent. It stops at fn's first error. It is
// linear: to is indexed in a map first.
func (c *check) eachChanged(from, to gjson.Result, fn func(key string, level int64) error) error {
	if !from.IsObject() || from.Raw == to.Raw {
		return nil
	}
	var toLevels map[string]int64
	if to.IsObject() {
		toLevels = make(map[string]int64)
		to.ForEach(func(k, v gjson.Result) bool {
			if level, ok := parseLevel(c.rv, v); ok {
				if _, dup := toLevels[k.Str]; !dup {
					toLevels[k.Str] = level
				}
			}
			return true
		})
	}
	var err error
	from.ForEach(func(k, v gjson.Result) bool {
		level, ok := parseLevel(c.rv, v)
		if !ok {
			return true
		}
		if other, found := toLevels[k.Str]; found && other == level {
			return true
		}
		err = fn(k.Str, level)
		return err == nil
	})
	return err
}
