package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/roomserver"
)

// BenchmarkSearch: POST /search over HTTP in a room of 10,000 messages, for a
// word in every message and for a word in ten, by rank and by recency (pages
// of 10 results).
func BenchmarkSearch(b *testing.B) {
	rtBenchServers(b, func(b *testing.B, s *testserver.Server) {
		ctx := context.Background()
		token, roomID := rtBenchUser(b, s, "alice")
		alice := id.NewUserID("alice", s.Config().ServerName)
		const n = 10_000
		for i := range n {
			body := fmt.Sprintf("ordinary message number %d about nothing in particular", i)
			if i%1000 == 0 {
				body += " zanzibar"
			}
			content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
			if _, err := s.Roomserver.SendEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.message", Sender: alice, Content: content}); err != nil {
				b.Fatal(err)
			}
		}
		for _, tc := range []struct{ name, term, order string }{
			{"common/recent", "ordinary", "recent"},
			{"common/rank", "ordinary", "rank"},
			{"rare/recent", "zanzibar", "recent"},
			{"rare/rank", "zanzibar", "rank"},
		} {
			b.Run(tc.name, func(b *testing.B) {
				body, _ := json.Marshal(searchReq(tc.term, map[string]any{"order_by": tc.order}))
				for b.Loop() {
					if err := searchHTTP(s.URL, token, body); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// searchHTTP posts one search and checks for a 200 with ten or fewer results.
func searchHTTP(base, token string, body []byte) error {
	req, err := http.NewRequest("POST", base+v3+"/search", bytes.NewReader(body))
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
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("search: status %d: %s", resp.StatusCode, raw)
	}
	var out struct {
		SearchCategories struct {
			RoomEvents struct {
				Results []json.RawMessage `json:"results"`
			} `json:"room_events"`
		} `json:"search_categories"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out.SearchCategories.RoomEvents.Results) == 0 {
		return fmt.Errorf("search: no results in %.200s", raw)
	}
	return nil
}
