package roomserver

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

func TestSyncQueries(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		alice, bob, carol := user("alice"), user("bob"), user("carol")
		remote := id.UserID("@dan:other.test")
		tr := newPublicRoom(t, rs, "10", alice)
		bobJoin := tr.join(bob)
		tr.join(carol)
		tr.state(alice, "m.room.member", string(remote), map[string]any{"membership": "invite"})
		m1 := tr.message(alice, "one")
		topic := tr.state(alice, "m.room.topic", "", map[string]any{"topic": "t"})
		m2 := tr.message(bob, "two")
		tr.state(carol, "m.room.member", string(carol), map[string]any{"membership": "leave"})

		ms, err := rs.MembershipsOf(ctx, bob)
		if err != nil || len(ms) != 1 || ms[0].RoomID != tr.id || ms[0].Membership != "join" || ms[0].EventID != bobJoin.Event.ID() || ms[0].StreamPos != bobJoin.StreamPos {
			t.Fatalf("MembershipsOf(bob) = %+v, %v", ms, err)
		}

		// The newest events in a range, oldest first.
		tl, err := rs.RoomTimeline(ctx, tr.id, m1.StreamPos, m2.StreamPos, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := eventIDs(tl); !slices.Equal(got, []id.EventID{topic.Event.ID(), m2.Event.ID()}) {
			t.Fatalf("RoomTimeline = %v", got)
		}
		if tl, _ := rs.RoomTimeline(ctx, tr.id, 0, m2.StreamPos, 1); len(tl) != 1 || tl[0].ID() != m2.Event.ID() {
			t.Fatalf("RoomTimeline with limit 1 = %v", eventIDs(tl))
		}
		rooms, err := rs.RoomsWithEvents(ctx, m1.StreamPos, m2.StreamPos)
		if err != nil || len(rooms) != 1 || rooms[tr.id] != m2.StreamPos {
			t.Fatalf("RoomsWithEvents = %v, %v", rooms, err)
		}
		at, err := rs.EventsAtPositions(ctx, []int64{m1.StreamPos, m2.StreamPos, 1 << 40})
		if err != nil || len(at) != 2 {
			t.Fatalf("EventsAtPositions = %v, %v", eventIDs(at), err)
		}

		// State: the delta between two snapshots, and a filtered snapshot.
		m1s, err := rs.Event(ctx, m1.Event.ID())
		if err != nil {
			t.Fatal(err)
		}
		m2s, err := rs.Event(ctx, m2.Event.ID())
		if err != nil {
			t.Fatal(err)
		}
		delta, err := rs.StateDelta(ctx, m1s.StateAfter, m2s.StateAfter, nil)
		if err != nil || len(delta) != 1 || delta[0].Event.ID() != topic.Event.ID() {
			t.Fatalf("StateDelta = %+v, %v", delta, err)
		}
		members, err := rs.SnapshotEntries(ctx, m2s.StateAfter, func(k pdu.StateKey) bool { return k.Type == "m.room.member" && k.StateKey != string(alice) })
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, e := range members {
			keys = append(keys, e.Key.StateKey)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{string(bob), string(carol), string(remote)}) {
			t.Fatalf("SnapshotEntries members = %v", keys)
		}

		joined, invited, err := rs.MemberCounts(ctx, tr.id)
		if err != nil || joined != 2 || invited != 1 {
			t.Fatalf("MemberCounts = %d, %d, %v", joined, invited, err)
		}
		heroes, err := rs.Heroes(ctx, tr.id, alice, 5)
		if err != nil || !slices.Equal(heroes, []id.UserID{bob, remote}) {
			t.Fatalf("Heroes = %v, %v", heroes, err)
		}
		local, err := rs.CurrentMemberEvents(ctx, tr.id, "join", testServer)
		if err != nil || len(local) != 2 {
			t.Fatalf("CurrentMemberEvents(local joins) = %v, %v", eventIDs(local), err)
		}
		inv, err := rs.CurrentMemberEvents(ctx, tr.id, "invite", "other.test")
		if err != nil || len(inv) != 1 {
			t.Fatalf("CurrentMemberEvents(remote invites) = %v, %v", eventIDs(inv), err)
		}
	})
}

func eventIDs(evs []*StoredEvent) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.ID()
	}
	return out
}
