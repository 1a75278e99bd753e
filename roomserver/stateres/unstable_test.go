package stateres

import (
	"context"
	"maps"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// TestResolveUnstableVersion: a room of an unstable version (MSC3757's
// org.matrix.msc3757.*) is resolved with the algorithm and rules of its base
// version, and the auth function is given the room's own version, whose
// extra rules only it knows.
func TestResolveUnstableVersion(t *testing.T) {
	for _, rv := range []id.RoomVersion{"org.matrix.msc3757.10", "org.matrix.msc3757.11"} {
		t.Run(string(rv), func(t *testing.T) {
			base := roomversion.SpecVersion(rv)
			r, b0 := initialRoom(t, base, nil)
			powerLevels1(b0, "P0", alice, map[id.UserID]int{alice: 100, bob: 50}, nil)
			a, b := b0.fork(), b0.fork()
			topic(a, "TA", bob)
			powerLevels1(a, "PA", alice, map[id.UserID]int{alice: 100, bob: 0}, nil)
			topic(b, "TB", bob)
			want := r.resolve(a.state, b.state)

			seen := map[id.RoomVersion]int{}
			authorise := func(v id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU) error {
				seen[v]++
				return r.authorise(roomversion.SpecVersion(v), evt, authEvents)
			}
			got, err := Resolve(context.Background(), r.roomID, rv, []StateMap{a.state, b.state}, r, authorise)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if !maps.Equal(got, want) {
				t.Errorf("got\n%s\nwant (as %s)\n%s", r.describe(got), base, r.describe(want))
			}
			if len(seen) != 1 || seen[rv] == 0 {
				t.Errorf("auth function was given versions %v, want only %s", seen, rv)
			}
		})
	}
	if _, err := Resolve(context.Background(), "!r:x", "org.matrix.msc3757.9", []StateMap{{}, {}}, nil, nil); err == nil {
		t.Error("unknown unstable version resolved")
	}
}
