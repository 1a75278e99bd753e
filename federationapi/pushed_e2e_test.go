package federationapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// joinEvil has a user of the evil server join r on s the normal way.
func joinEvil(t *testing.T, s *testserver.Server, r *room, evil *evilServer, v id.RoomVersion) id.UserID {
	t.Helper()
	ctx := context.Background()
	mallory := id.UserID("@mallory:" + evil.name)
	if _, err := evil.client.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: r.id, UserID: mallory, Via: s.Config().ServerName, SupportedVersions: []id.RoomVersion{v}}); err != nil {
		t.Fatalf("make_join: %v", err)
	}
	join := evil.build(t, s, r.id, mallory, "m.room.member", sk(string(mallory)), map[string]any{"membership": "join"})
	if _, err := evil.client.SendJoin(ctx, &federation.ReqSendJoin{RoomID: r.id, EventID: join.ID(), Event: join.JSON(), Via: s.Config().ServerName}); err != nil {
		t.Fatalf("send_join: %v", err)
	}
	return mallory
}

// buildAfter is build with the given prev events (which s need not have) in
// place of s's forward extremities.
func (e *evilServer) buildAfter(t *testing.T, s *testserver.Server, roomID id.RoomID, sender id.UserID, evType string, stateKey *string, content any, prevs ...*events.Event) *events.Event {
	t.Helper()
	proto, v, err := s.Roomserver.EventTemplate(context.Background(), roomID, roomserver.SendRequest{Type: evType, StateKey: stateKey, Sender: sender, Content: mustJSON(content)})
	if err != nil {
		t.Fatal(err)
	}
	if len(prevs) > 0 {
		proto.PrevEvents, proto.Depth = nil, 0
		for _, p := range prevs {
			proto.PrevEvents = append(proto.PrevEvents, p.ID())
			proto.Depth = max(proto.Depth, p.Depth()+1)
		}
	}
	ev, err := events.Build(v.ID, *proto, e.name, id.KeyID(e.key.ID), e.key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// serveEvents answers get_missing_events with the given raw events.
func serveEvents(raws ...json.RawMessage) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"events": raws})
	}
}

// servePDU answers /event with ev when asked for it.
func servePDU(evs ...*events.Event) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, ev := range evs {
			if strings.HasSuffix(r.URL.Path, "/"+string(ev.ID())) {
				_ = json.NewEncoder(w).Encode(map[string]any{"origin": "x", "origin_server_ts": 1, "pdus": []json.RawMessage{ev.JSON()}})
				return
			}
		}
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no such event"}`))
	}
}

// TestPushedEventGaps covers what a server does with pushed events whose prev
// or auth events it lacks and the sender cannot or will not supply well.
func TestPushedEventGaps(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a := start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice := register(t, a, "alice")
		r := createRoom(t, a, "10", alice, "public")
		evil := startEvilServer(t)
		mallory := joinEvil(t, a, r, evil, "10")
		stored := func(ev *events.Event) *roomserver.StoredEvent {
			se, err := a.Roomserver.Event(ctx, ev.ID())
			if err != nil {
				return nil
			}
			return se
		}
		const (
			gme      = "/_matrix/federation/v1/get_missing_events/"
			stateIDs = "/_matrix/federation/v1/state_ids/"
			state    = "/_matrix/federation/v1/state/"
			event    = "/_matrix/federation/v1/event/"
			authPath = "/_matrix/federation/v1/event_auth/"
		)
		evil.handle(stateIDs, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
		evil.handle(state, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })

		t.Run("a missing event with bad JSON is ignored, without asking for state", func(t *testing.T) {
			// The prev event carries a float in its content: not valid JSON for
			// the room version, so it is dropped, and the pushed event that cites
			// it is not taken in. It is not an error of the transaction, and the
			// server must not bridge the gap by asking for the state.
			good := evil.buildAfter(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "one", "n": 1})
			bad, err := sjson.SetRawBytes(good.JSON(), "content.n", []byte("1.5"))
			if err != nil {
				t.Fatal(err)
			}
			next := evil.buildAfter(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "two"}, good)
			evil.handle(gme, serveEvents(bad))
			res := evil.send(t, aName, "bad-json", next.JSON())
			if e, ok := res[next.ID()]; !ok || e != "" {
				t.Fatalf("result for the pushed event: %q (present %v)", e, ok)
			}
			if evil.hitCount(gme) != 1 {
				t.Fatalf("get_missing_events asked %d times", evil.hitCount(gme))
			}
			if n := evil.hitCount(stateIDs) + evil.hitCount(state); n != 0 {
				t.Fatalf("asked for state %d times for a pushed event", n)
			}
			if stored(next) != nil || stored(good) != nil {
				t.Fatal("events stored across a gap the sender did not fill")
			}
		})

		t.Run("an oversized state key before v11 is stored as rejected and does not block the room", func(t *testing.T) {
			// 70 code points, 280 bytes: room versions before 11 limit code
			// points, so the event is valid but kept as rejected.
			x := evil.buildAfter(t, a, r.id, mallory, "my.room.breaker", sk("short"), map[string]any{})
			p := x.PDU().Clone()
			long := strings.Repeat("\U0001F4A5", 70)
			p.StateKey, p.Hashes, p.Signatures = &long, nil, nil
			if err := p.Sign("10", evil.name, id.KeyID(evil.key.ID), evil.key.PrivateKey); err != nil {
				t.Fatal(err)
			}
			raw, err := canonicaljson.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			breaker, err := events.Parse("10", raw)
			if err != nil || breaker.FormatRejection() == nil {
				t.Fatalf("parsing the oversized event: %v, format rejection %v", err, breaker.FormatRejection())
			}
			next := evil.buildAfter(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "after the breaker"}, breaker)
			evil.handle(gme, serveEvents(raw))
			if res := evil.send(t, aName, "oversized", next.JSON()); res[next.ID()] != "" {
				t.Fatalf("pushed event: %v", res)
			}
			if se := stored(breaker); se == nil || !se.Rejected {
				t.Fatalf("oversized event stored as %+v", se)
			}
			if se := stored(next); se == nil || se.Rejected || se.SoftFailed {
				t.Fatalf("event after the oversized one stored as %+v", se)
			}
		})

		t.Run("auth events /event_auth does not serve are fetched with /event", func(t *testing.T) {
			rename := evil.buildAfter(t, a, r.id, mallory, "m.room.member", sk(string(mallory)), map[string]any{"membership": "join", "displayname": "M"})
			// A message citing the unseen rename as its auth event, on top of
			// what A has.
			proto, v, err := a.Roomserver.EventTemplate(ctx, r.id, roomserver.SendRequest{Type: "m.room.message", Sender: mallory, Content: mustJSON(map[string]any{"body": "renamed"})})
			if err != nil {
				t.Fatal(err)
			}
			for i, ae := range proto.AuthEvents {
				if se, _ := a.Roomserver.Event(ctx, ae); se != nil && se.Type() == "m.room.member" {
					proto.AuthEvents[i] = rename.ID()
				}
			}
			msg, err := events.Build(v.ID, *proto, evil.name, id.KeyID(evil.key.ID), evil.key.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			evil.handle(authPath, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
			evil.handle(event, servePDU(rename))
			if res := evil.send(t, aName, "auth-by-event", msg.JSON()); res[msg.ID()] != "" {
				t.Fatalf("pushed event: %v", res)
			}
			if evil.hitCount(authPath) != 1 {
				t.Fatalf("/event_auth asked %d times", evil.hitCount(authPath))
			}
			if se := stored(msg); se == nil || se.Rejected || se.SoftFailed {
				t.Fatalf("event stored as %+v", se)
			}
			if se := stored(rename); se == nil || !se.Outlier {
				t.Fatalf("fetched auth event stored as %+v", se)
			}

			// An auth event that cannot be had at all: the event is not taken in
			// (it may yet be valid), and that is no error of the transaction.
			ghost := evil.buildAfter(t, a, r.id, mallory, "m.room.member", sk(string(mallory)), map[string]any{"membership": "join", "displayname": "ghost"})
			for i, ae := range proto.AuthEvents {
				if ae == rename.ID() {
					proto.AuthEvents[i] = ghost.ID()
				}
			}
			proto.Content = mustJSON(map[string]any{"body": "haunted"})
			haunted, err := events.Build(v.ID, *proto, evil.name, id.KeyID(evil.key.ID), evil.key.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			if res := evil.send(t, aName, "auth-unavailable", haunted.JSON()); res[haunted.ID()] != "" {
				t.Fatalf("pushed event: %v", res)
			}
			if se := stored(haunted); se != nil {
				t.Fatalf("event with unknown auth events stored as %+v", se)
			}
		})
	})
}

// TestLateEventPagination: an event from another server that arrives late but
// sits early in the DAG (a healed network partition) comes down an
// incremental /sync, and paging back from that timeline's prev_batch returns
// the events before it in the stream, newest first in topological order: none
// is skipped and the late event is not repeated (as Synapse does it).
func TestLateEventPagination(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a := start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice := clientOf(t, a, "alice")
		r := createRoom(t, a, "10", alice.UserID, "public")
		evil := startEvilServer(t)
		mallory := joinEvil(t, a, r, evil, "10")
		sync := func(since string) map[string]any {
			t.Helper()
			var resp map[string]any
			u := alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, map[string]string{
				"since": since, "filter": `{"room":{"timeline":{"limit":4}}}`,
			})
			if _, err := alice.MakeRequest(ctx, http.MethodGet, u, nil, &resp); err != nil {
				t.Fatalf("sync: %v", err)
			}
			return resp
		}
		since := sync("")["next_batch"].(string)

		// Built on the room as it is now, delivered after alice's first four.
		late := evil.build(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "late"})
		var sent []id.EventID
		for i := 1; i <= 4; i++ {
			sent = append(sent, r.message(alice.UserID, fmt.Sprintf("event %d", i)).Event.ID())
		}
		if res := evil.send(t, aName, "late", late.JSON()); res[late.ID()] != "" {
			t.Fatalf("late event: %v", res)
		}
		if se, err := a.Roomserver.Event(ctx, late.ID()); err != nil || se.Rejected || se.SoftFailed {
			t.Fatalf("late event stored as %+v, %v", se, err)
		}
		for i := 5; i <= 7; i++ {
			sent = append(sent, r.message(alice.UserID, fmt.Sprintf("event %d", i)).Event.ID())
		}

		resp := sync(since)
		tl, _ := resp["rooms"].(map[string]any)["join"].(map[string]any)[string(r.id)].(map[string]any)["timeline"].(map[string]any)
		var got []id.EventID
		for _, e := range tl["events"].([]any) {
			got = append(got, id.EventID(e.(map[string]any)["event_id"].(string)))
		}
		if want := []id.EventID{late.ID(), sent[4], sent[5], sent[6]}; !slices.Equal(got, want) || tl["limited"] != true {
			t.Fatalf("timeline = %v (limited %v), want %v", got, tl["limited"], want)
		}
		page, err := alice.Messages(ctx, r.id, tl["prev_batch"].(string), "", mautrix.DirectionBackward, nil, 4)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range page.Chunk {
			got = append(got, e.ID)
		}
		if want := []id.EventID{sent[3], sent[2], sent[1], sent[0]}; !slices.Equal(got, want) {
			t.Fatalf("/messages from prev_batch = %v, want %v", got, want)
		}
	})
}
