package clientapi_test

import (
	"fmt"
	"testing"
	"time"

	"hearth/internal/testserver"
)

// dirResults searches the user directory as u and returns "user_id=display_name"
// of each result.
func dirResults(t *testing.T, u *user, term string) []string {
	t.Helper()
	r := u.api.do("POST", v3+"/user_directory/search", map[string]any{"search_term": term}).expect(t, 200, "")
	var out []string
	res, _ := r.body["results"].([]any)
	for _, x := range res {
		m := x.(map[string]any)
		out = append(out, fmt.Sprintf("%s=%v", m["user_id"], m["display_name"]))
	}
	return out
}

// TestUserDirectoryRoomSpecificNames: a local user is listed under their
// global profile, never under a display name they use in one room only; and
// a user finds only others through the rooms they share (themselves only
// through a public room). Complement's TestRoomSpecificUsernameChange and
// TestRoomSpecificUsernameAtJoin.
func TestUserDirectoryRoomSpecificNames(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		eve := registerUser(t, s, "eve")
		me := esc(string(alice.id))
		alice.api.do("PUT", v3+"/profile/"+me+"/displayname", map[string]any{"displayname": "Alice Cooper"}).expect(t, 200, "")
		rtCreateRoom(t, alice, map[string]any{"visibility": "public", "preset": "public_chat"})
		private := rtCreateRoom(t, bob, map[string]any{"visibility": "private", "invite": []string{string(alice.id)}})
		rtJoin(t, alice, string(private)).expect(t, 200, "")
		rtState(t, alice, private, "m.room.member", string(alice.id), map[string]any{"membership": "join", "displayname": "Freddy"}).expect(t, 200, "")
		if !s.Sync.Settle(10 * time.Second) {
			t.Fatal("notification worker did not settle")
		}
		justAlice := fmt.Sprintf("[%s=Alice Cooper]", alice.id)
		cases := []struct {
			who  *user
			term string
			want string
		}{
			{eve, "Alice Cooper", justAlice},
			{eve, "@alice", justAlice},
			{eve, "Freddy", "[]"},
			{bob, "Alice Cooper", justAlice},
			{bob, "Freddy", "[]"},
			// Bob shares a room with Alice, and with himself only there.
			{bob, ":hs.test", justAlice},
			// Alice is in a public room: she finds herself and Bob.
			{alice, ":hs.test", fmt.Sprintf("[%s=Alice Cooper %s=bob]", alice.id, bob.id)},
		}
		for _, tc := range cases {
			t.Run(string(tc.who.id)+" "+tc.term, func(t *testing.T) {
				if got := fmt.Sprint(dirResults(t, tc.who, tc.term)); got != tc.want {
					t.Fatalf("got %s, want %s", got, tc.want)
				}
			})
		}
	})
}
