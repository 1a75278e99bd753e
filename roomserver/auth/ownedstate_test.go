package auth_test

import (
	"errors"
	"testing"

	"hearth/roomserver/auth"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

const (
	msc3757v10 id.RoomVersion = "org.matrix.msc3757.10"
	msc3757v11 id.RoomVersion = "org.matrix.msc3757.11"
)

// ownedStateType is a state event type anyone in the test room may send.
const ownedStateType = "com.example.test"

// ownedStateSuffix holds the separator and sigils, as Complement's test does.
const ownedStateSuffix = "_state_key_suffix:!@#$123"

// TestOwnedStateRule checks MSC3757 "Restricting who can overwrite a state
// event" in the unstable versions built on v10 and v11, and that the plain
// versions keep the spec's rule (8 in v10/v11): a state_key starting with "@"
// must be the sender. In newRoom alice has 100, mod and mod2 50, bob the
// users_default 0; carol is not in the room.
func TestOwnedStateRule(t *testing.T) {
	const (
		allow      = ""
		notSender  = "8"     // v10/v11 rule 8: state_key starts with @, is not the sender
		noOwner    = "8.1.1" // MSC3757: no valid user ID before the first _ after the first :
		ownerPower = "8.1.3" // MSC3757: sender's level is not above the owner's
	)
	type want struct{ plain, owned string }
	state := func(sender id.UserID, stateKey string) func(r *testRoom) *pdu.PDU {
		return func(r *testRoom) *pdu.PDU { return r.draft(sender, ownedStateType, sk(stateKey), `{}`) }
	}
	powerLevels := func(sender id.UserID, stateKey string) func(r *testRoom) *pdu.PDU {
		return func(r *testRoom) *pdu.PDU {
			return r.draft(sender, "m.room.power_levels", sk(stateKey), r.powerLevels())
		}
	}
	cases := []struct {
		name  string
		event func(r *testRoom) *pdu.PDU
		want  want
	}{
		{"own user ID", state(bob, bob.String()), want{allow, allow}},
		{"own user ID with suffix", state(bob, bob.String()+ownedStateSuffix), want{notSender, allow}},
		{"own user ID with empty suffix", state(bob, bob.String()+"_"), want{notSender, allow}},
		{"no @: not owned", state(bob, "x"+alice.String()), want{allow, allow}},
		{"higher level over lower user ID", state(alice, bob.String()), want{notSender, allow}},
		{"higher level over lower suffixed user ID", state(alice, bob.String()+ownedStateSuffix), want{notSender, allow}},
		{"50 over users_default", state(mod, bob.String()+"_device"), want{notSender, allow}},
		{"higher level over non-member", state(alice, "@notinroom:c.test"), want{notSender, allow}},
		{"lower level over higher user ID", state(bob, mod.String()), want{notSender, ownerPower}},
		{"lower level over higher suffixed user ID", state(bob, alice.String()+ownedStateSuffix), want{notSender, ownerPower}},
		{"equal levels", state(mod, mod2.String()+"_x"), want{notSender, ownerPower}},
		{"equal default levels", state(bob, dave.String()), want{notSender, ownerPower}},
		// The owner ends at the first "_" after the ":": without a separator
		// the suffix is part of another user's server name.
		{"unseparated suffix", state(bob, bob.String()+ownedStateSuffix[1:]), want{notSender, ownerPower}},
		{"longer server name", state(bob, bob.String()+".evil.test_x"), want{notSender, ownerPower}},
		// "@prefix_@bob:b.test" is a (historical) user ID, not bob's.
		{"misplaced user ID", state(bob, "@prefix_"+bob.String()+ownedStateSuffix), want{notSender, ownerPower}},
		{"no server name", state(alice, "@oops"), want{notSender, noOwner}},
		{"improper separator", state(alice, alice.String()+"@"+ownedStateSuffix[1:]), want{notSender, noOwner}},
		{"empty server name", state(alice, "@bob:_x"), want{notSender, noOwner}},
		{"bad server name", state(alice, "@bob:b!test"), want{notSender, noOwner}},
		// The earlier rules still come first.
		{"sender not joined", state(carol, bob.String()), want{"5", "5"}},
		{"sender below the event's level", func(r *testRoom) *pdu.PDU {
			return r.draft(bob, "m.room.name", sk("@oops"), `{"name":"x"}`)
		}, want{"7", "7"}},
		// m.room.power_levels takes its own path through the rules.
		{"power levels keyed by lower user", powerLevels(mod, bob.String()+"_x"), want{notSender, allow}},
		{"power levels keyed by higher user", powerLevels(mod, alice.String()), want{notSender, ownerPower}},
		{"power levels with malformed key", powerLevels(alice, "@oops"), want{notSender, noOwner}},
	}
	versions := []struct {
		rv    id.RoomVersion
		owned bool
	}{{id.RoomV10, false}, {id.RoomV11, false}, {msc3757v10, true}, {msc3757v11, true}}
	for _, v := range versions {
		for _, c := range cases {
			t.Run(string(v.rv)+"/"+c.name, func(t *testing.T) {
				r := newRoom(t, v.rv)
				r.setPowerLevels(set(`0`, "events", ownedStateType))
				err := r.check(c.event(r))
				want := c.want.plain
				if v.owned {
					want = c.want.owned
				}
				if got := stepOf(err); got != want {
					t.Fatalf("got step %q, want %q (error: %v)", got, want, err)
				}
				if malformed := errors.Is(err, auth.ErrMalformedStateKey); malformed != (want == noOwner) {
					t.Errorf("errors.Is(err, ErrMalformedStateKey) = %v (error: %v)", malformed, err)
				}
				var ae *auth.AuthError
				if errors.As(err, &ae) && ae.RoomVersion != v.rv {
					t.Errorf("AuthError.RoomVersion = %q, want %q", ae.RoomVersion, v.rv)
				}
			})
		}
	}
}

// TestOwnedStateNoPowerLevels: without m.room.power_levels the room creator
// (content.creator in these versions) has 100 and may write anyone's state;
// other users may not write the creator's.
func TestOwnedStateNoPowerLevels(t *testing.T) {
	for _, rv := range []id.RoomVersion{msc3757v10, msc3757v11} {
		t.Run(string(rv), func(t *testing.T) {
			r := newBareRoom(t, rv, alice, defaultCreateContent(rv, ""))
			r.join(alice)
			r.setJoinRule(`{"join_rule":"public"}`)
			r.join(bob)
			// state_default is 50 without power levels, so bob can send no
			// state at all: rule 8 (7 here) comes before the owner check.
			for _, tc := range []struct {
				sender   id.UserID
				stateKey string
				want     string
			}{
				{alice, bob.String() + "_x", ""},
				{alice, "@someone:c.test", ""},
				{bob, alice.String(), "7"},
			} {
				if got := stepOf(r.check(r.draft(tc.sender, ownedStateType, sk(tc.stateKey), `{}`))); got != tc.want {
					t.Errorf("%s sets %q: got step %q, want %q", tc.sender, tc.stateKey, got, tc.want)
				}
			}
		})
	}
}

// TestUnstableVersionCreate: the unstable versions are recognised in
// m.room.create (rule 1.3), each only as itself.
func TestUnstableVersionCreate(t *testing.T) {
	for _, rv := range []id.RoomVersion{msc3757v10, msc3757v11} {
		t.Run(string(rv), func(t *testing.T) {
			r := newRoom(t, rv)
			if got := r.lookup("m.room.create", "").Content; string(got) != defaultCreateContent(rv, "") {
				t.Fatalf("create content %s", got)
			}
			// The same create event checked as the base version is a mismatch.
			base := id.RoomVersion(rv[len("org.matrix.msc3757."):])
			if err := auth.Allowed(base, r.create, nil, nil, getKey); err == nil {
				t.Errorf("create of %s allowed as %s", rv, base)
			}
		})
	}
	r := newRoom(t, id.RoomV10)
	evt := r.draft(alice, "m.room.create", sk(""), `{"creator":"@alice:a.test","room_version":"org.matrix.msc3757.9"}`)
	evt.PrevEvents, evt.AuthEvents = []id.EventID{}, []id.EventID{}
	if got := stepOf(auth.Allowed("org.matrix.msc3757.9", evt, nil, nil, getKey)); got != "1.3" {
		t.Errorf("unknown unstable version: got step %q, want 1.3", got)
	}
}
