package clientapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi"
	"hearth/config"
	"hearth/internal/testserver"
	"hearth/server"
	"hearth/storage"
	"hearth/storage/storagetest"
)

// TestDevices: listing, renaming, and deleting devices through UIA; a deleted
// device's token stops working.
func TestDevices(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		_, second := login(t, s, "alice", alice.password)
		_, third := login(t, s, "alice", alice.password)
		secondDev := second.do("GET", v3+"/account/whoami", nil).str("device_id")
		thirdDev := third.do("GET", v3+"/account/whoami", nil).str("device_id")

		devs, err := alice.cli.GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 3 {
			t.Fatalf("devices: %+v %v", devs, err)
		}
		for _, d := range devs.Devices {
			if d.LastSeenTS == 0 {
				t.Fatalf("device %s has no last_seen_ts", d.DeviceID)
			}
		}
		if err := alice.cli.SetDeviceInfo(ctx, id.DeviceID(secondDev), &mautrix.ReqDeviceInfo{DisplayName: "Laptop"}); err != nil {
			t.Fatal(err)
		}
		if d, err := alice.cli.GetDeviceInfo(ctx, id.DeviceID(secondDev)); err != nil || d.DisplayName != "Laptop" {
			t.Fatalf("renamed: %+v %v", d, err)
		}
		alice.api.do("GET", v3+"/devices/NOPE", nil).expect(t, 404, "M_NOT_FOUND")
		alice.api.do("PUT", v3+"/devices/NOPE", map[string]any{"display_name": "x"}).expect(t, 404, "M_NOT_FOUND")
		alice.api.do("PUT", v3+"/devices/NOPE", map[string]any{}).expect(t, 404, "M_NOT_FOUND")
		alice.api.do("PUT", v3+"/devices/"+secondDev, map[string]any{"display_name": 5}).expect(t, 400, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/devices/"+secondDev, map[string]any{"display_name": strings.Repeat("x", 101)}).expect(t, 400, "M_INVALID_PARAM")

		// DELETE /devices/{id}: 401 with the password flow, wrong password 401
		// M_FORBIDDEN, then success; the device's token dies.
		first := alice.api.do("DELETE", v3+"/devices/"+secondDev, nil).expect(t, 401, "")
		sess := first.str("session")
		wrong := passwordAuth(alice, sess)
		wrong["password"] = "nope"
		bad := alice.api.do("DELETE", v3+"/devices/"+secondDev, map[string]any{"auth": wrong}).expect(t, 401, "M_FORBIDDEN")
		if bad.str("session") != sess || bad.body["flows"] == nil {
			t.Fatalf("failed stage must keep the session and flows: %s", bad)
		}
		// Another user's identity does not pass: 403 outright (as Synapse).
		other := passwordAuth(&user{id: "@bob:hs.test", password: "x"}, sess)
		alice.api.do("DELETE", v3+"/devices/"+secondDev, map[string]any{"auth": other}).expect(t, 403, "M_FORBIDDEN")
		// The session cannot be used for a different device.
		alice.api.do("DELETE", v3+"/devices/"+thirdDev, map[string]any{"auth": passwordAuth(alice, sess)}).expect(t, 403, "M_FORBIDDEN")
		alice.api.do("DELETE", v3+"/devices/"+secondDev, map[string]any{"auth": passwordAuth(alice, sess)}).expect(t, 200, "")
		second.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		alice.api.do("GET", v3+"/devices/"+secondDev, nil).expect(t, 404, "M_NOT_FOUND")

		// mautrix's client drives the same UIA for /delete_devices.
		err = alice.cli.DeleteDevices(ctx, &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{id.DeviceID(thirdDev), "GONE"}})
		var re mautrix.HTTPError
		if !errors.As(err, &re) || re.Response == nil || re.Response.StatusCode != 401 {
			t.Fatalf("delete_devices without auth: %v", err)
		}
		uia(t, alice.api, "POST", v3+"/delete_devices", map[string]any{"devices": []string{thirdDev, "GONE"}}, alice).expect(t, 200, "")
		third.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		alice.api.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
		alice.api.do("POST", v3+"/delete_devices", map[string]any{}).expect(t, 400, "M_MISSING_PARAM")
		alice.api.do("POST", v3+"/delete_devices", map[string]any{"devices": "x"}).expect(t, 400, "M_BAD_JSON")
		// Unknown session.
		alice.api.do("DELETE", v3+"/devices/X", map[string]any{"auth": passwordAuth(alice, "nosuchsession")}).expect(t, 400, "M_UNKNOWN")
	})
}

// TestPasswordChange: UIA, the new password works and the old does not, and
// other devices are logged out unless logout_devices is false.
func TestPasswordChange(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		_, other := login(t, s, "alice", alice.password)
		alice.api.do("POST", v3+"/account/password", map[string]any{}).expect(t, 400, "M_MISSING_PARAM")
		alice.api.do("POST", v3+"/account/password", map[string]any{"new_password": 1}).expect(t, 400, "M_BAD_JSON")
		uia(t, alice.api, "POST", v3+"/account/password", map[string]any{"new_password": "new-pw"}, alice).expect(t, 200, "")
		r, _ := login(t, s, "alice", "pw-alice")
		r.expect(t, 403, "M_FORBIDDEN")
		r, _ = login(t, s, "alice", "new-pw")
		r.expect(t, 200, "")
		other.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		alice.api.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")

		alice.password = "new-pw"
		_, kept := login(t, s, "alice", alice.password)
		uia(t, alice.api, "POST", v3+"/account/password", map[string]any{"new_password": "third-pw", "logout_devices": false}, alice).expect(t, 200, "")
		kept.do("GET", v3+"/account/whoami", nil).expect(t, 200, "")
	})
}

// TestDeactivation: UIA, then the account cannot be used or logged into, its
// user ID stays taken, and its profile and account data are gone.
func TestDeactivation(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		_, other := login(t, s, "alice", alice.password)
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/org.example", map[string]any{"a": 1}).expect(t, 200, "")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"displayname": "Alice"}).expect(t, 200, "")
		res := uia(t, alice.api, "POST", v3+"/account/deactivate", map[string]any{"erase": false}, alice).expect(t, 200, "")
		if res.str("id_server_unbind_result") != "no-support" {
			t.Fatalf("deactivate: %s", res)
		}
		alice.api.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		other.do("GET", v3+"/account/whoami", nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		r, _ := login(t, s, "alice", alice.password)
		r.expect(t, 403, "M_USER_DEACTIVATED")
		r, _ = login(t, s, "alice", "wrong")
		r.expect(t, 403, "M_FORBIDDEN")
		anon := newAPI(t, s, "")
		anon.do("POST", v3+"/register", map[string]any{"username": "alice", "password": "x"}).expect(t, 400, "M_USER_IN_USE")
		p := anon.do("GET", v3+"/profile/@alice:hs.test", nil).expect(t, 200, "")
		if len(p.body) != 0 {
			t.Fatalf("profile not cleared: %s", p)
		}
		if _, err := s.ClientAPI.Accounts().AccountData(context.Background(), "alice", "", "org.example"); err == nil {
			t.Fatal("account data survived deactivation")
		}
	})
}

// TestProfile covers display names, avatars, m.tz and custom fields.
func TestProfile(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		anon := newAPI(t, s, "")
		// Registration sets the localpart as display name.
		if dn, err := alice.cli.GetOwnDisplayName(ctx); err != nil || dn.DisplayName != "alice" {
			t.Fatalf("default display name: %+v %v", dn, err)
		}
		if err := alice.cli.SetDisplayName(ctx, "Alice A."); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.SetAvatarURL(ctx, id.ContentURI{Homeserver: "hs.test", FileID: "abc"}); err != nil {
			t.Fatal(err)
		}
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/m.tz", map[string]any{"m.tz": "Europe/Paris"}).expect(t, 200, "")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/org.example.pets", map[string]any{"org.example.pets": []string{"cat"}}).expect(t, 200, "")
		p, err := bob.cli.GetProfile(ctx, "@alice:hs.test")
		if err != nil || p.DisplayName != "Alice A." || p.AvatarURL.String() != "mxc://hs.test/abc" {
			t.Fatalf("profile: %+v %v", p, err)
		}
		full := anon.do("GET", v3+"/profile/@alice:hs.test", nil).expect(t, 200, "")
		if full.str("m.tz") != "Europe/Paris" || full.body["org.example.pets"] == nil {
			t.Fatalf("full profile: %s", full)
		}
		f := anon.do("GET", v3+"/profile/@alice:hs.test/m.tz", nil).expect(t, 200, "")
		if len(f.body) != 1 || f.str("m.tz") != "Europe/Paris" {
			t.Fatalf("field: %s", f)
		}
		// Delete a field; deleting again is fine.
		alice.api.do("DELETE", v3+"/profile/@alice:hs.test/m.tz", nil).expect(t, 200, "")
		alice.api.do("DELETE", v3+"/profile/@alice:hs.test/m.tz", nil).expect(t, 200, "")
		anon.do("GET", v3+"/profile/@alice:hs.test/m.tz", nil).expect(t, 404, "M_NOT_FOUND")
		// "" clears the display name.
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"displayname": ""}).expect(t, 200, "")
		anon.do("GET", v3+"/profile/@alice:hs.test/displayname", nil).expect(t, 404, "M_NOT_FOUND")

		// Errors.
		anon.do("GET", v3+"/profile/@nobody:hs.test", nil).expect(t, 404, "M_NOT_FOUND")
		anon.do("GET", v3+"/profile/@alice:remote.test", nil).expect(t, 404, "M_NOT_FOUND")
		anon.do("GET", v3+"/profile/alice", nil).expect(t, 400, "M_INVALID_PARAM")
		anon.do("GET", v3+"/profile/@alice:hs.test/Bad_Key", nil).expect(t, 400, "M_INVALID_PARAM")
		anon.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"displayname": "x"}).expect(t, 401, "M_MISSING_TOKEN")
		bob.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"displayname": "x"}).expect(t, 403, "M_FORBIDDEN")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"other": "x"}).expect(t, 400, "M_MISSING_PARAM")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"displayname": 5}).expect(t, 400, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"displayname": strings.Repeat("x", 257)}).expect(t, 400, "M_INVALID_PARAM")
		// avatar_url need not be an MXC URI (as Synapse), but its length is bounded.
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/avatar_url", map[string]any{"avatar_url": "LemurLover"}).expect(t, 200, "")
		if r := anon.do("GET", v3+"/profile/@alice:hs.test/avatar_url", nil).expect(t, 200, ""); r.str("avatar_url") != "LemurLover" {
			t.Fatalf("avatar_url: %s", r)
		}
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/avatar_url", map[string]any{"avatar_url": strings.Repeat("x", 1001)}).expect(t, 400, "M_INVALID_PARAM")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/m.tz", map[string]any{"m.tz": 1}).expect(t, 400, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", "not json").expect(t, 400, "M_NOT_JSON")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", `["displayname"]`).expect(t, 400, "M_BAD_JSON")
		long := "org.example." + strings.Repeat("a", 250)
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/"+long, map[string]any{long: 1}).expect(t, 400, "M_KEY_TOO_LARGE")
		big := strings.Repeat("x", 40_000)
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/org.example.a", map[string]any{"org.example.a": big}).expect(t, 200, "")
		alice.api.do("PUT", v3+"/profile/@alice:hs.test/org.example.b", map[string]any{"org.example.b": big}).expect(t, 400, "M_PROFILE_TOO_LARGE")
	})
}

// fakeRoomEngine records what the client API asks of the room engine and the
// keys module.
type fakeRoomEngine struct {
	mu       sync.Mutex
	profiles []string
	left     []id.UserID
	keysGone []id.DeviceID
}

func (f *fakeRoomEngine) UpdateProfileInRooms(_ context.Context, u id.UserID, dn, av string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.profiles = append(f.profiles, string(u)+"|"+dn+"|"+av)
	return nil
}

func (f *fakeRoomEngine) LeaveAllRooms(_ context.Context, u id.UserID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = append(f.left, u)
	return nil
}

func (f *fakeRoomEngine) DeleteDeviceKeys(_ context.Context, _ id.UserID, ids []id.DeviceID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keysGone = append(f.keysGone, ids...)
	return nil
}

// TestCollaborators: profile changes reach the room engine, deactivation
// leaves rooms, and deleted devices lose their keys, through the narrow
// interfaces the client API is given.
func TestCollaborators(t *testing.T) {
	for name, dsn := range storagetest.DSNs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := storage.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			cfg := config.Default()
			cfg.ServerName = "hs.test"
			cfg.Registration.Open = true
			cfg.RateLimits.Enabled = false
			fake := &fakeRoomEngine{}
			capi, err := clientapi.New(cfg, db, clientapi.Options{Membership: fake, Rooms: fake, DeviceKeys: fake})
			if err != nil {
				t.Fatal(err)
			}
			capi.Accounts().SetBcryptCost(bcrypt.MinCost)
			h := server.NewHTTP(cfg, prometheus.NewRegistry())
			capi.Register(h.Routers)
			srv := httptest.NewServer(h.ClientHandler())
			defer srv.Close()
			s := &testserver.Server{URL: srv.URL}
			alice := registerUser(t, s, "alice")
			alice.api.do("PUT", v3+"/profile/@alice:hs.test/displayname", map[string]any{"displayname": "Alice"}).expect(t, 200, "")
			alice.api.do("PUT", v3+"/profile/@alice:hs.test/avatar_url", map[string]any{"avatar_url": "mxc://hs.test/x"}).expect(t, 200, "")
			alice.api.do("PUT", v3+"/profile/@alice:hs.test/m.tz", map[string]any{"m.tz": "UTC"}).expect(t, 200, "")
			_, other := login(t, s, "alice", alice.password)
			other.do("POST", v3+"/logout", nil).expect(t, 200, "")
			uia(t, alice.api, "POST", v3+"/account/deactivate", map[string]any{}, alice).expect(t, 200, "")
			fake.mu.Lock()
			defer fake.mu.Unlock()
			want := []string{"@alice:hs.test|Alice|", "@alice:hs.test|Alice|mxc://hs.test/x"}
			if strings.Join(fake.profiles, ",") != strings.Join(want, ",") {
				t.Errorf("profile updates: %v", fake.profiles)
			}
			if len(fake.left) != 1 || fake.left[0] != "@alice:hs.test" {
				t.Errorf("left: %v", fake.left)
			}
			if len(fake.keysGone) != 2 || fake.keysGone[1] != id.DeviceID(alice.device) {
				t.Errorf("device keys deleted: %v (alice's device %s)", fake.keysGone, alice.device)
			}
		})
	}
}

// TestAccountData covers global and room account data, server-managed types,
// ignored users, tags and the per-user stream positions.
func TestAccountData(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		const room = "!room:hs.test"
		if err := alice.cli.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := alice.cli.GetAccountData(ctx, "org.example.settings", &got); err != nil || got["theme"] != "dark" {
			t.Fatalf("global: %v %v", got, err)
		}
		if err := alice.cli.SetRoomAccountData(ctx, room, "org.example.settings", map[string]any{"theme": "light"}); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.GetRoomAccountData(ctx, room, "org.example.settings", &got); err != nil || got["theme"] != "light" {
			t.Fatalf("room: %v %v", got, err)
		}
		// No inheritance between room and global, and per user.
		alice.api.do("GET", v3+"/user/@alice:hs.test/rooms/"+esc("!other:hs.test")+"/account_data/org.example.settings", nil).expect(t, 404, "M_NOT_FOUND")
		bob.api.do("GET", v3+"/user/@alice:hs.test/account_data/org.example.settings", nil).expect(t, 403, "M_FORBIDDEN")
		bob.api.do("PUT", v3+"/user/@alice:hs.test/account_data/org.example.settings", map[string]any{}).expect(t, 403, "M_FORBIDDEN")
		bob.api.do("GET", v3+"/user/@bob:hs.test/account_data/org.example.settings", nil).expect(t, 404, "M_NOT_FOUND")

		// Server-managed types: 405 on PUT, readable on GET.
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/m.push_rules", map[string]any{}).expect(t, 405, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/rooms/"+esc(room)+"/account_data/m.fully_read", map[string]any{"event_id": "$x"}).expect(t, 405, "M_BAD_JSON")
		pr := alice.api.do("GET", v3+"/user/@alice:hs.test/account_data/m.push_rules", nil).expect(t, 200, "")
		if g, _ := pr.body["global"].(map[string]any); g == nil || g["override"] == nil {
			t.Fatalf("m.push_rules: %s", pr)
		}
		// Bad input.
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/x", `[1]`).expect(t, 400, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/x", `{`).expect(t, 400, "M_NOT_JSON")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/rooms/notaroom/account_data/x", map[string]any{}).expect(t, 400, "M_INVALID_PARAM")
		alice.api.do("GET", v3+"/user/notauser/account_data/x", nil).expect(t, 400, "M_INVALID_PARAM")

		// Ignored users: validated, and readable for /sync.
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/m.ignored_user_list", map[string]any{"ignored_users": []string{"@bob:hs.test"}}).expect(t, 400, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/m.ignored_user_list", map[string]any{"ignored_users": map[string]any{"bob": map[string]any{}}}).expect(t, 400, "M_INVALID_PARAM")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/m.ignored_user_list", map[string]any{}).expect(t, 400, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/m.ignored_user_list", map[string]any{"ignored_users": map[string]any{"@bob:hs.test": map[string]any{}}}).expect(t, 200, "")
		ign, err := s.ClientAPI.IgnoredUsers(ctx, "alice")
		if _, ok := ign["@bob:hs.test"]; err != nil || !ok || len(ign) != 1 {
			t.Fatalf("ignored users: %v %v", ign, err)
		}

		// Tags.
		if err := alice.cli.AddTag(ctx, room, "m.favourite", 0.25); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.AddTag(ctx, room, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		tags, err := alice.cli.GetTags(ctx, room)
		if err != nil || len(tags.Tags) != 2 || mustFloat(tags.Tags["m.favourite"].Order) != 0.25 {
			t.Fatalf("tags: %+v %v", tags, err)
		}
		if err := alice.cli.RemoveTag(ctx, room, "u.work"); err != nil {
			t.Fatal(err)
		}
		tags, _ = alice.cli.GetTags(ctx, room)
		if len(tags.Tags) != 1 {
			t.Fatalf("tags after removal: %+v", tags)
		}
		var mtag map[string]any
		if err := alice.cli.GetRoomAccountData(ctx, room, "m.tag", &mtag); err != nil || mtag["tags"] == nil {
			t.Fatalf("m.tag account data: %v %v", mtag, err)
		}
		alice.api.do("PUT", v3+"/user/@alice:hs.test/rooms/"+esc(room)+"/tags/u.x", map[string]any{"order": "first"}).expect(t, 400, "M_BAD_JSON")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/rooms/"+esc(room)+"/tags/"+strings.Repeat("t", 256), map[string]any{}).expect(t, 400, "M_INVALID_PARAM")
		bob.api.do("GET", v3+"/user/@alice:hs.test/rooms/"+esc(room)+"/tags", nil).expect(t, 403, "M_FORBIDDEN")
		empty := bob.api.do("GET", v3+"/user/@bob:hs.test/rooms/"+esc(room)+"/tags", nil).expect(t, 200, "")
		if tg, _ := empty.body["tags"].(map[string]any); tg == nil || len(tg) != 0 {
			t.Fatalf("no tags: %s", empty)
		}

		// Stream positions: every write moves the user's position on; "changes
		// since N" returns each type once with its latest content.
		all, err := s.ClientAPI.AccountDataSince(ctx, "alice", 0)
		if err != nil {
			t.Fatal(err)
		}
		var last int64
		seen := map[string]bool{}
		for _, e := range all {
			if e.StreamPos <= last {
				t.Fatalf("positions not increasing: %+v", all)
			}
			last = e.StreamPos
			seen[e.RoomID+"/"+e.Type] = true
		}
		if len(all) != 4 || !seen["/org.example.settings"] || !seen[room+"/m.tag"] || !seen["/m.ignored_user_list"] {
			t.Fatalf("account data since 0: %+v", all)
		}
		alice.api.do("PUT", v3+"/pushrules/global/override/quiet", map[string]any{"actions": []any{}}).expect(t, 200, "")
		alice.api.do("PUT", v3+"/user/@alice:hs.test/account_data/org.example.settings", map[string]any{"theme": "blue"}).expect(t, 200, "")
		since, err := s.ClientAPI.AccountDataSince(ctx, "alice", last)
		if err != nil || len(since) != 2 || since[0].Type != "m.push_rules" || since[1].Type != "org.example.settings" {
			t.Fatalf("since %d: %+v %v", last, since, err)
		}
		var rules struct {
			Global struct {
				Override []struct {
					RuleID string `json:"rule_id"`
				} `json:"override"`
			} `json:"global"`
		}
		if err := json.Unmarshal(since[0].Content, &rules); err != nil || len(rules.Global.Override) < 2 || rules.Global.Override[1].RuleID != "quiet" {
			t.Fatalf("m.push_rules content: %s %v", since[0].Content, err)
		}
		if string(since[1].Content) != `{"theme":"blue"}` {
			t.Fatalf("latest content: %s", since[1].Content)
		}
		bobs, _ := s.ClientAPI.AccountDataSince(ctx, "bob", 0)
		if len(bobs) != 0 {
			t.Fatalf("bob sees alice's data: %+v", bobs)
		}
	})
}

// TestFilters covers uploading and fetching filters, and their validation.
func TestFilters(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		limit := 10
		f := &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: limit, Types: []event.Type{event.EventMessage}}, IncludeLeave: true}}
		r, err := alice.cli.CreateFilter(ctx, f)
		if err != nil || r.FilterID == "" {
			t.Fatalf("create: %+v %v", r, err)
		}
		again, _ := alice.cli.CreateFilter(ctx, f)
		if again.FilterID != r.FilterID {
			t.Fatalf("same filter, new ID: %s vs %s", again.FilterID, r.FilterID)
		}
		got := alice.api.do("GET", v3+"/user/@alice:hs.test/filter/"+r.FilterID, nil).expect(t, 200, "")
		room, _ := got.body["room"].(map[string]any)
		if room == nil || room["include_leave"] != true {
			t.Fatalf("get: %s", got)
		}
		parsed, err := s.ClientAPI.LoadFilter(ctx, "alice", r.FilterID)
		if err != nil || parsed.Room == nil || parsed.Room.Timeline == nil || *parsed.Room.Timeline.Limit != 10 {
			t.Fatalf("LoadFilter: %+v %v", parsed, err)
		}
		if inline, err := s.ClientAPI.LoadFilter(ctx, "alice", `{"room":{"rooms":[]}}`); err != nil || inline.Room.Rooms == nil || len(inline.Room.Rooms) != 0 {
			t.Fatalf("inline filter (empty list must stay distinct from absent): %+v %v", inline, err)
		}
		other := alice.api.do("POST", v3+"/user/@alice:hs.test/filter", map[string]any{"presence": map[string]any{"types": []string{}}}).expect(t, 200, "")
		if other.str("filter_id") == r.FilterID {
			t.Fatal("different filters share an ID")
		}
		alice.api.do("GET", v3+"/user/@alice:hs.test/filter/999", nil).expect(t, 404, "M_NOT_FOUND")
		alice.api.do("GET", v3+"/user/@alice:hs.test/filter/abc", nil).expect(t, 404, "M_NOT_FOUND")
		bob.api.do("GET", v3+"/user/@alice:hs.test/filter/"+r.FilterID, nil).expect(t, 403, "M_FORBIDDEN")
		bob.api.do("GET", v3+"/user/@bob:hs.test/filter/"+r.FilterID, nil).expect(t, 404, "M_NOT_FOUND")
		for _, bad := range []any{
			`[]`, `"x"`, map[string]any{"event_format": "raw"},
			map[string]any{"room": map[string]any{"rooms": "!a:b"}},
			map[string]any{"room": map[string]any{"rooms": []string{"a:b"}}},
			map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": -1}}},
			map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": "5"}}},
			map[string]any{"room": map[string]any{"state": map[string]any{"senders": []string{"bob"}}}},
			map[string]any{"presence": map[string]any{"not_senders": []any{1}}},
			map[string]any{"room": map[string]any{"include_leave": "yes"}},
			map[string]any{"event_fields": "content"},
		} {
			alice.api.do("POST", v3+"/user/@alice:hs.test/filter", bad).expect(t, 400, "M_BAD_JSON")
		}
		alice.api.do("POST", v3+"/user/@alice:hs.test/filter", "{").expect(t, 400, "M_NOT_JSON")
		bob.api.do("POST", v3+"/user/@alice:hs.test/filter", map[string]any{}).expect(t, 403, "M_FORBIDDEN")
	})
}

// TestCapabilities checks /capabilities for users and guests.
func TestCapabilities(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		caps, err := alice.cli.Capabilities(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if caps.ChangePassword == nil || !caps.ChangePassword.Enabled || caps.RoomVersions == nil || caps.RoomVersions.Default != "10" ||
			len(caps.RoomVersions.Available) != 14 || caps.ThreePIDChanges == nil || caps.ThreePIDChanges.Enabled ||
			caps.SetDisplayname == nil || !caps.SetDisplayname.Enabled || caps.SetAvatarURL == nil || !caps.SetAvatarURL.Enabled {
			t.Fatalf("capabilities: %+v", caps)
		}
		for v, st := range caps.RoomVersions.Available {
			// 1–12 are stable; MSC3757's org.matrix.msc3757.10/.11 are unstable.
			want := mautrix.CapRoomVersionStable
			if strings.HasPrefix(v, "org.matrix.msc3757.") {
				want = mautrix.CapRoomVersionUnstable
			}
			if st != want {
				t.Fatalf("room version %s: %s", v, st)
			}
		}
		g := newAPI(t, s, "").do("POST", v3+"/register?kind=guest", map[string]any{}).expect(t, 200, "")
		gc := newAPI(t, s, g.str("access_token")).do("GET", v3+"/capabilities", nil).expect(t, 200, "")
		c, _ := gc.body["capabilities"].(map[string]any)
		if cp, _ := c["m.change_password"].(map[string]any); cp["enabled"] != false {
			t.Fatalf("guest capabilities: %s", gc)
		}
		newAPI(t, s, "").do("GET", v3+"/capabilities", nil).expect(t, 401, "M_MISSING_TOKEN")
	}, allowGuests)
}

func mustFloat(n json.Number) float64 {
	f, _ := n.Float64()
	return f
}
