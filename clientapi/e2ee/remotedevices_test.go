package e2ee

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

const remoteServer = "elsewhere.example"

func remoteUID(name string) id.UserID { return id.UserID("@" + name + ":" + remoteServer) }

// remoteKeys is a device-keys object of a remote device (the cache does not
// check signatures: clients do).
func remoteKeys(user id.UserID, dev, ed string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"user_id": user, "device_id": dev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys":       map[string]string{"ed25519:" + dev: ed},
		"signatures": map[string]any{string(user): map[string]string{"ed25519:" + dev: "sig-" + ed}},
		"unsigned":   map[string]any{"device_display_name": "from unsigned"},
	})
	return b
}

// waitWatch waits until the membership watcher has done its queued work.
func (e *env) waitWatch() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.s.watch.mu.Lock()
		idle := !e.s.watch.running
		e.s.watch.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatal("membership watcher still busy")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// cached returns what the cache answers requester about user: the devices and
// their ed25519 keys, whether it answered, and whether it asked for a resync.
func (e *env) cached(requester, user id.UserID) (devs map[id.DeviceID]string, served, resync bool) {
	e.t.Helper()
	res, rs, err := e.s.CachedRemoteKeys(e.ctx, requester, map[id.UserID][]id.DeviceID{user: nil})
	if err != nil {
		e.t.Fatal(err)
	}
	keys, served := res.DeviceKeys[user]
	devs = map[id.DeviceID]string{}
	for d, k := range keys {
		devs[d] = gjson.GetBytes(k, "keys.ed25519:"+string(d)).Str
	}
	return devs, served, slices.Contains(rs, user)
}

func TestRemoteDeviceListCache(t *testing.T) {
	alice, zed := uid("alice"), remoteUID("zed")
	forEachEnv(t, func(t *testing.T, e *env) {
		r := e.newRoom(alice)
		r.remoteJoin(zed)
		e.waitWatch()

		devs, served, resync := e.cached(alice, zed)
		if served || !resync {
			t.Fatalf("uncached user: served=%v resync=%v", served, resync)
		}
		// Someone sharing no room with zed is not told to resync.
		if _, served, resync := e.cached(uid("nobody"), zed); served || resync {
			t.Fatalf("stranger: served=%v resync=%v", served, resync)
		}

		// An update about an uncached user marks the change and asks for a resync.
		pos := e.s.Position()
		upd := func(dev string, stream int64, prev []int64, ed string, deleted bool) bool {
			t.Helper()
			u := &RemoteDeviceUpdate{UserID: zed, DeviceID: id.DeviceID(dev), StreamID: stream, PrevID: prev, Deleted: deleted}
			if ed != "" {
				u.Keys = remoteKeys(zed, dev, ed)
			}
			resync, err := e.s.ApplyRemoteDeviceUpdate(e.ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			return resync
		}
		if !upd("Z1", 5, []int64{4}, "k1", false) || e.s.Position() != pos+1 {
			t.Fatalf("first update: position %d -> %d", pos, e.s.Position())
		}
		if changed, _, _ := e.s.DeviceListChanges(e.ctx, alice, pos, e.s.Position(), 0, 0); !slices.Equal(changed, []id.UserID{zed}) {
			t.Fatalf("changed = %v", changed)
		}

		// A join notice about a user nobody here asked about is no change:
		// the join itself was one.
		before := e.s.Position()
		if resync, err := e.s.ApplyRemoteDeviceUpdate(e.ctx, &RemoteDeviceUpdate{UserID: remoteUID("yan"), DeviceID: "Y", StreamID: 3}); err != nil || !resync || e.s.Position() != before {
			t.Fatalf("notice: resync=%v err=%v position %d -> %d", resync, err, before, e.s.Position())
		}

		// A resync makes the entry fresh.
		gen, err := e.s.BeginRemoteResync(e.ctx, zed)
		if err != nil {
			t.Fatal(err)
		}
		master := json.RawMessage(`{"user_id":"` + string(zed) + `","usage":["master"],"keys":{"ed25519:M":"M"}}`)
		stored, err := e.s.StoreRemoteDeviceList(e.ctx, &DeviceList{UserID: zed, StreamID: 5, MasterKey: master, Devices: []DeviceInfo{
			{DeviceID: "Z1", DisplayName: "phone", Keys: remoteKeys(zed, "Z1", "k1")},
			{DeviceID: "ZX", Keys: remoteKeys(zed, "OTHER", "bad")}, // keys of another device: left out
			{DeviceID: "ZN"}, // no keys: listed nowhere in /keys/query
		}}, gen)
		if err != nil || !stored {
			t.Fatalf("store: %v %v", stored, err)
		}
		res, _, err := e.s.CachedRemoteKeys(e.ctx, alice, map[id.UserID][]id.DeviceID{zed: nil})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(res.DeviceKeys[zed]["Z1"]); gjson.Get(got, "unsigned.device_display_name").Str != "phone" ||
			gjson.Get(got, "signatures."+gjson.Escape(string(zed))+".ed25519:Z1").Str != "sig-k1" {
			t.Fatalf("cached Z1 = %s", got)
		}
		if len(res.DeviceKeys[zed]) != 1 || gjson.GetBytes(res.MasterKeys[zed], "usage.0").Str != "master" {
			t.Fatalf("cached answer = %+v", res)
		}

		for _, step := range []struct {
			name        string
			dev         string
			stream      int64
			prev        []int64
			ed          string
			deleted     bool
			wantResync  bool
			wantChanged bool
			want        map[id.DeviceID]string // nil: not served
		}{
			{"next update is applied", "Z2", 6, []int64{5}, "k2", false, false, true, map[id.DeviceID]string{"Z1": "k1", "Z2": "k2"}},
			{"the same update again changes nothing", "Z2", 6, []int64{5}, "k2", false, false, false, map[id.DeviceID]string{"Z1": "k1", "Z2": "k2"}},
			{"another device of the same update", "Z1", 6, []int64{5}, "", true, false, true, map[id.DeviceID]string{"Z2": "k2"}},
			{"an older update is ignored", "Z2", 3, []int64{2}, "old", false, false, false, map[id.DeviceID]string{"Z2": "k2"}},
			{"several prev_ids, the latest ours", "Z2", 8, []int64{2, 6}, "k3", false, false, true, map[id.DeviceID]string{"Z2": "k3"}},
			{"a join notice at our position changes nothing", "Z2", 8, nil, "k3", false, false, false, map[id.DeviceID]string{"Z2": "k3"}},
			{"a missed update makes the entry stale", "Z2", 11, []int64{10}, "k4", false, true, true, nil},
			{"a stale entry takes no updates", "Z2", 12, []int64{11}, "k5", false, true, true, nil},
		} {
			t.Run(step.name, func(t *testing.T) {
				before := e.s.Position()
				if got := upd(step.dev, step.stream, step.prev, step.ed, step.deleted); got != step.wantResync {
					t.Fatalf("resync = %v", got)
				}
				if changed := e.s.Position() > before; changed != step.wantChanged {
					t.Fatalf("changed = %v", changed)
				}
				devs, served, _ = e.cached(alice, zed)
				if served != (step.want != nil) || (served && !maps.Equal(devs, step.want)) {
					t.Fatalf("served=%v devices=%v, want %v", served, devs, step.want)
				}
			})
		}

		// A resync begun before the entry was last marked stale is not stored.
		gen, _ = e.s.BeginRemoteResync(e.ctx, zed)
		if !upd("Z2", 13, nil, "k6", false) { // a join notice about a stale entry
			t.Fatal("no resync after a notice about a stale entry")
		}
		if stored, err := e.s.StoreRemoteDeviceList(e.ctx, &DeviceList{UserID: zed, StreamID: 12}, gen); err != nil || stored {
			t.Fatalf("outdated resync stored: %v %v", stored, err)
		}
		gen, _ = e.s.BeginRemoteResync(e.ctx, zed)
		if stored, err := e.s.StoreRemoteDeviceList(e.ctx, &DeviceList{UserID: zed, StreamID: 13, Devices: []DeviceInfo{
			{DeviceID: "Z2", Keys: remoteKeys(zed, "Z2", "k6")}}}, gen); err != nil || !stored {
			t.Fatalf("resync: %v %v", stored, err)
		}
		if devs, served, _ := e.cached(alice, zed); !served || devs["Z2"] != "k6" {
			t.Fatalf("after resync: %v %v", served, devs)
		}

		// Cross-signing key updates reach a fresh entry.
		newMaster := json.RawMessage(`{"user_id":"` + string(zed) + `","usage":["master"],"keys":{"ed25519:N":"N"}}`)
		if err := e.s.ApplyRemoteSigningKeyUpdate(e.ctx, zed, newMaster, nil); err != nil {
			t.Fatal(err)
		}
		res, _, _ = e.s.CachedRemoteKeys(e.ctx, alice, map[id.UserID][]id.DeviceID{zed: {"Z2"}})
		if gjson.GetBytes(res.MasterKeys[zed], "keys.ed25519:N").Str != "N" {
			t.Fatalf("master key = %s", res.MasterKeys[zed])
		}

		// Bad updates are refused and change nothing.
		before = e.s.Position()
		for name, u := range map[string]*RemoteDeviceUpdate{
			"local user":         {UserID: alice, DeviceID: "A", StreamID: 14, PrevID: []int64{13}},
			"no device":          {UserID: zed, StreamID: 14, PrevID: []int64{13}},
			"keys of another":    {UserID: zed, DeviceID: "Z3", StreamID: 14, PrevID: []int64{13}, Keys: remoteKeys(zed, "Z4", "x")},
			"keys not an object": {UserID: zed, DeviceID: "Z3", StreamID: 14, PrevID: []int64{13}, Keys: json.RawMessage(`"x"`)},
		} {
			if _, err := e.s.ApplyRemoteDeviceUpdate(e.ctx, u); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if err := e.s.ApplyRemoteSigningKeyUpdate(e.ctx, zed, json.RawMessage(`{"user_id":"@eve:`+remoteServer+`"}`), nil); err == nil {
			t.Error("another user's master key accepted")
		}
		if e.s.Position() != before {
			t.Fatal("a refused update changed the position")
		}

		// zed joining again (here a profile change) may mean updates were
		// missed: the entry is stale until the next resync.
		r.remoteJoin(zed)
		e.waitWatch()
		if _, served, resync := e.cached(alice, zed); served || !resync {
			t.Fatalf("after zed's join: served=%v resync=%v", served, resync)
		}
	})
}

func TestLocalJoinsMarkRemoteMembersStale(t *testing.T) {
	alice, bob, zed := uid("alice"), uid("bob"), remoteUID("zed")
	forEachEnv(t, func(t *testing.T, e *env) {
		var mu sync.Mutex
		var joins []LocalJoin
		e.s.OnLocalJoin(func(j LocalJoin) {
			mu.Lock()
			joins = append(joins, j)
			mu.Unlock()
		})
		r := e.newRoom(alice)
		r.remoteJoin(zed)
		e.waitWatch()
		gen, _ := e.s.BeginRemoteResync(e.ctx, zed)
		if ok, err := e.s.StoreRemoteDeviceList(e.ctx, &DeviceList{UserID: zed, StreamID: 1}, gen); !ok || err != nil {
			t.Fatalf("store: %v %v", ok, err)
		}
		if _, served, _ := e.cached(alice, zed); !served {
			t.Fatal("fresh entry not served")
		}
		// A profile change of alice's is no join: nothing is marked.
		r.state(alice, "m.room.member", string(alice), map[string]any{"membership": "join", "displayname": "Alice"})
		e.waitWatch()
		if _, served, _ := e.cached(alice, zed); !served {
			t.Fatal("a profile change made the entry stale")
		}
		// Bob joining: nobody may have shared a room with zed before him.
		r.join(bob)
		e.waitWatch()
		if _, served, resync := e.cached(bob, zed); served || !resync {
			t.Fatalf("after bob's join: served=%v resync=%v", served, resync)
		}
		mu.Lock()
		defer mu.Unlock()
		want := []LocalJoin{{alice, r.id}, {bob, r.id}}
		if !slices.Equal(joins, want) {
			t.Fatalf("joins = %v, want %v", joins, want)
		}
	})
}

func TestLocalDeviceList(t *testing.T) {
	alice := uid("alice")
	forEachEnv(t, func(t *testing.T, e *env) {
		e.addDevice(alice, "KEYS")
		e.addDevice(alice, "NOKEYS")
		e.upload(newDevice(t, alice, "KEYS"), nil, nil)
		var changes []Change
		e.s.Subscribe(func(c Change) { changes = append(changes, c) })
		if err := e.s.DeviceChanged(e.ctx, alice, "NOKEYS"); err != nil {
			t.Fatal(err)
		}
		if len(changes) != 1 || changes[0].User != alice || !slices.Equal(changes[0].Devices, []id.DeviceID{"NOKEYS"}) || changes[0].Deleted {
			t.Fatalf("changes = %+v", changes)
		}
		for _, tc := range []struct {
			name string
			only []id.DeviceID
			want []string
		}{
			{"all", nil, []string{"KEYS:name of KEYS:true", "NOKEYS:name of NOKEYS:false"}},
			{"one", []id.DeviceID{"NOKEYS"}, []string{"NOKEYS:name of NOKEYS:false"}},
			{"unknown", []id.DeviceID{"GONE"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				l, err := e.s.LocalDeviceList(e.ctx, alice, tc.only)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, d := range l.Devices {
					got = append(got, string(d.DeviceID)+":"+d.DisplayName+":"+map[bool]string{true: "true", false: "false"}[d.Keys != nil])
				}
				if !slices.Equal(got, tc.want) || l.StreamID != changes[0].Pos {
					t.Fatalf("devices %v stream %d, want %v stream %d", got, l.StreamID, tc.want, changes[0].Pos)
				}
			})
		}
	})
}

// remoteJoin stores a join of a remote user as if their server had sent it.
func (r *room) remoteJoin(u id.UserID) {
	r.e.t.Helper()
	sk := string(u)
	proto, v, err := r.e.rs.EventTemplate(r.e.ctx, r.id, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: u,
		Content: mustJSON(r.e.t, map[string]any{"membership": "join"})})
	if err != nil {
		r.e.t.Fatal(err)
	}
	key, err := config.GenerateSigningKey()
	if err != nil {
		r.e.t.Fatal(err)
	}
	ev, err := events.Build(v.ID, *proto, u.Homeserver(), id.KeyID(key.ID), key.PrivateKey)
	if err != nil {
		r.e.t.Fatal(err)
	}
	if _, err := r.e.rs.InputRemoteEvent(r.e.ctx, ev); err != nil {
		r.e.t.Fatal(err)
	}
}

func TestWithDisplayName(t *testing.T) {
	name := func(s string) *string { return &s }
	for _, tc := range []struct {
		obj  string
		name *string
		want string
	}{
		{`{"a":1}`, nil, `{"a":1}`},
		{`{"a":1}`, name("phone"), `{"a":1,"unsigned":{"device_display_name":"phone"}}`},
		{`{}`, name("x"), `{"unsigned":{"device_display_name":"x"}}`},
		{`{"a":1}`, name(`quote " back \ </>`), `{"a":1,"unsigned":{"device_display_name":"quote \" back \\ \u003c/\u003e"}}`},
	} {
		got := withDisplayName(tc.obj, tc.name)
		if !json.Valid(got) || gjson.GetBytes(got, "unsigned.device_display_name").Str != deref(tc.name) {
			t.Errorf("withDisplayName(%s, %v) = %s: invalid", tc.obj, tc.name, got)
		}
		if string(got) != tc.want && json.Valid([]byte(tc.want)) {
			var a, b any
			_ = json.Unmarshal(got, &a)
			_ = json.Unmarshal([]byte(tc.want), &b)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("withDisplayName(%s) = %s, want %s", tc.obj, got, tc.want)
			}
		}
	}
}
