package federationapi_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// clientOf registers name on s and logs it in through the client API.
func clientOf(t testing.TB, s *testserver.Server, name string) *mautrix.Client {
	t.Helper()
	ctx := context.Background()
	s.ClientAPI.Accounts().SetBcryptCost(4)
	if _, err := s.ClientAPI.Accounts().RegisterUser(ctx, name, "password-"+name, false, "", ""); err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name},
		Password:   "password-" + name, StoreCredentials: true}); err != nil {
		t.Fatalf("logging %s in: %v", name, err)
	}
	return cli
}

// TestJoinByAliasOverFederation: the client API's aliases answer other servers'
// /query/directory, so a user on B joins a public room on A by its alias through
// POST /join/{roomIdOrAlias}, and B resolves A's aliases for its clients.
func TestJoinByAliasOverFederation(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice, bob := clientOf(t, a, "alice"), clientOf(t, b, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby", Name: "Lobby"})
		if err != nil {
			t.Fatal(err)
		}
		alias := id.RoomAlias("#lobby:" + a.Config().ServerName)

		tests := []struct {
			name    string
			alias   id.RoomAlias
			status  int
			servers []string
		}{
			{"known alias", alias, http.StatusOK, []string{a.Config().ServerName}},
			{"unknown alias", id.RoomAlias("#nowhere:" + a.Config().ServerName), http.StatusNotFound, nil},
		}
		for _, tc := range tests {
			resp, err := bob.ResolveAlias(ctx, tc.alias)
			if tc.status != http.StatusOK {
				var he mautrix.HTTPError
				if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != tc.status {
					t.Fatalf("%s: resolve = %+v, %v; want HTTP %d", tc.name, resp, err, tc.status)
				}
				continue
			}
			if err != nil || resp.RoomID != created.RoomID || !slices.Equal(resp.Servers, tc.servers) {
				t.Fatalf("%s: resolve = %+v, %v", tc.name, resp, err)
			}
		}

		joined, err := bob.JoinRoom(ctx, string(alias), nil)
		if err != nil {
			t.Fatalf("joining %s from B: %v", alias, err)
		}
		if joined.RoomID != created.RoomID {
			t.Fatalf("joined %s, want %s", joined.RoomID, created.RoomID)
		}
		if m := membership(t, b, created.RoomID, bob.UserID); m != "join" {
			t.Fatalf("bob's membership on B = %s", m)
		}
		eventually(t, waitTime, "A to see bob join", func() bool { return membership(t, a, created.RoomID, bob.UserID) == "join" })
		// Now both servers are in the room, and A says so.
		resp, err := bob.ResolveAlias(ctx, alias)
		want := []string{a.Config().ServerName, b.Config().ServerName}
		slices.Sort(want[1:])
		if err != nil || !slices.Equal(resp.Servers, want) {
			t.Fatalf("resolve after the join = %+v, %v; want servers %v", resp, err, want)
		}
	})
}

// TestFederationPublicRooms: other servers list this server's published rooms
// (GET and POST /_matrix/federation/v1/publicRooms) from the client API's
// directory; requests must be signed.
func TestFederationPublicRooms(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice := clientOf(t, a, "alice")
		for _, name := range []string{"Lobby", "Garden"} {
			if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: name}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Unlisted"}); err != nil {
			t.Fatal(err)
		}
		fc := fakeServerClient(t, b.Config().ServerName, b.Key, nil)
		aName := a.Config().ServerName
		post := func(body any) (*mautrix.RespPublicRooms, error) {
			var resp *mautrix.RespPublicRooms
			_, _, err := fc.MakeFullRequest(ctx, federation.RequestParams{ServerName: aName, Method: http.MethodPost,
				Path: federation.URLPath{"v1", "publicRooms"}, Authenticate: true, RequestJSON: body, ResponseJSON: &resp})
			return resp, err
		}
		get := func(body any) (*mautrix.RespPublicRooms, error) {
			return fc.PublicRooms(ctx, aName, body.(*mautrix.ReqPublicRooms))
		}
		tests := []struct {
			name   string
			call   func(any) (*mautrix.RespPublicRooms, error)
			body   any
			status int
			names  []string
			next   string
			total  int
		}{
			{"GET all", get, &mautrix.ReqPublicRooms{}, 200, []string{"Garden", "Lobby"}, "", 2},
			{"GET a page", get, &mautrix.ReqPublicRooms{Limit: 1}, 200, []string{"?"}, "o1", 2},
			{"POST a search", post, map[string]any{"filter": map[string]any{"generic_search_term": "gard"}}, 200, []string{"Garden"}, "", 1},
			{"POST a bad limit", post, map[string]any{"limit": -1}, 400, nil, "", 0},
			{"POST a bad token", post, map[string]any{"since": "nope"}, 400, nil, "", 0},
		}
		for _, tc := range tests {
			resp, err := tc.call(tc.body)
			if tc.status != 200 {
				if status, _ := respErr(err); status != tc.status {
					t.Fatalf("%s: %+v, %v; want HTTP %d", tc.name, resp, err, tc.status)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var names []string
			for _, r := range resp.Chunk {
				names = append(names, r.Name)
			}
			slices.Sort(names)
			if len(names) != len(tc.names) || (tc.names[0] != "?" && !slices.Equal(names, tc.names)) ||
				resp.NextBatch != tc.next || resp.TotalRoomCountEstimate != tc.total {
				t.Fatalf("%s: rooms %v next %q total %d", tc.name, names, resp.NextBatch, resp.TotalRoomCountEstimate)
			}
		}
		// Unsigned requests are refused.
		resp, err := testserver.FederationClient().Get(a.FederationURL + "/_matrix/federation/v1/publicRooms")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unsigned request: HTTP %d", resp.StatusCode)
		}
	})
}
