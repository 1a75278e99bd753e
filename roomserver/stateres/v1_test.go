package stateres

import (
	"maps"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// v1Scenarios exercise the original algorithm of room version 1: conflicts
// settled by depth and SHA-1 of the event ID, power levels, then join rules,
// then members, then the rest.
//
// For reference: sha1("$PA") = f230…, sha1("$PB") = d3f4…, sha1("$TA") =
// 159e…, sha1("$TB") = 6fa1….
var v1Scenarios = []scenario{
	{
		// Ascending depth: PA first, then the deeper PB, which passes.
		name: "power levels, deeper one passes",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PA", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			b.message("X", alice)
			powerLevels1(b, "PB", alice, map[id.UserID]int{alice: 100, charlie: 50}, nil)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{keyPowerLevels: "PB"}
		},
	},
	{
		// Bob's deeper PB fails once alice's demotion PA is in R.
		name: "power levels, deeper one fails",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			powerLevels1(base, "P0", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PA", alice, map[id.UserID]int{alice: 100, bob: 0}, nil)
			b.message("X", alice)
			powerLevels1(b, "PB", bob, map[id.UserID]int{alice: 100, bob: 50}, nil)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{keyPowerLevels: "PA"}
		},
	},
	{
		// Equal depth: descending SHA-1 puts PA (f2…) before PB (d3…), and PB
		// then passes.
		name: "power levels, equal depth",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PA", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			powerLevels1(b, "PB", alice, map[id.UserID]int{alice: 100, charlie: 50}, nil)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{keyPowerLevels: "PB"}
		},
	},
	{
		// Other events: the deepest one that passes.
		name: "topic, deepest wins",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			topic(a, "TA", alice)
			b.message("X", alice)
			topic(b, "TB", alice)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{keyTopic: "TB"}
		},
	},
	{
		// Equal depth: ascending SHA-1 puts TA (15…) first.
		name: "topic, equal depth",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			topic(a, "TB", alice)
			topic(b, "TA", alice)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{keyTopic: "TA"}
		},
	},
	{
		// Bob's deeper topic fails against the resolved power levels, which
		// demoted him.
		name: "topic, deepest fails auth",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			powerLevels1(base, "P0", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PA", alice, map[id.UserID]int{alice: 100, bob: 0}, nil)
			topic(a, "TA", alice)
			b.message("X", alice)
			b.message("Y", alice)
			topic(b, "TB", bob)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{
				keyPowerLevels: "PA", keyTopic: "TA",
			}
		},
	},
	{
		// Members: bob's deeper re-join fails against his ban.
		name: "membership",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			a.member("MB", alice, bob, "ban")
			b.message("X", alice)
			b.state1("MB2", "m.room.member", string(bob), bob, map[string]any{"membership": "join", "displayname": "Bob"})
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{memberKey(bob): "MB"}
		},
	},
	{
		// A key that only one state has is not a conflict in v1, so evelyn's
		// join survives the change to invite-only (unlike in v2).
		name: "join rules change under a concurrent join",
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			a.state1("JR", "m.room.join_rules", "", alice, map[string]any{"join_rule": "invite"})
			b.member("ME", evelyn, evelyn, "join")
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{
				keyJoinRules: "JR", memberKey(evelyn): "ME",
			}
		},
	},
}

func TestResolveV1Scenarios(t *testing.T) {
	for _, sc := range v1Scenarios {
		t.Run(sc.name, func(t *testing.T) {
			r, states, base, changes := sc.build(t, id.RoomV1)
			want := sc.expected(r, base, changes)
			for _, ordered := range [][]StateMap{states, {states[1], states[0]}} {
				if got := r.resolve(ordered...); !maps.Equal(got, want) {
					t.Fatalf("got\n%s\nwant\n%s", r.describe(got), r.describe(want))
				}
			}
		})
	}
}
