package clientapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/syncstream"
	"hearth/config"
	"hearth/internal/testserver"
	"hearth/storage"
)

func TestCreateRoomPresets(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		cases := []struct {
			name      string
			body      map[string]any
			joinRule  string
			guest     string  // "": no m.room.guest_access event (forbidden)
			bobPower  float64 // bob's power level (v10), -1: not listed
			published bool
		}{
			{"private_chat", map[string]any{"preset": "private_chat", "invite": []string{string(bob.id)}}, "invite", "can_join", -1, false},
			{"public_chat", map[string]any{"preset": "public_chat"}, "public", "", -1, false},
			{"trusted_private_chat", map[string]any{"preset": "trusted_private_chat", "invite": []string{string(bob.id)}}, "invite", "can_join", 100, false},
			{"visibility public implies public_chat", map[string]any{"visibility": "public"}, "public", "", -1, true},
			{"no preset is private", map[string]any{}, "invite", "can_join", -1, false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				tc.body["room_version"] = "10"
				roomID := rtCreateRoom(t, alice, tc.body)
				if got := rtStateContent(t, alice, roomID, "m.room.join_rules", "")["join_rule"]; got != tc.joinRule {
					t.Errorf("join_rule = %v, want %s", got, tc.joinRule)
				}
				if got := rtStateContent(t, alice, roomID, "m.room.history_visibility", "")["history_visibility"]; got != "shared" {
					t.Errorf("history_visibility = %v", got)
				}
				if tc.guest == "" {
					var ga map[string]any
					err := alice.cli.StateEvent(context.Background(), roomID, event.NewEventType("m.room.guest_access"), "", &ga)
					if !errors.Is(err, mautrix.MNotFound) {
						t.Errorf("guest_access event: %v, %v; want none", ga, err)
					}
				} else if got := rtStateContent(t, alice, roomID, "m.room.guest_access", "")["guest_access"]; got != tc.guest {
					t.Errorf("guest_access = %v, want %s", got, tc.guest)
				}
				pl := rtStateContent(t, alice, roomID, "m.room.power_levels", "")
				if got := rtField(pl, "users", string(alice.id)); got != float64(100) {
					t.Errorf("creator power = %v", got)
				}
				got, listed := rtField(pl, "users").(map[string]any)[string(bob.id)]
				if (tc.bobPower < 0) == listed || (listed && got != tc.bobPower) {
					t.Errorf("bob's power = %v (listed %v), want %v", got, listed, tc.bobPower)
				}
				vis := alice.api.do("GET", v3+"/directory/list/room/"+esc(string(roomID)), nil).expect(t, 200, "")
				if (vis.str("visibility") == "public") != tc.published {
					t.Errorf("directory visibility = %s", vis.str("visibility"))
				}
			})
		}

		t.Run("name topic alias initial_state creation_content override", func(t *testing.T) {
			roomID := rtCreateRoom(t, alice, map[string]any{
				"name": "Kitchen", "topic": "Dinner plans", "room_alias_name": "kitchen",
				"initial_state": []any{
					map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
					map[string]any{"type": "m.room.name", "content": map[string]any{"name": "overridden by name"}},
					map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}},
				},
				"creation_content":             map[string]any{"type": "m.space", "m.federate": false, "creator": "@evil:hs.test"},
				"power_level_content_override": map[string]any{"events_default": 10},
			})
			if got := rtStateContent(t, alice, roomID, "m.room.name", "")["name"]; got != "Kitchen" {
				t.Errorf("name = %v", got)
			}
			if got := rtStateContent(t, alice, roomID, "m.room.topic", "")["topic"]; got != "Dinner plans" {
				t.Errorf("topic = %v", got)
			}
			if got := rtStateContent(t, alice, roomID, "m.room.canonical_alias", "")["alias"]; got != "#kitchen:hs.test" {
				t.Errorf("canonical alias = %v", got)
			}
			if got := rtStateContent(t, alice, roomID, "m.room.encryption", "")["algorithm"]; got != "m.megolm.v1.aes-sha2" {
				t.Errorf("encryption = %v", got)
			}
			if got := rtStateContent(t, alice, roomID, "m.room.history_visibility", "")["history_visibility"]; got != "joined" {
				t.Errorf("initial_state did not take precedence over the preset: %v", got)
			}
			create := rtStateContent(t, alice, roomID, "m.room.create", "")
			if create["type"] != "m.space" || create["m.federate"] != false || create["creator"] != string(alice.id) || create["room_version"] != s.Config().Rooms.DefaultVersion {
				t.Errorf("create content = %v", create)
			}
			if got := rtStateContent(t, alice, roomID, "m.room.power_levels", "")["events_default"]; got != float64(10) {
				t.Errorf("events_default = %v", got)
			}
			res, err := alice.cli.ResolveAlias(context.Background(), "#kitchen:hs.test")
			if err != nil || res.RoomID != roomID {
				t.Fatalf("alias resolves to %v, %v", res, err)
			}
			// The alias is taken now.
			alice.api.do("POST", v3+"/createRoom", map[string]any{"room_alias_name": "kitchen"}).expect(t, 400, "M_ROOM_IN_USE")
		})

		t.Run("room version 12 trusted_private_chat", func(t *testing.T) {
			roomID := rtCreateRoom(t, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat", "invite": []string{string(bob.id)}})
			create := rtStateContent(t, alice, roomID, "m.room.create", "")
			if rtJSON(create["additional_creators"]) != rtJSON([]string{string(bob.id)}) {
				t.Errorf("additional_creators = %v", create["additional_creators"])
			}
			pl := rtStateContent(t, alice, roomID, "m.room.power_levels", "")
			if len(pl["users"].(map[string]any)) != 0 {
				t.Errorf("v12 creators listed in users: %v", pl["users"])
			}
			if rtField(pl, "events", "m.room.tombstone") != float64(150) {
				t.Errorf("tombstone level = %v", rtField(pl, "events", "m.room.tombstone"))
			}
		})

		t.Run("unsupported room version", func(t *testing.T) {
			_, err := alice.cli.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{RoomVersion: "99"})
			if rtErrcode(err) != "M_UNSUPPORTED_ROOM_VERSION" {
				t.Fatalf("err = %v", err)
			}
		})

		t.Run("override that removes the creator's power", func(t *testing.T) {
			alice.api.do("POST", v3+"/createRoom", map[string]any{
				"room_version": "10", "name": "x",
				"power_level_content_override": map[string]any{"users": map[string]any{}, "state_default": 50},
			}).expect(t, 400, "M_INVALID_ROOM_STATE")
		})
	})
}

func TestMembershipLifecycle(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		us := rtUsers(t, s, "alice", "bob", "carol")
		alice, bob, carol := us[0], us[1], us[2]
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "family"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := room.RoomID
		// Not invited: no entry to an invite-only room.
		if _, err := carol.cli.JoinRoomByID(ctx, roomID); rtErrcode(err) != "M_FORBIDDEN" {
			t.Fatalf("uninvited join: %v", err)
		}
		if _, err := alice.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		// The invite carries bob's profile-less membership and is_direct stays off.
		if m := rtStateContent(t, alice, roomID, "m.room.member", string(bob.id)); m["membership"] != "invite" {
			t.Fatalf("bob's member event = %v", m)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(roomID), nil); err != nil {
			t.Fatal(err)
		}
		jr, err := bob.cli.JoinedRooms(ctx)
		if err != nil || len(jr.JoinedRooms) != 1 || jr.JoinedRooms[0] != roomID {
			t.Fatalf("joined rooms = %v, %v", jr, err)
		}
		members, err := alice.cli.JoinedMembers(ctx, roomID)
		if err != nil || len(members.Joined) != 2 {
			t.Fatalf("joined members = %v, %v", members, err)
		}
		// Joining again is a no-op.
		if _, err := bob.cli.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		// Bob may not kick or ban (power 0).
		if _, err := bob.cli.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: alice.id}); rtErrcode(err) != "M_FORBIDDEN" {
			t.Fatalf("kick by bob: %v", err)
		}
		// Kick, re-invite, ban: a ban stops a rejoin, even with an invite attempt.
		if _, err := alice.cli.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: bob.id, Reason: "tidy"}); err != nil {
			t.Fatal(err)
		}
		if m := rtStateContent(t, alice, roomID, "m.room.member", string(bob.id)); m["membership"] != "leave" || m["reason"] != "tidy" {
			t.Fatalf("after kick: %v", m)
		}
		if _, err := alice.cli.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: bob.id, Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, roomID); rtErrcode(err) != "M_FORBIDDEN" {
			t.Fatalf("banned join: %v", err)
		}
		if _, err := alice.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.id}); rtErrcode(err) != "M_FORBIDDEN" {
			t.Fatalf("invite of banned user: %v", err)
		}
		if _, err := alice.cli.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: carol.id}); rtErrcode(err) != "M_FORBIDDEN" {
			t.Fatalf("unban of a user not banned: %v", err)
		}
		if _, err := alice.cli.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		// Unbanned is not invited.
		if _, err := bob.cli.JoinRoomByID(ctx, roomID); rtErrcode(err) != "M_FORBIDDEN" {
			t.Fatalf("join after unban: %v", err)
		}
		// Carol: invited, rejects; forgets; leaving twice is fine.
		if _, err := alice.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: carol.id}); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.cli.ForgetRoom(ctx, roomID); rtErrcode(err) != "M_UNKNOWN" {
			t.Fatalf("forget while invited: %v", err)
		}
		if _, err := carol.cli.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.cli.LeaveRoom(ctx, roomID); err != nil {
			t.Fatalf("second leave: %v", err)
		}
		if _, err := carol.cli.ForgetRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		forgotten, err := s.ClientAPI.ForgottenRooms(ctx, carol.id)
		if _, ok := forgotten[roomID]; err != nil || !ok {
			t.Fatalf("forgotten rooms = %v, %v", forgotten, err)
		}
		// Inviting a user who does not exist.
		alice.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/invite", map[string]any{"user_id": "@nobody:hs.test"}).expect(t, 404, "M_NOT_FOUND")
		// Knocking (room v7+ with join rule knock).
		knockRoom := rtCreateRoom(t, alice, map[string]any{"room_version": "10", "initial_state": []any{
			map[string]any{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}}}})
		if _, err := carol.cli.KnockRoom(ctx, string(knockRoom), &mautrix.ReqKnockRoom{Reason: "let me in"}); err != nil {
			t.Fatal(err)
		}
		if m := rtStateContent(t, alice, knockRoom, "m.room.member", string(carol.id)); m["membership"] != "knock" {
			t.Fatalf("knock: %v", m)
		}
		// Rooms this server does not know: unknown here, unreachable elsewhere.
		carol.api.do("POST", v3+"/join/"+esc("!unknown:hs.test"), map[string]any{}).expect(t, 404, "M_NOT_FOUND")
		carol.api.do("POST", v3+"/join/"+esc("!unknown:unreachable.invalid"), map[string]any{}).expect(t, 404, "M_NOT_FOUND")
	})
}

func TestJoinByAliasAndPublicDirectory(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		pub := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Garden club", "topic": "tomatoes", "room_alias_name": "garden"})
		rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Chess"})
		rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Unlisted"})
		res, err := bob.cli.JoinRoom(ctx, "#garden:hs.test", nil)
		if err != nil || res.RoomID != pub {
			t.Fatalf("join by alias: %v, %v", res, err)
		}
		list, err := bob.cli.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Chunk) != 2 || list.Chunk[0].RoomID != pub || list.Chunk[0].NumJoinedMembers != 2 ||
			list.Chunk[0].Name != "Garden club" || list.Chunk[0].Topic != "tomatoes" || list.Chunk[0].CanonicalAlias != "#garden:hs.test" {
			t.Fatalf("public rooms = %s", rtJSON(list))
		}
		// Search and pagination.
		r := bob.api.do("POST", v3+"/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": "CHESS"}}).expect(t, 200, "")
		if chunk := r.body["chunk"].([]any); len(chunk) != 1 || rtField(chunk[0], "name") != "Chess" {
			t.Fatalf("search = %s", r)
		}
		p1 := bob.api.do("GET", v3+"/publicRooms?limit=1", nil).expect(t, 200, "")
		next := p1.str("next_batch")
		if next == "" || len(p1.body["chunk"].([]any)) != 1 {
			t.Fatalf("page 1 = %s", p1)
		}
		p2 := bob.api.do("GET", v3+"/publicRooms?limit=1&since="+url.QueryEscape(next), nil).expect(t, 200, "")
		if p2.str("next_batch") != "" || p2.str("prev_batch") == "" || rtField(p2.body["chunk"].([]any)[0], "name") != "Chess" {
			t.Fatalf("page 2 = %s", p2)
		}
		// Unpublish: only a member with power may.
		bob.api.do("PUT", v3+"/directory/list/room/"+esc(string(pub)), map[string]any{"visibility": "private"}).expect(t, 403, "M_FORBIDDEN")
		alice.api.do("PUT", v3+"/directory/list/room/"+esc(string(pub)), map[string]any{"visibility": "private"}).expect(t, 200, "")
		if l, _ := bob.cli.PublicRooms(ctx, &mautrix.ReqPublicRooms{}); len(l.Chunk) != 1 {
			t.Fatalf("after unpublishing: %s", rtJSON(l))
		}
		alice.api.do("GET", v3+"/directory/list/room/"+esc("!nope:hs.test"), nil).expect(t, 404, "M_NOT_FOUND")
		alice.api.do("GET", v3+"/publicRooms?server=elsewhere.test", nil).expect(t, 404, "M_UNRECOGNIZED")
	})
}

func TestAliases(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		other := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		if _, err := alice.cli.CreateAlias(ctx, "#home:hs.test", roomID); err != nil {
			t.Fatal(err)
		}
		alice.api.do("PUT", v3+"/directory/room/"+esc("#home:hs.test"), map[string]any{"room_id": other}).expect(t, 409, "M_UNKNOWN")
		alice.api.do("PUT", v3+"/directory/room/"+esc("#home:other.test"), map[string]any{"room_id": roomID}).expect(t, 400, "M_INVALID_PARAM")
		alice.api.do("PUT", v3+"/directory/room/"+esc("home"), map[string]any{"room_id": roomID}).expect(t, 400, "M_INVALID_PARAM")
		// Bob is not in the room: he may not add aliases to it.
		bob.api.do("PUT", v3+"/directory/room/"+esc("#bobs:hs.test"), map[string]any{"room_id": roomID}).expect(t, 403, "M_FORBIDDEN")
		res, err := bob.cli.ResolveAlias(ctx, "#home:hs.test")
		if err != nil || res.RoomID != roomID || len(res.Servers) != 1 || res.Servers[0] != "hs.test" {
			t.Fatalf("resolve = %v, %v", res, err)
		}
		// Canonical alias: only aliases pointing here.
		rtState(t, alice, roomID, "m.room.canonical_alias", "", map[string]any{"alias": "#home:hs.test"}).expect(t, 200, "")
		rtState(t, alice, other, "m.room.canonical_alias", "", map[string]any{"alias": "#home:hs.test"}).expect(t, 400, "M_BAD_ALIAS")
		rtState(t, alice, roomID, "m.room.canonical_alias", "", map[string]any{"alias": "#home:hs.test", "alt_aliases": []string{"not an alias"}}).expect(t, 400, "M_INVALID_PARAM")
		al, err := alice.cli.GetAliases(ctx, roomID)
		if err != nil || len(al.Aliases) != 1 {
			t.Fatalf("aliases = %v, %v", al, err)
		}
		bob.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/aliases", nil).expect(t, 403, "M_FORBIDDEN")
		// Bob joins but has no power: he may not delete the alias.
		rtJoin(t, bob, string(roomID)).expect(t, 200, "")
		bob.api.do("DELETE", v3+"/directory/room/"+esc("#home:hs.test"), nil).expect(t, 403, "M_FORBIDDEN")
		if _, err := alice.cli.DeleteAlias(ctx, "#home:hs.test"); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.ResolveAlias(ctx, "#home:hs.test"); rtErrcode(err) != "M_NOT_FOUND" {
			t.Fatalf("resolve after delete: %v", err)
		}
		// The deleted alias left the canonical alias event.
		if c := rtStateContent(t, alice, roomID, "m.room.canonical_alias", ""); c["alias"] != nil {
			t.Fatalf("canonical alias after delete = %v", c)
		}
		alice.api.do("DELETE", v3+"/directory/room/"+esc("#home:hs.test"), nil).expect(t, 404, "M_NOT_FOUND")
	})
}

func TestSendAndTransactionIDs(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		roomID := rtCreateRoom(t, alice, map[string]any{})
		path := v3 + "/rooms/" + esc(string(roomID)) + "/send/m.room.message/txn1"
		first := alice.api.do("PUT", path, map[string]any{"msgtype": "m.text", "body": "once"}).expect(t, 200, "")
		again := alice.api.do("PUT", path, map[string]any{"msgtype": "m.text", "body": "once"}).expect(t, 200, "")
		if first.str("event_id") == "" || first.str("event_id") != again.str("event_id") {
			t.Fatalf("retry gave %s then %s", first, again)
		}
		// The same transaction ID on another path or from another device is new.
		other := alice.api.do("PUT", v3+"/rooms/"+esc(string(roomID))+"/send/m.custom/txn1", map[string]any{}).expect(t, 200, "")
		_, dev2 := login(t, s, "alice", alice.password)
		third := dev2.do("PUT", path, map[string]any{"msgtype": "m.text", "body": "once"}).expect(t, 200, "")
		if other.str("event_id") == first.str("event_id") || third.str("event_id") == first.str("event_id") {
			t.Fatal("transaction IDs leaked across paths or devices")
		}
		// transaction_id goes to the sending device only.
		q := url.Values{"dir": {"b"}, "limit": {"3"}}
		mine := rtEvents(t, rtMessages(t, alice, roomID, q).expect(t, 200, "").body["chunk"])
		theirs := rtEvents(t, dev2.do("GET", v3+"/rooms/"+esc(string(roomID))+"/messages?"+q.Encode(), nil).expect(t, 200, "").body["chunk"])
		for i, e := range mine {
			if e["event_id"] == first.str("event_id") && rtField(e, "unsigned", "transaction_id") != "txn1" {
				t.Errorf("own event lacks transaction_id: %v", e)
			}
			if rtField(theirs[i], "unsigned", "transaction_id") != nil && theirs[i]["event_id"] != third.str("event_id") {
				t.Errorf("another device got a transaction_id: %v", theirs[i])
			}
			if rtField(e, "unsigned", "age") == nil {
				t.Errorf("no age: %v", e)
			}
		}
		// Redactions through /send: content.redacts moves to the top level (v10).
		red := rtSend(t, alice, roomID, "m.room.redaction", map[string]any{"redacts": other.str("event_id"), "reason": "oops"})
		ev := alice.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/event/"+esc(string(red)), nil).expect(t, 200, "")
		if ev.str("redacts") != other.str("event_id") || rtField(ev.body, "content", "redacts") != other.str("event_id") {
			t.Fatalf("redaction event = %s", ev)
		}
	})
}

func TestTransactionIDsSurviveRestart(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		roomID := rtCreateRoom(t, alice, map[string]any{})
		path := v3 + "/rooms/" + esc(string(roomID)) + "/send/m.room.message/restart"
		first := alice.api.do("PUT", path, map[string]any{"body": "x", "msgtype": "m.text"}).expect(t, 200, "")
		s.Stop()
		s.Restart(t)
		again := newAPI(t, s, alice.token).do("PUT", path, map[string]any{"body": "x", "msgtype": "m.text"}).expect(t, 200, "")
		if again.str("event_id") != first.str("event_id") {
			t.Fatalf("after restart: %s, want %s", again, first)
		}
	})
}

func TestMessagesPagination(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		roomID := rtCreateRoom(t, alice, map[string]any{"name": "history"})
		var sent []string
		for i := range 25 {
			sent = append(sent, string(rtText(t, alice, roomID, fmt.Sprintf("message %d", i))))
		}
		// Backward from the end to the create event, 7 at a time, with mautrix's client.
		var seen []*event.Event
		from := ""
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("pagination does not end")
			}
			res, err := alice.cli.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Chunk) > 7 {
				t.Fatalf("page of %d", len(res.Chunk))
			}
			seen = append(seen, res.Chunk...)
			if res.End == "" {
				break
			}
			from = res.End
		}
		if last := seen[len(seen)-1]; last.Type != event.StateCreate {
			t.Fatalf("pagination ended at %s, not the create event", last.Type)
		}
		for i := range sent {
			if string(seen[i].ID) != sent[len(sent)-1-i] {
				t.Fatalf("event %d is %s, want %s", i, seen[i].ID, sent[len(sent)-1-i])
			}
		}
		ids := map[id.EventID]bool{}
		for _, e := range seen {
			if ids[e.ID] {
				t.Fatalf("event %s twice", e.ID)
			}
			ids[e.ID] = true
		}
		// Forward from the start comes back in order.
		fwd, err := alice.cli.Messages(ctx, roomID, "", "", mautrix.DirectionForward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(fwd.Chunk) != len(seen) || fwd.Chunk[0].Type != event.StateCreate || string(fwd.Chunk[len(fwd.Chunk)-1].ID) != sent[24] {
			t.Fatalf("forward: %d events", len(fwd.Chunk))
		}
		if fwd.End != "" {
			t.Fatalf("forward pagination to the end returned end %q", fwd.End)
		}
		// A filter: only messages, only 3, contains_url false.
		f := &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}
		filtered, err := alice.cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, f, 3)
		if err != nil || len(filtered.Chunk) != 3 || filtered.Chunk[0].Type != event.EventMessage {
			t.Fatalf("filtered: %v %v", filtered, err)
		}
		nothing := rtMessages(t, alice, roomID, url.Values{"dir": {"b"}, "filter": {`{"types":["m.nothing.*"]}`}}).expect(t, 200, "")
		if len(rtEvents(t, nothing.body["chunk"])) != 0 || nothing.str("end") != "" {
			t.Fatalf("filter matching nothing: %s", nothing)
		}
		// The to token stops pagination; a sync-style stream token works as from.
		page := rtMessages(t, alice, roomID, url.Values{"dir": {"b"}, "limit": {"5"}}).expect(t, 200, "")
		sTok := syncstream.Token{Events: s.Roomserver.StreamPosition()}.String()
		fromS := rtMessages(t, alice, roomID, url.Values{"dir": {"b"}, "limit": {"5"}, "from": {sTok}}).expect(t, 200, "")
		if rtJSON(rtIDs(rtEvents(t, page.body["chunk"]))) != rtJSON(rtIDs(rtEvents(t, fromS.body["chunk"]))) {
			t.Fatalf("from stream token differs:\n%s\n%s", page, fromS)
		}
		bounded := rtMessages(t, alice, roomID, url.Values{"dir": {"b"}, "to": {page.str("end")}}).expect(t, 200, "")
		if got := rtEvents(t, bounded.body["chunk"]); len(got) != 5 || bounded.str("end") != "" {
			t.Fatalf("to-bounded page: %s", bounded)
		}
		// Lazy-loading members: state holds alice's member event.
		ll := rtMessages(t, alice, roomID, url.Values{"dir": {"b"}, "limit": {"2"}, "filter": {`{"lazy_load_members":true}`}}).expect(t, 200, "")
		state := rtEvents(t, ll.body["state"])
		if len(state) != 1 || state[0]["state_key"] != string(alice.id) {
			t.Fatalf("lazy-loaded state = %v", state)
		}
	})
}

func TestHistoryVisibility(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob", "eve")
		alice, bob, eve := us[0], us[1], us[2]
		cases := []struct {
			visibility string
			// what bob sees of the message sent before his invite, between invite
			// and join, after join; and eve, never a member.
			beforeInvite, whileInvited, afterJoin, eveSees bool
		}{
			{"shared", true, true, true, false},
			{"invited", false, true, true, false},
			{"joined", false, false, true, false},
			{"world_readable", true, true, true, true},
		}
		for _, tc := range cases {
			t.Run(tc.visibility, func(t *testing.T) {
				roomID := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat", "initial_state": []any{
					map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": tc.visibility}}}})
				m1 := rtText(t, alice, roomID, "before invite")
				alice.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/invite", map[string]any{"user_id": bob.id}).expect(t, 200, "")
				m2 := rtText(t, alice, roomID, "while invited")
				// Invited is not joined: no history yet, unless world_readable.
				if r := rtMessages(t, bob, roomID, url.Values{"dir": {"b"}}); (r.status == 200) != tc.eveSees {
					t.Errorf("invited bob reads /messages: %s", r)
				}
				rtJoin(t, bob, string(roomID)).expect(t, 200, "")
				m3 := rtText(t, alice, roomID, "after join")
				q := url.Values{"dir": {"b"}, "limit": {"100"}}
				got := rtIDs(rtEvents(t, rtMessages(t, bob, roomID, q).expect(t, 200, "").body["chunk"]))
				for _, c := range []struct {
					id   id.EventID
					want bool
				}{{m1, tc.beforeInvite}, {m2, tc.whileInvited}, {m3, tc.afterJoin}} {
					if rtContains(got, string(c.id)) != c.want {
						t.Errorf("bob sees %s: %v, want %v", c.id, !c.want, c.want)
					}
					ev := bob.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/event/"+esc(string(c.id)), nil)
					if (ev.status == 200) != c.want {
						t.Errorf("GET /event %s: %d, want visible %v", c.id, ev.status, c.want)
					}
				}
				eveRes := rtMessages(t, eve, roomID, q)
				if tc.eveSees {
					eveRes.expect(t, 200, "")
					if !rtContains(rtIDs(rtEvents(t, eveRes.body["chunk"])), string(m3)) {
						t.Errorf("eve cannot read a world_readable room: %s", eveRes)
					}
				} else {
					eveRes.expect(t, 403, "M_FORBIDDEN")
					eve.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/state", nil).expect(t, 403, "M_FORBIDDEN")
					eve.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/event/"+esc(string(m3)), nil).expect(t, 404, "M_NOT_FOUND")
				}
				// Bob leaves: he keeps what he saw but nothing sent afterwards.
				bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/leave", map[string]any{}).expect(t, 200, "")
				m4 := rtText(t, alice, roomID, "after leave")
				afterLeave := rtIDs(rtEvents(t, rtMessages(t, bob, roomID, q).expect(t, 200, "").body["chunk"]))
				if rtContains(afterLeave, string(m4)) != tc.eveSees || !rtContains(afterLeave, string(m3)) {
					t.Errorf("after leaving bob sees %v (m3 %s, m4 %s)", afterLeave, m3, m4)
				}
				if !tc.eveSees {
					bob.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/event/"+esc(string(m4)), nil).expect(t, 404, "M_NOT_FOUND")
				}
			})
		}
	})
}

func TestEditsRedactionsAndThreads(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		rtJoin(t, bob, string(roomID)).expect(t, 200, "")
		orig := rtText(t, alice, roomID, "I like cake")
		edit := func(u *user, body string) id.EventID {
			return rtSend(t, u, roomID, "m.room.message", map[string]any{
				"msgtype": "m.text", "body": "* " + body,
				"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
				"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": orig},
			})
		}
		e1 := edit(alice, "I like chocolate cake")
		// The newest edit is the one with the latest origin_server_ts (ties go
		// to the larger event ID): keep the two apart.
		time.Sleep(3 * time.Millisecond)
		e2 := edit(alice, "I like lemon cake")
		edit(bob, "bob cannot edit alice") // not a valid edit: other sender
		getEvent := func(eid id.EventID) resp {
			return bob.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/event/"+esc(string(eid)), nil).expect(t, 200, "")
		}
		if got := rtField(getEvent(orig).body, "unsigned", "m.relations", "m.replace", "event_id"); got != string(e2) {
			t.Fatalf("bundled edit = %v, want %s", got, e2)
		}
		if rtField(getEvent(orig).body, "content", "body") != "I like cake" {
			t.Fatal("the server replaced the original content")
		}
		rel, err := bob.cli.GetRelations(ctx, roomID, orig, &mautrix.ReqGetRelations{RelationType: event.RelReplace})
		if err != nil || len(rel.Chunk) != 3 || rel.Chunk[0].ID == orig {
			t.Fatalf("relations = %v, %v", rel, err)
		}
		// Redacting the newest edit reverts to the one before.
		if _, err := alice.cli.RedactEvent(ctx, roomID, e2); err != nil {
			t.Fatal(err)
		}
		if got := rtField(getEvent(orig).body, "unsigned", "m.relations", "m.replace", "event_id"); got != string(e1) {
			t.Fatalf("bundled edit after redacting the newest = %v, want %s", got, e1)
		}
		redactedEdit := getEvent(e2)
		if rtField(redactedEdit.body, "unsigned", "redacted_because", "type") != "m.room.redaction" || rtField(redactedEdit.body, "content", "body") != nil {
			t.Fatalf("redacted edit = %s", redactedEdit)
		}
		// Redacting the original: empty content, no bundled edit.
		if _, err := alice.cli.RedactEvent(ctx, roomID, orig, mautrix.ReqRedact{Reason: "gone"}); err != nil {
			t.Fatal(err)
		}
		red := getEvent(orig)
		if c := red.body["content"].(map[string]any); len(c) != 0 {
			t.Fatalf("redacted content = %v", c)
		}
		if rtField(red.body, "unsigned", "redacted_because", "content", "reason") != "gone" || rtField(red.body, "unsigned", "m.relations") != nil {
			t.Fatalf("redacted original = %s", red)
		}
		// The redacted original in /messages too.
		msgs := rtEvents(t, rtMessages(t, bob, roomID, url.Values{"dir": {"b"}}).expect(t, 200, "").body["chunk"])
		for _, m := range msgs {
			if m["event_id"] == string(orig) && rtField(m, "unsigned", "redacted_because") == nil {
				t.Fatalf("/messages serves the unredacted original: %v", m)
			}
		}

		// Annotations: a second identical one is refused.
		target := rtText(t, alice, roomID, "vote")
		react := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": "👍"}}
		rtSend(t, bob, roomID, "m.reaction", react)
		bob.api.do("PUT", v3+"/rooms/"+esc(string(roomID))+"/send/m.reaction/dup", react).expect(t, 400, "M_DUPLICATE_ANNOTATION")

		// Threads.
		root := rtText(t, alice, roomID, "thread root")
		var replies []id.EventID
		for i, u := range []*user{bob, alice, bob} {
			replies = append(replies, rtSend(t, u, roomID, "m.room.message", map[string]any{
				"msgtype": "m.text", "body": fmt.Sprintf("reply %d", i),
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root},
			}))
		}
		// A thread off an event in a thread is refused.
		bob.api.do("PUT", v3+"/rooms/"+esc(string(roomID))+"/send/m.room.message/nested", map[string]any{
			"body": "x", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": replies[0]},
		}).expect(t, 400, "M_UNKNOWN")
		rootEv := getEvent(root)
		thread := rtField(rootEv.body, "unsigned", "m.relations", "m.thread")
		if rtField(thread, "count") != float64(3) || rtField(thread, "latest_event", "event_id") != string(replies[2]) || rtField(thread, "current_user_participated") != true {
			t.Fatalf("thread aggregation = %v", rtJSON(thread))
		}
		threads := bob.api.do("GET", "/_matrix/client/v1/rooms/"+esc(string(roomID))+"/threads", nil).expect(t, 200, "")
		if ch := rtEvents(t, threads.body["chunk"]); len(ch) != 1 || ch[0]["event_id"] != string(root) {
			t.Fatalf("threads = %s", threads)
		}
		carol := registerUser(t, s, "carol")
		rtJoin(t, carol, string(roomID)).expect(t, 200, "")
		part := carol.api.do("GET", "/_matrix/client/v1/rooms/"+esc(string(roomID))+"/threads?include=participated", nil).expect(t, 200, "")
		if ch := rtEvents(t, part.body["chunk"]); len(ch) != 0 {
			t.Fatalf("carol participated in %v", ch)
		}
		// /relations pages newest first, with next_batch; recursion reaches an edit of a reply.
		rtSend(t, bob, roomID, "m.room.message", map[string]any{
			"msgtype": "m.text", "body": "* reply 0 edited", "m.new_content": map[string]any{"msgtype": "m.text", "body": "reply 0 edited"},
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": replies[0]},
		})
		relPath := "/_matrix/client/v1/rooms/" + esc(string(roomID)) + "/relations/" + esc(string(root))
		p1 := bob.api.do("GET", relPath+"?limit=2", nil).expect(t, 200, "")
		if ids := rtIDs(rtEvents(t, p1.body["chunk"])); len(ids) != 2 || ids[0] != string(replies[2]) || p1.str("next_batch") == "" {
			t.Fatalf("relations page 1 = %s", p1)
		}
		p2 := bob.api.do("GET", relPath+"?limit=2&from="+url.QueryEscape(p1.str("next_batch")), nil).expect(t, 200, "")
		if ids := rtIDs(rtEvents(t, p2.body["chunk"])); len(ids) != 1 || ids[0] != string(replies[0]) || p2.str("next_batch") != "" {
			t.Fatalf("relations page 2 = %s", p2)
		}
		rec := bob.api.do("GET", relPath+"?recurse=true", nil).expect(t, 200, "")
		if n := len(rtEvents(t, rec.body["chunk"])); n != 4 || rec.body["recursion_depth"] == nil {
			t.Fatalf("recursive relations = %s", rec)
		}
		fwd := bob.api.do("GET", relPath+"/m.thread/m.room.message?dir=f&limit=1", nil).expect(t, 200, "")
		if ids := rtIDs(rtEvents(t, fwd.body["chunk"])); len(ids) != 1 || ids[0] != string(replies[0]) {
			t.Fatalf("forward relations = %s", fwd)
		}

		// Two more threads: /threads pages them by latest activity.
		var roots []id.EventID
		for i := range 2 {
			r := rtText(t, alice, roomID, fmt.Sprintf("root %d", i))
			rtSend(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "in thread",
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": r}})
			roots = append(roots, r)
		}
		threadsPath := "/_matrix/client/v1/rooms/" + esc(string(roomID)) + "/threads?limit=2"
		t1 := bob.api.do("GET", threadsPath, nil).expect(t, 200, "")
		if ids := rtIDs(rtEvents(t, t1.body["chunk"])); rtJSON(ids) != rtJSON([]string{string(roots[1]), string(roots[0])}) || t1.str("next_batch") == "" {
			t.Fatalf("threads page 1 = %s", t1)
		}
		t2 := bob.api.do("GET", threadsPath+"&from="+url.QueryEscape(t1.str("next_batch")), nil).expect(t, 200, "")
		if ids := rtIDs(rtEvents(t, t2.body["chunk"])); len(ids) != 1 || ids[0] != string(root) || t2.str("next_batch") != "" {
			t.Fatalf("threads page 2 = %s", t2)
		}
	})
}

func TestStateMembersAndContext(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "name": "one"})
		rtJoin(t, bob, string(roomID)).expect(t, 200, "")
		rid := esc(string(roomID))
		// State: whole, by type, by type and key (with and without trailing slash).
		whole := alice.api.do("GET", v3+"/rooms/"+rid+"/state", nil).expect(t, 200, "")
		if !strings.Contains(string(whole.raw), `"m.room.create"`) {
			t.Fatalf("state = %s", whole)
		}
		alice.api.do("GET", v3+"/rooms/"+rid+"/state/m.room.name", nil).expect(t, 200, "")
		alice.api.do("GET", v3+"/rooms/"+rid+"/state/m.room.name/", nil).expect(t, 200, "")
		ev := alice.api.do("GET", v3+"/rooms/"+rid+"/state/m.room.member/"+esc(string(bob.id))+"?format=event", nil).expect(t, 200, "")
		if ev.str("state_key") != string(bob.id) || ev.str("event_id") == "" {
			t.Fatalf("format=event: %s", ev)
		}
		alice.api.do("GET", v3+"/rooms/"+rid+"/state/m.room.topic", nil).expect(t, 404, "M_NOT_FOUND")
		// A state change carries prev_content and replaces_state.
		rename := rtState(t, alice, roomID, "m.room.name", "", map[string]any{"name": "two"}).expect(t, 200, "")
		named := alice.api.do("GET", v3+"/rooms/"+rid+"/event/"+esc(rename.str("event_id")), nil).expect(t, 200, "")
		if rtField(named.body, "unsigned", "prev_content", "name") != "one" || rtField(named.body, "unsigned", "replaces_state") == nil {
			t.Fatalf("renamed: %s", named)
		}
		if rtField(named.body, "unsigned", "membership") != "join" {
			t.Fatalf("unsigned.membership: %s", named)
		}
		// Custom state with a state key holding a slash.
		rtState(t, alice, roomID, "org.example.thing", "a/b", map[string]any{"v": 1}).expect(t, 200, "")
		if c := rtStateContent(t, alice, roomID, "org.example.thing", "a/b"); c["v"] != float64(1) {
			t.Fatalf("state with slash key = %v", c)
		}
		bob.api.do("PUT", v3+"/rooms/"+rid+"/state/m.room.name/", map[string]any{"name": "bob's"}).expect(t, 403, "M_FORBIDDEN")
		// Members.
		for _, c := range []struct {
			query string
			n     int
		}{{"", 2}, {"?membership=join", 2}, {"?not_membership=join", 0}, {"?membership=leave", 0}} {
			r := alice.api.do("GET", v3+"/rooms/"+rid+"/members"+c.query, nil).expect(t, 200, "")
			if got := len(rtEvents(t, r.body["chunk"])); got != c.n {
				t.Errorf("members%s: %d, want %d", c.query, got, c.n)
			}
		}
		// Members at a point before bob joined.
		early := rtMessages(t, alice, roomID, url.Values{"dir": {"f"}, "limit": {"3"}}).expect(t, 200, "")
		at := alice.api.do("GET", v3+"/rooms/"+rid+"/members?at="+url.QueryEscape(early.str("end")), nil).expect(t, 200, "")
		if got := len(rtEvents(t, at.body["chunk"])); got != 1 {
			t.Fatalf("members at the start = %d: %s", got, at)
		}
		// Context.
		var msgs []id.EventID
		for i := range 6 {
			msgs = append(msgs, rtText(t, alice, roomID, fmt.Sprintf("c%d", i)))
		}
		c := bob.api.do("GET", v3+"/rooms/"+rid+"/context/"+esc(string(msgs[3]))+"?limit=4", nil).expect(t, 200, "")
		before, after := rtIDs(rtEvents(t, c.body["events_before"])), rtIDs(rtEvents(t, c.body["events_after"]))
		if rtField(c.body, "event", "event_id") != string(msgs[3]) || rtJSON(before) != rtJSON([]string{string(msgs[2]), string(msgs[1])}) ||
			rtJSON(after) != rtJSON([]string{string(msgs[4]), string(msgs[5])}) || c.str("start") == "" || c.str("end") == "" {
			t.Fatalf("context = %s", c)
		}
		if len(rtEvents(t, c.body["state"])) == 0 {
			t.Fatal("context without state")
		}
		cf := bob.api.do("GET", v3+"/rooms/"+rid+"/context/"+esc(string(msgs[3]))+"?limit=2&filter="+url.QueryEscape(`{"types":["m.room.name"],"lazy_load_members":true}`), nil).expect(t, 200, "")
		if len(rtEvents(t, cf.body["events_after"])) != 0 {
			t.Fatalf("filtered context = %s", cf)
		}
		// From the context's end, /messages continues forward.
		next := rtMessages(t, bob, roomID, url.Values{"dir": {"f"}, "from": {c.str("end")}}).expect(t, 200, "")
		if len(rtEvents(t, next.body["chunk"])) != 0 {
			t.Fatalf("after the newest event: %s", next)
		}
		// Joined members with profiles.
		jm := bob.api.do("GET", v3+"/rooms/"+rid+"/joined_members", nil).expect(t, 200, "")
		if len(jm.body["joined"].(map[string]any)) != 2 {
			t.Fatalf("joined_members = %s", jm)
		}
		// Timestamp to event.
		tsf := bob.api.do("GET", "/_matrix/client/v1/rooms/"+rid+"/timestamp_to_event?dir=f&ts=0", nil).expect(t, 200, "")
		if tsf.str("event_id") == "" {
			t.Fatalf("timestamp_to_event = %s", tsf)
		}
		bob.api.do("GET", "/_matrix/client/v1/rooms/"+rid+"/timestamp_to_event?dir=f&ts=99999999999999", nil).expect(t, 404, "M_NOT_FOUND")
		// Reports.
		bob.api.do("POST", v3+"/rooms/"+rid+"/report/"+esc(string(msgs[0])), map[string]any{"reason": "rude", "score": -50}).expect(t, 200, "")
		bob.api.do("POST", v3+"/rooms/"+rid+"/report/"+esc("$missing"), map[string]any{"reason": "?"}).expect(t, 404, "M_NOT_FOUND")
		bob.api.do("POST", v3+"/rooms/"+rid+"/report", map[string]any{"reason": "bad room"}).expect(t, 200, "")
		bob.api.do("POST", v3+"/rooms/"+esc("!missing:hs.test")+"/report", map[string]any{}).expect(t, 404, "M_NOT_FOUND")
		bob.api.do("POST", v3+"/users/"+esc(string(alice.id))+"/report", map[string]any{"reason": "x"}).expect(t, 200, "")
		bob.api.do("POST", v3+"/users/"+esc("@ghost:hs.test")+"/report", map[string]any{}).expect(t, 404, "M_NOT_FOUND")
	})
}

func TestRoomUpgrade(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		old := rtCreateRoom(t, alice, map[string]any{"room_version": "10", "preset": "public_chat", "visibility": "public",
			"name": "old name", "topic": "old topic", "room_alias_name": "upgrademe"})
		rtJoin(t, bob, string(old)).expect(t, 200, "")
		alice.api.do("POST", v3+"/rooms/"+esc(string(old))+"/ban", map[string]any{"user_id": "@troll:elsewhere.test"}).expect(t, 200, "")
		up := v3 + "/rooms/" + esc(string(old)) + "/upgrade"
		bob.api.do("POST", up, map[string]any{"new_version": "11"}).expect(t, 403, "M_FORBIDDEN")
		alice.api.do("POST", up, map[string]any{"new_version": "99"}).expect(t, 400, "M_UNSUPPORTED_ROOM_VERSION")
		r := alice.api.do("POST", up, map[string]any{"new_version": "12"}).expect(t, 200, "")
		newRoom := id.RoomID(r.str("replacement_room"))
		if tomb := rtStateContent(t, alice, old, "m.room.tombstone", ""); tomb["replacement_room"] != string(newRoom) {
			t.Fatalf("tombstone = %v", tomb)
		}
		create := rtStateContent(t, alice, newRoom, "m.room.create", "")
		if rtField(create, "predecessor", "room_id") != string(old) || create["room_version"] != "12" {
			t.Fatalf("new create = %v", create)
		}
		if rtStateContent(t, alice, newRoom, "m.room.name", "")["name"] != "old name" || rtStateContent(t, alice, newRoom, "m.room.topic", "")["topic"] != "old topic" {
			t.Fatal("name or topic not copied")
		}
		if rtStateContent(t, alice, newRoom, "m.room.join_rules", "")["join_rule"] != "public" {
			t.Fatal("join rules not copied")
		}
		if rtStateContent(t, alice, newRoom, "m.room.member", "@troll:elsewhere.test")["membership"] != "ban" {
			t.Fatal("ban not copied")
		}
		pl := rtStateContent(t, alice, newRoom, "m.room.power_levels", "")
		if _, listed := pl["users"].(map[string]any)[string(alice.id)]; listed {
			t.Fatalf("v12 creator listed in power levels: %v", pl)
		}
		res, err := bob.cli.ResolveAlias(context.Background(), "#upgrademe:hs.test")
		if err != nil || res.RoomID != newRoom {
			t.Fatalf("alias after upgrade: %v, %v", res, err)
		}
		if rtStateContent(t, alice, newRoom, "m.room.canonical_alias", "")["alias"] != "#upgrademe:hs.test" {
			t.Fatal("canonical alias not moved")
		}
		if rtStateContent(t, alice, old, "m.room.power_levels", "")["events_default"] != float64(50) {
			t.Fatal("old room still open to messages")
		}
		// Bob cannot talk in the old room any more; he can join the new one.
		bob.api.do("PUT", v3+"/rooms/"+esc(string(old))+"/send/m.room.message/late", map[string]any{"body": "hi"}).expect(t, 403, "M_FORBIDDEN")
		rtJoin(t, bob, string(newRoom)).expect(t, 200, "")
		list := alice.api.do("GET", v3+"/publicRooms", nil).expect(t, 200, "")
		if ch := list.body["chunk"].([]any); len(ch) != 1 || rtField(ch[0], "room_id") != string(newRoom) {
			t.Fatalf("directory after upgrade = %s", list)
		}
	})
}

func TestProfileChangesAndDeactivationReachRooms(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		rtJoin(t, bob, string(roomID)).expect(t, 200, "")
		if err := bob.cli.SetDisplayName(ctx, "Bobby"); err != nil {
			t.Fatal(err)
		}
		if m := rtStateContent(t, alice, roomID, "m.room.member", string(bob.id)); m["displayname"] != "Bobby" || m["membership"] != "join" {
			t.Fatalf("member event after profile change = %v", m)
		}
		// New joins carry the profile too.
		carol := registerUser(t, s, "carol")
		if err := carol.cli.SetDisplayName(ctx, "Caz"); err != nil {
			t.Fatal(err)
		}
		rtJoin(t, carol, string(roomID)).expect(t, 200, "")
		if m := rtStateContent(t, alice, roomID, "m.room.member", string(carol.id)); m["displayname"] != "Caz" {
			t.Fatalf("join without profile: %v", m)
		}
		uia(t, bob.api, "POST", v3+"/account/deactivate", map[string]any{}, bob).expect(t, 200, "")
		if m := rtStateContent(t, alice, roomID, "m.room.member", string(bob.id)); m["membership"] != "leave" {
			t.Fatalf("deactivated user still in room: %v", m)
		}
	})
}

func TestRoomEndpointsBadInput(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		roomID := rtCreateRoom(t, alice, map[string]any{})
		rid := esc(string(roomID))
		msg := rtText(t, alice, roomID, "hi")
		cases := []struct {
			method, path string
			body         any
			status       int
			errcode      string
		}{
			{"POST", "/createRoom", "not json", 400, "M_NOT_JSON"},
			{"POST", "/createRoom", `[]`, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"preset": "party"}, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"visibility": "secret"}, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"invite": []string{"bob"}}, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"invite": "@bob:hs.test"}, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"room_alias_name": "a:b"}, 400, "M_INVALID_PARAM"},
			{"POST", "/createRoom", map[string]any{"creation_content": []int{1}}, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"initial_state": []any{map[string]any{"type": "", "content": map[string]any{}}}}, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"initial_state": []any{map[string]any{"type": "m.room.create", "content": map[string]any{}}}}, 400, "M_BAD_JSON"},
			{"POST", "/createRoom", map[string]any{"power_level_content_override": map[string]any{"ban": "lots"}}, 400, ""},
			{"POST", "/createRoom", map[string]any{"name": strings.Repeat("n", 300)}, 400, "M_INVALID_PARAM"},
			{"POST", "/createRoom", map[string]any{"topic": strings.Repeat("t", 70000)}, 413, "M_TOO_LARGE"},
			{"PUT", "/rooms/" + rid + "/send/m.room.message/t1", "[1]", 400, "M_BAD_JSON"},
			{"PUT", "/rooms/" + rid + "/send/m.room.message/t2", "{", 400, "M_NOT_JSON"},
			{"PUT", "/rooms/" + rid + "/send/m.room.message/t3", map[string]any{"body": strings.Repeat("x", 70000)}, 413, "M_TOO_LARGE"},
			{"PUT", "/rooms/" + rid + "/send/m.room.message/t4", `{"n": 1e400}`, 400, ""},
			{"PUT", "/rooms/" + rid + "/send/m.room.redaction/t5", map[string]any{"redacts": 5}, 400, "M_BAD_JSON"},
			{"PUT", "/rooms/" + esc("notaroom") + "/send/m.room.message/t6", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", "/rooms/" + esc("!nope:hs.test") + "/send/m.room.message/t7", map[string]any{}, 404, "M_NOT_FOUND"},
			{"PUT", "/rooms/" + rid + "/send/" + strings.Repeat("t", 300) + "/t8", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", "/rooms/" + rid + "/state/m.room.name/" + strings.Repeat("k", 300), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", "/rooms/" + rid + "/state/m.room.power_levels", map[string]any{"users": "everyone"}, 403, ""},
			{"PUT", "/rooms/" + rid + "/redact/" + esc("nope") + "/r1", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", "/rooms/" + rid + "/redact/" + esc(string(msg)) + "/r2", `{"reason": 5}`, 400, "M_BAD_JSON"},
			{"GET", "/rooms/" + rid + "/messages", nil, 400, "M_MISSING_PARAM"},
			{"GET", "/rooms/" + rid + "/messages?dir=x", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/messages?dir=b&limit=-1", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/messages?dir=b&limit=lots", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/messages?dir=b&from=garbage", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/messages?dir=b&from=t1", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/messages?dir=b&from=s-1", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/messages?dir=b&filter=%7B", nil, 400, ""},
			{"GET", "/rooms/" + rid + "/messages?dir=b&filter=" + url.QueryEscape(`{"limit":-3}`), nil, 400, "M_BAD_JSON"},
			{"GET", "/rooms/" + rid + "/messages?dir=b&filter=" + url.QueryEscape(`{"types":"m.room.message"}`), nil, 400, ""},
			{"GET", "/rooms/" + rid + "/context/" + esc("$missing"), nil, 404, "M_NOT_FOUND"},
			{"GET", "/rooms/" + rid + "/context/" + esc(string(msg)) + "?limit=x", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/event/" + esc("$missing"), nil, 404, "M_NOT_FOUND"},
			{"GET", "/rooms/" + rid + "/members?membership=party", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/members?at=zzz", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/rooms/" + rid + "/state/m.room.name?format=xml", nil, 400, "M_INVALID_PARAM"},
			{"POST", "/rooms/" + rid + "/invite", map[string]any{"user_id": "bob"}, 400, "M_BAD_JSON"},
			{"POST", "/rooms/" + rid + "/invite", map[string]any{"medium": "email", "address": "a@b.c", "id_server": "x"}, 403, "M_FORBIDDEN"},
			{"POST", "/rooms/" + rid + "/kick", map[string]any{}, 400, "M_BAD_JSON"},
			{"POST", "/rooms/" + rid + "/ban", "nope", 400, "M_NOT_JSON"},
			{"POST", "/join/" + esc("neither"), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"POST", "/join/" + esc("#bad"), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"POST", "/join/" + esc(string(roomID)) + "?via=" + esc("a b"), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"POST", "/rooms/" + rid + "/upgrade", map[string]any{}, 400, "M_BAD_JSON"},
			{"POST", "/rooms/" + rid + "/upgrade", map[string]any{"new_version": 11}, 400, "M_BAD_JSON"},
			{"PUT", "/directory/room/" + esc("#x:hs.test"), map[string]any{"room_id": "x"}, 400, "M_BAD_JSON"},
			{"PUT", "/directory/room/" + esc("#x:hs.test"), map[string]any{"room_id": "!missing:hs.test"}, 404, "M_NOT_FOUND"},
			{"GET", "/directory/room/" + esc("#:hs.test"), nil, 400, "M_INVALID_PARAM"},
			{"PUT", "/directory/list/room/" + rid, map[string]any{"visibility": "everyone"}, 400, "M_BAD_JSON"},
			{"POST", "/publicRooms", map[string]any{"limit": -1}, 400, "M_BAD_JSON"},
			{"GET", "/publicRooms?since=bogus", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/publicRooms?limit=x", nil, 400, "M_INVALID_PARAM"},
			{"POST", "/rooms/" + rid + "/report/" + esc(string(msg)), map[string]any{"score": 10}, 400, "M_INVALID_PARAM"},
		}
		for _, c := range cases {
			r := alice.api.do(c.method, v3+c.path, c.body)
			if r.status >= 500 || r.status != c.status || (c.errcode != "" && r.errcode() != c.errcode) {
				short := c.path
				if len(short) > 80 {
					short = short[:80]
				}
				t.Errorf("%s %s: got %s; want %d %s", c.method, short, r.String()[:min(len(r.String()), 300)], c.status, c.errcode)
			}
		}
		for _, c := range []string{
			"/rooms/" + rid + "/relations/" + esc(string(msg)) + "?dir=sideways",
			"/rooms/" + rid + "/relations/" + esc(string(msg)) + "?recurse=maybe",
			"/rooms/" + rid + "/relations/" + esc("$missing"),
			"/rooms/" + rid + "/threads?include=some",
			"/rooms/" + rid + "/threads?from=bad",
			"/rooms/" + rid + "/timestamp_to_event?dir=f",
			"/rooms/" + rid + "/timestamp_to_event?ts=1&dir=q",
		} {
			if r := alice.api.do("GET", "/_matrix/client/v1"+c, nil); r.status < 400 || r.status >= 500 {
				t.Errorf("GET %s: %s", c, r)
			}
		}
		// Unauthenticated.
		newAPI(t, s, "").do("POST", v3+"/createRoom", map[string]any{}).expect(t, 401, "M_MISSING_TOKEN")
	})
}

func TestRemoteRoomsWithoutFederation(t *testing.T) {
	noFederation := func(c *config.Config) { c.Federation.Enabled = false }
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		roomID := rtCreateRoom(t, alice, map[string]any{})
		alice.api.do("POST", v3+"/join/"+esc("!room:elsewhere.invalid"), map[string]any{}).expect(t, 404, "M_UNRECOGNIZED")
		alice.api.do("POST", v3+"/join/"+esc("#room:elsewhere.invalid"), map[string]any{}).expect(t, 404, "M_UNRECOGNIZED")
		alice.api.do("GET", v3+"/directory/room/"+esc("#room:elsewhere.invalid"), nil).expect(t, 404, "M_UNRECOGNIZED")
		alice.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/invite", map[string]any{"user_id": "@bob:elsewhere.invalid"}).expect(t, 404, "M_UNRECOGNIZED")
		alice.api.do("POST", v3+"/createRoom", map[string]any{"invite": []string{"@bob:elsewhere.invalid"}}).expect(t, 404, "M_UNRECOGNIZED")
	}, noFederation)
}

// TestRelationsIndexCatchesUp: relations lost by a crash (the index written after
// the events) are rebuilt from the event stream on start.
func TestRelationsIndexCatchesUp(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		roomID := rtCreateRoom(t, alice, map[string]any{})
		orig := rtText(t, alice, roomID, "typo")
		edit := rtSend(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* fixed",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "fixed"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": orig}})
		relPath := "/_matrix/client/v1/rooms/" + esc(string(roomID)) + "/relations/" + esc(string(orig))
		if n := len(rtEvents(t, alice.api.do("GET", relPath, nil).expect(t, 200, "").body["chunk"])); n != 1 {
			t.Fatalf("relations before the crash: %d", n)
		}
		s.Stop()
		db, err := storage.Open(ctx, s.Config().DatabaseDSN())
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`DELETE FROM event_relations`, `DELETE FROM room_threads`, `DELETE FROM relations_position`} {
			if _, err := db.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		s.Restart(t)
		got := rtEvents(t, newAPI(t, s, alice.token).do("GET", relPath, nil).expect(t, 200, "").body["chunk"])
		if len(got) != 1 || got[0]["event_id"] != string(edit) {
			t.Fatalf("relations after restart = %v", got)
		}
	})
}

// TestEveryRoomVersion runs the basic room flows in rooms of every version (event
// ID formats differ: v1/v2 carry their own, v3 uses base64 with '/' and '+').
func TestEveryRoomVersion(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		for v := 1; v <= 12; v++ {
			t.Run(fmt.Sprint("v", v), func(t *testing.T) {
				roomID := rtCreateRoom(t, alice, map[string]any{"room_version": fmt.Sprint(v), "preset": "public_chat", "name": "versioned"})
				rtJoin(t, bob, string(roomID)).expect(t, 200, "")
				msg := rtText(t, alice, roomID, "hello")
				edit := rtSend(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* hi",
					"m.new_content": map[string]any{"msgtype": "m.text", "body": "hi"},
					"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": msg}})
				rid, mid := esc(string(roomID)), esc(string(msg))
				ev := bob.api.do("GET", v3+"/rooms/"+rid+"/event/"+mid, nil).expect(t, 200, "")
				if rtField(ev.body, "unsigned", "m.relations", "m.replace", "event_id") != string(edit) {
					t.Fatalf("event = %s", ev)
				}
				bob.api.do("GET", v3+"/rooms/"+rid+"/context/"+mid+"?limit=2", nil).expect(t, 200, "")
				for _, suffix := range []string{"", "/m.replace", "/m.replace/m.room.message"} {
					rel := bob.api.do("GET", "/_matrix/client/v1/rooms/"+rid+"/relations/"+mid+suffix, nil).expect(t, 200, "")
					if ids := rtIDs(rtEvents(t, rel.body["chunk"])); len(ids) != 1 || ids[0] != string(edit) {
						t.Fatalf("relations%s = %s", suffix, rel)
					}
				}
				bob.api.do("GET", "/_matrix/client/v1/rooms/"+rid+"/relations/"+mid+"/m.annotation", nil).expect(t, 200, "")
				red := alice.api.do("PUT", v3+"/rooms/"+rid+"/redact/"+mid+"/r", map[string]any{"reason": "x"}).expect(t, 200, "")
				after := bob.api.do("GET", v3+"/rooms/"+rid+"/event/"+mid, nil).expect(t, 200, "")
				if rtField(after.body, "unsigned", "redacted_because", "event_id") != red.str("event_id") {
					t.Fatalf("redacted event = %s", after)
				}
				all := rtEvents(t, rtMessages(t, bob, roomID, url.Values{"dir": {"b"}, "limit": {"50"}}).expect(t, 200, "").body["chunk"])
				if last := all[len(all)-1]; last["type"] != "m.room.create" {
					t.Fatalf("oldest event = %v", last)
				}
			})
		}
	})
}
