package events

import (
	"encoding/base64"
	"fmt"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// Parse reads a PDU received over federation (or from a client-supplied or
// stored source that must be checked) and performs the format checks of the
// Server-Server API, "Checks performed on receipt of a PDU", step 1:
//
//   - the input is JSON (else ErrNotJSON) and, from room v6, canonical-JSON
//     clean: no floats and no integers outside [-(2^53)+1, (2^53)-1] (rooms
//     v1–v5 keep such numbers, encoded as the servers that signed them did);
//   - the event is at most MaxEventSize bytes in canonical JSON (ErrTooLarge);
//   - sender, room_id, state_key, type and (v1/v2) event_id are at most 255
//     bytes (ErrTooLarge; see Event.FormatRejection for room versions before
//     v11, where only 255 code points are a hard limit);
//   - the fields of the room version's PDU format are present with the right
//     types, and sender, room_id and the event IDs in prev_events and
//     auth_events are well-formed (ErrBadJSON).
//
// It computes the event ID (room v3+) or takes it from event_id (v1/v2). Room
// v3+ events should not contain event_id; when one does, it is removed, as some
// servers add it after signing. Signatures and the content hash are not checked
// here: see VerifySignatures and Event.CheckContentHash.
func Parse(roomVersion id.RoomVersion, raw []byte) (*Event, error) {
	v, ok := roomversion.Lookup(roomVersion)
	if !ok {
		return nil, fmt.Errorf("parsing event: %w %q", ErrUnknownRoomVersion, roomVersion)
	}
	mode := numLegacy
	if v.StrictCanonicalJSON {
		mode = numStrict
	}
	canon, err := canonicalize(make([]byte, 0, min(len(raw), MaxEventSize)), raw, mode, MaxEventSize)
	if err != nil {
		return nil, fmt.Errorf("parsing event: %w", err)
	}
	if !isObject(canon) {
		return nil, fmt.Errorf("parsing event: %w", badJSON("event is not a JSON object"))
	}
	if !v.IsOriginBasedEventIDs() {
		canon = removeMember(canon, "event_id")
	}
	ev, err := eventFromCanonical(v, canon, "", nil)
	if err != nil {
		return nil, fmt.Errorf("parsing event: %w", err)
	}
	return ev, nil
}

// removeMember returns obj without its top-level member name, reusing obj's
// storage. obj is returned as is when it has no such member.
func removeMember(obj []byte, name string) []byte {
	it := newMemberIter(obj)
	for {
		k, _, start, end, ok := it.next()
		if !ok {
			return obj
		}
		if !keyIs(k, name) {
			continue
		}
		// Take the member out with one of its commas.
		switch {
		case end < len(obj) && obj[end] == ',':
			end++
		case obj[start-1] == ',':
			start--
		}
		return append(obj[:start], obj[end:]...)
	}
}

// FromStored rebuilds an event from bytes that Event.JSON returned and the
// event's ID, as read back from Hearth's own database. It skips what Parse
// spends most of its time on — canonicalisation and hashing — so the bytes
// must be exactly what JSON returned; it still checks the fields, so a damaged
// row gives an error rather than a broken Event.
func FromStored(roomVersion id.RoomVersion, eventID id.EventID, data []byte) (*Event, error) {
	v, ok := roomversion.Lookup(roomVersion)
	if !ok {
		return nil, fmt.Errorf("loading event %s: %w %q", eventID, ErrUnknownRoomVersion, roomVersion)
	}
	if !validEventID(v, string(eventID)) {
		return nil, fmt.Errorf("loading event: %w", badJSON("%q is not a room version %s event ID", eventID, v.ID))
	}
	var (
		ev  *Event
		err error
	)
	if v.IsOriginBasedEventIDs() {
		// The reference hash is not in the ID: compute it.
		ev, err = eventFromCanonical(v, data, "", nil)
		if err == nil && ev.id != eventID {
			err = badJSON("event_id %s does not match", ev.id)
		}
	} else {
		var ref [32]byte
		enc := base64.RawURLEncoding
		if v.EventIDFormat == roomversion.EventIDBase64 {
			enc = base64.RawStdEncoding
		}
		if n, decErr := enc.Decode(ref[:], []byte(eventID[1:])); decErr != nil || n != len(ref) {
			return nil, fmt.Errorf("loading event: %w", badJSON("event ID %s is not a reference hash", eventID))
		}
		ev, err = eventFromCanonical(v, data, eventID, &ref)
	}
	if err != nil {
		return nil, fmt.Errorf("loading event %s: %w", eventID, err)
	}
	return ev, nil
}
