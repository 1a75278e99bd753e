package federationapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/federationapi"
	"hearth/roomserver"
)

// aliases is a DirectoryProvider over a map.
type aliases map[id.RoomAlias]id.RoomID

func (m aliases) ResolveLocalAlias(_ context.Context, alias id.RoomAlias) (id.RoomID, error) {
	if r, ok := m[alias]; ok {
		return r, nil
	}
	return "", federationapi.ErrNotFound
}

const waitTime = 10 * time.Second

func TestTwoServersChat(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		r := createRoom(t, a, "10", alice, "public")
		alias := id.RoomAlias("#lobby:" + aName)
		a.Federation.SetDirectory(aliases{alias: r.id})
		before := r.message(alice, "history before bob")

		// Bob on B joins the public room on A by its alias.
		roomID, err := b.Federation.JoinRemoteRoom(ctx, string(alias), bob, nil)
		if err != nil || roomID != r.id {
			t.Fatalf("JoinRemoteRoom = %s, %v", roomID, err)
		}
		if m := membership(t, b, r.id, bob); m != "join" {
			t.Fatalf("bob's membership on B = %s", m)
		}
		eventually(t, waitTime, "A to see bob join", func() bool { return membership(t, a, r.id, bob) == "join" })
		// B has the room's state, not its history.
		if m := membership(t, b, r.id, alice); m != "join" {
			t.Fatalf("alice's membership on B = %s", m)
		}
		if _, err := b.Roomserver.Event(ctx, before.Event.ID()); err == nil && hasEvent(b, before.Event.ID()) {
			t.Fatalf("history before the join is in B's timeline")
		}

		// Messages both ways.
		m1 := r.message(alice, "hello from A")
		eventually(t, waitTime, "A's message on B", func() bool { return hasEvent(b, m1.Event.ID()) })
		rb := &room{t: t, s: b, id: r.id}
		m2 := rb.message(bob, "hello from B")
		eventually(t, waitTime, "B's message on A", func() bool { return hasEvent(a, m2.Event.ID()) })

		// An edit and a redaction both ways.
		edit := rb.send(bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "* edited",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "edited"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": string(m2.Event.ID())}})
		eventually(t, waitTime, "B's edit on A", func() bool { return hasEvent(a, edit.Event.ID()) })
		_, err = a.Roomserver.SendEvent(ctx, r.id, roomserver.SendRequest{Type: "m.room.redaction", Sender: alice, Redacts: m1.Event.ID(), Content: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "the redaction applied on B", func() bool {
			e, err := b.Roomserver.Event(ctx, m1.Event.ID())
			return err == nil && e.RedactedBy != ""
		})
		redB, err := b.Roomserver.SendEvent(ctx, r.id, roomserver.SendRequest{Type: "m.room.redaction", Sender: bob, Redacts: m2.Event.ID(), Content: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "B's redaction applied on A", func() bool {
			e, err := a.Roomserver.Event(ctx, m2.Event.ID())
			return err == nil && e.RedactedBy == redB.Event.ID()
		})

		// A ban on A takes effect on B: bob can no longer send there.
		r.state(alice, "m.room.member", string(bob), map[string]any{"membership": "ban", "reason": "test"})
		eventually(t, waitTime, "the ban on B", func() bool { return membership(t, b, r.id, bob) == "ban" })
		if _, err := b.Roomserver.SendEvent(ctx, r.id, roomserver.SendRequest{Type: "m.room.message", Sender: bob, Content: []byte(`{"body":"x"}`)}); err == nil {
			t.Fatal("a banned user could still send on B")
		}

		// Alice invites carol of B to a private room; carol accepts by joining.
		carol := register(t, b, "carol")
		p := createRoom(t, a, "10", alice, "invite")
		inv, err := a.Roomserver.BuildEvent(ctx, p.id, roomserver.SendRequest{Type: "m.room.member", StateKey: sk(string(carol)), Sender: alice, Content: []byte(`{"membership":"invite"}`)})
		if err != nil {
			t.Fatal(err)
		}
		signed, err := a.Federation.InviteRemoteUser(ctx, inv)
		if err != nil {
			t.Fatalf("InviteRemoteUser: %v", err)
		}
		if len(signed.PDU().Signatures[bName]) == 0 {
			t.Fatal("the invite lacks B's signature")
		}
		if res, err := a.Roomserver.InputRemoteEvent(ctx, signed); err != nil || res.Rejected != nil {
			t.Fatalf("storing the invite: %+v, %v", res, err)
		}
		invites, err := b.Federation.PendingInvites(ctx, carol)
		if err != nil || len(invites) != 1 || invites[0].RoomID != p.id || invites[0].Sender != alice || len(invites[0].InviteRoomState) == 0 {
			t.Fatalf("pending invites on B = %+v, %v", invites, err)
		}
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(p.id), carol, []string{aName}); err != nil {
			t.Fatalf("carol joining the private room: %v", err)
		}
		eventually(t, waitTime, "carol's join on A", func() bool { return membership(t, a, p.id, carol) == "join" })
		// Dave of B, not invited, cannot join it.
		dave := register(t, b, "dave")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(p.id), dave, []string{aName}); err == nil {
			t.Fatal("an uninvited user joined a private room")
		}

		// Carol leaves from B; A sees it.
		pb := &room{t: t, s: b, id: p.id}
		pb.state(carol, "m.room.member", string(carol), map[string]any{"membership": "leave"})
		eventually(t, waitTime, "carol's leave on A", func() bool { return membership(t, a, p.id, carol) == "leave" })
		if gjson.Get(string(mustJSON(invites[0].Event)), "content.membership").Str == "" {
			t.Fatal("invite event without membership")
		}
	})
}

func TestQueueWhileDestinationIsDown(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		r := createRoom(t, a, "10", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{a.Config().ServerName}); err != nil {
			t.Fatal(err)
		}
		b.Stop()
		var sent []id.EventID
		for i := 0; i < 3; i++ {
			sent = append(sent, r.message(alice, "while B is down").Event.ID())
		}
		eventually(t, 3*waitTime, "the messages to be queued", func() bool {
			var n int
			err := a.DB.QueryRow(ctx, `SELECT COUNT(DISTINCT event_id) FROM federation_queue_pdus WHERE destination = $1 AND event_id IN ($2, $3, $4)`,
				b.Config().ServerName, string(sent[0]), string(sent[1]), string(sent[2])).Scan(&n)
			return err == nil && n == 3
		})
		time.Sleep(300 * time.Millisecond) // let A fail at least once
		// The queue survives a restart of A.
		a.Stop()
		a.Restart(t)
		b.Restart(t)
		for _, e := range sent {
			eventually(t, 30*time.Second, "queued messages on B after its return", func() bool { return hasEvent(b, e) })
		}
		eventually(t, waitTime, "the queue to drain", func() bool {
			var n int
			err := a.DB.QueryRow(ctx, `SELECT COUNT(*) FROM federation_queue_pdus`).Scan(&n)
			return err == nil && n == 0
		})
	})
}

func TestThreeServers(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b, c := start(), start(), start()
		ctx := context.Background()
		alice, bob, carol := register(t, a, "alice"), register(t, b, "bob"), register(t, c, "carol")
		r := createRoom(t, a, "11", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{a.Config().ServerName}); err != nil {
			t.Fatal(err)
		}
		rb := &room{t: t, s: b, id: r.id}
		early := rb.message(bob, "before carol")
		eventually(t, waitTime, "bob's message on A", func() bool { return hasEvent(a, early.Event.ID()) })
		// C joins late, through B: B relays C's join to A.
		if _, err := c.Federation.JoinRemoteRoom(ctx, string(r.id), carol, []string{b.Config().ServerName}); err != nil {
			t.Fatalf("C joining through B: %v", err)
		}
		eventually(t, waitTime, "carol's join on A", func() bool { return membership(t, a, r.id, carol) == "join" })
		eventually(t, waitTime, "carol's join on B", func() bool { return membership(t, b, r.id, carol) == "join" })
		// Everyone's messages reach everyone.
		rc := &room{t: t, s: c, id: r.id}
		for _, m := range []*roomserver.OutputEvent{r.message(alice, "from A"), rb.message(bob, "from B"), rc.message(carol, "from C")} {
			for _, s := range []*struct {
				name string
				srv  interface {
					Event(context.Context, id.EventID) (*roomserver.StoredEvent, error)
				}
			}{{"A", a.Roomserver}, {"B", b.Roomserver}, {"C", c.Roomserver}} {
				eventually(t, waitTime, "message on "+s.name, func() bool {
					e, err := s.srv.Event(ctx, m.Event.ID())
					return err == nil && !e.Outlier && !e.Rejected && !e.SoftFailed
				})
			}
		}
		// C can fetch the history it missed from A with /backfill.
		pdus := backfill(t, c, a, r.id, early.Event.ID())
		if !pdus[early.Event.ID()] {
			t.Fatalf("backfill from A lacks the early message: %v", pdus)
		}
	})
}
