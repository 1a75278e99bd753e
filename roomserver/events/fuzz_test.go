package events

import (
	"bytes"
	"errors"
	"testing"

	"maunium.net/go/mautrix/id"
)

// FuzzParse checks that Parse never panics, that every error wraps one of the
// sentinels, and that an accepted event's JSON is a fixed point.
func FuzzParse(f *testing.F) {
	for _, fx := range fixtures {
		f.Add(string(fx.version), []byte(fx.json))
	}
	f.Add("10", []byte(`{"a":[1,{"b":"\u0000"}]}`))
	f.Add("5", []byte(`{"n":1.5e300}`))
	f.Fuzz(func(t *testing.T, version string, data []byte) {
		ev, err := Parse(id.RoomVersion(version), data)
		if err != nil {
			if Errcode(err) == "" {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		again, err := Parse(id.RoomVersion(version), ev.JSON())
		if err != nil || !bytes.Equal(again.JSON(), ev.JSON()) || again.ID() != ev.ID() {
			t.Fatalf("JSON is not a fixed point: %v", err)
		}
		_ = ev.Redacted()
		_ = ev.ClientEvent(ClientOptions{})
		_ = ev.CheckContentHash()
	})
}

// FuzzFromStored feeds damaged bytes to the trusted loader: it may return
// errors but must not panic.
func FuzzFromStored(f *testing.F) {
	for _, fx := range fixtures {
		f.Add(string(fx.version), string(fx.id), []byte(fx.json))
	}
	f.Add("10", "$"+string(bytes.Repeat([]byte("A"), 43)), []byte(`{"a":`))
	f.Add("10", "$"+string(bytes.Repeat([]byte("A"), 43)), []byte(`{,`))
	f.Fuzz(func(t *testing.T, version, eventID string, data []byte) {
		ev, err := FromStored(id.RoomVersion(version), id.EventID(eventID), data)
		if err != nil {
			if Errcode(err) == "" {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		_ = ev.Redacted()
		_ = ev.ClientEvent(ClientOptions{})
		_, _ = ev.RequiredSigners()
	})
}

func TestFromStored(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			parsed, err := Parse(fx.version, []byte(fx.json))
			if err != nil {
				t.Fatal(err)
			}
			loaded, err := FromStored(fx.version, parsed.ID(), parsed.JSON())
			if err != nil {
				t.Fatalf("FromStored: %v", err)
			}
			if loaded.ID() != parsed.ID() || loaded.ReferenceHash() != parsed.ReferenceHash() ||
				loaded.RoomID() != parsed.RoomID() || !bytes.Equal(loaded.JSON(), parsed.JSON()) ||
				loaded.Redacts() != parsed.Redacts() {
				t.Error("loaded event differs from the parsed one")
			}
		})
	}
	ev, err := Parse("1", []byte(fixtures[0].json))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		version id.RoomVersion
		id      id.EventID
		data    []byte
	}{
		{"v1 ID mismatch", "1", "$other:maunium.net", ev.JSON()},
		{"bad v4 ID", "4", "$short", []byte(fixtures[3].json)},
		{"unknown version", "99", fixtures[3].id, []byte(fixtures[3].json)},
		{"truncated", "4", fixtures[3].id, []byte(fixtures[3].json)[:100]},
		{"not an object", "4", fixtures[3].id, []byte(`[]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromStored(tt.version, tt.id, tt.data)
			if err == nil {
				t.Fatal("FromStored accepted bad input")
			}
			if !errors.Is(err, ErrBadJSON) && !errors.Is(err, ErrUnknownRoomVersion) {
				t.Errorf("err = %v", err)
			}
		})
	}
}
