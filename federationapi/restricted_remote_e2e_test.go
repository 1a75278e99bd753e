package federationapi_test

import (
	"context"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"hearth/internal/testserver"
)

// TestRestrictedJoinThroughAuthorisingServer: A is in a restricted room of B
// but none of A's users may invite, so none can authorise a join; a user of A
// who meets the room's condition joins through B, whose user signs for it
// (join_authorised_via_users_server), rather than with a local join the auth
// rules would refuse.
func TestRestrictedJoinThroughAuthorisingServer(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		charlie := clientOf(t, b, "charlie")
		alice, bob := clientOf(t, a, "alice"), clientOf(t, a, "bob")
		allowed, err := charlie.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
		if err != nil {
			t.Fatal(err)
		}
		rule := map[string]any{"join_rule": "restricted", "allow": []map[string]any{
			{"type": "m.room_membership", "room_id": allowed.RoomID, "via": []string{bName}},
		}}
		restricted, err := charlie.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: rule}}}})
		if err != nil {
			t.Fatal(err)
		}
		room := restricted.RoomID
		if _, err := charlie.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: alice.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{bName}}); err != nil {
			t.Fatalf("alice joining on invite: %v", err)
		}

		// Not in the allowed room: refused, by A's auth rules or B.
		if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{aName}}); err == nil {
			t.Fatal("bob joined without meeting the condition")
		}
		if _, err := bob.JoinRoom(ctx, string(allowed.RoomID), &mautrix.ReqJoinRoom{Via: []string{bName}}); err != nil {
			t.Fatalf("bob joining the allowed room: %v", err)
		}
		if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{aName}}); err != nil {
			t.Fatalf("bob joining the restricted room: %v", err)
		}
		for name, srv := range map[string]*testserver.Server{"A": a, "B": b} {
			var content gjson.Result
			eventually(t, waitTime, "bob's join on "+name, func() bool {
				e, err := srv.Roomserver.CurrentStateEvent(ctx, room, "m.room.member", string(bob.UserID))
				if err != nil || e == nil {
					return false
				}
				content = gjson.ParseBytes(e.Content())
				return content.Get("membership").Str == "join"
			})
			if via := content.Get("join_authorised_via_users_server").Str; via != string(charlie.UserID) {
				t.Fatalf("bob's join on %s authorised via %q, want %s", name, via, charlie.UserID)
			}
		}
	})
}
