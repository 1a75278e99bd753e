package clientapi_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// TestThreadSubscriptions: MSC4306 subscribe (manually and automatically),
// read and unsubscribe, with the checks on the cause event of automatic
// subscriptions and the ordering rule against unsubscriptions.
func TestThreadSubscriptions(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		eve := registerUser(t, s, "eve")
		room := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
		root := rtText(t, alice, room, "thread root")
		reply := func(root id.EventID, body string) id.EventID {
			return rtSend(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		}
		sub := func(u *user, root id.EventID) string {
			return "/_matrix/client/unstable/io.element.msc4306/rooms/" + esc(string(room)) + "/thread/" + esc(string(root)) + "/subscription"
		}
		get := func(root id.EventID) resp { return alice.api.do("GET", sub(alice, root), nil) }
		r1 := reply(root, "one")

		// Manual subscription, read back, then unsubscribe (twice: idempotent).
		get(root).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		alice.api.do("PUT", sub(alice, root), map[string]any{}).expect(t, http.StatusOK, "")
		if r := get(root).expect(t, http.StatusOK, ""); r.body["automatic"] != false {
			t.Fatalf("manual subscription reads %s", r)
		}
		alice.api.do("DELETE", sub(alice, root), nil).expect(t, http.StatusOK, "")
		alice.api.do("DELETE", sub(alice, root), nil).expect(t, http.StatusOK, "")
		get(root).expect(t, http.StatusNotFound, "M_NOT_FOUND")

		// Unknown threads and threads the user cannot see are 404.
		alice.api.do("PUT", sub(alice, "$nothere:example.org"), map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		eve.api.do("PUT", sub(eve, root), map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		eve.api.do("GET", sub(eve, root), nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")

		// The cause of an automatic subscription must be in the thread.
		other := rtText(t, alice, room, "another root")
		otherReply := reply(other, "elsewhere")
		for _, cause := range []id.EventID{root, otherReply, other} {
			alice.api.do("PUT", sub(alice, root), map[string]any{"automatic": cause}).
				expect(t, http.StatusBadRequest, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
		}
		alice.api.do("PUT", sub(alice, root), map[string]any{"automatic": 5}).expect(t, http.StatusBadRequest, "M_BAD_JSON")

		// r1 came before the unsubscription: refused. r2 comes after: accepted.
		alice.api.do("PUT", sub(alice, root), map[string]any{"automatic": r1}).
			expect(t, http.StatusConflict, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION")
		get(root).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		r2 := reply(root, "two")
		alice.api.do("PUT", sub(alice, root), map[string]any{"automatic": r2}).expect(t, http.StatusOK, "")
		if r := get(root).expect(t, http.StatusOK, ""); r.body["automatic"] != true {
			t.Fatalf("automatic subscription reads %s", r)
		}
		// An automatic request leaves an existing subscription alone; a manual
		// one makes it manual, and an automatic one does not undo that.
		alice.api.do("PUT", sub(alice, root), map[string]any{"automatic": r1}).expect(t, http.StatusOK, "")
		alice.api.do("PUT", sub(alice, root), map[string]any{}).expect(t, http.StatusOK, "")
		alice.api.do("PUT", sub(alice, root), map[string]any{"automatic": r2}).expect(t, http.StatusOK, "")
		if r := get(root).expect(t, http.StatusOK, ""); r.body["automatic"] != false {
			t.Fatalf("subscription after a manual PUT reads %s", r)
		}

		// A thread never unsubscribed from takes an automatic subscription
		// from any of its events; subscriptions are per user.
		alice.api.do("PUT", sub(alice, other), map[string]any{"automatic": otherReply}).expect(t, http.StatusOK, "")
		alice.api.do("POST", v3+"/rooms/"+esc(string(room))+"/invite", map[string]any{"user_id": eve.id}).expect(t, http.StatusOK, "")
		rtJoin(t, eve, string(room)).expect(t, http.StatusOK, "")
		eve.api.do("GET", sub(eve, other), nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})
}
