package roomserver

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
	"hearth/storage"
)

// TestInputBackfilledEvents feeds a room's history, newest part first, to an
// engine that knows only the room's state as outliers (as after a join), and
// checks that the history pages in topological order, never reaches the stream,
// leaves extremities alone, gains state once it reaches the create event, and
// that a forged event is rejected.
func TestInputBackfilledEvents(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		srcDB, err := storage.Open(ctx, filepath.Join(t.TempDir(), "source.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srcDB.Close() })
		src := newTestRoomserver(t, srcDB)
		alice := user("alice")
		room := newPublicRoom(t, src, "10", alice)
		for i := range 10 {
			room.message(alice, "m"+string(rune('0'+i)))
		}
		stored, _, err := src.Messages(ctx, room.id, TopoPos{}, Forward, 100)
		if err != nil || len(stored) != 14 {
			t.Fatalf("source history: %d events, %v", len(stored), err)
		}
		history := make([]*events.Event, len(stored))
		for i, e := range stored {
			history[i] = e.Event
		}
		stateEvs, msgs := history[:4], history[4:]
		base := authIDsFor(t, src, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""})
		forged := newRemote(t, "10").build(room.id, id.UserID("@mallory:"+remoteServer), "m.room.message", nil,
			map[string]any{"body": "forged"}, []*events.Event{msgs[4]}, base)

		// The engine knows the room's state as outliers, nothing more.
		if err := rs.EnsureRoom(ctx, room.id, "10"); err != nil {
			t.Fatal(err)
		}
		for _, e := range stateEvs {
			if _, err := rs.InputOutlier(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		page := func() []id.EventID {
			t.Helper()
			evs, _, err := rs.Messages(ctx, room.id, TopoPos{}, Backward, 100)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]id.EventID, len(evs))
			for i, e := range evs {
				out[i] = e.ID()
			}
			return out
		}
		idsOf := func(evs []*events.Event) []id.EventID {
			out := make([]id.EventID, len(evs))
			for i, e := range evs {
				out[len(evs)-1-i] = e.ID() // newest first, as pagination backward
			}
			return out
		}

		steps := []struct {
			name         string
			batch        []*events.Event
			stored       int
			rejected     int
			wantPage     []id.EventID
			wantPoints   []id.EventID
			stateKnown   id.EventID // an event whose state before must be known
			stateUnknown id.EventID
		}{
			{"newest messages, state unknown", msgs[5:], 5, 0, idsOf(msgs[5:]), []id.EventID{msgs[4].ID()}, "", msgs[5].ID()},
			{"the rest, a forgery and the outliers", append(append([]*events.Event{forged}, history...), history[0]), 10, 1,
				idsOf(history), nil, msgs[0].ID(), msgs[5].ID()},
			{"all again", history, 0, 0, idsOf(history), nil, msgs[1].ID(), ""},
		}
		for _, st := range steps {
			res, err := rs.InputBackfilledEvents(ctx, room.id, st.batch)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if len(res.Stored) != st.stored || res.Rejected != st.rejected || len(res.MissingAuth) != 0 {
				t.Fatalf("%s: result %+v", st.name, res)
			}
			if got := page(); !slices.Equal(got, st.wantPage) {
				t.Fatalf("%s: /messages order\n got %v\nwant %v", st.name, got, st.wantPage)
			}
			points, err := rs.BackfillPoints(ctx, room.id, 10)
			if err != nil || !slices.Equal(points, st.wantPoints) {
				t.Fatalf("%s: backfill points %v, %v; want %v", st.name, points, err, st.wantPoints)
			}
			if st.stateKnown != "" {
				if s, err := rs.StateAtEvent(ctx, st.stateKnown, false); err != nil || len(s) != 4 {
					t.Fatalf("%s: state before %s: %d entries, %v", st.name, st.stateKnown, len(s), err)
				}
			}
			if st.stateUnknown != "" {
				if e, err := rs.Event(ctx, st.stateUnknown); err != nil || e.StateBefore != 0 {
					t.Fatalf("%s: %s has state %d, %v", st.name, st.stateUnknown, e.StateBefore, err)
				}
			}
			// History never reaches the stream or the extremities.
			if evs, err := rs.EventsSince(ctx, 0, rs.StreamPosition(), 100); err != nil || len(evs) != 0 {
				t.Fatalf("%s: stream has %d events, %v", st.name, len(evs), err)
			}
			if exts, err := rs.ForwardExtremities(ctx, room.id); err != nil || len(exts) != 0 {
				t.Fatalf("%s: extremities %v, %v", st.name, exts, err)
			}
		}
		f, err := rs.Event(ctx, forged.ID())
		if err != nil || !f.Rejected || f.StreamPos >= 0 {
			t.Fatalf("forged event stored as %+v, %v", f, err)
		}
		for _, e := range history {
			if s, err := rs.Event(ctx, e.ID()); err != nil || s.Outlier || s.StreamPos >= 0 {
				t.Fatalf("%s stored as %+v, %v", e.ID(), s, err)
			}
		}
	})
}
