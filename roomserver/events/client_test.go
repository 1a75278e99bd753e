package events

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestClientEvent(t *testing.T) {
	decode := func(t *testing.T, b []byte) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("client JSON is invalid: %v\n%s", err, b)
		}
		return m
	}
	keys := func(m map[string]any) string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return strings.Join(ks, ",")
	}

	t.Run("state event", func(t *testing.T) {
		ev, err := Parse("12", []byte(fixtures[12].json)) // v12 member
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, ev.ClientEvent(ClientOptions{Unsigned: []byte(`{"age":5}`)}))
		if got := keys(m); got != "content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned" {
			t.Errorf("keys = %s", got)
		}
		if m["event_id"] != string(ev.ID()) || m["room_id"] != string(ev.RoomID()) || m["state_key"] != "@tulir:maunium.net" ||
			m["type"] != "m.room.member" || m["sender"] != "@tulir:maunium.net" || m["origin_server_ts"] != float64(1754939139117) {
			t.Errorf("fields = %v", m)
		}
		if m["unsigned"].(map[string]any)["age"] != float64(5) {
			t.Errorf("unsigned = %v", m["unsigned"])
		}
		if m["content"].(map[string]any)["membership"] != "join" {
			t.Errorf("content = %v", m["content"])
		}
	})

	t.Run("omit room id, no unsigned", func(t *testing.T) {
		ev, err := Parse("4", []byte(fixtures[3].json))
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, ev.ClientEvent(ClientOptions{OmitRoomID: true}))
		if got := keys(m); got != "content,event_id,origin_server_ts,sender,type" {
			t.Errorf("keys = %s (federation unsigned must not leak)", got)
		}
	})

	t.Run("v12 create gets its derived room id", func(t *testing.T) {
		ev, err := Parse("12", []byte(fixtures[10].json))
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, ev.ClientEvent(ClientOptions{}))
		if m["room_id"] != "!mauT12AzsoqxV7Abvy_ApA-HNPK1LcT4GbP70_AOPyQ" {
			t.Errorf("room_id = %v", m["room_id"])
		}
		// Content with escapes is copied as canonical JSON and stays valid.
		pred := m["content"].(map[string]any)["predecessor"].(map[string]any)["room_id"].(string)
		if !strings.Contains(pred, "\n") || !strings.Contains(pred, "\U0001F408") {
			t.Errorf("predecessor room_id = %q", pred)
		}
	})

	t.Run("v10 redaction gets content.redacts", func(t *testing.T) {
		ev, err := Parse("10", []byte(fixtures[15].json))
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, ev.ClientEvent(ClientOptions{}))
		target := "$DlH5HN5HftuZJI6bE7PqLHkV2dln6D3KYJvdXTlGnKw"
		if m["redacts"] != target || m["content"].(map[string]any)["redacts"] != target {
			t.Errorf("redacts = %v, content = %v", m["redacts"], m["content"])
		}
	})

	t.Run("v11 redaction gets top-level redacts", func(t *testing.T) {
		in := pduJSON(t, "11", map[string]any{
			"type": "m.room.redaction", "content": map[string]string{"redacts": "$" + strings.Repeat("T", 43), "reason": "r"},
		})
		ev, err := Parse("11", in)
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, ev.ClientEvent(ClientOptions{}))
		if m["redacts"] != "$"+strings.Repeat("T", 43) || m["content"].(map[string]any)["reason"] != "r" {
			t.Errorf("client event = %v", m)
		}
	})

	t.Run("append reuses the buffer", func(t *testing.T) {
		ev, err := Parse("4", []byte(fixtures[3].json))
		if err != nil {
			t.Fatal(err)
		}
		buf := []byte(`[`)
		buf = ev.AppendClientEvent(buf, ClientOptions{})
		buf = append(buf, ',')
		buf = ev.AppendClientEvent(buf, ClientOptions{OmitRoomID: true})
		buf = append(buf, ']')
		var arr []map[string]any
		if err := json.Unmarshal(buf, &arr); err != nil || len(arr) != 2 {
			t.Fatalf("appended list invalid: %v\n%s", err, buf)
		}
	})
}

func TestAppendContentWithRedacts(t *testing.T) {
	tests := []struct{ content, want string }{
		{`{}`, `{"redacts":"$t"}`},
		{`{"reason":"x"}`, `{"redacts":"$t","reason":"x"}`},
		{`{"a":1,"redacts":"$old","z":2}`, `{"redacts":"$t","a":1,"z":2}`},
	}
	for _, tt := range tests {
		if got := string(appendContentWithRedacts(nil, []byte(tt.content), "$t")); got != tt.want {
			t.Errorf("appendContentWithRedacts(%s) = %s, want %s", tt.content, got, tt.want)
		}
	}
}
