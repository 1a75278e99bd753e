package federationapi_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestJoinAfterRemoteInviteShowsInvite: a user of B joins a room of A on an
// invite flagged is_direct; their join in B's /sync carries the invite as
// prev_content (with is_direct) and its sender as prev_sender, although B
// holds the invite only as part of the state it joined with.
func TestJoinAfterRemoteInviteShowsInvite(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice, bob := clientOf(t, a, "alice"), clientOf(t, b, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10",
			Invite: []id.UserID{bob.UserID}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.JoinRoom(ctx, string(room), nil); err != nil {
			t.Fatalf("joining on the invite: %v", err)
		}
		var jr *mautrix.SyncJoinedRoom
		eventually(t, waitTime, "the join in /sync", func() bool {
			s, err := bob.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			jr = s.Rooms.Join[room]
			return jr != nil
		})
		var join *event.Event
		for _, e := range append(append([]*event.Event{}, jr.State.Events...), jr.Timeline.Events...) {
			if e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID) && e.Content.Raw["membership"] == "join" {
				join = e
			}
		}
		if join == nil {
			t.Fatal("bob's join is not in /sync")
		}
		raw, err := json.Marshal(join.Unsigned)
		if err != nil {
			t.Fatal(err)
		}
		u := gjson.ParseBytes(raw)
		if u.Get("prev_content.membership").Str != "invite" || !u.Get("prev_content.is_direct").Bool() || u.Get("prev_sender").Str != string(alice.UserID) {
			t.Fatalf("unsigned of bob's join = %s", raw)
		}
	})
}
