package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/storage"
	"hearth/storage/storagetest"
)

const testServer = "hs.test"

// forEachRoomserver runs fn with a fresh room engine on each available database.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

func forEachRoomserver(t *testing.T, fn func(t *testing.T, rs *Roomserver)) {
	t.Helper()
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		fn(t, newTestRoomserver(t, db))
	})
}

func newTestRoomserver(t testing.TB, db *storage.DB) *Roomserver {
	t.Helper()
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := New(context.Background(), db, testServer, key)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func user(name string) id.UserID { return id.UserID("@" + name + ":" + testServer) }

func sk(s string) *string { return &s }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// testRoom builds rooms through the real input path.
type testRoom struct {
	t  testing.TB
	rs *Roomserver
	id id.RoomID
}

// newPublicRoom creates a room of version v with creator, power levels and public
// join rules, the creator joined.
func newPublicRoom(t testing.TB, rs *Roomserver, v id.RoomVersion, creator id.UserID) *testRoom {
	t.Helper()
	ctx := context.Background()
	roomID, _, err := rs.CreateRoom(ctx, v, creator, nil)
	if err != nil {
		t.Fatalf("creating room: %v", err)
	}
	tr := &testRoom{t: t, rs: rs, id: roomID}
	tr.state(creator, "m.room.member", string(creator), map[string]any{"membership": "join"})
	users := map[string]any{string(creator): 100}
	if v == "12" {
		users = map[string]any{} // v12 creators have unlimited power and may not be listed
	}
	tr.state(creator, "m.room.power_levels", "", map[string]any{"users": users})
	tr.state(creator, "m.room.join_rules", "", map[string]any{"join_rule": "public"})
	return tr
}

func (tr *testRoom) send(sender id.UserID, evType string, stateKey *string, content any) *OutputEvent {
	tr.t.Helper()
	out, err := tr.rs.SendEvent(context.Background(), tr.id, SendRequest{Type: evType, StateKey: stateKey, Sender: sender, Content: mustJSON(content)})
	if err != nil {
		tr.t.Fatalf("sending %s from %s: %v", evType, sender, err)
	}
	return out
}

func (tr *testRoom) state(sender id.UserID, evType, stateKey string, content any) *OutputEvent {
	tr.t.Helper()
	return tr.send(sender, evType, sk(stateKey), content)
}

func (tr *testRoom) join(u id.UserID) *OutputEvent {
	tr.t.Helper()
	return tr.state(u, "m.room.member", string(u), map[string]any{"membership": "join"})
}

func (tr *testRoom) message(u id.UserID, body string) *OutputEvent {
	tr.t.Helper()
	return tr.send(u, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body})
}

// stateIDs turns state entries into "type|key" → event ID.
func stateIDs(entries []StateEntry) map[string]id.EventID {
	m := make(map[string]id.EventID, len(entries))
	for _, e := range entries {
		m[e.Key.Type+"|"+e.Key.StateKey] = e.Event.ID()
	}
	return m
}

func diffStates(want, got map[string]id.EventID) error {
	for k, v := range want {
		if got[k] != v {
			return fmt.Errorf("key %s: want %s, got %s", k, v, got[k])
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			return fmt.Errorf("unexpected key %s = %s", k, v)
		}
	}
	return nil
}
