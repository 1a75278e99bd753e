package stateres

import (
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// creatorPowerLevel stands for the infinite power level of room creators in
// room versions with privileged creators (room version 12, "Authorisation
// rules", note on room creators).
const creatorPowerLevel = math.MaxInt64

// powerLevels is the part of an m.room.power_levels event that the ordering
// rules need, parsed once per event.
type powerLevels struct {
	users        map[string]int64
	usersDefault int64
}

// level returns the power level of user.
func (pl *powerLevels) level(user id.UserID) int64 {
	if l, ok := pl.users[string(user)]; ok {
		return l
	}
	return pl.usersDefault
}

// parsePowerLevels reads users and users_default from a power levels event.
// Values are read leniently, as old room versions allow strings and floats
// (room version 1, "m.room.power_levels events accept values as strings" and
// "... as floats"); unreadable values count as absent.
func parsePowerLevels(content []byte) *powerLevels {
	pl := &powerLevels{}
	if v, ok := parseLevel(gjson.GetBytes(content, "users_default")); ok {
		pl.usersDefault = v
	}
	users := gjson.GetBytes(content, "users")
	if users.IsObject() {
		pl.users = make(map[string]int64)
		users.ForEach(func(key, value gjson.Result) bool {
			if v, ok := parseLevel(value); ok {
				pl.users[key.Str] = v
			}
			return true
		})
	}
	return pl
}

// parseLevel reads a power level the way the reference implementation's
// int() does: integers, truncated floats, booleans and integer strings with
// surrounding whitespace and an optional sign.
func parseLevel(v gjson.Result) (int64, bool) {
	switch v.Type {
	case gjson.Number:
		if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
			return 0, false
		}
		return v.Int(), true
	case gjson.True:
		return 1, true
	case gjson.False:
		return 0, true
	case gjson.String:
		n, err := strconv.ParseInt(strings.TrimSpace(v.Str), 10, 64)
		if err != nil {
			return 0, false
		}
		return n, true
	default:
		return 0, false
	}
}

// powerLevelsOf returns the parsed content of a power levels event.
func (r *resolver) powerLevelsOf(ix int32) *powerLevels {
	pl, ok := r.powerLevels[ix]
	if !ok {
		pl = parsePowerLevels(r.nodes[ix].evt.Content)
		r.powerLevels[ix] = pl
	}
	return pl
}

// loadCreators reads the room creators from the create event in room
// versions with privileged creators: its sender plus any additional_creators
// (room version 12, "Authorisation rules").
func (r *resolver) loadCreators() {
	if !r.rv.PrivilegedRoomCreators() || r.createIx < 0 {
		return
	}
	create := r.nodes[r.createIx].evt
	r.creators = append(r.creators[:0], create.Sender)
	gjson.GetBytes(create.Content, "additional_creators").ForEach(func(_, v gjson.Result) bool {
		if v.Type == gjson.String {
			r.creators = append(r.creators, id.UserID(v.Str))
		}
		return true
	})
}

func (r *resolver) isCreator(user id.UserID) bool {
	for _, c := range r.creators {
		if c == user {
			return true
		}
	}
	return false
}

// senderPower returns the power level of the sender of an event according to
// its own auth events, as used by the reverse topological power ordering.
// Without a power levels auth event the room creator has 100 and everyone
// else 0; room creators in room version 12 have infinite power.
func (r *resolver) senderPower(ix int32) int64 {
	n := &r.nodes[ix]
	sender := n.evt.Sender
	if r.rv.PrivilegedRoomCreators() && r.isCreator(sender) {
		return creatorPowerLevel
	}
	pl, create := int32(-1), int32(-1)
	for _, a := range n.auth {
		ae := r.nodes[a].evt
		switch {
		case isKey(ae, keyPowerLevels):
			pl = a
		case isKey(ae, keyCreate):
			create = a
		}
	}
	if pl < 0 {
		if create >= 0 && creatorOf(r.rv, r.nodes[create].evt) == sender {
			return 100
		}
		return 0
	}
	return r.powerLevelsOf(pl).level(sender)
}

// creatorOf returns the room creator named by a create event: its content's
// creator field before room version 11, its sender from then on.
func creatorOf(rv id.RoomVersion, create *pdu.PDU) id.UserID {
	if rv.CreatorInContent() {
		return id.UserID(gjson.GetBytes(create.Content, "creator").Str)
	}
	return create.Sender
}

// isPowerEvent reports whether evt is a power event (room version 2, "State
// resolution", "Power events"): power levels, join rules, and kicks and bans
// of other users. Like the reference implementations it also counts the
// create event, and only the empty state key for the first two types.
func isPowerEvent(evt *pdu.PDU) bool {
	if evt.StateKey == nil {
		return false
	}
	switch evt.Type {
	case "m.room.power_levels", "m.room.join_rules", "m.room.create":
		return *evt.StateKey == ""
	case "m.room.member":
		membership := gjson.GetBytes(evt.Content, "membership").Str
		return (membership == "leave" || membership == "ban") && *evt.StateKey != string(evt.Sender)
	}
	return false
}
