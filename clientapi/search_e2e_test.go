package clientapi_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/storage"
)

// searchReq builds a room_events search body.
func searchReq(term string, extra map[string]any) map[string]any {
	crit := map[string]any{"search_term": term}
	for k, v := range extra {
		crit[k] = v
	}
	return map[string]any{"search_categories": map[string]any{"room_events": crit}}
}

// doSearch posts a search (with next_batch when given) and returns the
// room_events category.
func doSearch(t *testing.T, u *user, body map[string]any, nextBatch string) map[string]any {
	t.Helper()
	path := v3 + "/search"
	if nextBatch != "" {
		path += "?next_batch=" + url.QueryEscape(nextBatch)
	}
	r := u.api.do("POST", path, body).expect(t, 200, "")
	re, _ := rtField(r.body, "search_categories", "room_events").(map[string]any)
	if re == nil {
		t.Fatalf("no room_events in %s", r)
	}
	return re
}

// resultIDs lists the event IDs of a search's results.
func resultIDs(re map[string]any) []string {
	var out []string
	for _, x := range re["results"].([]any) {
		out = append(out, rtField(x, "result", "event_id").(string))
	}
	return out
}

// rooms is a filter on the given rooms (with extra filter fields).
func roomsFilter(extra map[string]any, rooms ...id.RoomID) map[string]any {
	f := map[string]any{"rooms": rooms}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

func TestSearch(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob")
		alice, bob := us[0], us[1]

		t.Run("by body", func(t *testing.T) {
			room := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
			ev := rtText(t, alice, room, "hello, world")
			rtText(t, alice, room, "goodbye")
			re := doSearch(t, alice, searchReq("HELLO", map[string]any{"keys": []string{"content.body"}, "filter": roomsFilter(nil, room)}), "")
			if re["count"] != float64(1) || !slices.Equal(resultIDs(re), []string{string(ev)}) {
				t.Fatalf("search = %s", rtJSON(re))
			}
			res := rtField(re, "results").([]any)[0]
			if rtField(res, "result", "content", "body") != "hello, world" || rtField(res, "result", "room_id") != string(room) ||
				rtField(res, "result", "type") != "m.room.message" {
				t.Fatalf("result = %s", rtJSON(res))
			}
			if _, ok := rtField(res, "rank").(float64); !ok {
				t.Fatalf("no rank in %s", rtJSON(res))
			}
			if !slices.Equal(anyStrings(re["highlights"]), []string{"hello"}) {
				t.Fatalf("highlights = %v", re["highlights"])
			}
			// Prefixes match; words are ANDed; phrases are exact; exclusions work.
			for _, tc := range []struct {
				term string
				want int
			}{
				{"hel", 1}, {"hello world", 1}, {"hello moon", 0}, {`"world hello"`, 0}, {`"hello world"`, 1},
				{"hello -world", 0}, {"moon OR goodbye", 1}, {"", 0}, {"!!!", 0},
			} {
				re := doSearch(t, alice, searchReq(tc.term, map[string]any{"filter": roomsFilter(nil, room)}), "")
				if len(resultIDs(re)) != tc.want {
					t.Errorf("%q: %d results, want %d: %s", tc.term, len(resultIDs(re)), tc.want, rtJSON(re))
				}
			}
		})

		t.Run("context", func(t *testing.T) {
			room := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
			rtState(t, alice, room, "m.room.member", string(alice.id), map[string]any{"membership": "join", "displayname": "Alice A."}).expect(t, 200, "")
			for i := 1; i <= 7; i++ {
				rtText(t, alice, room, fmt.Sprintf("Message number %d", i))
			}
			re := doSearch(t, alice, searchReq("Message 4", map[string]any{"order_by": "recent",
				"filter":        roomsFilter(map[string]any{"limit": 1}, room),
				"event_context": map[string]any{"before_limit": 2, "after_limit": 2, "include_profile": true}}), "")
			if re["count"] != float64(1) || re["next_batch"] == nil {
				t.Fatalf("search = %s", rtJSON(re))
			}
			res := rtField(re, "results").([]any)[0]
			body := func(path ...string) any { return rtField(res, path...) }
			before, after := rtEvents(t, body("context", "events_before")), rtEvents(t, body("context", "events_after"))
			if body("result", "content", "body") != "Message number 4" || len(before) != 2 || len(after) != 2 ||
				rtField(before[0], "content", "body") != "Message number 3" || rtField(before[1], "content", "body") != "Message number 2" ||
				rtField(after[0], "content", "body") != "Message number 5" || rtField(after[1], "content", "body") != "Message number 6" {
				t.Fatalf("context = %s", rtJSON(res))
			}
			if body("context", "start") == nil || body("context", "end") == nil ||
				body("context", "profile_info", string(alice.id), "displayname") != "Alice A." {
				t.Fatalf("context tokens/profiles = %s", rtJSON(body("context")))
			}
		})

		t.Run("pagination", func(t *testing.T) {
			room := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
			var ids []string
			for i := range 20 {
				ids = append(ids, string(rtText(t, alice, room, fmt.Sprintf("Message number %d", i))))
			}
			slices.Reverse(ids)
			req := searchReq("Message", map[string]any{"order_by": "recent", "filter": roomsFilter(map[string]any{"limit": 10}, room)})
			first := doSearch(t, alice, req, "")
			second := doSearch(t, alice, req, first["next_batch"].(string))
			third := doSearch(t, alice, req, second["next_batch"].(string))
			if !slices.Equal(resultIDs(first), ids[:10]) || !slices.Equal(resultIDs(second), ids[10:]) || len(resultIDs(third)) != 0 ||
				third["next_batch"] != nil || first["count"] != float64(20) || third["count"] != float64(20) {
				t.Fatalf("pages:\n%s\n%s\n%s", rtJSON(first), rtJSON(second), rtJSON(third))
			}
			// Rank order: pages of 7 give every result once, ranks never rising.
			rankReq := searchReq("number", map[string]any{"filter": roomsFilter(map[string]any{"limit": 7}, room)})
			var got []string
			last := 1e300
			next := ""
			for page := 0; page < 10; page++ {
				re := doSearch(t, alice, rankReq, next)
				for _, x := range re["results"].([]any) {
					if r := rtField(x, "rank").(float64); r > last {
						t.Fatalf("rank rose from %v to %v", last, r)
					} else {
						last = r
					}
				}
				got = append(got, resultIDs(re)...)
				n, _ := re["next_batch"].(string)
				if n == "" {
					break
				}
				next = n
			}
			slices.Sort(got)
			want := slices.Clone(ids)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("rank pages gave %d results (%v), want the 20", len(got), got)
			}
		})

		t.Run("upgraded room", func(t *testing.T) {
			old := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat", "room_version": "10"})
			before := rtText(t, alice, old, "Message before upgrade")
			up := alice.api.do("POST", v3+"/rooms/"+esc(string(old))+"/upgrade", map[string]any{"new_version": "11"}).expect(t, 200, "")
			newRoom := id.RoomID(up.str("replacement_room"))
			after := rtText(t, alice, newRoom, "Message after upgrade")
			// Naming only the new room finds the old room's events too.
			re := doSearch(t, alice, searchReq("upgrade", map[string]any{"filter": roomsFilter(nil, newRoom)}), "")
			got := resultIDs(re)
			slices.Sort(got)
			want := []string{string(before), string(after)}
			slices.Sort(want)
			if re["count"] != float64(2) || !slices.Equal(got, want) {
				t.Fatalf("search across upgrade = %s", rtJSON(re))
			}
			re = doSearch(t, alice, searchReq("upgrade", map[string]any{"filter": roomsFilter(map[string]any{"not_rooms": []id.RoomID{old}}, newRoom)}), "")
			if !slices.Equal(resultIDs(re), []string{string(after)}) {
				t.Fatalf("not_rooms: %s", rtJSON(re))
			}
		})

		for _, order := range []string{"rank", "recent"} {
			t.Run("redacted "+order, func(t *testing.T) {
				room := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
				gone := rtText(t, alice, room, "This message is going to be redacted")
				kept := rtText(t, alice, room, "This message is not going to be redacted")
				alice.api.do("PUT", fmt.Sprintf("%s/rooms/%s/redact/%s/r-%s", v3, esc(string(room)), esc(string(gone)), order),
					map[string]any{"reason": "testing"}).expect(t, 200, "")
				re := doSearch(t, alice, searchReq("redacted", map[string]any{"order_by": order, "filter": roomsFilter(nil, room)}), "")
				if !slices.Equal(resultIDs(re), []string{string(kept)}) || re["count"] != float64(1) {
					t.Fatalf("search after redaction = %s", rtJSON(re))
				}
			})
		}

		t.Run("visibility and membership", func(t *testing.T) {
			room := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "initial_state": []map[string]any{
				{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
			hidden := rtText(t, alice, room, "visibility test before bob")
			// Bob is not in the room: nothing.
			if re := doSearch(t, bob, searchReq("visibility", nil), ""); len(resultIDs(re)) != 0 {
				t.Fatalf("outsider found %s", rtJSON(re))
			}
			rtJoin(t, bob, string(room)).expect(t, 200, "")
			seen := rtText(t, alice, room, "visibility test while bob is here")
			bob.api.do("POST", v3+"/rooms/"+esc(string(room))+"/leave", map[string]any{}).expect(t, 200, "")
			rtText(t, alice, room, "visibility test after bob left")
			re := doSearch(t, bob, searchReq("visibility", map[string]any{"order_by": "recent"}), "")
			if !slices.Equal(resultIDs(re), []string{string(seen)}) {
				t.Fatalf("bob (joined between) found %s", rtJSON(re))
			}
			all := doSearch(t, alice, searchReq("visibility", map[string]any{"order_by": "recent"}), "")
			if ids := resultIDs(all); len(ids) != 3 || ids[2] != string(hidden) {
				t.Fatalf("alice found %s", rtJSON(all))
			}
		})

		t.Run("keys groups state", func(t *testing.T) {
			room := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Zebra crossing", "topic": "all about zebras"})
			rtJoin(t, bob, string(room)).expect(t, 200, "")
			a1 := rtText(t, alice, room, "zebra facts")
			b1 := rtText(t, bob, room, "zebra stripes")
			names := doSearch(t, alice, searchReq("zebra", map[string]any{"keys": []string{"content.name"}, "filter": roomsFilter(nil, room)}), "")
			if res := names["results"].([]any); len(res) != 1 || rtField(res[0], "result", "type") != "m.room.name" {
				t.Fatalf("name search = %s", rtJSON(names))
			}
			topics := doSearch(t, alice, searchReq("zebras", map[string]any{"keys": []string{"content.topic"}, "filter": roomsFilter(nil, room)}), "")
			if res := topics["results"].([]any); len(res) != 1 || rtField(res[0], "result", "type") != "m.room.topic" {
				t.Fatalf("topic search = %s", rtJSON(topics))
			}
			re := doSearch(t, alice, searchReq("zebra", map[string]any{
				"keys": []string{"content.body"}, "order_by": "recent", "include_state": true,
				"filter":    roomsFilter(map[string]any{"limit": 1}, room),
				"groupings": map[string]any{"group_by": []map[string]any{{"key": "room_id"}, {"key": "sender"}}}}), "")
			if !slices.Equal(resultIDs(re), []string{string(b1)}) {
				t.Fatalf("first page = %s", rtJSON(re))
			}
			group := rtField(re, "groups", "room_id", string(room))
			if !slices.Equal(anyStrings(rtField(group, "results")), []string{string(b1)}) || rtField(group, "order") != float64(1) ||
				rtField(re, "groups", "sender", string(bob.id), "results") == nil {
				t.Fatalf("groups = %s", rtJSON(re["groups"]))
			}
			if st := rtEvents(t, rtField(re, "state", string(room))); len(st) < 5 {
				t.Fatalf("state = %s", rtJSON(re["state"]))
			}
			// The sender group's next_batch continues within bob's messages:
			// nothing more; the room group's finds alice's.
			senderNext := rtField(re, "groups", "sender", string(bob.id), "next_batch").(string)
			if more := doSearch(t, alice, searchReq("zebra", map[string]any{"keys": []string{"content.body"}, "order_by": "recent",
				"filter": roomsFilter(map[string]any{"limit": 1}, room)}), senderNext); len(resultIDs(more)) != 0 {
				t.Fatalf("sender group page 2 = %s", rtJSON(more))
			}
			roomNext := rtField(group, "next_batch").(string)
			if more := doSearch(t, alice, searchReq("zebra", map[string]any{"keys": []string{"content.body"}, "order_by": "recent",
				"filter": roomsFilter(map[string]any{"limit": 1}, room)}), roomNext); !slices.Equal(resultIDs(more), []string{string(a1)}) {
				t.Fatalf("room group page 2 = %s", rtJSON(more))
			}
			// Filters: senders and types.
			if re := doSearch(t, alice, searchReq("zebra", map[string]any{"filter": roomsFilter(map[string]any{"senders": []id.UserID{alice.id}, "types": []string{"m.room.message"}}, room)}), ""); !slices.Equal(resultIDs(re), []string{string(a1)}) {
				t.Fatalf("senders filter = %s", rtJSON(re))
			}
		})

		t.Run("bad input", func(t *testing.T) {
			room := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
			for _, tc := range []struct {
				name    string
				path    string
				body    any
				errcode string
			}{
				{"not json", "/search", "nope", "M_NOT_JSON"},
				{"no categories", "/search", map[string]any{}, "M_BAD_JSON"},
				{"no term", "/search", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}, "M_BAD_JSON"},
				{"term not string", "/search", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": 5}}}, "M_BAD_JSON"},
				{"bad order", "/search", searchReq("x", map[string]any{"order_by": "best"}), "M_INVALID_PARAM"},
				{"bad key", "/search", searchReq("x", map[string]any{"keys": []string{"content.url"}}), "M_INVALID_PARAM"},
				{"bad group", "/search", searchReq("x", map[string]any{"groupings": map[string]any{"group_by": []map[string]any{{"key": "type"}}}}), "M_INVALID_PARAM"},
				{"bad filter", "/search", searchReq("x", map[string]any{"filter": map[string]any{"rooms": []string{"nope"}}}), "M_BAD_JSON"},
				{"negative context", "/search", searchReq("x", map[string]any{"event_context": map[string]any{"before_limit": -1}}), "M_INVALID_PARAM"},
				{"garbage token", "/search?next_batch=xyz", searchReq("x", nil), "M_INVALID_PARAM"},
			} {
				r := alice.api.do("POST", v3+tc.path, tc.body)
				if r.status != 400 || r.errcode() != tc.errcode {
					t.Errorf("%s: %s, want 400 %s", tc.name, r, tc.errcode)
				}
			}
			// A token of the other order is refused; no categories is an empty answer.
			rtText(t, alice, room, "token test")
			re := doSearch(t, alice, searchReq("token", map[string]any{"order_by": "recent", "filter": roomsFilter(map[string]any{"limit": 1}, room)}), "")
			alice.api.do("POST", v3+"/search?next_batch="+url.QueryEscape(re["next_batch"].(string)), searchReq("token", nil)).expect(t, 400, "M_INVALID_PARAM")
			r := alice.api.do("POST", v3+"/search", map[string]any{"search_categories": map[string]any{}}).expect(t, 200, "")
			if rtJSON(r.body) != `{"search_categories":{}}` {
				t.Fatalf("no categories = %s", r)
			}
			newAPI(t, s, "").do("POST", v3+"/search", searchReq("x", nil)).expect(t, 401, "M_MISSING_TOKEN")
		})

		t.Run("index rebuilt after restart", func(t *testing.T) {
			room := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
			ev := rtText(t, alice, room, "persistent aardvark")
			doSearch(t, alice, searchReq("aardvark", nil), "") // waits for the index
			dsn := s.Config().DatabaseDSN()
			s.Stop()
			db, err := storage.Open(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			wipe := []string{`DELETE FROM event_search`, `DELETE FROM search_position`}
			if db.Dialect == storage.SQLite {
				wipe = append(wipe, `DELETE FROM event_search_text`)
			}
			for _, q := range wipe {
				if _, err := db.Exec(context.Background(), q); err != nil {
					t.Fatal(err)
				}
			}
			db.Close()
			s.Restart(t)
			re := doSearch(t, alice, searchReq("aardvark", nil), "")
			if !slices.Equal(resultIDs(re), []string{string(ev)}) {
				t.Fatalf("after rebuild: %s", rtJSON(re))
			}
		})
	})
}

// anyStrings converts a decoded JSON array of strings.
func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestSearchCountAfterLeaving: a room the user left (or was invited to and
// rejected, or banned from) is searched only up to their membership change:
// neither the results nor the count say anything about what was said after
// it (else the count would be an oracle for words in messages they may not
// read).
func TestSearchCountAfterLeaving(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		us := rtUsers(t, s, "alice", "bob", "carol")
		alice, bob, carol := us[0], us[1], us[2]
		room := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat"})
		rtJoin(t, bob, string(room)).expect(t, 200, "")
		seen := rtText(t, alice, room, "walrus while bob is here")
		bob.api.do("POST", v3+"/rooms/"+esc(string(room))+"/leave", map[string]any{}).expect(t, 200, "")
		private := rtCreateRoom(t, alice, map[string]any{"preset": "private_chat"})
		alice.api.do("POST", v3+"/rooms/"+esc(string(private))+"/invite", map[string]any{"user_id": carol.id}).expect(t, 200, "")
		carol.api.do("POST", v3+"/rooms/"+esc(string(private))+"/leave", map[string]any{}).expect(t, 200, "")
		for i := range 3 {
			rtText(t, alice, room, fmt.Sprintf("walrus secret %d", i))
			rtText(t, alice, private, fmt.Sprintf("walrus secret %d", i))
		}
		for _, order := range []string{"rank", "recent"} {
			re := doSearch(t, bob, searchReq("walrus", map[string]any{"order_by": order}), "")
			if !slices.Equal(resultIDs(re), []string{string(seen)}) || re["count"] != float64(1) {
				t.Fatalf("bob (left) found %s", rtJSON(re))
			}
			re = doSearch(t, carol, searchReq("walrus secret", map[string]any{"order_by": order}), "")
			if len(resultIDs(re)) != 0 || re["count"] != float64(0) {
				t.Fatalf("carol (rejected the invite) found %s", rtJSON(re))
			}
		}
		if re := doSearch(t, alice, searchReq("walrus", nil), ""); re["count"] != float64(7) {
			t.Fatalf("alice found %s", rtJSON(re))
		}
	})
}
