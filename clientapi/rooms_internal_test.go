package clientapi

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/storage"
	"hearth/storage/storagetest"
)

func TestMatchTypeGlob(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.messages", false},
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.roomx", false},
		{"*", "anything", true},
		{"*.message", "m.room.message", true},
		{"m.*.message", "m.room.message", true},
		{"m.*.message", "m.room.name", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "acb", false},
		{"a**", "a", true},
	}
	for _, c := range cases {
		if got := matchTypeGlob(c.pattern, c.s); got != c.want {
			t.Errorf("matchTypeGlob(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `quo"te`, `back\\slash`, "ctl\x00\x01\x1f\n\t\r", "üñíçødé 🎉", "\xff\xfeinvalid"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q encodes to invalid JSON %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q round-trips to %q, want %q", s, back, wantBack)
		}
	}
}

func TestRelationOf(t *testing.T) {
	cases := []struct {
		name, content string
		relType, key  string
		ok            bool
	}{
		{"edit", `{"m.relates_to":{"rel_type":"m.replace","event_id":"$a"}}`, "m.replace", "", true},
		{"annotation", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$a","key":"👍"}}`, "m.annotation", "👍", true},
		{"reply without rel_type", `{"m.relates_to":{"m.in_reply_to":{"event_id":"$a"}}}`, "", "", false},
		{"no relation", `{"body":"m.relates_to"}`, "", "", false},
		{"event_id not a string", `{"m.relates_to":{"rel_type":"m.thread","event_id":5}}`, "", "", false},
		{"event_id without sigil", `{"m.relates_to":{"rel_type":"m.thread","event_id":"abc"}}`, "", "", false},
		{"relates_to not an object", `{"m.relates_to":"x"}`, "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := relationOf([]byte(c.content))
			if (r != nil) != c.ok {
				t.Fatalf("relation = %v, want ok %v", r, c.ok)
			}
			if r != nil && (r.relType != c.relType || r.key != c.key || r.relatesTo != "$a") {
				t.Fatalf("relation = %+v", r)
			}
		})
	}
}

func TestTxnCacheSendsOnceAndWaits(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var pos atomic.Int64
		c := newTxnCache(db, pos.Load)
		key := txnKey{user: "@a:hs.test", device: "DEV", scope: "send\x1f!r:hs.test\x1fm.room.message", txn: "1"}
		sk, err := config.GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		built, err := events.Build("10", events.ProtoEvent{Type: "m.room.message", Sender: "@a:hs.test", RoomID: "!r:hs.test", Depth: 1},
			"hs.test", id.KeyID(sk.ID), sk.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		var sends atomic.Int32
		release := make(chan struct{})
		send := func(context.Context) (id.EventID, error) {
			sends.Add(1)
			<-release
			return built.ID(), nil
		}
		// An event of the user's written while the send is in flight waits for it.
		ev := &roomserver.StoredEvent{Event: built, StreamPos: 5}
		var wg sync.WaitGroup
		results := make([]id.EventID, 5)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				eid, err := c.do(ctx, key, send)
				if err != nil {
					t.Error(err)
				}
				results[i] = eid
			}()
		}
		time.Sleep(20 * time.Millisecond)
		looked := make(chan map[id.EventID]string)
		go func() {
			out := map[id.EventID]string{}
			if unknown := c.lookupEvents(ctx, "@a:hs.test", "DEV", []*roomserver.StoredEvent{ev}, out); len(unknown) != 0 {
				t.Errorf("unknown = %v", unknown)
			}
			looked <- out
		}()
		select {
		case <-looked:
			t.Fatal("lookup did not wait for the send in flight")
		case <-time.After(20 * time.Millisecond):
		}
		close(release)
		wg.Wait()
		if out := <-looked; out[built.ID()] != "1" {
			t.Fatalf("transaction IDs = %v", out)
		}
		if sends.Load() != 1 {
			t.Fatalf("sent %d times", sends.Load())
		}
		for _, r := range results {
			if r != built.ID() {
				t.Fatalf("results = %v", results)
			}
		}
		// A fresh cache (a restart) finds the transaction in the store.
		c2 := newTxnCache(db, pos.Load)
		eid, err := c2.do(ctx, key, func(context.Context) (id.EventID, error) { t.Error("sent again"); return "", nil })
		if err != nil || eid != built.ID() {
			t.Fatalf("after restart: %s, %v", eid, err)
		}
	})
}
