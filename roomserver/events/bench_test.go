package events

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// A typical message event (v10) and a large state event (power levels with
// 1,000 users) for the benchmarks.
var (
	benchMessage     = []byte(fixtures[5].json)
	benchPowerLevels = func() []byte {
		var users strings.Builder
		for i := range 1000 {
			if i > 0 {
				users.WriteByte(',')
			}
			users.WriteString(`"@user` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + itoa(i) + `:example.org":50`)
		}
		return []byte(`{"auth_events":[],"content":{"ban":50,"users":{` + users.String() + `},"users_default":0},"depth":5,"hashes":{"sha256":"AAAA"},"origin_server_ts":1,"prev_events":[],"room_id":"!r:example.org","sender":"@a:example.org","signatures":{"example.org":{"ed25519:1":"c2ln"}},"state_key":"","type":"m.room.power_levels"}`)
	}()
)

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{{"message", benchMessage}, {"power_levels_1000_users", benchPowerLevels}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse("10", bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	key := testSigningKey()
	proto := ProtoEvent{
		Type: "m.room.message", Sender: "@alice:" + testOrigin, RoomID: "!room:" + testOrigin,
		Content:    []byte(`{"body":"hello world","msgtype":"m.text","m.mentions":{}}`),
		PrevEvents: []id.EventID{"$" + id.EventID(strings.Repeat("P", 43))},
		AuthEvents: []id.EventID{"$" + id.EventID(strings.Repeat("A", 43)), "$" + id.EventID(strings.Repeat("B", 43)), "$" + id.EventID(strings.Repeat("C", 43))},
		Depth:      100, OriginServerTS: 1_700_000_000_000,
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build("10", proto, testOrigin, testKeyID, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySignatures(b *testing.B) {
	ev, err := Parse("10", benchMessage)
	if err != nil {
		b.Fatal(err)
	}
	getKey := keyringGetKey(testKeyring)
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifySignatures(ev, getKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClientEvent(b *testing.B) {
	ev, err := Parse("10", benchMessage)
	if err != nil {
		b.Fatal(err)
	}
	opts := ClientOptions{OmitRoomID: true, Unsigned: []byte(`{"age":1234}`)}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = ev.AppendClientEvent(buf[:0], opts)
	}
}

func BenchmarkCanonicalJSON(b *testing.B) {
	b.SetBytes(int64(len(benchPowerLevels)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CanonicalJSON(benchPowerLevels); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRedacted(b *testing.B) {
	ev, err := Parse("10", benchPowerLevels)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = ev.Redacted()
	}
}

func BenchmarkFromStored(b *testing.B) {
	ev, err := Parse("10", benchMessage)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromStored("10", ev.ID(), ev.JSON()); err != nil {
			b.Fatal(err)
		}
	}
}
