package clientapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testca"
	"hearth/internal/testserver"
	"hearth/storage/storagetest"
)

// TestSyncFederatedInvite: an invite from another server appears in the
// invitee's sync with the stripped state the inviting server sent, and after
// the join, messages from the other server wake the invitee's long poll.
func TestSyncFederatedInvite(t *testing.T) {
	for kind := range storagetest.DSNs(t) {
		t.Run(kind, func(t *testing.T) {
			a := testserver.Start(t, storagetest.DSNs(t)[kind], testserver.Federated)
			b := testserver.Start(t, storagetest.DSNs(t)[kind], testserver.Federated)
			a.ClientAPI.Accounts().SetBcryptCost(4)
			b.ClientAPI.Accounts().SetBcryptCost(4)
			ctx := context.Background()
			alice := registerUser(t, a, "alice")
			bob := registerUser(t, b, "bob")
			r := syncSince(t, bob, "", 0)

			resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "across"})
			if err != nil {
				t.Fatal(err)
			}
			roomID := resp.RoomID
			if _, err := alice.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
				t.Fatalf("inviting a remote user: %v", err)
			}
			r = syncSince(t, bob, r.NextBatch, 10*time.Second)
			inv, ok := r.Rooms.Invite[roomID]
			if !ok {
				t.Fatalf("remote invite not in sync: %+v", r.Rooms)
			}
			var name bool
			for _, e := range inv.InviteState.Events {
				name = name || e.Type == "m.room.name" && gjson.GetBytes(e.Content, "name").Str == "across"
			}
			if !name {
				t.Fatalf("invite_state lacks the room name: %+v", inv.InviteState.Events)
			}
			// Not sent again while unchanged.
			if again := syncSince(t, bob, r.NextBatch, 0); len(again.Rooms.Invite) != 0 {
				t.Fatalf("invite sent again: %+v", again.Rooms.Invite)
			}

			if _, err := bob.cli.JoinRoom(ctx, string(roomID), &mautrix.ReqJoinRoom{Via: []string{a.Config().ServerName}}); err != nil {
				t.Fatalf("joining over federation: %v", err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for r.Rooms.Join[roomID] == nil && time.Now().Before(deadline) {
				r = syncSince(t, bob, r.NextBatch, time.Second)
			}
			if r.Rooms.Join[roomID] == nil {
				t.Fatalf("joined room not in sync")
			}
			// A message on A reaches bob's long poll on B.
			done := make(chan *syncResp, 1)
			since := r.NextBatch
			go func() { done <- syncSince(t, bob, since, 10*time.Second) }()
			stWaitWaiting(t, b, bob.id)
			sent := time.Now()
			stText(t, alice, roomID, "over the wire")
			var got *syncResp
			select {
			case got = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("long poll not woken by a federated message")
			}
			t.Logf("federated send → long-poll answer: %v", time.Since(sent))
			for got.Rooms.Join[roomID] == nil || !slices.Contains(stBodies(got.Rooms.Join[roomID]), "over the wire") {
				if time.Since(sent) > 10*time.Second {
					t.Fatalf("message not synced: %+v", got.Rooms.Join)
				}
				got = syncSince(t, bob, got.NextBatch, time.Second)
			}
		})
	}
}

// asServerTransport sends mautrix's matrix-federation:// requests straight to
// the host over HTTPS (test servers are named by their address).
type asServerTransport struct{ base http.RoundTripper }

func (t asServerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.URL.Scheme = "https"
	return t.base.RoundTrip(r)
}

// federationClientAs is a federation client speaking as test server s with
// its signing key: a test delivers s's events itself with it.
func federationClientAs(t *testing.T, s *testserver.Server) *federation.Client {
	t.Helper()
	ca, err := testca.Shared()
	if err != nil {
		t.Fatal(err)
	}
	return &federation.Client{
		HTTP:       &http.Client{Transport: asServerTransport{base: &http.Transport{TLSClientConfig: ca.ClientTLS()}}},
		ServerName: s.Config().ServerName,
		UserAgent:  "hearth-test",
		Key: &federation.SigningKey{ID: id.KeyID(s.Key.ID), Priv: s.Key.PrivateKey,
			Pub: id.SigningKey(base64.RawStdEncoding.EncodeToString(s.Key.Public()))},
		ResponseSizeLimit: 64 << 20,
	}
}

// waitUntil polls cond until it holds, failing the test after 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// federatedPair starts two federated servers on one database kind with
// alice on the first, bob on the second, both joined to a public room
// alice made, where bob may send state too.
func federatedPair(t *testing.T, dsn func() string) (a, b *testserver.Server, alice, bob *user, roomID id.RoomID) {
	t.Helper()
	ctx := context.Background()
	a = testserver.Start(t, dsn(), testserver.Federated)
	b = testserver.Start(t, dsn(), testserver.Federated)
	a.ClientAPI.Accounts().SetBcryptCost(4)
	b.ClientAPI.Accounts().SetBcryptCost(4)
	alice, bob = registerUser(t, a, "alice"), registerUser(t, b, "bob")
	resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.id: 100, bob.id: 50}}})
	if err != nil {
		t.Fatal(err)
	}
	roomID = resp.RoomID
	if _, err := bob.cli.JoinRoom(ctx, string(roomID), &mautrix.ReqJoinRoom{Via: []string{a.Config().ServerName}}); err != nil {
		t.Fatalf("joining over federation: %v", err)
	}
	waitUntil(t, "bob's join on A", func() bool {
		m, _, err := a.Roomserver.Membership(ctx, roomID, bob.id)
		return err == nil && m == "join"
	})
	return a, b, alice, bob, roomID
}

// TestSyncTimelineGap: when B receives an event whose history it cannot
// fill (get_missing_events brings only the newest part of a long gap), an
// incremental sync from before the gap shows the events after it with the
// timeline limited, and nothing from before it (Complement
// TestSyncTimelineGap), both from memory and, after a restart, from the store.
func TestSyncTimelineGap(t *testing.T) {
	for kind := range storagetest.DSNs(t) {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			a, b, alice, bob, roomID := federatedPair(t, func() string { return storagetest.DSNs(t)[kind] })
			filter := `{"room":{"timeline":{"limit":20}}}`
			tok := syncRaw(t, bob, url.Values{"filter": {filter}}).Get("next_batch").Str
			before := stText(t, bob, roomID, "before the gap")
			waitUntil(t, "bob's message on A", func() bool { _, err := a.Roomserver.Event(ctx, before); return err == nil })

			// A stops sending: B learns of A's events only from the test.
			a.Federation.Stop()
			for i := 0; i < 40; i++ {
				stText(t, alice, roomID, fmt.Sprintf("lost %d", i))
			}
			last := stText(t, alice, roomID, "after the gap")
			se, err := a.Roomserver.Event(ctx, last)
			if err != nil {
				t.Fatal(err)
			}
			asA := federationClientAs(t, a)
			res, err := asA.SendTransaction(ctx, &federation.ReqSendTransaction{
				Destination: b.Config().ServerName, TxnID: "gap1", Origin: a.Config().ServerName, PDUs: []json.RawMessage{se.JSON()},
			})
			if err != nil || res.PDUs[last].Error != "" {
				t.Fatalf("delivering the newest event: %+v %v", res, err)
			}
			check := func(when string) {
				t.Helper()
				r := syncRaw(t, bob, url.Values{"since": {tok}, "filter": {filter}})
				tl := r.Get("rooms.join." + gjsonRoom(roomID) + ".timeline")
				evs := tl.Get("events").Array()
				if len(evs) == 0 || evs[len(evs)-1].Get("event_id").Str != string(last) {
					t.Fatalf("%s: timeline does not end with the delivered event: %s", when, tl.Raw)
				}
				if !tl.Get("limited").Bool() {
					t.Fatalf("%s: timeline across a gap not limited: %s", when, tl.Raw)
				}
				for _, e := range evs {
					if e.Get("sender").Str == string(bob.id) {
						t.Fatalf("%s: event from before the gap in the timeline: %s", when, e.Raw)
					}
				}
				// Without a gap in range the timeline is not limited.
				r2 := syncRaw(t, bob, url.Values{"since": {r.Get("next_batch").Str}, "filter": {filter}})
				if r2.Get("rooms.join." + gjsonRoom(roomID)).Exists() {
					t.Fatalf("%s: room sent again without news: %s", when, r2.Raw)
				}
			}
			check("from memory")
			b.Stop()
			b.Restart(t)
			check("from the store")
		})
	}
}

// TestSyncStateFromFilteredEvents: a state event that takes effect through an
// event the filter leaves out (here a merge of two forks) still reaches the
// client in the state section (Complement
// TestSyncOmitsStateChangeOnFilteredEvents, Synapse issue 16928), and an
// initial sync's timeline follows the room's topological order.
func TestSyncStateFromFilteredEvents(t *testing.T) {
	for kind := range storagetest.DSNs(t) {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			a, b, alice, bob, roomID := federatedPair(t, func() string { return storagetest.DSNs(t)[kind] })
			e1 := stText(t, alice, roomID, "E1")
			waitUntil(t, "E1 on B", func() bool { _, err := b.Roomserver.Event(ctx, e1); return err == nil })
			// A stops sending: B builds S2 on E1 while A goes on with E3, E4.
			a.Federation.Stop()
			stText(t, alice, roomID, "E3")
			e4 := stText(t, alice, roomID, "E4")
			s2, err := bob.cli.SendStateEvent(ctx, roomID, event.StateRoomName, "", map[string]any{"name": "S2"})
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "S2 on A", func() bool { _, err := a.Roomserver.Event(ctx, s2.EventID); return err == nil })
			if _, err := alice.cli.SendMessageEvent(ctx, roomID, event.NewEventType("please_filter_me"), map[string]any{"body": "E5"}); err != nil {
				t.Fatal(err)
			}
			r := syncRaw(t, alice, url.Values{"filter": {`{"room":{"timeline":{"not_types":["please_filter_me"],"limit":1}}}`}})
			jr := r.Get("rooms.join." + gjsonRoom(roomID))
			if got := jr.Get("timeline.events.0.event_id").Str; got != string(e4) {
				t.Fatalf("timeline = %s, want E4 (the newest in topological order)", jr.Get("timeline").Raw)
			}
			if jr.Get(`state.events.#(type=="m.room.name").event_id`).Str != string(s2.EventID) {
				t.Fatalf("state lacks S2: %s", jr.Get("state").Raw)
			}
		})
	}
}
