package roomserver

import (
	"encoding/json"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestSpaceChildrenOrder(t *testing.T) {
	child := func(room, content string, ts int) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"type": "m.space.child", "state_key": room,
			"content": json.RawMessage(content), "origin_server_ts": ts})
		return b
	}
	tests := []struct {
		name  string
		state []json.RawMessage
		want  []id.RoomID
	}{
		{"order before none, then ts, then ID", []json.RawMessage{
			child("!c:x", `{"via":["x"]}`, 5),
			child("!b:x", `{"via":["x"]}`, 5),
			child("!a:x", `{"via":["x"]}`, 9),
			child("!z:x", `{"via":["x"],"order":"b"}`, 1),
			child("!y:x", `{"via":["x"],"order":"a"}`, 2),
		}, []id.RoomID{"!y:x", "!z:x", "!b:x", "!c:x", "!a:x"}},
		{"invalid entries dropped", []json.RawMessage{
			child("!novia:x", `{}`, 1),
			child("!emptyvia:x", `{"via":[]}`, 1),
			child("not-a-room", `{"via":["x"]}`, 1),
			json.RawMessage(`{"type":"m.space.parent","state_key":"!p:x","content":{"via":["x"]}}`),
			json.RawMessage(`[1,2]`),
			json.RawMessage(`not json`),
			child("!ok:x", `{"via":["x"]}`, 1),
		}, []id.RoomID{"!ok:x"}},
		{"bad order ignored", []json.RawMessage{
			child("!b:x", `{"via":["x"],"order":"\u0001"}`, 1),
			child("!a:x", `{"via":["x"],"order":"zzz"}`, 2),
		}, []id.RoomID{"!a:x", "!b:x"}},
	}
	for _, tc := range tests {
		var got []id.RoomID
		for _, c := range SpaceChildren(tc.state) {
			got = append(got, c.RoomID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestOrderedChildrenState(t *testing.T) {
	child := func(room, content string, ts int) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"type": "m.space.child", "state_key": room,
			"content": json.RawMessage(content), "origin_server_ts": ts})
		return b
	}
	state := []json.RawMessage{
		child("!b:x", `{"via":["x"]}`, 2),
		child("!a:x", `{"via":["x"],"suggested":true}`, 3),
		child("!novia:x", `{}`, 1),
		child("!c:x", `{"via":["x"],"suggested":true}`, 1),
		child("!c:x", `{"via":["x"]}`, 9), // a repeated link (remote answers)
	}
	keys := func(raws []json.RawMessage) []string {
		out := []string{}
		for _, r := range raws {
			var v struct {
				StateKey string `json:"state_key"`
			}
			_ = json.Unmarshal(r, &v)
			out = append(out, v.StateKey)
		}
		return out
	}
	tests := []struct {
		suggested bool
		want      []string
	}{
		{false, []string{"!c:x", "!b:x", "!a:x"}},
		{true, []string{"!c:x", "!a:x"}},
	}
	for _, tc := range tests {
		if got := keys(OrderedChildrenState(state, tc.suggested)); !slices.Equal(got, tc.want) {
			t.Errorf("suggested=%v: %v, want %v", tc.suggested, got, tc.want)
		}
	}
	if got := OrderedChildrenState(nil, false); got == nil || len(got) != 0 {
		t.Errorf("no children: %#v", got)
	}
}
