package federationapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
)

// ephemeralSeen is what a local user's /sync shows of a room's typing users
// and m.read receipts (user → event).
type ephemeralSeen struct {
	typing   []id.UserID
	receipts map[id.UserID]id.EventID
}

func syncEphemeral(t *testing.T, baseURL, token string, roomID id.RoomID) ephemeralSeen {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, baseURL+"/_matrix/client/v3/sync?timeout=0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Rooms struct {
			Join map[id.RoomID]struct {
				Ephemeral struct {
					Events []struct {
						Type    string          `json:"type"`
						Content json.RawMessage `json:"content"`
					} `json:"events"`
				} `json:"ephemeral"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("sync: %d %v", res.StatusCode, err)
	}
	out := ephemeralSeen{receipts: map[id.UserID]id.EventID{}}
	for _, ev := range body.Rooms.Join[roomID].Ephemeral.Events {
		switch ev.Type {
		case "m.typing":
			var c struct {
				UserIDs []id.UserID `json:"user_ids"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			out.typing = c.UserIDs
		case "m.receipt":
			var c map[id.EventID]map[string]map[id.UserID]json.RawMessage
			_ = json.Unmarshal(ev.Content, &c)
			for eventID, byType := range c {
				for u := range byType["m.read"] {
					out.receipts[u] = eventID
				}
			}
		}
	}
	return out
}

// TestEphemeralEDUsFromTheirOrigin: typing notifications, read receipts and
// device-list updates are taken only for users of the sending server who are
// joined to the room; those of a joined remote user show in local /sync.
func TestEphemeralEDUsFromTheirOrigin(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a := start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice := register(t, a, "alice")
		tok, err := accounts.NewStore(a.DB, aName).Login(ctx, accounts.NewLogin{Localpart: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		r := createRoom(t, a, "10", alice, "public")
		evil := startEvilServer(t)
		mallory, eve := id.UserID("@mallory:"+evil.name), id.UserID("@eve:"+evil.name)
		join := evil.build(t, a, r.id, mallory, "m.room.member", sk(string(mallory)), map[string]any{"membership": "join"})
		if _, err := evil.client.SendJoin(ctx, &federation.ReqSendJoin{RoomID: r.id, EventID: join.ID(), Event: join.JSON(), Via: aName}); err != nil {
			t.Fatalf("send_join: %v", err)
		}
		msg := r.message(alice, "read me").Event.ID()

		typing := func(u id.UserID) json.RawMessage {
			return mustJSON(map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": r.id, "user_id": u, "typing": true}})
		}
		receipt := func(u id.UserID) json.RawMessage {
			return mustJSON(map[string]any{"edu_type": "m.receipt", "content": map[id.RoomID]any{r.id: map[string]any{
				"m.read": map[id.UserID]any{u: map[string]any{"event_ids": []id.EventID{msg}, "data": map[string]any{"ts": 1}}}}}})
		}
		deviceList := func(u id.UserID) json.RawMessage {
			return mustJSON(map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{
				"user_id": u, "device_id": "D", "stream_id": 1, "prev_id": []int{0}, "deleted": true}})
		}
		positions := func() int {
			var n int
			if err := a.DB.QueryRow(ctx, `SELECT COUNT(*) FROM device_list_positions WHERE user_id LIKE '%' || $1`, ":"+evil.name).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		for i, tc := range []struct {
			name      string
			edus      []json.RawMessage
			typing    []id.UserID
			receipts  map[id.UserID]id.EventID
			positions int
		}{
			{"spoofing a local user", []json.RawMessage{typing(alice), receipt(alice)}, nil, map[id.UserID]id.EventID{}, 0},
			{"a user not in the room", []json.RawMessage{typing(eve), receipt(eve), deviceList(eve)}, nil, map[id.UserID]id.EventID{}, 0},
			{"a joined user of the origin", []json.RawMessage{typing(mallory), receipt(mallory), deviceList(mallory)},
				[]id.UserID{mallory}, map[id.UserID]id.EventID{mallory: msg}, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := evil.client.SendTransaction(ctx, &federation.ReqSendTransaction{
					Destination: aName, TxnID: fmt.Sprintf("e%d", i), Origin: evil.name, EDUs: tc.edus,
				}); err != nil {
					t.Fatal(err)
				}
				got := syncEphemeral(t, a.URL, tok.AccessToken, r.id)
				if !slices.Equal(got.typing, tc.typing) {
					t.Fatalf("typing users %v, want %v", got.typing, tc.typing)
				}
				if fmt.Sprint(got.receipts) != fmt.Sprint(tc.receipts) {
					t.Fatalf("receipts %v, want %v", got.receipts, tc.receipts)
				}
				if n := positions(); n != tc.positions {
					t.Fatalf("%d device-list positions of the evil server's users, want %d", n, tc.positions)
				}
			})
		}
	})
}
