package clientapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// syncAccountData returns the content of global (roomID "") or room account
// data of type typ in a sync response, and whether it is there.
func syncAccountData(t *testing.T, r *syncResp, roomID, typ string) (string, bool) {
	t.Helper()
	if roomID != "" {
		jr := r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil {
			return "", false
		}
		for _, e := range jr.AccountData.Events {
			if e.Type == typ {
				return string(e.Content), true
			}
		}
		return "", false
	}
	for _, raw := range r.AccountData.Events {
		var e struct {
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Type == typ {
			return string(e.Content), true
		}
	}
	return "", false
}

// TestDeleteAccountData covers MSC3391: DELETE (unstable prefix) and PUT {}
// delete global and room account data; it then reads as 404, is absent from
// an initial sync and comes to incremental syncs as {}.
func TestDeleteAccountData(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		roomID := string(rtCreateRoom(t, alice, map[string]any{}))
		const typ = "org.example.test"
		me := esc(string(alice.id))
		cases := []struct {
			name   string
			roomID string
			delete func()
		}{
			{"global via DELETE", "", func() {
				alice.api.do("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/"+me+"/account_data/"+typ, nil).expect(t, 200, "")
			}},
			{"global via PUT {}", "", func() {
				alice.api.do("PUT", v3+"/user/"+me+"/account_data/"+typ, map[string]any{}).expect(t, 200, "")
			}},
			{"room via DELETE", roomID, func() {
				alice.api.do("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/"+me+"/rooms/"+esc(roomID)+"/account_data/"+typ, nil).expect(t, 200, "")
			}},
			{"room via PUT {}", roomID, func() {
				alice.api.do("PUT", v3+"/user/"+me+"/rooms/"+esc(roomID)+"/account_data/"+typ, map[string]any{}).expect(t, 200, "")
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				path := v3 + "/user/" + me + "/account_data/" + typ
				if tc.roomID != "" {
					path = v3 + "/user/" + me + "/rooms/" + esc(tc.roomID) + "/account_data/" + typ
				}
				alice.api.do("PUT", path, map[string]any{"test_data": 1}).expect(t, 200, "")
				alice.api.do("GET", path, nil).expect(t, 200, "")
				since := syncSince(t, alice, "", 0).NextBatch
				tc.delete()
				alice.api.do("GET", path, nil).expect(t, 404, "M_NOT_FOUND")
				if c, ok := syncAccountData(t, syncSince(t, alice, since, 5*time.Second), tc.roomID, typ); !ok || c != "{}" {
					t.Fatalf("incremental sync: %q %v", c, ok)
				}
				if c, ok := syncAccountData(t, syncSince(t, alice, "", 0), tc.roomID, typ); ok {
					t.Fatalf("initial sync still has it: %s", c)
				}
			})
		}
		// Deleting what is not there is fine; server-managed types refuse.
		alice.api.do("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/"+me+"/account_data/org.example.never", nil).expect(t, 200, "")
		alice.api.do("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/"+me+"/account_data/m.push_rules", nil).expect(t, 405, "")
		alice.api.do("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/@bob:hs.test/account_data/"+typ, nil).expect(t, 403, "M_FORBIDDEN")
		// Push rules survive in initial syncs (their entry's stored content is
		// a {} marker).
		alice.api.do("PUT", v3+"/pushrules/global/room/"+esc(roomID), map[string]any{"actions": []any{}}).expect(t, 200, "")
		if c, ok := syncAccountData(t, syncSince(t, alice, "", 0), "", "m.push_rules"); !ok || c == "{}" {
			t.Fatalf("m.push_rules in initial sync: %q %v", c, ok)
		}
	})
}

// TestDeviceDeletionRemovesLocalNotificationSettings covers MSC3890: deleting
// (logging out) a device deletes its
// org.matrix.msc3890.local_notification_settings.<device_id> account data.
func TestDeviceDeletionRemovesLocalNotificationSettings(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		lr, second := login(t, s, "alice", alice.password)
		dev := lr.str("device_id")
		me := esc(string(alice.id))
		typ := "org.matrix.msc3890.local_notification_settings." + dev
		keep := "org.matrix.msc3890.local_notification_settings." + alice.device
		alice.api.do("PUT", v3+"/user/"+me+"/account_data/"+typ, map[string]any{"is_silenced": true}).expect(t, 200, "")
		alice.api.do("PUT", v3+"/user/"+me+"/account_data/"+keep, map[string]any{"is_silenced": false}).expect(t, 200, "")
		since := syncSince(t, alice, "", 0).NextBatch
		second.do("POST", v3+"/logout", map[string]any{}).expect(t, 200, "")
		alice.api.do("GET", v3+"/user/"+me+"/account_data/"+typ, nil).expect(t, 404, "M_NOT_FOUND")
		alice.api.do("GET", v3+"/user/"+me+"/account_data/"+keep, nil).expect(t, 200, "")
		if c, ok := syncAccountData(t, syncSince(t, alice, since, 5*time.Second), "", typ); !ok || c != "{}" {
			t.Fatalf("incremental sync after logout: %q %v", c, ok)
		}
	})
}
