package clientapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/roomserver"
)

// BenchmarkMessagesBackward: GET /rooms/{roomId}/messages?dir=b&limit=50 from
// the newest event of a room of 1,000 messages, over HTTP (visibility,
// serialisation and the check for holes in the history that backfill fills).
func BenchmarkMessagesBackward(b *testing.B) {
	rtBenchServers(b, func(b *testing.B, s *testserver.Server) {
		ctx := context.Background()
		token, roomID := rtBenchUser(b, s, "pager")
		sender := "@pager:" + s.Config().ServerName
		for i := range 1000 {
			if _, err := s.Roomserver.SendEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.message", Sender: id.UserID(sender),
				Content: fmt.Appendf(nil, `{"msgtype":"m.text","body":"message %d"}`, i)}); err != nil {
				b.Fatal(err)
			}
		}
		u := s.URL + v3 + "/rooms/" + url.PathEscape(string(roomID)) + "/messages?dir=b&limit=50"
		b.ResetTimer()
		for b.Loop() {
			req, err := http.NewRequest("GET", u, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := rtBenchClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
