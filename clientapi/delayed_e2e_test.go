package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/testserver"
)

const delayedEventsPath = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"

// delayedList returns u's scheduled delayed events.
func delayedList(t *testing.T, u *user) []map[string]any {
	t.Helper()
	r := u.api.do("GET", delayedEventsPath, nil).expect(t, http.StatusOK, "")
	return rtEvents(t, r.body["delayed_events"])
}

// eventually polls cond every 20 ms for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func delayQuery(ms int64) string { return "?org.matrix.msc4140.delay=" + fmt.Sprint(ms) }

// delayedState schedules a state event and returns its delay ID.
func delayedState(t *testing.T, u *user, room id.RoomID, key string, content map[string]any, ms int64) string {
	t.Helper()
	path := fmt.Sprintf("%s/rooms/%s/state/com.example.test/%s%s", v3, esc(string(room)), esc(key), delayQuery(ms))
	r := u.api.do("PUT", path, content).expect(t, http.StatusOK, "")
	if r.str("delay_id") == "" || r.body["event_id"] != nil {
		t.Fatalf("scheduling answered %s", r)
	}
	return r.str("delay_id")
}

// stateOf reads one com.example.test state event of the room (nil: none).
func stateOf(t *testing.T, u *user, room id.RoomID, key string) map[string]any {
	t.Helper()
	r := u.api.do("GET", fmt.Sprintf("%s/rooms/%s/state/com.example.test/%s?format=event", v3, esc(string(room)), esc(key)), nil)
	if r.status == http.StatusNotFound {
		return nil
	}
	r.expect(t, http.StatusOK, "")
	return r.body
}

// TestDelayedEvents: MSC4140 delayed message and state events: scheduling
// (idempotent per transaction), listing, sending on time and in order,
// cancelling, sending on request, restarting, the unauthenticated and the
// authenticated management forms, limits, cancellation by another user's
// state change, and persistence across a restart.
func TestDelayedEvents(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		anon := newAPI(t, s, "")
		room := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat",
			"power_level_content_override": map[string]any{"events": map[string]any{"com.example.test": 0}}})
		rtJoin(t, bob, string(room)).expect(t, http.StatusOK, "")
		action := func(delayID, act string) resp {
			return anon.do("POST", delayedEventsPath+"/"+esc(delayID)+"/"+act, map[string]any{})
		}

		v := anon.do("GET", "/_matrix/client/versions", nil).expect(t, http.StatusOK, "")
		for _, f := range []string{"org.matrix.msc4140", "org.matrix.msc4155", "org.matrix.msc4306"} {
			if rtField(v.body, "unstable_features", f) != true {
				t.Fatalf("/versions does not advertise %s: %s", f, v)
			}
		}

		t.Run("messages are sent on time, in order", func(t *testing.T) {
			if n := len(delayedList(t, alice)); n != 0 {
				t.Fatalf("%d delayed events at start", n)
			}
			anon.do("GET", delayedEventsPath, nil).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
			start := time.Now().UnixMilli()
			var ids []string
			for i, ms := range []int64{300, 400, 500} {
				path := fmt.Sprintf("%s/rooms/%s/send/com.example.test/dtxn%d%s", v3, esc(string(room)), i, delayQuery(ms))
				id1 := alice.api.do("PUT", path, map[string]any{"count": i + 1}).expect(t, http.StatusOK, "").str("delay_id")
				// A retry (even without its body) gets the same delay ID.
				id2 := alice.api.do("PUT", path, nil).expect(t, http.StatusOK, "").str("delay_id")
				if id1 == "" || id1 != id2 {
					t.Fatalf("retried transaction: %q then %q", id1, id2)
				}
				ids = append(ids, id1)
			}
			list := delayedList(t, alice)
			if len(list) != 3 || list[0]["delay_id"] != ids[0] || list[2]["delay_id"] != ids[2] || rtField(list[1], "content", "count") != 2.0 ||
				list[0]["delay"] != 300.0 || list[0]["type"] != "com.example.test" || list[0]["room_id"] != string(room) || list[0]["state_key"] != nil {
				t.Fatalf("listed %s", rtJSON(list))
			}
			if n := len(delayedList(t, bob)); n != 0 {
				t.Fatalf("bob sees %d of alice's delayed events", n)
			}
			eventually(t, "delayed messages sent", func() bool { return len(delayedList(t, alice)) == 0 })
			msgs := rtMessages(t, alice, room, url.Values{"dir": {"b"}, "limit": {"10"}})
			var counts []float64
			for _, e := range rtEvents(t, msgs.body["chunk"]) {
				if e["type"] == "com.example.test" {
					counts = append([]float64{rtField(e, "content", "count").(float64)}, counts...)
					if ts := e["origin_server_ts"].(float64); int64(ts) < start+300 {
						t.Fatalf("sent %d ms after scheduling, before its delay", int64(ts)-start)
					}
				}
			}
			if fmt.Sprint(counts) != "[1 2 3]" {
				t.Fatalf("messages sent in the order %v", counts)
			}
			// Actions on finalised events: repeating the outcome is fine, the
			// opposite conflicts.
			action(ids[0], "send").expect(t, http.StatusOK, "")
			action(ids[0], "cancel").expect(t, http.StatusConflict, "M_UNKNOWN")
		})

		t.Run("state events are sent on time", func(t *testing.T) {
			delayedState(t, alice, room, "timeout", map[string]any{"setter": "on_timeout"}, 300)
			if stateOf(t, alice, room, "timeout") != nil {
				t.Fatal("state set before the delay")
			}
			eventually(t, "delayed state sent", func() bool { return stateOf(t, alice, room, "timeout") != nil })
			if got := rtField(stateOf(t, alice, room, "timeout"), "content", "setter"); got != "on_timeout" {
				t.Fatalf("state content %v", got)
			}
		})

		t.Run("cancel", func(t *testing.T) {
			id := delayedState(t, alice, room, "never", map[string]any{}, 400)
			action(id, "cancel").expect(t, http.StatusOK, "")
			action(id, "cancel").expect(t, http.StatusOK, "")
			action(id, "send").expect(t, http.StatusConflict, "M_UNKNOWN")
			action(id, "restart").expect(t, http.StatusConflict, "M_UNKNOWN")
			if n := len(delayedList(t, alice)); n != 0 {
				t.Fatalf("%d still listed", n)
			}
			time.Sleep(600 * time.Millisecond)
			if stateOf(t, alice, room, "never") != nil {
				t.Fatal("a cancelled event was sent")
			}
		})

		t.Run("send on request", func(t *testing.T) {
			id := delayedState(t, alice, room, "now", map[string]any{"setter": "on_send"}, 100000)
			action(id, "send").expect(t, http.StatusOK, "")
			if got := rtField(stateOf(t, alice, room, "now"), "content", "setter"); got != "on_send" {
				t.Fatalf("state after send: %v", got)
			}
			if n := len(delayedList(t, alice)); n != 0 {
				t.Fatalf("%d still listed", n)
			}
		})

		t.Run("restart", func(t *testing.T) {
			id := delayedState(t, alice, room, "restarted", map[string]any{}, 600)
			first := delayedList(t, alice)[0]["running_since"].(float64)
			time.Sleep(300 * time.Millisecond)
			action(id, "restart").expect(t, http.StatusOK, "")
			list := delayedList(t, alice)
			if len(list) != 1 || list[0]["running_since"].(float64) < first+250 {
				t.Fatalf("after restart: %s (running since %v before)", rtJSON(list), first)
			}
			restarted := int64(list[0]["running_since"].(float64))
			eventually(t, "restarted event sent", func() bool { return stateOf(t, alice, room, "restarted") != nil })
			if ts := int64(stateOf(t, alice, room, "restarted")["origin_server_ts"].(float64)); ts < restarted+600 {
				t.Fatalf("sent at %d, before the restarted delay ended at %d", ts, restarted+600)
			}
		})

		t.Run("management errors", func(t *testing.T) {
			for _, act := range []string{"cancel", "restart", "send"} {
				action("syd_unknown", act).expect(t, http.StatusNotFound, "M_NOT_FOUND")
			}
			anon.do("POST", delayedEventsPath+"/syd_unknown/oops", map[string]any{}).expect(t, http.StatusNotFound, "")
			anon.do("POST", delayedEventsPath+"/syd_unknown", map[string]any{}).expect(t, http.StatusUnauthorized, "")
			id := delayedState(t, alice, room, "legacy", map[string]any{}, 100000)
			alice.api.do("POST", delayedEventsPath+"/"+esc(id), map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
			alice.api.do("POST", delayedEventsPath+"/"+esc(id), map[string]any{"action": "oops"}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
			bob.api.do("POST", delayedEventsPath+"/"+esc(id), map[string]any{"action": "cancel"}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
			alice.api.do("POST", delayedEventsPath+"/"+esc(id), map[string]any{"action": "cancel"}).expect(t, http.StatusOK, "")

			r := alice.api.do("PUT", fmt.Sprintf("%s/rooms/%s/state/com.example.test/x%s", v3, esc(string(room)), delayQuery(s.Config().DelayedEvents.MaxDelayMS+1)), map[string]any{})
			r.expect(t, http.StatusBadRequest, "M_UNKNOWN")
			if r.body["org.matrix.msc4140.errcode"] != "M_MAX_DELAY_EXCEEDED" {
				t.Fatalf("max delay answer %s", r)
			}
			alice.api.do("PUT", fmt.Sprintf("%s/rooms/%s/state/com.example.test/x?org.matrix.msc4140.delay=-1", v3, esc(string(room))), map[string]any{}).
				expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
			outsider := registerUser(t, s, "outsider")
			outsider.api.do("PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/o1%s", v3, esc(string(room)), delayQuery(1000)), map[string]any{}).
				expect(t, http.StatusForbidden, "M_FORBIDDEN")
		})

		t.Run("another user's state change cancels", func(t *testing.T) {
			mine := delayedState(t, alice, room, "contested", map[string]any{"by": "alice"}, 100000)
			kept := delayedState(t, alice, room, "own", map[string]any{"by": "alice"}, 100000)
			// Alice's own change to "own" keeps her delayed event; Bob's change
			// to "contested" cancels hers.
			rtState(t, alice, room, "com.example.test", "own", map[string]any{"by": "alice now"}).expect(t, http.StatusOK, "")
			rtState(t, bob, room, "com.example.test", "contested", map[string]any{"by": "bob"}).expect(t, http.StatusOK, "")
			eventually(t, "cancellation by bob's change", func() bool {
				list := delayedList(t, alice)
				return len(list) == 1 && list[0]["delay_id"] == kept
			})
			action(mine, "send").expect(t, http.StatusConflict, "M_UNKNOWN")
			action(kept, "cancel").expect(t, http.StatusOK, "")
		})

		t.Run("kept across a restart", func(t *testing.T) {
			delayedState(t, alice, room, "r1", map[string]any{}, 300)
			later := delayedState(t, alice, room, "r2", map[string]any{}, 100000)
			s.Stop()
			time.Sleep(500 * time.Millisecond)
			s.Restart(t)
			alice.api.base, bob.api.base, anon.base = s.URL, s.URL, s.URL
			eventually(t, "overdue event sent after restart", func() bool { return stateOf(t, alice, room, "r1") != nil })
			list := delayedList(t, alice)
			if len(list) != 1 || list[0]["delay_id"] != later {
				t.Fatalf("after restart: %s", rtJSON(list))
			}
			action(later, "send").expect(t, http.StatusOK, "")
			if stateOf(t, alice, room, "r2") == nil {
				t.Fatal("sending after a restart did nothing")
			}
		})
	})
}

// TestDelayedEventLimits: the per-user cap, and delayed events switched off.
func TestDelayedEventLimits(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		room := rtCreateRoom(t, alice, map[string]any{})
		for i := range 3 {
			path := fmt.Sprintf("%s/rooms/%s/send/m.room.message/l%d%s", v3, esc(string(room)), i, delayQuery(100000))
			r := alice.api.do("PUT", path, map[string]any{"body": "x"})
			if i < 2 {
				r.expect(t, http.StatusOK, "")
				continue
			}
			r.expect(t, http.StatusBadRequest, "M_UNKNOWN")
			if r.body["org.matrix.msc4140.errcode"] != "M_MAX_DELAYED_EVENTS_EXCEEDED" {
				t.Fatalf("limit answer %s", r)
			}
		}
	}, func(c *config.Config) { c.DelayedEvents.MaxPerUser = 2 })

	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		room := rtCreateRoom(t, alice, map[string]any{})
		alice.api.do("PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/off%s", v3, esc(string(room)), delayQuery(1000)), map[string]any{}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		alice.api.do("GET", delayedEventsPath, nil).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
		if v := newAPI(t, s, "").do("GET", "/_matrix/client/versions", nil); rtField(v.body, "unstable_features", "org.matrix.msc4140") != nil {
			t.Fatalf("delayed events advertised while off: %s", v)
		}
	}, func(c *config.Config) { c.DelayedEvents.MaxDelayMS = 0 })
}

// TestDelayedMemberEventChecks: a delayed m.room.member event gets the checks
// of PUT /state when it is sent: a client-chosen join_authorised_via_users_server
// is dropped (else a user outside a restricted room's allowed rooms could name
// a local admin and join), guests cannot join rooms without guest access, and
// nothing is sent for a user deactivated meanwhile.
func TestDelayedMemberEventChecks(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "mallory")
		alice, mallory := us[0], us[1]
		allowed := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
		room := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "8", "initial_state": []any{
			map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
				"join_rule": "restricted",
				"allow":     []any{map[string]any{"type": "m.room_membership", "room_id": string(allowed)}},
			}},
		}})
		memberPath := func(room id.RoomID, u id.UserID, ms int64) string {
			return fmt.Sprintf("%s/rooms/%s/state/m.room.member/%s%s", v3, esc(string(room)), esc(string(u)), delayQuery(ms))
		}
		membership := func(room id.RoomID, u id.UserID) any {
			r := alice.api.do("GET", fmt.Sprintf("%s/rooms/%s/state/m.room.member/%s", v3, esc(string(room)), esc(string(u))), nil)
			return r.body["membership"]
		}
		forged := map[string]any{"membership": "join", "join_authorised_via_users_server": string(alice.id)}
		// Sent at once, the forged authoriser is dropped and the join refused.
		rtState(t, mallory, room, "m.room.member", string(mallory.id), forged).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		// Delayed, the same.
		mallory.api.do("PUT", memberPath(room, mallory.id, 0), forged).expect(t, http.StatusOK, "")
		eventually(t, "the delayed join to be finalised", func() bool { return len(delayedList(t, mallory)) == 0 })
		if m := membership(room, mallory.id); m == "join" {
			t.Fatal("a delayed join with a client-chosen authoriser joined a restricted room")
		}

		// A delayed join of a user deactivated before it is due is not sent.
		public := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		mallory.api.do("PUT", memberPath(public, mallory.id, 1500), map[string]any{"membership": "join"}).expect(t, http.StatusOK, "")
		uia(t, mallory.api, "POST", v3+"/account/deactivate", map[string]any{}, mallory).expect(t, http.StatusOK, "")
		time.Sleep(2500 * time.Millisecond)
		if m := membership(public, mallory.id); m == "join" {
			t.Fatal("a delayed join was sent for a deactivated user")
		}
	})

	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		room := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"}) // guest_access forbidden
		g := newAPI(t, s, "").do("POST", v3+"/register?kind=guest", map[string]any{}).expect(t, http.StatusOK, "")
		guest := &user{id: id.UserID(g.str("user_id")), token: g.str("access_token"), api: newAPI(t, s, g.str("access_token"))}
		path := fmt.Sprintf("%s/rooms/%s/state/m.room.member/%s", v3, esc(string(room)), esc(string(guest.id)))
		guest.api.do("PUT", path, map[string]any{"membership": "join"}).expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
		guest.api.do("PUT", path+delayQuery(0), map[string]any{"membership": "join"}).expect(t, http.StatusOK, "")
		eventually(t, "the guest's delayed join to be finalised", func() bool { return len(delayedList(t, guest)) == 0 })
		r := alice.api.do("GET", path, nil)
		if r.body["membership"] == "join" {
			t.Fatal("a guest joined a room without guest access through a delayed event")
		}
	}, allowGuests)
}
