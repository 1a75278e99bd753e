package federationapi_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// TestSpaceHierarchy: a space on A with a public, a private and a remote child
// (a room on B). A's users walk it locally and reach B's room through B's
// federation hierarchy; B's users walk A's space through A's federation
// hierarchy and see only what they could join.
func TestSpaceHierarchy(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice, bob, carol := clientOf(t, a, "alice"), clientOf(t, b, "bob"), clientOf(t, b, "carol")
		create := func(cli *mautrix.Client, preset, name string, extra map[string]any) id.RoomID {
			t.Helper()
			resp, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: preset, Name: name, CreationContent: extra})
			if err != nil {
				t.Fatalf("creating %s: %v", name, err)
			}
			return resp.RoomID
		}
		space := create(alice, "public_chat", "Space", map[string]any{"type": "m.space"})
		pub := create(alice, "public_chat", "Pub", nil)
		priv := create(alice, "private_chat", "Priv", nil)
		remote := create(carol, "public_chat", "Remote", nil)
		children := []struct {
			room    id.RoomID
			content map[string]any
		}{
			{pub, map[string]any{"via": []string{aName}, "order": "a", "suggested": true}},
			{priv, map[string]any{"via": []string{aName}, "order": "b"}},
			{remote, map[string]any{"via": []string{bName}, "order": "c"}},
			{id.RoomID("!novia:" + aName), map[string]any{"order": "0"}}, // not a child: no via
		}
		for _, c := range children {
			if _, err := alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(c.room), c.content); err != nil {
				t.Fatalf("adding child %s: %v", c.room, err)
			}
		}
		names := map[id.RoomID]string{space: "Space", pub: "Pub", priv: "Priv", remote: "Remote"}
		walk := func(cli *mautrix.Client, req *mautrix.ReqHierarchy) ([]string, string) {
			t.Helper()
			resp, err := cli.Hierarchy(ctx, space, req)
			if err != nil {
				t.Fatalf("hierarchy %+v: %v", req, err)
			}
			var got []string
			for _, r := range resp.Rooms {
				if r.Name != names[r.RoomID] {
					t.Fatalf("room %s named %q, want %q", r.RoomID, r.Name, names[r.RoomID])
				}
				got = append(got, r.Name)
				// With suggested_only the space shows only its suggested links.
				if want := map[bool]int{false: 3, true: 1}[req.SuggestedOnly]; r.RoomID == space && len(r.ChildrenState) != want {
					t.Fatalf("space children_state has %d events, want %d", len(r.ChildrenState), want)
				}
				if r.RoomID != space && len(r.ChildrenState) != 0 {
					t.Fatalf("room %s (not a space) has children_state %v", r.Name, r.ChildrenState)
				}
			}
			return got, resp.NextBatch
		}
		zero := 0
		tests := []struct {
			name string
			cli  *mautrix.Client
			req  mautrix.ReqHierarchy
			want []string
		}{
			{"member on A, remote child through B", alice, mautrix.ReqHierarchy{}, []string{"Space", "Pub", "Priv", "Remote"}},
			{"user on B through A", bob, mautrix.ReqHierarchy{}, []string{"Space", "Pub", "Remote"}},
			{"suggested only", bob, mautrix.ReqHierarchy{SuggestedOnly: true}, []string{"Space", "Pub"}},
			{"max depth 0", bob, mautrix.ReqHierarchy{MaxDepth: &zero}, []string{"Space"}},
		}
		for _, tc := range tests {
			got, next := walk(tc.cli, &tc.req)
			if !slices.Equal(got, tc.want) || next != "" {
				t.Fatalf("%s: rooms %v next %q, want %v", tc.name, got, next, tc.want)
			}
		}

		// Paging one room at a time gives the same rooms.
		var paged []string
		from := ""
		for range 10 {
			got, next := walk(bob, &mautrix.ReqHierarchy{Limit: 1, From: from})
			paged = append(paged, got...)
			if next == "" {
				break
			}
			from = next
		}
		if want := []string{"Space", "Pub", "Remote"}; !slices.Equal(paged, want) {
			t.Fatalf("paged walk = %v, want %v", paged, want)
		}

		// Bad input is a 4xx, never a 500.
		_, first := walk(bob, &mautrix.ReqHierarchy{Limit: 1})
		bad := []struct {
			name   string
			room   id.RoomID
			query  map[string]string
			status int
		}{
			{"zero limit", space, map[string]string{"limit": "0"}, 400},
			{"text limit", space, map[string]string{"limit": "many"}, 400},
			{"negative depth", space, map[string]string{"max_depth": "-1"}, 400},
			{"bad boolean", space, map[string]string{"suggested_only": "maybe"}, 400},
			{"garbage token", space, map[string]string{"from": "h_x_y"}, 400},
			{"huge token", space, map[string]string{"from": "h99999999999999999999_false_50"}, 400},
			{"changed suggested_only", space, map[string]string{"from": first, "limit": "1", "suggested_only": "true"}, 400},
			{"bad room ID", "not-a-room", nil, 400},
			{"unknown room", id.RoomID("!nowhere:" + aName), nil, 403},
			{"private room of another server", priv, nil, 403},
		}
		for _, tc := range bad {
			u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", tc.room, "hierarchy"}, tc.query)
			_, err := bob.MakeRequest(ctx, http.MethodGet, u, nil, nil)
			if status, _ := respErr(err); status != tc.status {
				t.Fatalf("%s: status %d (%v), want %d", tc.name, status, err, tc.status)
			}
		}

		// The federation endpoint itself, asked by B.
		asB := fakeServerClient(t, bName, b.Key, nil)
		fed := func(room id.RoomID, q url.Values) (*roomserver.SpaceHierarchy, error) {
			var resp roomserver.SpaceHierarchy
			_, _, err := asB.MakeFullRequest(ctx, federation.RequestParams{ServerName: aName, Method: http.MethodGet,
				Path: federation.URLPath{"v1", "hierarchy", room}, Query: q, Authenticate: true, ResponseJSON: &resp})
			return &resp, err
		}
		h, err := fed(space, nil)
		if err != nil {
			t.Fatalf("federation hierarchy: %v", err)
		}
		var kids []id.RoomID
		for _, c := range h.Children {
			kids = append(kids, c.RoomID)
		}
		if h.Room.RoomID != space || h.Room.RoomType != "m.space" || !slices.Equal(kids, []id.RoomID{pub}) ||
			!slices.Equal(h.InaccessibleChildren, []id.RoomID{priv}) {
			t.Fatalf("federation hierarchy = room %+v children %v inaccessible %v", h.Room, kids, h.InaccessibleChildren)
		}
		fedBad := []struct {
			name   string
			room   id.RoomID
			q      url.Values
			status int
		}{
			{"private room", priv, nil, 404},
			{"unknown room", id.RoomID("!nowhere:" + aName), nil, 404},
			{"bad boolean", space, url.Values{"suggested_only": {"yes"}}, 400},
		}
		for _, tc := range fedBad {
			if _, err := fed(tc.room, tc.q); !isStatus(err, tc.status) {
				t.Fatalf("federation %s: %v, want %d", tc.name, err, tc.status)
			}
		}
	})
}

// TestRestrictedSpaceHierarchy: a space on A lists a room on B restricted to
// the space's members. B cannot tell that A's users are in the space until a
// user of B joins it, so until then B calls the room inaccessible to A; after
// that A shows it to the space's members only (as Synapse does; Complement's
// TestRestrictedRoomsSpacesSummaryFederation).
func TestRestrictedSpaceHierarchy(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice, bob, carol := clientOf(t, a, "alice"), clientOf(t, a, "bob"), clientOf(t, b, "carol")
		sresp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space",
			CreationContent: map[string]any{"type": "m.space"}})
		if err != nil {
			t.Fatal(err)
		}
		space := sresp.RoomID
		rresp, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Restricted", RoomVersion: "8",
			InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: sk(""), Content: event.Content{Raw: map[string]any{
				"join_rule": "restricted", "allow": []map[string]any{{"type": "m.room_membership", "room_id": space, "via": []string{aName}}}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		restricted := rresp.RoomID
		if _, err := alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(restricted), map[string]any{"via": []string{bName}}); err != nil {
			t.Fatal(err)
		}
		walk := func(cli *mautrix.Client) []id.RoomID {
			t.Helper()
			resp, err := cli.Hierarchy(ctx, space, &mautrix.ReqHierarchy{})
			if err != nil {
				t.Fatalf("hierarchy: %v", err)
			}
			var got []id.RoomID
			for _, r := range resp.Rooms {
				got = append(got, r.RoomID)
			}
			return got
		}
		for _, tc := range []struct {
			name string
			cli  *mautrix.Client
			want []id.RoomID
		}{
			{"space member before B knows", alice, []id.RoomID{space}},
			{"non-member before B knows", bob, []id.RoomID{space}},
		} {
			if got := walk(tc.cli); !slices.Equal(got, tc.want) {
				t.Fatalf("%s: rooms %v, want %v", tc.name, got, tc.want)
			}
		}
		if _, err := carol.JoinRoom(ctx, string(space), &mautrix.ReqJoinRoom{Via: []string{aName}}); err != nil {
			t.Fatalf("carol joining the space: %v", err)
		}
		eventually(t, 10*time.Second, "B seeing A in the space", func() bool {
			in, err := b.Roomserver.ServerJoined(ctx, space, "", aName)
			return err == nil && in
		})
		for _, tc := range []struct {
			name string
			cli  *mautrix.Client
			want []id.RoomID
		}{
			{"space member", alice, []id.RoomID{space, restricted}},
			{"non-member", bob, []id.RoomID{space}},
		} {
			if got := walk(tc.cli); !slices.Equal(got, tc.want) {
				t.Fatalf("%s: rooms %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}
