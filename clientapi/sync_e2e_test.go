package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// syncResp is the part of a /sync response the tests look at.
type syncResp struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []json.RawMessage `json:"events"`
	} `json:"account_data"`
	Presence struct {
		Events []syncEvent `json:"events"`
	} `json:"presence"`
	Rooms struct {
		Join   map[id.RoomID]*syncJoined `json:"join"`
		Invite map[id.RoomID]struct {
			InviteState struct {
				Events []syncEvent `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
		Leave map[id.RoomID]*syncJoined `json:"leave"`
	} `json:"rooms"`
	ToDevice struct {
		Events []json.RawMessage `json:"events"`
	} `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCount      map[string]int `json:"device_one_time_keys_count"`
	FallbackTypes []string       `json:"device_unused_fallback_key_types"`
}

type syncJoined struct {
	Summary *struct {
		Heroes  []id.UserID `json:"m.heroes"`
		Joined  *int        `json:"m.joined_member_count"`
		Invited *int        `json:"m.invited_member_count"`
	} `json:"summary"`
	State *struct {
		Events []syncEvent `json:"events"`
	} `json:"state"`
	Timeline struct {
		Events    []syncEvent `json:"events"`
		Limited   bool        `json:"limited"`
		PrevBatch string      `json:"prev_batch"`
	} `json:"timeline"`
	Ephemeral struct {
		Events []syncEvent `json:"events"`
	} `json:"ephemeral"`
	AccountData struct {
		Events []syncEvent `json:"events"`
	} `json:"account_data"`
	Unread *struct {
		Highlight int `json:"highlight_count"`
		Notif     int `json:"notification_count"`
	} `json:"unread_notifications"`
	UnreadThreads map[string]struct {
		Highlight int `json:"highlight_count"`
		Notif     int `json:"notification_count"`
	} `json:"unread_thread_notifications"`
}

type syncEvent struct {
	Type     string          `json:"type"`
	EventID  id.EventID      `json:"event_id"`
	Sender   id.UserID       `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Unsigned json.RawMessage `json:"unsigned"`
	RoomID   string          `json:"room_id"`
}

func (e syncEvent) body() string {
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Body
}

// syncDo runs GET /sync with the given query and decodes the answer.
func syncDo(t *testing.T, u *user, q url.Values) *syncResp {
	t.Helper()
	r := u.api.do("GET", v3+"/sync?"+q.Encode(), nil).expect(t, http.StatusOK, "")
	var out syncResp
	if err := json.Unmarshal(r.raw, &out); err != nil {
		t.Fatalf("sync response: %v: %s", err, r.raw)
	}
	if out.NextBatch == "" {
		t.Fatalf("no next_batch: %s", r.raw)
	}
	return &out
}

func syncSince(t *testing.T, u *user, since string, timeout time.Duration) *syncResp {
	t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeout.Milliseconds())}}
	if since != "" {
		q.Set("since", since)
	}
	return syncDo(t, u, q)
}

func stBodies(r *syncJoined) []string {
	var out []string
	for _, e := range r.Timeline.Events {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

// stRoom has creator create a private room inviting the others.
func stRoom(t *testing.T, creator *user, invite ...*user) id.RoomID {
	t.Helper()
	req := &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "family"}
	for _, u := range invite {
		req.Invite = append(req.Invite, u.id)
	}
	resp, err := creator.cli.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("creating room: %v", err)
	}
	return resp.RoomID
}

func stText(t *testing.T, u *user, roomID id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := u.cli.SendText(context.Background(), roomID, text)
	if err != nil {
		t.Fatalf("sending %q: %v", text, err)
	}
	return resp.EventID
}

func TestSyncInviteJoinChat(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := context.Background()
		alice := registerUser(t, s, "alice")
		bob := registerUser(t, s, "bob")

		bobInit := syncSince(t, bob, "", 0)
		roomID := stRoom(t, alice, bob)

		// Bob's incremental sync shows the invite with stripped state.
		r := syncSince(t, bob, bobInit.NextBatch, 5*time.Second)
		inv, ok := r.Rooms.Invite[roomID]
		if !ok {
			t.Fatalf("invite not in sync: %+v", r.Rooms)
		}
		var sawCreate, sawInvite bool
		for _, e := range inv.InviteState.Events {
			if e.Type == "m.room.create" {
				sawCreate = true
			}
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == string(bob.id) && e.Sender == alice.id {
				sawInvite = true
			}
			if e.EventID != "" {
				t.Errorf("stripped state event has an event_id: %+v", e)
			}
		}
		if !sawCreate || !sawInvite {
			t.Fatalf("invite_state lacks create or the invite: %+v", inv.InviteState.Events)
		}

		if _, err := bob.cli.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("joining: %v", err)
		}
		r = syncSince(t, bob, r.NextBatch, 5*time.Second)
		jr := r.Rooms.Join[roomID]
		if jr == nil {
			t.Fatalf("joined room missing: %+v", r.Rooms)
		}
		if jr.State == nil || len(jr.State.Events)+len(jr.Timeline.Events) == 0 {
			t.Fatalf("newly joined room has no state: %+v", jr)
		}
		if jr.Summary == nil || jr.Summary.Joined == nil || *jr.Summary.Joined != 2 {
			t.Errorf("summary = %+v, want 2 joined", jr.Summary)
		}
		if jr.Unread == nil {
			t.Errorf("joined room lacks unread_notifications")
		}

		// Bob long-polls; Alice's message must wake him promptly.
		type res struct {
			r   *syncResp
			at  time.Time
			err error
		}
		ch := make(chan res, 1)
		since := r.NextBatch
		go func() {
			cli := bob.cli
			resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 10000})
			if err != nil {
				ch <- res{err: err}
				return
			}
			b, _ := json.Marshal(resp)
			var out syncResp
			_ = json.Unmarshal(b, &out)
			ch <- res{r: &out, at: time.Now()}
		}()
		stWaitWaiting(t, s, bob.id)
		sent := time.Now()
		msgID := stText(t, alice, roomID, "hello bob")
		got := <-ch
		if got.err != nil {
			t.Fatalf("long poll: %v", got.err)
		}
		t.Logf("send → long-poll answer: %v", got.at.Sub(sent))
		if got.at.Sub(sent) > 2*time.Second {
			t.Errorf("long poll woke after %v", got.at.Sub(sent))
		}
		jr = got.r.Rooms.Join[roomID]
		if jr == nil || !slices.Contains(stBodies(jr), "hello bob") {
			t.Fatalf("message not in long-poll answer: %+v", got.r.Rooms.Join)
		}
		// The unread count arrives with the message.
		r = syncSince(t, bob, since, 0)
		if jr := r.Rooms.Join[roomID]; jr == nil || jr.Unread == nil || jr.Unread.Notif != 1 {
			t.Fatalf("unread after one message = %+v", r.Rooms.Join[roomID])
		}
		bobSince := r.NextBatch

		// Alice's own sync sees her message with its transaction ID.
		ar := syncSince(t, alice, "", 0)
		ajr := ar.Rooms.Join[roomID]
		if ajr == nil || !slices.Contains(stBodies(ajr), "hello bob") {
			t.Fatalf("alice's initial sync lacks her message: %+v", ajr)
		}
		for _, e := range ajr.Timeline.Events {
			if e.EventID == msgID && !strings.Contains(string(e.Unsigned), "transaction_id") {
				t.Errorf("own message lacks transaction_id: %s", e.Unsigned)
			}
		}
		aliceSince := ar.NextBatch

		// Typing.
		if _, err := alice.cli.UserTyping(ctx, roomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		r = syncSince(t, bob, bobSince, 5*time.Second)
		if !stHasTyping(r.Rooms.Join[roomID], alice.id) {
			t.Fatalf("typing not in sync: %+v", r.Rooms.Join[roomID])
		}
		if _, err := alice.cli.UserTyping(ctx, roomID, false, 0); err != nil {
			t.Fatal(err)
		}
		r = syncSince(t, bob, r.NextBatch, 5*time.Second)
		if jr := r.Rooms.Join[roomID]; jr == nil || stHasTyping(jr, alice.id) || len(jr.Ephemeral.Events) == 0 {
			t.Fatalf("typing stop not in sync: %+v", r.Rooms.Join[roomID])
		}
		bobSince = r.NextBatch

		// Bob reads the message: Alice sees the receipt, Bob's count resets.
		if err := bob.cli.SendReceipt(ctx, roomID, msgID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		ar2 := syncSince(t, alice, aliceSince, 5*time.Second)
		if !stHasReceipt(ar2.Rooms.Join[roomID], msgID, bob.id, "m.read") {
			t.Fatalf("receipt not in alice's sync: %+v", ar2.Rooms.Join[roomID])
		}
		r = syncSince(t, bob, bobSince, 5*time.Second)
		if jr := r.Rooms.Join[roomID]; jr == nil || jr.Unread == nil || jr.Unread.Notif != 0 {
			t.Fatalf("unread after receipt = %+v", r.Rooms.Join[roomID])
		}
		// A private receipt is seen by its sender only.
		msg2 := stText(t, alice, roomID, "second")
		ar3 := syncSince(t, alice, ar2.NextBatch, 5*time.Second)
		r = syncSince(t, bob, r.NextBatch, 5*time.Second)
		if err := bob.cli.SendReceipt(ctx, roomID, msg2, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		r2 := syncSince(t, bob, r.NextBatch, 5*time.Second)
		if !stHasReceipt(r2.Rooms.Join[roomID], msg2, bob.id, "m.read.private") {
			t.Fatalf("private receipt not in own sync: %+v", r2.Rooms.Join[roomID])
		}
		ar4 := syncSince(t, alice, ar3.NextBatch, 300*time.Millisecond)
		if stHasReceipt(ar4.Rooms.Join[roomID], msg2, bob.id, "m.read.private") {
			t.Fatalf("private receipt leaked to alice")
		}
	})
}

// stWaitWaiting waits until a long-poll of user is waiting on the server.
func stWaitWaiting(t *testing.T, s *testserver.Server, u id.UserID) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if s.Sync.Waiting(u) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s never waited", u)
}

func stHasTyping(jr *syncJoined, u id.UserID) bool {
	if jr == nil {
		return false
	}
	for _, e := range jr.Ephemeral.Events {
		if e.Type != "m.typing" {
			continue
		}
		var c struct {
			UserIDs []id.UserID `json:"user_ids"`
		}
		_ = json.Unmarshal(e.Content, &c)
		return slices.Contains(c.UserIDs, u)
	}
	return false
}

func stHasReceipt(jr *syncJoined, ev id.EventID, u id.UserID, typ string) bool {
	if jr == nil {
		return false
	}
	for _, e := range jr.Ephemeral.Events {
		if e.Type != "m.receipt" {
			continue
		}
		var c map[id.EventID]map[string]map[id.UserID]json.RawMessage
		_ = json.Unmarshal(e.Content, &c)
		if _, ok := c[ev][typ][u]; ok {
			return true
		}
	}
	return false
}

func TestSyncBadParams(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		u := registerUser(t, s, "carol")
		for _, q := range []string{
			"since=garbage", "since=s", "since=s1_2_x", "since=s1_2_3_4_5_6_7_8_9", "since=s-1", "since=s99999999999999999999",
			"since=t1_2", "since=%00", "timeout=abc", "timeout=-5", "full_state=maybe", "set_presence=busy",
			"use_state_after=1",
		} {
			r := u.api.do("GET", v3+"/sync?"+q, nil)
			if r.status != http.StatusBadRequest || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s: got %s, want 400 M_INVALID_PARAM", q, r)
			}
		}
		// Unknown filters and malformed inline filters are client errors.
		for _, q := range []string{"filter=12345", "filter=" + url.QueryEscape(`{"room":`), "filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":-1}}}`)} {
			if r := u.api.do("GET", v3+"/sync?"+q, nil); r.status < 400 || r.status >= 500 {
				t.Errorf("%s: got %s, want a 4xx", q, r)
			}
		}
		// A token from the future counts as now; it is no error.
		u.api.do("GET", v3+"/sync?since=s999999_0_0_0_0_0&timeout=0", nil).expect(t, http.StatusOK, "")
		u.api.do("GET", v3+"/sync?since=s1&timeout=0", nil).expect(t, http.StatusOK, "")
		newAPI(t, s, "").do("GET", v3+"/sync", nil).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}
