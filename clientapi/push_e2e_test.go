package clientapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	hpush "hearth/clientapi/pushrules"
	"hearth/internal/testserver"
)

func ruleIDs(t *testing.T, r resp, kind string) string {
	t.Helper()
	g, _ := r.body["global"].(map[string]any)
	if g == nil {
		g = r.body
	}
	rules, _ := g[kind].([]any)
	var ids []string
	for _, x := range rules {
		m, _ := x.(map[string]any)
		ids = append(ids, m["rule_id"].(string))
	}
	return strings.Join(ids, ",")
}

// TestPushRulesAPI covers the push rule CRUD endpoints: defaults, user rules
// with before/after ordering, enabled and actions (also of default rules), and
// that the evaluator sees the changes.
func TestPushRulesAPI(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		a := alice.api
		rs, err := alice.cli.GetPushRules(ctx)
		if err != nil || len(rs.Override) != 13 || len(rs.Underride) != 9 || len(rs.Content) != 1 || rs.Override[0].RuleID != hpush.RuleMaster {
			t.Fatalf("defaults via mautrix: %+v %v", rs, err)
		}
		if rs.Content[0].Pattern != "alice" {
			t.Fatalf("contains_user_name pattern: %+v", rs.Content[0])
		}
		a.do("GET", v3+"/pushrules/global/", nil).expect(t, 200, "")
		a.do("GET", "/_matrix/client/r0/pushrules/", nil).expect(t, 200, "")

		// Content rules, ordered with before/after, as in the spec's examples.
		put := func(id, query string, body map[string]any) resp {
			return a.do("PUT", v3+"/pushrules/global/content/"+id+query, body)
		}
		put("cake", "", map[string]any{"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "cakealarm.wav"}}}).expect(t, 200, "")
		put("cakelie", "?before=cake", map[string]any{"pattern": "cake*lie", "actions": []any{"notify"}}).expect(t, 200, "")
		put("tea", "?after=cake", map[string]any{"pattern": "tea", "actions": []any{"notify", "dont_notify"}}).expect(t, 200, "")
		all := a.do("GET", v3+"/pushrules/", nil).expect(t, 200, "")
		if got := ruleIDs(t, all, "content"); got != "cakelie,cake,tea,.m.rule.contains_user_name" {
			t.Fatalf("content order: %s", got)
		}
		tea := a.do("GET", v3+"/pushrules/global/content/tea", nil).expect(t, 200, "")
		if tea.body["default"] != false || tea.body["enabled"] != true || tea.str("pattern") != "tea" {
			t.Fatalf("tea: %s", tea)
		}
		if acts, _ := tea.body["actions"].([]any); len(acts) != 2 || acts[1] != "dont_notify" {
			t.Fatalf("dont_notify must be kept as given: %s", tea)
		}
		put("x", "?before=nope", map[string]any{"pattern": "x", "actions": []any{}}).expect(t, 400, "M_UNKNOWN")
		put("x", "?after=.m.rule.contains_user_name", map[string]any{"pattern": "x", "actions": []any{}}).expect(t, 400, "M_UNKNOWN")
		put(".m.rule.mine", "", map[string]any{"pattern": "x", "actions": []any{}}).expect(t, 400, "M_INVALID_PARAM")
		put("x", "", map[string]any{"actions": []any{}}).expect(t, 400, "M_MISSING_PARAM")
		put("x", "", map[string]any{"pattern": "x"}).expect(t, 400, "M_MISSING_PARAM")
		put("x", "", map[string]any{"pattern": "x", "actions": "notify"}).expect(t, 400, "M_BAD_JSON")
		put("x", "", map[string]any{"pattern": "x", "actions": []any{"explode"}}).expect(t, 400, "M_BAD_JSON")
		put("x", "", map[string]any{"pattern": 5, "actions": []any{}}).expect(t, 400, "M_BAD_JSON")

		// Override rule with conditions, via mautrix.
		err = alice.cli.PutPushRule(ctx, "global", pushrules.OverrideRule, "beer", &mautrix.ReqPutPushRule{
			Actions:    []*pushrules.PushAction{{Action: pushrules.ActionNotify}},
			Conditions: []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: "content.body", Pattern: "beer"}, {Kind: pushrules.KindRoomMemberCount, MemberCountCondition: "<=10"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		beer := a.do("GET", v3+"/pushrules/global/override/beer", nil).expect(t, 200, "")
		if c, _ := beer.body["conditions"].([]any); len(c) != 2 {
			t.Fatalf("beer: %s", beer)
		}
		if got := ruleIDs(t, a.do("GET", v3+"/pushrules/", nil), "override"); !strings.HasPrefix(got, ".m.rule.master,beer,.m.rule.suppress_notices") {
			t.Fatalf("user override rules go after master and before the other defaults: %s", got)
		}
		a.do("PUT", v3+"/pushrules/global/override/bad", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}}).expect(t, 400, "M_BAD_JSON")
		a.do("PUT", v3+"/pushrules/global/override/bad", map[string]any{"actions": []any{}, "conditions": "x"}).expect(t, 400, "M_BAD_JSON")
		// Unknown condition kinds are stored and never match.
		a.do("PUT", v3+"/pushrules/global/override/future", map[string]any{"actions": []any{"notify"}, "conditions": []any{map[string]any{"kind": "org.example.future", "x": 1}}}).expect(t, 200, "")
		fut := a.do("GET", v3+"/pushrules/global/override/future", nil).expect(t, 200, "")
		if c, _ := fut.body["conditions"].([]any); len(c) != 1 || c[0].(map[string]any)["x"] != float64(1) {
			t.Fatalf("unknown condition not kept: %s", fut)
		}
		// Room and sender rules.
		a.do("PUT", v3+"/pushrules/global/room/"+esc("!quiet:hs.test"), map[string]any{"actions": []any{}}).expect(t, 200, "")
		a.do("PUT", v3+"/pushrules/global/sender/"+esc("@spambot:hs.test"), map[string]any{"actions": []any{}}).expect(t, 200, "")
		room := a.do("GET", v3+"/pushrules/global/room/"+esc("!quiet:hs.test"), nil).expect(t, 200, "")
		if room.str("rule_id") != "!quiet:hs.test" || room.body["conditions"] != nil || room.body["pattern"] != nil {
			t.Fatalf("room rule: %s", room)
		}

		// enabled and actions, for user and default rules.
		if err := alice.cli.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, hpush.RuleMaster, true); err != nil {
			t.Fatal(err)
		}
		en := a.do("GET", v3+"/pushrules/global/override/.m.rule.master/enabled", nil).expect(t, 200, "")
		if en.body["enabled"] != true {
			t.Fatalf("master enabled: %s", en)
		}
		a.do("PUT", v3+"/pushrules/global/content/cake/enabled", map[string]any{"enabled": false}).expect(t, 200, "")
		if c := a.do("GET", v3+"/pushrules/global/content/cake", nil); c.body["enabled"] != false {
			t.Fatalf("cake disabled: %s", c)
		}
		a.do("PUT", v3+"/pushrules/global/content/cake/enabled", map[string]any{}).expect(t, 400, "M_MISSING_PARAM")
		a.do("PUT", v3+"/pushrules/global/content/cake/enabled", map[string]any{"enabled": "no"}).expect(t, 400, "M_BAD_JSON")
		a.do("PUT", v3+"/pushrules/global/underride/.m.rule.message/actions", map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "ding"}}}).expect(t, 200, "")
		acts := a.do("GET", v3+"/pushrules/global/underride/.m.rule.message/actions", nil).expect(t, 200, "")
		if l, _ := acts.body["actions"].([]any); len(l) != 2 {
			t.Fatalf("actions: %s", acts)
		}
		if m := a.do("GET", v3+"/pushrules/global/underride/.m.rule.message", nil); m.body["default"] != true {
			t.Fatalf("changed default stays default: %s", m)
		}
		a.do("PUT", v3+"/pushrules/global/underride/.m.rule.nope/actions", map[string]any{"actions": []any{}}).expect(t, 404, "M_NOT_FOUND")
		a.do("PUT", v3+"/pushrules/global/content/nope/enabled", map[string]any{"enabled": true}).expect(t, 404, "M_NOT_FOUND")

		// The evaluator follows the changes.
		ev, err := s.ClientAPI.PushEvaluator(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := hpush.NewEvent([]byte(`{"type":"m.room.message","room_id":"!r:hs.test","sender":"@bob:hs.test","content":{"body":"hi"}}`))
		if r := ev.Evaluate(msg, &hpush.RoomContext{MemberCount: 3}, ""); r == nil || r.RuleID != hpush.RuleMaster {
			t.Fatalf("with master enabled: %+v", r)
		}
		a.do("PUT", v3+"/pushrules/global/override/.m.rule.master/enabled", map[string]any{"enabled": false}).expect(t, 200, "")
		ev, _ = s.ClientAPI.PushEvaluator(ctx, "alice")
		if r := ev.Evaluate(msg, &hpush.RoomContext{MemberCount: 3}, ""); r == nil || r.RuleID != hpush.RuleMessage || r.Sound != "ding" {
			t.Fatalf("changed default actions: %+v", r)
		}

		// Delete.
		if err := alice.cli.DeletePushRule(ctx, "global", pushrules.ContentRule, "tea"); err != nil {
			t.Fatal(err)
		}
		a.do("GET", v3+"/pushrules/global/content/tea", nil).expect(t, 404, "M_NOT_FOUND")
		a.do("DELETE", v3+"/pushrules/global/content/tea", nil).expect(t, 404, "M_NOT_FOUND")
		a.do("DELETE", v3+"/pushrules/global/underride/.m.rule.message", nil).expect(t, 400, "M_INVALID_PARAM")
		a.do("GET", v3+"/pushrules/global/sideways/x", nil).expect(t, 400, "M_INVALID_PARAM")
		a.do("GET", v3+"/pushrules/global/content/nope", nil).expect(t, 404, "M_NOT_FOUND")
		newAPI(t, s, "").do("GET", v3+"/pushrules/", nil).expect(t, 401, "M_MISSING_TOKEN")
	})
}

// roomRuleActions returns the actions of a user's room rule for roomID as
// JSON, or "" when there is none.
func roomRuleActions(t *testing.T, u *user, roomID id.RoomID) string {
	t.Helper()
	r := u.api.do("GET", v3+"/pushrules/global/room/"+esc(string(roomID)), nil)
	if r.status == 404 {
		return ""
	}
	r.expect(t, 200, "")
	b, _ := json.Marshal(r.body["actions"])
	return string(b)
}

// TestPushRulesRoomUpgrade: joining the room that replaced another (through
// /upgrade or a createRoom naming a predecessor) gives the user a copy of their
// room rule for the old room, with the historical dont_notify kept as given
// (Complement's TestPushRuleRoomUpgrade, TestPushRuleCacheHealth).
func TestPushRulesRoomUpgrade(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		alice2 := registerUser(t, s, "alice2")
		bob := registerUser(t, s, "bob")
		oldRoom := rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "10"})
		rtJoin(t, alice2, string(oldRoom)).expect(t, 200, "")
		rtJoin(t, bob, string(oldRoom)).expect(t, 200, "")
		for _, u := range []*user{alice, alice2} {
			u.api.do("PUT", v3+"/pushrules/global/room/"+esc(string(oldRoom)), map[string]any{"actions": []string{"dont_notify"}}).expect(t, 200, "")
			if got := roomRuleActions(t, u, oldRoom); got != `["dont_notify"]` {
				t.Fatalf("%s's rule before the upgrade: %s", u.id, got)
			}
		}
		settle := func() {
			t.Helper()
			if !s.Sync.Settle(10 * time.Second) {
				t.Fatal("notification worker did not settle")
			}
		}

		cases := []struct {
			name    string
			upgrade func() id.RoomID
		}{
			{"upgrade", func() id.RoomID {
				r := alice.api.do("POST", v3+"/rooms/"+esc(string(oldRoom))+"/upgrade", map[string]any{"new_version": "11"}).expect(t, 200, "")
				return id.RoomID(r.str("replacement_room"))
			}},
			{"manual upgrade", func() id.RoomID {
				return rtCreateRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "11",
					"creation_content": map[string]any{"predecessor": map[string]any{"room_id": string(oldRoom)}}})
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				since := syncSince(t, alice2, "", 0).NextBatch
				newRoom := tc.upgrade()
				if newRoom == "" {
					t.Fatal("no new room")
				}
				rtJoin(t, alice2, string(newRoom)).expect(t, 200, "")
				rtJoin(t, bob, string(newRoom)).expect(t, 200, "")
				settle()
				for _, u := range []*user{alice, alice2} {
					if got := roomRuleActions(t, u, newRoom); got != `["dont_notify"]` {
						t.Errorf("%s's rule for the new room: %q", u.id, got)
					}
					if got := roomRuleActions(t, u, oldRoom); got != `["dont_notify"]` {
						t.Errorf("%s's rule for the old room: %q", u.id, got)
					}
				}
				if got := roomRuleActions(t, bob, newRoom); got != "" {
					t.Errorf("bob had no rule to carry over, got %s", got)
				}
				// The change reaches /sync as m.push_rules account data.
				r := syncSince(t, alice2, since, 5*time.Second)
				if c, ok := syncAccountData(t, r, "", "m.push_rules"); !ok || !strings.Contains(c, string(newRoom)) {
					t.Errorf("m.push_rules in sync: %v %.200s", ok, c)
				}
			})
		}
	})
}
