package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/auth"
	"hearth/roomserver/events"
)

// roomState is what the room, message and directory endpoints keep between
// requests. It is made by registerRoomRoutes.
type roomState struct {
	rs        *roomserver.Roomserver
	txns      *txnCache
	relations *relationIndexer
	upgrades  keyedMutex
}

// roomErr maps an error of the room engine to a Matrix error (Client-Server API,
// "Standard error response"): events that fail the auth rules are 403 M_FORBIDDEN
// (400 M_BAD_JSON for a malformed MSC3757 owned state key),
// unknown rooms and events 404 M_NOT_FOUND, malformed events 400 M_BAD_JSON (413
// M_TOO_LARGE when too big), unknown room versions M_UNSUPPORTED_ROOM_VERSION.
func roomErr(err error) error {
	if err == nil {
		return nil
	}
	var me *httputil.Error
	if errors.As(err, &me) {
		return me
	}
	var na *roomserver.NotAllowedError
	if errors.As(err, &na) {
		if errors.Is(err, auth.ErrInternal) {
			return internalErr(err)
		}
		var ae *auth.AuthError
		if errors.As(err, &ae) {
			if errors.Is(err, auth.ErrMalformedStateKey) {
				// MSC3757: a malformed owned state key is bad input, 400 as in Synapse.
				return httputil.BadJSON("State key neither equals a valid user ID, nor starts with one plus an underscore")
			}
			return httputil.Forbidden("You are not allowed to do that in this room: %s", ae.Rule)
		}
		return httputil.Forbidden("You are not allowed to do that in this room")
	}
	switch {
	case errors.Is(err, roomserver.ErrRoomNotFound):
		return httputil.NotFound("Unknown room")
	case errors.Is(err, roomserver.ErrEventNotFound):
		return httputil.NotFound("Unknown event")
	case errors.Is(err, roomserver.ErrUnsupportedRoomVersion), errors.Is(err, events.ErrUnknownRoomVersion):
		return httputil.UnsupportedRoomV("Unsupported room version")
	}
	var be *roomserver.BadEventError
	if errors.As(err, &be) {
		switch events.Errcode(err) {
		case "M_TOO_LARGE":
			return httputil.TooLarge("The event is too large: %v", be.Err)
		case "M_NOT_JSON":
			return httputil.NotJSON("The event is not valid JSON: %v", be.Err)
		default:
			return httputil.BadJSON("The event is not valid: %v", be.Err)
		}
	}
	return internalErr(err)
}

// errFederationUnavailable answers requests that need another server while this
// one has no federation.
func errFederationUnavailable(what string) error {
	return httputil.Unrecognized("%s needs federation with other servers, which is not available on this server", what)
}

// memberKey is the state key of a user's m.room.member event.
func memberKey(u id.UserID) pdu.StateKey {
	return pdu.StateKey{Type: "m.room.member", StateKey: string(u)}
}

var (
	keyCreate     = pdu.StateKey{Type: "m.room.create"}
	keyHistory    = pdu.StateKey{Type: "m.room.history_visibility"}
	keyJoinRules  = pdu.StateKey{Type: "m.room.join_rules"}
	keyGuest      = pdu.StateKey{Type: "m.room.guest_access"}
	keyName       = pdu.StateKey{Type: "m.room.name"}
	keyTopic      = pdu.StateKey{Type: "m.room.topic"}
	keyAvatar     = pdu.StateKey{Type: "m.room.avatar"}
	keyCanonical  = pdu.StateKey{Type: "m.room.canonical_alias"}
	keyPower      = pdu.StateKey{Type: "m.room.power_levels"}
	keyEncryption = pdu.StateKey{Type: "m.room.encryption"}
)

// membershipOf is the membership in a member event ("leave" for none).
func membershipOf(e *roomserver.StoredEvent) string {
	if e == nil {
		return "leave"
	}
	if m := gjson.GetBytes(e.Content(), "membership"); m.Type == gjson.String {
		return m.Str
	}
	return "leave"
}

// contentString returns a string member of an event's content ("" if absent).
func contentString(e *roomserver.StoredEvent, key string) string {
	if e == nil {
		return ""
	}
	if v := gjson.GetBytes(e.Content(), key); v.Type == gjson.String {
		return v.Str
	}
	return ""
}

// viewer is who events are written for: transaction IDs go only to the device
// that sent the event.
type viewer struct {
	userID    id.UserID
	deviceID  id.DeviceID
	localpart string
}

func viewerOf(d *Device) viewer {
	return viewer{userID: d.UserID, deviceID: d.DeviceID, localpart: d.Localpart}
}

// EventFormat says how ClientEvents writes events.
type EventFormat struct {
	// OmitRoomID leaves room_id out, as in the per-room sections of /sync.
	OmitRoomID bool
	// Bundle adds bundled aggregations of child events (unsigned."m.relations").
	Bundle bool
}

// ClientEvents writes events in the client format for the given user and device:
// redacted events in their redacted form with unsigned.redacted_because, and
// unsigned age, membership (the user's, at the event), transaction_id (to the
// device that sent the event only), prev_content/prev_sender/replaces_state for
// state events and, when asked, bundled aggregations. The caller has already
// applied history visibility (VisibleEvents).
func (a *API) ClientEvents(ctx context.Context, userID id.UserID, deviceID id.DeviceID, evs []*roomserver.StoredEvent, f EventFormat) ([]json.RawMessage, error) {
	lp, _, _ := userID.ParseAndValidateRelaxed()
	w, err := a.newEventWriter(ctx, viewer{userID: userID, deviceID: deviceID, localpart: lp}, evs, f)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = w.append(nil, e)
	}
	return out, nil
}

// eventWriter writes a batch of events for one viewer, with what it needs
// looked up once for the whole batch.
type eventWriter struct {
	v          viewer
	f          EventFormat
	now        int64
	redactions map[id.EventID]*roomserver.StoredEvent
	txns       map[id.EventID]string
	prev       map[int64]*roomserver.StoredEvent // by event NID: the replaced state event
	prevSeen   map[int64]bool                    // whether the viewer may see prev's content
	membership map[int64]string                  // by snapshot NID: the viewer's membership
	bundles    map[id.EventID][]byte
	scratch    []byte
}

func (a *API) newEventWriter(ctx context.Context, v viewer, evs []*roomserver.StoredEvent, f EventFormat) (*eventWriter, error) {
	return a.newEventWriterAt(ctx, v, evs, f, 1)
}

// newEventWriterAt is newEventWriter for events inside bundled aggregations at
// the given nesting depth.
func (a *API) newEventWriterAt(ctx context.Context, v viewer, evs []*roomserver.StoredEvent, f EventFormat, depth int) (*eventWriter, error) {
	rs := a.opts.Roomserver
	w := &eventWriter{v: v, f: f, now: nowMS()}
	if len(evs) == 0 {
		return w, nil
	}
	var redactionIDs []id.EventID
	var own []*roomserver.StoredEvent
	var stateEvs []*roomserver.StoredEvent
	snaps := make([]int64, 0, 4)
	var lastSnap int64 = -1
	for _, e := range evs {
		if e.RedactedBy != "" {
			redactionIDs = append(redactionIDs, e.RedactedBy)
		}
		if e.Sender() == v.userID && v.deviceID != "" {
			own = append(own, e)
		}
		if e.IsState() {
			stateEvs = append(stateEvs, e)
		}
		if e.StateAfter != 0 && e.StateAfter != lastSnap {
			snaps = append(snaps, e.StateAfter)
			lastSnap = e.StateAfter
		}
	}
	if len(redactionIDs) > 0 {
		reds, err := rs.Events(ctx, redactionIDs)
		if err != nil {
			return nil, err
		}
		w.redactions = make(map[id.EventID]*roomserver.StoredEvent, len(reds))
		for _, r := range reds {
			w.redactions[r.ID()] = r
		}
	}
	if len(own) > 0 {
		txns, err := a.transactionIDs(ctx, v.userID, v.deviceID, own)
		if err != nil {
			return nil, err
		}
		w.txns = txns
	}
	if len(stateEvs) > 0 {
		prev, err := rs.ReplacedStateEvents(ctx, stateEvs)
		if err != nil {
			return nil, err
		}
		w.prev = prev
		if len(prev) > 0 {
			list := make([]*roomserver.StoredEvent, 0, len(prev))
			for _, p := range prev {
				list = append(list, p)
			}
			seen, err := a.visibility(ctx, v.userID, list)
			if err != nil {
				return nil, err
			}
			w.prevSeen = make(map[int64]bool, len(list))
			for i, p := range list {
				// The viewer's own earlier membership is theirs to see even
				// where history is not: an invite to a room of another
				// server, say, which this server holds only as an outlier
				// of the state it joined with (its is_direct matters to
				// clients).
				w.prevSeen[p.NID] = seen[i].visible || ownMemberEvent(p, v.userID)
			}
		}
	}
	if len(snaps) > 0 {
		states, err := rs.SnapshotStateEvents(ctx, snaps, []pdu.StateKey{memberKey(v.userID)})
		if err != nil {
			return nil, err
		}
		w.membership = make(map[int64]string, len(states))
		for nid, row := range states {
			w.membership[nid] = membershipOf(row[0])
		}
	}
	if f.Bundle {
		b, err := a.bundledAggregationsAt(ctx, v, evs, depth)
		if err != nil {
			return nil, err
		}
		w.bundles = b
	}
	return w, nil
}

// append writes one event of the batch.
func (w *eventWriter) append(dst []byte, e *roomserver.StoredEvent) []byte {
	ev := e.Event
	if e.RedactedBy != "" {
		ev = ev.Redacted()
	}
	u := w.scratch[:0]
	u = append(u, `{"age":`...)
	u = strconv.AppendInt(u, w.now-e.OriginServerTS(), 10)
	if m, ok := w.membership[e.StateAfter]; ok {
		u = append(u, `,"membership":`...)
		u = appendJSONString(u, m)
	}
	if p := w.prev[e.NID]; p != nil {
		if w.prevSeen[p.NID] {
			pe := p.Event
			if p.RedactedBy != "" {
				pe = pe.Redacted()
			}
			u = append(u, `,"prev_content":`...)
			u = append(u, pe.Content()...)
			u = append(u, `,"prev_sender":`...)
			u = appendJSONString(u, string(p.Sender()))
		}
		u = append(u, `,"replaces_state":`...)
		u = appendJSONString(u, string(p.ID()))
	}
	if e.RedactedBy != "" {
		if red := w.redactions[e.RedactedBy]; red != nil {
			u = append(u, `,"redacted_because":`...)
			ru := strconv.AppendInt([]byte(`{"age":`), w.now-red.OriginServerTS(), 10)
			ru = append(ru, '}')
			u = red.AppendClientEvent(u, events.ClientOptions{OmitRoomID: w.f.OmitRoomID, Unsigned: ru})
		}
	}
	if t, ok := w.txns[e.ID()]; ok {
		u = append(u, `,"transaction_id":`...)
		u = appendJSONString(u, t)
	}
	if b := w.bundles[e.ID()]; b != nil {
		u = append(u, `,"m.relations":`...)
		u = append(u, b...)
	}
	u = append(u, '}')
	w.scratch = u
	return ev.AppendClientEvent(dst, events.ClientOptions{OmitRoomID: w.f.OmitRoomID, Unsigned: u})
}

// appendArray writes events as a JSON array.
func (w *eventWriter) appendArray(dst []byte, evs []*roomserver.StoredEvent) []byte {
	dst = append(dst, '[')
	for i, e := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = w.append(dst, e)
	}
	return append(dst, ']')
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// writeJSON writes an already encoded 200 response.
func writeJSON(w http.ResponseWriter, b []byte) { httputil.WriteJSONBytes(w, http.StatusOK, b) }

// transactionIDs returns the transaction IDs the device sent the given events
// (its user's) with. Events sent since this process started are answered from
// memory; only older ones are looked up in room_txns.
func (a *API) transactionIDs(ctx context.Context, userID id.UserID, deviceID id.DeviceID, evs []*roomserver.StoredEvent) (map[id.EventID]string, error) {
	out := make(map[id.EventID]string)
	var eventIDs []id.EventID
	if a.rooms != nil {
		eventIDs = a.rooms.txns.lookupEvents(ctx, userID, deviceID, evs, out)
	} else {
		for _, e := range evs {
			eventIDs = append(eventIDs, e.ID())
		}
	}
	for len(eventIDs) > 0 {
		batch := eventIDs[:min(len(eventIDs), 400)]
		eventIDs = eventIDs[len(batch):]
		args := make([]any, 0, len(batch)+2)
		args = append(args, string(userID), string(deviceID))
		q := make([]byte, 0, 128+len(batch)*5)
		q = append(q, `SELECT event_id, txn_id FROM room_txns WHERE user_id = $1 AND device_id = $2 AND event_id IN (`...)
		for i, e := range batch {
			if i > 0 {
				q = append(q, ',')
			}
			args = append(args, string(e))
			q = append(q, '$')
			q = strconv.AppendInt(q, int64(len(args)), 10)
		}
		q = append(q, ')')
		rows, err := a.db.Query(ctx, string(q), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var eid, txn string
			if err := rows.Scan(&eid, &txn); err != nil {
				rows.Close()
				return nil, err
			}
			out[id.EventID(eid)] = txn
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
