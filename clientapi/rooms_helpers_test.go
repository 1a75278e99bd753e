package clientapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
)

// Helpers for the room, message and directory tests.

// rtCreateRoom creates a room with a raw createRoom body and returns its ID.
func rtCreateRoom(t *testing.T, u *user, body map[string]any) id.RoomID {
	t.Helper()
	r := u.api.do("POST", v3+"/createRoom", body).expect(t, 200, "")
	rid := r.str("room_id")
	if rid == "" {
		t.Fatalf("createRoom: no room_id in %s", r)
	}
	return id.RoomID(rid)
}

var rtTxn atomic.Int64

// rtSend sends a message event with a fresh transaction ID.
func rtSend(t *testing.T, u *user, roomID id.RoomID, evType string, content any) id.EventID {
	t.Helper()
	path := fmt.Sprintf("%s/rooms/%s/send/%s/t%d", v3, esc(string(roomID)), esc(evType), rtTxn.Add(1))
	r := u.api.do("PUT", path, content).expect(t, 200, "")
	return id.EventID(r.str("event_id"))
}

// rtText sends an m.text message.
func rtText(t *testing.T, u *user, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	return rtSend(t, u, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

// rtState sends a state event.
func rtState(t *testing.T, u *user, roomID id.RoomID, evType, stateKey string, content any) resp {
	t.Helper()
	return u.api.do("PUT", fmt.Sprintf("%s/rooms/%s/state/%s/%s", v3, esc(string(roomID)), esc(evType), esc(stateKey)), content)
}

// rtMessages pages /messages with the given query.
func rtMessages(t *testing.T, u *user, roomID id.RoomID, q url.Values) resp {
	t.Helper()
	return u.api.do("GET", v3+"/rooms/"+esc(string(roomID))+"/messages?"+q.Encode(), nil)
}

// rtJoin joins a room by ID or alias.
func rtJoin(t *testing.T, u *user, target string) resp {
	t.Helper()
	return u.api.do("POST", v3+"/join/"+esc(target), map[string]any{})
}

// rtEvents decodes a JSON array of client events (from a decoded body value).
func rtEvents(t *testing.T, v any) []map[string]any {
	t.Helper()
	list, ok := v.([]any)
	if !ok && v != nil {
		t.Fatalf("not an event list: %v", v)
	}
	out := make([]map[string]any, len(list))
	for i, x := range list {
		out[i], _ = x.(map[string]any)
	}
	return out
}

// rtIDs lists the event IDs of events.
func rtIDs(evs []map[string]any) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i], _ = e["event_id"].(string)
	}
	return out
}

// rtField walks a decoded JSON value by keys.
func rtField(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// rtErrcode is the Matrix errcode of a mautrix client error.
func rtErrcode(err error) string {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return he.RespError.ErrCode
	}
	var hp *mautrix.HTTPError
	if errors.As(err, &hp) && hp.RespError != nil {
		return hp.RespError.ErrCode
	}
	return ""
}

// rtStateContent reads one state event's content with mautrix's client.
func rtStateContent(t *testing.T, u *user, roomID id.RoomID, evType, stateKey string) map[string]any {
	t.Helper()
	var out map[string]any
	if err := u.cli.StateEvent(context.Background(), roomID, event.NewEventType(evType), stateKey, &out); err != nil {
		t.Fatalf("reading %s state of %s: %v", evType, roomID, err)
	}
	return out
}

// rtContains reports whether list holds s.
func rtContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// rtJSON encodes v for error messages.
func rtJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// rtUsers registers users named after the test (unique per server).
func rtUsers(t *testing.T, s *testserver.Server, names ...string) []*user {
	t.Helper()
	out := make([]*user, len(names))
	for i, n := range names {
		out[i] = registerUser(t, s, strings.ToLower(n))
	}
	return out
}
