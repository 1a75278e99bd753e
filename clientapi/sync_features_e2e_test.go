package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// stJoin has each user join roomID.
func stJoin(t *testing.T, roomID id.RoomID, us ...*user) {
	t.Helper()
	for _, u := range us {
		if _, err := u.cli.JoinRoomByID(context.Background(), roomID); err != nil {
			t.Fatalf("%s joining: %v", u.id, err)
		}
	}
}

func stMemberKeys(evs []syncEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.member" && e.StateKey != nil {
			out = append(out, *e.StateKey)
		}
	}
	sort.Strings(out)
	return out
}

func syncFiltered(t *testing.T, u *user, since, filter string) *syncResp {
	t.Helper()
	q := url.Values{"timeout": {"0"}, "filter": {filter}}
	if since != "" {
		q.Set("since", since)
	}
	return syncDo(t, u, q)
}

func TestSyncLazyLoadMembers(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		carol := registerUser(t, s, "carol")
		dave := registerUser(t, s, "dave")
		roomID := stRoom(t, alice, bob, carol, dave)
		stJoin(t, roomID, bob, carol, dave)
		stText(t, alice, roomID, "a1")
		stText(t, bob, roomID, "b1")
		stText(t, carol, roomID, "c1")

		lazy := `{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true}}}`
		r := syncFiltered(t, dave, "", lazy)
		jr := r.Rooms.Join[roomID]
		if jr == nil {
			t.Fatalf("room missing")
		}
		var senders []string
		for _, e := range jr.Timeline.Events {
			senders = append(senders, string(e.Sender))
		}
		if !slices.Equal(senders, []string{string(bob.id), string(carol.id)}) {
			t.Fatalf("timeline senders = %v", senders)
		}
		want := []string{string(bob.id), string(carol.id), string(dave.id)}
		sort.Strings(want)
		if got := stMemberKeys(jr.State.Events); !slices.Equal(got, want) {
			t.Fatalf("lazy state members = %v, want %v (the senders and the user)", got, want)
		}
		var nonMember int
		for _, e := range jr.State.Events {
			if e.Type != "m.room.member" {
				nonMember++
			}
		}
		if nonMember == 0 {
			t.Errorf("lazy state lost the non-member state")
		}

		// Without lazy loading every member is sent.
		full := syncFiltered(t, dave, "", `{"room":{"timeline":{"limit":2}}}`)
		if got := stMemberKeys(full.Rooms.Join[roomID].State.Events); len(got) != 4 {
			t.Fatalf("full state members = %v", got)
		}

		// Incrementally: a known sender's member event is not sent again, a new
		// sender's is.
		stText(t, carol, roomID, "c2")
		stText(t, alice, roomID, "a2")
		r2 := syncFiltered(t, dave, r.NextBatch, lazy)
		jr2 := r2.Rooms.Join[roomID]
		if jr2 == nil {
			t.Fatalf("room missing from incremental sync")
		}
		var got []string
		if jr2.State != nil {
			got = stMemberKeys(jr2.State.Events)
		}
		if !slices.Equal(got, []string{string(alice.id)}) {
			t.Fatalf("incremental lazy members = %v, want only alice's", got)
		}
		// include_redundant_members sends them all again.
		r3 := syncFiltered(t, dave, r.NextBatch, `{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true,"include_redundant_members":true}}}`)
		if got := stMemberKeys(r3.Rooms.Join[roomID].State.Events); !slices.Equal(got, stSortedIDs(alice.id, carol.id)) {
			t.Fatalf("redundant lazy members = %v", got)
		}
	})
}

func stSortedIDs(us ...id.UserID) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = string(u)
	}
	sort.Strings(out)
	return out
}

func TestSyncLimitedTimelineAndMessages(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		roomID := stRoom(t, alice, bob)
		stJoin(t, roomID, bob)
		r := syncSince(t, bob, "", 0)
		for i := 0; i < 15; i++ {
			stText(t, alice, roomID, fmt.Sprintf("m%02d", i))
		}
		// A state change in the gap must show up in the state delta.
		if _, err := alice.cli.SendStateEvent(context.Background(), roomID, event.StateTopic, "", map[string]any{"topic": "gap topic"}); err != nil {
			t.Fatal(err)
		}
		for i := 15; i < 25; i++ {
			stText(t, alice, roomID, fmt.Sprintf("m%02d", i))
		}
		r2 := syncSince(t, bob, r.NextBatch, 0)
		jr := r2.Rooms.Join[roomID]
		if jr == nil || !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
			t.Fatalf("timeline not limited: %+v", jr)
		}
		bodies := stBodies(jr)
		if len(bodies) != 10 || bodies[0] != "m15" || bodies[9] != "m24" {
			t.Fatalf("limited timeline = %v", bodies)
		}
		var topic bool
		for _, e := range jr.State.Events {
			topic = topic || e.Type == "m.room.topic"
		}
		if !topic {
			t.Fatalf("state delta lacks the topic change in the gap: %+v", jr.State.Events)
		}
		// prev_batch continues in /messages exactly where the timeline starts.
		mr := bob.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/messages?dir=b&limit=5&from="+url.QueryEscape(jr.Timeline.PrevBatch), nil).expect(t, 200, "")
		var page struct {
			Chunk []syncEvent `json:"chunk"`
		}
		if err := json.Unmarshal(mr.raw, &page); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range page.Chunk {
			if e.Type == "m.room.message" {
				got = append(got, e.body())
			}
		}
		// The events just before the timeline, newest first: the topic, m14 …
		if !slices.Equal(got, []string{"m14", "m13", "m12", "m11"}) {
			t.Fatalf("/messages from prev_batch = %v, want m14 to m11 after the topic", got)
		}

		// Not limited: a small incremental sync with no state.
		stText(t, alice, roomID, "tail")
		r3 := syncSince(t, bob, r2.NextBatch, 0)
		jr3 := r3.Rooms.Join[roomID]
		if jr3 == nil || jr3.Timeline.Limited || !slices.Equal(stBodies(jr3), []string{"tail"}) {
			t.Fatalf("incremental timeline = %+v", jr3)
		}
		if jr3.State != nil && len(jr3.State.Events) > 0 {
			t.Fatalf("unlimited incremental sync sent state: %+v", jr3.State.Events)
		}
		// full_state sends the whole state again.
		fs := syncDo(t, bob, url.Values{"since": {r2.NextBatch}, "full_state": {"true"}})
		if jr := fs.Rooms.Join[roomID]; jr == nil || jr.State == nil || len(stMemberKeys(jr.State.Events)) != 2 {
			t.Fatalf("full_state sync = %+v", fs.Rooms.Join[roomID])
		}
	})
}

func TestSyncLeaveIgnoreAndFilters(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		roomID := stRoom(t, alice, bob)
		stJoin(t, roomID, bob)
		r := syncSince(t, bob, "", 0)

		// A types filter on the timeline.
		stText(t, alice, roomID, "text")
		if _, err := alice.cli.SendMessageEvent(ctx, roomID, event.Type{Type: "org.example.custom", Class: event.MessageEventType}, map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}
		fr := syncFiltered(t, bob, r.NextBatch, `{"room":{"timeline":{"types":["org.example.*"]}}}`)
		if jr := fr.Rooms.Join[roomID]; jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].Type != "org.example.custom" {
			t.Fatalf("filtered timeline = %+v", fr.Rooms.Join[roomID])
		}
		fr = syncFiltered(t, bob, r.NextBatch, `{"room":{"not_rooms":["`+string(roomID)+`"]}}`)
		if _, ok := fr.Rooms.Join[roomID]; ok {
			t.Fatalf("not_rooms did not exclude the room")
		}
		// A stored filter works the same as an inline one.
		fid := bob.api.do("POST", v3+"/user/"+esc(string(bob.id))+"/filter", map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}}).expect(t, 200, "").str("filter_id")
		fr = syncFiltered(t, bob, r.NextBatch, fid)
		if jr := fr.Rooms.Join[roomID]; jr == nil || len(jr.Timeline.Events) != 1 || !jr.Timeline.Limited {
			t.Fatalf("stored filter timeline = %+v", fr.Rooms.Join[roomID])
		}
		r = syncSince(t, bob, r.NextBatch, 0)

		// Ignoring Alice drops her messages (not her state events).
		bob.api.do("PUT", v3+"/user/"+esc(string(bob.id))+"/account_data/m.ignored_user_list",
			map[string]any{"ignored_users": map[string]any{string(alice.id): map[string]any{}}}).expect(t, 200, "")
		r = syncSince(t, bob, r.NextBatch, 0)
		stText(t, alice, roomID, "ignored")
		if _, err := alice.cli.SendStateEvent(ctx, roomID, event.StateTopic, "", map[string]any{"topic": "t"}); err != nil {
			t.Fatal(err)
		}
		r = syncSince(t, bob, r.NextBatch, 0)
		if jr := r.Rooms.Join[roomID]; jr == nil || slices.Contains(stBodies(jr), "ignored") || len(jr.Timeline.Events) != 1 {
			t.Fatalf("ignored user's message sent, or state lost: %+v", r.Rooms.Join[roomID])
		}
		bob.api.do("PUT", v3+"/user/"+esc(string(bob.id))+"/account_data/m.ignored_user_list",
			map[string]any{"ignored_users": map[string]any{}}).expect(t, 200, "")

		// Leaving: the room moves to the leave section with the leave event.
		r = syncSince(t, bob, r.NextBatch, 0)
		if _, err := bob.cli.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		r = syncSince(t, bob, r.NextBatch, 5*time.Second)
		lr := r.Rooms.Leave[roomID]
		if lr == nil {
			t.Fatalf("left room not in leave: %+v", r.Rooms)
		}
		var sawLeave bool
		for _, e := range lr.Timeline.Events {
			sawLeave = sawLeave || e.Type == "m.room.member" && e.Sender == bob.id
		}
		if !sawLeave {
			t.Fatalf("leave timeline lacks the leave event: %+v", lr.Timeline.Events)
		}
		// Later messages do not reach Bob.
		stText(t, alice, roomID, "after")
		r = syncSince(t, bob, r.NextBatch, 0)
		if _, ok := r.Rooms.Join[roomID]; ok {
			t.Fatalf("left room still synced")
		}
		if _, ok := r.Rooms.Leave[roomID]; ok {
			t.Fatalf("left room sent again")
		}
		// An initial sync shows it only with include_leave.
		if r := syncSince(t, bob, "", 0); len(r.Rooms.Leave) != 0 {
			t.Fatalf("left rooms without include_leave: %v", r.Rooms.Leave)
		}
		if r := syncFiltered(t, bob, "", `{"room":{"include_leave":true}}`); r.Rooms.Leave[roomID] == nil {
			t.Fatalf("include_leave lacks the room")
		}
		// A room Bob was kicked or banned from is listed in initial syncs even
		// without include_leave (as Synapse does), so his client learns of it.
		for _, action := range []string{"kick", "ban"} {
			other := stRoom(t, alice, bob)
			stJoin(t, other, bob)
			alice.api.do("POST", v3+"/rooms/"+esc(string(other))+"/"+action, map[string]any{"user_id": bob.id}).expect(t, 200, "")
			lr := syncSince(t, bob, "", 0).Rooms.Leave
			if lr[other] == nil {
				t.Fatalf("room bob got a %s from is not in an initial sync: %v", action, lr)
			}
			if lr[roomID] != nil {
				t.Fatalf("room bob left himself is in an initial sync")
			}
		}
	})
}

func TestSyncAccountDataPresenceMarkers(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		roomID := stRoom(t, alice, bob)
		stJoin(t, roomID, bob)
		r := syncSince(t, bob, "", 0)

		// An account data write wakes a long poll.
		done := make(chan *syncResp, 1)
		go func() { done <- syncSince(t, bob, r.NextBatch, 10*time.Second) }()
		stWaitWaiting(t, s, bob.id)
		bob.api.do("PUT", v3+"/user/"+esc(string(bob.id))+"/account_data/org.example.cfg", map[string]any{"k": "v"}).expect(t, 200, "")
		bob.api.do("PUT", v3+"/user/"+esc(string(bob.id))+"/rooms/"+esc(string(roomID))+"/account_data/org.example.room", map[string]any{"r": 1}).expect(t, 200, "")
		select {
		case r = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("account data did not wake the long poll")
		}
		r2 := syncSince(t, bob, "", 0)
		var global bool
		for _, e := range r2.AccountData.Events {
			var ev struct{ Type string }
			_ = json.Unmarshal(e, &ev)
			global = global || ev.Type == "org.example.cfg"
		}
		if !global {
			t.Fatalf("global account data missing: %s", r2.AccountData.Events)
		}
		var room bool
		for _, e := range r2.Rooms.Join[roomID].AccountData.Events {
			room = room || e.Type == "org.example.room"
		}
		if !room {
			t.Fatalf("room account data missing")
		}

		// Read markers: m.fully_read becomes room account data, m.read a receipt.
		msg := stText(t, alice, roomID, "read me")
		r = syncSince(t, bob, r2.NextBatch, 0)
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/read_markers", map[string]any{"m.fully_read": msg, "m.read": msg}).expect(t, 200, "")
		r = syncSince(t, bob, r.NextBatch, 0)
		jr := r.Rooms.Join[roomID]
		var fully bool
		for _, e := range jr.AccountData.Events {
			fully = fully || e.Type == "m.fully_read" && string(e.Content) == `{"event_id":"`+string(msg)+`"}`
		}
		if !fully || !stHasReceipt(jr, msg, bob.id, "m.read") {
			t.Fatalf("read markers not synced: %+v", jr)
		}
		// m.fully_read cannot be set directly; bad markers change nothing.
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/read_markers", map[string]any{"m.fully_read": "nope"}).expect(t, 400, "M_INVALID_PARAM")
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.read/$unknown", map[string]any{}).expect(t, 404, "M_NOT_FOUND")
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.bogus/"+esc(string(msg)), map[string]any{}).expect(t, 400, "M_INVALID_PARAM")
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.read/"+esc(string(msg)), map[string]any{"thread_id": ""}).expect(t, 400, "M_INVALID_PARAM")
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.fully_read/"+esc(string(msg)), map[string]any{"thread_id": "main"}).expect(t, 400, "M_INVALID_PARAM")

		// Presence: Alice's status reaches Bob, who shares a room with her.
		if err := alice.cli.SetPresence(ctx, stPresence("unavailable", "away for lunch")); err != nil {
			t.Fatal(err)
		}
		r = syncSince(t, bob, r.NextBatch, 5*time.Second)
		var seen bool
		for _, e := range r.Presence.Events {
			if e.Sender == alice.id {
				var c struct {
					Presence  string `json:"presence"`
					StatusMsg string `json:"status_msg"`
				}
				_ = json.Unmarshal(e.Content, &c)
				seen = c.Presence == "unavailable" && c.StatusMsg == "away for lunch"
			}
		}
		if !seen {
			t.Fatalf("presence not synced: %+v", r.Presence.Events)
		}
		got := bob.api.do("GET", v3+"/presence/"+esc(string(alice.id))+"/status", nil).expect(t, 200, "")
		if got.str("presence") != "unavailable" || got.str("status_msg") != "away for lunch" {
			t.Fatalf("GET presence = %s", got)
		}
		carol := registerUser(t, s, "carol")
		carol.api.do("GET", v3+"/presence/"+esc(string(alice.id))+"/status", nil).expect(t, 403, "M_FORBIDDEN")
		carol.api.do("PUT", v3+"/presence/"+esc(string(alice.id))+"/status", map[string]any{"presence": "online"}).expect(t, 403, "M_FORBIDDEN")
		carol.api.do("PUT", v3+"/presence/"+esc(string(carol.id))+"/status", map[string]any{"presence": "dancing"}).expect(t, 400, "M_INVALID_PARAM")

		// Typing needs membership and one's own user ID.
		carol.api.do("PUT", v3+"/rooms/"+esc(string(roomID))+"/typing/"+esc(string(carol.id)), map[string]any{"typing": true}).expect(t, 403, "M_FORBIDDEN")
		carol.api.do("PUT", v3+"/rooms/"+esc(string(roomID))+"/typing/"+esc(string(alice.id)), map[string]any{"typing": true}).expect(t, 403, "M_FORBIDDEN")
		bob.api.do("PUT", v3+"/rooms/"+esc(string(roomID))+"/typing/"+esc(string(bob.id)), map[string]any{"timeout": 5}).expect(t, 400, "M_BAD_JSON")

		// User directory: Bob finds Alice (shared room); Carol does not.
		found := bob.api.do("POST", v3+"/user_directory/search", map[string]any{"search_term": "ali"}).expect(t, 200, "")
		if !stDirectoryHas(found, alice.id) {
			t.Fatalf("bob's search lacks alice: %s", found)
		}
		if found := carol.api.do("POST", v3+"/user_directory/search", map[string]any{"search_term": "ali"}).expect(t, 200, ""); stDirectoryHas(found, alice.id) {
			t.Fatalf("carol found alice without sharing a room: %s", found)
		}
		carol.api.do("POST", v3+"/user_directory/search", map[string]any{"limit": 3}).expect(t, 400, "M_MISSING_PARAM")
	})
}

func stDirectoryHas(r resp, u id.UserID) bool {
	res, _ := r.body["results"].([]any)
	for _, x := range res {
		if m, ok := x.(map[string]any); ok && m["user_id"] == string(u) {
			return true
		}
	}
	return false
}

func TestSyncNotificationCounts(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		carol := registerUser(t, s, "carol")
		roomID := stRoom(t, alice, bob, carol)
		stJoin(t, roomID, bob, carol)
		r := syncSince(t, bob, "", 0)
		root := stText(t, alice, roomID, "thread root")
		// A mention of Bob highlights.
		if _, err := alice.cli.SendMessageEvent(context.Background(), roomID, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": "hey bob", "m.mentions": map[string]any{"user_ids": []string{string(bob.id)}},
		}); err != nil {
			t.Fatal(err)
		}
		// Two thread replies.
		for i := 0; i < 2; i++ {
			if _, err := carol.cli.SendMessageEvent(context.Background(), roomID, event.EventMessage, map[string]any{
				"msgtype": "m.text", "body": fmt.Sprintf("in thread %d", i),
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root},
			}); err != nil {
				t.Fatal(err)
			}
		}
		r2 := syncSince(t, bob, r.NextBatch, 0)
		jr := r2.Rooms.Join[roomID]
		if jr == nil || jr.Unread == nil || jr.Unread.Notif != 4 || jr.Unread.Highlight != 1 {
			t.Fatalf("unread = %+v, want 4 notifications, 1 highlight", jr.Unread)
		}
		threaded := syncFiltered(t, bob, r.NextBatch, `{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		tj := threaded.Rooms.Join[roomID]
		if tj.Unread.Notif != 2 || tj.UnreadThreads[string(root)].Notif != 2 {
			t.Fatalf("threaded unread = %+v / %+v", tj.Unread, tj.UnreadThreads)
		}
		// A threaded receipt on the main timeline clears only the main timeline.
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.read/"+esc(string(jr.Timeline.Events[len(jr.Timeline.Events)-3].EventID)),
			map[string]any{"thread_id": "main"}).expect(t, 200, "")
		threaded = syncFiltered(t, bob, r.NextBatch, `{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		tj = threaded.Rooms.Join[roomID]
		if tj.Unread.Notif != 0 || tj.UnreadThreads[string(root)].Notif != 2 {
			t.Fatalf("after main receipt: unread = %+v / %+v", tj.Unread, tj.UnreadThreads)
		}
		// An unthreaded receipt on the last event clears everything.
		last := jr.Timeline.Events[len(jr.Timeline.Events)-1].EventID
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.read/"+esc(string(last)), map[string]any{}).expect(t, 200, "")
		r3 := syncSince(t, bob, r2.NextBatch, 0)
		if jr := r3.Rooms.Join[roomID]; jr == nil || jr.Unread.Notif != 0 || jr.Unread.Highlight != 0 {
			t.Fatalf("after unthreaded receipt: %+v", r3.Rooms.Join[roomID])
		}
		// Counts survive in the store: a receipt on an earlier event of a new
		// batch recounts from it.
		m1 := stText(t, alice, roomID, "one")
		stText(t, alice, roomID, "two")
		stText(t, alice, roomID, "three")
		bob.api.do("POST", v3+"/rooms/"+esc(string(roomID))+"/receipt/m.read.private/"+esc(string(m1)), map[string]any{}).expect(t, 200, "")
		r4 := syncSince(t, bob, r3.NextBatch, 0)
		if jr := r4.Rooms.Join[roomID]; jr == nil || jr.Unread.Notif != 2 {
			t.Fatalf("after receipt on an earlier event: %+v", r4.Rooms.Join[roomID].Unread)
		}
		// Bob's own message reads the room.
		stText(t, bob, roomID, "me too")
		r5 := syncSince(t, bob, r4.NextBatch, 0)
		if jr := r5.Rooms.Join[roomID]; jr == nil || jr.Unread.Notif != 0 {
			t.Fatalf("after own message: %+v", r5.Rooms.Join[roomID].Unread)
		}
	})
}

func stPresence(state, msg string) mautrix.ReqPresence {
	return mautrix.ReqPresence{Presence: event.Presence(state), StatusMsg: msg}
}

func TestSyncHistoryVisibilityAndShape(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		roomID := stRoom(t, alice)
		if _, err := alice.cli.SendStateEvent(ctx, roomID, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}); err != nil {
			t.Fatal(err)
		}
		stText(t, alice, roomID, "before bob")
		if _, err := alice.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		stJoin(t, roomID, bob)
		stText(t, alice, roomID, "after bob")
		r := syncSince(t, bob, "", 0)
		jr := r.Rooms.Join[roomID]
		if jr == nil {
			t.Fatal("room missing")
		}
		if got := stBodies(jr); !slices.Equal(got, []string{"after bob"}) {
			t.Fatalf("bob sees %v; history before his join is not visible to him", got)
		}
		// The E2EE parts are present in the spec's shape.
		raw := bob.api.do("GET", v3+"/sync?timeout=0", nil).expect(t, 200, "")
		for _, k := range []string{"to_device", "device_lists", "device_one_time_keys_count", "device_unused_fallback_key_types", "presence", "account_data", "rooms"} {
			if _, ok := raw.body[k]; !ok {
				t.Errorf("initial sync lacks %s: %s", k, raw.raw)
			}
		}
		// A user outside the room is not told about its messages.
		carol := registerUser(t, s, "carol")
		cr := syncSince(t, carol, "", 0)
		stText(t, alice, roomID, "not for carol")
		cr = syncSince(t, carol, cr.NextBatch, 200*time.Millisecond)
		if len(cr.Rooms.Join)+len(cr.Rooms.Invite)+len(cr.Rooms.Leave) != 0 {
			t.Fatalf("carol got rooms: %+v", cr.Rooms)
		}
	})
}

func TestSyncTypingExpires(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		roomID := stRoom(t, alice, bob)
		stJoin(t, roomID, bob)
		r := syncSince(t, bob, "", 0)
		alice.api.do("PUT", v3+"/rooms/"+esc(string(roomID))+"/typing/"+esc(string(alice.id)), map[string]any{"typing": true, "timeout": 150}).expect(t, 200, "")
		r = syncSince(t, bob, r.NextBatch, 2*time.Second)
		if !stHasTyping(r.Rooms.Join[roomID], alice.id) {
			t.Fatalf("typing missing")
		}
		start := time.Now()
		r = syncSince(t, bob, r.NextBatch, 5*time.Second)
		if jr := r.Rooms.Join[roomID]; jr == nil || stHasTyping(jr, alice.id) {
			t.Fatalf("typing did not expire: %+v", jr)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("expiry took %v", d)
		}
	})
}

func TestSyncKnock(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat", Name: "knock here", RoomVersion: "10",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		roomID := resp.RoomID
		r := syncSince(t, bob, "", 0)
		aliceR := syncSince(t, alice, "", 0)
		bob.api.do("POST", v3+"/knock/"+esc(string(roomID)), map[string]any{"reason": "let me in"}).expect(t, 200, "")
		raw := bob.api.do("GET", v3+"/sync?timeout=0&since="+url.QueryEscape(r.NextBatch), nil).expect(t, 200, "")
		var out struct {
			Rooms struct {
				Knock map[id.RoomID]struct {
					KnockState struct {
						Events []syncEvent `json:"events"`
					} `json:"knock_state"`
				} `json:"knock"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(raw.raw, &out); err != nil {
			t.Fatal(err)
		}
		kr, ok := out.Rooms.Knock[roomID]
		if !ok {
			t.Fatalf("knock not in sync: %s", raw.raw)
		}
		var name, own bool
		for _, e := range kr.KnockState.Events {
			name = name || e.Type == "m.room.name"
			own = own || e.Type == "m.room.member" && e.Sender == bob.id
		}
		if !name || !own {
			t.Fatalf("knock_state = %+v", kr.KnockState.Events)
		}
		// The room's members see the knock in their timeline.
		ar := syncSince(t, alice, aliceR.NextBatch, 0)
		var knock bool
		for _, e := range ar.Rooms.Join[roomID].Timeline.Events {
			knock = knock || e.Type == "m.room.member" && e.Sender == bob.id
		}
		if !knock {
			t.Fatalf("alice did not see the knock")
		}
	})
}
