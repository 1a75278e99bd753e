package federationapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/clientapi/e2ee"
	"hearth/internal/testserver"
)

// clientDo makes a client API request on s with an access token.
func clientDo(t *testing.T, s *testserver.Server, token, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		rd = bytes.NewReader(mustJSON(body))
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, s.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	return res.StatusCode, buf.Bytes()
}

// login logs a user of s in on device dev and returns the access token.
func login(t *testing.T, s *testserver.Server, localpart, dev string) string {
	t.Helper()
	tok, err := accounts.NewStore(s.DB, s.Config().ServerName).Login(context.Background(), accounts.NewLogin{Localpart: localpart, DeviceID: dev})
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// unsignedDeviceKeys is a device_keys upload without a self-signature, as
// Complement's tests upload them.
func unsignedDeviceKeys(user id.UserID, dev, ed string) json.RawMessage {
	return mustJSON(map[string]any{
		"user_id": user, "device_id": dev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]string{"ed25519:" + dev: ed, "curve25519:" + dev: "c-" + ed}, "signatures": map[string]any{},
	})
}

// TestDeviceListsOverFederation: bob on B joins alice's room on A. A hears of
// bob's devices because of the join, fetches his list from B's
// /user/devices and keeps it; later key uploads and a device rename reach A
// as m.device_list_update EDUs that A applies to its copy and shows in
// alice's device_lists.changed. With B down, alice's /keys/query is answered
// from A's copy.
func TestDeviceListsOverFederation(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		aliceTok, bobTok := login(t, a, "alice", "ADEV"), login(t, b, "bob", "BDEV")
		var rec eduRecorder
		a.Federation.RegisterEDUHandler("m.device_list_update", &rec)

		r := createRoom(t, a, "10", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{aName}); err != nil {
			t.Fatal(err)
		}
		// The join tells A of bob's device (no keys yet), with no prev_id.
		eventually(t, 10*time.Second, "bob's device list after his join", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return slices.ContainsFunc(rec.got, func(s string) bool {
				c := gjson.Parse(s[len("m.device_list_update "):])
				return c.Get("user_id").Str == string(bob) && c.Get("device_id").Str == "BDEV" && c.Get("prev_id").IsArray() &&
					len(c.Get("prev_id").Array()) == 0 && !c.Get("keys").Exists()
			})
		})

		cachedBob := func() (map[id.DeviceID]json.RawMessage, bool) {
			res, _, err := a.Keys.CachedRemoteKeys(ctx, alice, map[id.UserID][]id.DeviceID{bob: nil})
			if err != nil {
				t.Fatal(err)
			}
			devs, ok := res.DeviceKeys[bob]
			return devs, ok
		}
		eventually(t, 10*time.Second, "A to fetch bob's device list", func() bool {
			_, ok := cachedBob()
			return ok
		})

		upload := func(ed string) {
			t.Helper()
			if code, body := clientDo(t, b, bobTok, "POST", "/_matrix/client/v3/keys/upload",
				map[string]any{"device_keys": unsignedDeviceKeys(bob, "BDEV", ed)}); code != http.StatusOK {
				t.Fatalf("upload: %d %s", code, body)
			}
		}
		aliceSince := ""
		syncAlice := func() []string {
			t.Helper()
			path := "/_matrix/client/v3/sync?timeout=0"
			if aliceSince != "" {
				path += "&since=" + aliceSince
			}
			code, body := clientDo(t, a, aliceTok, "GET", path, nil)
			if code != http.StatusOK {
				t.Fatalf("sync: %d %s", code, body)
			}
			aliceSince = gjson.GetBytes(body, "next_batch").Str
			var changed []string
			for _, u := range gjson.GetBytes(body, "device_lists.changed").Array() {
				changed = append(changed, u.Str)
			}
			return changed
		}
		syncAlice()
		for _, step := range []struct {
			name   string
			change func()
			check  func(json.RawMessage) bool
		}{
			{"first keys", func() { upload("k1") }, func(k json.RawMessage) bool { return gjson.GetBytes(k, "keys.ed25519:BDEV").Str == "k1" }},
			{"new keys", func() { upload("k2") }, func(k json.RawMessage) bool { return gjson.GetBytes(k, "keys.ed25519:BDEV").Str == "k2" }},
			{"rename", func() {
				if code, body := clientDo(t, b, bobTok, "PUT", "/_matrix/client/v3/devices/BDEV", map[string]any{"display_name": "Bob's phone"}); code != http.StatusOK {
					t.Fatalf("rename: %d %s", code, body)
				}
			}, func(k json.RawMessage) bool {
				return gjson.GetBytes(k, "unsigned.device_display_name").Str == "Bob's phone"
			}},
		} {
			t.Run(step.name, func(t *testing.T) {
				step.change()
				eventually(t, 10*time.Second, "the change in A's copy", func() bool {
					devs, ok := cachedBob()
					return ok && step.check(devs["BDEV"])
				})
				eventually(t, 5*time.Second, "bob in alice's device_lists.changed", func() bool {
					return slices.Contains(syncAlice(), string(bob))
				})
			})
		}

		// With B gone, A answers from its copy, with no failure.
		b.Stop()
		code, body := clientDo(t, a, aliceTok, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[id.UserID][]string{bob: {}}})
		if code != http.StatusOK || gjson.GetBytes(body, "failures.@keys.#").Int() != 0 ||
			gjson.GetBytes(body, "device_keys."+gjson.Escape(string(bob))+".BDEV.unsigned.device_display_name").Str != "Bob's phone" {
			t.Fatalf("query with B down: %d %s", code, body)
		}
	})
}

// TestDeviceListUpdateGapResyncs: an update whose prev_id A does not have
// makes A's copy stale (keys are asked of B again) until a resync.
func TestDeviceListUpdateGapResyncs(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		login(t, b, "bob", "BDEV")
		r := createRoom(t, a, "10", alice, "public")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{aName}); err != nil {
			t.Fatal(err)
		}
		fresh := func() bool {
			res, _, err := a.Keys.CachedRemoteKeys(ctx, alice, map[id.UserID][]id.DeviceID{bob: nil})
			if err != nil {
				t.Fatal(err)
			}
			_, ok := res.DeviceKeys[bob]
			return ok
		}
		eventually(t, 10*time.Second, "A to fetch bob's list", fresh)
		// An update out of the blue: its prev_id is unknown to A.
		resync, err := a.Keys.ApplyRemoteDeviceUpdate(ctx, &e2ee.RemoteDeviceUpdate{UserID: bob, DeviceID: "BDEV", StreamID: 1000, PrevID: []int64{999}})
		if err != nil || !resync {
			t.Fatalf("gap: resync=%v err=%v", resync, err)
		}
		if fresh() {
			t.Fatal("a stale copy was served")
		}
		a.Federation.ResyncDeviceLists([]id.UserID{bob})
		eventually(t, 10*time.Second, "the resync", fresh)
	})
}
