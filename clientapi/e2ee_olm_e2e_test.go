//go:build goolm

// This test runs two real end-to-end encryption clients: mautrix-go's
// OlmMachine on the pure-Go goolm backend. mautrix selects goolm with the
// goolm build tag (without it, its crypto package links the C libolm), so this
// file is built only with that tag; `make test` sets it.

package clientapi_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// roomStateStore answers OlmMachine's questions about the one encrypted room of
// the test, from what the server said about it.
type roomStateStore struct {
	room       id.RoomID
	encryption *event.EncryptionEventContent
}

func (s *roomStateStore) IsEncrypted(_ context.Context, r id.RoomID) (bool, error) {
	return r == s.room && s.encryption != nil, nil
}

func (s *roomStateStore) GetEncryptionEvent(_ context.Context, r id.RoomID) (*event.EncryptionEventContent, error) {
	if r != s.room {
		return nil, nil
	}
	return s.encryption, nil
}

func (s *roomStateStore) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}, nil
}

func (s *roomStateStore) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) {
	return []id.RoomID{s.room}, nil
}

// olmClient is one E2EE client: a mautrix client with its OlmMachine, syncing
// through /sync.
type olmClient struct {
	t     *testing.T
	u     *user
	mach  *crypto.OlmMachine
	since string
}

func newOlmClient(t *testing.T, u *user, state *roomStateStore) *olmClient {
	t.Helper()
	ctx := context.Background()
	log := zerolog.Nop()
	mach := crypto.NewOlmMachine(u.cli, &log, crypto.NewMemoryStore(nil), state)
	if err := mach.Load(ctx); err != nil {
		t.Fatalf("loading olm machine: %v", err)
	}
	// Device keys and one-time keys go up through /keys/upload.
	if err := mach.ShareKeys(ctx, 0); err != nil {
		t.Fatalf("uploading keys of %s: %v", u.id, err)
	}
	return &olmClient{t: t, u: u, mach: mach}
}

// sync runs one /sync through the machine (to-device, device lists, key
// counts) and returns the room's timeline events.
func (c *olmClient) sync(room id.RoomID) []*event.Event {
	c.t.Helper()
	ctx := context.Background()
	resp, err := c.u.cli.SyncRequest(ctx, 0, c.since, "", false, "")
	if err != nil {
		c.t.Fatalf("%s syncing: %v", c.u.id, err)
	}
	c.mach.ProcessSyncResponse(ctx, resp, c.since)
	c.since = resp.NextBatch
	var out []*event.Event
	if jr, ok := resp.Rooms.Join[room]; ok {
		for _, ev := range jr.Timeline.Events {
			ev.RoomID = room
			out = append(out, ev)
		}
	}
	return out
}

// send shares the client's Megolm session with the room's members over
// to-device messages and sends text encrypted with it.
func (c *olmClient) send(room id.RoomID, members []id.UserID, text string) {
	c.t.Helper()
	ctx := context.Background()
	if err := c.mach.ShareGroupSession(ctx, room, members); err != nil {
		c.t.Fatalf("%s sharing the group session: %v", c.u.id, err)
	}
	enc, err := c.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: text})
	if err != nil {
		c.t.Fatalf("%s encrypting: %v", c.u.id, err)
	}
	if _, err := c.u.cli.SendMessageEvent(ctx, room, event.EventEncrypted, enc); err != nil {
		c.t.Fatalf("%s sending: %v", c.u.id, err)
	}
}

// receive syncs until an encrypted message from sender shows up (bounded),
// and returns its decrypted body.
func (c *olmClient) receive(room id.RoomID, sender id.UserID) string {
	c.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	// The room key travels as a to-device message, which may arrive a sync
	// after the message itself (across servers they come in different
	// transactions): as clients do, decryption is retried when it does.
	var pending []*event.Event
	var lastErr error
	for time.Now().Before(deadline) {
		for _, ev := range append(pending, c.sync(room)...) {
			if ev.Type != event.EventEncrypted || ev.Sender != sender {
				continue
			}
			if ev.Content.Parsed == nil {
				if err := ev.Content.ParseRaw(ev.Type); err != nil {
					c.t.Fatalf("parsing encrypted event: %v", err)
				}
			}
			dec, err := c.mach.DecryptMegolmEvent(ctx, ev)
			if errors.Is(err, crypto.ErrNoSessionFound) {
				if !slices.Contains(pending, ev) {
					pending = append(pending, ev)
				}
				lastErr = err
				continue
			}
			if err != nil {
				c.t.Fatalf("%s decrypting %s's message: %v", c.u.id, sender, err)
			}
			msg, ok := dec.Content.Parsed.(*event.MessageEventContent)
			if !ok {
				c.t.Fatalf("decrypted content is %T", dec.Content.Parsed)
			}
			return msg.Body
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("%s got no message from %s (%v)", c.u.id, sender, lastErr)
	return ""
}

// TestOlmMachinesExchangeEncryptedMessages is the end-to-end test of the E2EE
// plumbing: two real clients upload device and one-time keys, claim each
// other's one-time keys, share Megolm sessions over Olm-encrypted to-device
// messages delivered by /sync, and each decrypts the other's message in an
// m.room.encryption room to the exact plaintext.
func TestOlmMachinesExchangeEncryptedMessages(t *testing.T) {
	if olm.Driver != "goolm" {
		t.Fatalf("olm driver is %q, want goolm", olm.Driver)
	}
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		room := encryptedRoom(t, alice, bob)
		var enc event.EncryptionEventContent
		if err := alice.cli.StateEvent(ctx, room, event.StateEncryption, "", &enc); err != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
			t.Fatalf("room is not an m.room.encryption room: %+v, %v", enc, err)
		}
		state := &roomStateStore{room: room, encryption: &enc}
		ac, bc := newOlmClient(t, alice, state), newOlmClient(t, bob, state)
		ac.sync(room)
		bc.sync(room)

		members := []id.UserID{alice.id, bob.id}
		const fromAlice = "Hello Bob — this is end-to-end encrypted 🔐"
		ac.send(room, members, fromAlice)
		if got := bc.receive(room, alice.id); got != fromAlice {
			t.Fatalf("bob decrypted %q, want %q", got, fromAlice)
		}
		const fromBob = "Hi Alice! Decrypted fine; here is mine."
		bc.send(room, members, fromBob)
		if got := ac.receive(room, bob.id); got != fromBob {
			t.Fatalf("alice decrypted %q, want %q", got, fromBob)
		}

		// Both to-device inboxes were emptied by the acknowledging syncs.
		ac.sync(room)
		bc.sync(room)
		var waiting int
		if err := s.DB.QueryRow(ctx, `SELECT COUNT(*) FROM to_device_messages`).Scan(&waiting); err != nil || waiting != 0 {
			t.Fatalf("%d to-device messages still stored (%v)", waiting, err)
		}
	})
}
