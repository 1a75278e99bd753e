package auth_test

import (
	"errors"
	"slices"
	"testing"

	"hearth/roomserver/auth"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// TestAuthEventsRules covers the rules about an event's own auth_events
// (3.x in v12, 2.x before), which only CheckAuthEvents applies.
func TestAuthEventsRules(t *testing.T) {
	type authEventsCase struct {
		name string
		// edit changes the auth_events of bob's message, drafted in newRoom.
		edit func(r *testRoom, evt *pdu.PDU)
		want map[id.RoomVersion]string
	}
	byType := func(r *testRoom, evtType, stateKey string) id.EventID {
		return r.lookup(evtType, stateKey).InternalMeta.EventID
	}
	cases := []authEventsCase{
		{"as selected", func(*testRoom, *pdu.PDU) {}, allowed},
		{"duplicate power levels", func(r *testRoom, evt *pdu.PDU) {
			old := byType(r, "m.room.power_levels", "")
			r.setPowerLevels(del("events", "m.room.tombstone"))
			evt.AuthEvents = append(evt.AuthEvents, old)
		}, steps("2.1", "2.1", "2.1", "2.1", "3.1")},
		{"same event twice", func(r *testRoom, evt *pdu.PDU) {
			evt.AuthEvents = append(evt.AuthEvents, evt.AuthEvents[0])
		}, steps("2.1", "2.1", "2.1", "2.1", "3.1")},
		{"join rules for a message", func(r *testRoom, evt *pdu.PDU) {
			evt.AuthEvents = append(evt.AuthEvents, byType(r, "m.room.join_rules", ""))
		}, steps("2.2", "2.2", "2.2", "2.2", "3.2")},
		{"a message", func(r *testRoom, evt *pdu.PDU) {
			msg := r.send(mod, "m.room.message", nil, `{}`)
			evt.AuthEvents = append(evt.AuthEvents, msg.InternalMeta.EventID)
		}, steps("2.2", "2.2", "2.2", "2.2", "3.2")},
		// v12: the create event must not be selected.
		{"create event", func(r *testRoom, evt *pdu.PDU) {
			if !slices.Contains(evt.AuthEvents, r.create.InternalMeta.EventID) {
				evt.AuthEvents = append(evt.AuthEvents, r.create.InternalMeta.EventID)
			}
		}, steps("", "", "", "", "3.2")},
		{"rejected power levels", func(r *testRoom, evt *pdu.PDU) {
			bad := r.draft(alice, "m.room.power_levels", sk(""), r.powerLevels(set("0", "ban")))
			bad.InternalMeta.Rejected = true
			r.events[bad.InternalMeta.EventID] = bad
			evt.AuthEvents = replaceID(evt.AuthEvents, byType(r, "m.room.power_levels", ""), bad.InternalMeta.EventID)
		}, steps("2.3", "2.3", "2.3", "2.3", "3.3")},
		{"no create event", func(r *testRoom, evt *pdu.PDU) {
			evt.AuthEvents = slices.DeleteFunc(evt.AuthEvents, func(e id.EventID) bool { return e == r.create.InternalMeta.EventID })
		}, steps("2.4", "2.4", "2.4", "2.4", "")},
		{"power levels of another room", func(r *testRoom, evt *pdu.PDU) {
			other := newRoomCreate(r.t, r.rv, `,"org.example.other":true`)
			foreign := other.lookup("m.room.power_levels", "")
			r.events[foreign.InternalMeta.EventID] = foreign
			evt.AuthEvents = replaceID(evt.AuthEvents, byType(r, "m.room.power_levels", ""), foreign.InternalMeta.EventID)
		}, steps("2.5", "2.5", "2.5", "2.5", "3.4")},
	}
	for _, rv := range testedVersions {
		for _, c := range cases {
			t.Run("v"+string(rv)+"/"+c.name, func(t *testing.T) {
				r := newRoom(t, rv)
				evt := r.draft(bob, "m.room.message", nil, `{}`)
				c.edit(r, evt)
				err := auth.CheckAuthEvents(rv, evt, r.getEvents, getKey)
				if got, want := stepOf(err), c.want[rv]; got != want {
					t.Errorf("got step %q, want %q (error: %v)", got, want, err)
				}
			})
		}
	}
}

func replaceID(ids []id.EventID, old, repl id.EventID) []id.EventID {
	out := slices.Clone(ids)
	out[slices.Index(out, old)] = repl
	return out
}

func TestMissingAuthEvent(t *testing.T) {
	for _, rv := range testedVersions {
		r := newRoom(t, rv)
		evt := r.draft(bob, "m.room.message", nil, `{}`)
		evt.AuthEvents = append(evt.AuthEvents, "$unknown")
		if err := auth.CheckAuthEvents(rv, evt, r.getEvents, getKey); !errors.Is(err, auth.ErrMissingAuthEvent) {
			t.Errorf("v%s: got %v, want ErrMissingAuthEvent", rv, err)
		}
		short := func(ids []id.EventID) ([]*pdu.PDU, error) { return nil, nil }
		var ae *auth.AuthError
		if err := auth.CheckAuthEvents(rv, evt, short, getKey); err == nil || errors.As(err, &ae) {
			t.Errorf("v%s: getEvents returning too few events: got %v, want a non-rule error", rv, err)
		}
	}
}

// TestRoomIDRule covers rule 2 of v12: the room ID names an accepted
// m.room.create event.
func TestRoomIDRule(t *testing.T) {
	r := newRoom(t, id.RoomV12)
	msg := r.send(bob, "m.room.message", nil, `{}`)
	check := func(name string, evt, create *pdu.PDU, getEvents auth.GetEventsFunc, want string) {
		t.Helper()
		errState := auth.Allowed(id.RoomV12, evt, create, auth.SelectAuthEvents(id.RoomV12, evt, r.lookup), getKey)
		if got := stepOf(errState); got != want {
			t.Errorf("%s: Allowed: got step %q, want %q (error: %v)", name, got, want, errState)
		}
		errOwn := auth.CheckAuthEvents(id.RoomV12, evt, getEvents, getKey)
		if got := stepOf(errOwn); got != want {
			t.Errorf("%s: CheckAuthEvents: got step %q, want %q (error: %v)", name, got, want, errOwn)
		}
	}

	check("room of the create event", r.draft(bob, "m.room.message", nil, `{}`), r.create, r.getEvents, "")

	other := r.draft(bob, "m.room.message", nil, `{}`)
	other.RoomID = "!" + id.RoomID(msg.InternalMeta.EventID[1:])
	// eventauth took whatever event the room ID names as the create event.
	check("room ID naming a message", other, msg, r.getEvents, "2")

	wrongRoom := r.draft(bob, "m.room.message", nil, `{}`)
	wrongRoom.RoomID = "!room:a.test"
	check("room ID of the old format", wrongRoom, r.create, r.getEvents, "2")

	evt := r.draft(bob, "m.room.message", nil, `{}`)
	rejected := *r.create
	rejected.InternalMeta.Rejected = true
	withRejected := func(ids []id.EventID) ([]*pdu.PDU, error) {
		out, err := r.getEvents(ids)
		for i, e := range out {
			if e == r.create {
				out[i] = &rejected
			}
		}
		return out, err
	}
	check("rejected create event", evt, &rejected, withRejected, "2")

	if err := auth.Allowed(id.RoomV12, evt, nil, auth.SelectAuthEvents(id.RoomV12, evt, r.lookup), getKey); stepOf(err) != "2" {
		t.Errorf("no create event passed to Allowed: got %v, want rule 2", err)
	}
}

func TestSelectAuthEvents(t *testing.T) {
	type selectCase struct {
		name    string
		event   func(r *testRoom) *pdu.PDU
		want    []string // type/state_key of selected events, create excluded
		restric bool     // selection includes the authoriser's member event (v8+)
	}
	cases := []selectCase{
		{"message", message(bob), []string{"pl", "member:" + bob.String()}, false},
		{"join", func(r *testRoom) *pdu.PDU {
			return memberDraft(r, carol, carol, `{"membership":"join","join_authorised_via_users_server":"@alice:a.test"}`)
		}, []string{"pl", "jr"}, true},
		{"invite", func(r *testRoom) *pdu.PDU {
			r.send(alice, "m.room.third_party_invite", sk("tok"), thirdPartyInviteEvent(true, false))
			return memberDraft(r, alice, bob, `{"membership":"invite","third_party_invite":{"signed":{"token":"tok"}}}`)
		}, []string{"pl", "member:" + alice.String(), "member:" + bob.String(), "jr", "tpi:tok"}, false},
		{"kick", func(r *testRoom) *pdu.PDU {
			return memberDraft(r, mod, bob, `{"membership":"leave"}`)
		}, []string{"pl", "member:" + mod.String(), "member:" + bob.String()}, false},
	}
	short := map[string]string{"m.room.power_levels": "pl", "m.room.join_rules": "jr", "m.room.member": "member", "m.room.third_party_invite": "tpi"}
	for _, rv := range testedVersions {
		for _, c := range cases {
			r := newRoom(t, rv)
			evt := c.event(r)
			var got []string
			hasCreate := false
			for _, e := range auth.SelectAuthEvents(rv, evt, r.lookup) {
				name := short[e.Type]
				switch {
				case e.Type == "m.room.create":
					hasCreate = true
					continue
				case *e.StateKey != "":
					name += ":" + *e.StateKey
				}
				got = append(got, name)
			}
			want := slices.Clone(c.want)
			if c.restric && rv.RestrictedJoins() {
				want = append(want, "member:"+alice.String())
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("v%s %s: selected %v, want %v", rv, c.name, got, want)
			}
			if hasCreate != !rv.RoomIDIsCreateEventID() {
				t.Errorf("v%s %s: create event selected: %v", rv, c.name, hasCreate)
			}
		}
	}
	create := newRoom(t, id.RoomV10).create
	if got := auth.SelectAuthEvents(id.RoomV10, create, nil); len(got) != 0 {
		t.Errorf("create event: selected %v", got)
	}
}

// TestAuthoriserSignatureWithoutKeys: with no key fetcher, rule 5.2.1 only
// asks for a signature from the authorising server to be present.
func TestAuthoriserSignatureWithoutKeys(t *testing.T) {
	r := newRoom(t, id.RoomV10)
	r.setJoinRule(`{"join_rule":"restricted","allow":[]}`)
	evt := memberDraft(r, carol, carol, `{"membership":"join","join_authorised_via_users_server":"@alice:a.test"}`)
	evt.Signatures = map[string]map[id.KeyID]string{"a.test": {"ed25519:1": "bm90IGEgc2lnbmF0dXJl"}}
	selected := auth.SelectAuthEvents(r.rv, evt, r.lookup)
	if err := auth.Allowed(r.rv, evt, r.create, selected, nil); err != nil {
		t.Errorf("without keys: %v", err)
	}
	if err := auth.Allowed(r.rv, evt, r.create, selected, getKey); stepOf(err) != "4.2.1" {
		t.Errorf("with keys: got %v, want rule 4.2.1", err)
	}
	evt.Signatures = nil
	if err := auth.Allowed(r.rv, evt, r.create, selected, nil); stepOf(err) != "4.2.1" {
		t.Errorf("unsigned, without keys: got %v, want rule 4.2.1", err)
	}
}

// TestAllowedInputs covers how Allowed takes the create event and bad input.
func TestAllowedInputs(t *testing.T) {
	r := newRoom(t, id.RoomV10)
	evt := r.draft(bob, "m.room.message", nil, `{}`)
	state := auth.SelectAuthEvents(r.rv, evt, r.lookup)
	if err := auth.Allowed(r.rv, evt, nil, state, nil); err != nil {
		t.Errorf("create event among the auth events: %v", err)
	}
	noCreate := slices.DeleteFunc(slices.Clone(state), func(e *pdu.PDU) bool { return e.Type == "m.room.create" })
	if err := auth.Allowed(r.rv, evt, r.create, noCreate, nil); err != nil {
		t.Errorf("create event passed alone: %v", err)
	}
	if err := auth.Allowed(r.rv, evt, nil, noCreate, nil); stepOf(err) != "2.4" {
		t.Errorf("no create event: got %v, want rule 2.4", err)
	}
	otherCreate := newRoom(t, id.RoomV10).create
	otherCreate.InternalMeta.EventID = "$other"
	if err := auth.Allowed(r.rv, evt, otherCreate, state, nil); stepOf(err) != "error" {
		t.Errorf("two different create events: got %v, want a non-rule error", err)
	}
	msg := r.send(mod, "m.room.message", nil, `{}`)
	if err := auth.Allowed(r.rv, evt, nil, append(slices.Clone(state), nil, msg), nil); stepOf(err) != "error" {
		t.Errorf("a message among the auth events: got %v, want a non-rule error", err)
	}
	if err := auth.Allowed(r.rv, nil, r.create, state, nil); err == nil {
		t.Error("nil event allowed")
	}
}

func TestAuthErrorMessage(t *testing.T) {
	r := newRoom(t, id.RoomV11)
	r.membership(alice, carol, "ban")
	evt := memberDraft(r, carol, carol, `{"membership":"join"}`)
	err := r.check(evt)
	var ae *auth.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want *AuthError", err)
	}
	want := "event " + string(evt.InternalMeta.EventID) + " fails auth rule 4.3.3 of room version 11 (join: sender is banned): fail 5.3.3: user is banned from the room"
	if err.Error() != want {
		t.Errorf("message:\n got %s\nwant %s", err, want)
	}
	if ae.RoomVersion != id.RoomV11 || ae.EventID != evt.InternalMeta.EventID || ae.Rule != "join: sender is banned" {
		t.Errorf("fields: %+v", ae)
	}
	if ae.Unwrap() == nil {
		t.Error("no eventauth error wrapped")
	}
}

// TestCreateEventWithoutID: the create event's ID is computed when
// InternalMeta.EventID is missing (rule 2 in v12, rule 5.3.1 from v3).
func TestCreateEventWithoutID(t *testing.T) {
	for _, rv := range []id.RoomVersion{id.RoomV10, id.RoomV12} {
		r := newBareRoom(t, rv, alice, defaultCreateContent(rv, ""))
		join := memberDraft(r, alice, alice, `{"membership":"join"}`)
		create := *r.create
		create.InternalMeta.EventID = ""
		state := auth.SelectAuthEvents(rv, join, r.lookup)
		state = slices.DeleteFunc(state, func(e *pdu.PDU) bool { return e.Type == "m.room.create" })
		if err := auth.Allowed(rv, join, &create, state, nil); err != nil {
			t.Errorf("v%s: %v", rv, err)
		}
		if create.Hashes != r.create.Hashes {
			t.Errorf("v%s: the create event was modified", rv)
		}
	}
}
