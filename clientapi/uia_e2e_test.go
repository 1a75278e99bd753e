package clientapi_test

import (
	"testing"

	"hearth/internal/testserver"
)

// TestUIAOtherUsersIdentifier: re-authenticating with another user's
// identifier (even with that user's right password) is refused with 403, and
// the request is not carried out (sytest "DELETE /device/{deviceId} requires
// UI auth user to match device owner").
func TestUIAOtherUsersIdentifier(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		lr, _ := login(t, s, "alice", alice.password)
		dev := lr.str("device_id")
		first := alice.api.do("DELETE", v3+"/devices/"+dev, map[string]any{}).expect(t, 401, "")
		cases := []struct {
			name   string
			auth   map[string]any
			status int
		}{
			{"bob's credentials", passwordAuth(bob, first.str("session")), 403},
			{"bob's identifier, alice's password", map[string]any{
				"type": "m.login.password", "session": first.str("session"), "password": alice.password,
				"identifier": map[string]any{"type": "m.id.user", "user": string(bob.id)},
			}, 403},
			{"alice, wrong password", map[string]any{
				"type": "m.login.password", "session": first.str("session"), "password": "nope",
				"identifier": map[string]any{"type": "m.id.user", "user": string(alice.id)},
			}, 401},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				alice.api.do("DELETE", v3+"/devices/"+dev, map[string]any{"auth": tc.auth}).expect(t, tc.status, "M_FORBIDDEN")
				alice.api.do("GET", v3+"/devices/"+dev, nil).expect(t, 200, "")
			})
		}
		alice.api.do("DELETE", v3+"/devices/"+dev, map[string]any{"auth": passwordAuth(alice, first.str("session"))}).expect(t, 200, "")
		alice.api.do("GET", v3+"/devices/"+dev, nil).expect(t, 404, "M_NOT_FOUND")
	})
}

// TestInvalidUTF8Body: a JSON body that is not UTF-8 is not JSON (RFC 8259):
// 400 M_NOT_JSON, before anything else (here: before registration's UIA).
func TestInvalidUTF8Body(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		anon := newAPI(t, s, "")
		anon.do("POST", v3+"/register", "{ \"test\":\"a\x81\" }").expect(t, 400, "M_NOT_JSON")
		anon.do("POST", v3+"/register", "{\"username\":\"\xff\xfe\"}").expect(t, 400, "M_NOT_JSON")
		alice := registerUser(t, s, "alice")
		alice.api.do("PUT", v3+"/profile/"+esc(string(alice.id))+"/displayname", "{\"displayname\":\"A\xc3\"}").expect(t, 400, "M_NOT_JSON")
		// Valid multi-byte UTF-8 is fine.
		alice.api.do("PUT", v3+"/profile/"+esc(string(alice.id))+"/displayname", "{\"displayname\":\"Al\xc3\xafce\"}").expect(t, 200, "")
	})
}
