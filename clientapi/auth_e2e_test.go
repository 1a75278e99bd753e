package clientapi_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/synapseadmin"

	"hearth/clientapi"
	"hearth/config"
	"hearth/internal/testserver"
)

// TestRegisterDummyFlow walks open registration's UIA by hand and with
// mautrix's client, and checks the username rules and that the first user
// becomes admin.
func TestRegisterDummyFlow(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		anon := newAPI(t, s, "")
		// Step 0: no auth → 401 with flows and a session, never success.
		first := anon.do("POST", v3+"/register", map[string]any{"username": "Alice", "password": "pw-alice"}).expect(t, 401, "")
		if first.str("session") == "" || first.errcode() != "" {
			t.Fatalf("first UIA response: %s", first)
		}
		// A stage outside the offered flows is refused, session kept.
		bad := anon.do("POST", v3+"/register", map[string]any{"username": "Alice", "password": "pw-alice",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "x", "session": first.str("session")}}).expect(t, 401, "M_UNRECOGNIZED")
		if bad.str("session") != first.str("session") {
			t.Fatalf("session changed: %s", bad)
		}
		done := anon.do("POST", v3+"/register", map[string]any{"username": "Alice", "password": "pw-alice", "initial_device_display_name": "Phone",
			"auth": map[string]any{"type": "m.login.dummy", "session": first.str("session")}}).expect(t, 200, "")
		if done.str("user_id") != "@alice:hs.test" || done.str("access_token") == "" || done.str("device_id") == "" {
			t.Fatalf("registration result: %s", done)
		}
		alice := newAPI(t, s, done.str("access_token"))
		who := alice.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
		if who.str("user_id") != "@alice:hs.test" || who.str("device_id") != done.str("device_id") || who.body["is_guest"] != false {
			t.Fatalf("whoami: %s", who)
		}
		// The first user is the server admin: the admin API answers them.
		alice.do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 200, "")
		dev := alice.do("GET", v3+"/devices/"+done.str("device_id"), nil).expect(t, 200, "")
		if dev.str("display_name") != "Phone" {
			t.Fatalf("device: %s", dev)
		}

		bob := registerUser(t, s, "bob")
		bob.api.do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 403, "M_FORBIDDEN")

		// Username rules, checked before UIA.
		for _, tc := range []struct{ name, code string }{
			{"alice", "M_USER_IN_USE"},
			{"ALICE", "M_USER_IN_USE"},
			{"al ice", "M_INVALID_USERNAME"},
			{"al:ice", "M_INVALID_USERNAME"},
			{"élan", "M_INVALID_USERNAME"},
			{"12345", "M_INVALID_USERNAME"},
			{"", "M_INVALID_USERNAME"},
			{string(make([]byte, 250)), "M_INVALID_USERNAME"},
		} {
			anon.do("POST", v3+"/register", map[string]any{"username": tc.name, "password": "x"}).expect(t, 400, tc.code)
			anon.do("GET", v3+"/register/available?username="+esc(tc.name), nil).expect(t, 400, tc.code)
		}
		av := anon.do("GET", v3+"/register/available?username=Carol", nil).expect(t, 200, "")
		if av.body["available"] != true {
			t.Fatalf("available: %s", av)
		}
		anon.do("GET", v3+"/register/available", nil).expect(t, 400, "M_MISSING_PARAM")

		// No username: one is generated. inhibit_login: no token.
		gen := anon.do("POST", v3+"/register", map[string]any{"password": "pw", "inhibit_login": true,
			"auth": map[string]any{"type": "m.login.dummy"}}).expect(t, 200, "")
		if gen.str("user_id") == "" || gen.str("access_token") != "" || gen.str("device_id") != "" {
			t.Fatalf("generated registration: %s", gen)
		}
		// Completing UIA without a password: M_MISSING_PARAM.
		anon.do("POST", v3+"/register", map[string]any{"username": "dave", "auth": map[string]any{"type": "m.login.dummy"}}).expect(t, 400, "M_MISSING_PARAM")
		anon.do("POST", v3+"/register?kind=admin", map[string]any{}).expect(t, 400, "M_INVALID_PARAM")

		// The r0 alias serves the same endpoint.
		anon.do("POST", "/_matrix/client/r0/register", map[string]any{}).expect(t, 401, "")
	})
}

// TestGuestRegistration: kind=guest is refused unless enabled; guests get a
// limited API and never become admin.
func TestGuestRegistration(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		newAPI(t, s, "").do("POST", v3+"/register?kind=guest", map[string]any{}).expect(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
	})
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		anon := newAPI(t, s, "")
		g := anon.do("POST", v3+"/register?kind=guest", map[string]any{"username": "ignored", "initial_device_display_name": "Guest phone"}).expect(t, 200, "")
		if g.str("user_id") == "@ignored:hs.test" {
			t.Fatal("guest registration must ignore username")
		}
		guest := newAPI(t, s, g.str("access_token"))
		who := guest.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
		if who.body["is_guest"] != true {
			t.Fatalf("whoami: %s", who)
		}
		guest.do("GET", v3+"/devices", nil).expect(t, 200, "")
		guest.do("PUT", v3+"/profile/"+esc(g.str("user_id"))+"/displayname", map[string]any{"displayname": "Guest"}).expect(t, 200, "")
		guest.do("PUT", v3+"/profile/"+esc(g.str("user_id"))+"/avatar_url", map[string]any{"avatar_url": "mxc://a/b"}).expect(t, 403, "M_FORBIDDEN")
		guest.do("PUT", v3+"/user/"+esc(g.str("user_id"))+"/account_data/x.y", map[string]any{}).expect(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
		guest.do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 403, "")
		// A guest was first, but the first real user is still the admin.
		admin := registerUser(t, s, "admin")
		admin.api.do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 200, "")
	}, allowGuests)
}

// TestRegistrationTokens: with registration closed, an admin-made token lets
// people register until its uses run out or it expires; the admin API manages
// tokens as Synapse's does.
func TestRegistrationTokens(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		anon := newAPI(t, s, "")
		anon.do("POST", v3+"/register", map[string]any{}).expect(t, 403, "M_FORBIDDEN")
		anon.do("GET", v3+"/register/available?username=x", nil).expect(t, 403, "M_FORBIDDEN")
		anon.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", nil).expect(t, 403, "M_FORBIDDEN")

		// The admin comes from shared-secret registration.
		adm := synapseadmin.Client{Client: mustClient(t, s)}
		reg, err := adm.SharedSecretRegister(ctx, "test-shared-secret", synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "pw-root", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		admin := newAPI(t, s, reg.AccessToken)

		// Create: explicit token with one use; random token with defaults.
		tok := admin.do("POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "once", "uses_allowed": 1}).expect(t, 200, "")
		if tok.str("token") != "once" || tok.body["uses_allowed"] != float64(1) || tok.body["pending"] != float64(0) || tok.body["expiry_time"] != nil {
			t.Fatalf("created: %s", tok)
		}
		rnd := admin.do("POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"length": 20}).expect(t, 200, "")
		if len(rnd.str("token")) != 20 || rnd.body["uses_allowed"] != nil {
			t.Fatalf("random: %s", rnd)
		}
		for _, bad := range []map[string]any{
			{"token": "once"}, {"token": "has space"}, {"token": 5}, {"token": string(make([]byte, 65))},
			{"uses_allowed": -1}, {"uses_allowed": "3"}, {"expiry_time": 1}, {"length": 0}, {"length": 65},
		} {
			admin.do("POST", "/_synapse/admin/v1/registration_tokens/new", bad).expect(t, 400, "M_INVALID_PARAM")
		}
		admin.do("GET", "/_synapse/admin/v1/registration_tokens/nope", nil).expect(t, 404, "M_NOT_FOUND")

		valid := anon.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=once", nil).expect(t, 200, "")
		if valid.body["valid"] != true {
			t.Fatalf("validity: %s", valid)
		}
		anon.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=unknown", nil).expect(t, 200, "")

		// Register with the token: flows offer only the token stage.
		first := anon.do("POST", v3+"/register", map[string]any{"username": "carol", "password": "pw"}).expect(t, 401, "")
		if f, _ := first.body["flows"].([]any); len(f) != 1 {
			t.Fatalf("flows: %s", first)
		}
		sess := first.str("session")
		anon.do("POST", v3+"/register", map[string]any{"username": "carol", "password": "pw",
			"auth": map[string]any{"type": "m.login.dummy", "session": sess}}).expect(t, 401, "M_UNRECOGNIZED")
		anon.do("POST", v3+"/register", map[string]any{"username": "carol", "password": "pw",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": sess}}).expect(t, 401, "M_UNAUTHORIZED")
		anon.do("POST", v3+"/register", map[string]any{"username": "carol", "password": "pw",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "once", "session": sess}}).expect(t, 200, "")
		got := admin.do("GET", "/_synapse/admin/v1/registration_tokens/once", nil).expect(t, 200, "")
		if got.body["pending"] != float64(0) || got.body["completed"] != float64(1) {
			t.Fatalf("after use: %s", got)
		}
		// Used up: the next registration is refused, and the token is invalid.
		anon.do("POST", v3+"/register", map[string]any{"username": "dan", "password": "pw",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "once"}}).expect(t, 401, "M_UNAUTHORIZED")
		if v := anon.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=once", nil); v.body["valid"] != false {
			t.Fatalf("used-up token still valid: %s", v)
		}
		// A pending use counts against the limit: a second session cannot take
		// the last use of a one-use token someone is registering with.
		admin.do("POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "pend", "uses_allowed": 1}).expect(t, 200, "")
		anon.do("POST", v3+"/register", map[string]any{"username": "erin",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "pend"}}).expect(t, 400, "M_MISSING_PARAM")
		if p := admin.do("GET", "/_synapse/admin/v1/registration_tokens/pend", nil); p.body["pending"] != float64(1) {
			t.Fatalf("pending: %s", p)
		}
		anon.do("POST", v3+"/register", map[string]any{"username": "fay", "password": "pw",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "pend"}}).expect(t, 401, "M_UNAUTHORIZED")

		// List with the valid filter.
		all := admin.do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 200, "")
		if l, _ := all.body["registration_tokens"].([]any); len(l) != 3 {
			t.Fatalf("list: %s", all)
		}
		inv := admin.do("GET", "/_synapse/admin/v1/registration_tokens?valid=false", nil).expect(t, 200, "")
		if l, _ := inv.body["registration_tokens"].([]any); len(l) != 2 {
			t.Fatalf("invalid list: %s", inv)
		}
		admin.do("GET", "/_synapse/admin/v1/registration_tokens?valid=maybe", nil).expect(t, 400, "M_INVALID_PARAM")

		// Update: more uses make "once" valid again; an expiry in the past is refused.
		up := admin.do("PUT", "/_synapse/admin/v1/registration_tokens/once", map[string]any{"uses_allowed": 2}).expect(t, 200, "")
		if up.body["uses_allowed"] != float64(2) || up.body["completed"] != float64(1) {
			t.Fatalf("update: %s", up)
		}
		admin.do("PUT", "/_synapse/admin/v1/registration_tokens/once", map[string]any{"expiry_time": 5}).expect(t, 400, "M_INVALID_PARAM")
		admin.do("PUT", "/_synapse/admin/v1/registration_tokens/nope", map[string]any{}).expect(t, 404, "M_NOT_FOUND")
		// Expire a token by setting uses to 0, then make one that expires soon.
		admin.do("PUT", "/_synapse/admin/v1/registration_tokens/once", map[string]any{"uses_allowed": 0}).expect(t, 200, "")
		soon := time.Now().Add(300 * time.Millisecond).UnixMilli()
		admin.do("POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "brief", "expiry_time": soon}).expect(t, 200, "")
		time.Sleep(400 * time.Millisecond)
		anon.do("POST", v3+"/register", map[string]any{"username": "gus", "password": "pw",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "brief"}}).expect(t, 401, "M_UNAUTHORIZED")

		// Delete.
		admin.do("DELETE", "/_synapse/admin/v1/registration_tokens/brief", nil).expect(t, 200, "")
		admin.do("DELETE", "/_synapse/admin/v1/registration_tokens/brief", nil).expect(t, 404, "M_NOT_FOUND")
		// Unlimited token: the random one still works.
		anon.do("POST", v3+"/register", map[string]any{"username": "hal", "password": "pw",
			"auth": map[string]any{"type": "m.login.registration_token", "token": rnd.str("token")}}).expect(t, 200, "")
		// Non-admins and anonymous callers are refused.
		carol, _ := login(t, s, "carol", "pw")
		newAPI(t, s, carol.str("access_token")).do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 403, "M_FORBIDDEN")
		anon.do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 401, "M_MISSING_TOKEN")
	}, closedRegistration)
}

func mustClient(t *testing.T, s *testserver.Server) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// TestSharedSecretRegistration covers Synapse's shared-secret registration,
// including a bad MAC and a reused nonce.
func TestSharedSecretRegistration(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		adm := synapseadmin.Client{Client: mustClient(t, s)}
		r, err := adm.SharedSecretRegister(ctx, "test-shared-secret", synapseadmin.ReqSharedSecretRegister{
			Username: "Boss", Password: "pw-boss", Admin: true, Displayname: "The Boss", UserType: "bot",
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.UserID != "@boss:hs.test" || r.AccessToken == "" || r.DeviceID == "" {
			t.Fatalf("registered: %+v", r)
		}
		boss := newAPI(t, s, r.AccessToken)
		boss.do("GET", "/_synapse/admin/v1/registration_tokens", nil).expect(t, 200, "")
		p := boss.do("GET", v3+"/profile/@boss:hs.test", nil).expect(t, 200, "")
		if p.str("displayname") != "The Boss" {
			t.Fatalf("profile: %s", p)
		}
		login(t, s, "boss", "pw-boss")

		anon := newAPI(t, s, "")
		nonce := func() string {
			return anon.do("GET", "/_synapse/admin/v1/register", nil).expect(t, 200, "").str("nonce")
		}
		// Bad MAC: 403, and the nonce is spent.
		n := nonce()
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "eve", "password": "pw", "mac": "00"}).expect(t, 403, "M_FORBIDDEN")
		good := clientapi.SharedSecretMAC("test-shared-secret", n, "eve", "pw", false, "")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "eve", "password": "pw", "mac": good}).expect(t, 400, "M_UNKNOWN")
		// MAC made with the wrong secret.
		n = nonce()
		wrong := clientapi.SharedSecretMAC("not-the-secret", n, "eve", "pw", false, "")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "eve", "password": "pw", "mac": wrong}).expect(t, 403, "M_FORBIDDEN")
		// admin flag not covered by the MAC.
		n = nonce()
		notAdmin := clientapi.SharedSecretMAC("test-shared-secret", n, "eve", "pw", false, "")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "eve", "password": "pw", "admin": true, "mac": notAdmin}).expect(t, 403, "M_FORBIDDEN")
		// Missing fields, in Synapse's order.
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"username": "eve"}).expect(t, 400, "M_MISSING_PARAM")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce()}).expect(t, 400, "M_BAD_JSON")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce(), "username": "eve"}).expect(t, 400, "M_BAD_JSON")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce(), "username": "eve", "password": "pw"}).expect(t, 400, "M_BAD_JSON")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce(), "username": "eve", "password": "pw", "user_type": "alien", "mac": "x"}).expect(t, 400, "M_UNKNOWN")
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": 5}).expect(t, 400, "M_BAD_JSON")
		// A good registration of an invalid or taken name fails cleanly.
		n = nonce()
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "b a d", "password": "pw",
			"mac": clientapi.SharedSecretMAC("test-shared-secret", n, "b a d", "pw", false, "")}).expect(t, 400, "M_INVALID_USERNAME")
		n = nonce()
		anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "boss", "password": "pw",
			"mac": clientapi.SharedSecretMAC("test-shared-secret", n, "boss", "pw", false, "")}).expect(t, 400, "M_USER_IN_USE")
		// inhibit_login.
		n = nonce()
		inh := anon.do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "quiet", "password": "pw", "inhibit_login": true,
			"mac": clientapi.SharedSecretMAC("test-shared-secret", n, "quiet", "pw", false, "")}).expect(t, 200, "")
		if inh.str("access_token") != "" || inh.str("user_id") != "@quiet:hs.test" {
			t.Fatalf("inhibit_login: %s", inh)
		}
	})
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		newAPI(t, s, "").do("GET", "/_synapse/admin/v1/register", nil).expect(t, 400, "M_UNKNOWN")
	}, func(c *config.Config) { c.Registration.SharedSecret = "" })
}

// TestLogin covers password and token login, wrong passwords, unknown and
// missing tokens.
func TestLogin(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		anon := newAPI(t, s, "")
		flows := anon.do("GET", v3+"/login", nil).expect(t, 200, "")
		if f, _ := flows.body["flows"].([]any); len(f) != 2 {
			t.Fatalf("flows: %s", flows)
		}
		// Localpart, full user ID, any case; the deprecated "user" field.
		for _, ident := range []string{"alice", "@alice:hs.test", "ALICE", "@Alice:hs.test"} {
			r, _ := login(t, s, ident, alice.password)
			r.expect(t, 200, "")
			if r.str("user_id") != "@alice:hs.test" || r.str("device_id") == "" {
				t.Fatalf("login as %s: %s", ident, r)
			}
			if wk, _ := r.body["well_known"].(map[string]any); wk == nil {
				t.Fatalf("no well_known: %s", r)
			}
		}
		anon.do("POST", v3+"/login", map[string]any{"type": "m.login.password", "user": "alice", "password": alice.password}).expect(t, 200, "")
		// mautrix's client logs in too, with a chosen device ID.
		cli := mustClient(t, s)
		lr, err := cli.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: alice.password, DeviceID: "MYDEVICE", StoreCredentials: true})
		if err != nil || lr.DeviceID != "MYDEVICE" {
			t.Fatalf("mautrix login: %+v %v", lr, err)
		}
		if who, err := cli.Whoami(context.Background()); err != nil || who.DeviceID != "MYDEVICE" {
			t.Fatalf("whoami: %+v %v", who, err)
		}
		// Logging in again on the same device replaces its token.
		old := cli.AccessToken
		_, err = cli.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: alice.password, DeviceID: "MYDEVICE", StoreCredentials: true})
		if err != nil {
			t.Fatal(err)
		}
		newAPI(t, s, old).do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")

		// Wrong password, unknown user, other server: 403 M_FORBIDDEN.
		for _, ident := range []string{"alice", "nobody", "@alice:elsewhere.test", "bad name!"} {
			r, _ := login(t, s, ident, "wrong")
			r.expect(t, 403, "M_FORBIDDEN")
		}
		_, err = cli.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "nope"})
		if !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("mautrix wrong password: %v", err)
		}
		anon.do("POST", v3+"/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "x"}).expect(t, 403, "M_FORBIDDEN")

		// Unknown and missing tokens.
		r := newAPI(t, s, "not-a-token").do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		if r.body["soft_logout"] != false {
			t.Fatalf("unknown token: %s", r)
		}
		_, err = (&mautrix.Client{HomeserverURL: cli.HomeserverURL, AccessToken: "bogus", Client: cli.Client, Log: cli.Log}).Whoami(context.Background())
		if !errors.Is(err, mautrix.MUnknownToken) {
			t.Fatalf("mautrix unknown token: %v", err)
		}
		anon.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_MISSING_TOKEN")
		// The token also works as a query parameter.
		anon.do("GET", v3+"/account/whoami?access_token="+alice.token, nil).expect(t, 200, "")

		// Login tokens: made by /login/get_token (UIA), single use.
		gt := uia(t, alice.api, "POST", "/_matrix/client/v1/login/get_token", map[string]any{}, alice).expect(t, 200, "")
		lt := gt.str("login_token")
		if lt == "" || gt.body["expires_in_ms"] == nil {
			t.Fatalf("get_token: %s", gt)
		}
		tl := anon.do("POST", v3+"/login", map[string]any{"type": "m.login.token", "token": lt}).expect(t, 200, "")
		if tl.str("user_id") != "@alice:hs.test" {
			t.Fatalf("token login: %s", tl)
		}
		anon.do("POST", v3+"/login", map[string]any{"type": "m.login.token", "token": lt}).expect(t, 403, "M_FORBIDDEN")
	})
}

// TestLogout: logout kills the token's device; logout/all kills every device.
func TestLogout(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		_, second := login(t, s, "alice", alice.password)
		_, third := login(t, s, "alice", alice.password)
		if _, err := alice.cli.Logout(context.Background()); err != nil {
			t.Fatal(err)
		}
		alice.api.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		devs := second.do("GET", v3+"/devices", nil).expect(t, 200, "")
		if l, _ := devs.body["devices"].([]any); len(l) != 2 {
			t.Fatalf("devices after logout: %s", devs)
		}
		second.do("POST", v3+"/logout/all", nil).expect(t, 200, "")
		second.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		third.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		// The password still works.
		r, _ := login(t, s, "alice", alice.password)
		r.expect(t, 200, "")
	})
}

// TestRefreshTokens: expiring access tokens, soft logout, and the refresh
// token rotation rules.
func TestRefreshTokens(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		registerUser(t, s, "alice")
		s.ClientAPI.SetAccessTokenLifetime(1500 * time.Millisecond)
		anon := newAPI(t, s, "")
		r := anon.do("POST", v3+"/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
			"password": "pw-alice", "refresh_token": true}).expect(t, 200, "")
		if r.str("refresh_token") == "" || r.body["expires_in_ms"] != float64(1500) {
			t.Fatalf("login: %s", r)
		}
		a1, r1 := newAPI(t, s, r.str("access_token")), r.str("refresh_token")
		a1.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
		time.Sleep(1600 * time.Millisecond)
		exp := a1.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		if exp.body["soft_logout"] != true {
			t.Fatalf("expired token must be a soft logout: %s", exp)
		}
		// Refresh; the answer is "lost", so the client refreshes R1 again.
		lost := anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": r1}).expect(t, 200, "")
		second := anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": r1}).expect(t, 200, "")
		if second.str("access_token") == lost.str("access_token") || second.body["expires_in_ms"] != float64(1500) {
			t.Fatalf("refresh: %s", second)
		}
		newAPI(t, s, lost.str("access_token")).do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		a2 := newAPI(t, s, second.str("access_token"))
		who := a2.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
		if who.str("device_id") != r.str("device_id") {
			t.Fatalf("refreshed token must keep the device: %s", who)
		}
		// Using the new access token revoked R1.
		anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": r1}).expect(t, 401, "M_UNKNOWN_TOKEN")
		// Using R2 works and in turn revokes R2 once R3's token is used.
		third := anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": second.str("refresh_token")}).expect(t, 200, "")
		anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": third.str("refresh_token")}).expect(t, 200, "")
		anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": second.str("refresh_token")}).expect(t, 401, "M_UNKNOWN_TOKEN")
		// Bad input.
		anon.do("POST", v3+"/refresh", map[string]any{}).expect(t, 400, "M_MISSING_PARAM")
		anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": 1}).expect(t, 400, "M_BAD_JSON")
		anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": "nope"}).expect(t, 401, "M_UNKNOWN_TOKEN")
		// Clients that do not ask for refresh tokens get non-expiring tokens.
		plain, pa := login(t, s, "alice", "pw-alice")
		if plain.str("refresh_token") != "" || plain.body["expires_in_ms"] != nil {
			t.Fatalf("non-refresh login: %s", plain)
		}
		time.Sleep(1600 * time.Millisecond)
		pa.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
		// Refreshing R3 again drops the unused pair it made; logging the device
		// out kills its refresh tokens.
		last := anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": third.str("refresh_token")}).expect(t, 200, "")
		newAPI(t, s, last.str("access_token")).do("POST", v3+"/logout", nil).expect(t, 200, "")
		anon.do("POST", v3+"/refresh", map[string]any{"refresh_token": last.str("refresh_token")}).expect(t, 401, "M_UNKNOWN_TOKEN")
	})
}

// TestRateLimits: /login and /register are limited per client address when
// rate limits are on.
func TestRateLimits(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		anon := newAPI(t, s, "")
		body := map[string]any{"type": "m.login.password", "user": "nobody", "password": "x"}
		anon.do("POST", v3+"/login", body).expect(t, 403, "M_FORBIDDEN")
		anon.do("POST", v3+"/login", body).expect(t, 403, "M_FORBIDDEN")
		lim := anon.do("POST", v3+"/login", body).expect(t, 429, "M_LIMIT_EXCEEDED")
		ms, _ := lim.body["retry_after_ms"].(float64)
		if ms <= 0 || ms > 100_000 {
			t.Fatalf("retry_after_ms: %s", lim)
		}
		if ra, err := strconv.Atoi(lim.header.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("Retry-After: %q", lim.header.Get("Retry-After"))
		}
		anon.do("POST", v3+"/register", map[string]any{}).expect(t, 401, "")
		anon.do("POST", v3+"/register", map[string]any{}).expect(t, 401, "")
		anon.do("POST", v3+"/register", map[string]any{}).expect(t, 429, "M_LIMIT_EXCEEDED")
		// Other endpoints are not limited.
		for i := 0; i < 5; i++ {
			anon.do("GET", v3+"/login", nil).expect(t, 200, "")
		}
	}, func(c *config.Config) {
		// One token per 100 s: slow bcrypt on a loaded machine cannot refill the
		// bucket between the requests.
		c.RateLimits = config.RateLimits{Enabled: true, PerSecond: 0.01, Burst: 2}
	})
}
