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

// TestNextToTimestampGap: in a room whose whole history is here no event is
// next to a gap; in one that knows only the newest part of its history (as
// after a join and a first backfill) the oldest event known is, looking
// forward, and the newest backfilled one, looking backward; outliers always
// are.
func TestNextToTimestampGap(t *testing.T) {
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
		for range 6 {
			room.message(alice, "hello")
		}
		full, _, err := src.Messages(ctx, room.id, TopoPos{}, Forward, 100)
		if err != nil || len(full) != 10 {
			t.Fatalf("source history: %d events, %v", len(full), err)
		}
		// rs knows the room's state as outliers and the newest three messages.
		if err := rs.EnsureRoom(ctx, room.id, "10"); err != nil {
			t.Fatal(err)
		}
		for _, e := range full[:4] {
			if _, err := rs.InputOutlier(ctx, e.Event); err != nil {
				t.Fatal(err)
			}
		}
		newest := []*events.Event{full[7].Event, full[8].Event, full[9].Event}
		if res, err := rs.InputBackfilledEvents(ctx, room.id, newest); err != nil || len(res.Stored) != 3 {
			t.Fatalf("backfilling: %+v, %v", res, err)
		}
		on := func(r *Roomserver, eventID id.EventID) *StoredEvent {
			t.Helper()
			e, err := r.Event(ctx, eventID)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}

		tests := []struct {
			name string
			rs   *Roomserver
			ev   id.EventID
			dir  Direction
			want bool
		}{
			{"whole room: create event, forward", src, full[0].ID(), Forward, false},
			{"whole room: a message, forward", src, full[5].ID(), Forward, false},
			{"whole room: a message, backward", src, full[5].ID(), Backward, false},
			{"whole room: the newest event, backward", src, full[9].ID(), Backward, false},
			{"partial: oldest known, forward", rs, full[7].ID(), Forward, true},
			{"partial: oldest known, backward", rs, full[7].ID(), Backward, false},
			{"partial: middle, forward", rs, full[8].ID(), Forward, false},
			{"partial: newest backfilled, backward", rs, full[9].ID(), Backward, true},
			{"partial: an outlier", rs, full[2].ID(), Forward, true},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := tc.rs.NextToTimestampGap(ctx, on(tc.rs, tc.ev), tc.dir)
				if err != nil || got != tc.want {
					t.Fatalf("NextToTimestampGap = %v, %v; want %v", got, err, tc.want)
				}
			})
		}
		if got, err := rs.NextToTimestampGap(ctx, nil, Forward); err != nil || !got {
			t.Fatalf("no event: %v, %v; want a gap", got, err)
		}
	})
}

// TestJoinedServersByAge: the servers of joined members, the one whose users
// joined first first, each once; invited users do not count.
func TestJoinedServersByAge(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		alice := user("alice")
		room := newPublicRoom(t, rs, "10", alice)
		head := func() *events.Event {
			exts, err := rs.ForwardExtremities(ctx, room.id)
			if err != nil || len(exts) != 1 {
				t.Fatalf("extremities = %v, %v", exts, err)
			}
			e, err := rs.Event(ctx, exts[0])
			if err != nil {
				t.Fatal(err)
			}
			return e.Event
		}
		base := authIDsFor(t, rs, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""}, [2]string{"m.room.join_rules", ""})
		joinFrom := func(server, name string) {
			t.Helper()
			rb := newRemote(t, "10")
			u := id.UserID("@" + name + ":" + server)
			ev, err := events.Build(rb.rv, events.ProtoEvent{Type: "m.room.member", StateKey: sk(string(u)), Sender: u, RoomID: room.id,
				Content: mustJSON(map[string]any{"membership": "join"}), PrevEvents: []id.EventID{head().ID()}, AuthEvents: base,
				Depth: head().Depth() + 1}, server, id.KeyID(rb.key.ID), rb.key.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := rs.InputRemoteEvent(ctx, ev); err != nil || res.Output == nil {
				t.Fatalf("join from %s: %+v, %v", server, res, err)
			}
		}
		joinFrom("zeta.test", "z1")
		joinFrom("alpha.test", "a1")
		joinFrom("zeta.test", "z2")
		room.join(user("bob"))
		room.state(alice, "m.room.member", "@dan:invited.test", map[string]any{"membership": "invite"})
		got, err := rs.JoinedServersByAge(ctx, room.id)
		if want := []string{testServer, "zeta.test", "alpha.test"}; err != nil || !slices.Equal(got, want) {
			t.Fatalf("JoinedServersByAge = %v, %v; want %v", got, err, want)
		}
	})
}
