package federationapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/internal/testserver"
	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/storage/storagetest"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

// dbKinds lists the available databases ("sqlite", and "postgres" when configured).
func dbKinds() []string {
	if os.Getenv(storagetest.PostgresEnv) != "" {
		return []string{"sqlite", "postgres"}
	}
	return []string{"sqlite"}
}

// starter starts a federated test server (server name 127.0.0.1:port) with a
// fresh database of the kind under test.
type starter func(opts ...testserver.Option) *testserver.Server

// forEachDB runs fn once per database kind; fn starts its servers with start.
func forEachDB(t *testing.T, fn func(t *testing.T, start starter)) {
	t.Parallel()
	for _, kind := range dbKinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fn(t, func(opts ...testserver.Option) *testserver.Server {
				return testserver.Start(t, storagetest.DSNs(t)[kind], append([]testserver.Option{testserver.Federated}, opts...)...)
			})
		})
	}
}

// user makes a user ID on s.
func user(s *testserver.Server, name string) id.UserID {
	return id.UserID("@" + name + ":" + s.Config().ServerName)
}

// register creates an account on s.
func register(t *testing.T, s *testserver.Server, name string) id.UserID {
	t.Helper()
	if _, err := accounts.NewStore(s.DB, s.Config().ServerName).RegisterUser(context.Background(), name, "password-"+name, false, "", ""); err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	return user(s, name)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func sk(s string) *string { return &s }

// room is a room created on one test server through the room engine.
type room struct {
	t  *testing.T
	s  *testserver.Server
	id id.RoomID
}

// createRoom makes a room of version v on s with creator joined, power levels,
// join rules and shared history.
func createRoom(t *testing.T, s *testserver.Server, v id.RoomVersion, creator id.UserID, joinRule string) *room {
	t.Helper()
	ctx := context.Background()
	roomID, _, err := s.Roomserver.CreateRoom(ctx, v, creator, nil)
	if err != nil {
		t.Fatalf("creating room: %v", err)
	}
	r := &room{t: t, s: s, id: roomID}
	r.state(creator, "m.room.member", string(creator), map[string]any{"membership": "join"})
	users := map[string]any{string(creator): 100}
	if v == "12" {
		users = map[string]any{}
	}
	r.state(creator, "m.room.power_levels", "", map[string]any{"users": users})
	r.state(creator, "m.room.join_rules", "", map[string]any{"join_rule": joinRule})
	r.state(creator, "m.room.history_visibility", "", map[string]any{"history_visibility": "shared"})
	return r
}

func (r *room) send(sender id.UserID, evType string, stateKey *string, content any) *roomserver.OutputEvent {
	r.t.Helper()
	out, err := r.s.Roomserver.SendEvent(context.Background(), r.id, roomserver.SendRequest{
		Type: evType, StateKey: stateKey, Sender: sender, Content: mustJSON(content),
	})
	if err != nil {
		r.t.Fatalf("sending %s: %v", evType, err)
	}
	return out
}

func (r *room) state(sender id.UserID, evType, stateKey string, content any) *roomserver.OutputEvent {
	return r.send(sender, evType, &stateKey, content)
}

func (r *room) message(sender id.UserID, body string) *roomserver.OutputEvent {
	return r.send(sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body})
}

// eventually polls cond until it holds or the timeout ends.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hasEvent reports whether s stored eventID as a timeline event clients see.
func hasEvent(s *testserver.Server, eventID id.EventID) bool {
	e, err := s.Roomserver.Event(context.Background(), eventID)
	return err == nil && !e.Outlier && !e.Rejected && !e.SoftFailed
}

// membership returns userID's membership in roomID as s sees it.
func membership(t *testing.T, s *testserver.Server, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	m, _, err := s.Roomserver.Membership(context.Background(), roomID, userID)
	if err != nil {
		t.Fatalf("membership: %v", err)
	}
	return m
}

// backfill asks to for the history of roomID before its forward extremities, as
// from, and returns the IDs of the events it answered with.
func backfill(t *testing.T, from, to *testserver.Server, roomID id.RoomID, _ id.EventID) map[id.EventID]bool {
	t.Helper()
	ctx := context.Background()
	exts, err := to.Roomserver.ForwardExtremities(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := to.Roomserver.RoomVersion(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	c := fakeServerClient(t, from.Config().ServerName, from.Key, nil)
	resp, err := c.Backfill(ctx, &federation.ReqBackfill{ServerName: to.Config().ServerName, RoomID: roomID, Limit: 50, BackfillFrom: exts})
	if err != nil {
		t.Fatalf("backfill: %v", err)
	}
	out := map[id.EventID]bool{}
	for _, raw := range resp.PDUs {
		ev, err := events.Parse(v.ID, raw)
		if err != nil {
			t.Fatalf("backfilled event: %v", err)
		}
		out[ev.ID()] = true
	}
	return out
}

// buildFrom builds and signs, as s, the event of a make_join/make_leave template
// (room v3+).
func buildFrom(t *testing.T, s *testserver.Server, tmpl json.RawMessage, v id.RoomVersion) *events.Event {
	t.Helper()
	g := gjson.ParseBytes(tmpl)
	sk := g.Get("state_key").Str
	proto := events.ProtoEvent{Type: g.Get("type").Str, StateKey: &sk, Sender: id.UserID(g.Get("sender").Str),
		RoomID: id.RoomID(g.Get("room_id").Str), Content: []byte(g.Get("content").Raw), Depth: g.Get("depth").Int()}
	for _, x := range g.Get("prev_events").Array() {
		proto.PrevEvents = append(proto.PrevEvents, id.EventID(x.Str))
	}
	for _, x := range g.Get("auth_events").Array() {
		proto.AuthEvents = append(proto.AuthEvents, id.EventID(x.Str))
	}
	ev, err := events.Build(v, proto, s.Config().ServerName, id.KeyID(s.Key.ID), s.Key.PrivateKey)
	if err != nil {
		t.Fatalf("building from template: %v", err)
	}
	return ev
}

// isStatus reports whether a federation request failed with the HTTP status.
func isStatus(err error, status int) bool {
	got, _ := respErr(err)
	return got == status
}

// pduIDs parses room v10 PDUs and returns their IDs in order.
func pduIDs(t *testing.T, raws []json.RawMessage) []id.EventID {
	t.Helper()
	out := make([]id.EventID, len(raws))
	for i, raw := range raws {
		ev, err := events.Parse("10", raw)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ev.ID()
	}
	return out
}
