package appservice

import (
	"net/netip"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

func testService(t *testing.T, yaml string) *AppService {
	t.Helper()
	c, err := config.ParseAppService([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return &AppService{AppService: *c, sender: id.NewUserID(c.SenderLocalpart, "hs.test"), server: "hs.test"}
}

func TestNamespaces(t *testing.T) {
	as := testService(t, `id: irc
url: null
as_token: a
hs_token: h
sender_localpart: _irc_bot
ip_range_whitelist: [10.0.0.0/8]
namespaces:
  users:
    - {exclusive: false, regex: "@_irc_guest_.*"}
    - {exclusive: true, regex: "@_irc_.*"}
  aliases:
    - {exclusive: true, regex: "#_irc_.*"}
  rooms:
    - {exclusive: false, regex: "!bridged:.*"}
`)
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"sender is interesting", as.IsInterestedInUser("@_irc_bot:hs.test"), true},
		{"sender is exclusive", as.IsExclusiveUser("@_irc_bot:hs.test"), true},
		{"namespace user", as.IsInterestedInUser("@_irc_bob:hs.test"), true},
		{"namespace user is exclusive", as.IsExclusiveUser("@_irc_bob:hs.test"), true},
		{"first matching entry wins: not exclusive", as.IsExclusiveUser("@_irc_guest_1:hs.test"), false},
		{"remote users are never in the namespace", as.IsInterestedInUser("@_irc_bob:other.test"), false},
		{"remote users are never exclusive", as.IsExclusiveUser("@_irc_bob:other.test"), false},
		{"match is anchored at the start", as.IsInterestedInUser("@bob_irc_:hs.test"), false},
		{"other user", as.IsInterestedInUser("@alice:hs.test"), false},
		{"alias namespace", as.AliasInNamespace("#_irc_chan:hs.test"), true},
		{"alias exclusive", as.IsExclusiveAlias("#_irc_chan:hs.test"), true},
		{"alias outside", as.AliasInNamespace("#chan:hs.test"), false},
		{"room namespace", as.RoomInNamespace("!bridged:hs.test"), true},
		{"room outside", as.RoomInNamespace("!other:hs.test"), false},
		{"address in the whitelist", as.AllowsAddr(netip.MustParseAddr("10.1.2.3")), true},
		{"IPv4-mapped address in the whitelist", as.AllowsAddr(netip.MustParseAddr("::ffff:10.1.2.3")), true},
		{"address outside the whitelist", as.AllowsAddr(netip.MustParseAddr("127.0.0.1")), false},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestNilServiceHasNoAppServices(t *testing.T) {
	var s *Service
	if s.ByToken("x") != nil || s.ByID("x") != nil || s.ExclusiveUserOwner("@a:b") != nil || len(s.All()) != 0 {
		t.Fatal("a nil service found something")
	}
	s.Stop() // must not panic
}

func TestRoomInterestCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newRoomInterestCache()
	c.now = func() time.Time { return now }
	steps := []struct {
		name   string
		do     func()
		room   id.RoomID
		want   bool
		wantOK bool
	}{
		{"empty", func() {}, "!a:x", false, false},
		{"set", func() { c.set("!a:x", true) }, "!a:x", true, true},
		{"update keeps it live", func() { c.set("!a:x", false) }, "!a:x", false, true},
		{"expires", func() { now = now.Add(roomInterestTTL) }, "!a:x", false, false},
		{"set again", func() { c.set("!a:x", true) }, "!a:x", true, true},
		{"forget", func() { c.forget("!a:x") }, "!a:x", false, false},
	}
	for _, st := range steps {
		st.do()
		v, ok := c.get(st.room)
		if v != st.want || ok != st.wantOK {
			t.Fatalf("%s: get = %v, %v; want %v, %v", st.name, v, ok, st.want, st.wantOK)
		}
	}
	for i := 0; i < maxCachedRooms+5; i++ {
		c.set(id.RoomID("!r"+string(rune('a'+i%26))+time.Duration(i).String()+":x"), true)
	}
	if len(c.m) > maxCachedRooms {
		t.Fatalf("cache grew to %d entries, bound %d", len(c.m), maxCachedRooms)
	}
}

// BenchmarkInterestByUser is the per-event cost for an event whose sender
// decides (no room lookup): two namespaces, anchored regexes.
func BenchmarkInterestByUser(b *testing.B) {
	c, err := config.ParseAppService([]byte("id: x\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bot\n" +
		"namespaces:\n  users:\n    - {exclusive: true, regex: '@_irc_.*'}\n    - {exclusive: true, regex: '@_slack_.*'}\n"))
	if err != nil {
		b.Fatal(err)
	}
	as := &AppService{AppService: *c, sender: "@bot:hs.test", server: "hs.test"}
	users := []id.UserID{"@_slack_bob:hs.test", "@alice:hs.test", "@_irc_x:other.test"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		as.IsInterestedInUser(users[i%len(users)])
	}
}

// BenchmarkAppendTransaction encodes a full transaction of 100 messages.
func BenchmarkAppendTransaction(b *testing.B) {
	key, err := config.GenerateSigningKey()
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]*roomserver.StoredEvent, maxTxnEvents)
	for i := range evs {
		ev, err := events.Build("10", events.ProtoEvent{
			Type: "m.room.message", Sender: "@alice:hs.test", RoomID: "!room:hs.test", Depth: int64(i + 3),
			Content:    []byte(`{"msgtype":"m.text","body":"hello there, a message of ordinary length"}`),
			PrevEvents: []id.EventID{"$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, AuthEvents: []id.EventID{"$BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"},
		}, "hs.test", id.KeyID(key.ID), key.PrivateKey)
		if err != nil {
			b.Fatal(err)
		}
		evs[i] = &roomserver.StoredEvent{Event: ev, NID: int64(i + 1), StreamPos: int64(i + 1)}
	}
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendTransaction(buf[:0], evs, nil, time.Now().UnixMilli())
	}
	b.SetBytes(int64(len(buf)))
}
