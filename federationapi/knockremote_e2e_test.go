package federationapi_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestKnockOnRemoteRoom: a user on B knocks on a room on A through the client
// API (make_knock/send_knock); A records the knock, B's /sync shows it in the
// knock section with the room's state, and an invite then a join answer it.
func TestKnockOnRemoteRoom(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice, bob := clientOf(t, a, "alice"), clientOf(t, b, "bob")
		knockRule := []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}
		create := func(req *mautrix.ReqCreateRoom) id.RoomID {
			t.Helper()
			resp, err := alice.CreateRoom(ctx, req)
			if err != nil {
				t.Fatalf("creating %s: %v", req.Name, err)
			}
			return resp.RoomID
		}
		room := create(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Knock here", RoomVersion: "10", InitialState: knockRule, RoomAliasName: "door"})
		public := create(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Open", RoomVersion: "10"})
		old := create(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Old", RoomVersion: "6"})

		first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(first.Rooms.Knock) != 0 {
			t.Fatalf("knocks before knocking: %v", first.Rooms.Knock)
		}

		tests := []struct {
			name   string
			target string
			via    []string
			status int
		}{
			{"public room: knocking not allowed", string(public), []string{aName}, 403},
			{"room version without knocking", string(old), []string{aName}, 400},
			{"unknown room", "!nowhere:" + aName, nil, 404},
			{"unknown alias", "#nowhere:" + aName, nil, 404},
			{"bad via", string(room), []string{"bad server/x"}, 400},
			{"neither ID nor alias", "lobby", nil, 400},
			{"by ID with via", string(room), []string{aName}, 200},
			{"again by alias", "#door:" + aName, nil, 200},
		}
		for _, tc := range tests {
			resp, err := bob.KnockRoom(ctx, tc.target, &mautrix.ReqKnockRoom{Via: tc.via, Reason: "let me in"})
			if tc.status != 200 {
				if status, _ := respErr(err); status != tc.status {
					t.Fatalf("%s: status %d (%v), want %d", tc.name, status, err, tc.status)
				}
				continue
			}
			if err != nil || resp.RoomID != room {
				t.Fatalf("%s: %+v, %v", tc.name, resp, err)
			}
		}
		if m := membership(t, a, room, bob.UserID); m != "knock" {
			t.Fatalf("bob's membership on A = %q, want knock", m)
		}
		knocks, err := b.Federation.PendingKnocks(ctx, bob.UserID)
		if err != nil || len(knocks) != 1 || knocks[0].RoomID != room {
			t.Fatalf("pending knocks = %+v, %v; want one on %s", knocks, err, room)
		}

		// The knock shows in B's incremental /sync with the room's state.
		inc, err := bob.SyncRequest(ctx, 0, first.NextBatch, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		kr := inc.Rooms.Knock[room]
		if kr == nil {
			t.Fatalf("knock not in /sync: %+v", inc.Rooms)
		}
		var name string
		var ownKnock bool
		for _, e := range kr.State.Events {
			switch {
			case e.Type == event.StateRoomName:
				name, _ = e.Content.Raw["name"].(string)
			case e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID):
				ownKnock = e.Content.Raw["membership"] == "knock" && e.Content.Raw["reason"] == "let me in"
			}
		}
		if name != "Knock here" || !ownKnock {
			t.Fatalf("knock_state: name %q, own knock %v (%d events)", name, ownKnock, len(kr.State.Events))
		}

		// A knock is retracted by leaving: make_leave/send_leave through A.
		second := create(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Second door", RoomVersion: "10", InitialState: knockRule})
		if _, err := bob.KnockRoom(ctx, string(second), &mautrix.ReqKnockRoom{Via: []string{aName}}); err != nil {
			t.Fatalf("knocking on the second room: %v", err)
		}
		if _, err := bob.LeaveRoom(ctx, second); err != nil {
			t.Fatalf("retracting the knock: %v", err)
		}
		if m := membership(t, a, second, bob.UserID); m != "leave" {
			t.Fatalf("bob's membership of the second room on A = %q, want leave", m)
		}
		if knocks, err := b.Federation.PendingKnocks(ctx, bob.UserID); err != nil || len(knocks) != 1 || knocks[0].RoomID != room {
			t.Fatalf("pending knocks after retracting = %+v, %v", knocks, err)
		}

		// Alice lets bob in: the invite replaces the knock, the join ends it.
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("inviting bob: %v", err)
		}
		eventually(t, 10*time.Second, "the invite reaching B", func() bool {
			s, err := bob.SyncRequest(ctx, 0, "", "", false, "")
			return err == nil && s.Rooms.Invite[room] != nil && s.Rooms.Knock[room] == nil
		})
		if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{aName}}); err != nil {
			t.Fatalf("joining after the invite: %v", err)
		}
		if knocks, err := b.Federation.PendingKnocks(ctx, bob.UserID); err != nil || len(knocks) != 0 {
			t.Fatalf("pending knocks after the join = %+v, %v", knocks, err)
		}
		s, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil || s.Rooms.Join[room] == nil || s.Rooms.Knock[room] != nil {
			t.Fatalf("sync after the join: %v; joined %v knock %v", err, s.Rooms.Join[room] != nil, s.Rooms.Knock[room] != nil)
		}
	})
}
