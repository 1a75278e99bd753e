package events

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// ProtoEvent is a local event before it is hashed and signed.
type ProtoEvent struct {
	Type     string
	StateKey *string
	Sender   id.UserID
	// RoomID must be empty for the m.room.create event of a room v12+ room,
	// whose room ID is derived from the event (see RoomIDFromCreateEvent).
	RoomID id.RoomID
	// Content is a JSON object; nil means {}. It is canonicalised, and must be
	// canonical-JSON clean in every room version.
	Content    []byte
	PrevEvents []id.EventID
	AuthEvents []id.EventID
	// Depth above the room version's maximum is set to the maximum, as the
	// PDU schema requires.
	Depth int64
	// Redacts is the target of an m.room.redaction event. It is written to the
	// top level up to room v10 and to content.redacts from v11.
	Redacts *id.EventID
	// OriginServerTS in milliseconds; zero means now.
	OriginServerTS int64
	// Unsigned is an optional JSON object sent with the event but not signed.
	Unsigned []byte
	// ReferenceHashes is needed for room v1/v2 only, where prev_events and
	// auth_events cite each event as [event ID, {"sha256": reference hash}]:
	// it must hold Event.ReferenceHash of every event in PrevEvents and
	// AuthEvents.
	ReferenceHashes map[id.EventID][32]byte
}

// Build turns a ProtoEvent into a signed event of the given room version:
// it checks the fields, writes the federation JSON, adds the content hash,
// signs the redacted event with key as origin (Server-Server API, "Adding
// hashes and signatures to outgoing events") and computes the event ID. Room
// v1/v2 events get a random "$opaque:origin" ID. The sender must belong to
// origin.
func Build(roomVersion id.RoomVersion, proto ProtoEvent, origin string, keyID id.KeyID, key ed25519.PrivateKey) (*Event, error) {
	ev, err := build(roomVersion, proto, origin, keyID, key)
	if err != nil {
		return nil, fmt.Errorf("building %s event: %w", proto.Type, err)
	}
	return ev, nil
}

func build(roomVersion id.RoomVersion, proto ProtoEvent, origin string, keyID id.KeyID, key ed25519.PrivateKey) (*Event, error) {
	v, ok := roomversion.Lookup(roomVersion)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownRoomVersion, roomVersion)
	}
	if err := checkSigningKey(origin, keyID, key); err != nil {
		return nil, err
	}

	// Strings, with the strict 255-byte limits in every room version.
	if proto.Type == "" {
		return nil, badJSON("missing type")
	}
	typeJSON, err := buildString("type", proto.Type, true)
	if err != nil {
		return nil, err
	}
	if !validUserID(string(proto.Sender)) {
		return nil, badJSON("sender %q is not a valid user ID", proto.Sender)
	}
	if domainOf(string(proto.Sender)) != origin {
		return nil, badJSON("sender %s does not belong to %s", proto.Sender, origin)
	}
	senderJSON, err := buildString("sender", string(proto.Sender), true)
	if err != nil {
		return nil, err
	}
	var stateKeyJSON []byte
	if proto.StateKey != nil {
		if stateKeyJSON, err = buildString("state_key", *proto.StateKey, true); err != nil {
			return nil, err
		}
	}
	isCreate := proto.Type == typeCreate
	var roomIDJSON []byte
	if isCreate && v.RoomIDIsCreateEventID {
		if proto.RoomID != "" {
			return nil, badJSON("room version %s create events have no room_id", v.ID)
		}
	} else {
		if !validRoomID(v, string(proto.RoomID)) {
			return nil, badJSON("room_id %q is not a valid room ID for room version %s", proto.RoomID, v.ID)
		}
		if roomIDJSON, err = buildString("room_id", string(proto.RoomID), true); err != nil {
			return nil, err
		}
	}

	// Content, with the redaction target placed per room version.
	content := proto.Content
	if len(content) == 0 {
		content = []byte("{}")
	}
	if content, err = canonicalize(nil, content, numStrict, MaxEventSize); err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	if !isObject(content) {
		return nil, badJSON("content is not an object")
	}
	var redactsJSON []byte
	switch {
	case proto.Redacts != nil:
		if proto.Type != typeRedaction {
			return nil, badJSON("only %s events redact", typeRedaction)
		}
		if !validRedactsTarget(string(*proto.Redacts)) {
			return nil, badJSON("redacts %q is not an event ID", *proto.Redacts)
		}
		target, _ := appendJSONString(nil, string(*proto.Redacts))
		if !v.RedactsInContent {
			redactsJSON = target
			break
		}
		if existing := lookupMember(content, "redacts"); existing != nil {
			if s, ok := decodeString(existing); !ok || s != string(*proto.Redacts) {
				return nil, badJSON("content.redacts does not match Redacts")
			}
			break
		}
		withTarget := append([]byte(`{"redacts":`), target...)
		if len(content) > 2 {
			withTarget = append(withTarget, ',')
		}
		withTarget = append(withTarget, content[1:]...)
		if content, err = canonicalize(nil, withTarget, numStrict, MaxEventSize); err != nil {
			return nil, fmt.Errorf("content: %w", err)
		}
	case proto.Type == typeRedaction:
		if !v.RedactsInContent || !isString(lookupMember(content, "redacts")) {
			return nil, badJSON("a redaction needs the ID of the event it redacts")
		}
	}
	if isCreate && proto.StateKey != nil && *proto.StateKey == "" {
		// A create event without room_version makes a version 1 room.
		inContent := "1"
		if raw := lookupMember(content, "room_version"); raw != nil {
			s, ok := decodeString(raw)
			if !ok {
				return nil, badJSON("content.room_version is not a string")
			}
			inContent = s
		}
		if inContent != string(v.ID) {
			return nil, badJSON("content.room_version %q does not match room version %s", inContent, v.ID)
		}
	}

	// DAG position.
	if len(proto.PrevEvents) > MaxPrevEvents {
		return nil, badJSON("%d prev_events, at most %d allowed", len(proto.PrevEvents), MaxPrevEvents)
	}
	if len(proto.AuthEvents) > MaxAuthEvents {
		return nil, badJSON("%d auth_events, at most %d allowed", len(proto.AuthEvents), MaxAuthEvents)
	}
	prevJSON, err := buildReferences(v, "prev_events", proto.PrevEvents, proto.ReferenceHashes)
	if err != nil {
		return nil, err
	}
	authJSON, err := buildReferences(v, "auth_events", proto.AuthEvents, proto.ReferenceHashes)
	if err != nil {
		return nil, err
	}
	if proto.Depth < 0 {
		return nil, badJSON("depth is negative")
	}
	depth := min(proto.Depth, v.MaxDepth())
	ts := proto.OriginServerTS
	if ts == 0 {
		ts = time.Now().UnixMilli()
	}
	var unsigned []byte
	if len(proto.Unsigned) > 0 {
		if unsigned, err = canonicalize(nil, proto.Unsigned, numStrict, MaxEventSize); err != nil {
			return nil, fmt.Errorf("unsigned: %w", err)
		}
		if !isObject(unsigned) {
			return nil, badJSON("unsigned is not an object")
		}
	}
	var eventIDJSON []byte
	if v.IsOriginBasedEventIDs() {
		eventIDJSON, _ = appendJSONString(nil, "$"+rand.Text()+":"+origin)
	}

	// The members in sorted key order; hashes, signatures and unsigned are
	// added in later stages.
	write := func(dst, hashes, sigs, unsigned []byte) []byte {
		dst = append(dst, `{"auth_events":`...)
		dst = append(dst, authJSON...)
		dst = append(dst, `,"content":`...)
		dst = append(dst, content...)
		dst = append(dst, `,"depth":`...)
		dst = strconv.AppendInt(dst, depth, 10)
		if eventIDJSON != nil {
			dst = append(dst, `,"event_id":`...)
			dst = append(dst, eventIDJSON...)
		}
		if hashes != nil {
			dst = append(dst, `,"hashes":`...)
			dst = append(dst, hashes...)
		}
		dst = append(dst, `,"origin_server_ts":`...)
		dst = strconv.AppendInt(dst, ts, 10)
		dst = append(dst, `,"prev_events":`...)
		dst = append(dst, prevJSON...)
		if redactsJSON != nil {
			dst = append(dst, `,"redacts":`...)
			dst = append(dst, redactsJSON...)
		}
		if roomIDJSON != nil {
			dst = append(dst, `,"room_id":`...)
			dst = append(dst, roomIDJSON...)
		}
		dst = append(dst, `,"sender":`...)
		dst = append(dst, senderJSON...)
		if sigs != nil {
			dst = append(dst, `,"signatures":`...)
			dst = append(dst, sigs...)
		}
		if stateKeyJSON != nil {
			dst = append(dst, `,"state_key":`...)
			dst = append(dst, stateKeyJSON...)
		}
		dst = append(dst, `,"type":`...)
		dst = append(dst, typeJSON...)
		if unsigned != nil {
			dst = append(dst, `,"unsigned":`...)
			dst = append(dst, unsigned...)
		}
		return append(dst, '}')
	}

	b := getBuf()
	defer putBuf(b)
	*b = write((*b)[:0], nil, nil, nil)
	hash := sha256.Sum256(*b)
	hashesJSON := make([]byte, 0, 56)
	hashesJSON = append(hashesJSON, `{"sha256":"`...)
	hashesJSON = base64.RawStdEncoding.AppendEncode(hashesJSON, hash[:])
	hashesJSON = append(hashesJSON, `"}`...)

	withHashes := write(nil, hashesJSON, nil, nil)
	*b = appendRedactedWithType((*b)[:0], v.Redaction, withHashes, typeJSON, true)
	ref := sha256.Sum256(*b)
	sig := ed25519.Sign(key, *b)
	sigs := make([]byte, 0, 128)
	sigs = append(sigs, '{')
	sigs, _ = appendJSONString(sigs, origin)
	sigs = append(sigs, ':', '{')
	sigs, _ = appendJSONString(sigs, string(keyID))
	sigs = append(sigs, ':', '"')
	sigs = base64.RawStdEncoding.AppendEncode(sigs, sig)
	sigs = append(sigs, '"', '}', '}')

	final := write(make([]byte, 0, len(withHashes)+len(sigs)+len(unsigned)+32), hashesJSON, sigs, unsigned)
	if len(final) > MaxEventSize {
		return nil, tooLarge("event is %d bytes, more than %d", len(final), MaxEventSize)
	}
	var eventID id.EventID
	if !v.IsOriginBasedEventIDs() {
		eventID = hashEventID(v, ref)
	}
	return eventFromCanonical(v, final, eventID, &ref)
}

// buildString encodes a string field, applying the 255-byte limit.
func buildString(field, s string, limited bool) ([]byte, error) {
	if limited && len(s) > maxIDBytes {
		return nil, tooLarge("%s is longer than %d bytes", field, maxIDBytes)
	}
	out, ok := appendJSONString(make([]byte, 0, len(s)+2), s)
	if !ok {
		return nil, badJSON("%s is not valid UTF-8", field)
	}
	return out, nil
}

// buildReferences writes prev_events or auth_events in the room version's
// format.
func buildReferences(v *roomversion.Version, field string, ids []id.EventID, refs map[id.EventID][32]byte) ([]byte, error) {
	out := make([]byte, 0, 2+len(ids)*48)
	out = append(out, '[')
	for i, eventID := range ids {
		if !validEventID(v, string(eventID)) {
			return nil, badJSON("%s holds an invalid event ID %q", field, eventID)
		}
		if i > 0 {
			out = append(out, ',')
		}
		if !v.IsOriginBasedEventIDs() {
			out, _ = appendJSONString(out, string(eventID))
			continue
		}
		ref, ok := refs[eventID]
		if !ok {
			return nil, fmt.Errorf("%s: no reference hash given for %s (room v1/v2 need ProtoEvent.ReferenceHashes)", field, eventID)
		}
		out = append(out, '[')
		out, _ = appendJSONString(out, string(eventID))
		out = append(out, `,{"sha256":"`...)
		out = base64.RawStdEncoding.AppendEncode(out, ref[:])
		out = append(out, `"}]`...)
	}
	return append(out, ']'), nil
}
