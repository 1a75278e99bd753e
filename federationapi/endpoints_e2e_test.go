package federationapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

func TestJoinLeaveEndpoints(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice := register(t, a, "alice")
		r := createRoom(t, a, "10", alice, "public")
		for _, n := range []string{"amy", "ann", "abe", "ada", "al", "avi"} {
			r.state(register(t, a, n), "m.room.member", string(user(a, n)), map[string]any{"membership": "join"})
		}
		asB := fakeServerClient(t, bName, b.Key, nil)
		bob := user(b, "bob")

		for _, tc := range []struct {
			name     string
			req      federation.ReqMakeJoin
			status   int
			errcode  string
			moreJSON string
		}{
			{"incompatible version", federation.ReqMakeJoin{RoomID: r.id, UserID: bob, Via: aName, SupportedVersions: []id.RoomVersion{"1", "2"}}, 400, "M_INCOMPATIBLE_ROOM_VERSION", "10"},
			{"user of another server", federation.ReqMakeJoin{RoomID: r.id, UserID: alice, Via: aName, SupportedVersions: []id.RoomVersion{"10"}}, 403, "M_FORBIDDEN", ""},
			{"unknown room", federation.ReqMakeJoin{RoomID: "!nope:" + id.RoomID(aName), UserID: bob, Via: aName, SupportedVersions: []id.RoomVersion{"10"}}, 404, "M_NOT_FOUND", ""},
		} {
			_, err := asB.MakeJoin(ctx, &tc.req)
			status, code := respErr(err)
			if status != tc.status || code != tc.errcode {
				t.Errorf("make_join %s: %d %s (%v)", tc.name, status, code, err)
			}
			if tc.moreJSON != "" {
				var he mautrix.HTTPError
				if !errors.As(err, &he) || he.RespError == nil || he.RespError.ExtraData["room_version"] != tc.moreJSON {
					t.Errorf("make_join %s: no room_version in %v", tc.name, err)
				}
			}
		}

		// make_join gives a template; the signed join goes in with send_join and
		// omit_members: no member events but the heroes', and the servers.
		mj, err := asB.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: r.id, UserID: bob, Via: aName, SupportedVersions: []id.RoomVersion{"9", "10"}})
		if err != nil || mj.RoomVersion != "10" {
			t.Fatalf("make_join: %+v %v", mj, err)
		}
		tmpl := gjson.ParseBytes(mj.Event)
		if tmpl.Get("sender").Str != string(bob) || tmpl.Get("content.membership").Str != "join" || !tmpl.Get("prev_events").IsArray() || tmpl.Get("signatures").Exists() {
			t.Fatalf("template: %s", mj.Event)
		}
		join := buildFrom(t, b, mj.Event, "10")
		// A wrong event ID in the path is refused.
		if _, err := asB.SendJoin(ctx, &federation.ReqSendJoin{RoomID: r.id, EventID: "$wrong", Event: join.JSON(), Via: aName}); !isStatus(err, 400) {
			t.Fatalf("send_join with a wrong event ID: %v", err)
		}
		sj, err := asB.SendJoin(ctx, &federation.ReqSendJoin{RoomID: r.id, EventID: join.ID(), Event: join.JSON(), Via: aName, OmitMembers: true})
		if err != nil {
			t.Fatalf("send_join: %v", err)
		}
		if !sj.MembersOmitted || !slices.Equal(sj.ServersInRoom, []string{aName}) {
			t.Fatalf("send_join: members_omitted %v servers %v", sj.MembersOmitted, sj.ServersInRoom)
		}
		members, heroes := 0, 0
		for _, raw := range sj.State {
			if gjson.GetBytes(raw, "type").Str == "m.room.member" {
				members++
				if gjson.GetBytes(raw, "state_key").Str != string(bob) {
					heroes++
				}
			}
		}
		// The room has no name: the heroes (5 of the 7 members) are included, and
		// the auth chain leaves out what the state has.
		if members != 5 || heroes != 5 {
			t.Fatalf("omitted state has %d members (%d heroes)", members, heroes)
		}
		inState := map[string]bool{}
		for _, raw := range sj.State {
			inState[gjson.GetBytes(raw, "sender").Str+gjson.GetBytes(raw, "type").Str+gjson.GetBytes(raw, "state_key").Str] = true
		}
		for _, raw := range sj.AuthChain {
			if inState[gjson.GetBytes(raw, "sender").Str+gjson.GetBytes(raw, "type").Str+gjson.GetBytes(raw, "state_key").Str] {
				t.Fatalf("auth chain repeats a state event: %s", raw)
			}
		}
		if membership(t, a, r.id, bob) != "join" {
			t.Fatal("bob not joined on A")
		}
		// A second send_join of the same event is answered again, in full this time:
		// every member, and the auth chain.
		full, err := asB.SendJoin(ctx, &federation.ReqSendJoin{RoomID: r.id, EventID: join.ID(), Event: join.JSON(), Via: aName})
		if err != nil {
			t.Fatalf("repeated send_join: %v", err)
		}
		members = 0
		for _, raw := range full.State {
			if gjson.GetBytes(raw, "type").Str == "m.room.member" {
				members++
			}
		}
		if full.MembersOmitted || members != 7 || len(full.AuthChain) == 0 {
			t.Fatalf("full send_join: omitted %v, %d members, auth chain %d", full.MembersOmitted, members, len(full.AuthChain))
		}

		// The deprecated v1 send_join answers [200, response], and refuses a
		// non-join like v2 does.
		var v1 []json.RawMessage
		if _, _, err := asB.MakeFullRequest(ctx, federation.RequestParams{ServerName: aName, Method: http.MethodPut,
			Path: federation.URLPath{"v1", "send_join", string(r.id), string(join.ID())}, Authenticate: true,
			RequestJSON: json.RawMessage(join.JSON()), ResponseJSON: &v1}); err != nil {
			t.Fatalf("v1 send_join: %v", err)
		}
		if len(v1) != 2 || string(v1[0]) != "200" || len(gjson.GetBytes(v1[1], "state").Array()) == 0 || !gjson.GetBytes(v1[1], "auth_chain").IsArray() {
			t.Fatalf("v1 send_join response: %s", v1)
		}
		// make_leave/send_leave.
		ml, err := asB.MakeLeave(ctx, &federation.ReqMakeLeave{RoomID: r.id, UserID: bob, Via: aName})
		if err != nil || gjson.GetBytes(ml.Event, "content.membership").Str != "leave" {
			t.Fatalf("make_leave: %v %+v", err, ml)
		}
		leave := buildFrom(t, b, ml.Event, "10")
		// Through the deprecated v1 send_leave, which answers [200, {}].
		sendLeaveV1 := func(ev *events.Event) (json.RawMessage, error) {
			var res json.RawMessage
			_, _, err := asB.MakeFullRequest(ctx, federation.RequestParams{ServerName: aName, Method: http.MethodPut,
				Path: federation.URLPath{"v1", "send_leave", string(r.id), string(ev.ID())}, Authenticate: true,
				RequestJSON: json.RawMessage(ev.JSON()), ResponseJSON: &res})
			return res, err
		}
		if res, err := sendLeaveV1(leave); err != nil || string(res) != `[200,{}]` {
			t.Fatalf("v1 send_leave: %s %v", res, err)
		}
		if m := membership(t, a, r.id, bob); m != "leave" {
			t.Fatalf("bob after send_leave: %s", m)
		}
		// A join sent to send_leave is refused.
		mj2, err := asB.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: r.id, UserID: bob, Via: aName, SupportedVersions: []id.RoomVersion{"10"}})
		if err != nil {
			t.Fatal(err)
		}
		join2 := buildFrom(t, b, mj2.Event, "10")
		if err := asB.SendLeave(ctx, &federation.ReqSendLeave{RoomID: r.id, EventID: join2.ID(), Event: join2.JSON(), Via: aName}); !isStatus(err, 400) {
			t.Fatalf("join through send_leave: %v", err)
		}
		if _, err := sendLeaveV1(join2); !isStatus(err, 400) {
			t.Fatalf("join through v1 send_leave: %v", err)
		}

		// A banned user cannot get a join template.
		r.state(alice, "m.room.member", string(bob), map[string]any{"membership": "ban"})
		if _, err := asB.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: r.id, UserID: bob, Via: aName, SupportedVersions: []id.RoomVersion{"10"}}); !isStatus(err, 403) {
			t.Fatalf("make_join for a banned user: %v", err)
		}
	})
}

func TestRoomReadEndpoints(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice, bob := register(t, a, "alice"), register(t, b, "bob")
		if _, err := accounts.NewStore(a.DB, aName).SetProfileField(ctx, "alice", "displayname", json.RawMessage(`"Alice A."`)); err != nil {
			t.Fatal(err)
		}
		r := createRoom(t, a, "10", alice, "public")
		var msgs []*roomserver.OutputEvent
		for i := 0; i < 12; i++ {
			msgs = append(msgs, r.message(alice, "m"))
		}
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{aName}); err != nil {
			t.Fatal(err)
		}
		asB := fakeServerClient(t, bName, b.Key, nil)
		target := msgs[5].Event.ID()

		// /state_ids and /state give the state before the event with its auth chain.
		want, err := a.Roomserver.StateAtEvent(ctx, target, false)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := asB.GetStateIDs(ctx, aName, r.id, target)
		if err != nil || len(ids.PDUs) != len(want) || len(ids.AuthChain) == 0 {
			t.Fatalf("state_ids: %+v %v (want %d)", ids, err, len(want))
		}
		st, err := asB.GetState(ctx, aName, r.id, target)
		if err != nil || len(st.PDUs) != len(want) || len(st.AuthChain) != len(ids.AuthChain) {
			t.Fatalf("state: %d pdus, %d auth, %v", len(st.PDUs), len(st.AuthChain), err)
		}
		// /event and /event_auth.
		ev, err := asB.GetEvent(ctx, aName, target)
		if err != nil || len(ev.PDUs) != 1 || ev.Origin != aName {
			t.Fatalf("event: %+v %v", ev, err)
		}
		if _, err := asB.GetEvent(ctx, aName, "$nope"); !isStatus(err, 404) {
			t.Fatalf("unknown event: %v", err)
		}
		chain, err := asB.GetEventAuthChain(ctx, aName, r.id, target)
		if err != nil || len(chain.AuthChain) < 3 {
			t.Fatalf("event_auth: %+v %v", chain, err)
		}
		// /backfill from an event: it and the ones before, newest first, at most limit.
		bf, err := asB.Backfill(ctx, &federation.ReqBackfill{ServerName: aName, RoomID: r.id, Limit: 4, BackfillFrom: []id.EventID{msgs[11].Event.ID()}})
		if err != nil || len(bf.PDUs) != 4 {
			t.Fatalf("backfill: %+v %v", bf, err)
		}
		got := pduIDs(t, bf.PDUs)
		if !slices.Equal(got, []id.EventID{msgs[11].Event.ID(), msgs[10].Event.ID(), msgs[9].Event.ID(), msgs[8].Event.ID()}) {
			t.Fatalf("backfill order: %v", got)
		}
		// /get_missing_events: between earliest (exclusive) and latest (exclusive).
		gme, err := asB.GetMissingEvents(ctx, &federation.ReqGetMissingEvents{ServerName: aName, RoomID: r.id,
			EarliestEvents: []id.EventID{msgs[2].Event.ID()}, LatestEvents: []id.EventID{msgs[7].Event.ID()}, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		got = pduIDs(t, gme.Events)
		if !slices.Equal(got, []id.EventID{msgs[3].Event.ID(), msgs[4].Event.ID(), msgs[5].Event.ID(), msgs[6].Event.ID()}) {
			t.Fatalf("get_missing_events: %v", got)
		}
		// Queries: profile and directory.
		prof, err := asB.QueryProfile(ctx, aName, alice)
		if err != nil || prof.DisplayName != "Alice A." {
			t.Fatalf("query/profile: %+v %v", prof, err)
		}
		var field map[string]any
		if err := asB.Query(ctx, aName, "profile", url.Values{"user_id": {string(alice)}, "field": {"avatar_url"}}, &field); !isStatus(err, 404) {
			t.Fatalf("missing profile field: %v %v", field, err)
		}
		if _, err := asB.QueryProfile(ctx, aName, user(a, "nobody")); !isStatus(err, 404) {
			t.Fatalf("profile of nobody: %v", err)
		}
		alias := id.RoomAlias("#room:" + aName)
		a.Federation.SetDirectory(aliases{alias: r.id})
		dir, err := asB.QueryDirectory(ctx, aName, alias)
		if err != nil || dir.RoomID != r.id || !slices.Equal(dir.Servers, []string{aName, bName}) {
			t.Fatalf("query/directory: %+v %v", dir, err)
		}
		if _, err := asB.QueryDirectory(ctx, aName, id.RoomAlias("#nope:"+aName)); !isStatus(err, 404) {
			t.Fatalf("unknown alias: %v", err)
		}
		// The room's server ACL shuts B out of these endpoints and of /send.
		r.state(alice, "m.room.server_acl", "", map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}, "allow_ip_literals": true})
		if _, err := asB.GetStateIDs(ctx, aName, r.id, target); !isStatus(err, 403) {
			t.Fatalf("state_ids despite the ACL: %v", err)
		}
		rb := &room{t: t, s: b, id: r.id}
		blocked := rb.message(bob, "blocked by the ACL")
		eventually(t, waitTime, "B to try", func() bool {
			var n int
			err := b.DB.QueryRow(ctx, `SELECT COUNT(*) FROM federation_queue_pdus`).Scan(&n)
			return err == nil && n == 0
		})
		if _, err := a.Roomserver.Event(ctx, blocked.Event.ID()); err == nil {
			t.Fatal("A stored an event from a server its ACL denies")
		}
	})
}

func TestKnockAndRejectInvite(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice, bob, dave := register(t, a, "alice"), register(t, b, "bob"), register(t, b, "dave")
		asB := fakeServerClient(t, bName, b.Key, nil)

		// Knocking on a room with the knock join rule.
		r := createRoom(t, a, "10", alice, "knock")
		old := createRoom(t, a, "6", alice, "public")
		if _, err := asB.MakeKnock(ctx, &federation.ReqMakeKnock{RoomID: old.id, UserID: bob, Via: aName, SupportedVersions: []id.RoomVersion{"6"}}); !isStatus(err, 400) {
			t.Fatalf("make_knock on a room v6: %v", err)
		}
		mk, err := asB.MakeKnock(ctx, &federation.ReqMakeKnock{RoomID: r.id, UserID: bob, Via: aName, SupportedVersions: []id.RoomVersion{"10"}})
		if err != nil || gjson.GetBytes(mk.Event, "content.membership").Str != "knock" {
			t.Fatalf("make_knock: %+v %v", mk, err)
		}
		knock := buildFrom(t, b, mk.Event, "10")
		knockResp, err := asB.SendKnock(ctx, &federation.ReqSendKnock{RoomID: r.id, EventID: knock.ID(), Event: knock.JSON(), Via: aName})
		if err != nil {
			t.Fatalf("send_knock: %v", err)
		}
		hasCreate := false
		for _, raw := range knockResp.KnockRoomState {
			hasCreate = hasCreate || gjson.GetBytes(raw, "type").Str == "m.room.create"
		}
		if !hasCreate || membership(t, a, r.id, bob) != "knock" {
			t.Fatalf("knock: state %d events (create %v), membership %s", len(knockResp.KnockRoomState), hasCreate, membership(t, a, r.id, bob))
		}

		// Rejecting a remote invite: make_leave/send_leave through the inviter's server.
		p := createRoom(t, a, "10", alice, "invite")
		inv, err := a.Roomserver.BuildEvent(ctx, p.id, roomserver.SendRequest{Type: "m.room.member", StateKey: sk(string(dave)), Sender: alice, Content: []byte(`{"membership":"invite"}`)})
		if err != nil {
			t.Fatal(err)
		}
		signed, err := a.Federation.InviteRemoteUser(ctx, inv)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Roomserver.InputRemoteEvent(ctx, signed); err != nil {
			t.Fatal(err)
		}
		if found, err := b.Federation.RejectRemoteInvite(ctx, p.id, dave, nil); err != nil || !found {
			t.Fatalf("rejecting the invite: found %v, %v", found, err)
		}
		if m := membership(t, a, p.id, dave); m != "leave" {
			t.Fatalf("dave on A after rejecting: %s", m)
		}
		if invs, err := b.Federation.PendingInvites(ctx, dave); err != nil || len(invs) != 0 {
			t.Fatalf("pending invites after rejecting: %+v %v", invs, err)
		}
	})
}
