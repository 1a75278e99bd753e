package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/tidwall/gjson"

	"hearth/internal/testserver"
)

// TestDeviceListsOverHTTP: keys uploaded without a self-signature are taken
// (as Synapse does; clients check signatures), a device rename puts its owner
// in device_lists.changed of the users sharing a room and shows in
// /keys/query, and a user's own join lists them in their own changes.
func TestDeviceListsOverHTTP(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		bobSync := &syncer{t: t, api: bob.api}
		bobSync.next()
		encryptedRoom(t, alice, bob)
		if ch := deviceListsChanged(bobSync.next()); !containsStr(ch, string(bob.id)) || !containsStr(ch, string(alice.id)) {
			t.Fatalf("bob's changes after his join = %v, want alice and bob", ch)
		}

		keys := map[string]any{
			"user_id": alice.id, "device_id": alice.device, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
			"keys":       map[string]string{"ed25519:" + alice.device: "ed", "curve25519:" + alice.device: "curve"},
			"signatures": map[string]any{},
		}
		alice.api.do("POST", v3+"/keys/upload", map[string]any{"device_keys": keys}).expect(t, http.StatusOK, "")
		bad := map[string]any{}
		for k, v := range keys {
			bad[k] = v
		}
		bad["signatures"] = map[string]any{string(alice.id): map[string]string{"ed25519:" + alice.device: "bm90IGEgc2lnbmF0dXJl"}}
		alice.api.do("POST", v3+"/keys/upload", map[string]any{"device_keys": bad}).expect(t, http.StatusBadRequest, "M_INVALID_SIGNATURE")
		if ch := deviceListsChanged(bobSync.next()); !containsStr(ch, string(alice.id)) {
			t.Fatalf("bob's changes after alice's upload = %v", ch)
		}

		alice.api.do("PUT", v3+"/devices/"+esc(alice.device), map[string]any{"display_name": "Alice's laptop"}).expect(t, http.StatusOK, "")
		if ch := deviceListsChanged(bobSync.next()); !containsStr(ch, string(alice.id)) {
			t.Fatalf("bob's changes after alice's rename = %v", ch)
		}
		q := bob.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{string(alice.id): []string{}}}).expect(t, http.StatusOK, "")
		path := "device_keys." + gjson.Escape(string(alice.id)) + "." + gjson.Escape(alice.device) + ".unsigned.device_display_name"
		if got := gjson.GetBytes(q.raw, path).Str; got != "Alice's laptop" {
			t.Fatalf("queried name = %q: %s", got, q.raw)
		}
		// Renaming an unknown device is a 404 and changes nothing.
		alice.api.do("PUT", v3+"/devices/NOSUCH", map[string]any{"display_name": "x"}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		if ch := deviceListsChanged(bobSync.next()); len(ch) != 0 {
			t.Fatalf("changes after a failed rename = %v", ch)
		}
	})
}
