package clientapi_test

import (
	"encoding/json"
	"net/url"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// Room behaviours the Matrix conformance suite (Complement) checks, as
// Synapse has them: custom join content, restricted joins through PUT /state,
// idempotent state, forgotten rooms, rejected invites in /sync, the room
// version 12 rules the client API enforces, and /messages relation filters.

func roomPath(roomID id.RoomID, rest string) string {
	return v3 + "/rooms/" + esc(string(roomID)) + rest
}

func TestJoinCustomContent(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		for _, tc := range []struct {
			name     string
			path     func(roomID id.RoomID) string
			wantFoo  bool
			wantName string
		}{
			{"join by ID or alias keeps the body", func(r id.RoomID) string { return v3 + "/join/" + esc(string(r)) }, true, "Bobby"},
			{"rooms join takes only reason", func(r id.RoomID) string { return roomPath(r, "/join") }, false, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
				bob.api.do("POST", tc.path(roomID), map[string]any{
					"foo": "bar", "displayname": "Bobby", "membership": "leave",
					"join_authorised_via_users_server": string(alice.id), "reason": "hello",
				}).expect(t, 200, "")
				m := rtStateContent(t, alice, roomID, "m.room.member", string(bob.id))
				if m["membership"] != "join" || m["reason"] != "hello" {
					t.Fatalf("member content = %v", m)
				}
				if _, ok := m["join_authorised_via_users_server"]; ok {
					t.Fatalf("client-chosen authoriser kept: %v", m)
				}
				if _, ok := m["foo"]; ok != tc.wantFoo {
					t.Fatalf("foo present = %v, want %v: %v", ok, tc.wantFoo, m)
				}
				if tc.wantName != "" && m["displayname"] != tc.wantName {
					t.Fatalf("displayname = %v, want %q", m["displayname"], tc.wantName)
				}
			})
		}
	})
}

func TestRestrictedJoinThroughMemberState(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		allowed := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		room := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "8", "initial_state": []any{
			map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
				"join_rule": "restricted",
				"allow":     []any{map[string]any{"type": "m.room_membership", "room_id": string(allowed)}},
			}},
		}})
		member := func(content map[string]any) resp {
			return rtState(t, bob, room, "m.room.member", string(bob.id), content)
		}
		// Not in the allowed room: no authoriser, no join.
		member(map[string]any{"membership": "join"}).expect(t, 403, "M_FORBIDDEN")
		rtJoin(t, bob, string(allowed)).expect(t, 200, "")
		// A join through PUT /state gets a local authoriser, like POST /join.
		member(map[string]any{"membership": "join"}).expect(t, 200, "")
		if m := rtStateContent(t, alice, room, "m.room.member", string(bob.id)); m["join_authorised_via_users_server"] != string(alice.id) {
			t.Fatalf("join content = %v", m)
		}
		// A join -> join change carrying a made-up authoriser: the key is the
		// server's to set, so it is dropped rather than failing the auth rules.
		member(map[string]any{"membership": "join", "displayname": "Bobby", "join_authorised_via_users_server": "unused"}).expect(t, 200, "")
		m := rtStateContent(t, alice, room, "m.room.member", string(bob.id))
		if m["displayname"] != "Bobby" {
			t.Fatalf("profile change = %v", m)
		}
		if _, ok := m["join_authorised_via_users_server"]; ok {
			t.Fatalf("authoriser kept on join -> join: %v", m)
		}
	})
}

func TestSettingStateTwiceIsIdempotent(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "power_level_content_override": map[string]any{"state_default": 0}})
		rtJoin(t, bob, string(roomID)).expect(t, 200, "")
		put := func(u *user, content any) id.EventID {
			t.Helper()
			return id.EventID(rtState(t, u, roomID, "a.test.state", "", content).expect(t, 200, "").str("event_id"))
		}
		first := put(alice, map[string]any{"a_key": "a_value", "n": 1})
		for _, tc := range []struct {
			name    string
			who     *user
			content any
			same    bool
		}{
			{"same content, keys reordered", alice, json.RawMessage(`{"n":1,"a_key":"a_value"}`), true},
			{"other content", alice, map[string]any{"a_key": "other"}, false},
			{"back to the first content", alice, map[string]any{"a_key": "a_value", "n": 1}, false},
			{"same content again", alice, map[string]any{"a_key": "a_value", "n": 1}, true},
			{"same content from another sender", bob, map[string]any{"a_key": "a_value", "n": 1}, false},
		} {
			cur := rtStateEventID(t, alice, roomID, "a.test.state", "")
			got := put(tc.who, tc.content)
			if (got == cur) != tc.same {
				t.Fatalf("%s: event %s, current was %s (first %s), want same=%v", tc.name, got, cur, first, tc.same)
			}
		}
	})
}

// rtStateEventID returns the ID of the current state event at (type, key).
func rtStateEventID(t *testing.T, u *user, roomID id.RoomID, evType, stateKey string) id.EventID {
	t.Helper()
	r := u.api.do("GET", roomPath(roomID, "/state"), nil).expect(t, 200, "")
	var state []struct {
		Type     string     `json:"type"`
		StateKey string     `json:"state_key"`
		EventID  id.EventID `json:"event_id"`
	}
	if err := json.Unmarshal(r.raw, &state); err != nil {
		t.Fatalf("state: %v: %s", err, r.raw)
	}
	for _, e := range state {
		if e.Type == evType && e.StateKey == stateKey {
			return e.EventID
		}
	}
	return ""
}

func TestForgottenRoomIsClosed(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		rtJoin(t, bob, string(roomID)).expect(t, 200, "")
		rtText(t, alice, roomID, "hello")
		alice.api.do("POST", roomPath(roomID, "/leave"), map[string]any{}).expect(t, 200, "")
		// Left but not forgotten: history up to the leave, and the room is
		// listed with include_leave.
		rtMessages(t, alice, roomID, url.Values{"dir": {"b"}}).expect(t, 200, "")
		includeLeave := `{"room":{"include_leave":true}}`
		if r := syncFiltered(t, alice, "", includeLeave); r.Rooms.Leave[roomID] == nil {
			t.Fatalf("left room missing with include_leave: %v", r.Rooms.Leave)
		}
		alice.api.do("POST", roomPath(roomID, "/forget"), map[string]any{}).expect(t, 200, "")
		rtText(t, bob, roomID, "after")
		for _, q := range []url.Values{{"dir": {"b"}}, {}} {
			rtMessages(t, alice, roomID, q).expect(t, 403, "M_FORBIDDEN")
		}
		alice.api.do("GET", roomPath(roomID, "/members"), nil).expect(t, 403, "M_FORBIDDEN")
		if r := syncFiltered(t, alice, "", includeLeave); r.Rooms.Leave[roomID] != nil {
			t.Fatal("forgotten room listed in an initial sync")
		}
		// Back in the room, it is not forgotten any more.
		rtJoin(t, alice, string(roomID)).expect(t, 200, "")
		rtMessages(t, alice, roomID, url.Values{"dir": {"b"}}).expect(t, 200, "")
	})
}

func TestRejectedInviteShowsInSync(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		for _, visibility := range []string{"joined", "shared", "invited"} {
			t.Run(visibility, func(t *testing.T) {
				roomID := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat", "initial_state": []any{
					map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": visibility}},
				}})
				since := syncFiltered(t, bob, "", `{}`).NextBatch
				alice.api.do("POST", roomPath(roomID, "/invite"), map[string]any{"user_id": string(bob.id)}).expect(t, 200, "")
				r := syncFiltered(t, bob, since, `{}`)
				if _, ok := r.Rooms.Invite[roomID]; !ok {
					t.Fatalf("invite not in sync: %v", r.Rooms.Invite)
				}
				// The inviter leaves first: the room is empty when bob rejects.
				alice.api.do("POST", roomPath(roomID, "/leave"), map[string]any{}).expect(t, 200, "")
				bob.api.do("POST", roomPath(roomID, "/leave"), map[string]any{}).expect(t, 200, "")
				r = syncFiltered(t, bob, r.NextBatch, `{}`)
				left := r.Rooms.Leave[roomID]
				if left == nil {
					t.Fatalf("rejected invite not in rooms.leave: %v", r.Rooms.Leave)
				}
				found := false
				for _, e := range left.Timeline.Events {
					if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == string(bob.id) {
						var c struct{ Membership string }
						_ = json.Unmarshal(e.Content, &c)
						found = c.Membership == "leave"
					}
				}
				if !found {
					t.Fatalf("leave event not in the leave timeline: %+v", left.Timeline.Events)
				}
			})
		}
	})
}

func TestRoomVersion12ClientRules(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob", "carol")
		alice, bob, carol := us[0], us[1], us[2]
		roomID := rtCreateRoom(t, alice, map[string]any{"room_version": "12", "preset": "public_chat",
			"creation_content": map[string]any{"additional_creators": []string{string(bob.id)}}})
		pl := func(users map[string]any) resp {
			return rtState(t, alice, roomID, "m.room.power_levels", "", map[string]any{"users": users})
		}
		// Creators have unlimited power and cannot be listed: a bad request.
		pl(map[string]any{string(alice.id): 100}).expect(t, 400, "M_BAD_JSON")
		pl(map[string]any{string(bob.id): 100}).expect(t, 400, "M_BAD_JSON")
		pl(map[string]any{string(carol.id): 100}).expect(t, 200, "")
		// m.room.create is made with the room only, in every room version.
		for _, version := range []string{"11", "12"} {
			r := rtCreateRoom(t, alice, map[string]any{"room_version": version})
			rtState(t, alice, r, "m.room.create", "", map[string]any{"room_version": version, "entropy": 1}).expect(t, 400, "M_INVALID_PARAM")
			alice.api.do("PUT", roomPath(r, "/send/m.room.create/c"+version), map[string]any{"room_version": version}).expect(t, 400, "M_INVALID_PARAM")
		}
		// Upgrades to v12 leave the deprecated predecessor.event_id out; to
		// older versions it is still set.
		for _, tc := range []struct {
			to      string
			eventID bool
		}{{"12", false}, {"11", true}} {
			old := rtCreateRoom(t, alice, map[string]any{"room_version": "10"})
			up := alice.api.do("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": tc.to}).expect(t, 200, "")
			create := rtStateContent(t, alice, id.RoomID(up.str("replacement_room")), "m.room.create", "")
			if rtField(create, "predecessor", "room_id") != string(old) {
				t.Fatalf("upgrade to %s: create = %v", tc.to, create)
			}
			if _, has := create["predecessor"].(map[string]any)["event_id"]; has != tc.eventID {
				t.Fatalf("upgrade to %s: predecessor.event_id present = %v", tc.to, has)
			}
		}
		// MSC4311: the create event of a v12 room goes whole in invite_state.
		since := syncFiltered(t, carol, "", `{}`).NextBatch
		alice.api.do("POST", roomPath(roomID, "/invite"), map[string]any{"user_id": string(carol.id)}).expect(t, 200, "")
		raw := carol.api.do("GET", v3+"/sync?since="+url.QueryEscape(since)+"&timeout=0", nil).raw
		var full struct {
			Rooms struct {
				Invite map[id.RoomID]struct {
					InviteState struct {
						Events []map[string]any `json:"events"`
					} `json:"invite_state"`
				} `json:"invite"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(raw, &full); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range full.Rooms.Invite[roomID].InviteState.Events {
			if e["type"] == "m.room.create" {
				found = true
				if _, ok := e["origin_server_ts"]; !ok {
					t.Fatalf("stripped create event: %v", e)
				}
			} else if _, ok := e["origin_server_ts"]; ok {
				t.Fatalf("other stripped state is not full: %v", e)
			}
		}
		if !found {
			t.Fatalf("no create event in invite_state: %s", raw)
		}
	})
}

func TestMessagesFilterByRelType(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := rtUsers(t, s, "alice")[0]
		roomID := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		from := syncFiltered(t, alice, "", `{}`).NextBatch
		root := rtText(t, alice, roomID, "root")
		rel := func(relType, body string) id.EventID {
			return rtSend(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
				"m.relates_to": map[string]any{"rel_type": relType, "event_id": string(root)}})
		}
		thread := rel("m.thread", "in thread")
		ref := rel("m.reference", "reference")
		for _, tc := range []struct {
			filter string
			want   []id.EventID
		}{
			{`{"org.matrix.msc3874.rel_types":["m.thread"]}`, []id.EventID{thread}},
			{`{"org.matrix.msc3874.rel_types":["m.reference"]}`, []id.EventID{ref}},
			{`{"org.matrix.msc3874.rel_types":["m.thread","m.reference"]}`, []id.EventID{thread, ref}},
			{`{"org.matrix.msc3874.not_rel_types":["m.thread"]}`, []id.EventID{root, ref}},
			{`{"org.matrix.msc3874.not_rel_types":["m.thread","m.reference"]}`, []id.EventID{root}},
			{`{"org.matrix.msc3874.rel_types":[]}`, nil},
			{`{"types":["m.room.message"]}`, []id.EventID{root, thread, ref}},
		} {
			r := rtMessages(t, alice, roomID, url.Values{"dir": {"f"}, "from": {from}, "filter": {tc.filter}}).expect(t, 200, "")
			got := rtIDs(rtEvents(t, r.body["chunk"]))
			if len(got) != len(tc.want) {
				t.Fatalf("%s: got %v, want %v", tc.filter, got, tc.want)
			}
			for i := range got {
				if got[i] != string(tc.want[i]) {
					t.Fatalf("%s: got %v, want %v", tc.filter, got, tc.want)
				}
			}
		}
	})
}
