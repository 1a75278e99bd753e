package events

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// redactionInput wraps content into an event for the room version with every
// kind of top-level key: protected ones, legacy ones (origin, membership,
// prev_state) and unprotected ones.
func redactionInput(v *roomversion.Version, typ, stateKey, content string) string {
	roomID := "!r:x.test"
	if v.RoomIDIsCreateEventID {
		roomID = "!" + strings.Repeat("R", 43)
	}
	var b strings.Builder
	b.WriteString(`{"auth_events":[],"content":` + content + `,"depth":4,`)
	if v.IsOriginBasedEventIDs() {
		b.WriteString(`"event_id":"$e:x.test",`)
	}
	b.WriteString(`"custom":{"a":1},"hashes":{"sha256":"AAAA"},"membership":"join","origin":"x.test",` +
		`"origin_server_ts":7,"prev_events":[],"prev_state":[],"redacts":"$t:x.test","room_id":"` + roomID + `",` +
		`"sender":"@a:x.test","signatures":{"x.test":{"ed25519:1":"c2ln"}},`)
	if stateKey != "-" {
		b.WriteString(`"state_key":"` + stateKey + `",`)
	}
	b.WriteString(`"type":"` + typ + `","unsigned":{"age_ts":1}}`)
	return b.String()
}

func TestRedactionAlgorithms(t *testing.T) {
	// Versions standing for each redaction variant (and v12, which reuses v11's).
	versions := []id.RoomVersion{"1", "5", "6", "8", "9", "10", "11", "12"}
	type want map[roomversion.RedactionAlgorithm]string
	tests := []struct {
		name, typ, stateKey, content string
		want                         want
	}{
		{
			name: "member", typ: "m.room.member", stateKey: "@a:x.test",
			content: `{"displayname":"A","join_authorised_via_users_server":"@r:x.test","membership":"join","third_party_invite":{"display_name":"d","signed":{"token":"t"}}}`,
			want: want{
				roomversion.RedactionV1:  `{"membership":"join"}`,
				roomversion.RedactionV6:  `{"membership":"join"}`,
				roomversion.RedactionV8:  `{"membership":"join"}`,
				roomversion.RedactionV9:  `{"join_authorised_via_users_server":"@r:x.test","membership":"join"}`,
				roomversion.RedactionV11: `{"join_authorised_via_users_server":"@r:x.test","membership":"join","third_party_invite":{"signed":{"token":"t"}}}`,
			},
		},
		{
			name: "member with unsigned third-party invite", typ: "m.room.member", stateKey: "@a:x.test",
			content: `{"membership":"invite","third_party_invite":{"display_name":"d"}}`,
			want: want{
				roomversion.RedactionV1:  `{"membership":"invite"}`,
				roomversion.RedactionV11: `{"membership":"invite","third_party_invite":{}}`,
			},
		},
		{
			name: "member with non-object third-party invite", typ: "m.room.member", stateKey: "@a:x.test",
			content: `{"membership":"invite","third_party_invite":"x"}`,
			want: want{
				roomversion.RedactionV1:  `{"membership":"invite"}`,
				roomversion.RedactionV11: `{"membership":"invite"}`,
			},
		},
		{
			name: "create", typ: "m.room.create", stateKey: "",
			content: `{"creator":"@a:x.test","m.federate":false,"predecessor":{"room_id":"!old:x.test"}}`,
			want: want{
				roomversion.RedactionV1:  `{"creator":"@a:x.test"}`,
				roomversion.RedactionV11: `{"creator":"@a:x.test","m.federate":false,"predecessor":{"room_id":"!old:x.test"}}`,
			},
		},
		{
			name: "join rules", typ: "m.room.join_rules", stateKey: "",
			content: `{"allow":[{"room_id":"!s:x.test","type":"m.room_membership"}],"join_rule":"restricted","other":1}`,
			want: want{
				roomversion.RedactionV1: `{"join_rule":"restricted"}`,
				roomversion.RedactionV6: `{"join_rule":"restricted"}`,
				roomversion.RedactionV8: `{"allow":[{"room_id":"!s:x.test","type":"m.room_membership"}],"join_rule":"restricted"}`,
			},
		},
		{
			name: "power levels", typ: "m.room.power_levels", stateKey: "",
			content: `{"ban":50,"events":{"m.room.name":50},"events_default":0,"historical":100,"invite":0,"kick":50,"notifications":{"room":50},"redact":50,"state_default":50,"users":{"@a:x.test":100},"users_default":0}`,
			want: want{
				roomversion.RedactionV1:  `{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@a:x.test":100},"users_default":0}`,
				roomversion.RedactionV11: `{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@a:x.test":100},"users_default":0}`,
			},
		},
		{
			name: "aliases", typ: "m.room.aliases", stateKey: "x.test",
			content: `{"aliases":["#a:x.test"],"other":1}`,
			want: want{
				roomversion.RedactionV1: `{"aliases":["#a:x.test"]}`,
				roomversion.RedactionV6: `{}`,
			},
		},
		{
			name: "history visibility", typ: "m.room.history_visibility", stateKey: "",
			content: `{"history_visibility":"shared","other":1}`,
			want:    want{roomversion.RedactionV1: `{"history_visibility":"shared"}`},
		},
		{
			name: "redaction", typ: "m.room.redaction", stateKey: "-",
			content: `{"reason":"spam","redacts":"$t:x.test"}`,
			want: want{
				roomversion.RedactionV1:  `{}`,
				roomversion.RedactionV11: `{"redacts":"$t:x.test"}`,
			},
		},
		{
			name: "message", typ: "m.room.message", stateKey: "-",
			content: `{"body":"secret","msgtype":"m.text"}`,
			want:    want{roomversion.RedactionV1: `{}`},
		},
	}
	for _, tt := range tests {
		for _, rv := range versions {
			v := roomversion.MustLookup(rv)
			t.Run(tt.name+"/v"+string(rv), func(t *testing.T) {
				// The expectation for a variant is the one listed for the
				// nearest variant at or below it.
				var expected string
				for alg := v.Redaction; alg >= roomversion.RedactionV1; alg-- {
					if w, ok := tt.want[alg]; ok {
						expected = w
						break
					}
				}
				ev, err := Parse(rv, []byte(redactionInput(v, tt.typ, tt.stateKey, tt.content)))
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				red := ev.Redacted()
				if got := string(red.Content()); got != expected {
					t.Errorf("content = %s\nwant %s", got, expected)
				}
				if string(red.PDU().Content) != expected {
					t.Errorf("PDU().Content = %s", red.PDU().Content)
				}
				// Top-level keys.
				var keys []string
				it := newMemberIter(red.JSON())
				for {
					k, _, _, _, ok := it.next()
					if !ok {
						break
					}
					keys = append(keys, strings.Trim(string(k), `"`))
				}
				wantKeys := "auth_events,content,depth,"
				if v.IsOriginBasedEventIDs() {
					wantKeys += "event_id,"
				}
				wantKeys += "hashes,"
				if !v.UpdatedRedactionRules {
					wantKeys += "membership,origin,"
				}
				wantKeys += "origin_server_ts,prev_events,"
				if !v.UpdatedRedactionRules {
					wantKeys += "prev_state,"
				}
				wantKeys += "room_id,sender,signatures,"
				if tt.stateKey != "-" {
					wantKeys += "state_key,"
				}
				wantKeys += "type"
				if got := strings.Join(keys, ","); got != wantKeys {
					t.Errorf("top-level keys = %s\nwant %s", got, wantKeys)
				}
				if red.ID() != ev.ID() || red.Unsigned() != nil || red.PDU().Unknown != nil || red.PDU().Redacts != nil {
					t.Errorf("redacted event keeps removed data or changed ID")
				}
				// Redaction is idempotent and parses back to the same event.
				if again := red.Redacted(); string(again.JSON()) != string(red.JSON()) {
					t.Errorf("redacting twice changed the event: %s", again.JSON())
				}
				reparsed, err := Parse(rv, red.JSON())
				if err != nil || reparsed.ID() != ev.ID() {
					t.Errorf("redacted event parses to %v (%v)", reparsed, err)
				}
			})
		}
	}
}

// TestRedactedExactBytes pins the whole redacted form of one event.
func TestRedactedExactBytes(t *testing.T) {
	v := roomversion.MustLookup("1")
	ev, err := Parse("1", []byte(redactionInput(v, "m.room.message", "-", `{"body":"x"}`)))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"auth_events":[],"content":{},"depth":4,"event_id":"$e:x.test","hashes":{"sha256":"AAAA"},"membership":"join","origin":"x.test","origin_server_ts":7,"prev_events":[],"prev_state":[],"room_id":"!r:x.test","sender":"@a:x.test","signatures":{"x.test":{"ed25519:1":"c2ln"}},"type":"m.room.message"}`
	if got := string(ev.Redacted().JSON()); got != want {
		t.Errorf("redacted = %s\nwant %s", got, want)
	}
}
