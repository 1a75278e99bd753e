package roomserver

import (
	"context"
	"errors"
	"math/rand"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestCreateSendAndQuery(t *testing.T) {
	for _, v := range []id.RoomVersion{"1", "6", "10", "11", "12"} {
		t.Run("v"+string(v), func(t *testing.T) {
			forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
				ctx := context.Background()
				alice, bob, eve := user("alice"), user("bob"), user("eve")
				room := newPublicRoom(t, rs, v, alice)
				room.join(bob)
				msg := room.message(bob, "hello")
				if msg.StreamPos <= 0 || rs.StreamPosition() < msg.StreamPos {
					t.Fatalf("stream pos %d, current %d", msg.StreamPos, rs.StreamPosition())
				}
				// A non-member cannot send (auth rules step "sender not joined").
				_, err := rs.SendEvent(ctx, room.id, SendRequest{Type: "m.room.message", Sender: eve, Content: []byte(`{"body":"x"}`)})
				var na *NotAllowedError
				if !errors.As(err, &na) {
					t.Fatalf("non-member send: %v, want NotAllowedError", err)
				}
				// Bob (PL 0) cannot change the name (needs 50).
				_, err = rs.SendEvent(ctx, room.id, SendRequest{Type: "m.room.name", StateKey: sk(""), Sender: bob, Content: []byte(`{"name":"x"}`)})
				if !errors.As(err, &na) {
					t.Fatalf("unprivileged name change: %v", err)
				}
				m, _, err := rs.Membership(ctx, room.id, bob)
				if err != nil || m != "join" {
					t.Fatalf("membership = %q, %v", m, err)
				}
				rooms, err := rs.RoomsForUser(ctx, bob, "join")
				if err != nil || len(rooms) != 1 || rooms[0] != room.id {
					t.Fatalf("rooms for bob = %v, %v", rooms, err)
				}
				room.state(bob, "m.room.member", string(bob), map[string]any{"membership": "leave"})
				if m, _, _ := rs.Membership(ctx, room.id, bob); m != "leave" {
					t.Fatalf("after leave membership = %q", m)
				}
				cur, err := rs.CurrentState(ctx, room.id)
				if err != nil {
					t.Fatal(err)
				}
				ids := stateIDs(cur)
				for _, k := range []string{"m.room.create|", "m.room.power_levels|", "m.room.join_rules|", "m.room.member|" + string(alice), "m.room.member|" + string(bob)} {
					if ids[k] == "" {
						t.Errorf("current state lacks %s", k)
					}
				}
				// Timeline pagination both ways returns the same events.
				back, _, err := rs.Messages(ctx, room.id, TopoPos{}, Backward, 100)
				if err != nil {
					t.Fatal(err)
				}
				fwd, _, err := rs.Messages(ctx, room.id, TopoPos{}, Forward, 100)
				if err != nil {
					t.Fatal(err)
				}
				if len(back) != 7 || len(fwd) != 7 || back[0].ID() != fwd[6].ID() || fwd[0].Type() != "m.room.create" {
					t.Fatalf("pagination: %d back, %d fwd", len(back), len(fwd))
				}
				// Paging in small steps visits every event once.
				var seen []id.EventID
				var pos TopoPos
				for {
					page, next, err := rs.Messages(ctx, room.id, pos, Backward, 2)
					if err != nil {
						t.Fatal(err)
					}
					if len(page) == 0 {
						break
					}
					for _, e := range page {
						seen = append(seen, e.ID())
					}
					pos = next
				}
				if len(seen) != 7 || seen[0] != back[0].ID() || seen[6] != back[6].ID() {
					t.Fatalf("stepwise pagination saw %d events", len(seen))
				}
				// A fresh engine on the same database sees the same room.
				rs2, err := New(ctx, rs.db, testServer, rs.key)
				if err != nil {
					t.Fatal(err)
				}
				cur2, err := rs2.CurrentState(ctx, room.id)
				if err != nil {
					t.Fatal(err)
				}
				if err := diffStates(ids, stateIDs(cur2)); err != nil {
					t.Fatalf("reloaded state differs: %v", err)
				}
				if rs2.StreamPosition() != rs.StreamPosition() {
					t.Fatalf("reloaded stream position %d != %d", rs2.StreamPosition(), rs.StreamPosition())
				}
				out := room.message(alice, "after reload via old engine")
				if out.Event.Depth() != 8 {
					t.Fatalf("depth = %d, want 8", out.Event.Depth())
				}
			})
		})
	}
}

func TestRedactionApplied(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		alice, bob := user("alice"), user("bob")
		room := newPublicRoom(t, rs, "10", alice)
		room.join(bob)
		msg := room.message(bob, "oops")
		out, err := rs.SendEvent(ctx, room.id, SendRequest{Type: "m.room.redaction", Sender: alice, Content: []byte(`{}`), Redacts: msg.Event.ID()})
		if err != nil {
			t.Fatal(err)
		}
		e, err := rs.Event(ctx, msg.Event.ID())
		if err != nil {
			t.Fatal(err)
		}
		if e.RedactedBy != out.Event.ID() {
			t.Fatalf("redacted_by = %q, want %s", e.RedactedBy, out.Event.ID())
		}
	})
}

// TestLargeRoomStateMatchesReplay builds a room with 1,000 members and 10,000 events
// through the input path and checks the state at arbitrary events against a naive
// full replay of the timeline.
func TestLargeRoomStateMatchesReplay(t *testing.T) {
	members, total := 1000, 10000
	if testing.Short() {
		members, total = 100, 1000
	}
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		alice := user("alice")
		room := newPublicRoom(t, rs, "10", alice)
		rng := rand.New(rand.NewSource(1))
		var order []*OutputEvent
		users := []id.UserID{alice}
		for len(order) < total-4 {
			var out *OutputEvent
			switch {
			case len(users) < members && rng.Intn(10) < 2:
				u := user("u" + itoa(len(users)))
				users = append(users, u)
				out = room.join(u)
			case rng.Intn(20) == 0:
				out = room.state(alice, "m.room.topic", "", map[string]any{"topic": "t" + itoa(len(order))})
			case rng.Intn(30) == 0:
				u := users[rng.Intn(len(users))]
				out = room.state(u, "m.room.member", string(u), map[string]any{"membership": "join", "displayname": "n" + itoa(len(order))})
			default:
				out = room.message(users[rng.Intn(len(users))], "m")
			}
			order = append(order, out)
		}
		for len(users) < members { // make sure all members joined
			u := user("u" + itoa(len(users)))
			users = append(users, u)
			order = append(order, room.join(u))
		}
		// Replay from the start of the timeline (the initial events included).
		all, _, err := rs.Messages(ctx, room.id, TopoPos{}, Forward, total+len(users)+10)
		if err != nil {
			t.Fatal(err)
		}
		replay := map[string]id.EventID{}
		checkAt := map[int]bool{}
		for i := 0; i < 40; i++ {
			checkAt[rng.Intn(len(all))] = true
		}
		checkAt[len(all)-1] = true
		for i, e := range all {
			if sk := e.StateKey(); sk != nil {
				replay[e.Type()+"|"+*sk] = e.ID()
			}
			if !checkAt[i] {
				continue
			}
			got, err := rs.StateAtEvent(ctx, e.ID(), true)
			if err != nil {
				t.Fatal(err)
			}
			if err := diffStates(replay, stateIDs(got)); err != nil {
				t.Fatalf("state after event #%d (%s): %v", i, e.ID(), err)
			}
		}
		cur, err := rs.CurrentState(ctx, room.id)
		if err != nil {
			t.Fatal(err)
		}
		if err := diffStates(replay, stateIDs(cur)); err != nil {
			t.Fatalf("current state: %v", err)
		}
		joined, err := rs.Members(ctx, room.id, "join")
		if err != nil || len(joined) != members {
			t.Fatalf("joined members = %d, %v; want %d", len(joined), err, members)
		}
	})
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for i > 0 {
		b = append([]byte{digits[i%10]}, b...)
		i /= 10
	}
	return string(b)
}

func TestUnknownRoomsDoNotGrowMemory(t *testing.T) {
	forEachRoomserver(t, func(t *testing.T, rs *Roomserver) {
		ctx := context.Background()
		for i := 0; i < 100; i++ {
			if _, err := rs.CurrentState(ctx, id.RoomID("!nope"+itoa(i)+":hs.test")); !errors.Is(err, ErrRoomNotFound) {
				t.Fatalf("unknown room: %v", err)
			}
		}
		rs.roomsMu.Lock()
		n := len(rs.rooms)
		rs.roomsMu.Unlock()
		if n != 0 {
			t.Fatalf("%d unknown rooms kept in memory", n)
		}
	})
}
