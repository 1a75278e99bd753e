// Package events holds Hearth's room event type and everything that depends
// only on an event's bytes and its room version: parsing and checking PDUs
// received over federation, building and signing local events, event IDs and
// reference hashes, content hashes, signature checks, redaction, canonical
// JSON, and the client-format serialisation used by /sync.
//
// An Event keeps its exact federation JSON (canonical JSON, which is also
// what Hearth stores and sends) next to a parsed *pdu.PDU from mautrix, which
// the auth rules and state resolution consume. Events of every room version,
// including v1/v2 with their (event ID, hash) reference pairs, are presented
// as the same *pdu.PDU shape.
package events

import (
	"encoding/base64"
	"encoding/json/jsontext"
	"strconv"
	"strings"
	"sync"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// Limits from the spec.
const (
	// MaxEventSize is the largest an event may be in canonical JSON, with its
	// signatures (Client-Server API, "Size limits").
	MaxEventSize = 65536
	// MaxPrevEvents and MaxAuthEvents bound prev_events and auth_events (PDU
	// schemas). Build enforces them; Parse does not, as the servers that made
	// the rooms did not enforce them on every event either.
	MaxPrevEvents = 20
	MaxAuthEvents = 10
)

const (
	typeCreate     = "m.room.create"
	typeMember     = "m.room.member"
	typeRedaction  = "m.room.redaction"
	membershipJoin = "join"
	membershipInv  = "invite"
)

func init() {
	// Every *pdu.PDU made by this package carries its event ID in
	// InternalMeta.EventID. Letting mautrix use it makes PDU.GetEventID work for
	// room v1/v2 events (which mautrix cannot hash into an ID) and spares the
	// auth rules from re-hashing events. It is set once, before any use.
	pdu.UseInternalMetaForGetEventID = true
}

// Event is a room event. It is immutable once made: the slices and the *pdu.PDU
// it hands out are shared and must not be modified.
type Event struct {
	version *roomversion.Version
	id      id.EventID
	roomID  id.RoomID
	redacts id.EventID
	json    []byte
	pdu     *pdu.PDU
	refHash [32]byte
	raw     keptFields
	// formatErr is set for events in room versions without strict byte limits
	// that break the 255-byte field limits while keeping to 255 code points.
	formatErr error
}

// keptFields are the raw values an Event keeps for writing the client format
// and for later lookups, as subslices of its JSON. Missing members are nil.
type keptFields struct {
	content, originServerTS, redacts, roomID, sender, stateKey, typ, unsigned []byte
}

func (f *rawFields) kept() keptFields {
	return keptFields{
		content: f.content, originServerTS: f.originServerTS, redacts: f.redacts, roomID: f.roomID,
		sender: f.sender, stateKey: f.stateKey, typ: f.typ, unsigned: f.unsigned,
	}
}

// rawFields are the raw canonical values of top-level members, as subslices
// of the event's JSON. Missing members are nil.
type rawFields struct {
	authEvents, content, depth, eventID, hashes, originServerTS, prevEvents,
	redacts, roomID, sender, signatures, stateKey, typ, unsigned,
	sticky, prevState, origin, membership []byte
	// unknown holds the [start, end) spans of members not listed above.
	unknown [][2]int
}

// ID returns the event ID.
func (e *Event) ID() id.EventID { return e.id }

// RoomID returns the room ID. For a room v12+ m.room.create event, which has
// no room_id, it is the room ID the event establishes.
func (e *Event) RoomID() id.RoomID { return e.roomID }

// Type returns the event type.
func (e *Event) Type() string { return e.pdu.Type }

// StateKey returns the state key, or nil for a non-state event. The pointed-to
// string must not be modified.
func (e *Event) StateKey() *string { return e.pdu.StateKey }

// IsState reports whether the event is a state event (has a state_key).
func (e *Event) IsState() bool { return e.pdu.StateKey != nil }

// Sender returns the user ID of the sender.
func (e *Event) Sender() id.UserID { return e.pdu.Sender }

// Depth returns the event's depth.
func (e *Event) Depth() int64 { return e.pdu.Depth }

// OriginServerTS returns origin_server_ts, in milliseconds since the epoch.
func (e *Event) OriginServerTS() int64 { return e.pdu.OriginServerTS }

// PrevEventIDs returns the IDs in prev_events (read-only).
func (e *Event) PrevEventIDs() []id.EventID { return e.pdu.PrevEvents }

// AuthEventIDs returns the IDs in auth_events (read-only).
func (e *Event) AuthEventIDs() []id.EventID { return e.pdu.AuthEvents }

// Content returns the raw canonical JSON of content (read-only).
func (e *Event) Content() []byte { return e.raw.content }

// Unsigned returns the raw canonical JSON of the federation unsigned object
// as received or built, or nil (read-only). It is not covered by signatures:
// never pass a remote server's unsigned data on to clients unchecked.
func (e *Event) Unsigned() []byte { return e.raw.unsigned }

// Redacts returns the ID of the event an m.room.redaction event redacts: the
// top-level redacts key up to room v10, content.redacts from v11. It is empty
// for other event types and for redactions without a (string) target.
func (e *Event) Redacts() id.EventID { return e.redacts }

// JSON returns the event's federation JSON in canonical form: what is sent
// over federation and stored. Room v1/v2 events include event_id; later
// versions do not. The slice must not be modified.
func (e *Event) JSON() []byte { return e.json }

// PDU returns the parsed event in mautrix's shape, with InternalMeta.EventID
// set. For room v1/v2 events, auth_events and prev_events are plain ID lists
// (the reference hashes stay in JSON). It must not be modified.
func (e *Event) PDU() *pdu.PDU { return e.pdu }

// Version returns the room version's table entry.
func (e *Event) Version() *roomversion.Version { return e.version }

// ReferenceHash returns the SHA-256 reference hash of the event (Server-Server
// API, "Calculating the reference hash for an event"). For room v3+ it is the
// event ID decoded; room v1/v2 events cite it in other events' prev_events
// and auth_events.
func (e *Event) ReferenceHash() [32]byte { return e.refHash }

// FormatRejection is non-nil for an event that must be stored as rejected
// rather than dropped or accepted: in room versions before v11, an event whose
// sender, room_id, state_key, type or event_id is longer than 255 bytes but
// not longer than 255 code points. Such events exist in old rooms (servers
// long counted code points), so dropping them would break those rooms. The
// error wraps ErrTooLarge.
func (e *Event) FormatRejection() error { return e.formatErr }

// String returns the event ID, for logs.
func (e *Event) String() string { return string(e.id) }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 2*MaxEventSize {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// scanFields records the top-level members of a canonical event object.
func scanFields(event []byte) rawFields {
	var f rawFields
	it := newMemberIter(event)
	for {
		k, v, start, end, ok := it.next()
		if !ok {
			return f
		}
		switch string(k) {
		case `"auth_events"`:
			f.authEvents = v
		case `"content"`:
			f.content = v
		case `"depth"`:
			f.depth = v
		case `"event_id"`:
			f.eventID = v
		case `"hashes"`:
			f.hashes = v
		case `"origin_server_ts"`:
			f.originServerTS = v
		case `"prev_events"`:
			f.prevEvents = v
		case `"redacts"`:
			f.redacts = v
		case `"room_id"`:
			f.roomID = v
		case `"sender"`:
			f.sender = v
		case `"signatures"`:
			f.signatures = v
		case `"state_key"`:
			f.stateKey = v
		case `"type"`:
			f.typ = v
		case `"unsigned"`:
			f.unsigned = v
		case `"msc4354_sticky"`:
			f.sticky = v
		case `"prev_state"`:
			f.prevState = v
		case `"origin"`:
			f.origin = v
		case `"membership"`:
			f.membership = v
		default:
			f.unknown = append(f.unknown, [2]int{start, end})
		}
	}
}

// eventFromCanonical checks the fields of a canonical event object against
// the room version's event format and builds the Event. id and ref, when
// given (non-empty id), are trusted instead of computed.
func eventFromCanonical(v *roomversion.Version, event []byte, knownID id.EventID, knownRef *[32]byte) (*Event, error) {
	if !isObject(event) {
		return nil, badJSON("event is not a JSON object")
	}
	f := scanFields(event)
	e := &Event{version: v, json: event, raw: f.kept()}
	p := &pdu.PDU{}
	e.pdu = p

	// Required strings and their size limits.
	var err error
	if p.Type, err = requiredString(f.typ, "type"); err != nil {
		return nil, err
	}
	sender, err := requiredString(f.sender, "sender")
	if err != nil {
		return nil, err
	}
	if err := e.checkSize("sender", sender); err != nil {
		return nil, err
	}
	if !validUserID(sender) {
		return nil, badJSON("sender %q is not a valid user ID", sender)
	}
	p.Sender = id.UserID(sender)
	if err := e.checkSize("type", p.Type); err != nil {
		return nil, err
	}
	if f.stateKey != nil {
		sk, ok := decodeString(f.stateKey)
		if !ok {
			return nil, badJSON("state_key is not a string")
		}
		if err := e.checkSize("state_key", sk); err != nil {
			return nil, err
		}
		p.StateKey = &sk
	}
	isCreate := p.Type == typeCreate
	switch {
	case f.roomID != nil:
		roomID, ok := decodeString(f.roomID)
		if !ok {
			return nil, badJSON("room_id is not a string")
		}
		if err := e.checkSize("room_id", roomID); err != nil {
			return nil, err
		}
		if !validRoomID(v, roomID) {
			return nil, badJSON("room_id %q is not a valid room ID for room version %s", roomID, v.ID)
		}
		p.RoomID = id.RoomID(roomID)
	case isCreate && v.RoomIDIsCreateEventID:
		// v12 create events have no room_id; the ID is derived below.
	default:
		return nil, badJSON("missing room_id")
	}

	if !isObject(f.content) {
		return nil, badJSON("content is missing or not an object")
	}
	p.Content = jsontext.Value(f.content)
	if p.Depth, err = requiredInt(f.depth, "depth"); err != nil {
		return nil, err
	}
	if p.Depth < 0 {
		return nil, badJSON("depth is negative")
	}
	if p.OriginServerTS, err = requiredInt(f.originServerTS, "origin_server_ts"); err != nil {
		return nil, err
	}
	if p.AuthEvents, err = parseReferences(v, f.authEvents, "auth_events"); err != nil {
		return nil, err
	}
	if p.PrevEvents, err = parseReferences(v, f.prevEvents, "prev_events"); err != nil {
		return nil, err
	}
	if p.Hashes, err = parseHashes(f.hashes); err != nil {
		return nil, err
	}
	if p.Signatures, err = parseSignatures(f.signatures); err != nil {
		return nil, err
	}
	if f.unsigned != nil {
		if !isObject(f.unsigned) {
			return nil, badJSON("unsigned is not an object")
		}
		p.Unsigned = jsontext.Value(f.unsigned)
	}
	if f.redacts != nil {
		r, ok := decodeString(f.redacts)
		if !ok {
			return nil, badJSON("redacts is not a string")
		}
		rid := id.EventID(r)
		p.Redacts = &rid
	}
	p.Sticky = jsontext.Value(f.sticky)
	p.DeprecatedPrevState = jsontext.Value(f.prevState)
	p.DeprecatedOrigin = jsontext.Value(f.origin)
	p.DeprecatedMembership = jsontext.Value(f.membership)
	if len(f.unknown) > 0 {
		p.Unknown = joinMembers(event, f.unknown)
	}

	// Event ID and reference hash.
	if v.IsOriginBasedEventIDs() {
		eventID, err := requiredString(f.eventID, "event_id")
		if err != nil {
			return nil, err
		}
		if err := e.checkSize("event_id", eventID); err != nil {
			return nil, err
		}
		if !validEventID(v, eventID) {
			return nil, badJSON("event_id %q is not a valid event ID", eventID)
		}
		e.id = id.EventID(eventID)
	} else if f.eventID != nil {
		return nil, badJSON("event_id is not part of the room version %s event format", v.ID)
	}
	switch {
	case knownRef != nil:
		e.refHash = *knownRef
	default:
		e.refHash = referenceHash(v, event, f.typ)
	}
	if !v.IsOriginBasedEventIDs() {
		if knownID != "" {
			e.id = knownID
		} else {
			e.id = hashEventID(v, e.refHash)
		}
	}
	p.InternalMeta.EventID = e.id

	e.roomID = p.RoomID
	if isCreate && v.RoomIDIsCreateEventID {
		e.roomID = id.RoomID("!" + string(e.id[1:]))
	}
	if p.Type == typeRedaction {
		e.redacts = redactsOf(v, p, f.content)
	}
	return e, nil
}

// redactsOf finds the target of a redaction event for the room version.
func redactsOf(v *roomversion.Version, p *pdu.PDU, content []byte) id.EventID {
	if v.RedactsInContent {
		if r, ok := decodeString(lookupMember(content, "redacts")); ok {
			return id.EventID(r)
		}
		return ""
	}
	if p.Redacts != nil {
		return *p.Redacts
	}
	return ""
}

// checkSize applies the 255-byte limit to one field. Over 255 code points the
// event is dropped in every room version; over 255 bytes only from v11, while
// older versions keep the event as rejected (see FormatRejection).
func (e *Event) checkSize(field, value string) error {
	switch checkFieldSize(value) {
	case sizeOverCodepoints:
		return tooLarge("%s is longer than %d code points", field, maxIDBytes)
	case sizeOverBytes:
		if e.version.StrictByteLimits {
			return tooLarge("%s is longer than %d bytes", field, maxIDBytes)
		}
		if e.formatErr == nil {
			e.formatErr = tooLarge("%s is longer than %d bytes", field, maxIDBytes)
		}
	}
	return nil
}

func requiredString(raw []byte, name string) (string, error) {
	if raw == nil {
		return "", badJSON("missing %s", name)
	}
	s, ok := decodeString(raw)
	if !ok {
		return "", badJSON("%s is not a string", name)
	}
	return s, nil
}

func requiredInt(raw []byte, name string) (int64, error) {
	if raw == nil {
		return 0, badJSON("missing %s", name)
	}
	if len(raw) == 0 || (raw[0] != '-' && !isDigit(raw[0])) {
		return 0, badJSON("%s is not an integer", name)
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, badJSON("%s is not a 64-bit integer", name)
	}
	return n, nil
}

// parseReferences reads prev_events or auth_events: a list of event IDs, or
// for room v1/v2 a list of [event ID, hashes] pairs.
func parseReferences(v *roomversion.Version, raw []byte, name string) ([]id.EventID, error) {
	if raw == nil {
		return nil, badJSON("missing %s", name)
	}
	if !isArray(raw) {
		return nil, badJSON("%s is not an array", name)
	}
	ids := []id.EventID{}
	it := newElemIter(raw)
	for {
		elem, ok := it.next()
		if !ok {
			return ids, nil
		}
		if v.IsOriginBasedEventIDs() {
			pair := newElemIter(elem)
			first, ok1 := pair.next()
			_, ok2 := pair.next()
			_, ok3 := pair.next()
			if !isArray(elem) || !ok1 || !ok2 || ok3 {
				return nil, badJSON("%s entries must be [event ID, hashes] pairs", name)
			}
			elem = first
		}
		s, ok := decodeString(elem)
		if !ok || !validEventID(v, s) {
			return nil, badJSON("%s holds an invalid event ID %s", name, elem)
		}
		ids = append(ids, id.EventID(s))
	}
}

// parseHashes reads the hashes object. A sha256 that is not valid base64
// leaves SHA256 nil, so that the content hash check fails and the event is
// redacted, rather than dropping the event.
func parseHashes(raw []byte) (*pdu.Hashes, error) {
	if !isObject(raw) {
		return nil, badJSON("hashes is missing or not an object")
	}
	h := &pdu.Hashes{}
	var unknown [][2]int
	found := false
	it := newMemberIter(raw)
	for {
		k, val, start, end, ok := it.next()
		if !ok {
			break
		}
		if keyIs(k, "sha256") {
			s, ok := decodeString(val)
			if !ok {
				return nil, badJSON("hashes.sha256 is not a string")
			}
			found = true
			h.SHA256 = decodeBase64(s)
			continue
		}
		unknown = append(unknown, [2]int{start, end})
	}
	if !found {
		return nil, badJSON("hashes.sha256 is missing")
	}
	if len(unknown) > 0 {
		h.Unknown = joinMembers(raw, unknown)
	}
	return h, nil
}

// parseSignatures reads signatures: server name → key ID → base64 signature.
func parseSignatures(raw []byte) (map[string]map[id.KeyID]string, error) {
	if !isObject(raw) {
		return nil, badJSON("signatures is missing or not an object")
	}
	sigs := make(map[string]map[id.KeyID]string, 1)
	it := newMemberIter(raw)
	for {
		k, val, _, _, ok := it.next()
		if !ok {
			return sigs, nil
		}
		server, _ := decodeString(k)
		if !isObject(val) {
			return nil, badJSON("signatures of %q is not an object", server)
		}
		byKey := make(map[id.KeyID]string, 1)
		kit := newMemberIter(val)
		for {
			kk, kv, _, _, ok := kit.next()
			if !ok {
				break
			}
			keyID, _ := decodeString(kk)
			sig, ok := decodeString(kv)
			if !ok {
				return nil, badJSON("signature %s of %q is not a string", keyID, server)
			}
			byKey[id.KeyID(keyID)] = sig
		}
		sigs[server] = byKey
	}
}

// joinMembers builds an object from member spans of a canonical object. The
// spans are in order, so the result is canonical.
func joinMembers(obj []byte, spans [][2]int) jsontext.Value {
	n := 2
	for _, s := range spans {
		n += s[1] - s[0] + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	for i, s := range spans {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, obj[s[0]:s[1]]...)
	}
	return append(out, '}')
}

// decodeBase64 decodes standard base64 with or without padding (Appendices,
// "Unpadded Base64": implementations SHOULD accept both). It returns nil for
// invalid input.
func decodeBase64(s string) []byte {
	s = strings.TrimRight(s, "=")
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

// hashEventID makes a room v3+ event ID from a reference hash.
func hashEventID(v *roomversion.Version, ref [32]byte) id.EventID {
	var buf [44]byte
	buf[0] = '$'
	if v.EventIDFormat == roomversion.EventIDBase64 {
		base64.RawStdEncoding.Encode(buf[1:], ref[:])
	} else {
		base64.RawURLEncoding.Encode(buf[1:], ref[:])
	}
	return id.EventID(buf[:])
}

// RoomIDFromCreateEvent returns the ID of the room an m.room.create event
// creates: for room v12+ "!" followed by the create event's reference hash in
// URL-safe base64 (the event ID with "!" for "$"), and before v12 the event's
// room_id. It fails for other event types.
func RoomIDFromCreateEvent(ev *Event) (id.RoomID, error) {
	if ev.Type() != typeCreate {
		return "", badJSON("event %s is a %s event, not %s", ev.ID(), ev.Type(), typeCreate)
	}
	return ev.roomID, nil
}
