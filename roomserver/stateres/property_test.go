package stateres

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

var randomUsers = []id.UserID{alice, bob, charlie, dave, evelyn, "@frank:example.org", "@grace:example.org"}

// randomForks builds a room from a seed: a few members with varied power,
// then branches that fork off each other at random points and each send a
// random mix of topics, power level changes, kicks, bans, invites, joins,
// leaves and join rule changes. Events the auth rules reject on their branch
// are left out. It returns the states of 2–4 branches.
func randomForks(tb testing.TB, rv id.RoomVersion, seed uint64) (*testRoom, []StateMap) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	r, base := newTestRoom(tb, rv, nil)
	base.member("IMA", alice, alice, "join")
	powerLevels1(base, "IPOWER", alice, map[id.UserID]int{alice: 100, bob: 50, charlie: 50}, nil)
	base.state1("IJR", "m.room.join_rules", "", alice, map[string]any{"join_rule": "public"})
	for _, u := range randomUsers[1:] {
		base.member("J"+string(u[1:2]), u, u, "join")
	}
	branches := []*branch{base}
	n := 0
	for step := 0; step < 40; step++ {
		b := branches[rng.IntN(len(branches))]
		if len(branches) < 5 && rng.IntN(4) == 0 {
			b = b.fork()
			branches = append(branches, b)
		}
		n++
		randomEvent(r, b, rng, fmt.Sprintf("E%d", n))
	}
	perm := rng.Perm(len(branches))
	k := 2 + rng.IntN(min(3, len(branches)-1))
	var states []StateMap
	for _, i := range perm[:k] {
		states = append(states, branches[i].state)
	}
	return r, states
}

func randomEvent(r *testRoom, b *branch, rng *rand.Rand, name string) {
	sender := randomUsers[rng.IntN(len(randomUsers))]
	target := randomUsers[rng.IntN(len(randomUsers))]
	member := func(s, t id.UserID, membership string) {
		sk := string(t)
		_, _ = b.send(name, "m.room.member", &sk, s, map[string]any{"membership": membership})
	}
	empty := ""
	switch rng.IntN(9) {
	case 0, 1:
		_, _ = b.send(name, "m.room.topic", &empty, sender, map[string]any{"topic": name})
	case 2:
		users := currentUsers(r, b)
		if rng.IntN(2) == 0 {
			users[target] = []int{0, 25, 50, 75, 100}[rng.IntN(5)]
		} else {
			delete(users, target)
		}
		_, _ = b.send(name, "m.room.power_levels", &empty, sender, r.plContent(users, nil))
	case 3:
		member(sender, target, "leave")
	case 4:
		member(sender, target, "ban")
	case 5:
		member(sender, target, "invite")
	case 6:
		member(sender, sender, "join")
	case 7:
		rule := []string{"public", "invite"}[rng.IntN(2)]
		_, _ = b.send(name, "m.room.join_rules", &empty, sender, map[string]any{"join_rule": rule})
	default:
		_, _ = b.send(name, "m.room.message", nil, sender, map[string]any{"body": name})
	}
}

// currentUsers reads the users of the branch's power levels.
func currentUsers(r *testRoom, b *branch) map[id.UserID]int {
	users := map[id.UserID]int{}
	if eid, ok := b.state[keyPowerLevels]; ok {
		var c struct {
			Users map[id.UserID]int `json:"users"`
		}
		if err := json.Unmarshal(r.events[eid].Content, &c); err != nil {
			r.tb.Fatalf("reading power levels: %v", err)
		}
		maps.Copy(users, c.Users)
	}
	return users
}

// TestResolveRandomForks checks, on random seeded forks, that resolution is
// deterministic and independent of the order of the states, that keys on
// which every state agrees keep their event, and that the result only holds
// events of the input states or of their auth chains.
func TestResolveRandomForks(t *testing.T) {
	for _, rv := range []id.RoomVersion{id.RoomV1, id.RoomV2, id.RoomV11, id.RoomV12} {
		t.Run("v"+string(rv), func(t *testing.T) {
			for seed := uint64(1); seed <= 60; seed++ {
				r, states := randomForks(t, rv, seed)
				want := r.resolve(states...)
				orders := permutations(len(states))
				for _, perm := range orders {
					ordered := make([]StateMap, len(states))
					for i, p := range perm {
						ordered[i] = states[p]
					}
					if got := r.resolve(ordered...); !maps.Equal(got, want) {
						t.Fatalf("seed %d, order %v: got\n%s\nwant\n%s", seed, perm, r.describe(got), r.describe(want))
					}
				}
				checkResolved(t, r, seed, states, want)
			}
		})
	}
}

func checkResolved(t *testing.T, r *testRoom, seed uint64, states []StateMap, got StateMap) {
	t.Helper()
	allowed := map[id.EventID]struct{}{}
	for _, s := range states {
		for _, v := range s {
			allowed[v] = struct{}{}
			for _, a := range r.chains[v] {
				allowed[a] = struct{}{}
			}
		}
	}
	for k, v := range states[0] {
		agreed := true
		for _, s := range states[1:] {
			if s[k] != v {
				agreed = false
			}
		}
		if agreed && got[k] != v {
			t.Fatalf("seed %d: unconflicted %v=%s resolved to %s", seed, k, v, got[k])
		}
	}
	for k, v := range got {
		if _, ok := allowed[v]; !ok {
			t.Fatalf("seed %d: %v=%s is from no input state or auth chain", seed, k, v)
		}
		if evt := r.events[v]; evt.StateKey == nil || (pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}) != k {
			t.Fatalf("seed %d: %s is not a state event for %v", seed, v, k)
		}
	}
}
