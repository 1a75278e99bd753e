package federationapi_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
)

// TestRoomVersionsOverFederation joins and chats in rooms of several versions:
// origin-based event IDs (v1), strict canonical JSON (v6), the v11 redaction
// rules, and v12 room IDs that are create event IDs.
func TestRoomVersionsOverFederation(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		for _, v := range []id.RoomVersion{"1", "6", "11", "12"} {
			t.Run("v"+string(v), func(t *testing.T) {
				r := createRoom(t, a, v, alice, "public")
				if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{a.Config().ServerName}); err != nil {
					t.Fatalf("join: %v", err)
				}
				eventually(t, waitTime, "bob's join on A", func() bool { return membership(t, a, r.id, bob) == "join" })
				m := r.message(alice, "from A")
				eventually(t, waitTime, "A's message on B", func() bool { return hasEvent(b, m.Event.ID()) })
				rb := &room{t: t, s: b, id: r.id}
				m2 := rb.message(bob, "from B")
				eventually(t, waitTime, "B's message on A", func() bool { return hasEvent(a, m2.Event.ID()) })
			})
		}
	})
}

// TestRestrictedJoin joins a restricted room through its allow condition: the
// resident names one of its users in join_authorised_via_users_server and signs
// the join; a user who meets no condition is refused.
func TestRestrictedJoin(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice, bob, carol := register(t, a, "alice"), register(t, b, "bob"), register(t, b, "carol")
		space := createRoom(t, a, "10", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(space.id), bob, []string{aName}); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "bob in the space on A", func() bool { return membership(t, a, space.id, bob) == "join" })
		r := createRoom(t, a, "10", alice, "invite")
		r.state(alice, "m.room.join_rules", "", map[string]any{"join_rule": "restricted",
			"allow": []any{map[string]any{"type": "m.room_membership", "room_id": space.id}}})
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{aName}); err != nil {
			t.Fatalf("bob joining the restricted room: %v", err)
		}
		_, join, err := a.Roomserver.Membership(ctx, r.id, bob)
		if err != nil || join == nil {
			t.Fatalf("bob's join on A: %v", err)
		}
		if via := gjson.GetBytes(join.Content(), "join_authorised_via_users_server").Str; via != string(alice) {
			t.Fatalf("join_authorised_via_users_server = %q", via)
		}
		if len(join.PDU().Signatures[aName]) == 0 {
			t.Fatal("the resident did not sign the restricted join")
		}
		_, err = b.Federation.JoinRemoteRoom(ctx, string(r.id), carol, []string{aName})
		var me *httputil.Error
		if !errors.As(err, &me) || me.ErrCode != "M_FORBIDDEN" {
			t.Fatalf("carol (in no allowed room) joining: %v", err)
		}
		if m := membership(t, a, r.id, carol); m == "join" {
			t.Fatal("carol joined")
		}
		// No allow condition at all: a plain "no". A condition naming a room A
		// is not in: A cannot tell, and says so (another resident might).
		for _, tc := range []struct {
			allow   []any
			errcode string
		}{
			{[]any{}, "M_FORBIDDEN"},
			{[]any{map[string]any{"type": "m.room_membership", "room_id": "!elsewhere:other.example"}}, "M_UNABLE_TO_AUTHORISE_JOIN"},
		} {
			r.state(alice, "m.room.join_rules", "", map[string]any{"join_rule": "restricted", "allow": tc.allow})
			_, err = b.Federation.JoinRemoteRoom(ctx, string(r.id), carol, []string{aName})
			if !errors.As(err, &me) || me.ErrCode != tc.errcode {
				t.Fatalf("carol joining with allow %v: %v, want %s", tc.allow, err, tc.errcode)
			}
		}
	})
}
