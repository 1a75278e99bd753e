package e2ee

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

func TestUploadDeviceKeysValidation(t *testing.T) {
	alice := uid("alice")
	forEachEnv(t, func(t *testing.T, e *env) {
		d := newDevice(t, alice, "DEV1")
		other := newSigner(t)
		tests := []struct {
			name    string
			keys    func() map[string]any
			errcode string
		}{
			{"valid", func() map[string]any { return d.keys(t) }, ""},
			{"other user", func() map[string]any {
				k := d.keys(t)
				k["user_id"] = string(uid("bob"))
				return d.key.sign(t, k, alice, "DEV1")
			}, "M_INVALID_PARAM"},
			{"other device", func() map[string]any {
				k := d.keys(t)
				k["device_id"] = "DEV2"
				return d.key.sign(t, k, alice, "DEV1")
			}, "M_INVALID_PARAM"},
			{"no ed25519 key", func() map[string]any {
				k := d.keys(t)
				k["keys"] = map[string]any{"curve25519:DEV1": "x"}
				return k
			}, "M_INVALID_PARAM"},
			{"signed by another key", func() map[string]any {
				k := d.keys(t)
				delete(k, "signatures")
				return other.sign(t, k, alice, "DEV1")
			}, "M_INVALID_SIGNATURE"},
			{"changed after signing", func() map[string]any {
				k := d.keys(t)
				k["algorithms"] = []string{"m.olm.v1.curve25519-aes-sha2"}
				return k
			}, "M_INVALID_SIGNATURE"},
			{"no signatures property", func() map[string]any {
				k := d.keys(t)
				delete(k, "signatures")
				return k
			}, "M_BAD_JSON"},
			// Servers need not check self-signatures (clients do), and Synapse
			// takes keys without one: so do we.
			{"no self-signature", func() map[string]any {
				k := d.keys(t)
				k["signatures"] = map[string]any{}
				return k
			}, ""},
			{"only another user's signature", func() map[string]any {
				k := d.keys(t)
				delete(k, "signatures")
				return other.sign(t, k, uid("bob"), "BDEV")
			}, ""},
			{"missing fields", func() map[string]any { return map[string]any{"user_id": string(alice)} }, "M_BAD_JSON"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := e.s.UploadKeys(e.ctx, alice, "DEV1", &UploadRequest{DeviceKeys: mustJSON(t, tc.keys())})
				if got := errcode(err); got != tc.errcode {
					t.Fatalf("errcode = %q, want %q (%v)", got, tc.errcode, err)
				}
			})
		}
		// Unsigned extras the device sent are not stored; the display name is added.
		e.addDevice(alice, "DEV1")
		k := d.keys(t)
		k["unsigned"] = map[string]any{"x": 1}
		if _, err := e.s.UploadKeys(e.ctx, alice, "DEV1", &UploadRequest{DeviceKeys: mustJSON(t, k)}); err != nil {
			t.Fatal(err)
		}
		res, err := e.s.QueryLocalKeys(e.ctx, alice, map[id.UserID][]id.DeviceID{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		got := res.DeviceKeys[alice]["DEV1"]
		if u := gjson.GetBytes(got, "unsigned").Raw; u != `{"device_display_name":"name of DEV1"}` {
			t.Fatalf("unsigned = %s", u)
		}
		if !verifySigned(got, alice, "DEV1", d.key.pub) {
			t.Fatalf("queried keys no longer verify: %s", got)
		}
	})
}

func TestOneTimeKeysThenFallback(t *testing.T) {
	alice, bob := uid("alice"), uid("bob")
	forEachEnv(t, func(t *testing.T, e *env) {
		d := newDevice(t, alice, "ADEV")
		counts := e.upload(d, map[string]json.RawMessage{
			"signed_curve25519:AAAAAQ": d.otk(t, "otk1", false),
		}, map[string]json.RawMessage{"signed_curve25519:AAAAFB": d.otk(t, "fb1", true)})
		if counts["signed_curve25519"] != 1 {
			t.Fatalf("counts = %v", counts)
		}
		// A later upload's keys are given out after the earlier one's.
		counts = e.upload(d, map[string]json.RawMessage{"signed_curve25519:AAAAAg": d.otk(t, "otk2", false)}, nil)
		if counts["signed_curve25519"] != 2 {
			t.Fatalf("counts = %v", counts)
		}
		// Reusing a key ID for another key is refused; the same key again is fine.
		if _, err := e.s.UploadKeys(e.ctx, alice, "ADEV", &UploadRequest{OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:AAAAAg": d.otk(t, "other", false)}}); errcode(err) != "M_INVALID_PARAM" {
			t.Fatalf("reused key ID: %v", err)
		}
		e.upload(d, map[string]json.RawMessage{"signed_curve25519:AAAAAg": d.otk(t, "otk2", false)}, nil)

		claim := func() (string, string) {
			t.Helper()
			res, err := e.s.ClaimLocalKeys(e.ctx, map[id.UserID]map[id.DeviceID]string{alice: {"ADEV": "signed_curve25519"}, uid("nobody"): {"X": "signed_curve25519"}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 1 {
				t.Fatalf("claim answered for %d users", len(res))
			}
			for kid, k := range res[alice]["ADEV"] {
				return kid, gjson.GetBytes(k, "key").Str
			}
			t.Fatal("nothing claimed")
			return "", ""
		}
		unused := func() []string {
			t.Helper()
			u, err := e.s.UnusedFallbackKeyTypes(e.ctx, alice, "ADEV")
			if err != nil {
				t.Fatal(err)
			}
			return u
		}
		if u := unused(); !slices.Equal(u, []string{"signed_curve25519"}) {
			t.Fatalf("unused fallback types = %v", u)
		}
		for i, want := range []string{"otk1", "otk2", "fb1", "fb1"} {
			kid, key := claim()
			if key != want {
				t.Fatalf("claim %d returned %s (%s), want %s", i, key, kid, want)
			}
		}
		if u := unused(); len(u) != 0 {
			t.Fatalf("used fallback still reported unused: %v", u)
		}
		c, err := e.s.OneTimeKeyCounts(e.ctx, alice, "ADEV")
		if err != nil || c["signed_curve25519"] != 0 {
			t.Fatalf("counts after claims = %v, %v", c, err)
		}
		// Re-uploading the used fallback key keeps it used; a new one is unused.
		e.upload(d, nil, map[string]json.RawMessage{"signed_curve25519:AAAAFB": d.otk(t, "fb1", true)})
		if u := unused(); len(u) != 0 {
			t.Fatalf("re-upload reset the used flag: %v", u)
		}
		e.upload(d, nil, map[string]json.RawMessage{"signed_curve25519:AAAAFC": d.otk(t, "fb2", true)})
		if u := unused(); !slices.Equal(u, []string{"signed_curve25519"}) {
			t.Fatalf("new fallback key not unused: %v", u)
		}
		if _, key := claim(); key != "fb2" {
			t.Fatalf("claimed %s, want fb2", key)
		}
		// Two fallback keys of one algorithm in one upload are refused.
		_, err = e.s.UploadKeys(e.ctx, alice, "ADEV", &UploadRequest{FallbackKeys: map[string]json.RawMessage{
			"signed_curve25519:A": d.otk(t, "a", true), "signed_curve25519:B": d.otk(t, "b", true)}})
		if errcode(err) != "M_INVALID_PARAM" {
			t.Fatalf("two fallback keys: %v", err)
		}
		_ = bob
	})
}

func TestConcurrentClaimsGiveEachKeyOnce(t *testing.T) {
	alice := uid("alice")
	forEachEnv(t, func(t *testing.T, e *env) {
		d := newDevice(t, alice, "ADEV")
		otks := map[string]json.RawMessage{}
		const n = 40
		for i := range n {
			otks[fmt.Sprintf("signed_curve25519:K%03d", i)] = d.otk(t, fmt.Sprintf("key%03d", i), false)
		}
		e.upload(d, otks, map[string]json.RawMessage{"signed_curve25519:FB": d.otk(t, "fallback", true)})
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for range 2 * n {
			wg.Go(func() {
				res, err := e.s.ClaimLocalKeys(e.ctx, map[id.UserID]map[id.DeviceID]string{alice: {"ADEV": "signed_curve25519"}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, k := range res[alice]["ADEV"] {
					seen[gjson.GetBytes(k, "key").Str]++
				}
			})
		}
		wg.Wait()
		if len(seen) != n+1 || seen["fallback"] != n {
			t.Fatalf("got %d distinct keys, fallback %d times; want %d and %d", len(seen), seen["fallback"], n+1, n)
		}
		for k, c := range seen {
			if k != "fallback" && c != 1 {
				t.Fatalf("one-time key %s claimed %d times", k, c)
			}
		}
	})
}

func TestToDeviceDeliveredOnceAndDeletedAfterAck(t *testing.T) {
	alice, bob := uid("alice"), uid("bob")
	forEachEnv(t, func(t *testing.T, e *env) {
		e.addDevice(alice, "A1")
		e.addDevice(bob, "B1")
		e.addDevice(bob, "B2")
		var woken []id.UserID
		e.s.Subscribe(func(c Change) {
			if c.Kind == ToDeviceChange {
				woken = append(woken, c.Users...)
			}
		})
		msgs := ToDeviceMessages{
			bob:              {"*": json.RawMessage(`{"n":"all"}`), "B2": json.RawMessage(`{"n":"two"}`)},
			uid("nobody"):    {"*": json.RawMessage(`{}`)},
			"@far:elsewhere": {"X": json.RawMessage(`{}`)},
		}
		fresh, err := e.s.SendToDevice(e.ctx, alice, "m.test", msgs, &Txn{DeviceID: "A1", ID: "t1"})
		if err != nil || !fresh {
			t.Fatalf("send: %v %v", fresh, err)
		}
		// The same transaction again stores nothing.
		if fresh, err := e.s.SendToDevice(e.ctx, alice, "m.test", msgs, &Txn{DeviceID: "A1", ID: "t1"}); err != nil || fresh {
			t.Fatalf("repeat: %v %v", fresh, err)
		}
		if !slices.Equal(woken, []id.UserID{bob}) {
			t.Fatalf("woken = %v", woken)
		}
		sync := func(dev id.DeviceID, since int64) *SyncResult {
			t.Helper()
			r, err := e.s.Sync(e.ctx, SyncRequest{UserID: bob, DeviceID: dev, Since: since, Upto: e.s.Position(), Initial: since == 0})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		r1 := sync("B1", 0)
		if len(r1.ToDevice) != 1 || gjson.GetBytes(r1.ToDevice[0], "content.n").Str != "all" ||
			gjson.GetBytes(r1.ToDevice[0], "sender").Str != string(alice) || gjson.GetBytes(r1.ToDevice[0], "type").Str != "m.test" {
			t.Fatalf("B1 got %s", r1.ToDevice)
		}
		// Not acknowledged yet: a sync from the same point gets it again.
		if again := sync("B1", 0); len(again.ToDevice) != 1 {
			t.Fatalf("unacknowledged message not redelivered: %s", again.ToDevice)
		}
		// A sync from the returned token acknowledges it: delivered never again, and gone.
		if r2 := sync("B1", r1.Next); len(r2.ToDevice) != 0 {
			t.Fatalf("acknowledged message delivered again: %s", r2.ToDevice)
		}
		if again := sync("B1", 0); len(again.ToDevice) != 0 {
			t.Fatalf("acknowledged message not deleted: %s", again.ToDevice)
		}
		var left int
		if err := e.db.QueryRow(e.ctx, `SELECT COUNT(*) FROM to_device_messages WHERE device_id = 'B1'`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("%d rows left for B1 (%v)", left, err)
		}
		// B2 got its own content, not the "*" one; its message is the newest, so
		// the token points exactly at it, and acknowledging it deletes it.
		r := sync("B2", 0)
		if len(r.ToDevice) != 1 || gjson.GetBytes(r.ToDevice[0], "content.n").Str != "two" {
			t.Fatalf("B2 got %s", r.ToDevice)
		}
		sync("B2", r.Next)
		if err := e.db.QueryRow(e.ctx, `SELECT COUNT(*) FROM to_device_messages`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("%d rows left (%v)", left, err)
		}
	})
}

func TestToDeviceLimitContinues(t *testing.T) {
	alice, bob := uid("alice"), uid("bob")
	forEachEnv(t, func(t *testing.T, e *env) {
		e.addDevice(bob, "B1")
		for i := range 7 {
			if _, err := e.s.SendToDevice(e.ctx, alice, "m.test", ToDeviceMessages{bob: {"B1": mustJSON(t, map[string]int{"i": i})}}, nil); err != nil {
				t.Fatal(err)
			}
		}
		var got []int64
		since := int64(0)
		for range 5 {
			r, err := e.s.Sync(e.ctx, SyncRequest{UserID: bob, DeviceID: "B1", Since: since, Upto: e.s.Position(), ToDeviceLimit: 3})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range r.ToDevice {
				got = append(got, gjson.GetBytes(ev, "content.i").Int())
			}
			since = r.Next
		}
		if !slices.Equal(got, []int64{0, 1, 2, 3, 4, 5, 6}) {
			t.Fatalf("delivered %v", got)
		}
	})
}

func TestBackupReplacementRules(t *testing.T) {
	tests := []struct {
		name     string
		old, new BackupKey
		replace  bool
	}{
		{"verified beats unverified", BackupKey{IsVerified: false, FirstMessageIndex: 0}, BackupKey{IsVerified: true, FirstMessageIndex: 5, ForwardedCount: 3}, true},
		{"unverified never beats verified", BackupKey{IsVerified: true, FirstMessageIndex: 5}, BackupKey{IsVerified: false, FirstMessageIndex: 0}, false},
		{"lower first index", BackupKey{FirstMessageIndex: 5, ForwardedCount: 0}, BackupKey{FirstMessageIndex: 2, ForwardedCount: 4}, true},
		{"higher first index", BackupKey{FirstMessageIndex: 2}, BackupKey{FirstMessageIndex: 5}, false},
		{"lower forwarded count", BackupKey{FirstMessageIndex: 1, ForwardedCount: 3}, BackupKey{FirstMessageIndex: 1, ForwardedCount: 1}, true},
		{"higher forwarded count", BackupKey{FirstMessageIndex: 1, ForwardedCount: 1}, BackupKey{FirstMessageIndex: 1, ForwardedCount: 2}, false},
		{"tie keeps the stored key", BackupKey{IsVerified: true, FirstMessageIndex: 1, ForwardedCount: 1}, BackupKey{IsVerified: true, FirstMessageIndex: 1, ForwardedCount: 1}, false},
	}
	alice := uid("alice")
	forEachEnv(t, func(t *testing.T, e *env) {
		if _, err := e.s.PutBackupKeys(e.ctx, alice, "1", BackupKeys{}); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("put without a backup: %v", err)
		}
		v, err := e.s.CreateBackupVersion(e.ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{"public_key":"abc"}`))
		if err != nil {
			t.Fatal(err)
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if got := shouldReplace(&tc.old, &tc.new); got != tc.replace {
					t.Fatalf("shouldReplace = %v", got)
				}
				room := id.RoomID(fmt.Sprintf("!r%d:hs.test", i))
				put := func(k BackupKey, tag string) *BackupUpdate {
					t.Helper()
					k.SessionData = mustJSON(t, map[string]string{"tag": tag})
					up, err := e.s.PutBackupKeys(e.ctx, alice, v, BackupKeys{room: {"sess": &k}})
					if err != nil {
						t.Fatal(err)
					}
					return up
				}
				first := put(tc.old, "old")
				second := put(tc.new, "new")
				keys, err := e.s.BackupKeysOf(e.ctx, alice, v, room, "sess")
				if err != nil {
					t.Fatal(err)
				}
				want := "old"
				if tc.replace {
					want = "new"
				}
				if got := gjson.GetBytes(keys[room]["sess"].SessionData, "tag").Str; got != want {
					t.Fatalf("stored %s, want %s", got, want)
				}
				if second.Count != first.Count {
					t.Fatalf("count went %d -> %d for the same session", first.Count, second.Count)
				}
				if (second.ETag != first.ETag) != tc.replace {
					t.Fatalf("etag %s -> %s with replace=%v", first.ETag, second.ETag, tc.replace)
				}
			})
		}
		b, err := e.s.Backup(e.ctx, alice, "")
		if err != nil || b.Count != int64(len(tests)) || b.Version != v {
			t.Fatalf("backup = %+v, %v", b, err)
		}
		// A new version takes over; the old one can still be read but not written.
		v2, err := e.s.CreateBackupVersion(e.ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.s.PutBackupKeys(e.ctx, alice, v, BackupKeys{"!x:hs.test": {"s": {SessionData: json.RawMessage(`{}`)}}})
		if errcode(err) != "M_WRONG_ROOM_KEYS_VERSION" {
			t.Fatalf("write to old version: %v", err)
		}
		if old, err := e.s.BackupKeysOf(e.ctx, alice, v, "", ""); err != nil || len(old) != len(tests) {
			t.Fatalf("old version read: %d rooms, %v", len(old), err)
		}
		// Deleting the newest makes the previous one current; deleting twice is fine.
		if err := e.s.DeleteBackup(e.ctx, alice, v2); err != nil {
			t.Fatal(err)
		}
		if err := e.s.DeleteBackup(e.ctx, alice, v2); err != nil {
			t.Fatalf("second delete: %v", err)
		}
		if err := e.s.DeleteBackup(e.ctx, alice, "99"); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("delete of unknown version: %v", err)
		}
		if b, err := e.s.Backup(e.ctx, alice, ""); err != nil || b.Version != v {
			t.Fatalf("current after delete = %+v, %v", b, err)
		}
		up, err := e.s.DeleteBackupKeys(e.ctx, alice, v, "!r0:hs.test", "")
		if err != nil || up.Count != int64(len(tests)-1) {
			t.Fatalf("delete room keys: %+v, %v", up, err)
		}
	})
}

func TestDeleteDeviceKeys(t *testing.T) {
	alice := uid("alice")
	forEachEnv(t, func(t *testing.T, e *env) {
		e.addDevice(alice, "D1")
		d := newDevice(t, alice, "D1")
		e.upload(d, map[string]json.RawMessage{"signed_curve25519:1": d.otk(t, "k", false)}, map[string]json.RawMessage{"signed_curve25519:2": d.otk(t, "f", true)})
		if _, err := e.s.SendToDevice(e.ctx, alice, "m.x", ToDeviceMessages{alice: {"D1": json.RawMessage(`{}`)}}, nil); err != nil {
			t.Fatal(err)
		}
		before := e.s.Position()
		var changes []Change
		e.s.Subscribe(func(c Change) { changes = append(changes, c) })
		if err := e.s.DeleteDeviceKeys(e.ctx, alice, []id.DeviceID{"D1"}); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"device_keys", "one_time_keys", "fallback_keys", "to_device_messages"} {
			var n int
			if err := e.db.QueryRow(e.ctx, `SELECT COUNT(*) FROM `+table+` WHERE device_id = 'D1'`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%s: %d rows left (%v)", table, n, err)
			}
		}
		if len(changes) != 1 || changes[0].Kind != DeviceListChange || !changes[0].Deleted || changes[0].User != alice || changes[0].PrevPos == 0 {
			t.Fatalf("changes = %+v", changes)
		}
		changed, _, err := e.s.DeviceListChanges(e.ctx, alice, before, e.s.Position(), 0, 0)
		if err != nil || !slices.Equal(changed, []id.UserID{alice}) {
			t.Fatalf("changed = %v, %v", changed, err)
		}
		// Deleting a device without keys changes nothing.
		if err := e.s.DeleteDeviceKeys(e.ctx, alice, []id.DeviceID{"NOKEYS"}); err != nil || len(changes) != 1 {
			t.Fatalf("keyless delete: %v, %d changes", err, len(changes))
		}
	})
}

func TestDeviceListChangesFollowSharedRooms(t *testing.T) {
	alice, bob, carol := uid("alice"), uid("bob"), uid("carol")
	forEachEnv(t, func(t *testing.T, e *env) {
		r := e.newRoom(alice)
		r.join(bob)
		pos0, room0 := e.s.Position(), e.rs.StreamPosition()

		// Key changes: bob shares a room with alice, carol does not.
		e.upload(newDevice(t, bob, "B1"), nil, nil)
		e.upload(newDevice(t, carol, "C1"), nil, nil)
		changed, left, err := e.s.DeviceListChanges(e.ctx, alice, pos0, e.s.Position(), room0, room0)
		if err != nil || !slices.Equal(changed, []id.UserID{bob}) || len(left) != 0 {
			t.Fatalf("changed=%v left=%v err=%v", changed, left, err)
		}

		// Carol joins: she now shares a room with alice and bob.
		pos1, room1 := e.s.Position(), e.rs.StreamPosition()
		r.join(carol)
		room2 := e.rs.StreamPosition()
		for _, u := range []id.UserID{alice, bob} {
			changed, _, err := e.s.DeviceListChanges(e.ctx, u, pos1, e.s.Position(), room1, room2)
			if err != nil || !slices.Equal(changed, []id.UserID{carol}) {
				t.Fatalf("%s: changed=%v err=%v", u, changed, err)
			}
		}
		// Carol's own join lists her too, for her other devices (as Synapse).
		changed, _, err = e.s.DeviceListChanges(e.ctx, carol, pos1, e.s.Position(), room1, room2)
		if err != nil || !slices.Equal(changed, []id.UserID{alice, bob, carol}) {
			t.Fatalf("carol: changed=%v err=%v", changed, err)
		}

		// Bob leaves their only shared room: he is in alice's left, and she in his.
		r.leave(bob)
		room3 := e.rs.StreamPosition()
		_, left, err = e.s.DeviceListChanges(e.ctx, alice, e.s.Position(), e.s.Position(), room2, room3)
		if err != nil || !slices.Equal(left, []id.UserID{bob}) {
			t.Fatalf("alice left=%v err=%v", left, err)
		}
		_, left, err = e.s.DeviceListChanges(e.ctx, bob, e.s.Position(), e.s.Position(), room2, room3)
		if err != nil || !slices.Equal(left, []id.UserID{alice, carol}) {
			t.Fatalf("bob left=%v err=%v", left, err)
		}
		// His later key changes no longer reach alice.
		pos4 := e.s.Position()
		e.upload(newDevice(t, bob, "B2"), nil, nil)
		changed, _, err = e.s.DeviceListChanges(e.ctx, alice, pos4, e.s.Position(), room3, room3)
		if err != nil || len(changed) != 0 {
			t.Fatalf("changed after leaving = %v, %v", changed, err)
		}
	})
}

func TestRemoteDeviceListChanged(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		var got []Change
		e.s.Subscribe(func(c Change) { got = append(got, c) })
		if err := e.s.RemoteDeviceListChanged(e.ctx, uid("alice")); err == nil {
			t.Fatal("a local user was accepted")
		}
		before := e.s.Position()
		remote := id.UserID("@zed:elsewhere.example")
		for range 2 {
			if err := e.s.RemoteDeviceListChanged(e.ctx, remote); err != nil {
				t.Fatal(err)
			}
		}
		if e.s.Position() != before+2 || len(got) != 2 || got[1].User != remote || got[1].PrevPos != got[0].Pos {
			t.Fatalf("position %d -> %d, changes %+v", before, e.s.Position(), got)
		}
		// Only users sharing a room are reported; the remote user shares none.
		changed, _, err := e.s.DeviceListChanges(e.ctx, uid("alice"), before, e.s.Position(), 0, 0)
		if err != nil || len(changed) != 0 {
			t.Fatalf("changed = %v, %v", changed, err)
		}
	})
}
