package clientapi_test

import (
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/testserver"
)

const noticePath = "/_synapse/admin/v1/send_server_notice"

// noticeInvite waits for an invite from the server notices user in u's
// initial /sync and returns its room.
func noticeInvite(t *testing.T, u *user, system string) id.RoomID {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rooms, _ := syncInvites(t, u)
		for roomID, v := range rooms {
			for _, e := range rtEvents(t, rtField(v, "invite_state", "events")) {
				if e["type"] == "m.room.member" && e["sender"] == system && e["state_key"] == string(u.id) {
					return id.RoomID(roomID)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no server notice invite for %s", u.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServerNotices: an admin sends a notice to a user, who is invited to a
// private room by the server notices user, tagged m.server_notice; the user
// cannot reject that invite but can join (seeing the notice) and leave; the
// next notice invites them back to the same room; PUT with a transaction ID
// is idempotent; non-admins, remote users and the reserved localpart are
// refused.
func TestServerNotices(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		admin := registerUser(t, s, "admin") // the first user is an admin
		alice := registerUser(t, s, "alice")
		system := "@_server:" + s.Config().ServerName
		notice := map[string]any{"user_id": alice.id, "content": map[string]any{"msgtype": "m.text", "body": "maintenance tonight"}}

		alice.api.do("POST", noticePath, notice).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		admin.api.do("POST", noticePath, map[string]any{"user_id": "@bob:elsewhere.example", "content": map[string]any{}}).
			expect(t, http.StatusBadRequest, "M_UNKNOWN")
		admin.api.do("POST", noticePath, map[string]any{"user_id": "@nobody:" + s.Config().ServerName, "content": map[string]any{}}).
			expect(t, http.StatusNotFound, "M_NOT_FOUND")
		admin.api.do("POST", noticePath, map[string]any{"user_id": alice.id}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		admin.api.do("POST", noticePath, map[string]any{"user_id": alice.id, "content": "text"}).expect(t, http.StatusBadRequest, "M_BAD_JSON")

		first := admin.api.do("POST", noticePath, notice).expect(t, http.StatusOK, "").str("event_id")
		room := noticeInvite(t, alice, system)

		// The room is tagged for alice.
		tags := alice.api.do("GET", v3+"/user/"+esc(string(alice.id))+"/rooms/"+esc(string(room))+"/tags", nil).expect(t, http.StatusOK, "")
		if rtField(tags.body, "tags", "m.server_notice") == nil {
			t.Fatalf("notice room not tagged: %s", tags)
		}
		alice.api.do("POST", v3+"/rooms/"+esc(string(room))+"/leave", map[string]any{}).
			expect(t, http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")

		rtJoin(t, alice, string(room)).expect(t, http.StatusOK, "")
		msgs := alice.api.do("GET", v3+"/rooms/"+esc(string(room))+"/messages?dir=b&limit=50", nil).expect(t, http.StatusOK, "")
		if !rtContains(rtIDs(rtEvents(t, msgs.body["chunk"])), first) {
			t.Fatalf("the notice is not visible after joining: %s", msgs)
		}
		// Only the system user speaks.
		alice.api.do("PUT", v3+"/rooms/"+esc(string(room))+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "hi"}).
			expect(t, http.StatusForbidden, "M_FORBIDDEN")
		alice.api.do("POST", v3+"/rooms/"+esc(string(room))+"/leave", map[string]any{}).expect(t, http.StatusOK, "")

		admin.api.do("POST", noticePath, notice).expect(t, http.StatusOK, "")
		if again := noticeInvite(t, alice, system); again != room {
			t.Fatalf("a second notice room %s was made (first %s)", again, room)
		}

		e1 := admin.api.do("PUT", noticePath+"/txn1", notice).expect(t, http.StatusOK, "").str("event_id")
		e2 := admin.api.do("PUT", noticePath+"/txn1", notice).expect(t, http.StatusOK, "").str("event_id")
		if e1 == "" || e1 != e2 {
			t.Fatalf("PUT with one transaction ID sent %q and %q", e1, e2)
		}

		// Nobody can register the system user's localpart or log in as it.
		newAPI(t, s, "").do("GET", v3+"/register/available?username=_server", nil).expect(t, http.StatusBadRequest, "M_USER_IN_USE")
		if r, _ := login(t, s, "_server", ""); r.status == http.StatusOK {
			t.Fatalf("logged in as the system user: %s", r)
		}
		profile := newAPI(t, s, alice.token).do("GET", v3+"/profile/"+esc(system), nil).expect(t, http.StatusOK, "")
		if profile.str("displayname") != "Server Notices" {
			t.Fatalf("system user profile = %s", profile)
		}
	})
}

// TestServerNoticesDisabled: with server notices off, the endpoint says so.
func TestServerNoticesDisabled(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		admin := registerUser(t, s, "admin")
		admin.api.do("POST", noticePath, map[string]any{"user_id": admin.id, "content": map[string]any{}}).
			expect(t, http.StatusBadRequest, "M_UNKNOWN")
		newAPI(t, s, "").do("GET", v3+"/register/available?username=_server", nil).expect(t, http.StatusOK, "")
	}, func(c *config.Config) { c.ServerNotices.Enabled = false })
}
