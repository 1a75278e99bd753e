package stateres

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// initialRoom builds the usual starting room: alice creates it and gives
// herself power 100, the room is public, and bob and charlie join.
func initialRoom(tb testing.TB, rv id.RoomVersion, extraCreate map[string]any) (*testRoom, *branch) {
	tb.Helper()
	r, b := newTestRoom(tb, rv, extraCreate)
	b.member("IMA", alice, alice, "join")
	b.state1("IPOWER", "m.room.power_levels", "", alice, r.plContent(map[id.UserID]int{alice: 100}, nil))
	b.state1("IJR", "m.room.join_rules", "", alice, map[string]any{"join_rule": "public"})
	b.member("IMB", bob, bob, "join")
	b.member("IMC", charlie, charlie, "join")
	return r, b
}

func powerLevels1(b *branch, name string, sender id.UserID, users map[id.UserID]int, extra map[string]any) {
	b.room.tb.Helper()
	b.state1(name, "m.room.power_levels", "", sender, b.room.plContent(users, extra))
}

func topic(b *branch, name string, sender id.UserID) {
	b.room.tb.Helper()
	b.state1(name, "m.room.topic", "", sender, map[string]any{"topic": name})
}

// scenario builds a room, forks it, and returns the states to resolve and the
// expected result: the base state with the changes applied, an empty name
// meaning that the key must be absent.
type scenario struct {
	name     string
	versions []id.RoomVersion
	build    func(tb testing.TB, rv id.RoomVersion) (r *testRoom, states []StateMap, base StateMap, changes map[pdu.StateKey]string)
}

func (s scenario) expected(r *testRoom, base StateMap, changes map[pdu.StateKey]string) StateMap {
	want := maps.Clone(base)
	for k, name := range changes {
		if name == "" {
			delete(want, k)
		} else {
			want[k] = r.eventID(name)
		}
	}
	return want
}

var v2Versions = []id.RoomVersion{id.RoomV2, id.RoomV6, id.RoomV10, id.RoomV11, id.RoomV12}

// v2Scenarios are the classic conflicts of state resolution v2, after the
// examples that accompanied its proposal, run on every v2 and v2.1 version.
var v2Scenarios = []scenario{
	{
		// Alice bans bob while bob, concurrently, re-sends the power levels
		// that made him a moderator: the ban wins and bob's event fails.
		name:     "ban vs power levels",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			powerLevels1(base, "PA", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a, b := base.fork(), base.fork()
			a.member("MA", alice, alice, "join")
			a.member("MB", alice, bob, "ban")
			powerLevels1(b, "PB", bob, map[id.UserID]int{alice: 100, bob: 50}, nil)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{
				keyPowerLevels: "PA", memberKey(alice): "MA", memberKey(bob): "MB",
			}
		},
	},
	{
		// Evelyn joins the public room while alice makes it invite-only:
		// the join rules are applied first and the join fails.
		name:     "join rules change under a concurrent join",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			a.state1("JR", "m.room.join_rules", "", alice, map[string]any{"join_rule": "invite"})
			b.member("ME", evelyn, evelyn, "join")
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{
				keyJoinRules: "JR", memberKey(evelyn): "",
			}
		},
	},
	{
		// A chain of power level changes against its own start.
		name:     "off-topic power levels",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			powerLevels1(base, "PA", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a := base.fork()
			powerLevels1(a, "PB", bob, map[id.UserID]int{alice: 100, bob: 50, charlie: 50}, nil)
			powerLevels1(a, "PC", charlie, map[id.UserID]int{alice: 100, bob: 50, charlie: 0}, nil)
			return r, []StateMap{a.state, base.state}, base.state, map[pdu.StateKey]string{keyPowerLevels: "PC"}
		},
	},
	{
		// Alice demotes bob while bob sets a topic: both bob's events fail.
		name:     "topic fork",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			topic(base, "T1", alice)
			powerLevels1(base, "PA1", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a, b := base.fork(), base.fork()
			topic(a, "T2", alice)
			powerLevels1(a, "PA2", alice, map[id.UserID]int{alice: 100, bob: 0}, nil)
			powerLevels1(b, "PB", bob, map[id.UserID]int{alice: 100, bob: 50}, nil)
			topic(b, "T3", bob)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{
				keyPowerLevels: "PA2", keyTopic: "T2",
			}
		},
	},
	{
		// Bob sets a topic and is then banned; the other side never saw
		// either: the topic goes back to the one before bob's.
		name:     "topic reset",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			topic(base, "T1", alice)
			a := base.fork()
			powerLevels1(a, "PA", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			topic(a, "T2", bob)
			a.member("MB", alice, bob, "ban")
			return r, []StateMap{a.state, base.state}, base.state, map[pdu.StateKey]string{
				keyTopic: "T1", memberKey(bob): "MB", keyPowerLevels: "PA",
			}
		},
	},
	{
		// The topic fork, merged, and then a new topic on top of the merge.
		name:     "topic after merge",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			topic(base, "T1", alice)
			powerLevels1(base, "PA1", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a, b := base.fork(), base.fork()
			topic(a, "T2", alice)
			powerLevels1(a, "PA2", alice, map[id.UserID]int{alice: 100, bob: 0}, nil)
			powerLevels1(b, "PB", bob, map[id.UserID]int{alice: 100, bob: 50}, nil)
			topic(b, "T3", bob)
			m := r.merge(a, b)
			m.message("MZ1", alice)
			c := m.fork()
			topic(c, "T4", alice)
			return r, []StateMap{c.state, m.state}, base.state, map[pdu.StateKey]string{
				keyPowerLevels: "PA2", keyTopic: "T4",
			}
		},
	},
	{
		// T4 is newer than T3 but cites older power levels, so mainline
		// ordering applies it first and T3 wins.
		name:     "mainline ordering",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			topic(base, "T1", alice)
			powerLevels1(base, "PA1", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a, b := base.fork(), base.fork()
			topic(a, "T2", alice)
			powerLevels1(a, "PA2", alice, map[id.UserID]int{alice: 100, bob: 50}, map[string]any{
				"events": map[string]int{"m.room.power_levels": 100},
			})
			powerLevels1(b, "PB", bob, map[id.UserID]int{alice: 100, bob: 50}, nil)
			topic(a, "T3", bob)
			topic(b, "T4", alice)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{
				keyPowerLevels: "PA2", keyTopic: "T3",
			}
		},
	},
	{
		// Two admins of equal power change the power levels concurrently:
		// the earlier change is applied first and the later one wins.
		name:     "power level fork, equal power",
		versions: []id.RoomVersion{id.RoomV2, id.RoomV11},
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			powerLevels1(base, "P0", alice, map[id.UserID]int{alice: 100, bob: 100}, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PBOB", bob, map[id.UserID]int{alice: 100, bob: 100, charlie: 50}, nil)
			powerLevels1(b, "PALICE", alice, map[id.UserID]int{alice: 100, bob: 100, charlie: 25}, nil)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{keyPowerLevels: "PALICE"}
		},
	},
	{
		// The same fork in room version 12, where alice created the room:
		// her infinite power orders her change first, so bob's wins.
		name:     "power level fork, creator first",
		versions: []id.RoomVersion{id.RoomV12},
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			powerLevels1(base, "P0", alice, map[id.UserID]int{bob: 100}, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PBOB", bob, map[id.UserID]int{bob: 100, charlie: 50}, nil)
			powerLevels1(b, "PALICE", alice, map[id.UserID]int{bob: 100, charlie: 25}, nil)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{keyPowerLevels: "PBOB"}
		},
	},
	{
		// Charlie sets a topic while alice bans him. The ban is a power
		// event and is applied before the topic, whatever the timestamps.
		name:     "ban before the banned user's topic",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			powerLevels1(base, "P0", alice, map[id.UserID]int{alice: 100, charlie: 50}, nil)
			a, b := base.fork(), base.fork()
			topic(b, "TC", charlie)
			a.member("BAN", alice, charlie, "ban")
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{memberKey(charlie): "BAN"}
		},
	},
	{
		// PLX is in the auth difference (through bob's topic) and passes
		// the iterative auth checks, but the power levels are unconflicted
		// (PLY in both states), and the unconflicted state map wins.
		name:     "unconflicted state wins at the end",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PLX", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			topic(a, "TB", bob)
			powerLevels1(b, "PLY", alice, map[id.UserID]int{alice: 100, bob: 50, charlie: 50}, nil)
			merged := maps.Clone(a.state)
			merged[keyPowerLevels] = r.eventID("PLY")
			return r, []StateMap{merged, b.state}, b.state, map[pdu.StateKey]string{keyTopic: "TB"}
		},
	},
	{
		// Alice makes bob a moderator (PLX1) and bob then changes the power
		// levels (PLX2), while alice, concurrently, bans bob. PLX1 is only
		// in the auth difference, yet it is the resolved power levels: the
		// result may hold events that are in none of the input states.
		name:     "auth difference event wins",
		versions: v2Versions,
		build: func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
			r, base := initialRoom(tb, rv, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PLX1", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			b.member("BAN", alice, bob, "ban")
			powerLevels1(a, "PLX2", bob, map[id.UserID]int{alice: 100, bob: 50, charlie: 50}, nil)
			return r, []StateMap{a.state, b.state}, base.state, map[pdu.StateKey]string{
				keyPowerLevels: "PLX1", memberKey(bob): "BAN",
			}
		},
	},
	{
		// Bob kicks charlie while alice, concurrently, takes bob's power
		// away, and a state that has both is resolved against one that has
		// neither kick. v2 checks the kick against the unconflicted (newer)
		// power levels and undoes it; v2.1 starts from the empty state, so
		// the kick is checked against its own auth events and stands.
		name:     "kick checked against unconflicted state",
		versions: []id.RoomVersion{id.RoomV11},
		build:    kickVsDemotion("CJ"),
	},
	{
		name:     "kick checked against empty state",
		versions: []id.RoomVersion{id.RoomV12},
		build:    kickVsDemotion("K"),
	},
}

func kickVsDemotion(want string) func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
	return func(tb testing.TB, rv id.RoomVersion) (*testRoom, []StateMap, StateMap, map[pdu.StateKey]string) {
		r, b := newTestRoom(tb, rv, nil)
		b.member("IMA", alice, alice, "join")
		powerLevels1(b, "IPOWER", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
		b.state1("IJR", "m.room.join_rules", "", alice, map[string]any{"join_rule": "invite"})
		b.member("IB", alice, bob, "invite")
		b.member("JB", bob, bob, "join")
		b.member("IC", alice, charlie, "invite")
		b.member("CJ", charlie, charlie, "join")
		kick, demote := b.fork(), b.fork()
		kick.member("K", bob, charlie, "leave")
		powerLevels1(demote, "PL2", alice, map[id.UserID]int{alice: 100, bob: 0}, nil)
		both := maps.Clone(kick.state)
		both[keyPowerLevels] = r.eventID("PL2")
		return r, []StateMap{both, demote.state}, demote.state, map[pdu.StateKey]string{memberKey(charlie): want}
	}
}

func TestResolveV2Scenarios(t *testing.T) {
	for _, sc := range v2Scenarios {
		for _, rv := range sc.versions {
			t.Run(sc.name+"/v"+string(rv), func(t *testing.T) {
				r, states, base, changes := sc.build(t, rv)
				want := sc.expected(r, base, changes)
				for _, perm := range permutations(len(states)) {
					ordered := make([]StateMap, len(states))
					for i, p := range perm {
						ordered[i] = states[p]
					}
					got := r.resolve(ordered...)
					if !maps.Equal(got, want) {
						t.Fatalf("order %v: got\n%s\nwant\n%s", perm, r.describe(got), r.describe(want))
					}
				}
			})
		}
	}
}

// TestResolveV12Creators checks that room creators, including additional
// ones, have infinite power in the reverse topological power ordering. Charlie
// (power 100) changes the power levels first; a creator concurrently bans
// him. Only if the creator's ban is ordered first does charlie's change fail.
func TestResolveV12Creators(t *testing.T) {
	for _, tc := range []struct {
		name   string
		banner id.UserID
	}{
		{"create event sender", alice},
		{"additional creator", bob},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, base := initialRoom(t, id.RoomV12, map[string]any{"additional_creators": []id.UserID{bob}})
			powerLevels1(base, "P0", alice, map[id.UserID]int{charlie: 100}, nil)
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PC", charlie, map[id.UserID]int{charlie: 100, evelyn: 50}, nil)
			b.member("BAN", tc.banner, charlie, "ban")
			want := maps.Clone(base.state)
			want[memberKey(charlie)] = r.eventID("BAN")
			for _, states := range [][]StateMap{{a.state, b.state}, {b.state, a.state}} {
				if got := r.resolve(states...); !maps.Equal(got, want) {
					t.Fatalf("got\n%s\nwant\n%s", r.describe(got), r.describe(want))
				}
			}
		})
	}
}

// TestResolveThreeWay resolves three forks in every order.
func TestResolveThreeWay(t *testing.T) {
	for _, rv := range []id.RoomVersion{id.RoomV1, id.RoomV11, id.RoomV12} {
		t.Run("v"+string(rv), func(t *testing.T) {
			r, base := initialRoom(t, rv, nil)
			powerLevels1(base, "P0", alice, map[id.UserID]int{alice: 100, bob: 50, charlie: 50}, nil)
			a, b, c := base.fork(), base.fork(), base.fork()
			topic(a, "TA", bob)
			powerLevels1(a, "PA", alice, map[id.UserID]int{alice: 100, bob: 50, charlie: 0}, nil)
			topic(b, "TB", charlie)
			b.member("KB", charlie, dave, "ban")
			topic(c, "TC", alice)
			c.member("KC", alice, charlie, "leave")
			var first StateMap
			for _, perm := range permutations(3) {
				all := []StateMap{a.state, b.state, c.state}
				got := r.resolve(all[perm[0]], all[perm[1]], all[perm[2]])
				if first == nil {
					first = got
				} else if !maps.Equal(got, first) {
					t.Fatalf("order %v: got\n%s\nwant\n%s", perm, r.describe(got), r.describe(first))
				}
			}
			// Charlie is kicked in every version. In v2 alice's events are
			// ordered before charlie's ban of dave, which then fails; v1
			// takes the ban as unconflicted, as only one state has dave.
			if first[memberKey(charlie)] != r.eventID("KC") {
				t.Errorf("charlie: got %s, want KC", first[memberKey(charlie)])
			}
			wantDave := id.EventID("")
			if rv == id.RoomV1 {
				wantDave = r.eventID("KB")
			}
			if first[memberKey(dave)] != wantDave {
				t.Errorf("dave: got %q, want %q", first[memberKey(dave)], wantDave)
			}
		})
	}
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

// TestFullConflictedSet checks the auth difference and, in v2.1, the
// conflicted state subgraph. Alice re-joins (IMA2) and then changes the power
// levels twice on one fork and the topic on the other. PL2 is in only one
// fork's auth chains; IMA2 and the join rules IJR it cites are in both, but
// lie on the path PL3 → IMA2 → IJR → IPOWER between conflicted events.
func TestFullConflictedSet(t *testing.T) {
	for _, tc := range []struct {
		rv   id.RoomVersion
		want []string
	}{
		{id.RoomV11, []string{"IPOWER", "PL2", "PL3", "T"}},
		{id.RoomV12, []string{"IJR", "IMA2", "IPOWER", "PL2", "PL3", "T"}},
	} {
		t.Run("v"+string(tc.rv), func(t *testing.T) {
			r, base := initialRoom(t, tc.rv, nil)
			base.state1("IMA2", "m.room.member", string(alice), alice, map[string]any{"membership": "join", "displayname": "Alice"})
			a, b := base.fork(), base.fork()
			powerLevels1(a, "PL2", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			powerLevels1(a, "PL3", alice, map[id.UserID]int{alice: 100, bob: 50, charlie: 50}, nil)
			topic(b, "T", alice)
			states := []StateMap{a.state, b.state}
			res := newResolver(context.Background(), r.roomID, tc.rv, r, r.authorise)
			fcs, err := res.fullConflictedSet(states, newSplitV2(states), tc.rv == id.RoomV12)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ix := range fcs {
				got = append(got, string(res.nodes[ix].id)[1:])
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReverseTopologicalPowerOrder checks the tie-breaks of Kahn's algorithm
// and that they never override the auth DAG.
func TestReverseTopologicalPowerOrder(t *testing.T) {
	r, base := initialRoom(t, id.RoomV11, nil)
	powerLevels1(base, "P0", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
	a := base.fork()
	// Alice's A3 and A4 have the greatest power and come first, in
	// timestamp order. Alice's A2 would come before them by timestamp, and
	// before bob's X1 by power, but it cites X1 as its target's membership,
	// so it must wait for X1.
	a.member("X1", bob, bob, "join")
	a.member("A2", alice, bob, "ban")
	topic(a, "A3", alice)
	topic(a, "A4", alice)
	res := newResolver(context.Background(), r.roomID, r.rv, r, r.authorise)
	names := []string{"A4", "A3", "A2", "X1"}
	if err := res.load(r.ids(names...)); err != nil {
		t.Fatal(err)
	}
	var events []int32
	for _, eid := range r.ids(names...) {
		ix, _ := res.known(eid)
		events = append(events, ix)
	}
	if err := res.loadAuth(events); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ix := range res.reverseTopologicalPowerOrder(events) {
		got = append(got, string(res.nodes[ix].id)[1:])
	}
	if want := []string{"A3", "A4", "X1", "A2"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestResolveErrors checks the failure paths: bad input and provider errors.
func TestResolveErrors(t *testing.T) {
	r, base := initialRoom(t, id.RoomV11, nil)
	a, b := base.fork(), base.fork()
	topic(a, "TA", alice)
	topic(b, "TB", alice)
	states := []StateMap{a.state, b.state}
	ctx := context.Background()
	boom := errors.New("boom")
	other := &testRoom{tb: t, rv: r.rv, roomID: "!other:example.org", events: r.events, chains: r.chains}
	for _, tc := range []struct {
		name string
		call func() error
		is   error
	}{
		{"unknown room version", func() error {
			_, err := Resolve(ctx, r.roomID, "zzz", states, r, r.authorise)
			return err
		}, id.ErrUnknownRoomVersion},
		{"events fail", func() error {
			_, err := Resolve(ctx, r.roomID, r.rv, states, failingProvider{r, boom, nil}, r.authorise)
			return err
		}, boom},
		{"auth chain fails", func() error {
			_, err := Resolve(ctx, r.roomID, r.rv, states, failingProvider{r, nil, boom}, r.authorise)
			return err
		}, boom},
		{"auth unavailable", func() error {
			_, err := Resolve(ctx, r.roomID, r.rv, states, r, func(id.RoomVersion, *pdu.PDU, []*pdu.PDU) error {
				return ErrAuthUnavailable
			})
			return err
		}, ErrAuthUnavailable},
		{"event from another room", func() error {
			_, err := Resolve(ctx, other.roomID, r.rv, states, other, r.authorise)
			return err
		}, nil},
		{"cancelled", func() error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err := Resolve(cctx, r.roomID, r.rv, states, r, r.authorise)
			return err
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
		})
	}
}

// TestResolveAuthPanics checks that a panicking auth function counts as a
// rejection rather than crashing the resolution.
func TestResolveAuthPanics(t *testing.T) {
	r, base := initialRoom(t, id.RoomV11, nil)
	a, b := base.fork(), base.fork()
	topic(a, "TA", alice)
	topic(b, "TB", alice)
	got, err := Resolve(context.Background(), r.roomID, r.rv, []StateMap{a.state, b.state}, r,
		func(_ id.RoomVersion, evt *pdu.PDU, _ []*pdu.PDU) error {
			if evt.InternalMeta.EventID == "$TB" {
				panic("boom")
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if got[keyTopic] != "$TA" {
		t.Fatalf("topic: got %s, want $TA", got[keyTopic])
	}
}

type failingProvider struct {
	*testRoom
	events, chain error
}

func (p failingProvider) Events(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
	if p.events != nil {
		return nil, p.events
	}
	return p.testRoom.Events(ctx, ids)
}

func (p failingProvider) AuthChain(ctx context.Context, ids []id.EventID) (map[id.EventID]struct{}, error) {
	if p.chain != nil {
		return nil, p.chain
	}
	return p.testRoom.AuthChain(ctx, ids)
}

// TestResolveRejectedAuthEvent checks that an event's own auth events are
// only used in the iterative auth checks if they were not rejected. In room
// version 12 the checks start from the empty state, so bob's topic is checked
// with his own membership event; once that is marked rejected, bob is not in
// the room as far as the check goes, and alice's earlier topic wins.
func TestResolveRejectedAuthEvent(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rejected bool
		want     string
	}{
		{"accepted membership", false, "TB"},
		{"rejected membership", true, "TA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, base := initialRoom(t, id.RoomV12, nil)
			powerLevels1(base, "P0", alice, map[id.UserID]int{bob: 50}, nil)
			a, b := base.fork(), base.fork()
			topic(a, "TA", alice)
			topic(b, "TB", bob)
			r.events[r.eventID("IMB")].InternalMeta.Rejected = tc.rejected
			got := r.resolve(a.state, b.state)
			if got[keyTopic] != r.eventID(tc.want) {
				t.Fatalf("topic: got %s, want %s", got[keyTopic], tc.want)
			}
		})
	}
}
