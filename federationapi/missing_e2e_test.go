package federationapi_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/federationapi"
)

// TestMissingEvents has B receive only the newest of A's events: B must fetch the
// ones in between with get_missing_events, and bridge a longer gap with the state
// from /state_ids.
func TestMissingEvents(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		r := createRoom(t, a, "10", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{aName}); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "bob's join on A", func() bool { return membership(t, a, r.id, bob) == "join" })
		// From now on A's sender is off: only the test delivers A's events.
		a.Federation.Stop()
		asA := fakeServerClient(t, aName, a.Key, nil)
		deliver := func(txn string, evs ...id.EventID) map[id.EventID]federation.PDUProcessingResult {
			var pdus []json.RawMessage
			for _, e := range evs {
				se, err := a.Roomserver.Event(ctx, e)
				if err != nil {
					t.Fatal(err)
				}
				pdus = append(pdus, se.JSON())
			}
			resp, err := asA.SendTransaction(ctx, &federation.ReqSendTransaction{Destination: bName, TxnID: txn, Origin: aName, PDUs: pdus})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			return resp.PDUs
		}

		// A short gap, including a state change: get_missing_events fills it.
		m1 := r.message(alice, "one")
		topic := r.state(alice, "m.room.topic", "", map[string]any{"topic": "new topic"})
		m2 := r.message(alice, "two")
		if res := deliver("g1", m2.Event.ID()); res[m2.Event.ID()].Error != "" {
			t.Fatalf("m2: %v", res)
		}
		for _, e := range []id.EventID{m1.Event.ID(), topic.Event.ID(), m2.Event.ID()} {
			if !hasEvent(b, e) {
				t.Fatalf("B lacks %s after get_missing_events", e)
			}
		}
		if te, _ := b.Roomserver.CurrentStateEvent(ctx, r.id, "m.room.topic", ""); te == nil || te.ID() != topic.Event.ID() {
			t.Fatal("B's current state lacks the fetched topic")
		}

		// A gap longer than get_missing_events asks for: B takes the state before
		// the newest event from /state_ids and continues from there.
		var skipped []id.EventID
		for i := 0; i < 25; i++ {
			skipped = append(skipped, r.message(alice, "lost").Event.ID())
		}
		name := r.state(alice, "m.room.name", "", map[string]any{"name": "Renamed"})
		for i := 0; i < 15; i++ {
			r.message(alice, "lost too")
		}
		last := r.message(alice, "latest")
		if res := deliver("g2", last.Event.ID()); res[last.Event.ID()].Error != "" {
			t.Fatalf("last: %v", res)
		}
		if !hasEvent(b, last.Event.ID()) {
			t.Fatal("B lacks the newest event")
		}
		if ne, _ := b.Roomserver.CurrentStateEvent(ctx, r.id, "m.room.name", ""); ne == nil || ne.ID() != name.Event.ID() {
			t.Fatal("B's current state lacks the room name from across the gap")
		}
		if hasEvent(b, skipped[0]) {
			t.Fatal("the start of a long gap was fetched as timeline events")
		}
		// B keeps working in the room: its next event follows the newest one (and
		// the older extremity, which it merges).
		rb := &room{t: t, s: b, id: r.id}
		next := rb.message(bob, "after the gap")
		if prevs := next.Event.PrevEventIDs(); !slices.Contains(prevs, last.Event.ID()) {
			t.Fatalf("B's next event cites %v", prevs)
		}
		if res, err := a.Roomserver.InputRemoteEvent(ctx, next.Event); err != nil || res.Rejected != nil || res.SoftFailed != nil {
			t.Fatalf("A on B's next event: %+v, %v", res, err)
		}
	})
}

// eduRecorder records EDUs handed to it.
type eduRecorder struct {
	mu   sync.Mutex
	got  []string
	from []string
}

func (e *eduRecorder) HandleEDU(_ context.Context, origin, eduType string, content json.RawMessage) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, eduType+" "+string(content))
	e.from = append(e.from, origin)
	return nil
}

func (e *eduRecorder) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

func TestEDUs(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		r := createRoom(t, a, "10", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{aName}); err != nil {
			t.Fatal(err)
		}
		rec := &eduRecorder{}
		b.Federation.RegisterEDUHandler("m.typing", rec)
		b.Federation.RegisterEDUHandler("m.receipt", rec)
		// A queues EDUs for B: they arrive in a transaction and reach the handlers.
		if err := a.Federation.SendEDU(ctx, []string{bName, aName}, "m.typing", map[string]any{"room_id": r.id, "user_id": alice, "typing": true}); err != nil {
			t.Fatal(err)
		}
		if err := a.Federation.SendEDU(ctx, []string{bName}, "m.unknown_type", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "the typing EDU on B", func() bool { return rec.count() == 1 })
		if rec.from[0] != aName {
			t.Fatalf("EDU origin = %s", rec.from[0])
		}
		// EDUs of rooms whose ACL denies the sender are dropped; receipts are kept
		// for the other rooms.
		r2 := createRoom(t, a, "10", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r2.id), bob, []string{aName}); err != nil {
			t.Fatal(err)
		}
		r2.state(alice, "m.room.server_acl", "", map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}})
		eventually(t, waitTime, "the ACL on B", func() bool {
			e, _ := b.Roomserver.CurrentStateEvent(ctx, r2.id, "m.room.server_acl", "")
			return e != nil
		})
		// B now denies A (both are 127.0.0.1) in r2.
		asA := fakeServerClient(t, aName, a.Key, nil)
		receipt := map[string]any{string(r.id): map[string]any{"m.read": map[string]any{}}, string(r2.id): map[string]any{"m.read": map[string]any{}}}
		edus := []json.RawMessage{
			mustJSON(map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": r2.id, "user_id": alice, "typing": true}}),
			mustJSON(map[string]any{"edu_type": "m.receipt", "content": receipt}),
		}
		if _, err := asA.SendTransaction(ctx, &federation.ReqSendTransaction{Destination: bName, TxnID: "e1", Origin: aName, EDUs: edus}); err != nil {
			t.Fatal(err)
		}
		if n := rec.count(); n != 2 {
			t.Fatalf("EDUs delivered: %v", rec.got)
		}
		if got := rec.got[1]; !strings.Contains(got, string(r.id)) || strings.Contains(got, string(r2.id)) {
			t.Fatalf("receipt after ACL filtering: %s", got)
		}
		var _ federationapi.EDUHandler = rec
	})
}
