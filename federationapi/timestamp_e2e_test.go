package federationapi_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// TestTimestampToEventAcrossServers: B joins a room on A after alice spoke in
// it. B's clients find alice's messages by time all the same: B asks A (GET
// /federation/v1/timestamp_to_event) when its own answer is next to the gap
// in its history, fetches the event and stores it, so that /context and
// /messages page around it (backfilling what comes before).
func TestTimestampToEventAcrossServers(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice, bob := clientOf(t, a, "alice"), clientOf(t, b, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "dates"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		// tick is a time strictly between the events sent before and after it.
		tick := func() time.Time {
			time.Sleep(3 * time.Millisecond)
			defer time.Sleep(3 * time.Millisecond)
			return time.Now()
		}
		say := func(body string) id.EventID {
			resp, err := alice.SendText(ctx, roomID, body)
			if err != nil {
				t.Fatalf("sending %q: %v", body, err)
			}
			return resp.EventID
		}
		beforeM1 := tick()
		m1 := say("one")
		afterM1 := tick()
		m2 := say("two")
		afterM2 := tick()
		if _, err := bob.JoinRoom(ctx, "#dates:"+a.Config().ServerName, nil); err != nil {
			t.Fatalf("bob joining: %v", err)
		}
		if hasEvent(b, m1) || hasEvent(b, m2) {
			t.Fatal("B has alice's messages before asking for them")
		}

		find := func(t *testing.T, at time.Time, dir mautrix.Direction) id.EventID {
			t.Helper()
			resp, err := bob.TimestampToEvent(ctx, roomID, at, dir)
			if isStatus(err, http.StatusNotFound) {
				return ""
			}
			if err != nil {
				t.Fatalf("timestamp_to_event: %v", err)
			}
			return resp.EventID
		}
		tests := []struct {
			name string
			at   time.Time
			dir  mautrix.Direction
			want id.EventID
		}{
			{"forward, before the join", beforeM1, mautrix.DirectionForward, m1},
			{"backward, before the join", afterM2, mautrix.DirectionBackward, m2},
			{"backward, between", afterM1, mautrix.DirectionBackward, m1},
			{"forward, between", afterM1, mautrix.DirectionForward, m2},
			{"nothing before the room", beforeM1.Add(-time.Hour), mautrix.DirectionBackward, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if got := find(t, tc.at, tc.dir); got != tc.want {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
				if tc.want != "" && !hasEvent(b, tc.want) {
					t.Fatalf("%s is not in B's timeline", tc.want)
				}
			})
		}

		// The found event is a place to page from: before m2 lies m1, which
		// B backfills.
		c, err := bob.Context(ctx, roomID, m2, nil, 0)
		if err != nil {
			t.Fatalf("/context: %v", err)
		}
		page, err := bob.Messages(ctx, roomID, c.End, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatalf("/messages: %v", err)
		}
		var got []id.EventID
		for _, e := range page.Chunk {
			got = append(got, e.ID)
		}
		if i, j := slices.Index(got, m2), slices.Index(got, m1); i < 0 || j < i {
			t.Fatalf("/messages back from after m2 = %v, want m2 then m1", got)
		}
	})
}

// TestTimestampToEventEndpoint: GET /federation/v1/timestamp_to_event answers
// servers in the room from the local timeline, 404 when there is no event that
// way, and refuses servers that are not in the room and bad parameters.
func TestTimestampToEventEndpoint(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b, c := start(), start(), start()
		ctx := context.Background()
		alice := register(t, a, "alice")
		r := createRoom(t, a, "10", alice, "public")
		time.Sleep(3 * time.Millisecond) // the message alone at its millisecond
		msg := r.message(alice, "hello").Event
		bob := clientOf(t, b, "bob")
		if _, err := bob.JoinRoom(ctx, string(r.id), &mautrix.ReqJoinRoom{Via: []string{a.Config().ServerName}}); err != nil {
			t.Fatalf("bob joining: %v", err)
		}
		ts := func(ms int64) string { return strconv.FormatInt(ms, 10) }
		bName, cName := b.Config().ServerName, c.Config().ServerName
		tests := []struct {
			name   string
			from   string
			room   id.RoomID
			query  url.Values
			status int
			want   id.EventID
		}{
			{"backward from the message", bName, r.id, url.Values{"dir": {"b"}, "ts": {ts(msg.OriginServerTS())}}, 200, msg.ID()},
			{"forward from the message", bName, r.id, url.Values{"dir": {"f"}, "ts": {ts(msg.OriginServerTS())}}, 200, msg.ID()},
			{"nothing before", bName, r.id, url.Values{"dir": {"b"}, "ts": {ts(msg.OriginServerTS() - time.Hour.Milliseconds())}}, 404, ""},
			{"nothing after", bName, r.id, url.Values{"dir": {"f"}, "ts": {ts(time.Now().Add(time.Hour).UnixMilli())}}, 404, ""},
			{"server not in the room", cName, r.id, url.Values{"dir": {"b"}, "ts": {ts(msg.OriginServerTS())}}, 403, ""},
			{"unknown room", bName, id.RoomID("!nowhere:" + a.Config().ServerName), url.Values{"dir": {"b"}, "ts": {"1"}}, 404, ""},
			{"bad dir", bName, r.id, url.Values{"dir": {"x"}, "ts": {"1"}}, 400, ""},
			{"no ts", bName, r.id, url.Values{"dir": {"f"}}, 400, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				key := b.Key
				if tc.from == cName {
					key = c.Key
				}
				var got struct {
					EventID id.EventID `json:"event_id"`
					TS      *int64     `json:"origin_server_ts"`
				}
				_, _, err := fakeServerClient(t, tc.from, key, nil).MakeFullRequest(ctx, federation.RequestParams{
					ServerName: a.Config().ServerName, Method: http.MethodGet, Authenticate: true,
					Path: federation.URLPath{"v1", "timestamp_to_event", tc.room}, Query: tc.query, ResponseJSON: &got})
				status := http.StatusOK
				if err != nil {
					status, _ = respErr(err)
				}
				if status != tc.status {
					t.Fatalf("status %d (%v), want %d", status, err, tc.status)
				}
				if tc.status != http.StatusOK {
					return
				}
				if got.EventID != tc.want || got.TS == nil || *got.TS != msg.OriginServerTS() {
					t.Fatalf("answer %s at %v, want %s at %d", got.EventID, got.TS, tc.want, msg.OriginServerTS())
				}
			})
		}
	})
}
