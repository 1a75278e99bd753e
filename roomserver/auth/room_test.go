package auth_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/sjson"
	"go.mau.fi/util/exgjson"

	"hearth/roomserver/auth"
	"hearth/roomserver/roomversion"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Users of the test rooms. alice creates the rooms; mod and mod2 have level
// 50; bob has 0; carol and dave are not in the room.
const (
	alice id.UserID = "@alice:a.test"
	mod   id.UserID = "@mod:b.test"
	mod2  id.UserID = "@mod2:b.test"
	bob   id.UserID = "@bob:b.test"
	carol id.UserID = "@carol:c.test"
	dave  id.UserID = "@dave:a.test"
)

// serverKey returns the ed25519 key of a test server (or identity server).
func serverKey(server string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(server))
	return ed25519.NewKeyFromSeed(seed[:])
}

func publicKeyBase64(server string) string {
	return base64.RawStdEncoding.EncodeToString(serverKey(server).Public().(ed25519.PublicKey))
}

// getKey is a pdu.GetKeyFunc knowing every test server's key "ed25519:1".
func getKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if keyID != "ed25519:1" {
		return "", time.Time{}, nil
	}
	return id.SigningKey(publicKeyBase64(server)), time.Now().Add(24 * time.Hour), nil
}

func sk(s string) *string { return &s }

// testRoom builds a room event by event, the way a homeserver would: each
// new event's prev_events is the previous event and its auth_events are
// chosen from the current state with auth.SelectAuthEvents.
type testRoom struct {
	t  testing.TB
	rv id.RoomVersion
	// spec is the spec version whose rules rv follows, for mautrix.
	spec   id.RoomVersion
	roomID id.RoomID
	create *pdu.PDU
	events map[id.EventID]*pdu.PDU
	state  map[pdu.StateKey]*pdu.PDU
	last   id.EventID
	depth  int64
	n      int
}

// defaultCreateContent is the content of alice's m.room.create; extra is
// spliced into it (",\"m.federate\":false").
func defaultCreateContent(rv id.RoomVersion, extra string) string {
	var fields []string
	if roomversion.SpecVersion(rv).CreatorInContent() {
		fields = append(fields, fmt.Sprintf(`"creator":%q`, alice))
	}
	if rv != id.RoomV1 {
		fields = append(fields, fmt.Sprintf(`"room_version":%q`, rv))
	}
	return "{" + strings.Join(fields, ",") + extra + "}"
}

// newBareRoom returns a room holding only an m.room.create event from
// sender with the given content.
func newBareRoom(t testing.TB, rv id.RoomVersion, sender id.UserID, createContent string) *testRoom {
	t.Helper()
	spec := roomversion.SpecVersion(rv)
	r := &testRoom{
		t:      t,
		rv:     rv,
		spec:   spec,
		events: make(map[id.EventID]*pdu.PDU),
		state:  make(map[pdu.StateKey]*pdu.PDU),
	}
	create := &pdu.PDU{
		Type:           "m.room.create",
		StateKey:       sk(""),
		Sender:         sender,
		Content:        jsontext.Value(createContent),
		Depth:          1,
		OriginServerTS: 1_700_000_000_000,
		AuthEvents:     []id.EventID{},
		PrevEvents:     []id.EventID{},
	}
	if !spec.RoomIDIsCreateEventID() {
		// Rooms with different create events get different IDs.
		sum := sha256.Sum256([]byte(createContent))
		create.RoomID = id.RoomID(fmt.Sprintf("!%x:%s", sum[:6], sender.Homeserver()))
	}
	r.seal(create)
	if spec.RoomIDIsCreateEventID() {
		r.roomID = id.RoomID("!" + create.InternalMeta.EventID[1:])
	} else {
		r.roomID = create.RoomID
	}
	r.create = create
	r.depth = 1
	if err := r.check(create); err != nil {
		t.Fatalf("m.room.create: %v", err)
	}
	r.apply(create)
	return r
}

// newRoom returns alice's public room: alice, mod and bob joined; power
// levels giving alice 100 (v12: alice is creator and unlisted), mod and
// mod2 50; m.room.name and m.room.power_levels need 50, m.room.tombstone 100.
func newRoom(t testing.TB, rv id.RoomVersion) *testRoom {
	return newRoomCreate(t, rv, "")
}

// newRoomCreate is newRoom with extra fields in the create content.
func newRoomCreate(t testing.TB, rv id.RoomVersion, extra string) *testRoom {
	t.Helper()
	r := newBareRoom(t, rv, alice, defaultCreateContent(rv, extra))
	r.join(alice)
	users := `"@mod:b.test":50,"@mod2:b.test":50`
	if !roomversion.SpecVersion(rv).PrivilegedRoomCreators() {
		users = `"@alice:a.test":100,` + users
	}
	r.send(alice, "m.room.power_levels", sk(""), `{"users":{`+users+`},"users_default":0,`+
		`"events":{"m.room.name":50,"m.room.power_levels":50,"m.room.tombstone":100},"events_default":0,`+
		`"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0,"notifications":{"room":50}}`)
	r.setJoinRule(`{"join_rule":"public"}`)
	r.join(mod)
	r.join(bob)
	return r
}

// seal gives evt its ID: the reference hash from v3, "$n:server" before.
// Events that canonical JSON cannot encode (floats and integers beyond 2^53
// from v6) have no reference hash and get a made-up ID: the event format
// checks drop them before authorization, but the rules must still hold.
func (r *testRoom) seal(evt *pdu.PDU) {
	r.t.Helper()
	r.n++
	if r.spec.EventIDFormat() == id.EventIDFormatCustom {
		evt.InternalMeta.EventID = id.EventID(fmt.Sprintf("$%d:%s", r.n, evt.Sender.Homeserver()))
		return
	}
	evtID, err := evt.GetEventID(r.spec)
	if err != nil {
		evtID = id.EventID(fmt.Sprintf("$unhashable%d", r.n))
	}
	evt.InternalMeta.EventID = evtID
}

func (r *testRoom) lookup(evtType, stateKey string) *pdu.PDU {
	return r.state[pdu.StateKey{Type: evtType, StateKey: stateKey}]
}

func (r *testRoom) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, len(ids))
	for i, evtID := range ids {
		out[i] = r.events[evtID]
	}
	return out, nil
}

// draft builds an event on top of the current state without applying it.
func (r *testRoom) draft(sender id.UserID, evtType string, stateKey *string, content string) *pdu.PDU {
	r.t.Helper()
	evt := &pdu.PDU{
		Type:           evtType,
		StateKey:       stateKey,
		Sender:         sender,
		RoomID:         r.roomID,
		Content:        jsontext.Value(content),
		Depth:          r.depth + 1,
		OriginServerTS: 1_700_000_000_000 + r.depth + 1,
		PrevEvents:     []id.EventID{r.last},
		AuthEvents:     []id.EventID{},
	}
	for _, ae := range auth.SelectAuthEvents(r.rv, evt, r.lookup) {
		evt.AuthEvents = append(evt.AuthEvents, ae.InternalMeta.EventID)
	}
	r.seal(evt)
	return evt
}

// send builds an event and applies it; it must be allowed.
func (r *testRoom) send(sender id.UserID, evtType string, stateKey *string, content string) *pdu.PDU {
	r.t.Helper()
	evt := r.draft(sender, evtType, stateKey, content)
	if err := r.check(evt); err != nil {
		r.t.Fatalf("setting up room: %s from %s: %v", evtType, sender, err)
	}
	r.apply(evt)
	return evt
}

func (r *testRoom) apply(evt *pdu.PDU) {
	r.events[evt.InternalMeta.EventID] = evt
	if evt.StateKey != nil {
		r.state[pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}] = evt
	}
	r.last = evt.InternalMeta.EventID
	r.depth = evt.Depth
}

func (r *testRoom) join(user id.UserID) *pdu.PDU {
	return r.send(user, "m.room.member", sk(user.String()), `{"membership":"join"}`)
}

func (r *testRoom) membership(sender, target id.UserID, membership string) *pdu.PDU {
	return r.send(sender, "m.room.member", sk(target.String()), fmt.Sprintf(`{"membership":%q}`, membership))
}

func (r *testRoom) setJoinRule(content string) {
	r.send(alice, "m.room.join_rules", sk(""), content)
}

// plEdit changes one field of the power levels content: path elements are
// keys (user IDs need no escaping); raw "" deletes the field.
type plEdit struct {
	path []string
	raw  string
}

func set(raw string, path ...string) plEdit { return plEdit{path: path, raw: raw} }
func del(path ...string) plEdit             { return plEdit{path: path} }

// powerLevels returns the current power levels content with edits applied.
func (r *testRoom) powerLevels(edits ...plEdit) string {
	r.t.Helper()
	content := []byte(r.lookup("m.room.power_levels", "").Content)
	var err error
	for _, e := range edits {
		if e.raw == "" {
			content, err = sjson.DeleteBytes(content, exgjson.Path(e.path...))
		} else {
			content, err = sjson.SetRawBytes(content, exgjson.Path(e.path...), []byte(e.raw))
		}
		if err != nil {
			r.t.Fatalf("editing power levels: %v", err)
		}
	}
	return string(content)
}

// setPowerLevels makes alice send power levels with the edits applied.
func (r *testRoom) setPowerLevels(edits ...plEdit) {
	r.send(alice, "m.room.power_levels", sk(""), r.powerLevels(edits...))
}

// sign adds server's signature to evt.
func (r *testRoom) sign(evt *pdu.PDU, server string) {
	r.t.Helper()
	if err := evt.Sign(r.spec, server, "ed25519:1", serverKey(server)); err != nil {
		r.t.Fatalf("signing: %v", err)
	}
}

// check authorizes evt both ways: with Allowed against the current state and
// with CheckAuthEvents against its auth_events (built from the same state).
// The two must agree.
func (r *testRoom) check(evt *pdu.PDU) error {
	r.t.Helper()
	selected := auth.SelectAuthEvents(r.rv, evt, r.lookup)
	errState := auth.Allowed(r.rv, evt, r.create, selected, getKey)
	errOwn := auth.CheckAuthEvents(r.rv, evt, r.getEvents, getKey)
	if stepOf(errState) != stepOf(errOwn) {
		r.t.Errorf("Allowed says %q (%v), CheckAuthEvents says %q (%v)", stepOf(errState), errState, stepOf(errOwn), errOwn)
	}
	return errState
}

// stepOf summarises an authorization result: "" for allowed, the rule number
// for an *auth.AuthError, "error" for anything else.
func stepOf(err error) string {
	var ae *auth.AuthError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ae):
		return ae.Step
	default:
		return "error"
	}
}

// thirdPartyInvite returns the third_party_invite content of an invite for
// mxid with token, signed by the identity server id.test.
func thirdPartyInvite(t testing.TB, mxid id.UserID, token string) string {
	t.Helper()
	signed := fmt.Sprintf(`{"mxid":%q,"token":%q}`, mxid, token)
	canonical, err := canonicaljson.CanonicalJSON([]byte(signed))
	if err != nil {
		t.Fatal(err)
	}
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(serverKey("id.test"), canonical))
	out, err := sjson.SetRaw(signed, "signatures", fmt.Sprintf(`{"id.test":{"ed25519:0":%q}}`, sig))
	if err != nil {
		t.Fatal(err)
	}
	return `{"display_name":"c...@c.test","signed":` + out + `}`
}

// thirdPartyInviteEvent is the content of an m.room.third_party_invite with
// id.test's key as public_key, in public_keys, or both.
func thirdPartyInviteEvent(single, list bool) string {
	key := publicKeyBase64("id.test")
	content := `{"display_name":"c...@c.test","key_validity_url":"https://id.test/isvalid"`
	if single {
		content += fmt.Sprintf(`,"public_key":%q`, key)
	}
	if list {
		content += fmt.Sprintf(`,"public_keys":[{"public_key":%q,"key_validity_url":"https://id.test/isvalid"}]`, key)
	}
	return content + "}"
}
