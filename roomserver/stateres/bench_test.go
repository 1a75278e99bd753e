package stateres

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix/id"
)

func benchUser(i int) id.UserID {
	return id.UserID(fmt.Sprintf("@u%05d:example.org", i))
}

// benchForks builds a room with 10,000 state events and two forks of it that
// both change the same 500 or so keys: on one, alice changes the power levels
// twice and 499 members change their display names, citing the new power
// levels; on
// the other, bob kicks a member, alice sets a topic and 498 of the same
// members change their display names differently.
func benchForks(b *testing.B, rv id.RoomVersion) (*testRoom, []StateMap) {
	b.Helper()
	r, base := newTestRoom(b, rv, nil)
	base.member("IMA", alice, alice, "join")
	powerLevels1(base, "IPOWER", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
	base.state1("IJR", "m.room.join_rules", "", alice, map[string]any{"join_rule": "public"})
	base.member("IMB", bob, bob, "join")
	for i := 0; len(base.state) < 10000; i++ {
		u := benchUser(i)
		base.member(fmt.Sprintf("M%05d", i), u, u, "join")
	}
	x, y := base.fork(), base.fork()
	powerLevels1(x, "PLX", alice, map[id.UserID]int{alice: 100, bob: 50, benchUser(0): 50}, nil)
	for i := range 499 {
		if i == 250 {
			// PLX is then superseded on this fork, which makes it an auth
			// difference candidate that only U's auth chain can rule on.
			powerLevels1(x, "PLX2", alice, map[id.UserID]int{alice: 100, bob: 50, benchUser(0): 50, benchUser(1): 50}, nil)
		}
		u := benchUser(i)
		x.state1(fmt.Sprintf("X%05d", i), "m.room.member", string(u), u, map[string]any{"membership": "join", "displayname": "x"})
	}
	y.member("KICK", bob, benchUser(600), "leave")
	topic(y, "TOPIC", alice)
	for i := range 498 {
		u := benchUser(i)
		y.state1(fmt.Sprintf("Y%05d", i), "m.room.member", string(u), u, map[string]any{"membership": "join", "displayname": "y"})
	}
	return r, []StateMap{x.state, y.state}
}

// BenchmarkResolve resolves two forks of 10,000 state events with 500
// conflicts, with eventauth as the auth function and auth chains from
// precomputed per-event chains.
func BenchmarkResolve(b *testing.B) {
	for _, rv := range []id.RoomVersion{id.RoomV1, id.RoomV11, id.RoomV12} {
		b.Run("v"+string(rv), func(b *testing.B) {
			r, states := benchForks(b, rv)
			ctx := context.Background()
			var conflicts int
			if rv != id.RoomV1 {
				conflicts = len(newSplitV2(states).conflicted)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				res, err := Resolve(ctx, r.roomID, rv, states, r, r.authorise)
				if err != nil {
					b.Fatal(err)
				}
				if len(res) < 10000 {
					b.Fatalf("resolved state has %d entries", len(res))
				}
			}
			if conflicts > 0 {
				b.ReportMetric(float64(conflicts), "conflicts")
			}
		})
	}
}
