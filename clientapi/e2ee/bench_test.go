package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver"
	"hearth/storage"
	"hearth/storage/storagetest"
)

// forEachBenchEnv runs a benchmark on each available database.
func forEachBenchEnv(b *testing.B, fn func(b *testing.B, e *env)) {
	for name, dsn := range storagetest.DSNs(b) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			db, err := storage.Open(ctx, dsn)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			key, err := config.GenerateSigningKey()
			if err != nil {
				b.Fatal(err)
			}
			rs, err := roomserver.New(ctx, db, testServer, key)
			if err != nil {
				b.Fatal(err)
			}
			s, err := New(ctx, db, testServer, rs)
			if err != nil {
				b.Fatal(err)
			}
			fn(b, &env{t: b, ctx: ctx, db: db, rs: rs, s: s})
		})
	}
}

func benchUpload(b *testing.B, e *env, d *device, otks int) {
	keys := make(map[string]json.RawMessage, otks)
	for i := range otks {
		keys[fmt.Sprintf("signed_curve25519:%s-%d", d.id, i)] = d.otk(b, fmt.Sprintf("k%d", i), false)
	}
	_, err := e.s.UploadKeys(e.ctx, d.user, d.id, &UploadRequest{
		DeviceKeys: mustJSON(b, d.keys(b)), OneTimeKeys: keys,
		FallbackKeys: map[string]json.RawMessage{"signed_curve25519:fb": d.otk(b, "fb", true)},
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSyncIdle is the E2EE share of an incremental /sync with nothing new:
// inbox bounds and key counts.
func BenchmarkSyncIdle(b *testing.B) {
	forEachBenchEnv(b, func(b *testing.B, e *env) {
		alice := uid("alice")
		benchUpload(b, e, newDevice(b, alice, "A1"), 50)
		pos := e.s.Position()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := e.s.Sync(e.ctx, SyncRequest{UserID: alice, DeviceID: "A1", Since: pos, Upto: pos, RoomSince: 5, RoomUpto: 5}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkToDeviceRoundTrip sends one message to a device, then syncs it and
// acknowledges it: the work of one room key delivered to one device.
func BenchmarkToDeviceRoundTrip(b *testing.B) {
	forEachBenchEnv(b, func(b *testing.B, e *env) {
		alice, bob := uid("alice"), uid("bob")
		addDeviceTB(b, e, bob, "B1")
		msg := ToDeviceMessages{bob: {"B1": json.RawMessage(`{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{}}`)}}
		since := e.s.Position()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, err := e.s.SendToDevice(e.ctx, alice, "m.room.encrypted", msg, &Txn{DeviceID: "A1", ID: fmt.Sprint(i)}); err != nil {
				b.Fatal(err)
			}
			r, err := e.s.Sync(e.ctx, SyncRequest{UserID: bob, DeviceID: "B1", Since: since, Upto: e.s.Position()})
			if err != nil || len(r.ToDevice) != 1 {
				b.Fatalf("sync: %v, %d events", err, len(r.ToDevice))
			}
			since = r.Next
		}
	})
}

// BenchmarkQueryKeys1000Users is /keys/query for 1,000 users of two devices
// each, as a client does for the members of a big encrypted room.
func BenchmarkQueryKeys1000Users(b *testing.B) {
	forEachBenchEnv(b, func(b *testing.B, e *env) {
		req := map[id.UserID][]id.DeviceID{}
		for i := range 1000 {
			u := uid(fmt.Sprintf("u%04d", i))
			req[u] = nil
			for _, d := range []string{"D1", "D2"} {
				benchUpload(b, e, newDevice(b, u, d), 0)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			res, err := e.s.QueryLocalKeys(e.ctx, uid("u0000"), req)
			if err != nil || len(res.DeviceKeys) != 1000 {
				b.Fatalf("query: %v, %d users", err, len(res.DeviceKeys))
			}
		}
	})
}

// BenchmarkClaimOneTimeKey claims one key of one device per operation.
func BenchmarkClaimOneTimeKey(b *testing.B) {
	forEachBenchEnv(b, func(b *testing.B, e *env) {
		alice := uid("alice")
		d := newDevice(b, alice, "A1")
		benchUpload(b, e, d, 0)
		req := map[id.UserID]map[id.DeviceID]string{alice: {"A1": "signed_curve25519"}}
		left := 0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if left == 0 {
				b.StopTimer()
				keys := make(map[string]json.RawMessage, 100)
				for j := range 100 {
					keys[fmt.Sprintf("signed_curve25519:%d-%d", i, j)] = d.otk(b, "k", false)
				}
				if _, err := e.s.UploadKeys(e.ctx, alice, "A1", &UploadRequest{OneTimeKeys: keys}); err != nil {
					b.Fatal(err)
				}
				left = 100
				b.StartTimer()
			}
			if _, err := e.s.ClaimLocalKeys(e.ctx, req); err != nil {
				b.Fatal(err)
			}
			left--
		}
	})
}

func addDeviceTB(tb testing.TB, e *env, user id.UserID, dev string) {
	lp := localpart(user)
	if _, err := e.db.Exec(e.ctx, `INSERT INTO accounts (localpart, created_ts) VALUES ($1, 0) ON CONFLICT (localpart) DO NOTHING`, lp); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.db.Exec(e.ctx, `INSERT INTO devices (localpart, device_id, created_ts) VALUES ($1, $2, 0)`, lp, dev); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkCachedRemoteKeys is /keys/query's cache part for 100 remote users
// of 5 devices each who share a room with the requester; and an update
// applied to a cached list.
func BenchmarkCachedRemoteKeys(b *testing.B) {
	forEachBenchEnv(b, func(b *testing.B, e *env) {
		alice := uid("alice")
		r := e.newRoom(alice)
		req := map[id.UserID][]id.DeviceID{}
		for i := range 100 {
			u := remoteUID(fmt.Sprintf("u%d", i))
			r.remoteJoin(u)
			l := &DeviceList{UserID: u, StreamID: 1}
			for d := range 5 {
				dev := fmt.Sprintf("D%d", d)
				l.Devices = append(l.Devices, DeviceInfo{DeviceID: id.DeviceID(dev), DisplayName: "n", Keys: remoteKeys(u, dev, "k")})
			}
			e.waitWatch()
			gen, err := e.s.BeginRemoteResync(e.ctx, u)
			if err != nil {
				b.Fatal(err)
			}
			if ok, err := e.s.StoreRemoteDeviceList(e.ctx, l, gen); !ok || err != nil {
				b.Fatalf("store: %v %v", ok, err)
			}
			req[u] = nil
		}
		b.Run("query", func(b *testing.B) {
			for b.Loop() {
				res, _, err := e.s.CachedRemoteKeys(e.ctx, alice, req)
				if err != nil || len(res.DeviceKeys) != 100 {
					b.Fatalf("%d users, %v", len(res.DeviceKeys), err)
				}
			}
		})
		b.Run("update", func(b *testing.B) {
			u, stream := remoteUID("u0"), int64(1)
			for b.Loop() {
				stream++
				if resync, err := e.s.ApplyRemoteDeviceUpdate(e.ctx, &RemoteDeviceUpdate{UserID: u, DeviceID: "D0", StreamID: stream,
					PrevID: []int64{stream - 1}, Keys: remoteKeys(u, "D0", fmt.Sprint(stream))}); err != nil || resync {
					b.Fatalf("resync=%v err=%v", resync, err)
				}
			}
		})
	})
}
