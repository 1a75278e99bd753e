package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/roomserver"
	"hearth/storage/storagetest"
)

// syncBenchServer starts a server on SQLite (or, with HEARTH_BENCH_DB=postgres,
// on Postgres).
func syncBenchServer(b *testing.B) *testserver.Server {
	b.Helper()
	dsns := storagetest.DSNs(b)
	dsn := dsns["sqlite"]
	if os.Getenv("HEARTH_BENCH_DB") == "postgres" {
		if pg, ok := dsns["postgres"]; ok {
			dsn = pg
		}
	}
	s := testserver.Start(b, dsn)
	s.ClientAPI.Accounts().SetBcryptCost(4)
	return s
}

// syncBenchUser registers a user for a benchmark.
func syncBenchUser(b *testing.B, s *testserver.Server, name string) *user {
	b.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		b.Fatal(err)
	}
	r, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "pw-" + name})
	if err != nil {
		b.Fatalf("registering %s: %v", name, err)
	}
	cli.SetCredentials(r.UserID, r.AccessToken)
	cli.DeviceID = r.DeviceID
	return &user{id: r.UserID, token: r.AccessToken, device: string(r.DeviceID), cli: cli}
}

// rawSyncReq runs one /sync over a kept-alive connection and returns next_batch.
func rawSyncReq(b *testing.B, hc *http.Client, s *testserver.Server, u *user, since string, timeout int) string {
	req, _ := http.NewRequest("GET", s.URL+v3+"/sync?timeout="+strconv.Itoa(timeout)+"&since="+since, nil)
	req.Header.Set("Authorization", "Bearer "+u.token)
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("sync: %d %s", resp.StatusCode, body)
	}
	var out struct {
		NextBatch string `json:"next_batch"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		b.Fatal(err)
	}
	return out.NextBatch
}

func syncPercentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkSyncIncremental measures an incremental /sync with nothing new for
// a user in 20 rooms, over HTTP (goal: ≤ 0.5 ms at p50).
func BenchmarkSyncIncremental(b *testing.B) {
	s := syncBenchServer(b)
	alice := syncBenchUser(b, s, "alice")
	bob := syncBenchUser(b, s, "bob")
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		r, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.id}, Name: fmt.Sprint("room ", i)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, r.RoomID); err != nil {
			b.Fatal(err)
		}
		if _, err := alice.cli.SendText(ctx, r.RoomID, "hello"); err != nil {
			b.Fatal(err)
		}
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	since := rawSyncReq(b, hc, s, bob, "", 0)
	since = rawSyncReq(b, hc, s, bob, since, 0)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		since = rawSyncReq(b, hc, s, bob, since, 0)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(syncPercentile(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(syncPercentile(lat, 0.99).Microseconds()), "p99-µs")
}

// BenchmarkSyncWake measures how long after a message is committed the other
// member's long-polling /sync answers with it (goal: ≤ 1 ms at p50), and the
// whole send → answer time seen by the clients.
func BenchmarkSyncWake(b *testing.B) {
	s := syncBenchServer(b)
	alice := syncBenchUser(b, s, "alice")
	bob := syncBenchUser(b, s, "bob")
	ctx := context.Background()
	r, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.id}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bob.cli.JoinRoomByID(ctx, r.RoomID); err != nil {
		b.Fatal(err)
	}
	var commitMu sync.Mutex
	var committed time.Time
	s.Roomserver.AddListener(func(o roomserver.OutputEvent) {
		commitMu.Lock()
		committed = time.Now()
		commitMu.Unlock()
	})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	since := rawSyncReq(b, hc, s, bob, "", 0)
	wake := make([]time.Duration, 0, b.N)
	total := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		done := make(chan string, 1)
		go func() { done <- rawSyncReq(b, hc, s, bob, since, 30000) }()
		for !s.Sync.Waiting(bob.id) {
			time.Sleep(50 * time.Microsecond)
		}
		time.Sleep(200 * time.Microsecond) // let the request settle into its wait
		t0 := time.Now()
		if _, err := alice.cli.SendText(ctx, r.RoomID, "ping"); err != nil {
			b.Fatal(err)
		}
		since = <-done
		t1 := time.Now()
		commitMu.Lock()
		wake = append(wake, t1.Sub(committed))
		commitMu.Unlock()
		total = append(total, t1.Sub(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(syncPercentile(wake, 0.5).Microseconds()), "commit-to-answer-p50-µs")
	b.ReportMetric(float64(syncPercentile(wake, 0.99).Microseconds()), "commit-to-answer-p99-µs")
	b.ReportMetric(float64(syncPercentile(total, 0.5).Microseconds()), "send-to-answer-p50-µs")
}

// BenchmarkNotificationWork has 50 users chat in one room (20 messages each,
// sent concurrently) with one more member listening, and reports how long
// after the last send the push rule evaluation and count writes for the 50
// recipients of every message finish.
func BenchmarkNotificationWork(b *testing.B) {
	s := syncBenchServer(b)
	ctx := context.Background()
	users := make([]*user, 51)
	for i := range users {
		users[i] = syncBenchUser(b, s, fmt.Sprintf("u%02d", i))
	}
	r, err := users[0].cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	for _, u := range users[1:] {
		if _, err := u.cli.JoinRoomByID(ctx, r.RoomID); err != nil {
			b.Fatal(err)
		}
	}
	if !s.Sync.Settle(10 * time.Second) {
		b.Fatal("setup work did not settle")
	}
	const perUser = 20
	var settle, sendAll []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		var wg sync.WaitGroup
		for _, u := range users[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < perUser; j++ {
					if _, err := u.cli.SendText(ctx, r.RoomID, fmt.Sprintf("msg %d from %s", j, u.id)); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		sent := time.Now()
		if !s.Sync.Settle(time.Minute) {
			b.Fatal("notification work did not settle")
		}
		settle = append(settle, time.Since(sent))
		sendAll = append(sendAll, sent.Sub(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(syncPercentile(settle, 0.5).Microseconds())/1000, "settle-after-last-send-ms")
	b.ReportMetric(float64(syncPercentile(sendAll, 0.5).Milliseconds()), "send-1000-ms")
	// The listener (users[0], who sends nothing) has a notification for
	// every message; the senders' own messages read the room for them.
	var n int
	if err := s.DB.QueryRow(ctx, `SELECT COUNT(*) FROM sync_notifications WHERE user_id = $1`, string(users[0].id)).Scan(&n); err != nil {
		b.Fatal(err)
	}
	if want := 50 * perUser * b.N; n != want {
		b.Fatalf("the listener has %d notifications, want %d", n, want)
	}
}

// syncRSSKB reads the process's resident set size.
func syncRSSKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

func syncHeapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// BenchmarkSyncMemory reports resident memory of an idle server with two
// syncing users, and after 10,000 messages in their room. One run is one
// measurement (servers of earlier runs would still be in memory).
func BenchmarkSyncMemory(b *testing.B) {
	if b.N > 1 {
		b.Skip("measures one server: run with -benchtime 1x")
	}
	for i := 0; i < b.N; i++ {
		s := syncBenchServer(b)
		ctx := context.Background()
		alice := syncBenchUser(b, s, fmt.Sprint("alice", i))
		bob := syncBenchUser(b, s, fmt.Sprint("bob", i))
		r, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.id}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, r.RoomID); err != nil {
			b.Fatal(err)
		}
		hc := &http.Client{}
		since := rawSyncReq(b, hc, s, bob, "", 0)
		idleHeap, idleRSS := syncHeapMB(), syncRSSKB()
		for j := 0; j < 10_000; j++ {
			content := []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, j))
			if _, err := s.Roomserver.SendEvent(ctx, r.RoomID, roomserver.SendRequest{Type: "m.room.message", Sender: alice.id, Content: content}); err != nil {
				b.Fatal(err)
			}
		}
		s.Sync.Settle(time.Minute)
		rawSyncReq(b, hc, s, bob, since, 0)
		busyHeap, busyRSS := syncHeapMB(), syncRSSKB()
		b.ReportMetric(idleHeap, "idle-heap-MB")
		b.ReportMetric(float64(idleRSS)/1024, "idle-rss-MB")
		b.ReportMetric(busyHeap, "10k-heap-MB")
		b.ReportMetric(float64(busyRSS)/1024, "10k-rss-MB")
	}
}
