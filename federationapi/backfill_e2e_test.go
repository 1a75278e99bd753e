package federationapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// TestLateJoinerBackfills: C joins a room on A after A and B have talked in it;
// C's client pages back through /messages past C's join, and C fetches the
// history (more than one /backfill's worth) from another server, checks it and
// serves it in order
// — without a change to C's forward extremities or current state, and without
// the history reaching /sync as new events.
func TestLateJoinerBackfills(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b, c := start(), start(), start()
		ctx := context.Background()
		alice, bob, carol := clientOf(t, a, "alice"), clientOf(t, b, "bob"), clientOf(t, c, "carol")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "history"})
		if err != nil {
			t.Fatal(err)
		}
		roomID, alias := created.RoomID, "#history:"+a.Config().ServerName
		if _, err := bob.JoinRoom(ctx, alias, nil); err != nil {
			t.Fatalf("bob joining: %v", err)
		}
		var sent []string // bodies, oldest first
		var last id.EventID
		say := func(cli *mautrix.Client, body string) {
			resp, err := cli.SendText(ctx, roomID, body)
			if err != nil {
				t.Fatalf("sending %q: %v", body, err)
			}
			sent, last = append(sent, body), resp.EventID
		}
		for i := range 40 {
			say(alice, fmt.Sprintf("alice %d", i))
		}
		eventually(t, waitTime, "alice's messages on B", func() bool { return hasEvent(b, last) })
		for i := range 30 {
			say(bob, fmt.Sprintf("bob %d", i))
		}
		eventually(t, waitTime, "bob's messages on A", func() bool { return hasEvent(a, last) })

		if _, err := carol.JoinRoom(ctx, alias, nil); err != nil {
			t.Fatalf("carol joining: %v", err)
		}
		if hasEvent(c, last) {
			t.Fatal("C has history before backfilling")
		}
		initial, err := carol.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		extsBefore, err := c.Roomserver.ForwardExtremities(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		stateBefore := stateIDs(t, c.Roomserver, roomID)

		// Page back in small steps through the whole room.
		var bodies []string
		var types []event.Type
		seen := map[id.EventID]bool{}
		historical := false
		from := ""
		for range 100 {
			page, err := carol.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 7)
			if err != nil {
				t.Fatalf("/messages from %q: %v", from, err)
			}
			for _, e := range page.Chunk {
				if seen[e.ID] {
					t.Fatalf("event %s returned twice", e.ID)
				}
				seen[e.ID] = true
				types = append(types, e.Type)
				if e.Type == event.EventMessage {
					bodies = append(bodies, e.Content.Raw["body"].(string))
				}
			}
			historical = historical || strings.Contains(page.End, "_-")
			if page.End == "" {
				break
			}
			from = page.End
		}
		want := slices.Clone(sent)
		slices.Reverse(want)
		if !slices.Equal(bodies, want) {
			t.Fatalf("C's history:\n got %q\nwant %q", bodies, want)
		}
		if len(types) == 0 || types[len(types)-1] != event.StateCreate {
			t.Fatalf("pagination did not end at the create event: %v", types)
		}
		if !historical {
			t.Fatal("no pagination token pointed into backfilled history")
		}
		// The history took more than one /backfill: the first batch did not
		// reach the create event, so its events have no known state.
		if e, err := c.Roomserver.Event(ctx, last); err != nil || e.StateBefore != 0 || e.StreamPos >= 0 {
			t.Fatalf("newest backfilled event stored as %+v, %v", e, err)
		}

		extsAfter, err := c.Roomserver.ForwardExtremities(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(extsBefore)
		slices.Sort(extsAfter)
		if !slices.Equal(extsBefore, extsAfter) {
			t.Fatalf("forward extremities changed: %v → %v", extsBefore, extsAfter)
		}
		if after := stateIDs(t, c.Roomserver, roomID); !slices.Equal(stateBefore, after) {
			t.Fatalf("current state changed by backfill:\n%v\n%v", stateBefore, after)
		}
		// /sync does not return history as new events.
		next, err := carol.SyncRequest(ctx, 0, initial.NextBatch, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if jr, ok := next.Rooms.Join[roomID]; ok && len(jr.Timeline.Events) > 0 {
			t.Fatalf("backfilled events in /sync: %d events", len(jr.Timeline.Events))
		}
		// Live traffic still flows to C after the backfill.
		resp, err := alice.SendText(ctx, roomID, "after the backfill")
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "a live message on C", func() bool { return hasEvent(c, resp.EventID) })
	})
}

// stateIDs lists the event IDs of the room's current state on rs, sorted.
func stateIDs(t *testing.T, rs *roomserver.Roomserver, roomID id.RoomID) []string {
	t.Helper()
	st, err := rs.CurrentState(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(st))
	for i, e := range st {
		out[i] = e.Key.Type + "|" + e.Key.StateKey + "|" + string(e.Event.ID())
	}
	slices.Sort(out)
	return out
}
