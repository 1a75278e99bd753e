package clientapi_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// hierarchyPage is one GET /hierarchy answer: room names in order, each
// room's children_state as the names of the linked rooms, and next_batch.
type hierarchyPage struct {
	rooms    []string
	children map[string][]string
	next     string
}

func getHierarchy(t *testing.T, u *user, root id.RoomID, names map[string]string, q url.Values) hierarchyPage {
	t.Helper()
	r := u.api.do("GET", "/_matrix/client/v1/rooms/"+esc(string(root))+"/hierarchy?"+q.Encode(), nil).expect(t, 200, "")
	p := hierarchyPage{children: map[string][]string{}, next: r.str("next_batch")}
	for _, x := range r.body["rooms"].([]any) {
		name := names[rtField(x, "room_id").(string)]
		p.rooms = append(p.rooms, name)
		kids := []string{}
		for _, c := range rtField(x, "children_state").([]any) {
			kids = append(kids, names[rtField(c, "state_key").(string)])
		}
		p.children[name] = kids
		if rtField(x, "allowed_room_ids") != nil {
			t.Fatalf("allowed_room_ids in a client hierarchy: %s", rtJSON(x))
		}
	}
	return p
}

// TestSpaceHierarchyWalk: the space of Complement's TestClientSpacesSummary.
//
//	Root ── R1 (suggested)
//	     ── SS1 ── SS2 ── R3
//	                   ── R4 (bob's, world-readable)
//	     ── R2 (suggested) ── R5 (ignored: R2 is not a space)
//
// The walk is depth first in the space's order (the links' timestamps), only
// spaces have children, suggested_only also trims children_state, and pages
// continue the same walk.
func TestSpaceHierarchyWalk(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		names := map[string]string{}
		ids := map[string]id.RoomID{}
		mk := func(u *user, name string, space bool, extra map[string]any) {
			body := map[string]any{"preset": "public_chat", "name": name}
			if space {
				body["creation_content"] = map[string]any{"type": "m.space"}
			}
			for k, v := range extra {
				body[k] = v
			}
			ids[name] = rtCreateRoom(t, u, body)
			names[string(ids[name])] = name
		}
		mk(alice, "Root", true, nil)
		mk(alice, "R1", false, nil)
		mk(alice, "SS1", true, nil)
		mk(alice, "R2", false, nil)
		mk(alice, "SS2", true, nil)
		mk(alice, "R3", false, nil)
		mk(bob, "R4", false, map[string]any{"initial_state": []map[string]any{
			{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
		mk(bob, "R5", false, nil)
		link := func(parent, child string, suggested bool) {
			content := map[string]any{"via": []string{s.Config().ServerName}}
			if suggested {
				content["suggested"] = true
			}
			rtState(t, alice, ids[parent], "m.space.child", string(ids[child]), content).expect(t, 200, "")
			time.Sleep(3 * time.Millisecond) // distinct origin_server_ts: the order of the links
		}
		link("Root", "R1", true)
		link("Root", "SS1", false)
		link("Root", "R2", true)
		link("R2", "R5", false)
		link("SS1", "SS2", false)
		link("SS2", "R3", false)
		link("SS2", "R4", false)

		walk := func(q url.Values) hierarchyPage { return getHierarchy(t, alice, ids["Root"], names, q) }
		check := func(name string, got hierarchyPage, rooms []string, children map[string][]string) {
			t.Helper()
			if !slices.Equal(got.rooms, rooms) {
				t.Fatalf("%s: rooms %v, want %v", name, got.rooms, rooms)
			}
			for room, want := range children {
				if !slices.Equal(got.children[room], want) {
					t.Fatalf("%s: children_state of %s = %v, want %v", name, room, got.children[room], want)
				}
			}
		}
		whole := walk(nil)
		check("whole graph", whole, []string{"Root", "R1", "SS1", "SS2", "R3", "R4", "R2"}, map[string][]string{
			"Root": {"R1", "SS1", "R2"}, "SS1": {"SS2"}, "SS2": {"R3", "R4"}, "R2": {}, "R1": {}})
		if whole.next != "" {
			t.Fatalf("whole graph has next_batch %q", whole.next)
		}
		check("max_depth 1", walk(url.Values{"max_depth": {"1"}}), []string{"Root", "R1", "SS1", "R2"},
			map[string][]string{"Root": {"R1", "SS1", "R2"}, "SS1": {"SS2"}})
		check("suggested_only", walk(url.Values{"suggested_only": {"true"}}), []string{"Root", "R1", "R2"},
			map[string][]string{"Root": {"R1", "R2"}})
		first := walk(url.Values{"limit": {"4"}})
		check("page 1", first, []string{"Root", "R1", "SS1", "SS2"}, nil)
		second := walk(url.Values{"from": {first.next}})
		check("page 2", second, []string{"R3", "R4", "R2"}, nil)
		if first.next == "" || second.next != "" {
			t.Fatalf("next_batch: %q then %q", first.next, second.next)
		}
		// A link without via is no link.
		rtState(t, alice, ids["Root"], "m.space.child", string(ids["SS1"]), map[string]any{}).expect(t, 200, "")
		check("unlinked", walk(nil), []string{"Root", "R1", "R2"}, map[string][]string{"Root": {"R1", "R2"}})
	})
}

// TestSpaceHierarchyJoinRules: Complement's TestClientSpacesSummaryJoinRules.
// Private rooms appear once the user is invited; the space's links are always
// shown.
func TestSpaceHierarchyJoinRules(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		names := map[string]string{}
		ids := map[string]id.RoomID{}
		mk := func(name, preset string, space bool) {
			body := map[string]any{"preset": preset, "name": name}
			if space {
				body["creation_content"] = map[string]any{"type": "m.space"}
			}
			ids[name] = rtCreateRoom(t, alice, body)
			names[string(ids[name])] = name
		}
		mk("Root", "public_chat", true)
		mk("R1", "private_chat", false)
		mk("SS1", "private_chat", true)
		mk("R2", "public_chat", false)
		mk("R3", "private_chat", false)
		for _, l := range [][2]string{{"Root", "R1"}, {"Root", "SS1"}, {"SS1", "R2"}, {"SS1", "R3"}} {
			rtState(t, alice, ids[l[0]], "m.space.child", string(ids[l[1]]), map[string]any{"via": []string{s.Config().ServerName}}).expect(t, 200, "")
			time.Sleep(3 * time.Millisecond)
		}
		rtJoin(t, bob, string(ids["Root"])).expect(t, 200, "")
		invite := func(room string) {
			alice.api.do("POST", v3+"/rooms/"+esc(string(ids[room]))+"/invite", map[string]any{"user_id": bob.id}).expect(t, 200, "")
		}
		for _, step := range []struct {
			invite []string
			want   []string
		}{
			{nil, []string{"Root"}},
			{[]string{"R1", "R3"}, []string{"Root", "R1"}},
			{[]string{"SS1"}, []string{"Root", "R1", "SS1", "R2", "R3"}},
		} {
			for _, r := range step.invite {
				invite(r)
			}
			got := getHierarchy(t, bob, ids["Root"], names, nil)
			if !slices.Equal(got.rooms, step.want) || !slices.Equal(got.children["Root"], []string{"R1", "SS1"}) {
				t.Fatalf("after inviting %v: rooms %v, root children %v; want %v", step.invite, got.rooms, got.children["Root"], step.want)
			}
		}
	})
}

// TestRoomSummary: GET /_matrix/client/v1/room_summary/{roomIdOrAlias}.
func TestRoomSummary(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]
		space := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Space",
			"creation_content": map[string]any{"type": "m.space"}, "room_alias_name": "summary-space"})
		restricted := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "8", "initial_state": []map[string]any{
			{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "restricted",
				"allow": []map[string]any{{"type": "m.room_membership", "room_id": space}}}}}})
		private := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat", "name": "Secret", "topic": "hush"})
		anon := newAPI(t, s, "")
		summary := func(a *api, target string) resp {
			return a.do("GET", "/_matrix/client/v1/room_summary/"+esc(target), nil)
		}

		r := summary(alice.api, string(restricted)).expect(t, 200, "")
		if r.str("room_id") != string(restricted) || r.str("join_rule") != "restricted" || r.str("room_version") != "8" ||
			rtJSON(r.body["allowed_room_ids"]) != rtJSON([]id.RoomID{space}) || r.str("membership") != "join" {
			t.Fatalf("restricted summary = %s", r)
		}
		if _, ok := r.body["children_state"]; ok {
			t.Fatalf("children_state in a room summary: %s", r)
		}
		r = summary(alice.api, string(private)).expect(t, 200, "")
		if _, ok := r.body["allowed_room_ids"]; ok || r.str("name") != "Secret" || r.str("topic") != "hush" || r.str("join_rule") != "invite" {
			t.Fatalf("private summary = %s", r)
		}
		// By alias, without a token: a public space, with no membership.
		r = summary(anon, "#summary-space:"+s.Config().ServerName).expect(t, 200, "")
		if r.str("room_id") != string(space) || r.str("room_type") != "m.space" || r.body["membership"] != nil || r.body["num_joined_members"] != float64(1) {
			t.Fatalf("space by alias = %s", r)
		}
		// Bob may see the private room only once invited; then with membership.
		summary(bob.api, string(private)).expect(t, 404, "M_NOT_FOUND")
		summary(anon, string(private)).expect(t, 404, "M_NOT_FOUND")
		if r := summary(bob.api, string(space)).expect(t, 200, ""); r.str("membership") != "leave" {
			t.Fatalf("bob's membership of the space = %s", r)
		}
		alice.api.do("POST", v3+"/rooms/"+esc(string(private))+"/invite", map[string]any{"user_id": bob.id}).expect(t, 200, "")
		if r := summary(bob.api, string(private)).expect(t, 200, ""); r.str("membership") != "invite" {
			t.Fatalf("invited bob's summary = %s", r)
		}
		// Restricted: visible to members of the allowed room.
		summary(bob.api, string(restricted)).expect(t, 404, "M_NOT_FOUND")
		rtJoin(t, bob, string(space)).expect(t, 200, "")
		summary(bob.api, string(restricted)).expect(t, 200, "")

		for _, tc := range []struct {
			name, target string
			a            *api
			status       int
			errcode      string
		}{
			{"unknown room", "!nowhere:" + s.Config().ServerName, alice.api, 404, "M_NOT_FOUND"},
			{"unknown alias", "#nothing:" + s.Config().ServerName, alice.api, 404, "M_NOT_FOUND"},
			{"neither", "room", alice.api, 400, "M_INVALID_PARAM"},
			{"bad alias", "#", alice.api, 400, "M_INVALID_PARAM"},
			{"bad token", string(space), newAPI(t, s, "nope"), 401, "M_UNKNOWN_TOKEN"},
		} {
			if r := summary(tc.a, tc.target); r.status != tc.status || r.errcode() != tc.errcode {
				t.Errorf("%s: %s, want %d %s", tc.name, r, tc.status, tc.errcode)
			}
		}
		if r := alice.api.do("GET", "/_matrix/client/v1/room_summary/"+esc(string(space))+"?via="+strings.Repeat("x", 300), nil); r.status != 400 {
			t.Errorf("bad via: %s", r)
		}
	})
}
