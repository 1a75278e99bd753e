package federationapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// syncedPresence is a user's presence as an incremental /sync shows it
// ("" when the sync has no presence event of the user).
func syncedPresence(resp *mautrix.RespSync, user id.UserID) (state, statusMsg string) {
	for _, ev := range resp.Presence.Events {
		if ev.Type == event.EphemeralEventPresence && ev.Sender == user {
			state = gjson.GetBytes(ev.Content.VeryRaw, "presence").Str
			statusMsg = gjson.GetBytes(ev.Content.VeryRaw, "status_msg").Str
		}
	}
	return state, statusMsg
}

// storedPresence is the presence s stores for user ("" when none).
func storedPresence(t *testing.T, s *testserver.Server, user id.UserID) string {
	t.Helper()
	var state string
	err := s.DB.QueryRow(context.Background(), `SELECT COALESCE(MAX(state), '') FROM presence WHERE user_id = $1`, string(user)).Scan(&state)
	if err != nil {
		t.Fatal(err)
	}
	return state
}

// TestPresenceAcrossServers: alice on A goes online by syncing, then sets a
// status; bob on B, who shares a room with her, sees both in his /sync and in
// GET /presence; an unchanged presence is not sent again.
func TestPresenceAcrossServers(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice, bob := clientOf(t, a, "alice"), clientOf(t, b, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "presence"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoom(ctx, "#presence:"+a.Config().ServerName, nil); err != nil {
			t.Fatalf("bob joining: %v", err)
		}
		eventually(t, waitTime, "bob's join on A", func() bool { return membership(t, a, created.RoomID, bob.UserID) == "join" })
		initial, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
		if err != nil {
			t.Fatal(err)
		}
		since := initial.NextBatch

		// waitFor polls bob's sync and GET /presence until alice's presence on B
		// is want (with status msg).
		waitFor := func(want, msg string) {
			t.Helper()
			var got, gotMsg string
			eventually(t, waitTime, fmt.Sprintf("alice %s (%q) in bob's sync", want, msg), func() bool {
				resp, err := bob.SyncRequest(ctx, 500, since, "", false, event.PresenceOffline)
				if err != nil {
					t.Fatal(err)
				}
				since = resp.NextBatch
				if s, m := syncedPresence(resp, alice.UserID); s != "" {
					got, gotMsg = s, m
				}
				return got == want && gotMsg == msg
			})
			p, err := bob.GetPresence(ctx, alice.UserID)
			if err != nil {
				t.Fatalf("GET /presence of a remote user: %v", err)
			}
			if string(p.Presence) != want || p.StatusMsg != msg {
				t.Fatalf("GET /presence: %+v, want %s %q", p, want, msg)
			}
		}

		if _, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline); err != nil {
			t.Fatal(err)
		}
		waitFor("online", "")
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "baking"}); err != nil {
			t.Fatal(err)
		}
		waitFor("unavailable", "baking")

		// Syncing again changes nothing: no new presence reaches bob.
		for range 3 {
			if _, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline); err != nil {
				t.Fatal(err)
			}
		}
		var pos int64
		if err := b.DB.QueryRow(ctx, `SELECT stream_pos FROM presence WHERE user_id = $1`, string(alice.UserID)).Scan(&pos); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "back"}); err != nil {
			t.Fatal(err)
		}
		waitFor("online", "back")
		var pos2 int64
		if err := b.DB.QueryRow(ctx, `SELECT stream_pos FROM presence WHERE user_id = $1`, string(alice.UserID)).Scan(&pos2); err != nil {
			t.Fatal(err)
		}
		if pos2 <= pos {
			t.Fatalf("presence position %d after a change, was %d", pos2, pos)
		}

		// A user B shares no room with: 403, not A's answer.
		carol := clientOf(t, a, "carol")
		if err := carol.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
			t.Fatal(err)
		}
		var herr mautrix.HTTPError
		if _, err := bob.GetPresence(ctx, carol.UserID); !errors.As(err, &herr) || herr.Response == nil || herr.Response.StatusCode != http.StatusForbidden {
			t.Fatalf("GET /presence of a remote user in no shared room: %v, want 403", err)
		}
		if st := storedPresence(t, b, carol.UserID); st != "" {
			t.Fatalf("B stores presence %q of a user it shares no room with", st)
		}
	})
}

// TestPresenceEDUsFromTheirOrigin: m.presence entries are taken only for
// users of the sending server who share a room with a local user.
func TestPresenceEDUsFromTheirOrigin(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a := start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice := clientOf(t, a, "alice")
		r := createRoom(t, a, "10", alice.UserID, "public")
		evil := startEvilServer(t)
		mallory, eve := id.UserID("@mallory:"+evil.name), id.UserID("@eve:"+evil.name)
		join := evil.build(t, a, r.id, mallory, "m.room.member", sk(string(mallory)), map[string]any{"membership": "join"})
		if _, err := evil.client.SendJoin(ctx, &federation.ReqSendJoin{RoomID: r.id, EventID: join.ID(), Event: join.JSON(), Via: aName}); err != nil {
			t.Fatalf("send_join: %v", err)
		}
		// Another server, that may not speak for mallory.
		evil2 := startEvilServer(t)
		initial, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
		if err != nil {
			t.Fatal(err)
		}
		since := initial.NextBatch

		presence := func(u id.UserID, state string) json.RawMessage {
			return mustJSON(map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
				map[string]any{"user_id": u, "presence": state, "status_msg": "from " + evil.name, "last_active_ago": 1000},
			}}})
		}
		for i, tc := range []struct {
			name   string
			from   *evilServer
			edu    json.RawMessage
			user   id.UserID
			stored string
		}{
			{"spoofing a local user", evil, presence(alice.UserID, "unavailable"), alice.UserID, ""},
			{"spoofing a joined user of another server", evil2, presence(mallory, "online"), mallory, ""},
			{"a user in no shared room", evil, presence(eve, "online"), eve, ""},
			{"an unknown state", evil, presence(mallory, "dancing"), mallory, ""},
			{"a joined user of the origin", evil, presence(mallory, "unavailable"), mallory, "unavailable"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := tc.from.client.SendTransaction(ctx, &federation.ReqSendTransaction{
					Destination: aName, TxnID: fmt.Sprintf("p%d", i), Origin: tc.from.name, EDUs: []json.RawMessage{tc.edu},
				}); err != nil {
					t.Fatal(err)
				}
				if st := storedPresence(t, a, tc.user); st != tc.stored {
					t.Fatalf("stored presence %q, want %q", st, tc.stored)
				}
				resp, err := alice.SyncRequest(ctx, 0, since, "", false, event.PresenceOffline)
				if err != nil {
					t.Fatal(err)
				}
				since = resp.NextBatch
				if st, msg := syncedPresence(resp, tc.user); st != tc.stored || st != "" && msg != "from "+evil.name {
					t.Fatalf("alice's sync shows %q (%q), want %q", st, msg, tc.stored)
				}
				if tc.stored != "" {
					p, err := alice.GetPresence(ctx, tc.user)
					if err != nil || string(p.Presence) != tc.stored {
						t.Fatalf("GET /presence: %+v %v, want %s", p, err, tc.stored)
					}
				}
			})
		}
	})
}
