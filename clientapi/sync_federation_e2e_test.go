package clientapi_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"

	"hearth/internal/testserver"
	"hearth/storage/storagetest"
)

// TestSyncFederatedInvite: an invite from another server appears in the
// invitee's sync with the stripped state the inviting server sent, and after
// the join, messages from the other server wake the invitee's long poll.
func TestSyncFederatedInvite(t *testing.T) {
	for kind := range storagetest.DSNs(t) {
		t.Run(kind, func(t *testing.T) {
			a := testserver.Start(t, storagetest.DSNs(t)[kind], testserver.Federated)
			b := testserver.Start(t, storagetest.DSNs(t)[kind], testserver.Federated)
			a.ClientAPI.Accounts().SetBcryptCost(4)
			b.ClientAPI.Accounts().SetBcryptCost(4)
			ctx := context.Background()
			alice := registerUser(t, a, "alice")
			bob := registerUser(t, b, "bob")
			r := syncSince(t, bob, "", 0)

			resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "across"})
			if err != nil {
				t.Fatal(err)
			}
			roomID := resp.RoomID
			if _, err := alice.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
				t.Fatalf("inviting a remote user: %v", err)
			}
			r = syncSince(t, bob, r.NextBatch, 10*time.Second)
			inv, ok := r.Rooms.Invite[roomID]
			if !ok {
				t.Fatalf("remote invite not in sync: %+v", r.Rooms)
			}
			var name bool
			for _, e := range inv.InviteState.Events {
				name = name || e.Type == "m.room.name" && gjson.GetBytes(e.Content, "name").Str == "across"
			}
			if !name {
				t.Fatalf("invite_state lacks the room name: %+v", inv.InviteState.Events)
			}
			// Not sent again while unchanged.
			if again := syncSince(t, bob, r.NextBatch, 0); len(again.Rooms.Invite) != 0 {
				t.Fatalf("invite sent again: %+v", again.Rooms.Invite)
			}

			if _, err := bob.cli.JoinRoom(ctx, string(roomID), &mautrix.ReqJoinRoom{Via: []string{a.Config().ServerName}}); err != nil {
				t.Fatalf("joining over federation: %v", err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for r.Rooms.Join[roomID] == nil && time.Now().Before(deadline) {
				r = syncSince(t, bob, r.NextBatch, time.Second)
			}
			if r.Rooms.Join[roomID] == nil {
				t.Fatalf("joined room not in sync")
			}
			// A message on A reaches bob's long poll on B.
			done := make(chan *syncResp, 1)
			since := r.NextBatch
			go func() { done <- syncSince(t, bob, since, 10*time.Second) }()
			stWaitWaiting(t, b, bob.id)
			sent := time.Now()
			stText(t, alice, roomID, "over the wire")
			var got *syncResp
			select {
			case got = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("long poll not woken by a federated message")
			}
			t.Logf("federated send → long-poll answer: %v", time.Since(sent))
			for got.Rooms.Join[roomID] == nil || !slices.Contains(stBodies(got.Rooms.Join[roomID]), "over the wire") {
				if time.Since(sent) > 10*time.Second {
					t.Fatalf("message not synced: %+v", got.Rooms.Join)
				}
				got = syncSince(t, bob, got.NextBatch, time.Second)
			}
		})
	}
}
