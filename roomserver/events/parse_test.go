package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// pduJSON returns a well-formed PDU for the room version with the given
// top-level members replaced (a nil value removes the member).
func pduJSON(t testing.TB, version id.RoomVersion, overrides map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"auth_events":      []string{},
		"content":          map[string]any{"body": "hello"},
		"depth":            12,
		"hashes":           map[string]string{"sha256": "c2wb8qMlvzIPCP1Wd+eYZ4BRgnGYxS97dR1UlJjVMeg"},
		"origin_server_ts": 1700000000000,
		"prev_events":      []string{},
		"room_id":          "!room:one.test",
		"sender":           "@alice:one.test",
		"signatures":       map[string]map[string]string{"one.test": {"ed25519:1": "c2ln"}},
		"type":             "m.room.message",
		"unsigned":         map[string]int{"age_ts": 1},
	}
	switch version {
	case "1", "2":
		m["event_id"] = "$abc:one.test"
	case "12":
		m["room_id"] = "!" + strings.Repeat("R", 43)
	}
	for k, v := range overrides {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRejects(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	long := strings.Repeat("x", 256)
	tests := []struct {
		name      string
		version   id.RoomVersion
		overrides map[string]any
		input     string // used instead of pduJSON when set
		want      error
	}{
		{name: "not JSON", input: `{"type":`, want: ErrNotJSON},
		{name: "garbage", input: `hello`, want: ErrNotJSON},
		{name: "invalid UTF-8", input: "{\"type\":\"\xff\"}", want: ErrNotJSON},
		{name: "not an object", input: `["type"]`, want: ErrBadJSON},
		{name: "too big", overrides: map[string]any{"content": map[string]string{"body": strings.Repeat("x", MaxEventSize)}}, want: ErrTooLarge},
		{name: "duplicate key", input: `{"type":"a","type":"b"}`, want: ErrBadJSON},
		{name: "float in v6", version: "6", overrides: map[string]any{"content": raw(`{"n":1.5}`)}, want: ErrBadJSON},
		{name: "integral float in v10", overrides: map[string]any{"content": raw(`{"n":1.0}`)}, want: ErrBadJSON},
		{name: "exponent in v10", overrides: map[string]any{"content": raw(`{"n":1e3}`)}, want: ErrBadJSON},
		{name: "big int in v6", version: "6", overrides: map[string]any{"content": raw(`{"n":9007199254740992}`)}, want: ErrBadJSON},
		{name: "float in unsigned v10", overrides: map[string]any{"unsigned": raw(`{"age":0.5}`)}, want: ErrBadJSON},
		{name: "type too long", overrides: map[string]any{"type": long}, want: ErrTooLarge},
		{name: "type too long v1", version: "1", overrides: map[string]any{"type": long}, want: ErrTooLarge},
		{name: "state_key too long", overrides: map[string]any{"state_key": long}, want: ErrTooLarge},
		{name: "sender too long", overrides: map[string]any{"sender": "@" + long + ":one.test"}, want: ErrTooLarge},
		{name: "room_id too long", overrides: map[string]any{"room_id": "!" + long + ":one.test"}, want: ErrTooLarge},
		{name: "event_id too long v1", version: "1", overrides: map[string]any{"event_id": "$" + long + ":one.test"}, want: ErrTooLarge},
		{name: "state_key over 255 bytes in v11", version: "11", overrides: map[string]any{"state_key": strings.Repeat("é", 200)}, want: ErrTooLarge},
		{name: "missing type", overrides: map[string]any{"type": nil}, want: ErrBadJSON},
		{name: "missing sender", overrides: map[string]any{"sender": nil}, want: ErrBadJSON},
		{name: "missing room_id", overrides: map[string]any{"room_id": nil}, want: ErrBadJSON},
		{name: "missing room_id v12 non-create", version: "12", overrides: map[string]any{"room_id": nil}, want: ErrBadJSON},
		{name: "missing content", overrides: map[string]any{"content": nil}, want: ErrBadJSON},
		{name: "missing depth", overrides: map[string]any{"depth": nil}, want: ErrBadJSON},
		{name: "missing origin_server_ts", overrides: map[string]any{"origin_server_ts": nil}, want: ErrBadJSON},
		{name: "missing hashes", overrides: map[string]any{"hashes": nil}, want: ErrBadJSON},
		{name: "missing sha256", overrides: map[string]any{"hashes": map[string]string{"sha512": "x"}}, want: ErrBadJSON},
		{name: "missing signatures", overrides: map[string]any{"signatures": nil}, want: ErrBadJSON},
		{name: "missing prev_events", overrides: map[string]any{"prev_events": nil}, want: ErrBadJSON},
		{name: "missing auth_events", overrides: map[string]any{"auth_events": nil}, want: ErrBadJSON},
		{name: "missing event_id v1", version: "1", overrides: map[string]any{"event_id": nil}, want: ErrBadJSON},
		{name: "type not a string", overrides: map[string]any{"type": 5}, want: ErrBadJSON},
		{name: "content not an object", overrides: map[string]any{"content": []int{}}, want: ErrBadJSON},
		{name: "depth a string", overrides: map[string]any{"depth": "12"}, want: ErrBadJSON},
		{name: "depth a float in v5", version: "5", overrides: map[string]any{"depth": raw(`12.0`)}, want: ErrBadJSON},
		{name: "depth negative", overrides: map[string]any{"depth": -1}, want: ErrBadJSON},
		{name: "depth beyond int64 in v5", version: "5", overrides: map[string]any{"depth": raw(`9223372036854775808`)}, want: ErrBadJSON},
		{name: "state_key null", overrides: map[string]any{"state_key": raw(`null`)}, want: ErrBadJSON},
		{name: "unsigned an array", overrides: map[string]any{"unsigned": []int{}}, want: ErrBadJSON},
		{name: "signatures a string", overrides: map[string]any{"signatures": "x"}, want: ErrBadJSON},
		{name: "signature not a string", overrides: map[string]any{"signatures": raw(`{"one.test":{"ed25519:1":1}}`)}, want: ErrBadJSON},
		{name: "redacts not a string", overrides: map[string]any{"redacts": 1}, want: ErrBadJSON},
		{name: "v1 prev_events as IDs", version: "1", overrides: map[string]any{"prev_events": []string{"$a:one.test"}}, want: ErrBadJSON},
		{name: "v1 prev_events triple", version: "1", overrides: map[string]any{"prev_events": raw(`[["$a:one.test",{},{}]]`)}, want: ErrBadJSON},
		{name: "v4 prev_events as pairs", version: "4", overrides: map[string]any{"prev_events": raw(`[["$a:one.test",{}]]`)}, want: ErrBadJSON},
		{name: "v4 short event ID", version: "4", overrides: map[string]any{"prev_events": []string{"$abc"}}, want: ErrBadJSON},
		{name: "v4 event ID in v3 alphabet", version: "4", overrides: map[string]any{"auth_events": []string{"$" + strings.Repeat("+", 43)}}, want: ErrBadJSON},
		{name: "v3 event ID in v4 alphabet", version: "3", overrides: map[string]any{"auth_events": []string{"$" + strings.Repeat("-", 43)}}, want: ErrBadJSON},
		{name: "v1 event ID without domain", version: "1", overrides: map[string]any{"event_id": "$abc"}, want: ErrBadJSON},
		{name: "room ID without domain", overrides: map[string]any{"room_id": "!room"}, want: ErrBadJSON},
		{name: "room ID wrong sigil", overrides: map[string]any{"room_id": "#room:one.test"}, want: ErrBadJSON},
		{name: "v12 room ID with domain", version: "12", overrides: map[string]any{"room_id": "!room:one.test"}, want: ErrBadJSON},
		{name: "sender without sigil", overrides: map[string]any{"sender": "alice:one.test"}, want: ErrBadJSON},
		{name: "sender without domain", overrides: map[string]any{"sender": "@alice"}, want: ErrBadJSON},
		{name: "sender with bad domain", overrides: map[string]any{"sender": "@alice:bad_domain!"}, want: ErrBadJSON},
		{name: "sender with bad port", overrides: map[string]any{"sender": "@alice:one.test:port"}, want: ErrBadJSON},
		{name: "sender with NUL", overrides: map[string]any{"sender": "@al\u0000ice:one.test"}, want: ErrBadJSON},
		{name: "unknown version", version: "13", want: ErrUnknownRoomVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version := tt.version
			if version == "" {
				version = "10"
			}
			input := []byte(tt.input)
			if tt.input == "" {
				input = pduJSON(t, version, tt.overrides)
			}
			ev, err := Parse(version, input)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want %v", ev, err, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		name      string
		version   id.RoomVersion
		overrides map[string]any
	}{
		{"v10 message", "10", nil},
		{"v1 message", "1", map[string]any{"prev_events": raw(`[["$p:one.test",{"sha256":"x"}]]`)}},
		{"float in v5", "5", map[string]any{"content": raw(`{"n":1.5,"m":1e100,"big":123456789012345678901234567890}`)}},
		{"historical sender localpart", "10", map[string]any{"sender": "@Ünïcode Üser:one.test"}},
		{"empty sender localpart", "10", map[string]any{"sender": "@:one.test"}},
		{"IPv6 sender", "10", map[string]any{"sender": "@a:[::1]:8448"}},
		{"IPv4 sender with port", "10", map[string]any{"sender": "@a:1.2.3.4:8008"}},
		{"255-byte type", "11", map[string]any{"type": strings.Repeat("t", 255)}},
		{"v12 create without room_id", "12", map[string]any{"type": "m.room.create", "state_key": "", "room_id": nil}},
		{"unknown top-level keys", "10", map[string]any{"x.custom": []int{1}, "origin": "one.test"}},
		{"extra hash algorithms", "10", map[string]any{"hashes": map[string]string{"sha256": "c2wb", "sha512": "x"}}},
		{"undecodable sha256", "10", map[string]any{"hashes": map[string]string{"sha256": "!!!"}}},
		{"whitespace-padded event", "10", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := pduJSON(t, tt.version, tt.overrides)
			if tt.name == "whitespace-padded event" {
				input = []byte(strings.Repeat(" ", MaxEventSize) + string(input) + "\n")
			}
			ev, err := Parse(tt.version, input)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if ev.FormatRejection() != nil {
				t.Errorf("FormatRejection = %v", ev.FormatRejection())
			}
		})
	}
}

// TestParseLegacyByteLimits covers room versions before v11, where a field over
// 255 bytes but within 255 code points is kept as a rejected event.
func TestParseLegacyByteLimits(t *testing.T) {
	sk := strings.Repeat("é", 200) // 400 bytes, 200 code points
	ev, err := Parse("10", pduJSON(t, "10", map[string]any{"state_key": sk}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := ev.FormatRejection(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("FormatRejection = %v, want ErrTooLarge", err)
	}
	if _, err := Parse("11", pduJSON(t, "11", map[string]any{"state_key": sk})); !errors.Is(err, ErrTooLarge) {
		t.Errorf("v11: err = %v, want ErrTooLarge", err)
	}
}

// TestParseStripsEventIDFromV3Plus: room v3+ events carry no event_id; one
// that does is read as if it did not.
func TestParseStripsEventIDFromV3Plus(t *testing.T) {
	plain, err := Parse("10", pduJSON(t, "10", nil))
	if err != nil {
		t.Fatal(err)
	}
	withID, err := Parse("10", pduJSON(t, "10", map[string]any{"event_id": "$bogus:one.test"}))
	if err != nil {
		t.Fatal(err)
	}
	if withID.ID() != plain.ID() || string(withID.JSON()) != string(plain.JSON()) {
		t.Errorf("event_id changed the event: %s vs %s", withID.ID(), plain.ID())
	}
	if strings.Contains(string(withID.JSON()), "event_id") {
		t.Errorf("JSON keeps event_id: %s", withID.JSON())
	}
}

func TestParseAccessors(t *testing.T) {
	in := pduJSON(t, "10", map[string]any{
		"type": "m.room.redaction", "redacts": "$" + strings.Repeat("T", 43),
		"prev_events": []string{"$" + strings.Repeat("P", 43)},
		"auth_events": []string{"$" + strings.Repeat("A", 43), "$" + strings.Repeat("B", 43)},
		"content":     map[string]string{"reason": "r"},
	})
	ev, err := Parse("10", in)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Type", ev.Type(), "m.room.redaction"},
		{"Sender", ev.Sender(), id.UserID("@alice:one.test")},
		{"RoomID", ev.RoomID(), id.RoomID("!room:one.test")},
		{"Depth", ev.Depth(), int64(12)},
		{"OriginServerTS", ev.OriginServerTS(), int64(1700000000000)},
		{"Redacts", ev.Redacts(), id.EventID("$" + strings.Repeat("T", 43))},
		{"PrevEventIDs", len(ev.PrevEventIDs()), 1},
		{"AuthEventIDs[1]", ev.AuthEventIDs()[1], id.EventID("$" + strings.Repeat("B", 43))},
		{"Content", string(ev.Content()), `{"reason":"r"}`},
		{"Unsigned", string(ev.Unsigned()), `{"age_ts":1}`},
		{"IsState", ev.IsState(), false},
		{"Version", ev.Version().ID, id.RoomVersion("10")},
		{"String", ev.String(), string(ev.ID())},
		{"PDU.Sender", ev.PDU().Sender, id.UserID("@alice:one.test")},
		{"PDU.Unsigned", string(ev.PDU().Unsigned), `{"age_ts":1}`},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if ev.PDU().Hashes == nil || len(ev.PDU().Hashes.SHA256) != 32 {
		t.Errorf("PDU hashes = %+v", ev.PDU().Hashes)
	}
	// Redacts is only reported for redaction events.
	msg, err := Parse("10", pduJSON(t, "10", map[string]any{"redacts": "$" + strings.Repeat("T", 43)}))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Redacts() != "" {
		t.Errorf("message Redacts() = %q", msg.Redacts())
	}
}

func TestParseV1PDUShape(t *testing.T) {
	ev, err := Parse("1", []byte(fixtures[0].json))
	if err != nil {
		t.Fatal(err)
	}
	p := ev.PDU()
	if len(p.AuthEvents) != 3 || p.AuthEvents[1] != "$143454825711DhCxH:matrix.org" {
		t.Errorf("AuthEvents = %v", p.AuthEvents)
	}
	if len(p.PrevEvents) != 1 || p.PrevEvents[0] != "$1673816901121325UMCjA:matrix.org" {
		t.Errorf("PrevEvents = %v", p.PrevEvents)
	}
	if string(p.DeprecatedOrigin) != `"maunium.net"` {
		t.Errorf("DeprecatedOrigin = %s", p.DeprecatedOrigin)
	}
	// mautrix's GetEventID works on the converted PDU through InternalMeta.
	if got, err := p.GetEventID("1"); err != nil || got != ev.ID() {
		t.Errorf("GetEventID = %s, %v", got, err)
	}
}

func TestErrcode(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{tooLarge("x"), "M_TOO_LARGE"},
		{notJSON("x"), "M_NOT_JSON"},
		{badJSON("x"), "M_BAD_JSON"},
		{ErrUnknownRoomVersion, "M_UNSUPPORTED_ROOM_VERSION"},
		{errors.New("other"), ""},
	}
	for _, tt := range tests {
		if got := Errcode(tt.err); got != tt.want {
			t.Errorf("Errcode(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	_, err := Parse("10", []byte("{"))
	if Errcode(err) != "M_NOT_JSON" {
		t.Errorf("Errcode(Parse error) = %q", Errcode(err))
	}
}
