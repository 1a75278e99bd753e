package federationapi_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestPagingBackfillsAsNeeded: a user of B pages back through /messages in a
// room of A with pages larger than one /backfill answer (100 events), and,
// after leaving and rejoining, through the hole the rejoin leaves in B's copy
// of the room (the new join cites events B never had). Every page either
// continues (an end token) or reaches the create event, and the history comes
// back whole and in order.
func TestPagingBackfillsAsNeeded(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice := register(t, a, "alice")
		bob := clientOf(t, b, "bob")
		r := createRoom(t, a, "10", alice, "public")
		var sent []string // bodies, oldest first
		say := func(n int) {
			for range n {
				body := fmt.Sprintf("message %d", len(sent))
				r.message(alice, body)
				sent = append(sent, body)
			}
		}
		// page collects the message bodies of the whole room, newest first,
		// paging back with limit.
		page := func(limit int) []string {
			t.Helper()
			var bodies []string
			from := ""
			for range 100 {
				resp, err := bob.Messages(ctx, r.id, from, "", mautrix.DirectionBackward, nil, limit)
				if err != nil {
					t.Fatalf("/messages from %q: %v", from, err)
				}
				for _, e := range resp.Chunk {
					if e.Type == event.EventMessage {
						bodies = append(bodies, e.Content.Raw["body"].(string))
					}
				}
				if resp.End == "" {
					if n := len(resp.Chunk); n == 0 || resp.Chunk[n-1].Type != event.StateCreate {
						t.Fatalf("pagination ended without the create event (limit %d, %d messages)", limit, len(bodies))
					}
					return bodies
				}
				from = resp.End
			}
			t.Fatal("pagination did not end")
			return nil
		}
		newestFirst := func() []string {
			want := slices.Clone(sent)
			slices.Reverse(want)
			return want
		}

		say(230)
		if _, err := bob.JoinRoom(ctx, string(r.id), &mautrix.ReqJoinRoom{Via: []string{aName}}); err != nil {
			t.Fatal(err)
		}
		if got := page(150); !slices.Equal(got, newestFirst()) {
			t.Fatalf("history after joining: %d messages, want %d\n got %q", len(got), len(sent), got)
		}

		if _, err := bob.LeaveRoom(ctx, r.id); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTime, "bob's leave on A", func() bool { return membership(t, a, r.id, bob.UserID) == "leave" })
		say(25)
		if _, err := bob.JoinRoom(ctx, string(r.id), &mautrix.ReqJoinRoom{Via: []string{aName}}); err != nil {
			t.Fatal(err)
		}
		if got := page(10); !slices.Equal(got, newestFirst()) {
			t.Fatalf("history after rejoining: %d messages, want %d\n got %q", len(got), len(sent), got)
		}
	})
}
