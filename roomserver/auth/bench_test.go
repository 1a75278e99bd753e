package auth_test

import (
	"fmt"
	"testing"

	"hearth/roomserver/auth"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// BenchmarkAllowed checks a message and a member event (a profile change)
// against a typical auth state: create, power levels listing 100 users,
// join rules, the sender's membership.
func BenchmarkAllowed(b *testing.B) {
	for _, rv := range []id.RoomVersion{id.RoomV1, id.RoomV10, id.RoomV12} {
		r := newRoom(b, rv)
		listed := 3 // alice (not in v12), mod, mod2
		if rv.PrivilegedRoomCreators() {
			listed = 2
		}
		edits := make([]plEdit, 0, 100)
		for i := range 100 - listed {
			edits = append(edits, set(fmt.Sprint(i%50), "users", fmt.Sprintf("@user%d:example.org", i)))
		}
		r.setPowerLevels(edits...)
		events := []struct {
			name string
			evt  *pdu.PDU
		}{
			{"message", r.draft(bob, "m.room.message", nil, `{"msgtype":"m.text","body":"hello"}`)},
			{"member", memberDraft(r, bob, bob, `{"membership":"join","displayname":"Bob"}`)},
		}
		for _, e := range events {
			state := auth.SelectAuthEvents(rv, e.evt, r.lookup)
			b.Run(fmt.Sprintf("v%s/%s", rv, e.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := auth.Allowed(rv, e.evt, r.create, state, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
