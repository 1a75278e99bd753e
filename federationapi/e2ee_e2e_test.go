package federationapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
)

// TestE2EEEndpointsRejectBadInput: the key endpoints answer only for local
// users, validate their bodies, and require X-Matrix authentication.
func TestE2EEEndpointsRejectBadInput(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a := start()
		e := startEvilServer(t)
		alice := register(t, a, "alice")
		remote := id.UserID("@mallory:" + e.name)
		ctx := context.Background()
		for _, tc := range []struct {
			name, method string
			path         federation.URLPath
			body         any
			status       int
			errcode      string
		}{
			{"devices of a remote user", http.MethodGet, federation.URLPath{"v1", "user", "devices", string(remote)}, nil, 400, "M_INVALID_PARAM"},
			{"devices of a malformed user", http.MethodGet, federation.URLPath{"v1", "user", "devices", "alice"}, nil, 400, "M_INVALID_PARAM"},
			{"query without device_keys", http.MethodPost, federation.URLPath{"v1", "user", "keys", "query"}, map[string]any{"timeout": 1}, 400, "M_MISSING_PARAM"},
			{"query of a remote user", http.MethodPost, federation.URLPath{"v1", "user", "keys", "query"},
				map[string]any{"device_keys": map[id.UserID][]string{remote: {}}}, 400, "M_INVALID_PARAM"},
			{"query with a bad type", http.MethodPost, federation.URLPath{"v1", "user", "keys", "query"},
				map[string]any{"device_keys": []string{"x"}}, 400, "M_BAD_JSON"},
			{"claim without one_time_keys", http.MethodPost, federation.URLPath{"v1", "user", "keys", "claim"}, map[string]any{"timeout": 1}, 400, "M_MISSING_PARAM"},
			{"claim for a remote user", http.MethodPost, federation.URLPath{"v1", "user", "keys", "claim"},
				map[string]any{"one_time_keys": map[id.UserID]map[string]string{remote: {"D": "signed_curve25519"}}}, 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := e.client.MakeRequest(ctx, a.Config().ServerName, true, tc.method, tc.path, tc.body, &json.RawMessage{})
				if status, code := respErr(err); status != tc.status || code != tc.errcode {
					t.Fatalf("got %d %s (%v), want %d %s", status, code, err, tc.status, tc.errcode)
				}
			})
		}

		// Known users are answered, even with no keys.
		var devs struct {
			UserID  id.UserID         `json:"user_id"`
			Devices []json.RawMessage `json:"devices"`
		}
		if err := e.client.MakeRequest(ctx, a.Config().ServerName, true, http.MethodGet,
			federation.URLPath{"v1", "user", "devices", string(alice)}, nil, &devs); err != nil || devs.UserID != alice || devs.Devices == nil {
			t.Fatalf("devices of alice: %+v, %v", devs, err)
		}
		// Unauthenticated requests are refused.
		err := e.client.MakeRequest(ctx, a.Config().ServerName, false, http.MethodPost,
			federation.URLPath{"v1", "user", "keys", "query"}, map[string]any{"device_keys": map[id.UserID][]string{alice: {}}}, &json.RawMessage{})
		if status, _ := respErr(err); status != http.StatusUnauthorized {
			t.Fatalf("unauthenticated query: %v", err)
		}
	})
}

// TestE2EEEDUsFromTheirOrigin: to-device messages and device-list updates are
// taken only about users of the sending server, and device-list updates only
// about users in a room here.
func TestE2EEEDUsFromTheirOrigin(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a := start()
		e := startEvilServer(t)
		alice := register(t, a, "alice")
		ctx := context.Background()
		if _, err := accounts.NewStore(a.DB, a.Config().ServerName).Login(ctx, accounts.NewLogin{Localpart: "alice", DeviceID: "ADEV"}); err != nil {
			t.Fatal(err)
		}
		count := func(q string, args ...any) int {
			t.Helper()
			var n int
			if err := a.DB.QueryRow(ctx, q, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		toDevice := func(sender id.UserID) json.RawMessage {
			return mustJSON(map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
				"sender": sender, "type": "m.room_key_request", "message_id": "m1",
				"messages": map[id.UserID]map[string]any{alice: {"*": map[string]any{"action": "cancellation"}}},
			}})
		}
		deviceList := func(user id.UserID) json.RawMessage {
			return mustJSON(map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{
				"user_id": user, "device_id": "D", "stream_id": 1, "prev_id": []int{}, "deleted": true,
			}})
		}
		for i, tc := range []struct {
			name      string
			edu       json.RawMessage
			toDevice  int
			positions int
		}{
			{"to-device spoofing a local sender", toDevice(id.UserID("@eve:" + a.Config().ServerName)), 0, 0},
			{"to-device spoofing a third server", toDevice("@eve:third.example"), 0, 0},
			{"device list of a user of a third server", deviceList("@eve:third.example"), 0, 0},
			{"device list of a user in no room here", deviceList(id.UserID("@eve:" + e.name)), 0, 0},
			{"to-device from the origin's user", toDevice(id.UserID("@eve:" + e.name)), 1, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := e.client.SendTransaction(ctx, &federation.ReqSendTransaction{
					Destination: a.Config().ServerName, TxnID: fmt.Sprintf("t%d", i), Origin: e.name, EDUs: []federation.EDU{tc.edu},
				}); err != nil {
					t.Fatal(err)
				}
				if n := count(`SELECT COUNT(*) FROM to_device_messages`); n != tc.toDevice {
					t.Fatalf("%d to-device messages stored, want %d", n, tc.toDevice)
				}
				if n := count(`SELECT COUNT(*) FROM device_list_positions WHERE user_id <> $1`, string(alice)); n != tc.positions {
					t.Fatalf("%d remote device-list positions, want %d", n, tc.positions)
				}
			})
		}
	})
}
