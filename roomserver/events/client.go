package events

import (
	"maunium.net/go/mautrix/id"
)

// ClientOptions shapes the client-format JSON of an event.
type ClientOptions struct {
	// OmitRoomID leaves room_id out, as in the per-room sections of /sync.
	OmitRoomID bool
	// Unsigned, when non-empty, is written as the event's unsigned object. The
	// caller builds it (age, prev_content, redacted_because, transaction_id,
	// membership …) and must pass a valid JSON object. The unsigned data
	// received over federation is never copied to clients.
	Unsigned []byte
}

// AppendClientEvent appends the event in the Client-Server API's ClientEvent
// format: content, event_id, origin_server_ts, redacts (redactions only),
// room_id, sender, state_key (state events only), type and unsigned. The
// values are copied from the canonical federation JSON, so this costs one
// pass of appends and no parsing.
//
// For m.room.redaction events the target is given both at the top level and
// in content.redacts, whatever the room version, for clients written before
// and after room v11 (rooms/v11, "Moving the redacts property").
func (e *Event) AppendClientEvent(dst []byte, opts ClientOptions) []byte {
	isRedaction := e.redacts != "" && e.pdu.Type == typeRedaction
	dst = append(dst, `{"content":`...)
	if isRedaction && !e.version.RedactsInContent {
		dst = appendContentWithRedacts(dst, e.raw.content, e.redacts)
	} else {
		dst = append(dst, e.raw.content...)
	}
	dst = append(dst, `,"event_id":`...)
	dst, _ = appendJSONString(dst, string(e.id))
	dst = append(dst, `,"origin_server_ts":`...)
	dst = append(dst, e.raw.originServerTS...)
	if isRedaction {
		dst = append(dst, `,"redacts":`...)
		if e.raw.redacts != nil && !e.version.RedactsInContent {
			dst = append(dst, e.raw.redacts...)
		} else {
			dst, _ = appendJSONString(dst, string(e.redacts))
		}
	}
	if !opts.OmitRoomID {
		dst = append(dst, `,"room_id":`...)
		if e.raw.roomID != nil {
			dst = append(dst, e.raw.roomID...)
		} else {
			dst, _ = appendJSONString(dst, string(e.roomID))
		}
	}
	dst = append(dst, `,"sender":`...)
	dst = append(dst, e.raw.sender...)
	if e.raw.stateKey != nil {
		dst = append(dst, `,"state_key":`...)
		dst = append(dst, e.raw.stateKey...)
	}
	dst = append(dst, `,"type":`...)
	dst = append(dst, e.raw.typ...)
	if len(opts.Unsigned) > 0 {
		dst = append(dst, `,"unsigned":`...)
		dst = append(dst, opts.Unsigned...)
	}
	return append(dst, '}')
}

// ClientEvent returns the event in client format; see AppendClientEvent.
func (e *Event) ClientEvent(opts ClientOptions) []byte {
	return e.AppendClientEvent(make([]byte, 0, len(e.raw.content)+len(opts.Unsigned)+256), opts)
}

// appendContentWithRedacts writes content with "redacts" set to target,
// replacing any redacts member it already has.
func appendContentWithRedacts(dst, content []byte, target id.EventID) []byte {
	dst = append(dst, `{"redacts":`...)
	dst, _ = appendJSONString(dst, string(target))
	it := newMemberIter(content)
	for {
		k, _, start, end, ok := it.next()
		if !ok {
			break
		}
		if keyIs(k, "redacts") {
			continue
		}
		dst = append(dst, ',')
		dst = append(dst, content[start:end]...)
	}
	return append(dst, '}')
}
