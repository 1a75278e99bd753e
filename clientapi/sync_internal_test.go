package clientapi

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/clientapi/syncstream"
	"hearth/config"
	"hearth/roomserver"
	"hearth/storage"
	"hearth/storage/storagetest"
)

// TestSyncerResolvesUnannouncedEvents checks that events the room engine
// committed without telling the listener (as with a failed write around them,
// or a listener that is not registered at all) still reach the in-memory
// timelines before a sync reads past them.
func TestSyncerResolvesUnannouncedEvents(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		key, err := config.GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		rs, err := roomserver.New(ctx, db, "hs.test", key)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSyncer(ctx, db, rs, SyncOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// Not attached: no listener, so every event is a gap to resolve.
		alice := id.UserID("@alice:hs.test")
		roomID, _, err := rs.CreateRoom(ctx, "10", alice, nil)
		if err != nil {
			t.Fatal(err)
		}
		sk := string(alice)
		if _, err := rs.SendEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: alice, Content: []byte(`{"membership":"join"}`)}); err != nil {
			t.Fatal(err)
		}
		var last *roomserver.OutputEvent
		for i := 0; i < 3; i++ {
			if last, err = rs.SendEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.message", Sender: alice, Content: []byte(`{"body":"x"}`)}); err != nil {
				t.Fatal(err)
			}
		}
		pos, err := s.eventPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pos != rs.StreamPosition() || pos != last.StreamPos {
			t.Fatalf("event position %d, stream %d", pos, rs.StreamPosition())
		}
		if got := s.timelines.Latest(roomID); got != last.StreamPos {
			t.Fatalf("timeline latest %d, want %d", got, last.StreamPos)
		}
		var n int
		s.timelines.Scan(roomID, 0, pos, func(syncstream.TimelineEntry) bool { n++; return true })
		if n != 5 {
			t.Fatalf("%d events in the timeline cache, want 5", n)
		}
		// A late announcement of a resolved position is ignored.
		s.onEvent(*last)
		if got := s.counts.queued(); got != 5 {
			t.Fatalf("%d count jobs queued, want 5 (no duplicate)", got)
		}
	})
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.*", "m.room.message", true},
		{"m.*", "m.room.message", true},
		{"*", "", true},
		{"m.room.*", "m.roo", false},
		{"*.message", "m.room.message", true},
		{"m.*.message", "m.room.topic", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"m.room.message", "m.room.messages", false},
	} {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.pattern, tc.s, got)
		}
	}
}

func TestProjectEventFields(t *testing.T) {
	ev := []byte(`{"content":{"body":"hi","m.relates_to":{"rel_type":"x"}},"event_id":"$e","sender":"@a:hs","type":"m.room.message"}`)
	for _, tc := range []struct {
		fields []string
		want   string
	}{
		{[]string{"type", "content.body"}, `{"type":"m.room.message","content":{"body":"hi"}}`},
		{[]string{`content.m\.relates_to`}, `{"content":{"m.relates_to":{"rel_type":"x"}}}`},
		{[]string{"nope", "content.*"}, `{}`},
	} {
		if got := string(projectEventFields(ev, tc.fields)); got != tc.want {
			t.Errorf("projectEventFields(%v) = %s, want %s", tc.fields, got, tc.want)
		}
	}
}
