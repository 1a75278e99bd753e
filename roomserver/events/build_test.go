package events

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json/v2"
	"errors"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

const testOrigin = "hearth.test"

var testKeyID = id.KeyID("ed25519:t1")

func testSigningKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

func testGetKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if server != testOrigin || keyID != testKeyID {
		return "", time.Time{}, nil
	}
	pub := testSigningKey().Public().(ed25519.PublicKey)
	return id.SigningKey(base64.RawStdEncoding.EncodeToString(pub)), far, nil
}

func ptr[T any](v T) *T { return &v }

// testRoomID returns a room ID of the right shape for the version.
func testRoomID(v *roomversion.Version) id.RoomID {
	if v.RoomIDIsCreateEventID {
		return "!" + id.RoomID(strings.Repeat("A", 43))
	}
	return "!room:" + testOrigin
}

// buildCreate builds the create event of a room of version v.
func buildCreate(t testing.TB, v *roomversion.Version) *Event {
	t.Helper()
	content := `{"room_version":"` + string(v.ID) + `"`
	if v.CreatorInContent {
		content += `,"creator":"@alice:` + testOrigin + `"`
	}
	content += "}"
	proto := ProtoEvent{
		Type: "m.room.create", StateKey: ptr(""), Sender: "@alice:" + testOrigin,
		Content: []byte(content), Depth: 1, OriginServerTS: 1_700_000_000_000,
	}
	if !v.RoomIDIsCreateEventID {
		proto.RoomID = testRoomID(v)
	}
	ev, err := Build(v.ID, proto, testOrigin, testKeyID, testSigningKey())
	if err != nil {
		t.Fatalf("building create event for v%s: %v", v.ID, err)
	}
	return ev
}

// TestBuildSignVerifyAllVersions builds a create event and a member event
// citing it in every room version, then checks that they verify, that their
// hashes match, that they parse back to the same event, and (v3+) that
// mautrix computes the same reference hash and accepts the signature.
func TestBuildSignVerifyAllVersions(t *testing.T) {
	for _, v := range roomversion.All() {
		t.Run("v"+string(v.ID), func(t *testing.T) {
			create := buildCreate(t, v)
			roomID, err := RoomIDFromCreateEvent(create)
			if err != nil {
				t.Fatal(err)
			}
			member, err := Build(v.ID, ProtoEvent{
				Type: "m.room.member", StateKey: ptr("@alice:" + testOrigin), Sender: "@alice:" + testOrigin,
				RoomID: roomID, Content: []byte(`{"membership":"join","displayname":"Alice"}`),
				PrevEvents: []id.EventID{create.ID()}, AuthEvents: []id.EventID{create.ID()},
				Depth: 2, OriginServerTS: 1_700_000_000_001,
				Unsigned:        []byte(`{"age_ts":1700000000001}`),
				ReferenceHashes: map[id.EventID][32]byte{create.ID(): create.ReferenceHash()},
			}, testOrigin, testKeyID, testSigningKey())
			if err != nil {
				t.Fatalf("building member event: %v", err)
			}
			for _, ev := range []*Event{create, member} {
				if err := VerifySignatures(ev, testGetKey); err != nil {
					t.Errorf("%s: VerifySignatures: %v", ev.Type(), err)
				}
				if !ev.CheckContentHash() {
					t.Errorf("%s: content hash does not match", ev.Type())
				}
				if !validEventID(v, string(ev.ID())) {
					t.Errorf("%s: ID %s has the wrong format for v%s", ev.Type(), ev.ID(), v.ID)
				}
				parsed, err := Parse(v.ID, ev.JSON())
				if err != nil {
					t.Fatalf("%s: Parse(JSON()): %v", ev.Type(), err)
				}
				if parsed.ID() != ev.ID() || !bytes.Equal(parsed.JSON(), ev.JSON()) || parsed.RoomID() != ev.RoomID() {
					t.Errorf("%s: parsed copy differs: %s %s", ev.Type(), parsed.ID(), parsed.RoomID())
				}
				hasEventID := lookupMember(ev.JSON(), "event_id") != nil
				if hasEventID != v.IsOriginBasedEventIDs() {
					t.Errorf("%s: event_id in JSON = %v", ev.Type(), hasEventID)
				}
				if !v.IsOriginBasedEventIDs() {
					// mautrix knows only spec versions.
					crossCheckMautrix(t, v.SpecVersion(), ev)
				}
			}
			if member.RoomID() != roomID || member.PrevEventIDs()[0] != create.ID() || member.AuthEventIDs()[0] != create.ID() {
				t.Errorf("member event fields: room %s prev %v auth %v", member.RoomID(), member.PrevEventIDs(), member.AuthEventIDs())
			}
			if v.IsOriginBasedEventIDs() {
				// The reference pair carries the create event's reference hash.
				ref := create.ReferenceHash()
				want := `[["` + string(create.ID()) + `",{"sha256":"` + base64.RawStdEncoding.EncodeToString(ref[:]) + `"}]]`
				if got := string(lookupMember(member.JSON(), "prev_events")); got != want {
					t.Errorf("prev_events = %s, want %s", got, want)
				}
				if !strings.HasSuffix(string(member.ID()), ":"+testOrigin) {
					t.Errorf("v1/v2 event ID %s does not name the origin", member.ID())
				}
			}
		})
	}
}

func crossCheckMautrix(t *testing.T, rv id.RoomVersion, ev *Event) {
	t.Helper()
	var theirs pdu.PDU
	if err := json.Unmarshal(ev.JSON(), &theirs); err != nil {
		t.Fatalf("mautrix cannot unmarshal %s: %v", ev.JSON(), err)
	}
	ref, err := theirs.GetReferenceHash(rv)
	if err != nil {
		t.Fatal(err)
	}
	if ref != ev.ReferenceHash() {
		t.Errorf("%s: reference hash differs from mautrix's", ev.Type())
	}
	if !theirs.VerifyContentHash() {
		t.Errorf("%s: mautrix rejects the content hash", ev.Type())
	}
	if err := theirs.VerifySignature(rv, testOrigin, testGetKey); err != nil {
		t.Errorf("%s: mautrix rejects the signature: %v", ev.Type(), err)
	}
}

func TestBuildV12CreateRoomID(t *testing.T) {
	v := roomversion.MustLookup("12")
	create := buildCreate(t, v)
	if lookupMember(create.JSON(), "room_id") != nil {
		t.Errorf("v12 create event has a room_id: %s", create.JSON())
	}
	if create.PDU().RoomID != "" {
		t.Errorf("PDU().RoomID = %q, want empty", create.PDU().RoomID)
	}
	want := id.RoomID("!" + string(create.ID())[1:])
	roomID, err := RoomIDFromCreateEvent(create)
	if err != nil || roomID != want || create.RoomID() != want {
		t.Errorf("room ID = %s / %s (%v), want %s", roomID, create.RoomID(), err, want)
	}
	ref := create.ReferenceHash()
	if enc := base64.RawURLEncoding.EncodeToString(ref[:]); string(want) != "!"+enc {
		t.Errorf("room ID %s is not the URL-safe reference hash %s", want, enc)
	}
	// A parsed copy derives the same room ID.
	parsed, err := Parse("12", create.JSON())
	if err != nil || parsed.RoomID() != want {
		t.Errorf("parsed room ID = %s (%v)", parsed.RoomID(), err)
	}
	// Before v12 the room ID is the create event's room_id.
	v11 := buildCreate(t, roomversion.MustLookup("11"))
	if r, err := RoomIDFromCreateEvent(v11); err != nil || r != testRoomID(roomversion.MustLookup("11")) {
		t.Errorf("v11 room ID = %s (%v)", r, err)
	}
	if _, err := RoomIDFromCreateEvent(parsedMember(t)); err == nil {
		t.Error("RoomIDFromCreateEvent accepted a member event")
	}
}

func parsedMember(t *testing.T) *Event {
	t.Helper()
	ev, err := Parse("12", []byte(fixtures[12].json))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestBuildRedactsPlacement(t *testing.T) {
	target := func(v *roomversion.Version) id.EventID {
		if v.IsOriginBasedEventIDs() {
			return "$target:" + testOrigin
		}
		return "$" + id.EventID(strings.Repeat("B", 43))
	}
	// A client may redact by an ID in another version's format (or one this
	// server never saw): the redaction is built all the same.
	foreign := func(v *roomversion.Version) id.EventID {
		if v.IsOriginBasedEventIDs() {
			return "$" + id.EventID(strings.Repeat("B", 43))
		}
		return "$" + id.EventID(strings.Repeat("B", 43)) + ":remote.test"
	}
	for _, v := range roomversion.All() {
		for name, tgt := range map[string]id.EventID{"own format": target(v), "foreign format": foreign(v)} {
			t.Run("v"+string(v.ID)+" "+name, func(t *testing.T) {
				ev, err := Build(v.ID, ProtoEvent{
					Type: "m.room.redaction", Sender: "@alice:" + testOrigin, RoomID: testRoomID(v),
					Content: []byte(`{"reason":"spam"}`), Redacts: &tgt, Depth: 5, OriginServerTS: 1,
					PrevEvents: []id.EventID{}, AuthEvents: []id.EventID{},
				}, testOrigin, testKeyID, testSigningKey())
				if err != nil {
					t.Fatal(err)
				}
				if ev.Redacts() != tgt {
					t.Errorf("Redacts() = %q, want %q", ev.Redacts(), tgt)
				}
				top := lookupMember(ev.JSON(), "redacts")
				inContent := lookupMember(ev.Content(), "redacts")
				if v.RedactsInContent {
					if top != nil || inContent == nil {
						t.Errorf("v%s: want redacts only in content: %s", v.ID, ev.JSON())
					}
					if lookupMember(ev.Content(), "reason") == nil {
						t.Errorf("reason lost: %s", ev.Content())
					}
				} else if top == nil || inContent != nil {
					t.Errorf("v%s: want redacts only at top level: %s", v.ID, ev.JSON())
				}
				// Redacting the redaction keeps the target from v11 only.
				if red := ev.Redacted(); (red.Redacts() == tgt) != v.UpdatedRedactionRules {
					t.Errorf("redacted redaction: Redacts() = %q", red.Redacts())
				}
			})
		}
	}
}

func TestBuildErrors(t *testing.T) {
	key := testSigningKey()
	base := func() ProtoEvent {
		return ProtoEvent{
			Type: "m.room.message", Sender: "@alice:" + testOrigin, RoomID: "!room:" + testOrigin,
			Content: []byte(`{"body":"hi"}`), PrevEvents: []id.EventID{}, AuthEvents: []id.EventID{},
			Depth: 3, OriginServerTS: 1,
		}
	}
	manyIDs := func(n int) []id.EventID {
		out := make([]id.EventID, n)
		for i := range out {
			out[i] = "$" + id.EventID(strings.Repeat(string(rune('A'+i)), 43))
		}
		return out
	}
	tests := []struct {
		name    string
		version id.RoomVersion
		mod     func(*ProtoEvent)
		origin  string
		key     ed25519.PrivateKey
		keyID   id.KeyID
		want    error // nil: any error
	}{
		{name: "unknown version", version: "99", want: ErrUnknownRoomVersion},
		{name: "missing type", mod: func(p *ProtoEvent) { p.Type = "" }, want: ErrBadJSON},
		{name: "type too long", mod: func(p *ProtoEvent) { p.Type = strings.Repeat("t", 256) }, want: ErrTooLarge},
		{name: "state key too long", mod: func(p *ProtoEvent) { p.StateKey = ptr(strings.Repeat("é", 128)) }, want: ErrTooLarge},
		{name: "bad sender", mod: func(p *ProtoEvent) { p.Sender = "alice" }, want: ErrBadJSON},
		{name: "foreign sender", mod: func(p *ProtoEvent) { p.Sender = "@alice:elsewhere.test" }, want: ErrBadJSON},
		{name: "bad room", mod: func(p *ProtoEvent) { p.RoomID = "room" }, want: ErrBadJSON},
		{name: "float content", mod: func(p *ProtoEvent) { p.Content = []byte(`{"n":1.5}`) }, want: ErrBadJSON},
		{name: "big int content in v1", version: "1", mod: func(p *ProtoEvent) { p.Content = []byte(`{"n":9007199254740992}`) }, want: ErrBadJSON},
		{name: "content not object", mod: func(p *ProtoEvent) { p.Content = []byte(`[]`) }, want: ErrBadJSON},
		{name: "content not JSON", mod: func(p *ProtoEvent) { p.Content = []byte(`{`) }, want: ErrNotJSON},
		{name: "content too big", mod: func(p *ProtoEvent) { p.Content = []byte(`{"b":"` + strings.Repeat("x", MaxEventSize) + `"}`) }, want: ErrTooLarge},
		{name: "event too big", mod: func(p *ProtoEvent) { p.Content = []byte(`{"b":"` + strings.Repeat("x", MaxEventSize-200) + `"}`) }, want: ErrTooLarge},
		{name: "negative depth", mod: func(p *ProtoEvent) { p.Depth = -1 }, want: ErrBadJSON},
		{name: "too many prev events", mod: func(p *ProtoEvent) { p.PrevEvents = manyIDs(21) }, want: ErrBadJSON},
		{name: "too many auth events", mod: func(p *ProtoEvent) { p.AuthEvents = manyIDs(11) }, want: ErrBadJSON},
		{name: "bad prev event ID", mod: func(p *ProtoEvent) { p.PrevEvents = []id.EventID{"$short"} }, want: ErrBadJSON},
		{name: "v1 without reference hash", version: "1", mod: func(p *ProtoEvent) { p.PrevEvents = []id.EventID{"$x:" + testOrigin} }},
		{name: "redacts on a message", mod: func(p *ProtoEvent) { p.Redacts = ptr(manyIDs(1)[0]) }, want: ErrBadJSON},
		{name: "redaction without target", mod: func(p *ProtoEvent) { p.Type = "m.room.redaction" }, want: ErrBadJSON},
		{name: "redaction target without sigil", mod: func(p *ProtoEvent) { p.Type, p.Redacts = "m.room.redaction", ptr(id.EventID("target")) }, want: ErrBadJSON},
		{name: "redaction target too long", mod: func(p *ProtoEvent) {
			p.Type, p.Redacts = "m.room.redaction", ptr(id.EventID("$"+strings.Repeat("x", 255)))
		}, want: ErrBadJSON},
		{name: "v11 conflicting content redacts", version: "11", mod: func(p *ProtoEvent) {
			p.Type, p.Redacts, p.Content = "m.room.redaction", ptr(manyIDs(1)[0]), []byte(`{"redacts":"$other"}`)
		}, want: ErrBadJSON},
		{name: "v12 create with room_id", version: "12", mod: func(p *ProtoEvent) {
			p.Type, p.StateKey, p.RoomID, p.Content = "m.room.create", ptr(""), testRoomID(roomversion.MustLookup("12")), []byte(`{"room_version":"12"}`)
		}, want: ErrBadJSON},
		{name: "create for another version", version: "10", mod: func(p *ProtoEvent) {
			p.Type, p.StateKey, p.Content = "m.room.create", ptr(""), []byte(`{"room_version":"11"}`)
		}, want: ErrBadJSON},
		{name: "create without room_version", version: "10", mod: func(p *ProtoEvent) {
			p.Type, p.StateKey, p.Content = "m.room.create", ptr(""), []byte(`{"creator":"@alice:hearth.test"}`)
		}, want: ErrBadJSON},
		{name: "short key", key: key[:10]},
		{name: "bad key ID", keyID: "curve25519:x"},
		{name: "bad origin", origin: "bad origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base()
			if tt.mod != nil {
				tt.mod(&p)
			}
			version, origin, k, keyID := tt.version, tt.origin, tt.key, tt.keyID
			if version == "" {
				version = "10"
			}
			if origin == "" {
				origin = testOrigin
			}
			if k == nil {
				k = key
			}
			if keyID == "" {
				keyID = testKeyID
			}
			ev, err := Build(version, p, origin, keyID, k)
			if err == nil {
				t.Fatalf("Build succeeded: %s", ev.JSON())
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBuildDefaults(t *testing.T) {
	before := time.Now().UnixMilli()
	ev, err := Build("6", ProtoEvent{
		Type: "m.room.message", Sender: "@alice:" + testOrigin, RoomID: "!room:" + testOrigin,
		Depth: 1 << 60, PrevEvents: []id.EventID{}, AuthEvents: []id.EventID{},
	}, testOrigin, testKeyID, testSigningKey())
	if err != nil {
		t.Fatal(err)
	}
	if ev.Depth() != 1<<53-1 {
		t.Errorf("depth = %d, want it capped at 2^53-1", ev.Depth())
	}
	if ev.OriginServerTS() < before {
		t.Errorf("origin_server_ts = %d, want now", ev.OriginServerTS())
	}
	if string(ev.Content()) != "{}" {
		t.Errorf("content = %s, want {}", ev.Content())
	}
	if ev.IsState() || ev.StateKey() != nil {
		t.Error("message event is a state event")
	}
}

func TestSignAddsSignature(t *testing.T) {
	v := roomversion.MustLookup("10")
	ev := buildCreate(t, v)
	otherKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	signed, err := ev.Sign("resident.test", "ed25519:r", otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if signed.ID() != ev.ID() {
		t.Errorf("Sign changed the ID: %s", signed.ID())
	}
	if len(signed.PDU().Signatures) != 2 || signed.PDU().Signatures[testOrigin][testKeyID] == "" {
		t.Fatalf("signatures = %v", signed.PDU().Signatures)
	}
	if len(ev.PDU().Signatures) != 1 {
		t.Error("Sign modified the original event")
	}
	if !signed.CheckContentHash() {
		t.Error("content hash broken by Sign")
	}
	// Verify the new signature directly.
	pub := otherKey.Public().(ed25519.PublicKey)
	msg := appendRedacted(nil, v.Redaction, signed.JSON(), true)
	sig, _ := base64.RawStdEncoding.DecodeString(signed.PDU().Signatures["resident.test"]["ed25519:r"])
	if !ed25519.Verify(pub, msg, sig) {
		t.Error("added signature does not verify")
	}
	if _, err := Parse("10", signed.JSON()); err != nil {
		t.Errorf("signed JSON does not parse: %v", err)
	}
	if _, err := ev.Sign("resident.test", "ed25519:r", otherKey[:5]); err == nil {
		t.Error("Sign accepted a short key")
	}
}

// TestRequiredSigners covers which servers must sign.
func TestRequiredSigners(t *testing.T) {
	tests := []struct {
		name    string
		version id.RoomVersion
		event   string
		want    []string
		wantErr bool
	}{
		{"sender", "10", `{"type":"m.room.message","sender":"@a:one.test","content":{}}`, []string{"one.test"}, false},
		{"v1 event ID domain", "1", `{"type":"m.room.message","sender":"@a:one.test","event_id":"$x:two.test","content":{}}`, []string{"one.test", "two.test"}, false},
		{"v1 same domain", "1", `{"type":"m.room.message","sender":"@a:one.test","event_id":"$x:one.test","content":{}}`, []string{"one.test"}, false},
		{"third party invite", "10", `{"type":"m.room.member","sender":"@a:one.test","state_key":"@b:two.test","content":{"membership":"invite","third_party_invite":{"signed":{}}}}`, []string{}, false},
		{"plain invite", "10", `{"type":"m.room.member","sender":"@a:one.test","state_key":"@b:two.test","content":{"membership":"invite"}}`, []string{"one.test"}, false},
		{"restricted join v8", "8", `{"type":"m.room.member","sender":"@a:one.test","state_key":"@a:one.test","content":{"join_authorised_via_users_server":"@r:res.test","membership":"join"}}`, []string{"one.test", "res.test"}, false},
		{"restricted join v7 ignored", "7", `{"type":"m.room.member","sender":"@a:one.test","state_key":"@a:one.test","content":{"join_authorised_via_users_server":"@r:res.test","membership":"join"}}`, []string{"one.test"}, false},
		{"authoriser on a leave ignored", "10", `{"type":"m.room.member","sender":"@a:one.test","state_key":"@a:one.test","content":{"join_authorised_via_users_server":"@r:res.test","membership":"leave"}}`, []string{"one.test"}, false},
		{"bad authoriser", "10", `{"type":"m.room.member","sender":"@a:one.test","state_key":"@a:one.test","content":{"join_authorised_via_users_server":5,"membership":"join"}}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			canon, err := CanonicalJSON([]byte(tt.event))
			if err != nil {
				t.Fatal(err)
			}
			f := scanFields(canon)
			e := &Event{version: roomversion.MustLookup(tt.version), json: canon, raw: f.kept(), pdu: &pdu.PDU{}}
			e.pdu.Type, _ = decodeString(f.typ)
			s, _ := decodeString(f.sender)
			e.pdu.Sender = id.UserID(s)
			eid, _ := decodeString(f.eventID)
			e.id = id.EventID(eid)
			got, err := e.RequiredSigners()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tt.wantErr && strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("RequiredSigners = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestVerifyRestrictedJoin checks that a restricted join needs the
// authorising server's signature too.
func TestVerifyRestrictedJoin(t *testing.T) {
	v := roomversion.MustLookup("10")
	join, err := Build(v.ID, ProtoEvent{
		Type: "m.room.member", StateKey: ptr("@bob:" + testOrigin), Sender: "@bob:" + testOrigin,
		RoomID: "!room:res.test", Content: []byte(`{"join_authorised_via_users_server":"@r:res.test","membership":"join"}`),
		PrevEvents: []id.EventID{}, AuthEvents: []id.EventID{}, Depth: 9, OriginServerTS: 5,
	}, testOrigin, testKeyID, testSigningKey())
	if err != nil {
		t.Fatal(err)
	}
	resKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	getKey := func(server string, keyID id.KeyID, ts time.Time) (id.SigningKey, time.Time, error) {
		if server == "res.test" && keyID == "ed25519:k" {
			return id.SigningKey(base64.RawStdEncoding.EncodeToString(resKey.Public().(ed25519.PublicKey))), far, nil
		}
		return testGetKey(server, keyID, ts)
	}
	if err := VerifySignatures(join, getKey); !errors.Is(err, ErrMissingSignature) {
		t.Errorf("unsigned by the resident server: err = %v", err)
	}
	cosigned, err := join.Sign("res.test", "ed25519:k", resKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignatures(cosigned, getKey); err != nil {
		t.Errorf("co-signed join: %v", err)
	}
}
