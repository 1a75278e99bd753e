package roomserver

import (
	"context"
	"errors"
	"path/filepath"
	"sort"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/storage"
)

// copyAsOutliers stores events of one engine in another as outliers, each after
// its auth events (creation order is an auth order for rooms built locally).
func copyAsOutliers(t *testing.T, to *Roomserver, evs []*StoredEvent) {
	t.Helper()
	sort.Slice(evs, func(i, j int) bool { return evs[i].NID < evs[j].NID })
	for _, e := range evs {
		if _, err := to.InputOutlier(context.Background(), e.Event); err != nil {
			t.Fatalf("outlier %s: %v", e.ID(), err)
		}
	}
}

func TestInputEventWithState(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, origin *Roomserver) {
		ctx := context.Background()
		db2, err := storage.Open(ctx, filepath.Join(t.TempDir(), "joiner.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db2.Close() })
		joiner := newTestRoomserver(t, db2)
		alice, bob := user("alice"), user("bob")
		room := newPublicRoom(t, origin, "10", alice)
		room.join(bob)
		room.state(alice, "m.room.name", "", map[string]any{"name": "before"})
		prev := room.message(alice, "last before the gap")
		ev := room.message(bob, "first seen by the joiner")

		if err := joiner.EnsureRoom(ctx, room.id, "10"); err != nil {
			t.Fatal(err)
		}
		state, err := origin.StateAtEvent(ctx, ev.Event.ID(), false)
		if err != nil {
			t.Fatal(err)
		}
		var ids []id.EventID
		var stateEvs []*StoredEvent
		for _, e := range state {
			ids = append(ids, e.Event.ID())
			stateEvs = append(stateEvs, e.Event)
		}
		prevStates := map[id.EventID][]id.EventID{prev.Event.ID(): ids}

		// Supplied state events that are not stored are reported as missing.
		_, err = joiner.InputEventWithState(ctx, ev.Event, prevStates)
		var missing *MissingEventsError
		if !errors.As(err, &missing) || len(missing.AuthEvents) != len(ids) {
			t.Fatalf("before the outliers: %v", err)
		}
		copyAsOutliers(t, joiner, stateEvs)
		// A prev event with neither stored nor supplied state is missing.
		if _, err := joiner.InputEventWithState(ctx, ev.Event, nil); !errors.As(err, &missing) || len(missing.PrevEvents) != 1 {
			t.Fatalf("without state: %v", err)
		}
		res, err := joiner.InputEventWithState(ctx, ev.Event, prevStates)
		if err != nil || res.Rejected != nil || res.SoftFailed != nil || res.Output == nil {
			t.Fatalf("input with state: %+v, %v", res, err)
		}
		// The joiner's current state is the origin's, and the event is its only
		// forward extremity; it now has state like any timeline event.
		want, _ := origin.CurrentState(ctx, room.id)
		got, _ := joiner.CurrentState(ctx, room.id)
		if err := diffStates(stateIDs(want), stateIDs(got)); err != nil {
			t.Fatal(err)
		}
		if exts, _ := joiner.ForwardExtremities(ctx, room.id); len(exts) != 1 || exts[0] != ev.Event.ID() {
			t.Fatalf("extremities = %v", exts)
		}
		after, err := joiner.StateAtEvent(ctx, ev.Event.ID(), true)
		if err != nil || len(after) != len(state) {
			t.Fatalf("state after: %d, %v", len(after), err)
		}
		if ok, err := joiner.ServerJoined(ctx, room.id, "", testServer); err != nil || !ok {
			t.Fatalf("ServerJoined = %v, %v", ok, err)
		}
		if ok, _ := joiner.ServerJoined(ctx, room.id, "", "other.test"); ok {
			t.Fatal("ServerJoined for a server with no members")
		}
		// Again: a duplicate.
		if res, err := joiner.InputEventWithState(ctx, ev.Event, prevStates); err != nil || !res.Duplicate {
			t.Fatalf("second input: %+v, %v", res, err)
		}

		// Once the joiner has a current state, an event that fails against it is
		// soft-failed: bob is banned on the origin, then an event of his from
		// before the ban arrives with the state from before the ban.
		pre, err := origin.BuildEvent(ctx, room.id, SendRequest{Type: "m.room.message", Sender: bob, Content: []byte(`{"body":"sneaky"}`)})
		if err != nil {
			t.Fatal(err)
		}
		ban := room.state(alice, "m.room.member", string(bob), map[string]any{"membership": "ban"})
		if res, err := joiner.InputRemoteEvent(ctx, ban.Event); err != nil || res.Rejected != nil {
			t.Fatalf("ban: %+v %v", res, err)
		}
		res, err = joiner.InputEventWithState(ctx, pre, map[id.EventID][]id.EventID{})
		if err != nil || res.SoftFailed == nil {
			t.Fatalf("pre-ban event: %+v, %v", res, err)
		}

		// Templates carry the room's extremities and auth events for a remote sender.
		proto, v, err := origin.EventTemplate(ctx, room.id, SendRequest{Type: "m.room.member", StateKey: sk("@carol:remote.test"),
			Sender: "@carol:remote.test", Content: []byte(`{"membership":"join"}`)})
		if err != nil || v.ID != "10" || len(proto.PrevEvents) != 1 || proto.PrevEvents[0] != ban.Event.ID() || len(proto.AuthEvents) != 3 {
			t.Fatalf("template: %+v, %v", proto, err)
		}
	})
}
