//go:build goolm

package clientapi_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/storage/storagetest"
)

// syncUntil runs the client's syncs (through its OlmMachine) until cond holds
// for a response, for at most 10 seconds.
func (c *olmClient) syncUntil(what string, cond func(*mautrix.RespSync) bool) {
	c.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.u.cli.SyncRequest(ctx, 500, c.since, "", false, "")
		if err != nil {
			c.t.Fatalf("%s syncing: %v", c.u.id, err)
		}
		c.mach.ProcessSyncResponse(ctx, resp, c.since)
		c.since = resp.NextBatch
		if cond(resp) {
			return
		}
	}
	c.t.Fatalf("%s: timed out waiting for %s", c.u.id, what)
}

// ephemeral returns the room's ephemeral events of type typ in a response.
func ephemeral(resp *mautrix.RespSync, room id.RoomID, typ event.Type) []*event.Event {
	jr, ok := resp.Rooms.Join[room]
	if !ok {
		return nil
	}
	var out []*event.Event
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type.Type == typ.Type {
			out = append(out, ev)
		}
	}
	return out
}

// TestFederatedE2EE: alice on server A and bob on server B share an encrypted
// room. Their OlmMachines query and claim each other's keys across servers,
// share Megolm sessions over Olm-encrypted to-device messages that travel as
// m.direct_to_device EDUs, and each decrypts the other's message. Typing,
// read receipts and a new device of bob's reach the other server's /sync.
func TestFederatedE2EE(t *testing.T) {
	for kind, dsn := range storagetest.DSNs(t) {
		t.Run(kind, func(t *testing.T) {
			a := testserver.Start(t, dsn, testserver.Federated)
			b := testserver.Start(t, storagetest.DSNs(t)[kind], testserver.Federated)
			a.ClientAPI.Accounts().SetBcryptCost(4)
			b.ClientAPI.Accounts().SetBcryptCost(4)
			ctx := context.Background()
			alice, bob := registerUser(t, a, "alice"), registerUser(t, b, "bob")

			created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Preset: "public_chat",
				InitialState: []*event.Event{{
					Type:    event.StateEncryption,
					Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
				}},
			})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			if _, err := bob.cli.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Config().ServerName}}); err != nil {
				t.Fatalf("bob joining over federation: %v", err)
			}
			state := &roomStateStore{room: room, encryption: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}
			ac, bc := newOlmClient(t, alice, state), newOlmClient(t, bob, state)
			ac.sync(room)
			bc.sync(room)

			// A remote /keys/query answers with bob's device and no failures.
			start := time.Now()
			q := alice.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[id.UserID][]string{bob.id: {}}}).expect(t, 200, "")
			t.Logf("remote /keys/query: %v", time.Since(start))
			var qr struct {
				DeviceKeys map[id.UserID]map[id.DeviceID]json.RawMessage `json:"device_keys"`
				Failures   map[string]any                                `json:"failures"`
			}
			if err := json.Unmarshal(q.raw, &qr); err != nil || len(qr.Failures) != 0 || qr.DeviceKeys[bob.id][id.DeviceID(bob.device)] == nil {
				t.Fatalf("remote keys query: %s (%v)", q.raw, err)
			}

			members := []id.UserID{alice.id, bob.id}
			const fromAlice = "Hello Bob on the other server 🔐"
			ac.send(room, members, fromAlice)
			if got := bc.receive(room, alice.id); got != fromAlice {
				t.Fatalf("bob decrypted %q, want %q", got, fromAlice)
			}
			const fromBob = "Hi Alice, decrypted across servers."
			bc.send(room, members, fromBob)
			if got := ac.receive(room, bob.id); got != fromBob {
				t.Fatalf("alice decrypted %q, want %q", got, fromBob)
			}

			// Typing on B shows on A, and stopping too.
			if _, err := bob.cli.UserTyping(ctx, room, true, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			typing := func(want bool) func(*mautrix.RespSync) bool {
				return func(r *mautrix.RespSync) bool {
					for _, ev := range ephemeral(r, room, event.EphemeralEventTyping) {
						var c struct {
							UserIDs []id.UserID `json:"user_ids"`
						}
						if json.Unmarshal(ev.Content.VeryRaw, &c) == nil && slices.Contains(c.UserIDs, bob.id) == want {
							return true
						}
					}
					return false
				}
			}
			ac.syncUntil("bob typing", typing(true))
			if _, err := bob.cli.UserTyping(ctx, room, false, 0); err != nil {
				t.Fatal(err)
			}
			ac.syncUntil("bob not typing", typing(false))

			// A read receipt on A shows on B.
			msgID := stText(t, alice, room, "read me")
			bc.syncUntil("alice's message", func(r *mautrix.RespSync) bool {
				jr, ok := r.Rooms.Join[room]
				return ok && slices.ContainsFunc(jr.Timeline.Events, func(e *event.Event) bool { return e.ID == msgID })
			})
			if err := alice.cli.SendReceipt(ctx, room, msgID, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			bc.syncUntil("alice's receipt", func(r *mautrix.RespSync) bool {
				for _, ev := range ephemeral(r, room, event.EphemeralEventReceipt) {
					var c map[id.EventID]map[string]map[id.UserID]json.RawMessage
					if json.Unmarshal(ev.Content.VeryRaw, &c) == nil && c[msgID]["m.read"][alice.id] != nil {
						return true
					}
				}
				return false
			})

			// A new device of bob's on B puts him in alice's device_lists.changed.
			cli2, err := mautrix.NewClient(b.URL, "", "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli2.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: bob.id.Localpart()},
				Password:   bob.password, StoreCredentials: true}); err != nil {
				t.Fatal(err)
			}
			newOlmClient(t, &user{id: bob.id, cli: cli2}, state)
			ac.syncUntil("bob in device_lists.changed", func(r *mautrix.RespSync) bool {
				return slices.Contains(r.DeviceLists.Changed, bob.id)
			})
			// alice's client now finds the new device over federation.
			q = alice.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[id.UserID][]string{bob.id: {}}}).expect(t, 200, "")
			if err := json.Unmarshal(q.raw, &qr); err != nil || qr.DeviceKeys[bob.id][cli2.DeviceID] == nil {
				t.Fatalf("new device not found: %s", q.raw)
			}
		})
	}
}
