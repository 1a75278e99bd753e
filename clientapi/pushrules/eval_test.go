package pushrules

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// condCase evaluates one condition against one event.
type condCase struct {
	name  string
	cond  string // condition JSON
	event string // event JSON
	room  *RoomContext
	dn    string // recipient's display name
	want  bool
}

func runCondCases(t *testing.T, cases []condCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c Condition
			if err := json.Unmarshal([]byte(tc.cond), &c); err != nil {
				t.Fatalf("condition: %v", err)
			}
			rs := &Ruleset{Override: []*Rule{{Kind: Override, RuleID: "r", Enabled: true, Conditions: []Condition{c}, Actions: []Action{Notify}}}}
			ev := NewEvaluator("@me:example.org", rs)
			e, err := NewEvent([]byte(tc.event))
			if err != nil {
				t.Fatalf("event: %v", err)
			}
			room := tc.room
			if room == nil {
				room = &RoomContext{MemberCount: 5}
			}
			got := ev.Evaluate(e, room, tc.dn) != nil
			if got != tc.want {
				t.Errorf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

func topicEvent(topic string) string {
	return `{"content":{"topic":` + topic + `},"event_id":"$143273582443PhrSn:example.org","room_id":"!636q39766251:example.com","sender":"@example:example.org","state_key":"","type":"m.room.topic"}`
}

func bodyEvent(body string) string {
	b, _ := json.Marshal(body)
	return `{"content":{"body":` + string(b) + `,"msgtype":"m.text"},"event_id":"$1:example.org","room_id":"!636q39766251:example.com","sender":"@example:example.org","type":"m.room.message"}`
}

// TestEventMatch covers the spec's event_match examples (Client-Server API,
// "Conditions", event_match) and the glob rules.
func TestEventMatch(t *testing.T) {
	topic := `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`
	body := `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`
	runCondCases(t, []condCase{
		{"spec: Lunch plans", topic, topicEvent(`"Lunch plans"`), nil, "", true},
		{"spec: LUNCH (case-insensitive, * matches nothing)", topic, topicEvent(`"LUNCH"`), nil, "", true},
		{"spec: leading space", topic, topicEvent(`" lunch"`), nil, "", false},
		{"spec: lunc (? needs a character)", topic, topicEvent(`"lunc"`), nil, "", false},
		{"spec: null is not a string", topic, topicEvent(`null`), nil, "", false},
		{"number is not a string", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, topicEvent(`12`), nil, "", false},
		{"* matches any string", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, topicEvent(`""`), nil, "", true},
		{"absent property never matches", `{"kind":"event_match","key":"content.nope","pattern":"*"}`, topicEvent(`"x"`), nil, "", false},
		{"whole value, not substring", `{"kind":"event_match","key":"content.topic","pattern":"lunch"}`, topicEvent(`"Lunch plans"`), nil, "", false},
		{"literal equality", `{"kind":"event_match","key":"type","pattern":"M.ROOM.TOPIC"}`, topicEvent(`"x"`), nil, "", true},
		{"state_key empty pattern", `{"kind":"event_match","key":"state_key","pattern":""}`, topicEvent(`"x"`), nil, "", true},
		{"regex metacharacters are literal", `{"kind":"event_match","key":"content.topic","pattern":"a.c*"}`, topicEvent(`"abcd"`), nil, "", false},
		{"spec: body An example event.", body, bodyEvent("An example event."), nil, "", true},
		{"spec: body exple", body, bodyEvent("exple"), nil, "", true},
		{"spec: body spans words, - separates", body, bodyEvent("An exciting triple-whammy"), nil, "", true},
		{"body: must start at a boundary", body, bodyEvent("Anexample"), nil, "", false},
		{"body: must end at a boundary", body, bodyEvent("examples"), nil, "", false},
		{"body: literal word", `{"kind":"event_match","key":"content.body","pattern":"@room"}`, bodyEvent("hey @ROOM!"), nil, "", true},
		{"body: literal inside a word", `{"kind":"event_match","key":"content.body","pattern":"room"}`, bodyEvent("bathroom"), nil, "", false},
		{"body: underscore is a word character", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, bodyEvent("cake_lie"), nil, "", false},
		{"escaped dot in key", `{"kind":"event_match","key":"content.m\\.relates_to.rel_type","pattern":"m.thread"}`,
			`{"type":"m.room.message","sender":"@a:b","room_id":"!r:b","content":{"m.relates_to":{"rel_type":"m.thread"}}}`, nil, "", true},
		{"unescaped dot does not reach a dotted key", `{"kind":"event_match","key":"content.m.relates_to.rel_type","pattern":"m.thread"}`,
			`{"type":"m.room.message","sender":"@a:b","room_id":"!r:b","content":{"m.relates_to":{"rel_type":"m.thread"}}}`, nil, "", false},
	})
}

func createEvent(federate string) string {
	return `{"content":{"creator":"@example:example.org","m.federate":` + federate + `,"predecessor":{"event_id":"$something:example.org","room_id":"!oldroom:example.org"},"room_version":"1"},"event_id":"$143273582443PhrSn:example.org","room_id":"!636q39766251:example.com","sender":"@example:example.org","state_key":"","type":"m.room.create"}`
}

// TestEventPropertyIs covers the spec's event_property_is example.
func TestEventPropertyIs(t *testing.T) {
	cond := `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`
	runCondCases(t, []condCase{
		{"spec: true matches", cond, createEvent("true"), nil, "", true},
		{"spec: string true does not", cond, createEvent(`"true"`), nil, "", false},
		{"spec: 1 does not (no casting)", cond, createEvent("1"), nil, "", false},
		{"false does not", cond, createEvent("false"), nil, "", false},
		{"absent does not", `{"kind":"event_property_is","key":"content.nope","value":null}`, createEvent("true"), nil, "", false},
		{"null matches null", `{"kind":"event_property_is","key":"content.m\\.federate","value":null}`, createEvent("null"), nil, "", true},
		{"integer", `{"kind":"event_property_is","key":"content.n","value":42}`, `{"type":"t","sender":"@a:b","content":{"n":42}}`, nil, "", true},
		{"integer vs float", `{"kind":"event_property_is","key":"content.n","value":42}`, `{"type":"t","sender":"@a:b","content":{"n":42.0}}`, nil, "", false},
		{"string exact, case-sensitive", `{"kind":"event_property_is","key":"content.m\\.relates_to.rel_type","value":"m.replace"}`,
			`{"type":"m.room.message","sender":"@a:b","content":{"m.relates_to":{"rel_type":"M.REPLACE"}}}`, nil, "", false},
		{"object is not a value", `{"kind":"event_property_is","key":"content.predecessor","value":null}`, createEvent("true"), nil, "", false},
		{"redundant escape is literal backslash", `{"kind":"event_property_is","key":"content.a\\x","value":1}`, `{"type":"t","sender":"@a:b","content":{"a\\x":1}}`, nil, "", true},
	})
}

// TestEventPropertyContains covers the spec's event_property_contains example.
func TestEventPropertyContains(t *testing.T) {
	ev := `{"content":{"alias":"#somewhere:localhost","alt_aliases":["#somewhere:example.org","#myroom:example.com"]},"event_id":"$143273582443PhrSn:example.org","origin_server_ts":1432735824653,"room_id":"!jEsUZKDJdhlrceRyVU:example.org","sender":"@example:example.org","state_key":"","type":"m.room.canonical_alias","unsigned":{"age":1234}}`
	runCondCases(t, []condCase{
		{"spec: exact element", `{"kind":"event_property_contains","key":"content.alt_aliases","value":"#myroom:example.com"}`, ev, nil, "", true},
		{"spec: partial values do not match", `{"kind":"event_property_contains","key":"content.alt_aliases","value":":example.com"}`, ev, nil, "", false},
		{"not an array", `{"kind":"event_property_contains","key":"content.alias","value":"#somewhere:localhost"}`, ev, nil, "", false},
		{"absent", `{"kind":"event_property_contains","key":"content.nope","value":"x"}`, ev, nil, "", false},
		{"mixed array, compound items ignored", `{"kind":"event_property_contains","key":"content.a","value":true}`,
			`{"type":"t","sender":"@a:b","content":{"a":[{"x":1},[true],true]}}`, nil, "", true},
		{"user mention", `{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@me:example.org"}`,
			`{"type":"m.room.message","sender":"@a:b","content":{"body":"hi","m.mentions":{"user_ids":["@me:example.org"]}}}`, nil, "", true},
	})
}

// TestContainsDisplayName covers contains_display_name.
func TestContainsDisplayName(t *testing.T) {
	cond := `{"kind":"contains_display_name"}`
	runCondCases(t, []condCase{
		{"name as a word", cond, bodyEvent("hello Alice Smith, how are you"), nil, "Alice Smith", true},
		{"case-insensitive", cond, bodyEvent("ALICE SMITH!"), nil, "alice smith", true},
		{"inside a word", cond, bodyEvent("Alicesmithers"), nil, "Alice", false},
		{"later occurrence at boundary", cond, bodyEvent("Alicex and Alice"), nil, "Alice", true},
		{"no display name", cond, bodyEvent("Alice"), nil, "", false},
		{"no body", cond, topicEvent(`"Alice"`), nil, "Alice", false},
	})
}

// TestRoomMemberCount covers room_member_count with each operator.
func TestRoomMemberCount(t *testing.T) {
	ev := bodyEvent("hi")
	rc := func(n int) *RoomContext { return &RoomContext{MemberCount: n} }
	c := func(is string) string { return `{"kind":"room_member_count","is":"` + is + `"}` }
	runCondCases(t, []condCase{
		{"bare number is ==", c("2"), ev, rc(2), "", true},
		{"bare number is == (miss)", c("2"), ev, rc(3), "", false},
		{"==", c("==3"), ev, rc(3), "", true},
		{"<", c("<10"), ev, rc(9), "", true},
		{"< (miss)", c("<10"), ev, rc(10), "", false},
		{"<=", c("<=10"), ev, rc(10), "", true},
		{">", c(">1"), ev, rc(2), "", true},
		{"> (miss)", c(">2"), ev, rc(2), "", false},
		{">=", c(">=2"), ev, rc(2), "", true},
	})
}

// TestSenderNotificationPermission covers sender_notification_permission.
func TestSenderNotificationPermission(t *testing.T) {
	ev := bodyEvent("@room")
	c := `{"kind":"sender_notification_permission","key":"room"}`
	runCondCases(t, []condCase{
		{"default needs 50", c, ev, &RoomContext{SenderPowerLevel: 50}, "", true},
		{"below default", c, ev, &RoomContext{SenderPowerLevel: 49}, "", false},
		{"custom level met", c, ev, &RoomContext{SenderPowerLevel: 10, NotificationPowerLevels: map[string]int64{"room": 10}}, "", true},
		{"custom level not met", c, ev, &RoomContext{SenderPowerLevel: 99, NotificationPowerLevels: map[string]int64{"room": 100}}, "", false},
	})
}

func TestUnknownConditionNeverMatches(t *testing.T) {
	runCondCases(t, []condCase{
		{"unknown kind", `{"kind":"org.example.always"}`, bodyEvent("x"), nil, "", false},
	})
}

func TestConditionValidation(t *testing.T) {
	for _, bad := range []string{
		`{}`, `[]`, `{"kind":3}`,
		`{"kind":"event_match","key":"type"}`,
		`{"kind":"event_match","pattern":"x"}`,
		`{"kind":"event_match","key":1,"pattern":"x"}`,
		`{"kind":"event_property_is","key":"a"}`,
		`{"kind":"event_property_is","key":"a","value":{"x":1}}`,
		`{"kind":"event_property_is","key":"a","value":1.5}`,
		`{"kind":"event_property_is","key":"a","value":9007199254740992}`,
		`{"kind":"room_member_count","is":"=2"}`,
		`{"kind":"room_member_count","is":""}`,
		`{"kind":"room_member_count"}`,
		`{"kind":"sender_notification_permission"}`,
	} {
		var c Condition
		if err := json.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// message builds an m.room.message event from sender.
func message(sender, body string, extra string) *Event {
	b, _ := json.Marshal(body)
	e, err := NewEvent([]byte(`{"type":"m.room.message","room_id":"!r:hs","sender":"` + sender + `","content":{"msgtype":"m.text","body":` + string(b) + extra + `}}`))
	if err != nil {
		panic(err)
	}
	return e
}

// TestDefaultRules walks the default rule set: which rule each event hits and
// what it asks for.
func TestDefaultRules(t *testing.T) {
	me := "@alice:hs"
	ev := NewEvaluator(me, Defaults(me, "alice"))
	group := &RoomContext{MemberCount: 5, SenderPowerLevel: 0}
	mod := &RoomContext{MemberCount: 5, SenderPowerLevel: 50}
	dm := &RoomContext{MemberCount: 2}
	mk := func(js string) *Event {
		e, err := NewEvent([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	cases := []struct {
		name      string
		e         *Event
		room      *RoomContext
		dn        string
		rule      string
		notify    bool
		highlight bool
		sound     string
	}{
		{"plain message in group", message("@bob:hs", "hello", ""), group, "Alice", RuleMessage, true, false, ""},
		{"plain message in DM", message("@bob:hs", "hello", ""), dm, "Alice", RuleRoomOneToOne, true, false, "default"},
		{"own message", message(me, "hello", ""), group, "Alice", "", false, false, ""},
		{"notice", message("@bob:hs", "x", `,"msgtype":"m.notice"`), group, "", RuleSuppressNotices, false, false, ""},
		{"intentional user mention", message("@bob:hs", "hi", `,"m.mentions":{"user_ids":["@alice:hs"]}`), group, "Alice", RuleIsUserMention, true, true, "default"},
		{"legacy display name mention", message("@bob:hs", "hi Alice!", ""), group, "Alice", RuleContainsDisplayName, true, true, "default"},
		{"m.mentions switches legacy rules off", message("@bob:hs", "hi Alice alice @room", `,"m.mentions":{}`), mod, "Alice", RuleMessage, true, false, ""},
		{"legacy user name mention", message("@bob:hs", "ping alice", ""), group, "Someone", RuleContainsUserName, true, true, "default"},
		{"room mention by moderator", message("@bob:hs", "all", `,"m.mentions":{"room":true}`), mod, "", RuleIsRoomMention, true, true, ""},
		{"room mention without power", message("@bob:hs", "all", `,"m.mentions":{"room":true}`), group, "", RuleMessage, true, false, ""},
		{"legacy @room by moderator", message("@bob:hs", "hey @room", ""), mod, "", RuleRoomNotif, true, true, ""},
		{"edit suppressed", message("@bob:hs", "* fixed typo", `,"m.relates_to":{"rel_type":"m.replace","event_id":"$x"}`), group, "Alice", RuleSuppressEdits, false, false, ""},
		{"invite for me", mk(`{"type":"m.room.member","room_id":"!r:hs","sender":"@bob:hs","state_key":"@alice:hs","content":{"membership":"invite"}}`), group, "", RuleInviteForMe, true, false, "default"},
		{"other member event", mk(`{"type":"m.room.member","room_id":"!r:hs","sender":"@bob:hs","state_key":"@bob:hs","content":{"membership":"join"}}`), group, "", RuleMemberEvent, false, false, ""},
		{"tombstone", mk(`{"type":"m.room.tombstone","room_id":"!r:hs","sender":"@bob:hs","state_key":"","content":{"body":"moved"}}`), group, "", RuleTombstone, true, true, ""},
		{"tombstone without state key is a message event", mk(`{"type":"m.room.tombstone","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), group, "", "", false, false, ""},
		{"reaction", mk(`{"type":"m.reaction","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), dm, "", RuleReaction, false, false, ""},
		{"server ACL", mk(`{"type":"m.room.server_acl","room_id":"!r:hs","sender":"@bob:hs","state_key":"","content":{}}`), group, "", RuleServerACL, false, false, ""},
		{"call", mk(`{"type":"m.call.invite","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), group, "", RuleCall, true, false, "ring"},
		{"encrypted DM", mk(`{"type":"m.room.encrypted","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), dm, "", RuleEncryptedRoomOneToOne, true, false, "default"},
		{"encrypted group", mk(`{"type":"m.room.encrypted","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), group, "", RuleEncrypted, true, false, ""},
		{"poll response silent", mk(`{"type":"org.matrix.msc3381.poll.response","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), dm, "", RulePollResponse, false, false, ""},
		{"poll start in DM", mk(`{"type":"org.matrix.msc3381.poll.start","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), dm, "", RulePollStartOneToOne, true, false, "default"},
		{"poll start in group", mk(`{"type":"org.matrix.msc3381.poll.start","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), group, "", RulePollStart, true, false, ""},
		{"poll end in DM", mk(`{"type":"org.matrix.msc3381.poll.end","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), dm, "", RulePollEndOneToOne, true, false, "default"},
		{"poll end in group", mk(`{"type":"org.matrix.msc3381.poll.end","room_id":"!r:hs","sender":"@bob:hs","content":{}}`), group, "", RulePollEnd, true, false, ""},
		{"state event no rule", mk(`{"type":"m.room.name","room_id":"!r:hs","sender":"@bob:hs","state_key":"","content":{"name":"x"}}`), group, "", "", false, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ev.Evaluate(tc.e, tc.room, tc.dn)
			if tc.rule == "" {
				if r != nil {
					t.Fatalf("matched %s, want none", r.RuleID)
				}
				return
			}
			if r == nil {
				t.Fatalf("no match, want %s", tc.rule)
			}
			if r.RuleID != tc.rule || r.Notify != tc.notify || r.Highlight != tc.highlight || r.Sound != tc.sound {
				t.Fatalf("got %s notify=%v highlight=%v sound=%q; want %s %v %v %q", r.RuleID, r.Notify, r.Highlight, r.Sound, tc.rule, tc.notify, tc.highlight, tc.sound)
			}
		})
	}
}

// TestDefaultRulesJSON checks the wire form of defaults against the spec's
// definitions for a few rules with every condition kind.
func TestDefaultRulesJSON(t *testing.T) {
	rs := Defaults("@alice:hs", "alice")
	b, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		`{"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]}`,
		`{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,"conditions":[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@alice:hs"}],"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}`,
		`{"rule_id":".m.rule.is_room_mention","default":true,"enabled":true,"conditions":[{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true},{"kind":"sender_notification_permission","key":"room"}],"actions":["notify",{"set_tweak":"highlight"}]}`,
		`{"rule_id":".m.rule.tombstone","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.tombstone"},{"kind":"event_match","key":"state_key","pattern":""}],"actions":["notify",{"set_tweak":"highlight"}]}`,
		`{"rule_id":".m.rule.contains_user_name","default":true,"enabled":true,"pattern":"alice","actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}`,
		`{"rule_id":".m.rule.encrypted_room_one_to_one","default":true,"enabled":true,"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.encrypted"}],"actions":["notify",{"set_tweak":"sound","value":"default"}]}`,
		`{"rule_id":".org.matrix.msc3930.rule.poll_response","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.response"}],"actions":[]}`,
		`{"rule_id":".org.matrix.msc3930.rule.poll_start_one_to_one","default":true,"enabled":true,"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.start"}],"actions":["notify",{"set_tweak":"sound","value":"default"}]}`,
		`"room":[]`, `"sender":[]`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %s", want)
		}
	}
	ids := map[Kind][]string{}
	for _, k := range Kinds {
		for _, r := range rs.Rules(k) {
			ids[k] = append(ids[k], r.RuleID)
		}
	}
	wantOrder := fmt.Sprint([]string{RuleMaster, RuleSuppressNotices, RuleInviteForMe, RuleMemberEvent, RuleIsUserMention,
		RuleContainsDisplayName, RuleIsRoomMention, RuleRoomNotif, RuleTombstone, RuleReaction, RuleServerACL, RuleSuppressEdits, RulePollResponse})
	if fmt.Sprint(ids[Override]) != wantOrder {
		t.Errorf("override order %v", ids[Override])
	}
	if fmt.Sprint(ids[Underride]) != fmt.Sprint([]string{RuleCall, RuleEncryptedRoomOneToOne, RuleRoomOneToOne,
		RulePollStartOneToOne, RulePollStart, RulePollEndOneToOne, RulePollEnd, RuleMessage, RuleEncrypted}) {
		t.Errorf("underride order %v", ids[Underride])
	}
}

// TestUserRulesPriority: user rules, room and sender rules, and master.
func TestUserRulesPriority(t *testing.T) {
	me := "@alice:hs"
	u := &UserRules{}
	mustPut := func(r *Rule, before, after string) {
		t.Helper()
		if err := u.Put(r, before, after); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(&Rule{Kind: Room, RuleID: "!quiet:hs", Actions: []Action{}}, "", "")
	mustPut(&Rule{Kind: Sender, RuleID: "@loud:hs", Actions: []Action{Notify, SetTweak("sound", "horn")}}, "", "")
	mustPut(&Rule{Kind: Content, RuleID: "cake", Pattern: "cake", Actions: []Action{Notify, SetTweak("sound", "cakealarm.wav")}}, "", "")
	mustPut(&Rule{Kind: Override, RuleID: "beer", Conditions: []Condition{EventMatch("content.body", "beer"), MemberCount("<=10")},
		Actions: []Action{Notify, SetTweak("sound", "beeroclock.wav")}}, "", "")
	ev := NewEvaluator(me, u.Ruleset(me, "alice"))
	room := &RoomContext{MemberCount: 5}
	check := func(e *Event, want, sound string) {
		t.Helper()
		r := ev.Evaluate(e, room, "")
		if r == nil || r.RuleID != want || r.Sound != sound {
			t.Fatalf("got %+v, want %s/%s", r, want, sound)
		}
	}
	msg := func(room, sender, body string) *Event {
		b, _ := json.Marshal(body)
		e, _ := NewEvent([]byte(`{"type":"m.room.message","room_id":"` + room + `","sender":"` + sender + `","content":{"body":` + string(b) + `}}`))
		return e
	}
	check(msg("!r:hs", "@bob:hs", "a beer?"), "beer", "beeroclock.wav")
	check(msg("!quiet:hs", "@bob:hs", "time for Cake"), "cake", "cakealarm.wav")
	check(msg("!quiet:hs", "@bob:hs", "hi"), "!quiet:hs", "")
	check(msg("!r:hs", "@loud:hs", "hi"), "@loud:hs", "horn")
	check(msg("!r:hs", "@bob:hs", "hi"), RuleMessage, "")
	if err := u.SetEnabled(Override, RuleMaster, true); err != nil {
		t.Fatal(err)
	}
	ev = NewEvaluator(me, u.Ruleset(me, "alice"))
	if r := ev.Evaluate(msg("!r:hs", "@bob:hs", "a beer?"), room, ""); r == nil || r.RuleID != RuleMaster || r.Notify {
		t.Fatalf("master: %+v", r)
	}
}

func ids(rules []*Rule) string {
	var s []string
	for _, r := range rules {
		s = append(s, r.RuleID)
	}
	return strings.Join(s, ",")
}

// TestPutOrdering covers before/after and updates.
func TestPutOrdering(t *testing.T) {
	u := &UserRules{}
	put := func(id, before, after string) error {
		return u.Put(&Rule{Kind: Content, RuleID: id, Pattern: id, Actions: []Action{Notify}}, before, after)
	}
	steps := []struct {
		id, before, after string
		wantErr           error
		want              string
	}{
		{"a", "", "", nil, "a"},
		{"b", "", "", nil, "b,a"},                  // new rules go first
		{"c", "a", "", nil, "b,c,a"},               // before a
		{"d", "", "b", nil, "b,d,c,a"},             // after b
		{"e", "c", "a", nil, "b,d,e,c,a"},          // before wins
		{"a", "", "", nil, "b,d,e,c,a"},            // update keeps place
		{"a", "b", "", nil, "a,b,d,e,c"},           // update moves
		{"b", "", "c", nil, "a,d,e,c,b"},           // move after
		{"x", "nope", "", ErrRelativeNotFound, ""}, // unknown relative
		{"x", ".m.rule.contains_user_name", "", ErrRelativeNotFound, ""},
		{".mine", "", "", ErrReservedRuleID, ""},
		{"a/b", "", "", ErrBadRuleID, ""},
	}
	for _, s := range steps {
		err := put(s.id, s.before, s.after)
		if s.wantErr != nil {
			if err == nil || !strings.Contains(err.Error(), s.wantErr.Error()) {
				t.Fatalf("put %s: err %v, want %v", s.id, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("put %s: %v", s.id, err)
		}
		if got := ids(u.Content); got != s.want {
			t.Fatalf("after put %s (before=%q after=%q): %s, want %s", s.id, s.before, s.after, got, s.want)
		}
	}
	if err := u.SetEnabled(Content, "d", false); err != nil {
		t.Fatal(err)
	}
	if err := put("d", "", ""); err != nil || u.Content[1].Enabled {
		t.Fatalf("update must keep enabled=false: %v %+v", err, u.Content[1])
	}
	if err := u.Delete(Content, "d"); err != nil || ids(u.Content) != "a,e,c,b" {
		t.Fatalf("delete: %v %s", err, ids(u.Content))
	}
	if err := u.Delete(Content, "d"); err != ErrNotFound {
		t.Fatalf("delete again: %v", err)
	}
	if err := u.Delete(Content, RuleContainsUserName); err != ErrDefaultRule {
		t.Fatalf("delete default: %v", err)
	}
	if err := u.SetActions(Underride, ".m.rule.nope", nil); err != ErrNotFound {
		t.Fatalf("unknown default: %v", err)
	}
	// Round trip through storage.
	b, err := u.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	u2, err := ParseUserRules(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := u2.Marshal()
	if string(b) != string(b2) {
		t.Fatalf("round trip:\n%s\n%s", b, b2)
	}
}

// TestParseActions: the historical dont_notify and coalesce are kept as given
// (clients read back what they wrote) but act as no-ops.
func TestParseActions(t *testing.T) {
	acts, err := ParseActions([]byte(`["notify","dont_notify","coalesce",{"set_tweak":"sound","value":"x"}]`))
	if err != nil || len(acts) != 4 {
		t.Fatalf("%v %v", acts, err)
	}
	if b, _ := json.Marshal(acts); string(b) != `["notify","dont_notify","coalesce",{"set_tweak":"sound","value":"x"}]` {
		t.Fatalf("round trip: %s", b)
	}
	for _, bad := range []string{`"notify"`, `["nope"]`, `[{"value":1}]`, `[3]`} {
		if _, err := ParseActions([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	cases := []struct {
		actions string
		notify  bool
	}{
		{`["dont_notify"]`, false},
		{`["coalesce"]`, false},
		{`["dont_notify","notify"]`, true},
		{`[]`, false},
	}
	for _, tc := range cases {
		t.Run(tc.actions, func(t *testing.T) {
			acts, err := ParseActions([]byte(tc.actions))
			if err != nil {
				t.Fatal(err)
			}
			rs := &Ruleset{Sender: []*Rule{{Kind: Sender, RuleID: "@bob:hs", Enabled: true, Actions: acts}}}
			r := NewEvaluator("@alice:hs", rs).Evaluate(message("@bob:hs", "hi", ""), &RoomContext{MemberCount: 3}, "")
			if r == nil || r.RuleID != "@bob:hs" || r.Notify != tc.notify {
				t.Fatalf("got %+v, want notify=%v", r, tc.notify)
			}
		})
	}
}

// TestPostContentRules: postcontent rules (MSC4306) carry conditions and rank
// after content rules and before room rules; the kind is written only when it
// has rules.
func TestPostContentRules(t *testing.T) {
	me := "@alice:hs"
	u := &UserRules{}
	for _, r := range []*Rule{
		{Kind: PostContent, RuleID: "threads", Conditions: []Condition{EventMatch("content.body", "thread*")}, Actions: []Action{Notify, SetTweak("sound", "pc")}},
		{Kind: Room, RuleID: "!r:hs", Actions: []Action{}},
		{Kind: Content, RuleID: "cake", Pattern: "cake", Actions: []Action{Notify, SetTweak("sound", "cake")}},
	} {
		if err := u.Put(r, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if k, ok := ParseKind("postcontent"); !ok || k != PostContent {
		t.Fatalf("ParseKind(postcontent) = %q %v", k, ok)
	}
	rs := u.Ruleset(me, "alice")
	ev := NewEvaluator(me, rs)
	room := &RoomContext{MemberCount: 5}
	for _, tc := range []struct{ body, rule string }{
		{"thread cake", "cake"},
		{"thread talk", "threads"},
		{"hello", "!r:hs"},
	} {
		if r := ev.Evaluate(message("@bob:hs", tc.body, ""), room, ""); r == nil || r.RuleID != tc.rule {
			t.Errorf("%q: got %+v, want %s", tc.body, r, tc.rule)
		}
	}
	b, _ := json.Marshal(rs)
	if !strings.Contains(string(b), `"postcontent":[{"rule_id":"threads","default":false,"enabled":true,"conditions":[{"kind":"event_match","key":"content.body","pattern":"thread*"}]`) {
		t.Errorf("postcontent JSON: %s", b)
	}
	if b, _ := json.Marshal(Defaults(me, "alice")); strings.Contains(string(b), "postcontent") {
		t.Errorf("empty postcontent written: %s", b)
	}
	if err := u.SetEnabled(PostContent, ".io.element.msc4306.rule.subscribed_thread", false); err != ErrNotFound {
		t.Errorf("unknown default postcontent rule: %v", err)
	}
}

// TestCopyRoomRules: a room upgrade carries the user's rules about the old
// room over to the new one.
func TestCopyRoomRules(t *testing.T) {
	const oldRoom, newRoom = "!old:hs", "!new:hs"
	dontNotify, _ := ParseActions([]byte(`["dont_notify"]`))
	cases := []struct {
		name   string
		rules  []*Rule
		copied bool
		want   map[Kind]string // rule IDs per kind after the copy
	}{
		{
			name:   "room rule",
			rules:  []*Rule{{Kind: Room, RuleID: oldRoom, Actions: dontNotify}, {Kind: Room, RuleID: "!other:hs", Actions: []Action{}}},
			copied: true,
			want:   map[Kind]string{Room: newRoom + "," + oldRoom + ",!other:hs"},
		},
		{
			name: "override rule with a room_id condition",
			rules: []*Rule{{Kind: Override, RuleID: "in-" + oldRoom, Conditions: []Condition{EventMatch("room_id", oldRoom), EventMatch("type", "m.x")}, Actions: []Action{Notify}},
				{Kind: Override, RuleID: "elsewhere", Conditions: []Condition{EventMatch("room_id", "!other:hs")}, Actions: []Action{Notify}}},
			copied: true,
			want:   map[Kind]string{Override: "in-" + newRoom + ",in-" + oldRoom + ",elsewhere"},
		},
		{
			name:   "already present",
			rules:  []*Rule{{Kind: Room, RuleID: newRoom, Actions: []Action{Notify}}, {Kind: Room, RuleID: oldRoom, Actions: dontNotify}},
			copied: false,
			want:   map[Kind]string{Room: newRoom + "," + oldRoom},
		},
		{
			name:   "nothing about the old room",
			rules:  []*Rule{{Kind: Sender, RuleID: "@bob:hs", Actions: []Action{}}},
			copied: false,
			want:   map[Kind]string{Sender: "@bob:hs", Room: ""},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := &UserRules{}
			for i := len(tc.rules) - 1; i >= 0; i-- {
				if err := u.Put(tc.rules[i], "", ""); err != nil {
					t.Fatal(err)
				}
			}
			if got := u.CopyRoomRules(oldRoom, newRoom); got != tc.copied {
				t.Fatalf("copied = %v, want %v", got, tc.copied)
			}
			for k, want := range tc.want {
				if got := ids(*u.list(k)); got != want {
					t.Errorf("%s: %s, want %s", k, got, want)
				}
			}
		})
	}
	// The copy is independent of the original and points at the new room.
	u := &UserRules{}
	_ = u.Put(&Rule{Kind: Override, RuleID: "r", Conditions: []Condition{EventMatch("room_id", oldRoom)}, Actions: dontNotify}, "", "")
	u.CopyRoomRules(oldRoom, newRoom)
	if c := u.Override[0]; c.RuleID != newRoom || c.Conditions[0].Pattern != newRoom || u.Override[1].Conditions[0].Pattern != oldRoom {
		t.Fatalf("copy: %+v / %+v", u.Override[0], u.Override[1])
	}
	if b, _ := json.Marshal(u.Override[0].Actions); string(b) != `["dont_notify"]` {
		t.Fatalf("actions: %s", b)
	}
	// Disabled rules stay behind.
	u = &UserRules{}
	_ = u.Put(&Rule{Kind: Room, RuleID: oldRoom, Actions: []Action{}}, "", "")
	_ = u.SetEnabled(Room, oldRoom, false)
	if u.CopyRoomRules(oldRoom, newRoom) {
		t.Fatal("disabled rule copied")
	}
}

// BenchmarkEvaluate measures evaluating one message for one recipient with the
// default rules (the per-recipient cost of notification counting).
func BenchmarkEvaluate(b *testing.B) {
	me := "@alice:hs"
	ev := NewEvaluator(me, Defaults(me, "alice"))
	e := message("@bob:hs", "Hello everyone, this is a fairly ordinary message about lunch plans for today.", `,"m.mentions":{}`)
	legacy := message("@bob:hs", "Hello everyone, this is a fairly ordinary message about lunch plans for today.", "")
	room := &RoomContext{MemberCount: 30, SenderPowerLevel: 0}
	b.Run("mentions", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := ev.Evaluate(e, room, "Alice"); r == nil {
				b.Fatal("no match")
			}
		}
	})
	b.Run("legacy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := ev.Evaluate(legacy, room, "Alice"); r == nil {
				b.Fatal("no match")
			}
		}
	})
}

// BenchmarkNewEvent measures preparing an event (once per event).
func BenchmarkNewEvent(b *testing.B) {
	raw := []byte(`{"type":"m.room.message","room_id":"!r:hs","sender":"@bob:hs","origin_server_ts":1,"content":{"msgtype":"m.text","body":"Hello everyone","m.mentions":{"user_ids":["@a:hs"]}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}
