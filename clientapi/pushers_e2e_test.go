package clientapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/internal/testserver"
)

// httpPusher is a /pushers/set body for an http pusher.
func httpPusher(appID, pushKey, url string, extra map[string]any) map[string]any {
	b := map[string]any{
		"kind": "http", "app_id": appID, "pushkey": pushKey, "app_display_name": "App", "device_display_name": "Phone",
		"profile_tag": "tag", "lang": "en", "data": map[string]any{"url": url},
	}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

// pusherKeys lists "app_id/pushkey" of a user's pushers, sorted.
func pusherKeys(t *testing.T, a *api) []string {
	t.Helper()
	r := a.do("GET", v3+"/pushers", nil).expect(t, 200, "")
	list, ok := r.body["pushers"].([]any)
	if !ok {
		t.Fatalf("no pushers array: %s", r)
	}
	var out []string
	for _, x := range list {
		m, _ := x.(map[string]any)
		out = append(out, m["app_id"].(string)+"/"+m["pushkey"].(string))
	}
	slices.Sort(out)
	return out
}

const testGateway = "https://push.example.org/_matrix/push/v1/notify"

// TestPushersAPI covers POST /pushers/set and GET /pushers: validation, update,
// deletion with kind null, app_id+pushkey uniqueness across users (append),
// and that a pusher goes with the device that set it.
func TestPushersAPI(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		a := alice.api
		if got := pusherKeys(t, a); len(got) != 0 {
			t.Fatalf("new user has pushers: %v", got)
		}

		bad := []struct {
			name    string
			body    any
			errcode string
		}{
			{"no kind", map[string]any{"app_id": "x", "pushkey": "k"}, "M_MISSING_PARAM"},
			{"no app_id", map[string]any{"kind": nil, "pushkey": "k"}, "M_MISSING_PARAM"},
			{"no pushkey", map[string]any{"kind": nil, "app_id": "x"}, "M_MISSING_PARAM"},
			{"app_id not a string", map[string]any{"kind": nil, "app_id": 5, "pushkey": "k"}, "M_BAD_JSON"},
			{"app_id too long", httpPusher(strings.Repeat("a", 65), "k", testGateway, nil), "M_INVALID_PARAM"},
			{"pushkey too long", httpPusher("x", strings.Repeat("k", 513), testGateway, nil), "M_INVALID_PARAM"},
			{"no lang", map[string]any{"kind": "http", "app_id": "x", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "data": map[string]any{"url": testGateway}}, "M_MISSING_PARAM"},
			{"no data", map[string]any{"kind": "http", "app_id": "x", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en"}, "M_MISSING_PARAM"},
			{"data not an object", httpPusher("x", "k", testGateway, map[string]any{"data": "url"}), "M_BAD_JSON"},
			{"no url", httpPusher("x", "k", testGateway, map[string]any{"data": map[string]any{"format": "event_id_only"}}), "M_MISSING_PARAM"},
			{"url wrong path", httpPusher("x", "k", "https://push.example.org/notify", nil), "M_INVALID_PARAM"},
			{"url not http", httpPusher("x", "k", "ftp://push.example.org/_matrix/push/v1/notify", nil), "M_INVALID_PARAM"},
			{"url relative", httpPusher("x", "k", "/_matrix/push/v1/notify", nil), "M_INVALID_PARAM"},
			{"unknown kind", httpPusher("x", "k", testGateway, map[string]any{"kind": "carrier-pigeon"}), "M_INVALID_PARAM"},
			{"email without a bound address", httpPusher("m.email", "alice@example.org", testGateway, map[string]any{"kind": "email"}), "M_THREEPID_NOT_FOUND"},
			{"append not a bool", httpPusher("x", "k", testGateway, map[string]any{"append": "yes"}), "M_BAD_JSON"},
			{"invalid UTF-8", "{\"kind\":\"http\",\"app_id\":\"\x81\"}", "M_NOT_JSON"},
		}
		for _, tc := range bad {
			t.Run(tc.name, func(t *testing.T) {
				a.do("POST", v3+"/pushers/set", tc.body).expect(t, 400, tc.errcode)
			})
		}
		if got := pusherKeys(t, a); len(got) != 0 {
			t.Fatalf("rejected requests stored pushers: %v", got)
		}

		// Create, read back, update in place.
		a.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "key1", testGateway, map[string]any{
			"data": map[string]any{"url": testGateway, "format": "event_id_only", "org.example.custom": 1},
		})).expect(t, 200, "")
		r := a.do("GET", v3+"/pushers", nil).expect(t, 200, "")
		p := r.body["pushers"].([]any)[0].(map[string]any)
		data, _ := json.Marshal(p["data"])
		if p["kind"] != "http" || p["app_display_name"] != "App" || p["device_display_name"] != "Phone" || p["lang"] != "en" ||
			p["profile_tag"] != "tag" || string(data) != `{"format":"event_id_only","org.example.custom":1,"url":"`+testGateway+`"}` {
			t.Fatalf("pusher: %s", r)
		}
		a.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "key1", testGateway, map[string]any{"lang": "fr"})).expect(t, 200, "")
		r = a.do("GET", v3+"/pushers", nil).expect(t, 200, "")
		if list := r.body["pushers"].([]any); len(list) != 1 || list[0].(map[string]any)["lang"] != "fr" {
			t.Fatalf("update: %s", r)
		}

		// app_id+pushkey is unique across users unless append is set.
		bob.api.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "key1", testGateway, map[string]any{"append": true})).expect(t, 200, "")
		if got := pusherKeys(t, a); len(got) != 1 {
			t.Fatalf("append removed alice's pusher: %v", got)
		}
		bob.api.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "key1", testGateway, nil)).expect(t, 200, "")
		if got := pusherKeys(t, a); len(got) != 0 {
			t.Fatalf("bob's pusher without append must replace alice's: %v", got)
		}
		if got := pusherKeys(t, bob.api); len(got) != 1 {
			t.Fatalf("bob's pushers: %v", got)
		}

		// kind null deletes (and deleting what is not there is fine).
		bob.api.do("POST", v3+"/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "key1"}).expect(t, 200, "")
		bob.api.do("POST", v3+"/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "key1"}).expect(t, 200, "")
		if got := pusherKeys(t, bob.api); len(got) != 0 {
			t.Fatalf("after delete: %v", got)
		}

		// A pusher goes with its device: logout.
		_, second := login(t, s, "alice", alice.password)
		second.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "second", testGateway, nil)).expect(t, 200, "")
		a.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "first", testGateway, nil)).expect(t, 200, "")
		if got := strings.Join(pusherKeys(t, a), ","); got != "org.example.app/first,org.example.app/second" {
			t.Fatalf("both devices' pushers: %s", got)
		}
		second.do("POST", v3+"/logout", map[string]any{}).expect(t, 200, "")
		if got := strings.Join(pusherKeys(t, a), ","); got != "org.example.app/first" {
			t.Fatalf("after logout of the second device: %s", got)
		}
	})
}

// TestPushersPasswordChange: a password change (logging other devices out)
// deletes the pushers other access tokens created and keeps the requester's
// (sytest "Pushers created with a different access token are deleted on
// password change").
func TestPushersPasswordChange(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		_, other := login(t, s, "alice", alice.password)
		other.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "other", testGateway, nil)).expect(t, 200, "")
		alice.api.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "mine", testGateway, nil)).expect(t, 200, "")
		uia(t, alice.api, "POST", v3+"/account/password", map[string]any{"new_password": "new-pw"}, alice).expect(t, 200, "")
		if got := strings.Join(pusherKeys(t, alice.api), ","); got != "org.example.app/mine" {
			t.Fatalf("pushers after password change: %s", got)
		}
		// And deleting a device through /devices takes its pushers too.
		_, third := login(t, s, "alice", "new-pw")
		third.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "third", testGateway, nil)).expect(t, 200, "")
		dev := third.do("GET", v3+"/account/whoami", nil).expect(t, 200, "").str("device_id")
		alice.password = "new-pw"
		uia(t, alice.api, "DELETE", v3+"/devices/"+dev, map[string]any{}, alice).expect(t, 200, "")
		if got := strings.Join(pusherKeys(t, alice.api), ","); got != "org.example.app/mine" {
			t.Fatalf("pushers after device deletion: %s", got)
		}
	})
}

// fakeGateway is a push gateway recording the notifications it is sent.
type fakeGateway struct {
	*httptest.Server
	mu       sync.Mutex
	got      []map[string]any
	reject   map[string]bool
	arrivals chan struct{}
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{reject: map[string]bool{}, arrivals: make(chan struct{}, 100)}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/push/v1/notify" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		n, _ := body["notification"].(map[string]any)
		rejected := []string{}
		g.mu.Lock()
		g.got = append(g.got, n)
		for _, d := range n["devices"].([]any) {
			if k := d.(map[string]any)["pushkey"].(string); g.reject[k] {
				rejected = append(rejected, k)
			}
		}
		g.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
		g.arrivals <- struct{}{}
	}))
	t.Cleanup(g.Close)
	return g
}

// next waits for the next notification.
func (g *fakeGateway) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case <-g.arrivals:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification reached the push gateway")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.got[len(g.got)-1]
}

func (g *fakeGateway) url() string { return g.URL + "/_matrix/push/v1/notify" }

// TestPushDelivery: an event that notifies a user with an http pusher is
// posted to the gateway (Push Gateway API), in full or event_id_only format,
// with the pusher's data minus url and the rule's tweaks; the user's own
// events are not; a rejected pushkey removes the pusher.
func TestPushDelivery(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")
		carol := registerUser(t, s, "carol") // three members: not a one-to-one room
		g := newFakeGateway(t)
		alice.api.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "full", g.url(), map[string]any{
			"data": map[string]any{"url": g.url(), "org.example.custom": "x"},
		})).expect(t, 200, "")
		roomID := rtCreateRoom(t, bob, map[string]any{"preset": "public_chat", "name": "Lunch"})
		rtJoin(t, alice, string(roomID)).expect(t, 200, "")
		rtJoin(t, carol, string(roomID)).expect(t, 200, "")
		rtText(t, alice, roomID, "my own message: no push")
		evID := rtText(t, bob, roomID, "hello there")

		n := g.next(t)
		if n["event_id"] != string(evID) || n["room_id"] != string(roomID) || n["type"] != "m.room.message" || n["sender"] != string(bob.id) {
			t.Fatalf("notification: %v", n)
		}
		if n["room_name"] != "Lunch" || n["sender_display_name"] != "bob" || n["prio"] != "low" {
			t.Fatalf("room details: %v", n)
		}
		if c, _ := n["content"].(map[string]any); c["body"] != "hello there" {
			t.Fatalf("content: %v", n["content"])
		}
		if c, _ := n["counts"].(map[string]any); c["unread"] != float64(1) {
			t.Fatalf("counts: %v", n["counts"])
		}
		dev := n["devices"].([]any)[0].(map[string]any)
		if dev["app_id"] != "org.example.app" || dev["pushkey"] != "full" {
			t.Fatalf("device: %v", dev)
		}
		if d, _ := dev["data"].(map[string]any); len(d) != 1 || d["org.example.custom"] != "x" {
			t.Fatalf("device data must be the pusher data minus url: %v", dev["data"])
		}
		if ts, _ := dev["pushkey_ts"].(float64); ts < float64(time.Now().Add(-time.Hour).Unix()) || ts > float64(time.Now().Unix()+1) {
			t.Fatalf("pushkey_ts in seconds: %v", dev["pushkey_ts"])
		}

		// A mention highlights: tweaks and high priority; event_id_only
		// leaves the event's details out.
		alice.api.do("POST", v3+"/pushers/set", httpPusher("org.example.app", "full", g.url(), map[string]any{
			"data": map[string]any{"url": g.url(), "format": "event_id_only"},
		})).expect(t, 200, "")
		evID = rtSend(t, bob, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{string(alice.id)}}})
		n = g.next(t)
		if n["event_id"] != string(evID) || n["prio"] != "high" || n["type"] != nil || n["content"] != nil || n["sender"] != nil {
			t.Fatalf("event_id_only notification: %v", n)
		}
		if c, _ := n["counts"].(map[string]any); c["unread"] != float64(2) {
			t.Fatalf("counts: %v", n["counts"])
		}
		tw, _ := n["devices"].([]any)[0].(map[string]any)["tweaks"].(map[string]any)
		if tw["highlight"] != true || tw["sound"] != "default" {
			t.Fatalf("tweaks: %v", tw)
		}

		// The gateway rejects the pushkey: the pusher goes.
		g.mu.Lock()
		g.reject["full"] = true
		g.mu.Unlock()
		rtText(t, bob, roomID, "one more")
		g.next(t)
		deadline := time.Now().Add(5 * time.Second)
		for len(pusherKeys(t, alice.api)) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("rejected pusher kept: %v", pusherKeys(t, alice.api))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
