package appservice_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"hearth/internal/testserver"
	"hearth/storage/storagetest"
)

// forEachDB runs fn against a fresh server on each database, with the test
// application service registered at a fresh fake service.
func forEachDB(t *testing.T, fn func(t *testing.T, s *testserver.Server, f *fakeAS)) {
	for name, dsn := range storagetest.DSNs(t) {
		t.Run(name, func(t *testing.T) {
			f := newFakeAS(t)
			s := testserver.Start(t, dsn, withAppService(t, f.srv.URL))
			fn(t, s, f)
		})
	}
}

// asRegister registers a user of the service's namespace (m.login.application_service).
func asRegister(t *testing.T, s *testserver.Server, localpart string) string {
	t.Helper()
	r := asClient(t, s).must(http.StatusOK, "", "POST", v3+"/register", map[string]any{
		"type": "m.login.application_service", "username": localpart, "inhibit_login": true,
	})
	if r.str("access_token") != "" {
		t.Fatalf("inhibit_login registration returned an access token: %s", r.raw)
	}
	return r.str("user_id")
}

func createRoom(c client, body map[string]any) string {
	c.t.Helper()
	return c.must(http.StatusOK, "", "POST", v3+"/createRoom", body).str("room_id")
}

func sendText(c client, roomID, path, body string) string {
	c.t.Helper()
	txn := strconv.FormatInt(time.Now().UnixNano(), 36)
	return c.must(http.StatusOK, "", "PUT", q(v3+"/rooms/"+esc(roomID)+"/send/m.room.message/"+txn, splitQuery(path)...),
		map[string]any{"msgtype": "m.text", "body": body}).str("event_id")
}

// splitQuery turns "k=v&k2=v2" into q's arguments.
func splitQuery(s string) []string {
	var out []string
	for s != "" {
		var kv string
		kv, s, _ = strings.Cut(s, "&")
		k, v, _ := strings.Cut(kv, "=")
		out = append(out, k, v)
	}
	return out
}

func TestTransactionsCarryEventsOfInterestInOrder(t *testing.T) {
	forEachDB(t, func(t *testing.T, s *testserver.Server, f *fakeAS) {
		alice := registerUser(t, s, "alice")
		as := asClient(t, s)
		bob := asRegister(t, s, "_bridge_bob")
		room := createRoom(alice, map[string]any{"preset": "public_chat"})
		// A room with nobody of the service's namespaces: none of its events go out.
		quiet := createRoom(alice, map[string]any{"preset": "public_chat"})
		quietMsg := sendText(alice, quiet, "", "not for the bridge")

		join := as.must(http.StatusOK, "", "POST", q(v3+"/join/"+esc(room), "user_id", bob), map[string]any{}).str("room_id")
		if join != room {
			t.Fatalf("joined %s, want %s", join, room)
		}
		var sent []string
		for i := 0; i < 5; i++ {
			sent = append(sent, sendText(alice, room, "", "from alice "+strconv.Itoa(i)))
			sent = append(sent, sendText(as, room, "user_id="+bob, "from bob "+strconv.Itoa(i)))
		}
		evs := f.waitFor("all messages", func(evs []map[string]any) bool { return hasEvent(evs, sent[len(sent)-1]) })

		// Bob's join comes first, then the messages in the order they were sent.
		var joinIdx = -1
		for i, e := range evs {
			if e["type"] == "m.room.member" && e["state_key"] == bob {
				joinIdx = i
			}
		}
		if joinIdx < 0 {
			t.Fatalf("bob's join was not delivered: %s", mustJSON(evs))
		}
		prev := joinIdx
		for _, eid := range sent {
			i := indexOf(evs, eid)
			if i <= prev {
				t.Fatalf("event %s at %d, after %d: not in order: %s", eid, i, prev, mustJSON(evs))
			}
			prev = i
		}
		for _, e := range evs {
			if e["room_id"] == quiet || e["event_id"] == quietMsg {
				t.Fatalf("event of a room without interest delivered: %s", mustJSON(e))
			}
			if e["room_id"] == nil || e["sender"] == nil || e["origin_server_ts"] == nil {
				t.Fatalf("event not in client format: %s", mustJSON(e))
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.badAuth != 0 {
			t.Fatalf("%d requests without the hs_token", f.badAuth)
		}
		last := 0
		for _, txn := range f.txns {
			n, err := strconv.Atoi(txn.ID)
			if err != nil || n <= last {
				t.Fatalf("transaction IDs not increasing: %v", f.txns)
			}
			last = n
		}
	})
}

func TestIdentityAssertion(t *testing.T) {
	forEachDB(t, func(t *testing.T, s *testserver.Server, f *fakeAS) {
		registerUser(t, s, "alice")
		flows := client{t: t, base: s.URL}.must(http.StatusOK, "", "GET", v3+"/login", nil)
		if !strings.Contains(string(flows.raw), `"m.login.application_service"`) {
			t.Fatalf("login flows without the application service type: %s", flows.raw)
		}
		bob := asRegister(t, s, "_bridge_bob")
		shared := asRegister(t, s, "shared_carol") // non-exclusive namespace
		// A device of bob's, made by logging in as the service.
		login := asClient(t, s).must(http.StatusOK, "", "POST", v3+"/login", map[string]any{
			"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "_bridge_bob"},
		})
		dev := login.str("device_id")
		if dev == "" || login.str("user_id") != bob {
			t.Fatalf("login as service user: %s", login.raw)
		}
		tests := []struct {
			name       string
			token      string
			query      []string
			status     int
			errcode    string
			wantUser   string
			wantDevice string
		}{
			{"as_token alone is the sender", asToken, nil, 200, "", "@_bridge_bot:hs.test", ""},
			{"user in the exclusive namespace", asToken, []string{"user_id", bob}, 200, "", bob, ""},
			{"user in the shared namespace", asToken, []string{"user_id", shared}, 200, "", shared, ""},
			{"the sender by user_id", asToken, []string{"user_id", "@_bridge_bot:hs.test"}, 200, "", "@_bridge_bot:hs.test", ""},
			{"with a device of the user", asToken, []string{"user_id", bob, "device_id", dev}, 200, "", bob, dev},
			{"MSC3202 device parameter", asToken, []string{"user_id", bob, "org.matrix.msc3202.device_id", dev}, 200, "", bob, dev},
			{"unknown device", asToken, []string{"user_id", bob, "device_id", "NOPE"}, 400, "M_UNKNOWN_DEVICE", "", ""},
			{"user outside the namespaces", asToken, []string{"user_id", "@alice:hs.test"}, 403, "M_FORBIDDEN", "", ""},
			{"namespace user of another server", asToken, []string{"user_id", "@_bridge_x:other.test"}, 403, "M_FORBIDDEN", "", ""},
			{"unregistered namespace user", asToken, []string{"user_id", "@_bridge_ghost:hs.test"}, 403, "M_FORBIDDEN", "", ""},
			{"wrong token", "as-token-wrong", nil, 401, "M_UNKNOWN_TOKEN", "", ""},
			{"hs_token is not a client token", hsToken, nil, 401, "M_UNKNOWN_TOKEN", "", ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c := client{t: t, base: s.URL, token: tc.token}
				r := c.must(tc.status, tc.errcode, "GET", q(v3+"/account/whoami", tc.query...), nil)
				if tc.status != 200 {
					return
				}
				if _, has := r.body["device_id"]; r.str("user_id") != tc.wantUser || r.str("device_id") != tc.wantDevice || has != (tc.wantDevice != "") {
					t.Fatalf("whoami = %s; want %s %q", r.raw, tc.wantUser, tc.wantDevice)
				}
			})
		}
		// Without a device, operations that need one fail instead of using "".
		asClient(t, s).must(http.StatusBadRequest, "M_UNKNOWN", "POST", q(v3+"/keys/upload", "user_id", bob),
			map[string]any{"one_time_keys": map[string]any{}})
		asClient(t, s).must(http.StatusOK, "", "POST", q(v3+"/keys/upload", "user_id", bob, "device_id", dev),
			map[string]any{"one_time_keys": map[string]any{}})
	})
}

func TestNamespacesAreExclusive(t *testing.T) {
	forEachDB(t, func(t *testing.T, s *testserver.Server, f *fakeAS) {
		alice := registerUser(t, s, "alice")
		anon := client{t: t, base: s.URL}
		as := asClient(t, s)
		room := createRoom(alice, map[string]any{"preset": "public_chat"})
		tests := []struct {
			name         string
			c            client
			method, path string
			body         map[string]any
			status       int
			errcode      string
		}{
			{"user registers in an exclusive namespace", anon, "POST", v3 + "/register",
				map[string]any{"username": "_bridge_eve", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}}, 400, "M_EXCLUSIVE"},
			{"availability of an exclusive name", anon, "GET", v3 + "/register/available?username=_bridge_eve", nil, 400, "M_EXCLUSIVE"},
			{"user registers in a shared namespace", anon, "POST", v3 + "/register",
				map[string]any{"username": "shared_dave", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}}, 200, ""},
			{"service registers outside its namespace", as, "POST", v3 + "/register",
				map[string]any{"type": "m.login.application_service", "username": "mallory", "inhibit_login": true}, 400, "M_EXCLUSIVE"},
			{"service registration without a token", anon, "POST", v3 + "/register",
				map[string]any{"type": "m.login.application_service", "username": "_bridge_x"}, 401, "M_MISSING_TOKEN"},
			{"service registration with a user token", alice, "POST", v3 + "/register",
				map[string]any{"type": "m.login.application_service", "username": "_bridge_x"}, 401, "M_UNKNOWN_TOKEN"},
			{"service registration logs in without inhibit_login", as, "POST", v3 + "/register",
				map[string]any{"type": "m.login.application_service", "username": "_bridge_logged_in"}, 200, ""},
			{"service login outside its namespace", as, "POST", v3 + "/login",
				map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}}, 400, "M_EXCLUSIVE"},
			{"user creates an alias in an exclusive namespace", alice, "PUT", v3 + "/directory/room/" + esc("#_bridge_x:hs.test"),
				map[string]any{"room_id": room}, 400, "M_EXCLUSIVE"},
			{"service creates an alias outside its namespace", as, "PUT", v3 + "/directory/room/" + esc("#mine:hs.test"),
				map[string]any{"room_id": room}, 400, "M_EXCLUSIVE"},
			{"service creates an alias in its namespace without being in the room", as, "PUT", v3 + "/directory/room/" + esc("#_bridge_room:hs.test"),
				map[string]any{"room_id": room}, 200, ""},
			{"user deletes the service's alias", alice, "DELETE", v3 + "/directory/room/" + esc("#_bridge_room:hs.test"), nil, 400, "M_EXCLUSIVE"},
			{"user creates a room with an exclusive alias", alice, "POST", v3 + "/createRoom",
				map[string]any{"room_alias_name": "_bridge_mine"}, 400, "M_EXCLUSIVE"},
			{"service creates a room with an alias outside its namespace", as, "POST", v3 + "/createRoom",
				map[string]any{"room_alias_name": "theirs"}, 400, "M_EXCLUSIVE"},
			{"service deletes its alias", as, "DELETE", v3 + "/directory/room/" + esc("#_bridge_room:hs.test"), nil, 200, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				var body any
				if tc.body != nil {
					body = tc.body
				}
				c := tc.c
				c.t = t
				r := c.must(tc.status, tc.errcode, tc.method, tc.path, body)
				if tc.name == "service registration logs in without inhibit_login" && (r.str("access_token") == "" || r.str("device_id") == "") {
					t.Fatalf("no login: %s", r.raw)
				}
			})
		}
	})
}

func TestTimestampMassaging(t *testing.T) {
	forEachDB(t, func(t *testing.T, s *testserver.Server, f *fakeAS) {
		alice := registerUser(t, s, "alice")
		as := asClient(t, s)
		// The service's room: its sender may set state there.
		room := createRoom(as, map[string]any{"preset": "public_chat"})
		alice.must(http.StatusOK, "", "POST", v3+"/join/"+esc(room), map[string]any{})
		const ts = 1641168000000 // 2022-01-03
		eventTS := func(t *testing.T, eventID string) int64 {
			t.Helper()
			r := client{t: t, base: s.URL, token: alice.token}.must(http.StatusOK, "", "GET", v3+"/rooms/"+esc(room)+"/event/"+esc(eventID), nil)
			v, _ := r.body["origin_server_ts"].(float64)
			return int64(v)
		}
		now := time.Now().UnixMilli()
		tests := []struct {
			name   string
			c      client
			send   func(c client) string
			wantTS bool // the event carries ts
		}{
			{"service message with ts", as, func(c client) string { return sendText(c, room, "ts="+strconv.Itoa(ts), "old") }, true},
			{"service state event with ts", as, func(c client) string {
				return c.must(http.StatusOK, "", "PUT", q(v3+"/rooms/"+esc(room)+"/state/m.room.topic/", "ts", strconv.Itoa(ts)),
					map[string]any{"topic": "old topic"}).str("event_id")
			}, true},
			{"ordinary user's ts is ignored", alice, func(c client) string { return sendText(c, room, "ts="+strconv.Itoa(ts), "now") }, false},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c := tc.c
				c.t = t
				got := eventTS(t, tc.send(c))
				if tc.wantTS && got != ts {
					t.Fatalf("origin_server_ts = %d, want %d", got, ts)
				}
				if !tc.wantTS && got < now {
					t.Fatalf("origin_server_ts = %d, want now (≥ %d)", got, now)
				}
			})
		}
		for _, bad := range []string{"yesterday", "-5", "0", "9007199254740992"} {
			as.must(http.StatusBadRequest, "M_INVALID_PARAM", "PUT",
				q(v3+"/rooms/"+esc(room)+"/send/m.room.message/bad"+bad, "ts", bad), map[string]any{"body": "x", "msgtype": "m.text"})
		}
	})
}

func TestQueuedTransactionSurvivesRestart(t *testing.T) {
	forEachDB(t, func(t *testing.T, s *testserver.Server, f *fakeAS) {
		alice := registerUser(t, s, "alice")
		bob := asRegister(t, s, "_bridge_bob")
		room := createRoom(alice, map[string]any{"preset": "public_chat"})
		asClient(t, s).must(http.StatusOK, "", "POST", q(v3+"/join/"+esc(room), "user_id", bob), map[string]any{})
		f.waitFor("bob's join", func(evs []map[string]any) bool {
			for _, e := range evs {
				if e["type"] == "m.room.member" && e["state_key"] == bob {
					return true
				}
			}
			return false
		})
		f.setFailing(true)
		msg := sendText(alice, room, "", "while the bridge is down")
		// Wait until the transaction holding it has been refused once.
		deadline := time.Now().Add(15 * time.Second)
		var failedTxn string
		var failedEvents []map[string]any
		for failedTxn == "" {
			f.mu.Lock()
			for id, evs := range f.failed {
				if hasEvent(evs, msg) {
					failedTxn, failedEvents = id, evs
				}
			}
			f.mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatal("no refused transaction holding the message")
			}
			time.Sleep(20 * time.Millisecond)
		}
		n, err := s.AppServices.QueuedTransactions(t.Context(), asID)
		if err != nil || n == 0 {
			t.Fatalf("queued transactions = %d, %v; want some", n, err)
		}
		s.Stop()
		f.setFailing(false)
		s.Restart(t)
		evs := f.waitFor("the queued message", func(evs []map[string]any) bool { return hasEvent(evs, msg) })
		if c := countEvent(evs, msg); c != 1 {
			t.Fatalf("message delivered %d times", c)
		}
		// The retry is the same transaction: same ID, same events.
		f.mu.Lock()
		var retried []map[string]any
		for _, tx := range f.txns {
			if tx.ID == failedTxn {
				retried = tx.Events
			}
		}
		f.mu.Unlock()
		if len(retried) != len(failedEvents) {
			t.Fatalf("transaction %s retried with %s, first sent with %s", failedTxn, mustJSON(retried), mustJSON(failedEvents))
		}
		for i := range retried {
			if retried[i]["event_id"] != failedEvents[i]["event_id"] {
				t.Fatalf("transaction %s changed across the restart", failedTxn)
			}
		}
		// Later events follow, in later transactions.
		after := sendText(alice, room, "", "after the restart")
		evs = f.waitFor("a later message", func(evs []map[string]any) bool { return hasEvent(evs, after) })
		if indexOf(evs, after) < indexOf(evs, msg) {
			t.Fatal("events out of order across the restart")
		}
		// The queue empties once the answers are in.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			n, err := s.AppServices.QueuedTransactions(t.Context(), asID)
			if err == nil && n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d transactions still queued (%v)", n, err)
			}
		}
	})
}

func countEvent(evs []map[string]any, eventID string) int {
	n := 0
	for _, e := range evs {
		if e["event_id"] == eventID {
			n++
		}
	}
	return n
}

func TestAliasQueryAndPing(t *testing.T) {
	forEachDB(t, func(t *testing.T, s *testserver.Server, f *fakeAS) {
		alice := registerUser(t, s, "alice")
		as := asClient(t, s)
		const alias = "#_bridge_lobby:hs.test"
		var made string
		f.mu.Lock()
		f.onAlias = func(a string) int {
			if a != alias {
				return http.StatusNotFound
			}
			// The service makes the room and its alias before it answers.
			made = createRoom(as, map[string]any{"preset": "public_chat", "room_alias_name": "_bridge_lobby"})
			return http.StatusOK
		}
		f.mu.Unlock()
		r := alice.must(http.StatusOK, "", "GET", v3+"/directory/room/"+esc(alias), nil)
		if r.str("room_id") == "" || r.str("room_id") != made {
			t.Fatalf("alias resolved to %s, want the room the service made (%s)", r.raw, made)
		}
		alice.must(http.StatusNotFound, "M_NOT_FOUND", "GET", v3+"/directory/room/"+esc("#_bridge_unknown:hs.test"), nil)
		alice.must(http.StatusNotFound, "M_NOT_FOUND", "GET", v3+"/directory/room/"+esc("#elsewhere:hs.test"), nil)
		f.mu.Lock()
		queries := f.queries
		f.mu.Unlock()
		if len(queries) != 2 {
			t.Fatalf("service queried for %v; want the two aliases of its namespace", queries)
		}

		p := as.must(http.StatusOK, "", "POST", "/_matrix/client/v1/appservice/"+asID+"/ping", map[string]any{"transaction_id": "t1"})
		if _, ok := p.body["duration_ms"].(float64); !ok {
			t.Fatalf("ping: %s", p.raw)
		}
		as.must(http.StatusForbidden, "M_FORBIDDEN", "POST", "/_matrix/client/v1/appservice/other/ping", map[string]any{})
		alice.must(http.StatusForbidden, "M_FORBIDDEN", "POST", "/_matrix/client/v1/appservice/"+asID+"/ping", map[string]any{})
	})
}

func TestPingWithoutURL(t *testing.T) {
	for name, dsn := range storagetest.DSNs(t) {
		t.Run(name, func(t *testing.T) {
			s := testserver.Start(t, dsn, withAppService(t, "null"))
			asClient(t, s).must(http.StatusBadRequest, "M_URL_NOT_SET", "POST", "/_matrix/client/v1/appservice/"+asID+"/ping", map[string]any{})
			// Its users still work.
			asClient(t, s).must(http.StatusOK, "", "GET", v3+"/account/whoami", nil)
		})
	}
}
