package clientapi_test

import (
	"strings"
	"testing"

	"hearth/internal/testserver"
)

// TestBadInput sends every endpoint malformed input — not JSON, the wrong
// shape, missing fields, wrong types, invalid user and room IDs — and checks
// each gets the spec's error, never a 500.
func TestBadInput(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice") // first user: admin
		const (
			anon = iota
			user
		)
		long := strings.Repeat("p", 73)
		cases := []struct {
			name    string
			who     int
			method  string
			path    string
			body    any
			status  int
			errcode string
		}{
			// /login
			{"login not json", anon, "POST", v3 + "/login", "{", 400, "M_NOT_JSON"},
			{"login empty body", anon, "POST", v3 + "/login", "", 400, "M_NOT_JSON"},
			{"login array", anon, "POST", v3 + "/login", `[]`, 400, "M_BAD_JSON"},
			{"login null", anon, "POST", v3 + "/login", `null`, 400, "M_BAD_JSON"},
			{"login no type", anon, "POST", v3 + "/login", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"login type not string", anon, "POST", v3 + "/login", map[string]any{"type": 1}, 400, "M_BAD_JSON"},
			{"login unknown type", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.magic"}, 400, "M_UNKNOWN"},
			{"login no password", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "user": "alice"}, 400, "M_MISSING_PARAM"},
			{"login no user", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "password": "x"}, 400, "M_MISSING_PARAM"},
			{"login password not string", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "user": "alice", "password": 5}, 400, "M_BAD_JSON"},
			{"login identifier not object", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "identifier": "alice", "password": "x"}, 400, "M_BAD_JSON"},
			{"login identifier user not string", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": 5}, "password": "x"}, 400, "M_BAD_JSON"},
			{"login identifier without type", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"user": "alice"}, "password": "x"}, 400, "M_MISSING_PARAM"},
			{"login identifier unknown type", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.carrier_pigeon"}, "password": "x"}, 400, "M_UNKNOWN"},
			{"login invalid user ID", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "user": "@@@", "password": "x"}, 403, "M_FORBIDDEN"},
			{"login empty device_id", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "x", "device_id": ""}, 400, "M_INVALID_PARAM"},
			{"login device_id not string", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "x", "device_id": 5}, 400, "M_BAD_JSON"},
			{"login refresh_token not bool", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "x", "refresh_token": "yes"}, 400, "M_BAD_JSON"},
			{"login no token", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.token"}, 400, "M_MISSING_PARAM"},
			{"login token not string", anon, "POST", v3 + "/login", map[string]any{"type": "m.login.token", "token": []int{1}}, 400, "M_BAD_JSON"},
			// /register
			{"register not json", anon, "POST", v3 + "/register", "{", 400, "M_NOT_JSON"},
			{"register array", anon, "POST", v3 + "/register", `[]`, 400, "M_BAD_JSON"},
			{"register username type", anon, "POST", v3 + "/register", map[string]any{"username": 5}, 400, "M_BAD_JSON"},
			{"register password type", anon, "POST", v3 + "/register", map[string]any{"password": 5}, 400, "M_BAD_JSON"},
			{"register inhibit_login type", anon, "POST", v3 + "/register", map[string]any{"inhibit_login": "yes"}, 400, "M_BAD_JSON"},
			{"register auth not object", anon, "POST", v3 + "/register", map[string]any{"auth": "dummy"}, 400, "M_BAD_JSON"},
			{"register auth type not string", anon, "POST", v3 + "/register", map[string]any{"auth": map[string]any{"type": 5}}, 400, "M_BAD_JSON"},
			{"register user ID as username", anon, "POST", v3 + "/register", map[string]any{"username": "@bob:hs.test"}, 400, "M_INVALID_USERNAME"},
			{"register long password", anon, "POST", v3 + "/register", map[string]any{"username": "bob", "password": long}, 400, "M_INVALID_PARAM"},
			{"register empty device_id", anon, "POST", v3 + "/register", map[string]any{"username": "bob", "device_id": ""}, 400, "M_INVALID_PARAM"},
			{"register control char device_id", anon, "POST", v3 + "/register", map[string]any{"username": "bob", "device_id": "a\nb"}, 400, "M_INVALID_PARAM"},
			{"register unknown session", anon, "POST", v3 + "/register", map[string]any{"auth": map[string]any{"type": "m.login.dummy", "session": "nope"}}, 400, "M_UNKNOWN"},
			{"register guest not json", anon, "POST", v3 + "/register?kind=guest", "{", 403, "M_GUEST_ACCESS_FORBIDDEN"},
			{"available invalid", anon, "GET", v3 + "/register/available?username=" + esc("@x:y"), nil, 400, "M_INVALID_USERNAME"},
			{"validity no token", anon, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity", nil, 400, "M_MISSING_PARAM"},
			// /refresh, /login/get_token
			{"refresh not json", anon, "POST", v3 + "/refresh", "{", 400, "M_NOT_JSON"},
			{"refresh missing", anon, "POST", v3 + "/refresh", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"get_token array", user, "POST", "/_matrix/client/v1/login/get_token", `[]`, 400, "M_BAD_JSON"},
			{"get_token session type", user, "POST", "/_matrix/client/v1/login/get_token", map[string]any{"auth": map[string]any{"type": "m.login.password", "session": 5}}, 400, "M_BAD_JSON"},
			{"get_token identifier type", user, "POST", "/_matrix/client/v1/login/get_token", map[string]any{"auth": map[string]any{"type": "m.login.password", "identifier": 5, "password": "x"}}, 400, "M_BAD_JSON"},
			// account
			{"password not json", user, "POST", v3 + "/account/password", "{", 400, "M_NOT_JSON"},
			{"password logout_devices type", user, "POST", v3 + "/account/password", map[string]any{"new_password": "x", "logout_devices": "no"}, 400, "M_BAD_JSON"},
			{"password too long", user, "POST", v3 + "/account/password", map[string]any{"new_password": long}, 400, "M_INVALID_PARAM"},
			{"deactivate erase type", user, "POST", v3 + "/account/deactivate", map[string]any{"erase": "yes"}, 400, "M_BAD_JSON"},
			{"deactivate auth array", user, "POST", v3 + "/account/deactivate", map[string]any{"auth": []int{}}, 400, "M_BAD_JSON"},
			{"whoami no token", anon, "GET", v3 + "/account/whoami", nil, 401, "M_MISSING_TOKEN"},
			{"3pid no token", anon, "GET", v3 + "/account/3pid", nil, 401, "M_MISSING_TOKEN"},
			// devices
			{"put device array", user, "PUT", v3 + "/devices/" + alice.device, `[]`, 400, "M_BAD_JSON"},
			{"put device not json", user, "PUT", v3 + "/devices/" + alice.device, "{", 400, "M_NOT_JSON"},
			{"delete device auth type", user, "DELETE", v3 + "/devices/X", map[string]any{"auth": 5}, 400, "M_BAD_JSON"},
			{"delete_devices item type", user, "POST", v3 + "/delete_devices", map[string]any{"devices": []any{1}}, 400, "M_BAD_JSON"},
			{"delete_devices not json", user, "POST", v3 + "/delete_devices", "{", 400, "M_NOT_JSON"},
			// profile
			{"profile empty localpart", anon, "GET", v3 + "/profile/" + esc("@:hs.test"), nil, 400, "M_INVALID_PARAM"},
			{"profile no server", anon, "GET", v3 + "/profile/" + esc("@alice"), nil, 400, "M_INVALID_PARAM"},
			{"profile bad server", anon, "GET", v3 + "/profile/" + esc("@alice:bad server"), nil, 400, "M_INVALID_PARAM"},
			{"profile field invalid user", anon, "GET", v3 + "/profile/bob/displayname", nil, 400, "M_INVALID_PARAM"},
			{"put profile invalid user", user, "PUT", v3 + "/profile/bob/displayname", map[string]any{"displayname": "x"}, 400, "M_INVALID_PARAM"},
			{"put profile bad key", user, "PUT", v3 + "/profile/@alice:hs.test/nodots", map[string]any{"nodots": "x"}, 400, "M_INVALID_PARAM"},
			{"put profile not json", user, "PUT", v3 + "/profile/@alice:hs.test/displayname", "{", 400, "M_NOT_JSON"},
			{"put avatar type", user, "PUT", v3 + "/profile/@alice:hs.test/avatar_url", map[string]any{"avatar_url": 5}, 400, "M_BAD_JSON"},
			{"delete profile other user", user, "DELETE", v3 + "/profile/@bob:hs.test/displayname", nil, 403, "M_FORBIDDEN"},
			// account data and tags
			{"account data type too long", user, "PUT", v3 + "/user/@alice:hs.test/account_data/" + strings.Repeat("t", 256), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"account data invalid user", user, "PUT", v3 + "/user/alice/account_data/x", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"account data other user", user, "PUT", v3 + "/user/@bob:hs.test/account_data/x", map[string]any{}, 403, "M_FORBIDDEN"},
			{"account data string body", user, "PUT", v3 + "/user/@alice:hs.test/account_data/x", `"x"`, 400, "M_BAD_JSON"},
			{"account data empty body", user, "PUT", v3 + "/user/@alice:hs.test/account_data/x", "", 400, "M_NOT_JSON"},
			{"room account data invalid room", user, "GET", v3 + "/user/@alice:hs.test/rooms/room/account_data/x", nil, 400, "M_INVALID_PARAM"},
			{"tags invalid room", user, "GET", v3 + "/user/@alice:hs.test/rooms/room/tags", nil, 400, "M_INVALID_PARAM"},
			{"tag body array", user, "PUT", v3 + "/user/@alice:hs.test/rooms/" + esc("!r:hs.test") + "/tags/u.x", `[]`, 400, "M_BAD_JSON"},
			{"tag invalid user", user, "DELETE", v3 + "/user/x/rooms/" + esc("!r:hs.test") + "/tags/u.x", nil, 400, "M_INVALID_PARAM"},
			// filters
			{"filter invalid user", user, "POST", v3 + "/user/alice/filter", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"filter wrong shape", user, "POST", v3 + "/user/@alice:hs.test/filter", map[string]any{"room": []int{1}}, 400, "M_BAD_JSON"},
			{"filter limit type", user, "POST", v3 + "/user/@alice:hs.test/filter", map[string]any{"presence": map[string]any{"limit": 1.5}}, 400, "M_BAD_JSON"},
			{"get filter invalid user", user, "GET", v3 + "/user/alice/filter/0", nil, 400, "M_INVALID_PARAM"},
			// push rules
			{"push rule not json", user, "PUT", v3 + "/pushrules/global/override/x", "{", 400, "M_NOT_JSON"},
			{"push rule array", user, "PUT", v3 + "/pushrules/global/override/x", `[]`, 400, "M_BAD_JSON"},
			{"push rule tweak type", user, "PUT", v3 + "/pushrules/global/override/x", map[string]any{"actions": []any{map[string]any{"set_tweak": 5}}}, 400, "M_BAD_JSON"},
			{"push rule bad member count", user, "PUT", v3 + "/pushrules/global/underride/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "room_member_count", "is": "lots"}}}, 400, "M_BAD_JSON"},
			{"push rule value compound", user, "PUT", v3 + "/pushrules/global/override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "a", "value": []int{1}}}}, 400, "M_BAD_JSON"},
			{"push rule condition no kind", user, "PUT", v3 + "/pushrules/global/override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"key": "a"}}}, 400, "M_BAD_JSON"},
			{"push rule backslash id", user, "PUT", v3 + "/pushrules/global/override/a%5Cb", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"push rule bad kind", user, "PUT", v3 + "/pushrules/global/everything/x", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"push enabled array", user, "PUT", v3 + "/pushrules/global/override/.m.rule.master/enabled", `[]`, 400, "M_BAD_JSON"},
			{"push actions missing", user, "PUT", v3 + "/pushrules/global/override/.m.rule.master/actions", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"push actions not json", user, "PUT", v3 + "/pushrules/global/override/.m.rule.master/actions", "{", 400, "M_NOT_JSON"},
			// admin API
			{"token new array", user, "POST", "/_synapse/admin/v1/registration_tokens/new", `[]`, 400, "M_BAD_JSON"},
			{"token new not json", user, "POST", "/_synapse/admin/v1/registration_tokens/new", "{", 400, "M_NOT_JSON"},
			{"token update float", user, "PUT", "/_synapse/admin/v1/registration_tokens/x", map[string]any{"uses_allowed": 1.5}, 400, "M_INVALID_PARAM"},
			{"token update no auth", anon, "PUT", "/_synapse/admin/v1/registration_tokens/x", map[string]any{}, 401, "M_MISSING_TOKEN"},
			{"shared secret not json", anon, "POST", "/_synapse/admin/v1/register", "{", 400, "M_NOT_JSON"},
			{"shared secret array", anon, "POST", "/_synapse/admin/v1/register", `[]`, 400, "M_BAD_JSON"},
			{"shared secret admin type", anon, "POST", "/_synapse/admin/v1/register", map[string]any{"nonce": "x", "admin": "yes"}, 400, "M_BAD_JSON"},
			// unknown endpoints and methods
			{"unknown endpoint", user, "GET", v3 + "/account/nothing", nil, 404, "M_UNRECOGNIZED"},
			{"wrong method", user, "DELETE", v3 + "/account/whoami", nil, 405, "M_UNRECOGNIZED"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				a := newAPI(t, s, "")
				if tc.who == user {
					a = alice.api
				}
				r := a.do(tc.method, tc.path, tc.body)
				if r.status >= 500 {
					t.Fatalf("server error: %s", r)
				}
				r.expect(t, tc.status, tc.errcode)
			})
		}
		// Nothing above hurt the account.
		alice.api.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
	})
}
