package clientapi_test

import (
	"net/url"
	"slices"
	"testing"

	"hearth/internal/testserver"
)

// TestMembersAtSyncPrevBatch: GET /members?at= with the prev_batch of a /sync
// timeline gives the members as of that place in the room: after bob joined
// and spoke, alice's initial sync (whole room, not limited) still names only
// her, a limited timeline's prev_batch the members before its first event, and
// an incremental timeline's those before bob's join. Paging /messages back from
// the whole room's prev_batch returns the room's events at that sync point.
func TestMembersAtSyncPrevBatch(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob, carol := registerUser(t, s, "alice"), registerUser(t, s, "bob"), registerUser(t, s, "carol")
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		hello := rtText(t, alice, roomID, "Hello world!")

		whole := syncDo(t, alice, url.Values{"timeout": {"0"}})
		wholeTL := whole.Rooms.Join[roomID].Timeline
		if wholeTL.Limited || len(wholeTL.Events) == 0 || wholeTL.Events[0].Type != "m.room.create" || wholeTL.PrevBatch == "" {
			t.Fatalf("initial timeline: limited=%v prev_batch=%q events=%d", wholeTL.Limited, wholeTL.PrevBatch, len(wholeTL.Events))
		}
		rtJoin(t, carol, string(roomID)).expect(t, 200, "")
		limited := syncDo(t, alice, url.Values{"timeout": {"0"}, "filter": {`{"room":{"timeline":{"limit":1}}}`}})
		limitedTL := limited.Rooms.Join[roomID].Timeline
		if !limitedTL.Limited || len(limitedTL.Events) != 1 || limitedTL.Events[0].Sender != carol.id {
			t.Fatalf("limited timeline: limited=%v events=%v", limitedTL.Limited, limitedTL.Events)
		}
		rtJoin(t, bob, string(roomID)).expect(t, 200, "")
		incr := syncDo(t, alice, url.Values{"timeout": {"0"}, "since": {limited.NextBatch}})
		incrTL := incr.Rooms.Join[roomID].Timeline
		if len(incrTL.Events) == 0 || incrTL.Events[0].Sender != bob.id {
			t.Fatalf("incremental timeline: %v", incrTL.Events)
		}
		rtText(t, bob, roomID, "Hello back")

		for _, c := range []struct {
			name, at string
			want     []string
		}{
			{"whole room", wholeTL.PrevBatch, []string{string(alice.id)}},
			{"limited", limitedTL.PrevBatch, []string{string(alice.id)}},
			{"incremental", incrTL.PrevBatch, []string{string(alice.id), string(carol.id)}},
			{"current", "", []string{string(alice.id), string(bob.id), string(carol.id)}},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := alice.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/members?at="+url.QueryEscape(c.at), nil).expect(t, 200, "")
				var got []string
				for _, e := range rtEvents(t, r.body["chunk"]) {
					if e["type"] != "m.room.member" || e["room_id"] != string(roomID) {
						t.Fatalf("not a member event of the room: %v", e)
					}
					got = append(got, e["state_key"].(string))
				}
				slices.Sort(got)
				slices.Sort(c.want)
				if !slices.Equal(got, c.want) {
					t.Fatalf("members at %q = %v, want %v", c.at, got, c.want)
				}
			})
		}

		// /messages back from the whole room's prev_batch: the room as of that
		// sync, newest first, down to the create event.
		page := rtMessages(t, alice, roomID, url.Values{"dir": {"b"}, "limit": {"50"}, "from": {wholeTL.PrevBatch}}).expect(t, 200, "")
		evs := rtEvents(t, page.body["chunk"])
		if len(evs) != len(wholeTL.Events) || evs[0]["event_id"] != string(hello) || evs[len(evs)-1]["type"] != "m.room.create" {
			t.Fatalf("/messages from the whole room's prev_batch = %d events (want %d): %s", len(evs), len(wholeTL.Events), page)
		}
	})
}
