package federationapi_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/roomserver"
)

// BenchmarkSendToRemote measures the time from a message sent on A to the event
// stored on B (its room engine's listener firing), over TLS on loopback, one
// message at a time. It reports the median and 90th percentile.
func BenchmarkSendToRemote(b *testing.B) {
	ctx := context.Background()
	sa := testserver.Start(b, filepath.Join(b.TempDir(), "a.db"), testserver.Federated)
	sb := testserver.Start(b, filepath.Join(b.TempDir(), "b.db"), testserver.Federated)
	alice := id.UserID("@alice:" + sa.Config().ServerName)
	bob := id.UserID("@bob:" + sb.Config().ServerName)
	roomID, _, err := sa.Roomserver.CreateRoom(ctx, "10", alice, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, req := range []roomserver.SendRequest{
		{Type: "m.room.member", StateKey: sk(string(alice)), Sender: alice, Content: []byte(`{"membership":"join"}`)},
		{Type: "m.room.join_rules", StateKey: sk(""), Sender: alice, Content: []byte(`{"join_rule":"public"}`)},
	} {
		if _, err := sa.Roomserver.SendEvent(ctx, roomID, req); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := sb.Federation.JoinRemoteRoom(ctx, string(roomID), bob, []string{sa.Config().ServerName}); err != nil {
		b.Fatal(err)
	}
	arrived := make(chan id.EventID, 1024)
	sb.Roomserver.AddListener(func(o roomserver.OutputEvent) {
		if o.Event.Sender() == alice && o.Event.Type() == "m.room.message" {
			arrived <- o.Event.ID()
		}
	})
	msg := roomserver.SendRequest{Type: "m.room.message", Sender: alice, Content: []byte(`{"msgtype":"m.text","body":"ping"}`)}
	// Warm up connections and caches.
	for i := 0; i < 5; i++ {
		out, err := sa.Roomserver.SendEvent(ctx, roomID, msg)
		if err != nil {
			b.Fatal(err)
		}
		waitFor(b, arrived, out.Event.ID())
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		out, err := sa.Roomserver.SendEvent(ctx, roomID, msg)
		if err != nil {
			b.Fatal(err)
		}
		waitFor(b, arrived, out.Event.ID())
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
}

func waitFor(b *testing.B, ch <-chan id.EventID, want id.EventID) {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-timeout:
			b.Fatalf("event %s did not arrive", want)
		}
	}
}

// BenchmarkJoinLargeRoom measures a remote join of a room with 1000 members:
// make_join, send_join, checking and storing the state and auth chain.
func BenchmarkJoinLargeRoom(b *testing.B) {
	ctx := context.Background()
	sa := testserver.Start(b, filepath.Join(b.TempDir(), "a.db"), testserver.Federated)
	alice := id.UserID("@alice:" + sa.Config().ServerName)
	roomID, _, err := sa.Roomserver.CreateRoom(ctx, "10", alice, nil)
	if err != nil {
		b.Fatal(err)
	}
	send := func(req roomserver.SendRequest) {
		if _, err := sa.Roomserver.SendEvent(ctx, roomID, req); err != nil {
			b.Fatal(err)
		}
	}
	send(roomserver.SendRequest{Type: "m.room.member", StateKey: sk(string(alice)), Sender: alice, Content: []byte(`{"membership":"join"}`)})
	send(roomserver.SendRequest{Type: "m.room.join_rules", StateKey: sk(""), Sender: alice, Content: []byte(`{"join_rule":"public"}`)})
	const members = 1000
	for i := 0; i < members; i++ {
		u := id.UserID(fmt.Sprintf("@user%d:%s", i, sa.Config().ServerName))
		send(roomserver.SendRequest{Type: "m.room.member", StateKey: sk(string(u)), Sender: u, Content: []byte(`{"membership":"join"}`)})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sb := testserver.Start(b, filepath.Join(b.TempDir(), fmt.Sprintf("b%d.db", i)), testserver.Federated)
		bob := id.UserID("@bob:" + sb.Config().ServerName)
		b.StartTimer()
		if _, err := sb.Federation.JoinRemoteRoom(ctx, string(roomID), bob, []string{sa.Config().ServerName}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if n, err := sb.Roomserver.Members(ctx, roomID, "join"); err != nil || len(n) != members+2 {
			b.Fatalf("members on B: %d, %v", len(n), err)
		}
		sb.Stop()
		b.StartTimer()
	}
}
