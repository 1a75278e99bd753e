package roomserver

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/storage"
	"hearth/storage/storagetest"
)

func benchDB(b *testing.B, name string) *storage.DB {
	b.Helper()
	dsn := filepath.Join(b.TempDir(), "bench.db")
	if name == "postgres" {
		d, ok := storagetest.DSNs(b)["postgres"]
		if !ok {
			b.Skip("HEARTH_TEST_POSTGRES not set")
		}
		dsn = d
	}
	db, err := storage.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkSendEventOneRoom: sequential message sends into one room through the full
// input path (build, sign, auth, persist, notify).
func BenchmarkSendEventOneRoom(b *testing.B) {
	for _, dbName := range []string{"sqlite", "postgres"} {
		b.Run(dbName, func(b *testing.B) {
			rs := newTestRoomserver(b, benchDB(b, dbName))
			room := newPublicRoom(b, rs, "10", user("alice"))
			content := []byte(`{"msgtype":"m.text","body":"hello"}`)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := rs.SendEvent(ctx, room.id, SendRequest{Type: "m.room.message", Sender: user("alice"), Content: content}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkSendEvent50Rooms: 50 rooms written concurrently, one writer per room.
func BenchmarkSendEvent50Rooms(b *testing.B) {
	for _, dbName := range []string{"sqlite", "postgres"} {
		b.Run(dbName, func(b *testing.B) {
			rs := newTestRoomserver(b, benchDB(b, dbName))
			rooms := make([]*testRoom, 50)
			for i := range rooms {
				rooms[i] = newPublicRoom(b, rs, "10", user("alice"))
			}
			content := []byte(`{"msgtype":"m.text","body":"hello"}`)
			ctx := context.Background()
			var next atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for i := range rooms {
				wg.Add(1)
				go func(room *testRoom) {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := rs.SendEvent(ctx, room.id, SendRequest{Type: "m.room.message", Sender: user("alice"), Content: content}); err != nil {
							b.Error(err)
							return
						}
					}
				}(rooms[i])
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkStateStorage builds a room of 1,000 members (plus profile changes) and
// reports the state-snapshot rows and, on Postgres, bytes stored per state event.
func BenchmarkStateStorage(b *testing.B) {
	for _, dbName := range []string{"sqlite", "postgres"} {
		b.Run(dbName, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				db := benchDB(b, dbName)
				rs := newTestRoomserver(b, db)
				alice := user("alice")
				room := newPublicRoom(b, rs, "10", alice)
				var users []id.UserID
				for j := 0; j < 1000; j++ {
					u := user("u" + itoa(j))
					users = append(users, u)
					room.join(u)
				}
				for j := 0; j < 1000; j++ {
					u := users[j]
					room.state(u, "m.room.member", string(u), map[string]any{"membership": "join", "displayname": "n" + itoa(j)})
				}
				ctx := context.Background()
				var stateEvents, rows int64
				_ = db.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE state_key IS NOT NULL`).Scan(&stateEvents)
				_ = db.QueryRow(ctx, `SELECT COUNT(*) FROM state_snapshot_entries`).Scan(&rows)
				b.ReportMetric(float64(rows)/float64(stateEvents), "snapshot-rows/state-event")
				if dbName == "postgres" {
					var bytes int64
					_ = db.QueryRow(ctx, `SELECT pg_total_relation_size('state_snapshot_entries') + pg_total_relation_size('state_snapshots')`).Scan(&bytes)
					b.ReportMetric(float64(bytes)/float64(stateEvents), "state-bytes/state-event")
				}
			}
		})
	}
}
