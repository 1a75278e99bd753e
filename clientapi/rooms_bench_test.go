package clientapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi"
	"hearth/internal/testserver"
	"hearth/roomserver"
	"hearth/storage/storagetest"
)

// rtBenchClient is a keep-alive HTTP client for the send benchmarks.
var rtBenchClient = &http.Client{Transport: &http.Transport{MaxIdleConns: 200, MaxIdleConnsPerHost: 200}}

// rtBenchUser registers a user and creates a room for it.
func rtBenchUser(b *testing.B, s *testserver.Server, name string) (token string, roomID id.RoomID) {
	b.Helper()
	ctx := context.Background()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		b.Fatal(err)
	}
	r, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "pw-" + name})
	if err != nil {
		b.Fatal(err)
	}
	cli.SetCredentials(r.UserID, r.AccessToken)
	room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		b.Fatal(err)
	}
	return r.AccessToken, room.RoomID
}

// rtBenchSend sends one message over HTTP.
func rtBenchSend(base, token string, roomID id.RoomID, txn string, body []byte) error {
	req, err := http.NewRequest("PUT", base+v3+"/rooms/"+url.PathEscape(string(roomID))+"/send/m.room.message/"+txn, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := rtBenchClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("send: status %d", resp.StatusCode)
	}
	return nil
}

func rtBenchServers(b *testing.B, fn func(b *testing.B, s *testserver.Server)) {
	for name := range storagetest.DSNs(b) {
		b.Run(name, func(b *testing.B) {
			// A fresh database for each run (the benchmark function runs once
			// per b.N).
			s := testserver.Start(b, storagetest.DSNs(b)[name])
			s.ClientAPI.Accounts().SetBcryptCost(bcrypt.MinCost)
			fn(b, s)
		})
	}
}

var rtBenchBody = []byte(`{"msgtype":"m.text","body":"hello, this is a message of an ordinary length"}`)

// BenchmarkRoomSendSequential: one user sends messages into one room, one after
// the other, over HTTP (PUT /rooms/{roomId}/send).
func BenchmarkRoomSendSequential(b *testing.B) {
	rtBenchServers(b, func(b *testing.B, s *testserver.Server) {
		token, roomID := rtBenchUser(b, s, "alice")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := rtBenchSend(s.URL, token, roomID, fmt.Sprintf("b%d", i), rtBenchBody); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkRoomSendConcurrent50: 50 users each send into their own room at once.
func BenchmarkRoomSendConcurrent50(b *testing.B) {
	rtBenchServers(b, func(b *testing.B, s *testserver.Server) {
		const users = 50
		tokens := make([]string, users)
		rooms := make([]id.RoomID, users)
		for i := range users {
			tokens[i], rooms[i] = rtBenchUser(b, s, fmt.Sprintf("user%d", i))
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, users)
		b.ResetTimer()
		for u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					if err := rtBenchSend(s.URL, tokens[u], rooms[u], fmt.Sprintf("c%d", i), rtBenchBody); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkRoomClientEvents: writing a page of 20 messages for a client, as /sync
// and /messages do (visibility is applied separately).
func BenchmarkRoomClientEvents(b *testing.B) {
	benchServersSQLite(b, func(b *testing.B, s *testserver.Server) {
		ctx := context.Background()
		token, roomID := rtBenchUser(b, s, "alice")
		for i := range 20 {
			if err := rtBenchSend(s.URL, token, roomID, fmt.Sprintf("p%d", i), rtBenchBody); err != nil {
				b.Fatal(err)
			}
		}
		evs, _, err := s.Roomserver.Messages(ctx, roomID, roomserver.TopoPos{}, roomserver.Backward, 20)
		if err != nil {
			b.Fatal(err)
		}
		user := evs[0].Sender()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			vis, err := s.ClientAPI.VisibleEvents(ctx, user, evs)
			if err != nil || len(vis) != 20 {
				b.Fatal(vis, err)
			}
			if _, err := s.ClientAPI.ClientEvents(ctx, user, "OTHERDEVICE", vis, clientapi.EventFormat{OmitRoomID: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchServersSQLite(b *testing.B, fn func(b *testing.B, s *testserver.Server)) {
	s := testserver.Start(b, storagetest.DSNs(b)["sqlite"])
	s.ClientAPI.Accounts().SetBcryptCost(bcrypt.MinCost)
	fn(b, s)
}
