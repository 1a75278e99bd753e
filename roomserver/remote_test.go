package roomserver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver/events"
	"hearth/storage"
	"hearth/storage/storagetest"
)

const remoteServer = "remote.test"

// remoteBuilder makes events as another server would.
type remoteBuilder struct {
	t   *testing.T
	key *config.SigningKey
	rv  id.RoomVersion
}

func newRemote(t *testing.T, rv id.RoomVersion) *remoteBuilder {
	k, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return &remoteBuilder{t: t, key: k, rv: rv}
}

func (rb *remoteBuilder) build(roomID id.RoomID, sender id.UserID, evType string, stateKey *string, content any, prevs []*events.Event, auths []id.EventID) *events.Event {
	rb.t.Helper()
	depth := int64(0)
	var prevIDs []id.EventID
	for _, p := range prevs {
		prevIDs = append(prevIDs, p.ID())
		if p.Depth() > depth {
			depth = p.Depth()
		}
	}
	ev, err := events.Build(rb.rv, events.ProtoEvent{
		Type: evType, StateKey: stateKey, Sender: sender, RoomID: roomID, Content: mustJSON(content),
		PrevEvents: prevIDs, AuthEvents: auths, Depth: depth + 1,
	}, remoteServer, id.KeyID(rb.key.ID), rb.key.PrivateKey)
	if err != nil {
		rb.t.Fatal(err)
	}
	return ev
}

func authIDsFor(t *testing.T, rs *Roomserver, roomID id.RoomID, pairs ...[2]string) []id.EventID {
	t.Helper()
	var out []id.EventID
	for _, p := range pairs {
		e, err := rs.CurrentStateEvent(context.Background(), roomID, p[0], p[1])
		if err != nil || e == nil {
			t.Fatalf("no current %s/%s: %v", p[0], p[1], err)
		}
		out = append(out, e.ID())
	}
	return out
}

func TestRemoteInputForksSoftFailAndRejection(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		alice := user("alice")
		bob := id.UserID("@bob:" + remoteServer)
		carol := id.UserID("@carol:" + remoteServer)
		room := newPublicRoom(t, rs, "10", alice)
		rb := newRemote(t, "10")
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
		// Bob joins over federation.
		join := rb.build(room.id, bob, "m.room.member", sk(string(bob)), map[string]any{"membership": "join"}, []*events.Event{head()}, base)
		res, err := rs.InputRemoteEvent(ctx, join)
		if err != nil || res.Rejected != nil || res.SoftFailed != nil || res.Output == nil {
			t.Fatalf("remote join: %+v %v", res, err)
		}
		if m, _, _ := rs.Membership(ctx, room.id, bob); m != "join" {
			t.Fatalf("bob membership %q", m)
		}
		// Duplicate input is recognised.
		if res, err := rs.InputRemoteEvent(ctx, join); err != nil || !res.Duplicate {
			t.Fatalf("duplicate: %+v %v", res, err)
		}
		bobAuth := append(authIDsFor(t, rs, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""}), join.ID())

		// A fork: alice (locally) and bob (remotely) both send after the join.
		local := room.message(alice, "local branch")
		remoteMsg := rb.build(room.id, bob, "m.room.message", nil, map[string]any{"body": "remote branch"}, []*events.Event{join}, bobAuth)
		if res, err := rs.InputRemoteEvent(ctx, remoteMsg); err != nil || res.Output == nil || res.SoftFailed != nil {
			t.Fatalf("remote fork: %+v %v", res, err)
		}
		exts, _ := rs.ForwardExtremities(ctx, room.id)
		if len(exts) != 2 {
			t.Fatalf("extremities after fork = %v", exts)
		}
		// The next local event references both and merges the fork.
		merge := room.message(alice, "merge")
		if got := merge.Event.PrevEventIDs(); len(got) != 2 {
			t.Fatalf("merge prev_events = %v", got)
		}
		_ = local

		// Alice bans bob; bob then sends from before the ban: passes the state
		// before it (step 5) but fails current state (step 6): soft-failed.
		room.state(alice, "m.room.member", string(bob), map[string]any{"membership": "ban"})
		late := rb.build(room.id, bob, "m.room.message", nil, map[string]any{"body": "sneaky"}, []*events.Event{remoteMsg}, bobAuth)
		res, err = rs.InputRemoteEvent(ctx, late)
		if err != nil || res.SoftFailed == nil || res.Rejected != nil {
			t.Fatalf("late event: %+v %v; want soft-failed", res, err)
		}
		exts, _ = rs.ForwardExtremities(ctx, room.id)
		for _, x := range exts {
			if x == late.ID() {
				t.Fatal("soft-failed event became a forward extremity")
			}
		}
		back, _, _ := rs.Messages(ctx, room.id, TopoPos{}, Backward, 50)
		for _, e := range back {
			if e.ID() == late.ID() {
				t.Fatal("soft-failed event in the timeline")
			}
		}
		if e, err := rs.Event(ctx, late.ID()); err != nil || !e.SoftFailed {
			t.Fatalf("soft-failed event not stored as such: %v", err)
		}

		// Carol never joined: her message fails against the state before it: rejected.
		carolMsg := rb.build(room.id, carol, "m.room.message", nil, map[string]any{"body": "hi"}, []*events.Event{head()}, authIDsFor(t, rs, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""}))
		res, err = rs.InputRemoteEvent(ctx, carolMsg)
		if err != nil || res.Rejected == nil {
			t.Fatalf("carol's message: %+v %v; want rejected", res, err)
		}
		if e, err := rs.Event(ctx, carolMsg.ID()); err != nil || !e.Rejected {
			t.Fatalf("rejected event not stored as rejected: %v", err)
		}

		// Unknown prev events: nothing stored, the caller is told what to fetch.
		ghost := rb.build(room.id, bob, "m.room.message", nil, map[string]any{"body": "?"}, nil, bobAuth)
		ghostJSON := ghost
		orphan := rb.build(room.id, bob, "m.room.message", nil, map[string]any{"body": "orphan"}, []*events.Event{ghostJSON}, bobAuth)
		_, err = rs.InputRemoteEvent(ctx, orphan)
		var me *MissingEventsError
		if !errors.As(err, &me) || len(me.PrevEvents) != 1 || me.PrevEvents[0] != ghost.ID() {
			t.Fatalf("orphan: %v; want missing prev %s", err, ghost.ID())
		}
		if _, err := rs.Event(ctx, orphan.ID()); !errors.Is(err, ErrEventNotFound) {
			t.Fatalf("orphan was stored: %v", err)
		}
	})
}

// TestRemoteForkResolvesState: two remote branches change the topic concurrently; the
// current state is their resolved state, whichever branch arrives first. The same
// room is replayed into two fresh engines that receive the fork in opposite orders.
func TestRemoteForkResolvesState(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newTestRoomserver(t, db)
		alice := user("alice")
		bob := id.UserID("@bob:" + remoteServer)
		room := newPublicRoom(t, rs, "10", alice)
		room.state(alice, "m.room.power_levels", "", map[string]any{"users": map[string]any{string(alice): 100, string(bob): 50}})
		rb := newRemote(t, "10")
		exts, _ := rs.ForwardExtremities(ctx, room.id)
		h, _ := rs.Event(ctx, exts[0])
		base := authIDsFor(t, rs, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""}, [2]string{"m.room.join_rules", ""})
		join := rb.build(room.id, bob, "m.room.member", sk(string(bob)), map[string]any{"membership": "join"}, []*events.Event{h.Event}, base)
		auth := append(authIDsFor(t, rs, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""}), join.ID())
		a := rb.build(room.id, bob, "m.room.topic", sk(""), map[string]any{"topic": "A"}, []*events.Event{join}, auth)
		b := rb.build(room.id, bob, "m.room.topic", sk(""), map[string]any{"topic": "B"}, []*events.Event{join}, auth)
		history, _, err := rs.Messages(ctx, room.id, TopoPos{}, Forward, 100)
		if err != nil {
			t.Fatal(err)
		}
		winners := map[string]id.EventID{}
		for _, order := range []string{"ab", "ba"} {
			// A fresh engine on a fresh database learns the room over "federation".
			dsns := storagetest.DSNs(t)
			db2, err := storage.Open(ctx, dsns["sqlite"])
			if err != nil {
				t.Fatal(err)
			}
			defer db2.Close()
			rs2 := newTestRoomserver(t, db2)
			if err := rs2.EnsureRoom(ctx, room.id, "10"); err != nil {
				t.Fatal(err)
			}
			seq := append([]*events.Event{}, eventsOf(history)...)
			seq = append(seq, join)
			if order == "ab" {
				seq = append(seq, a, b)
			} else {
				seq = append(seq, b, a)
			}
			for _, e := range seq {
				res, err := rs2.InputRemoteEvent(ctx, e)
				if err != nil || res.Rejected != nil || res.SoftFailed != nil {
					t.Fatalf("%s: input %s (%s): %+v %v", order, e.ID(), e.Type(), res, err)
				}
			}
			topic, err := rs2.CurrentStateEvent(ctx, room.id, "m.room.topic", "")
			if err != nil || topic == nil {
				t.Fatalf("no topic: %v", err)
			}
			winners[order] = topic.ID()
			if exts, _ := rs2.ForwardExtremities(ctx, room.id); len(exts) != 2 {
				t.Fatalf("extremities = %v", exts)
			}
		}
		if winners["ab"] != winners["ba"] {
			t.Fatalf("resolution depends on arrival order: %v", winners)
		}
	})
}

func eventsOf(s []*StoredEvent) []*events.Event {
	out := make([]*events.Event, len(s))
	for i, e := range s {
		out[i] = e.Event
	}
	return out
}

// TestRedactionBeforeItsTarget has redactions arrive before the events they
// redact: each waits and is applied when its target is stored, if it may
// apply then (room v3+ "Handling redactions").
func TestRedactionBeforeItsTarget(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		alice, dave := user("alice"), user("dave")
		bob := id.UserID("@bob:" + remoteServer)
		room := newPublicRoom(t, rs, "10", alice)
		room.join(dave) // local, power 0
		rb := newRemote(t, "10")
		base := authIDsFor(t, rs, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""}, [2]string{"m.room.join_rules", ""})
		join := rb.build(room.id, bob, "m.room.member", sk(string(bob)), map[string]any{"membership": "join"}, []*events.Event{room.message(alice, "hi").Event}, base)
		if res, err := rs.InputRemoteEvent(ctx, join); err != nil || res.Rejected != nil {
			t.Fatalf("bob's join: %+v %v", res, err)
		}
		bobAuth := append(authIDsFor(t, rs, room.id, [2]string{"m.room.create", ""}, [2]string{"m.room.power_levels", ""}), join.ID())

		tests := []struct {
			name   string
			redact func(t *testing.T, target id.EventID) id.EventID // sends the redaction, returns its ID
			want   bool                                             // the redaction applies
		}{
			{"by the sender's server", func(t *testing.T, target id.EventID) id.EventID {
				red, err := events.Build("10", events.ProtoEvent{
					Type: "m.room.redaction", Sender: bob, RoomID: room.id, Content: []byte(`{}`), Redacts: &target,
					PrevEvents: []id.EventID{join.ID()}, AuthEvents: bobAuth, Depth: join.Depth() + 1,
				}, remoteServer, id.KeyID(rb.key.ID), rb.key.PrivateKey)
				if err != nil {
					t.Fatal(err)
				}
				if res, err := rs.InputRemoteEvent(ctx, red); err != nil || res.Rejected != nil || res.SoftFailed != nil {
					t.Fatalf("redaction: %+v %v", res, err)
				}
				return red.ID()
			}, true},
			{"by a moderator", func(t *testing.T, target id.EventID) id.EventID {
				out, err := rs.SendEvent(ctx, room.id, SendRequest{Type: "m.room.redaction", Sender: alice, Content: []byte(`{}`), Redacts: target})
				if err != nil {
					t.Fatal(err)
				}
				return out.Event.ID()
			}, true},
			{"by a user without the power", func(t *testing.T, target id.EventID) id.EventID {
				out, err := rs.SendEvent(ctx, room.id, SendRequest{Type: "m.room.redaction", Sender: dave, Content: []byte(`{}`), Redacts: target})
				if err != nil {
					t.Fatal(err)
				}
				return out.Event.ID()
			}, false},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// bob's message, built on his join but not yet delivered.
				msg := rb.build(room.id, bob, "m.room.message", nil, map[string]any{"body": fmt.Sprintf("secret %d", i)}, []*events.Event{join}, bobAuth)
				redID := tt.redact(t, msg.ID())
				if res, err := rs.InputRemoteEvent(ctx, msg); err != nil || res.Rejected != nil {
					t.Fatalf("target: %+v %v", res, err)
				}
				stored, err := rs.Event(ctx, msg.ID())
				if err != nil {
					t.Fatal(err)
				}
				if applied := stored.RedactedBy == redID; applied != tt.want {
					t.Fatalf("RedactedBy = %q, want applied %v (%s)", stored.RedactedBy, tt.want, redID)
				}
				// The store agrees with the cache.
				rs.events.drop(stored)
				if again, err := rs.Event(ctx, msg.ID()); err != nil || again.RedactedBy != stored.RedactedBy {
					t.Fatalf("reloaded: %+v, %v", again, err)
				}
			})
		}
	})
}
