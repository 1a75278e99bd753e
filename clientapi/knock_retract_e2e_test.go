package clientapi_test

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"hearth/internal/testserver"
)

// TestSyncRetractedKnock: a user who knocked on a room and retracts the knock
// by leaving sees their leave in the leave section of their next incremental
// sync, whatever the room's history visibility, although they were never in
// the room (Client-Server API, "Knocking on rooms").
func TestSyncRetractedKnock(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		for _, visibility := range []string{"shared", "joined", "invited"} {
			resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Preset: "private_chat", RoomVersion: "10",
				InitialState: []*event.Event{
					{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}},
					{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": visibility}}},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			roomID := resp.RoomID
			bob.api.do("POST", v3+"/knock/"+esc(string(roomID)), map[string]any{"reason": "let me in"}).expect(t, 200, "")
			since := syncSince(t, bob, "", 0).NextBatch
			bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/leave", map[string]any{}).expect(t, 200, "")
			lr := syncSince(t, bob, since, 0).Rooms.Leave[roomID]
			if lr == nil {
				t.Fatalf("%s: no leave section after retracting the knock", visibility)
			}
			found := false
			for _, e := range lr.Timeline.Events {
				var c struct {
					Membership string `json:"membership"`
				}
				_ = json.Unmarshal(e.Content, &c)
				found = found || e.Type == "m.room.member" && e.Sender == bob.id && c.Membership == "leave"
			}
			if !found {
				t.Fatalf("%s: the leave is not in the timeline: %+v", visibility, lr.Timeline.Events)
			}
		}
	})
}
