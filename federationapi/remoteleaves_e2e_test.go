package federationapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// includeLeave is a /sync filter asking for the rooms the user left.
const includeLeave = `{"room":{"include_leave":true}}`

// leftIn reports whether a /sync response shows userID's leave from roomID in
// the leave section (timeline or state), sent by sender.
func leftIn(resp *mautrix.RespSync, roomID id.RoomID, userID, sender id.UserID) bool {
	lr := resp.Rooms.Leave[roomID]
	if lr == nil {
		return false
	}
	evs := append(append([]*event.Event{}, lr.Timeline.Events...), lr.State.Events...)
	for _, e := range evs {
		if e.Type == event.StateMember && e.GetStateKey() == string(userID) && e.Sender == sender &&
			e.Content.Raw["membership"] == "leave" {
			return true
		}
	}
	return false
}

// pendingInvite reports whether s holds a remote invite of userID to roomID.
func pendingInvite(t *testing.T, s *testserver.Server, userID id.UserID, roomID id.RoomID) bool {
	t.Helper()
	invs, err := s.Federation.PendingInvites(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range invs {
		if inv.RoomID == roomID {
			return true
		}
	}
	return false
}

// TestRemoteInviteLeaves: a user of B holding an invite to a room of A, which
// B is not in, rejects it with POST /leave (make_leave/send_leave through A,
// or, when A will not take it, locally); the inviter rescinds another by
// kicking; a rescission by someone else than the inviter is ignored. Each
// leave shows in the invitee's /sync leave section.
func TestRemoteInviteLeaves(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice, alice2, bob := clientOf(t, a, "alice"), clientOf(t, a, "alice2"), clientOf(t, b, "bob")
		invited := func(inviter *mautrix.Client, extra ...id.UserID) id.RoomID {
			t.Helper()
			resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10", Invite: extra})
			if err != nil {
				t.Fatal(err)
			}
			if inviter != alice {
				if _, err := inviter.JoinRoom(ctx, string(resp.RoomID), nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := inviter.InviteUser(ctx, resp.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatalf("inviting bob: %v", err)
			}
			if !pendingInvite(t, b, bob.UserID, resp.RoomID) {
				t.Fatal("B holds no invite")
			}
			return resp.RoomID
		}
		sync := func(since, filter string) *mautrix.RespSync {
			t.Helper()
			resp, err := bob.SyncRequest(ctx, 0, since, filter, false, "")
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}

		// Rejected through A, which is in the room: A sees the leave.
		rejected := invited(alice)
		since := sync("", "").NextBatch
		if _, err := bob.LeaveRoom(ctx, rejected); err != nil {
			t.Fatalf("rejecting the invite: %v", err)
		}
		if m := membership(t, a, rejected, bob.UserID); m != "leave" {
			t.Fatalf("bob on A after rejecting = %q", m)
		}
		if pendingInvite(t, b, bob.UserID, rejected) {
			t.Fatal("the rejected invite is still pending")
		}
		inc := sync(since, "")
		if !leftIn(inc, rejected, bob.UserID, bob.UserID) || inc.Rooms.Invite[rejected] != nil {
			t.Fatalf("rejection not in the incremental sync: %+v", inc.Rooms)
		}
		if again := sync(inc.NextBatch, ""); again.Rooms.Leave[rejected] != nil {
			t.Fatal("the rejection shows again in the next sync")
		}

		// Rejected locally: nobody of A is left in the room to take it.
		empty := invited(alice)
		if _, err := alice.LeaveRoom(ctx, empty); err != nil {
			t.Fatal(err)
		}
		since = sync("", "").NextBatch
		if _, err := bob.LeaveRoom(ctx, empty); err != nil {
			t.Fatalf("rejecting the invite to the empty room: %v", err)
		}
		if !leftIn(sync(since, ""), empty, bob.UserID, bob.UserID) {
			t.Fatal("local rejection not in the incremental sync")
		}
		if full := sync("", includeLeave); !leftIn(full, empty, bob.UserID, bob.UserID) || !leftIn(full, rejected, bob.UserID, bob.UserID) {
			t.Fatalf("rejections not in an initial sync with include_leave: %+v", full.Rooms.Leave)
		}
		if plain := sync("", ""); len(plain.Rooms.Leave) != 0 {
			t.Fatalf("left rooms in an initial sync without include_leave: %+v", plain.Rooms.Leave)
		}

		// The inviter rescinds an invite: A sends the kick to B, which is not
		// in the room.
		rescinded := invited(alice)
		since = sync("", "").NextBatch
		if _, err := alice.KickUser(ctx, rescinded, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "oops"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "the rescission in B's incremental sync", func() bool {
			return leftIn(sync(since, ""), rescinded, bob.UserID, alice.UserID)
		})
		if pendingInvite(t, b, bob.UserID, rescinded) {
			t.Fatal("the rescinded invite is still pending")
		}

		// Someone else than the inviter cannot rescind it: B cannot check
		// their power without the room's state.
		kept := invited(alice2, alice2.UserID)
		if _, err := alice.KickUser(ctx, kept, &mautrix.ReqKickUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		// A's events to B go in order: once a later one arrived, the kick had.
		marker, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoom(ctx, string(marker.RoomID), &mautrix.ReqJoinRoom{Via: []string{aName}}); err != nil {
			t.Fatal(err)
		}
		msg, err := alice.SendText(ctx, marker.RoomID, "after the kick")
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "the marker on B", func() bool { return hasEvent(b, msg.EventID) })
		if !pendingInvite(t, b, bob.UserID, kept) {
			t.Fatal("a rescission by a non-inviter was taken")
		}

		// A new invite to a room rejected earlier replaces the leave.
		if _, err := alice.InviteUser(ctx, rejected, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		full := sync("", includeLeave)
		if full.Rooms.Invite[rejected] == nil || full.Rooms.Leave[rejected] != nil {
			t.Fatalf("re-invited room: invite %v, leave %v", full.Rooms.Invite[rejected] != nil, full.Rooms.Leave[rejected] != nil)
		}
	})
}

// TestRemoteProfileLookup: GET /profile of a user of another server asks that
// server (GET /_matrix/federation/v1/query/profile).
func TestRemoteProfileLookup(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice, bob := clientOf(t, a, "alice"), clientOf(t, b, "bob")
		if err := alice.SetDisplayName(ctx, "Alice of A"); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name   string
			user   id.UserID
			field  string
			want   string
			status int
		}{
			{"whole profile", alice.UserID, "", "Alice of A", 200},
			{"displayname", alice.UserID, "displayname", "Alice of A", 200},
			{"unset avatar_url", alice.UserID, "avatar_url", "", 404},
			{"unknown user", user(a, "nobody"), "", "", 404},
			{"unknown user's displayname", user(a, "nobody"), "displayname", "", 404},
		}
		for _, tc := range tests {
			var got map[string]any
			var err error
			if tc.field == "" {
				var p *mautrix.RespUserProfile
				if p, err = bob.GetProfile(ctx, tc.user); err == nil {
					got = map[string]any{"displayname": p.DisplayName}
				}
			} else {
				err = bob.GetProfileField(ctx, tc.user, tc.field, &got)
			}
			if tc.status != 200 {
				if status, _ := respErr(err); status != tc.status {
					t.Fatalf("%s: status %d (%v), want %d", tc.name, status, err, tc.status)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if got["displayname"] != tc.want {
				t.Fatalf("%s: %v, want displayname %q", tc.name, got, tc.want)
			}
		}
	})
}
