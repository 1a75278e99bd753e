package clientapi_test

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// syncRaw runs GET /sync with the query and returns the raw answer.
func syncRaw(t *testing.T, u *user, q url.Values) gjson.Result {
	t.Helper()
	if q.Get("timeout") == "" {
		q.Set("timeout", "0")
	}
	r := u.api.do("GET", v3+"/sync?"+q.Encode(), nil).expect(t, 200, "")
	return gjson.ParseBytes(r.raw)
}

// gjsonRoom escapes a room ID for a gjson path.
func gjsonRoom(roomID id.RoomID) string {
	out := make([]byte, 0, len(roomID)+4)
	for i := 0; i < len(roomID); i++ {
		switch c := roomID[i]; c {
		case '.', '*', '?', '|', '#', '@', '\\':
			out = append(out, '\\', c)
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// presenceSenders lists the senders of a response's presence events.
func presenceSenders(r gjson.Result) []string {
	var out []string
	for _, e := range r.Get("presence.events").Array() {
		out = append(out, e.Get("sender").Str)
	}
	return out
}

// TestSyncPresenceOfNewMembers: an incremental sync brings the presence of
// the members of a room the user just joined, and of a user who just joined
// one of the user's rooms, though their presence did not change since the
// token (Complement TestSync/TestMembersLocal, as Synapse).
func TestSyncPresenceOfNewMembers(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		// Both go online by syncing.
		aliceTok := syncRaw(t, alice, url.Values{}).Get("next_batch").Str
		bobTok := syncRaw(t, bob, url.Values{}).Get("next_batch").Str
		// Settle: the next syncs see no presence change of the other.
		aliceTok = syncRaw(t, alice, url.Values{"since": {aliceTok}}).Get("next_batch").Str
		bobTok = syncRaw(t, bob, url.Values{"since": {bobTok}}).Get("next_batch").Str

		resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := resp.RoomID
		aliceTok = syncRaw(t, alice, url.Values{"since": {aliceTok}}).Get("next_batch").Str
		stJoin(t, roomID, bob)

		// Bob joined a room: alice's presence comes with it.
		r := syncRaw(t, bob, url.Values{"since": {bobTok}})
		if !r.Get("rooms.join." + gjsonRoom(roomID)).Exists() {
			t.Fatalf("joined room missing: %s", r.Raw)
		}
		if got := presenceSenders(r); !slices.Contains(got, string(alice.id)) {
			t.Fatalf("presence after joining = %v, want alice's", got)
		}
		// Not again afterwards.
		r = syncRaw(t, bob, url.Values{"since": {r.Get("next_batch").Str}})
		if got := presenceSenders(r); slices.Contains(got, string(alice.id)) {
			t.Fatalf("alice's unchanged presence sent again: %v", got)
		}

		// Alice sees bob join her room: bob's presence comes with it, once.
		r = syncRaw(t, alice, url.Values{"since": {aliceTok}})
		got := presenceSenders(r)
		if n := len(slices.DeleteFunc(slices.Clone(got), func(u string) bool { return u != string(bob.id) })); n != 1 {
			t.Fatalf("presence after bob joined = %v, want bob's once", got)
		}
		r = syncRaw(t, alice, url.Values{"since": {r.Get("next_batch").Str}})
		if got := presenceSenders(r); slices.Contains(got, string(bob.id)) {
			t.Fatalf("bob's unchanged presence sent again: %v", got)
		}
	})
}

// TestSyncNewlyJoinedRoomLimited: the timeline of a room joined since the
// token is limited even when it holds every event the filter lets through,
// so the client paginates the history from before the join.
func TestSyncNewlyJoinedRoomLimited(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		stText(t, alice, resp.RoomID, "one")
		stText(t, alice, resp.RoomID, "two")
		filter := `{"room":{"timeline":{"limit":10,"types":["m.room.message"]},"state":{"types":[]}}}`
		tok := syncRaw(t, bob, url.Values{"filter": {filter}}).Get("next_batch").Str
		stJoin(t, resp.RoomID, bob)
		r := syncRaw(t, bob, url.Values{"since": {tok}, "filter": {filter}})
		tl := r.Get("rooms.join." + gjsonRoom(resp.RoomID) + ".timeline")
		if n := len(tl.Get("events").Array()); n != 2 || !tl.Get("limited").Bool() || tl.Get("prev_batch").Str == "" {
			t.Fatalf("newly joined room's timeline = %s, want the 2 messages, limited, with prev_batch", tl.Raw)
		}
		// An initial sync is limited only when there is more.
		r = syncRaw(t, bob, url.Values{"filter": {`{"room":{"timeline":{"limit":50}}}`}})
		if tl := r.Get("rooms.join." + gjsonRoom(resp.RoomID) + ".timeline"); tl.Get("limited").Bool() {
			t.Fatalf("initial sync holding the whole room is limited: %s", tl.Raw)
		}
	})
}

// TestSyncPushRulesInInitialSync: an initial sync brings m.push_rules even to
// a user who never changed a rule, and a change brings them incrementally.
func TestSyncPushRulesInInitialSync(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		pushRules := func(r gjson.Result) gjson.Result {
			return r.Get(`account_data.events.#(type=="m.push_rules").content.global`)
		}
		r := syncRaw(t, alice, url.Values{})
		rules := pushRules(r)
		if !rules.Exists() || !rules.Get(`override.#(rule_id==".m.rule.master")`).Exists() {
			t.Fatalf("initial sync lacks the push rules: %s", r.Get("account_data").Raw)
		}
		// A filter leaving out m.push_rules is obeyed.
		f := syncRaw(t, alice, url.Values{"filter": {`{"account_data":{"not_types":["m.push_rules"]}}`}})
		if pushRules(f).Exists() {
			t.Fatalf("filtered out push rules sent: %s", f.Get("account_data").Raw)
		}
		tok := r.Get("next_batch").Str
		if again := syncRaw(t, alice, url.Values{"since": {tok}}); pushRules(again).Exists() {
			t.Fatalf("unchanged push rules sent incrementally: %s", again.Get("account_data").Raw)
		}
		alice.api.do("PUT", v3+"/pushrules/global/room/"+esc("!foo:example.com"), map[string]any{"actions": []string{"notify"}}).expect(t, 200, "")
		r = syncRaw(t, alice, url.Values{"since": {tok}})
		if !pushRules(r).Get(`room.#(rule_id=="!foo:example.com")`).Exists() {
			t.Fatalf("changed push rules not sent: %s", r.Get("account_data").Raw)
		}
	})
}

// TestSyncTimelineLimitZero: a filter with timeline limit 0 is accepted and
// gives rooms without timeline events; a left room's state then holds the
// leave and the state from before it (Complement TestArchivedRoomsHistory).
func TestSyncTimelineLimitZero(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := resp.RoomID
		stJoin(t, roomID, bob)
		sendState := func(v string) {
			if _, err := alice.cli.SendStateEvent(ctx, roomID, event.NewEventType("a.madeup.test.state"), "", map[string]any{"my_key": v}); err != nil {
				t.Fatal(err)
			}
		}
		sendState("before")
		if _, err := bob.cli.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		sendState("after")

		bob.api.do("POST", v3+"/user/"+esc(string(bob.id))+"/filter", map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 0}}}).expect(t, 200, "")
		r := syncRaw(t, bob, url.Values{"filter": {`{"room":{"timeline":{"limit":0},"include_leave":true}}`}})
		lr := r.Get("rooms.leave." + gjsonRoom(roomID))
		if n := len(lr.Get("timeline.events").Array()); n != 0 || !lr.Get("timeline.events").IsArray() {
			t.Fatalf("left room timeline = %s", lr.Get("timeline").Raw)
		}
		var leave gjson.Result
		for _, e := range lr.Get("state.events").Array() {
			if e.Get("type").Str == "m.room.member" && e.Get("state_key").Str == string(bob.id) {
				leave = e
			}
		}
		if leave.Get("content.membership").Str != "leave" {
			t.Fatalf("left room state lacks bob's leave: %s", lr.Get("state").Raw)
		}
		if v := lr.Get(`state.events.#(type=="a.madeup.test.state").content.my_key`).Str; v != "before" {
			t.Fatalf("left room state has my_key %q, want the value from before the leave", v)
		}
		// A joined room with limit 0: no events, limited.
		r = syncRaw(t, alice, url.Values{"filter": {`{"room":{"timeline":{"limit":0}}}`}})
		tl := r.Get("rooms.join." + gjsonRoom(roomID) + ".timeline")
		if len(tl.Get("events").Array()) != 0 || !tl.Get("limited").Bool() {
			t.Fatalf("joined room timeline with limit 0 = %s", tl.Raw)
		}
		// Negative limits stay refused.
		bob.api.do("POST", v3+"/user/"+esc(string(bob.id))+"/filter", map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": -1}}}).expect(t, 400, "M_BAD_JSON")
	})
}

// TestSyncStateAfter checks use_state_after (Client-Server API v1.16, MSC4222):
// state_after replaces state, holds the state at the end of the timeline with
// the timeline's own state events (clients take state only from it), with
// lazy-loading the member events of every timeline sender, and the unstable
// parameter answers under the unstable key.
func TestSyncStateAfter(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		for _, preset := range []string{"public_chat", "private_chat"} {
			req := &mautrix.ReqCreateRoom{Preset: preset}
			if preset == "private_chat" {
				req.Invite = []id.UserID{bob.id}
			}
			resp, err := alice.cli.CreateRoom(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			roomID := resp.RoomID
			stJoin(t, roomID, bob)
			lazy := `{"room":{"timeline":{"limit":20},"state":{"lazy_load_members":true}}}`
			for _, param := range []string{"use_state_after", "org.matrix.msc4222.use_state_after"} {
				key := "state_after"
				if param != "use_state_after" {
					key = `org\.matrix\.msc4222\.state_after`
				}
				r := syncRaw(t, alice, url.Values{param: {"true"}, "filter": {lazy}})
				jr := r.Get("rooms.join." + gjsonRoom(roomID))
				if jr.Get("state").Exists() || !jr.Get(key+".events").IsArray() {
					t.Fatalf("%s %s: want %s and no state: %s", preset, param, key, jr.Raw)
				}
				senders := map[string]bool{}
				for _, e := range jr.Get("timeline.events").Array() {
					senders[e.Get("sender").Str] = true
				}
				members := map[string]bool{}
				for _, e := range jr.Get(key + ".events").Array() {
					if e.Get("type").Str == "m.room.member" {
						members[e.Get("state_key").Str] = true
					}
				}
				if !senders[string(bob.id)] || !senders[string(alice.id)] {
					t.Fatalf("%s: timeline senders %v", preset, senders)
				}
				for u := range senders {
					if !members[u] {
						t.Fatalf("%s %s: state_after members %v lack sender %s", preset, param, members, u)
					}
				}
			}
			// Incrementally, a state change in the timeline is in state_after too.
			tok := syncRaw(t, alice, url.Values{"use_state_after": {"true"}}).Get("next_batch").Str
			if _, err := alice.cli.SendStateEvent(ctx, roomID, event.StateTopic, "", map[string]any{"topic": "t-" + preset}); err != nil {
				t.Fatal(err)
			}
			r := syncRaw(t, alice, url.Values{"use_state_after": {"true"}, "since": {tok}})
			jr := r.Get("rooms.join." + gjsonRoom(roomID))
			if jr.Get(`state_after.events.#(type=="m.room.topic").content.topic`).Str != "t-"+preset ||
				!jr.Get(`timeline.events.#(type=="m.room.topic")`).Exists() {
				t.Fatalf("%s: incremental state_after lacks the timeline's topic: %s", preset, jr.Raw)
			}
		}
	})
}

// TestSyncThreadReceiptOnRelatedEvent: a threaded receipt may name an event
// related to the thread root by other relations (a reaction to a reference to
// the root), which reads the thread up to it; an event unrelated to the
// thread is refused (Complement TestThreadedReceipts).
func TestSyncThreadReceiptOnRelatedEvent(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		stJoin(t, roomID, bob)
		send := func(typ string, content map[string]any) id.EventID {
			t.Helper()
			r, err := alice.cli.SendMessageEvent(ctx, roomID, event.NewEventType(typ), content)
			if err != nil {
				t.Fatal(err)
			}
			return r.EventID
		}
		root := send("m.room.message", map[string]any{"msgtype": "m.text", "body": "root"})
		rel := func(typ, target string) map[string]any {
			return map[string]any{"msgtype": "m.text", "body": typ, "m.relates_to": map[string]any{"rel_type": typ, "event_id": target}}
		}
		send("m.room.message", rel("m.thread", string(root)))
		send("m.room.message", rel("m.thread", string(root)))
		plain := send("m.room.message", map[string]any{"msgtype": "m.text", "body": "main"})
		ref := send("m.room.message", rel("m.reference", string(root)))
		reaction := send("m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": string(ref), "key": "+1"}})

		filter := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
		threadCount := func() int {
			r := syncRaw(t, bob, url.Values{"filter": {filter}})
			return int(r.Get("rooms.join." + gjsonRoom(roomID) + ".unread_thread_notifications." + gjsonRoom(id.RoomID(root)) + ".notification_count").Int())
		}
		if n := threadCount(); n != 2 {
			t.Fatalf("thread notifications before the receipt = %d, want 2", n)
		}
		receipt := func(ev id.EventID) resp {
			return bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.read/"+esc(string(ev)), map[string]any{"thread_id": string(root)})
		}
		receipt(plain).expect(t, 400, "M_INVALID_PARAM")
		receipt(reaction).expect(t, 200, "")
		s.Sync.Settle(5 * time.Second)
		if n := threadCount(); n != 0 {
			t.Fatalf("thread notifications after a thread receipt on a related event = %d, want 0", n)
		}
	})
}
