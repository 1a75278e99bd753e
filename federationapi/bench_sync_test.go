package federationapi_test

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"hearth/internal/testserver"
)

// BenchmarkSendToRemoteSync measures what a user sees: the time from a message
// sent through the client API on A to its arrival in a /sync long poll of a user
// on B, over federation (TLS on loopback), one message at a time. It reports the
// median and 90th percentile (issue 7's goal: p50 ≤ 5 ms).
func BenchmarkSendToRemoteSync(b *testing.B) {
	ctx := context.Background()
	sa := testserver.Start(b, filepath.Join(b.TempDir(), "a.db"), testserver.Federated)
	sb := testserver.Start(b, filepath.Join(b.TempDir(), "b.db"), testserver.Federated)
	alice, bob := clientOf(b, sa, "alice"), clientOf(b, sb, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := bob.JoinRoom(ctx, string(roomID), &mautrix.ReqJoinRoom{Via: []string{sa.Config().ServerName}}); err != nil {
		b.Fatal(err)
	}
	first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		b.Fatal(err)
	}
	// Bob long-polls without pause and reports each message's body on arrival.
	arrived := make(chan string, 1024)
	pollCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		since := first.NextBatch
		for pollCtx.Err() == nil {
			resp, err := bob.SyncRequest(pollCtx, 30000, since, "", false, "")
			if err != nil {
				continue
			}
			since = resp.NextBatch
			if jr := resp.Rooms.Join[roomID]; jr != nil {
				for _, e := range jr.Timeline.Events {
					if e.Type == event.EventMessage {
						_ = e.Content.ParseRaw(e.Type)
						arrived <- e.Content.AsMessage().Body
					}
				}
			}
		}
	}()
	send := func(body string) time.Duration {
		start := time.Now()
		if _, err := alice.SendText(ctx, roomID, body); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
		for {
			select {
			case got := <-arrived:
				if got == body {
					return time.Since(start)
				}
			case <-timeout:
				b.Fatalf("%q did not reach bob's /sync", body)
			}
		}
	}
	for i := range 5 { // warm up connections and caches
		send("warm-up " + strconv.Itoa(i))
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, send("ping "+strconv.Itoa(i)))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
}
