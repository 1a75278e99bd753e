package auth

import (
	"errors"
	"testing"

	"github.com/tidwall/gjson"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// TestStepFor checks the renumbering of rules in all twelve room versions
// against numbers read off each version's list in the spec.
func TestStepFor(t *testing.T) {
	// byVersion lists the expected number for v1 … v12, "" where the rule
	// does not exist.
	type byVersion [12]string
	repeat := func(parts ...any) byVersion {
		// parts: step, count, step, count, …
		var out byVersion
		i := 0
		for j := 0; j < len(parts); j += 2 {
			for range parts[j+1].(int) {
				out[i] = parts[j].(string)
				i++
			}
		}
		return out
	}
	cases := map[rule]byVersion{
		ruleCreatePrevEvents:           repeat("1.1", 12),
		ruleCreateNoCreator:            repeat("1.4", 10, "", 2),
		ruleAuthEventsDuplicate:        repeat("2.1", 11, "3.1", 1),
		ruleAuthEventsRoomMismatch:     repeat("2.5", 11, "3.4", 1),
		ruleFederationDisabled:         repeat("3", 11, "4", 1),
		ruleAliasesDomainMismatch:      repeat("4.2", 5, "", 7),
		ruleMemberMissingFields:        repeat("5.1", 5, "4.1", 6, "5.1", 1),
		ruleMemberAuthoriserNotSigned:  repeat("", 7, "4.2.1", 4, "5.2.1", 1),
		ruleJoinBanned:                 repeat("5.2.3", 5, "4.2.3", 2, "4.3.3", 4, "5.3.3", 1),
		ruleJoinNotAllowed:             repeat("5.2.6", 5, "4.2.6", 2, "4.3.7", 4, "5.3.7", 1),
		ruleJoinAuthoriser:             repeat("", 7, "4.3.5.2", 4, "5.3.5.2", 1),
		ruleTPINotSigned:               repeat("5.3.1.8", 5, "4.3.1.8", 2, "4.4.1.8", 4, "5.4.1.8", 1),
		ruleInviteTargetJoinedOrBanned: repeat("5.3.3", 5, "4.3.3", 2, "4.4.3", 4, "5.4.3", 1),
		ruleKickInsufficientPower:      repeat("5.4.5", 5, "4.4.5", 2, "4.5.5", 4, "5.5.5", 1),
		ruleBanInsufficientPower:       repeat("5.5.3", 5, "4.5.3", 2, "4.6.3", 4, "5.6.3", 1),
		ruleKnockAlreadyMember:         repeat("", 6, "4.6.4", 1, "4.7.4", 4, "5.7.4", 1),
		ruleUnknownMembership:          repeat("5.6", 5, "4.6", 1, "4.7", 1, "4.8", 4, "5.8", 1),
		ruleSenderNotJoined:            repeat("6", 5, "5", 6, "6", 1),
		ruleThirdPartyInvitePower:      repeat("7.1", 5, "6.1", 6, "7.1", 1),
		ruleInsufficientPower:          repeat("8", 5, "7", 6, "8", 1),
		ruleStateKeyNotSender:          repeat("9", 5, "8", 6, "9", 1),
		rulePLUsersInvalid:             repeat("10.1", 5, "9.1", 4, "9.3", 2, "10.3", 1),
		rulePLTopLevelCurrentTooHigh:   repeat("10.3.1", 5, "9.3.1", 4, "9.5.1", 2, "10.6.1", 1),
		rulePLMapNewTooHigh:            repeat("10.5.1", 5, "9.5.1", 4, "9.7.1", 2, "10.8.1", 1),
		rulePLUsersNewTooHigh:          repeat("10.7.1", 5, "9.7.1", 4, "9.9.1", 2, "10.10.1", 1),
		rulePLTopLevelNotInt:           repeat("", 9, "9.1", 2, "10.1", 1),
		rulePLCreatorListed:            repeat("", 11, "10.4", 1),
		ruleRedactionNotAllowed:        repeat("11.3", 2, "", 10),
	}
	versions := []id.RoomVersion{id.RoomV1, id.RoomV2, id.RoomV3, id.RoomV4, id.RoomV5, id.RoomV6, id.RoomV7, id.RoomV8, id.RoomV9, id.RoomV10, id.RoomV11, id.RoomV12}
	for r, want := range cases {
		for i, rv := range versions {
			if want[i] == "" {
				continue
			}
			if got := stepFor(rv, r); got != want[i] {
				t.Errorf("%q in v%s: got %s, want %s", rules[r].what, rv, got, want[i])
			}
		}
	}
	for r, info := range rules {
		if info.what == "" || (info.step == "") == (info.legacy == "") {
			t.Errorf("rule %d: incomplete table entry %+v", r, info)
		}
	}
}

// TestEventauthRulesMapped: every eventauth failure maps to a rule.
func TestEventauthRulesMapped(t *testing.T) {
	for afe, r := range eventauthRules {
		got, ok := eventauthRule(afe)
		if !ok || got != r {
			t.Errorf("%v: got %v %v", afe, got, ok)
		}
	}
	if _, ok := eventauthRule(errors.New("other")); ok {
		t.Error("unrelated error mapped to a rule")
	}
}

// TestEventauthPanicRecovered: a panic inside eventauth becomes ErrInternal.
// Allowed refuses non-state auth events, which would make eventauth
// dereference a nil state key; runEventauth is given one directly.
func TestEventauthPanicRecovered(t *testing.T) {
	emptyKey := ""
	create := &pdu.PDU{Type: typeCreate, StateKey: &emptyKey, Sender: "@a:a.test", RoomID: "!r:a.test",
		Content: []byte(`{"creator":"@a:a.test","room_version":"10"}`)}
	broken := &pdu.PDU{Type: typeMember, Sender: "@a:a.test", RoomID: "!r:a.test", Content: []byte(`{"membership":"join"}`)}
	evt := &pdu.PDU{Type: "m.room.message", Sender: "@a:a.test", RoomID: "!r:a.test", Content: []byte(`{}`)}
	c := &check{rv: id.RoomV10, version: roomversion.MustLookup(id.RoomV10), evt: evt, create: create, state: []*pdu.PDU{broken}}
	if err := c.runEventauth(evt, c.state); !errors.Is(err, ErrInternal) {
		t.Fatalf("got %v, want ErrInternal", err)
	}
}

func TestStrictInt(t *testing.T) {
	for raw, want := range map[string]bool{
		`0`: true, `-50`: true, `9007199254740991`: true, `-9007199254740991`: true,
		`9007199254740992`: false, `50.0`: false, `1e2`: false, `"50"`: false, `true`: false, `null`: false,
	} {
		if _, ok := strictInt(parse(raw)); ok != want {
			t.Errorf("%s: got %v", raw, ok)
		}
	}
}

func TestParseLevelBeforeV10(t *testing.T) {
	for raw, want := range map[string]int64{`true`: 1, `false`: 0, `42`: 42, `42.9`: 42, `" -7 "`: -7, `"+3"`: 3} {
		if got, ok := parseLevel(id.RoomV9, parse(raw)); !ok || got != want {
			t.Errorf("%s: got %d %v, want %d", raw, got, ok, want)
		}
	}
	for _, raw := range []string{`"4.5"`, `"x"`, `null`, `[]`, `{}`} {
		if _, ok := parseLevel(id.RoomV9, parse(raw)); ok {
			t.Errorf("%s parsed", raw)
		}
	}
}

func parse(raw string) gjson.Result { return gjson.Parse(raw) }

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"12", "@a:b.c", `@a"b\\c:d`, "@\u00e9\n:x"} {
		out := appendJSONString([]byte("x"), s)
		if got := gjson.ParseBytes(out[1:]); out[0] != 'x' || got.Type != gjson.String || got.Str != s {
			t.Errorf("%q: got %s", s, out)
		}
	}
}
