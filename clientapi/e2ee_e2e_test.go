package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// TestKeysOverHTTP drives /keys/upload, /keys/query, /keys/claim and
// /keys/changes as clients do, with device_lists and key counts in /sync.
func TestKeysOverHTTP(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		encryptedRoom(t, alice, bob)
		ad := newE2EDevice(t, alice)
		bobSync := &syncer{t: t, api: bob.api}
		bobSync.next()
		aliceSync := &syncer{t: t, api: alice.api}
		aliceSync.next()
		startToken := bobSync.since

		r := alice.api.do("POST", v3+"/keys/upload", map[string]any{
			"device_keys":   ad.deviceKeys(t),
			"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": ad.signedKey(t, "otk-1", false)},
			"fallback_keys": map[string]any{"signed_curve25519:AAAAFA": ad.signedKey(t, "fallback-1", true)},
		}).expect(t, http.StatusOK, "")
		if got := fmt.Sprint(r.body["one_time_key_counts"]); got != "map[signed_curve25519:1]" {
			t.Fatalf("counts = %s", got)
		}
		// A device may upload keys only for itself.
		other := ad.deviceKeys(t)
		other["device_id"] = "NOTMINE"
		alice.api.do("POST", v3+"/keys/upload", map[string]any{"device_keys": ad.key.sign(t, other, alice.id, string(ad.device))}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

		// Bob sees the change in /sync and the keys in /keys/query.
		if ch := deviceListsChanged(bobSync.next()); !containsStr(ch, string(alice.id)) {
			t.Fatalf("bob's device_lists.changed = %v", ch)
		}
		q := bob.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{string(alice.id): []string{}, "@x:elsewhere.example": []string{}}}).
			expect(t, http.StatusOK, "")
		devKeys, _ := json.Marshal(q.body["device_keys"].(map[string]any)[string(alice.id)].(map[string]any)[string(ad.device)])
		if ok, err := signatures.VerifySignatureJSON(json.RawMessage(devKeys), alice.id, string(ad.device), id.Ed25519(ad.key.pub)); !ok || err != nil {
			t.Fatalf("queried keys do not verify (%v): %s", err, devKeys)
		}
		if _, ok := q.body["failures"].(map[string]any)["elsewhere.example"]; !ok {
			t.Fatalf("remote server not in failures: %s", q.raw)
		}

		// Claims: the one-time key, then the fallback key, which stays.
		claim := func() string {
			t.Helper()
			c := bob.api.do("POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{string(alice.id): map[string]string{string(ad.device): "signed_curve25519"}}}).
				expect(t, http.StatusOK, "")
			for _, k := range c.body["one_time_keys"].(map[string]any)[string(alice.id)].(map[string]any)[string(ad.device)].(map[string]any) {
				return k.(map[string]any)["key"].(string)
			}
			t.Fatalf("nothing claimed: %s", c.raw)
			return ""
		}
		ar := aliceSync.next()
		if fb := fmt.Sprint(ar.body["device_unused_fallback_key_types"]); fb != "[signed_curve25519]" {
			t.Fatalf("unused fallback types before claims = %s", fb)
		}
		for i, want := range []string{"otk-1", "fallback-1", "fallback-1"} {
			if got := claim(); got != want {
				t.Fatalf("claim %d = %s, want %s", i, got, want)
			}
		}
		ar = aliceSync.next()
		if fb, ok := ar.body["device_unused_fallback_key_types"].([]any); !ok || len(fb) != 0 {
			t.Fatalf("unused fallback types after use = %v (%s)", ar.body["device_unused_fallback_key_types"], ar.raw)
		}
		if c := fmt.Sprint(ar.body["device_one_time_keys_count"]); c != "map[]" && c != "map[signed_curve25519:0]" && c != "<nil>" {
			t.Fatalf("one-time key count after claims = %s", c)
		}

		// A new login of a room member that uploads keys shows in device_lists.
		lr, newAPI := login(t, s, "alice", alice.password)
		lr.expect(t, http.StatusOK, "")
		nd := &e2eDevice{user: alice.id, device: id.DeviceID(lr.str("device_id")), key: newKeySigner(t), api: newAPI}
		newAPI.do("POST", v3+"/keys/upload", map[string]any{"device_keys": nd.deviceKeys(t)}).expect(t, http.StatusOK, "")
		if ch := deviceListsChanged(bobSync.next()); !containsStr(ch, string(alice.id)) {
			t.Fatalf("new login not in bob's device_lists.changed: %v", ch)
		}
		q = bob.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{string(alice.id): []string{}}}).expect(t, http.StatusOK, "")
		if n := len(q.body["device_keys"].(map[string]any)[string(alice.id)].(map[string]any)); n != 2 {
			t.Fatalf("alice has %d devices with keys, want 2", n)
		}

		// Deleting the device deletes its keys and shows in device_lists.
		uia(t, alice.api, "DELETE", v3+"/devices/"+esc(string(nd.device)), map[string]any{}, alice).expect(t, http.StatusOK, "")
		if ch := deviceListsChanged(bobSync.next()); !containsStr(ch, string(alice.id)) {
			t.Fatalf("device deletion not in bob's device_lists.changed: %v", ch)
		}
		q = bob.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{string(alice.id): []string{}}}).expect(t, http.StatusOK, "")
		if _, still := q.body["device_keys"].(map[string]any)[string(alice.id)].(map[string]any)[string(nd.device)]; still {
			t.Fatalf("deleted device's keys still served: %s", q.raw)
		}

		// /keys/changes from the first token: alice (who shares a room), not carol.
		cd := newE2EDevice(t, registerUser(t, s, "carol"))
		cd.api.do("POST", v3+"/keys/upload", map[string]any{"device_keys": cd.deviceKeys(t)}).expect(t, http.StatusOK, "")
		kc := bob.api.do("GET", v3+"/keys/changes?from="+url.QueryEscape(startToken)+"&to="+url.QueryEscape(bobSync.next().str("next_batch")), nil).
			expect(t, http.StatusOK, "")
		if got := fmt.Sprint(kc.body["changed"]); got != fmt.Sprint([]any{string(alice.id)}) {
			t.Fatalf("keys/changes changed = %s", got)
		}
		bob.api.do("GET", v3+"/keys/changes?from=garbage", nil).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestToDeviceOverSync checks that a to-device message arrives in /sync once,
// stays until a later since token acknowledges it, and is then deleted.
func TestToDeviceOverSync(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		bobSync := &syncer{t: t, api: bob.api}
		bobSync.next()
		first := bobSync.since

		body := map[string]any{"messages": map[string]any{string(bob.id): map[string]any{"*": map[string]any{"secret": "s1"}}}}
		alice.api.do("PUT", v3+"/sendToDevice/m.test.event/txn1", body).expect(t, http.StatusOK, "")
		// Retrying the transaction sends nothing more.
		alice.api.do("PUT", v3+"/sendToDevice/m.test.event/txn1", body).expect(t, http.StatusOK, "")

		r := bobSync.next()
		evs := toDeviceEvents(r)
		if len(evs) != 1 || evs[0]["type"] != "m.test.event" || evs[0]["sender"] != string(alice.id) ||
			evs[0]["content"].(map[string]any)["secret"] != "s1" {
			t.Fatalf("to_device = %s", r.raw)
		}
		// Not yet acknowledged: the same since token gets it again.
		if evs := toDeviceEvents(bobSync.from(first)); len(evs) != 1 {
			t.Fatalf("unacknowledged message not redelivered: %v", evs)
		}
		// The next sync acknowledges it; after that, no token brings it back.
		if evs := toDeviceEvents(bobSync.next()); len(evs) != 0 {
			t.Fatalf("acknowledged message delivered again: %v", evs)
		}
		if evs := toDeviceEvents(bobSync.from(first)); len(evs) != 0 {
			t.Fatalf("acknowledged message not deleted: %v", evs)
		}
		var n int
		if err := s.DB.QueryRow(t.Context(), `SELECT COUNT(*) FROM to_device_messages`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d messages left in storage (%v)", n, err)
		}
		alice.api.do("PUT", v3+"/sendToDevice/m.test.event/txn2", map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		alice.api.do("PUT", v3+"/sendToDevice/m.test.event/txn3", map[string]any{"messages": map[string]any{"not-a-user": map[string]any{}}}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestCrossSigningOverHTTP uploads cross-signing keys (UIA only to replace
// them) and signatures, rejecting a bad signature with M_INVALID_SIGNATURE.
func TestCrossSigningOverHTTP(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		ad := newE2EDevice(t, alice)
		alice.api.do("POST", v3+"/keys/upload", map[string]any{"device_keys": ad.deviceKeys(t)}).expect(t, http.StatusOK, "")

		master, ssk, usk := newKeySigner(t), newKeySigner(t), newKeySigner(t)
		csKey := func(k *keySigner, usage string) map[string]any {
			obj := map[string]any{"user_id": string(alice.id), "usage": []string{usage}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}
			if k != master {
				master.sign(t, obj, alice.id, master.pub)
			}
			return obj
		}
		upload := map[string]any{"master_key": csKey(master, "master"), "self_signing_key": csKey(ssk, "self_signing"), "user_signing_key": csKey(usk, "user_signing")}
		// First upload: no UIA. The same keys again: no UIA either.
		alice.api.do("POST", v3+"/keys/device_signing/upload", upload).expect(t, http.StatusOK, "")
		alice.api.do("POST", v3+"/keys/device_signing/upload", upload).expect(t, http.StatusOK, "")
		// A self-signing key not signed by the master key.
		bad := map[string]any{"self_signing_key": func() map[string]any {
			k := newKeySigner(t)
			return newKeySigner(t).sign(t, map[string]any{"user_id": string(alice.id), "usage": []string{"self_signing"}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}, alice.id, master.pub)
		}()}
		uia(t, alice.api, "POST", v3+"/keys/device_signing/upload", bad, alice).expect(t, http.StatusBadRequest, "M_INVALID_SIGNATURE")
		// Replacing keys needs UIA.
		master2 := newKeySigner(t)
		uia(t, alice.api, "POST", v3+"/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
			"user_id": string(alice.id), "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + master2.pub: master2.pub}}}, alice).
			expect(t, http.StatusOK, "")
		master = master2
		ssk2 := newKeySigner(t)
		uia(t, alice.api, "POST", v3+"/keys/device_signing/upload", map[string]any{"self_signing_key": csKey(ssk2, "self_signing")}, alice).
			expect(t, http.StatusOK, "")

		// Signing the device with the self-signing key; a forged signature fails.
		good := ssk2.sign(t, ad.deviceKeys(t), alice.id, ssk2.pub)
		forged := newKeySigner(t).sign(t, ad.deviceKeys(t), alice.id, ssk2.pub)
		r := alice.api.do("POST", v3+"/keys/signatures/upload", map[string]any{string(alice.id): map[string]any{string(ad.device): forged}}).
			expect(t, http.StatusOK, "")
		fail, _ := r.body["failures"].(map[string]any)[string(alice.id)].(map[string]any)[string(ad.device)].(map[string]any)
		if fail["errcode"] != "M_INVALID_SIGNATURE" {
			t.Fatalf("forged signature accepted: %s", r.raw)
		}
		r = alice.api.do("POST", v3+"/keys/signatures/upload", map[string]any{string(alice.id): map[string]any{string(ad.device): good}}).
			expect(t, http.StatusOK, "")
		if f, _ := r.body["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("good signature failed: %s", r.raw)
		}
		q := bob.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{string(alice.id): []string{}}}).expect(t, http.StatusOK, "")
		dk, _ := json.Marshal(q.body["device_keys"].(map[string]any)[string(alice.id)].(map[string]any)[string(ad.device)])
		if ok, _ := signatures.VerifySignatureJSON(json.RawMessage(dk), alice.id, ssk2.pub, id.Ed25519(ssk2.pub)); !ok {
			t.Fatalf("self-signing signature not served: %s", dk)
		}
		if _, ok := q.body["master_keys"].(map[string]any)[string(alice.id)]; !ok {
			t.Fatalf("no master key served: %s", q.raw)
		}
		if usk, _ := q.body["user_signing_keys"].(map[string]any); usk[string(alice.id)] != nil {
			t.Fatalf("alice's user-signing key shown to bob: %s", q.raw)
		}
	})
}

// TestKeyBackupOverHTTP covers /room_keys: versions, the three key paths, the
// replacement rules, etag and count.
func TestKeyBackupOverHTTP(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		a := alice.api
		a.do("GET", v3+"/room_keys/version", nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		v := a.do("POST", v3+"/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk"}}).
			expect(t, http.StatusOK, "").str("version")
		a.do("POST", v3+"/room_keys/version", map[string]any{"algorithm": alg}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")

		room, sess := "!room:hs.test", "sess/with+slash"
		key := func(fmi, fc int, verified bool, tag string) map[string]any {
			return map[string]any{"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified, "session_data": map[string]any{"tag": tag}}
		}
		sessPath := v3 + "/room_keys/keys/" + esc(room) + "/" + esc(sess) + "?version=" + v
		put := func(k map[string]any) resp {
			t.Helper()
			return a.do("PUT", sessPath, k).expect(t, http.StatusOK, "")
		}
		stored := func() string {
			t.Helper()
			return a.do("GET", sessPath, nil).expect(t, http.StatusOK, "").body["session_data"].(map[string]any)["tag"].(string)
		}
		r1 := put(key(5, 1, false, "a"))
		if r1.body["count"] != float64(1) {
			t.Fatalf("count = %v", r1.body["count"])
		}
		steps := []struct {
			key     map[string]any
			want    string
			changed bool
		}{
			{key(3, 2, false, "b"), "b", true},  // lower first_message_index wins
			{key(3, 3, false, "c"), "b", false}, // higher forwarded_count loses
			{key(3, 1, false, "d"), "d", true},  // lower forwarded_count wins
			{key(9, 9, true, "e"), "e", true},   // verified beats unverified
			{key(0, 0, false, "f"), "e", false}, // unverified never beats verified
		}
		etag := r1.body["etag"]
		for i, st := range steps {
			r := put(st.key)
			if got := stored(); got != st.want {
				t.Fatalf("step %d: stored %s, want %s", i, got, st.want)
			}
			if (r.body["etag"] != etag) != st.changed || r.body["count"] != float64(1) {
				t.Fatalf("step %d: etag %v -> %v, count %v", i, etag, r.body["etag"], r.body["count"])
			}
			etag = r.body["etag"]
		}
		// Whole-backup and per-room uploads and reads.
		a.do("PUT", v3+"/room_keys/keys?version="+v, map[string]any{"rooms": map[string]any{
			"!other:hs.test": map[string]any{"sessions": map[string]any{"s1": key(0, 0, false, "x"), "s2": key(0, 0, false, "y")}},
		}}).expect(t, http.StatusOK, "")
		all := a.do("GET", v3+"/room_keys/keys?version="+v, nil).expect(t, http.StatusOK, "")
		if n := len(all.body["rooms"].(map[string]any)); n != 2 {
			t.Fatalf("%d rooms backed up: %s", n, all.raw)
		}
		per := a.do("GET", v3+"/room_keys/keys/"+esc("!other:hs.test")+"?version="+v, nil).expect(t, http.StatusOK, "")
		if n := len(per.body["sessions"].(map[string]any)); n != 2 {
			t.Fatalf("%d sessions in room: %s", n, per.raw)
		}
		empty := a.do("GET", v3+"/room_keys/keys/"+esc("!none:hs.test")+"?version="+v, nil).expect(t, http.StatusOK, "")
		if string(empty.raw) != `{"sessions":{}}` {
			t.Fatalf("empty room = %s", empty.raw)
		}
		a.do("GET", v3+"/room_keys/keys/"+esc("!none:hs.test")+"/nosuch?version="+v, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		info := a.do("GET", v3+"/room_keys/version/"+v, nil).expect(t, http.StatusOK, "")
		if info.body["count"] != float64(3) || info.body["algorithm"] != alg || info.body["etag"] == nil {
			t.Fatalf("version info = %s", info.raw)
		}
		// Only the current version takes keys.
		v2 := a.do("POST", v3+"/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{}}).expect(t, http.StatusOK, "").str("version")
		wrong := a.do("PUT", sessPath, key(0, 0, true, "z")).expect(t, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
		if wrong.body["current_version"] != v2 {
			t.Fatalf("current_version = %v", wrong.body["current_version"])
		}
		a.do("PUT", v3+"/room_keys/version/"+v2, map[string]any{"algorithm": "other", "auth_data": map[string]any{}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		a.do("PUT", v3+"/room_keys/version/"+v2, map[string]any{"algorithm": alg, "auth_data": map[string]any{"new": true}}).expect(t, http.StatusOK, "")
		a.do("DELETE", v3+"/room_keys/keys/"+esc("!other:hs.test")+"?version="+v, nil).expect(t, http.StatusOK, "")
		a.do("DELETE", v3+"/room_keys/version/"+v2, nil).expect(t, http.StatusOK, "")
		a.do("DELETE", v3+"/room_keys/version/"+v2, nil).expect(t, http.StatusOK, "")
		a.do("GET", v3+"/room_keys/version/"+v2, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		cur := a.do("GET", v3+"/room_keys/version", nil).expect(t, http.StatusOK, "")
		if cur.str("version") != v || cur.body["count"] != float64(1) {
			t.Fatalf("current after delete = %s", cur.raw)
		}
	})
}

// TestDehydratedDeviceOverHTTP covers the MSC3814 endpoints Element uses.
func TestDehydratedDeviceOverHTTP(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
		const prefix = "/_matrix/client/unstable/org.matrix.msc3814.v1"
		a := alice.api
		a.do("GET", prefix+"/dehydrated_device", nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		// The device ID is a curve25519 key: base64, possibly with "/".
		dd := &e2eDevice{user: alice.id, device: "dehydrated/key+1", key: newKeySigner(t), api: a}
		a.do("PUT", prefix+"/dehydrated_device", map[string]any{
			"device_id": dd.device, "device_data": map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "p"},
			"initial_device_display_name": "Dehydrated", "device_keys": dd.deviceKeys(t),
			"fallback_keys": map[string]any{"signed_curve25519:AAAAAA": dd.signedKey(t, "fb", true)},
		}).expect(t, http.StatusOK, "")
		got := a.do("GET", prefix+"/dehydrated_device", nil).expect(t, http.StatusOK, "")
		if got.str("device_id") != string(dd.device) || got.body["device_data"].(map[string]any)["device_pickle"] != "p" {
			t.Fatalf("dehydrated device = %s", got.raw)
		}
		// Others see its keys and can claim its fallback key and send to it.
		q := bob.api.do("POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{string(alice.id): []string{string(dd.device)}}}).expect(t, http.StatusOK, "")
		if _, ok := q.body["device_keys"].(map[string]any)[string(alice.id)].(map[string]any)[string(dd.device)]; !ok {
			t.Fatalf("dehydrated device keys not served: %s", q.raw)
		}
		for i := range 3 {
			bob.api.do("PUT", v3+"/sendToDevice/m.room_key/t"+fmt.Sprint(i), map[string]any{"messages": map[string]any{
				string(alice.id): map[string]any{"*": map[string]any{"i": i}}}}).expect(t, http.StatusOK, "")
		}
		evPath := prefix + "/dehydrated_device/" + esc(string(dd.device)) + "/events"
		r := a.do("POST", evPath, map[string]any{}).expect(t, http.StatusOK, "")
		if evs, _ := r.body["events"].([]any); len(evs) != 3 {
			t.Fatalf("events = %s", r.raw)
		}
		// Nothing is deleted: the same request gives the same events; the token
		// leads to an empty last page.
		if evs, _ := a.do("POST", evPath, map[string]any{}).expect(t, http.StatusOK, "").body["events"].([]any); len(evs) != 3 {
			t.Fatal("events were consumed")
		}
		last := a.do("GET", evPath+"?next_batch="+url.QueryEscape(r.str("next_batch")), nil).expect(t, http.StatusOK, "")
		if evs, _ := last.body["events"].([]any); len(evs) != 0 || last.str("next_batch") == "" {
			t.Fatalf("last page = %s", last.raw)
		}
		a.do("POST", prefix+"/dehydrated_device/OTHER/events", map[string]any{}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		del := a.do("DELETE", prefix+"/dehydrated_device", nil).expect(t, http.StatusOK, "")
		if del.str("device_id") != string(dd.device) {
			t.Fatalf("delete = %s", del.raw)
		}
		a.do("GET", prefix+"/dehydrated_device", nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// TestE2EEBadInput checks that the E2EE endpoints answer malformed requests
// with the spec's errors, never a 500.
func TestE2EEBadInput(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		const dd = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		tests := []struct {
			method, path string
			body         any
			status       int
			errcode      string
		}{
			{"POST", v3 + "/keys/upload", "not json", 400, "M_NOT_JSON"},
			{"POST", v3 + "/keys/upload", map[string]any{"one_time_keys": []any{}}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/keys/upload", map[string]any{"one_time_keys": map[string]any{"nocolon": map[string]any{}}}, 400, "M_INVALID_PARAM"},
			{"POST", v3 + "/keys/upload", map[string]any{"one_time_keys": map[string]any{"a:b": 5}}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/keys/upload", map[string]any{"device_keys": "x"}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/keys/query", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"POST", v3 + "/keys/query", map[string]any{"device_keys": map[string]any{"bad": []any{}}}, 400, "M_INVALID_PARAM"},
			{"POST", v3 + "/keys/query", map[string]any{"device_keys": map[string]any{"@a:hs.test": "x"}}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/keys/claim", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"POST", v3 + "/keys/claim", map[string]any{"one_time_keys": map[string]any{"@a:hs.test": []any{}}}, 400, "M_BAD_JSON"},
			{"GET", v3 + "/keys/changes", nil, 400, "M_MISSING_PARAM"},
			{"PUT", v3 + "/sendToDevice/m.x/t1", map[string]any{"messages": map[string]any{string(alice.id): map[string]any{"D": "str"}}}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/keys/device_signing/upload", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"POST", v3 + "/keys/device_signing/upload", map[string]any{"master_key": "x"}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/keys/signatures/upload", []any{}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/keys/signatures/upload", map[string]any{"bad": map[string]any{}}, 400, "M_INVALID_PARAM"},
			{"POST", v3 + "/room_keys/version", map[string]any{"algorithm": 5}, 400, "M_BAD_JSON"},
			{"POST", v3 + "/room_keys/version", map[string]any{"algorithm": "a", "auth_data": []any{}}, 400, "M_BAD_JSON"},
			{"GET", v3 + "/room_keys/version/abc", nil, 404, "M_NOT_FOUND"},
			{"PUT", v3 + "/room_keys/keys?version=1", map[string]any{}, 400, "M_BAD_JSON"},
			{"PUT", v3 + "/room_keys/keys/" + esc("!r:hs.test") + "/s?version=1", map[string]any{"first_message_index": 1}, 400, "M_BAD_JSON"},
			{"PUT", v3 + "/room_keys/keys/" + esc("!r:hs.test") + "/s?version=1",
				map[string]any{"first_message_index": 1, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}}, 404, "M_NOT_FOUND"},
			{"GET", v3 + "/room_keys/keys", nil, 400, "M_MISSING_PARAM"},
			{"PUT", dd, map[string]any{}, 400, "M_MISSING_PARAM"},
			{"PUT", dd, map[string]any{"device_id": "X", "device_data": map[string]any{}}, 400, "M_MISSING_PARAM"},
			{"PUT", dd, map[string]any{"device_id": "X", "device_data": "x", "device_keys": map[string]any{}}, 400, "M_BAD_JSON"},
			{"GET", dd + "/X/events", nil, 403, "M_FORBIDDEN"},
		}
		for _, tc := range tests {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				alice.api.do(tc.method, tc.path, tc.body).expect(t, tc.status, tc.errcode)
			})
		}
		newAPI(t, s, "").do("POST", v3+"/keys/upload", map[string]any{}).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}
