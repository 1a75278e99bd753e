package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/syncstream"
	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// Room events: sending (messages, state, redactions) and reading (single events,
// state, members, /messages, /context, /timestamp_to_event), and reports
// (Client-Server API, "Getting events for a room", "Sending events to a room",
// "Redactions", "Reporting content").
//
// Pagination tokens. /messages, /context and /relations hand out "t<depth>_<stream>"
// (syncstream.TopoToken): the gap just before the event at that place in the
// room's topological order (depth, then stream position). Paging backwards from
// it returns the events before that event, forwards the events from it on. They
// also accept /sync's stream tokens "s<events>_…" as Synapse does: the gap after
// the room's newest event at or below that stream position.

func (a *API) registerMessageRoutes(r *mux.Router) {
	guests := allowGuests
	handle(r, v3R0, "/rooms/{roomId}/send/{eventType}/{txnId}", a.authed(a.sendMessage, guests), http.MethodPut)
	handle(r, v3R0, "/rooms/{roomId}/state", a.authed(a.getState, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/state/{eventType}", a.authed(a.getStateEvent, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", a.authed(a.getStateEvent, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/state/{eventType}", a.authed(a.putState, guests), http.MethodPut)
	handle(r, v3R0, "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", a.authed(a.putState, guests), http.MethodPut)
	handle(r, v3R0, "/rooms/{roomId}/redact/{eventId:.+}/{txnId:[^/]+}", a.authed(a.redact, 0), http.MethodPut)
	handle(r, v3R0, "/rooms/{roomId}/event/{eventId:.+}", a.authed(a.getEvent, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/context/{eventId:.+}", a.authed(a.getContext, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/members", a.authed(a.getMembers, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/joined_members", a.authed(a.getJoinedMembers, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/messages", a.authed(a.getMessages, guests), http.MethodGet)
	handle(r, v1Only, "/rooms/{roomId}/timestamp_to_event", a.authed(a.timestampToEvent, guests), http.MethodGet)
	handle(r, v3R0, "/rooms/{roomId}/report/{eventId:.+}", a.authed(a.reportEvent, 0), http.MethodPost)
	handle(r, v3Only, "/rooms/{roomId}/report", a.authed(a.reportRoom, 0), http.MethodPost)
	handle(r, v3Only, "/users/{userId}/report", a.authed(a.reportUser, 0), http.MethodPost)
	// {eventId}[/{relType}[/{eventType}]], split in the handler: room v3 event
	// IDs may hold '/'.
	handle(r, v1Only, "/rooms/{roomId}/relations/{rest:.+}", a.authed(a.getRelations, guests), http.MethodGet)
	handle(r, v1Only, "/rooms/{roomId}/threads", a.authed(a.getThreads, guests), http.MethodGet)
}

// roomIDParam returns the validated {roomId} path parameter.
func roomIDParam(r *http.Request) (id.RoomID, error) {
	s := mux.Vars(r)["roomId"]
	if !validRoomID(s) {
		return "", httputil.InvalidParam("Invalid room ID %q", s)
	}
	return id.RoomID(s), nil
}

// eventIDParam returns the validated {eventId} path parameter.
func eventIDParam(r *http.Request) (id.EventID, error) {
	s := mux.Vars(r)["eventId"]
	if len(s) < 2 || len(s) > 255 || s[0] != '$' {
		return "", httputil.InvalidParam("Invalid event ID %q", s)
	}
	return id.EventID(s), nil
}

// eventTypeParam validates an event type from the path.
func eventTypeParam(r *http.Request) (string, error) {
	t := mux.Vars(r)["eventType"]
	if t == "" || len(t) > 255 {
		return "", httputil.InvalidParam("Event types must be 1 to 255 bytes")
	}
	return t, nil
}

// dirParam parses dir (b or f); def is used when it is absent (0: required).
func dirParam(s string, def roomserver.Direction) (roomserver.Direction, error) {
	switch s {
	case "b":
		return roomserver.Backward, nil
	case "f":
		return roomserver.Forward, nil
	case "":
		if def != 0 {
			return def, nil
		}
		return 0, httputil.MissingParam("dir is required (b or f)")
	}
	return 0, httputil.InvalidParam("dir must be b or f")
}

// limitParam parses a non-negative limit, capped at max.
func limitParam(s string, def, max int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, max), nil
}

// parseGap reads a pagination token (see the top of this file) as a gap in the
// room's topological order. given is false for an empty token. The gap before
// everything is the zero position.
func (a *API) parseGap(ctx context.Context, roomID id.RoomID, tok string) (pos roomserver.TopoPos, given bool, err error) {
	switch {
	case tok == "":
		return pos, false, nil
	case tok[0] == 't':
		p, err := parseTopoGap(tok)
		if err != nil {
			return pos, false, httputil.InvalidParam("Unknown pagination token")
		}
		return p, true, nil
	case tok[0] == 's':
		t, err := syncstream.ParseToken(tok)
		if err != nil {
			return pos, false, httputil.InvalidParam("Unknown pagination token")
		}
		e, err := a.opts.Roomserver.LatestEventAtStream(ctx, roomID, t.Events)
		if errors.Is(err, roomserver.ErrRoomNotFound) {
			return pos, false, httputil.Forbidden("You are not a member of this room")
		}
		if err != nil {
			return pos, false, internalErr(err)
		}
		if e == nil {
			return pos, true, nil
		}
		return roomserver.TopoPos{Depth: e.Depth(), Stream: e.StreamPos + 1}, true, nil
	}
	return pos, false, httputil.InvalidParam("Unknown pagination token")
}

// parseTopoGap parses a topological token, whose stream part is negative
// ("t12_-40") at backfilled history (see roomserver.InputBackfilledEvents).
func parseTopoGap(tok string) (roomserver.TopoPos, error) {
	depth, stream, ok := strings.Cut(tok, "_")
	neg := ok && strings.HasPrefix(stream, "-")
	if neg {
		tok = depth + "_" + stream[1:]
	}
	t, err := syncstream.ParseTopoToken(tok)
	if err != nil {
		return roomserver.TopoPos{}, err
	}
	if neg {
		if t.Stream == 0 {
			return roomserver.TopoPos{}, syncstream.ErrBadToken
		}
		t.Stream = -t.Stream
	}
	return roomserver.TopoPos{Depth: t.Depth, Stream: t.Stream}, nil
}

// eventPos is an event's place in topological order.
func eventPos(e *roomserver.StoredEvent) roomserver.TopoPos {
	return roomserver.TopoPos{Depth: e.Depth(), Stream: e.StreamPos}
}

// gapAfter is the gap just after an event.
func gapAfter(e *roomserver.StoredEvent) roomserver.TopoPos {
	return roomserver.TopoPos{Depth: e.Depth(), Stream: e.StreamPos + 1}
}

// historyAccess decides whether userID may read the room's history at all:
// joined members may; users who left or were banned may, up to their last member
// event (cutoff), unless they forgot the room (POST /forget); others (never
// members, invited, knocking) only if the room is world_readable ("In all cases
// except world_readable, a user needs to join a room to view events in that
// room"). History visibility then filters each event.
func (a *API) historyAccess(ctx context.Context, roomID id.RoomID, userID id.UserID) (cutoff *roomserver.StoredEvent, err error) {
	rs := a.opts.Roomserver
	cur, err := rs.CurrentStateEvents(ctx, roomID, []pdu.StateKey{memberKey(userID), keyHistory})
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return nil, httputil.Forbidden("You are not a member of this room")
	}
	if err != nil {
		return nil, internalErr(err)
	}
	switch m := membershipOf(cur[0]); {
	case m == "join":
		return nil, nil
	case historyVisibility(cur[1]) == "world_readable":
		return nil, nil
	case cur[0] != nil && (m == "leave" || m == "ban"):
		forgot, err := a.forgotRoom(ctx, userID, roomID)
		if err != nil {
			return nil, internalErr(err)
		}
		if !forgot {
			return cur[0], nil
		}
	}
	return nil, httputil.Forbidden("You are not a member of this room")
}

// visibleToDevice applies history visibility and drops events from users the
// requester ignores (Client-Server API, "Ignoring Users").
func (a *API) visibleToDevice(ctx context.Context, d *Device, evs []*roomserver.StoredEvent) ([]*roomserver.StoredEvent, error) {
	evs, err := a.VisibleEvents(ctx, d.UserID, evs)
	if err != nil || len(evs) == 0 {
		return evs, err
	}
	ignored, err := a.IgnoredUsers(ctx, d.Localpart)
	if err != nil || len(ignored) == 0 {
		return evs, err
	}
	out := evs[:0]
	for _, e := range evs {
		if _, ign := ignored[e.Sender()]; !ign {
			out = append(out, e)
		}
	}
	return out, nil
}

// requireJoined checks that the user is joined to the room.
func (a *API) requireJoined(ctx context.Context, roomID id.RoomID, userID id.UserID) error {
	m, _, err := a.opts.Roomserver.Membership(ctx, roomID, userID)
	if err != nil {
		return roomErr(err)
	}
	if m != "join" {
		return httputil.Forbidden("You are not joined to this room")
	}
	return nil
}

// readContent reads a request body that must be a JSON object (an event content).
func readContent(r *http.Request) ([]byte, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	t := bytes.TrimSpace(body)
	if len(t) == 0 {
		return nil, httputil.NotJSON("Request body is empty; expected a JSON object")
	}
	if !json.Valid(t) {
		return nil, httputil.NotJSON("Request body is not valid JSON")
	}
	if t[0] != '{' {
		return nil, httputil.BadJSON("Event content must be a JSON object")
	}
	return t, nil
}

// PUT /rooms/{roomId}/send/{eventType}/{txnId}
func (a *API) sendMessage(w http.ResponseWriter, r *http.Request, d *Device) error {
	if delayed, err := a.delayedSend(w, r, d, false); delayed {
		return err // MSC4140: scheduled, not sent
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	evType, err := eventTypeParam(r)
	if err != nil {
		return err
	}
	txnID, err := txnParam(r)
	if err != nil {
		return err
	}
	content, err := readContent(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	key := txnKey{user: d.UserID, device: d.DeviceID, scope: "send\x1f" + string(roomID) + "\x1f" + evType, txn: txnID}
	eventID, err := a.rooms.txns.do(ctx, key, func(ctx context.Context) (id.EventID, error) {
		return a.sendEvent(ctx, d, roomID, evType, nil, content)
	})
	if err != nil {
		return err
	}
	return respondEventID(w, eventID)
}

func respondEventID(w http.ResponseWriter, eventID id.EventID) error {
	b := append([]byte(`{"event_id":`), appendJSONString(nil, string(eventID))...)
	writeJSON(w, append(b, '}'))
	return nil
}

func txnParam(r *http.Request) (string, error) {
	t := mux.Vars(r)["txnId"]
	if t == "" || len(t) > 255 {
		return "", httputil.InvalidParam("Transaction IDs must be 1 to 255 bytes")
	}
	return t, nil
}

// sendEvent sends a message or state event for the requester.
func (a *API) sendEvent(ctx context.Context, d *Device, roomID id.RoomID, evType string, stateKey *string, content []byte) (id.EventID, error) {
	rs := a.opts.Roomserver
	if evType == "m.room.create" {
		// A room has one create event, made with the room (POST /createRoom).
		return "", httputil.InvalidParam("m.room.create can only be sent by creating a room")
	}
	if stateKey == nil || evType != "m.room.member" {
		if err := a.requireJoined(ctx, roomID, d.UserID); err != nil {
			return "", err
		}
	}
	if stateKey != nil && evType != "m.room.member" {
		if evType == keyPower.Type && *stateKey == "" {
			if err := a.checkPowerLevelsCreators(ctx, roomID, content); err != nil {
				return "", err
			}
		}
		if prev, err := a.sameStateEvent(ctx, roomID, d.UserID, evType, *stateKey, content); err != nil {
			return "", err
		} else if prev != "" {
			return prev, nil
		}
	}
	req := roomserver.SendRequest{Type: evType, StateKey: stateKey, Sender: d.UserID, Content: content}
	if evType == "m.room.redaction" && stateKey == nil {
		// Client-Server API, PUT /send: redactions may be sent here in every room
		// version; before v11 content.redacts moves to the top level.
		target := gjson.GetBytes(content, "redacts")
		if target.Type != gjson.String || !strings.HasPrefix(target.Str, "$") {
			return "", httputil.BadJSON("A redaction needs content.redacts, the ID of the event to redact")
		}
		req.Redacts = id.EventID(target.Str)
		v, err := rs.RoomVersion(ctx, roomID)
		if err != nil {
			return "", roomErr(err)
		}
		if !v.RedactsInContent {
			if req.Content, err = sjson.DeleteBytes(content, "redacts"); err != nil {
				return "", httputil.BadJSON("Invalid content")
			}
		}
	}
	if stateKey == nil {
		if err := a.checkRelation(ctx, roomID, d.UserID, evType, content); err != nil {
			return "", err
		}
	}
	out, err := rs.SendEvent(ctx, roomID, req)
	if err != nil {
		return "", roomErr(err)
	}
	return out.Event.ID(), nil
}

// sameStateEvent returns the ID of the room's current state event at
// (evType, stateKey) when sender sent it with the same content: sending it again
// changes nothing, so the existing event is the answer (as Synapse does; the
// Client-Server API makes PUT /state idempotent this way). "" when there is none.
func (a *API) sameStateEvent(ctx context.Context, roomID id.RoomID, sender id.UserID, evType, stateKey string, content []byte) (id.EventID, error) {
	cur, err := a.opts.Roomserver.CurrentStateEvents(ctx, roomID, []pdu.StateKey{{Type: evType, StateKey: stateKey}})
	if err != nil {
		return "", roomErr(err)
	}
	prev := cur[0]
	if prev == nil || prev.Sender() != sender || prev.RedactedBy != "" {
		return "", nil
	}
	want, err := events.CanonicalJSON(content)
	if err != nil {
		return "", nil // not canonical JSON: the room engine will say what is wrong
	}
	have, err := events.CanonicalJSON(prev.Content())
	if err != nil || !bytes.Equal(want, have) {
		return "", nil
	}
	return prev.ID(), nil
}

// checkPowerLevelsCreators refuses m.room.power_levels content that lists a
// room creator in users, in room versions where creators have unlimited power
// (room version 12, authorization rules: "If the users property in content
// contains any of the creators, reject"). It is the request that is wrong, so
// the answer is 400 rather than the 403 of a failed auth check (as Synapse).
func (a *API) checkPowerLevelsCreators(ctx context.Context, roomID id.RoomID, content []byte) error {
	users := gjson.GetBytes(content, "users")
	if !users.IsObject() {
		return nil
	}
	pl, err := a.roomPower(ctx, roomID)
	if err != nil {
		return roomErr(err)
	}
	if len(pl.creators) == 0 {
		return nil
	}
	var listed string
	users.ForEach(func(k, _ gjson.Result) bool {
		if pl.creators[id.UserID(k.Str)] {
			listed = k.Str
			return false
		}
		return true
	})
	if listed != "" {
		return httputil.BadJSON("Room creator %s must not appear in users: creators have unlimited power", listed)
	}
	return nil
}

// PUT /rooms/{roomId}/state/{eventType}/{stateKey}
func (a *API) putState(w http.ResponseWriter, r *http.Request, d *Device) error {
	if delayed, err := a.delayedSend(w, r, d, true); delayed {
		return err // MSC4140: scheduled, not sent
	}
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	evType, err := eventTypeParam(r)
	if err != nil {
		return err
	}
	stateKey := mux.Vars(r)["stateKey"]
	if len(stateKey) > 255 {
		return httputil.InvalidParam("State keys must be at most 255 bytes")
	}
	content, err := readContent(r)
	if err != nil {
		return err
	}
	switch evType {
	case "m.room.canonical_alias":
		if err := a.checkCanonicalAlias(ctx, roomID, content); err != nil {
			return err
		}
	case "m.room.member":
		if d.IsGuest && gjson.GetBytes(content, "membership").Str == "join" {
			if err := a.checkGuestJoin(ctx, roomID); err != nil {
				return err
			}
		}
		if invitee := id.UserID(stateKey); gjson.GetBytes(content, "membership").Str == "invite" && invitee.Homeserver() == a.cfg.ServerName {
			if err := a.checkInvitePermission(ctx, invitee, d.UserID); err != nil {
				return err // MSC4155
			}
		}
	}
	if evType == "m.room.member" {
		if content, err = a.memberStateContent(ctx, roomID, d.UserID, stateKey, content); err != nil {
			return err
		}
	}
	eventID, err := a.sendEvent(ctx, d, roomID, evType, &stateKey, content)
	if err != nil {
		return err
	}
	if evType == "m.room.guest_access" && stateKey == "" && gjson.GetBytes(content, "guest_access").Str != "can_join" {
		a.removeGuests(ctx, roomID)
	}
	return respondEventID(w, eventID)
}

// PUT /rooms/{roomId}/redact/{eventId}/{txnId}
func (a *API) redact(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	target, err := eventIDParam(r)
	if err != nil {
		return err
	}
	txnID, err := txnParam(r)
	if err != nil {
		return err
	}
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	content := []byte(`{}`)
	if body.Reason != nil {
		content = append(append([]byte(`{"reason":`), appendJSONString(nil, *body.Reason)...), '}')
	}
	key := txnKey{user: d.UserID, device: d.DeviceID, scope: "redact\x1f" + string(roomID) + "\x1f" + string(target), txn: txnID}
	eventID, err := a.rooms.txns.do(ctx, key, func(ctx context.Context) (id.EventID, error) {
		if err := a.requireJoined(ctx, roomID, d.UserID); err != nil {
			return "", err
		}
		out, err := a.opts.Roomserver.SendEvent(ctx, roomID, roomserver.SendRequest{
			Type: "m.room.redaction", Sender: d.UserID, Content: content, Redacts: target,
		})
		if err != nil {
			return "", roomErr(err)
		}
		return out.Event.ID(), nil
	})
	if err != nil {
		return err
	}
	return respondEventID(w, eventID)
}

// stateSource returns the state snapshot a user reads the room's state from: the
// current state for members and world_readable rooms, the state when they left
// for users who left (Client-Server API, GET /rooms/{roomId}/state).
func (a *API) stateFor(ctx context.Context, roomID id.RoomID, userID id.UserID) ([]roomserver.StateEntry, error) {
	cutoff, err := a.historyAccess(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	var state []roomserver.StateEntry
	if cutoff != nil {
		state, err = a.opts.Roomserver.SnapshotState(ctx, cutoff.StateAfter)
	} else {
		state, err = a.opts.Roomserver.CurrentState(ctx, roomID)
	}
	if err != nil {
		return nil, roomErr(err)
	}
	return state, nil
}

// GET /rooms/{roomId}/state
func (a *API) getState(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	state, err := a.stateFor(ctx, roomID, d.UserID)
	if err != nil {
		return err
	}
	evs := make([]*roomserver.StoredEvent, len(state))
	for i, s := range state {
		evs[i] = s.Event
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), evs, EventFormat{})
	if err != nil {
		return internalErr(err)
	}
	writeJSON(w, wr.appendArray(make([]byte, 0, 512*len(evs)), evs))
	return nil
}

// GET /rooms/{roomId}/state/{eventType}/{stateKey}
func (a *API) getStateEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	evType, err := eventTypeParam(r)
	if err != nil {
		return err
	}
	stateKey := mux.Vars(r)["stateKey"]
	format := r.URL.Query().Get("format")
	if format != "" && format != "content" && format != "event" {
		return httputil.InvalidParam("format must be content or event")
	}
	cutoff, err := a.historyAccess(ctx, roomID, d.UserID)
	if err != nil {
		return err
	}
	rs := a.opts.Roomserver
	key := []pdu.StateKey{{Type: evType, StateKey: stateKey}}
	var e *roomserver.StoredEvent
	if cutoff != nil {
		states, err := rs.SnapshotStateEvents(ctx, []int64{cutoff.StateAfter}, key)
		if err != nil {
			return internalErr(err)
		}
		e = states[cutoff.StateAfter][0]
	} else {
		cur, err := rs.CurrentStateEvents(ctx, roomID, key)
		if err != nil {
			return roomErr(err)
		}
		e = cur[0]
	}
	if e == nil {
		return httputil.NotFound("The room has no %s state with key %q", evType, stateKey)
	}
	if format == "event" {
		wr, err := a.newEventWriter(ctx, viewerOf(d), []*roomserver.StoredEvent{e}, EventFormat{})
		if err != nil {
			return internalErr(err)
		}
		writeJSON(w, wr.append(nil, e))
		return nil
	}
	if e.RedactedBy != "" {
		writeJSON(w, e.Redacted().Content())
		return nil
	}
	writeJSON(w, e.Content())
	return nil
}

// GET /rooms/{roomId}/event/{eventId}
func (a *API) getEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	e, err := a.visibleEvent(ctx, d, roomID, r)
	if err != nil {
		return err
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), []*roomserver.StoredEvent{e}, EventFormat{Bundle: true})
	if err != nil {
		return internalErr(err)
	}
	writeJSON(w, wr.append(nil, e))
	return nil
}

// visibleEvent loads the {eventId} of a request if it is in the room and the
// requester may see it; otherwise 404 (not telling the two apart).
func (a *API) visibleEvent(ctx context.Context, d *Device, roomID id.RoomID, r *http.Request) (*roomserver.StoredEvent, error) {
	eventID, err := eventIDParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.historyAccess(ctx, roomID, d.UserID); err != nil {
		var me *httputil.Error
		if errors.As(err, &me) && me.Status == http.StatusForbidden {
			return nil, httputil.NotFound("Event not found")
		}
		return nil, err
	}
	e, err := a.opts.Roomserver.Event(ctx, eventID)
	if errors.Is(err, roomserver.ErrEventNotFound) || (err == nil && e.RoomID() != roomID) {
		return nil, httputil.NotFound("Event not found")
	}
	if err != nil {
		return nil, internalErr(err)
	}
	vis, err := a.visibleToDevice(ctx, d, []*roomserver.StoredEvent{e})
	if err != nil {
		return nil, internalErr(err)
	}
	if len(vis) == 0 {
		return nil, httputil.NotFound("Event not found")
	}
	return e, nil
}

// roomEventFilter parses the filter query parameter of /messages and /context.
func roomEventFilter(s string) (*RoomEventFilter, error) {
	if s == "" {
		return nil, nil
	}
	var f RoomEventFilter
	if err := unmarshalObject([]byte(s), &f); err != nil {
		var me *httputil.Error
		if errors.As(err, &me) {
			return nil, httputil.InvalidParam("filter: %s", me.Message)
		}
		return nil, err
	}
	if err := f.validate("filter"); err != nil {
		return nil, err
	}
	return &f, nil
}

// matchEvent reports whether an event passes a RoomEventFilter (Client-Server
// API, "Filtering"): types and senders with their exclusions ("*" wildcards in
// types), rooms, contains_url, and relation types (MSC3874).
func matchEvent(f *RoomEventFilter, e *roomserver.StoredEvent) bool {
	if f == nil {
		return true
	}
	if f.Rooms != nil && !containsString(f.Rooms, string(e.RoomID())) || containsString(f.NotRooms, string(e.RoomID())) {
		return false
	}
	if f.Senders != nil && !containsString(f.Senders, string(e.Sender())) || containsString(f.NotSenders, string(e.Sender())) {
		return false
	}
	if f.Types != nil && !matchesAnyType(f.Types, e.Type()) || matchesAnyType(f.NotTypes, e.Type()) {
		return false
	}
	if f.ContainsURL != nil {
		has := gjson.GetBytes(e.Content(), "url").Type == gjson.String
		if has != *f.ContainsURL {
			return false
		}
	}
	if f.RelTypes != nil || len(f.NotRelTypes) > 0 {
		// MSC3874: events without a relation pass only when no rel_types are
		// required.
		rel := gjson.GetBytes(e.Content(), `m\.relates_to.rel_type`)
		if f.RelTypes != nil && (rel.Type != gjson.String || !containsString(f.RelTypes, rel.Str)) {
			return false
		}
		if rel.Type == gjson.String && containsString(f.NotRelTypes, rel.Str) {
			return false
		}
	}
	return true
}

func matchesAnyType(patterns []string, typ string) bool {
	for _, p := range patterns {
		if matchTypeGlob(p, typ) {
			return true
		}
	}
	return false
}

// matchTypeGlob matches s against a pattern where '*' stands for any run of bytes.
func matchTypeGlob(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}

// Backfiller fetches a room's older history from other servers (Server-Server
// API, "Backfilling and retrieving missing events"). It is implemented by
// federation.
type Backfiller interface {
	// BackfillRoom stores up to limit older events of roomID and returns how
	// many joined the timeline (0 when it already reaches the create event).
	BackfillRoom(ctx context.Context, roomID id.RoomID, limit int) (int, error)
}

// backfillBatch is the least history asked of another server at a time.
const backfillBatch = 50

// backfill asks other servers for history older than the room's oldest event
// here, reporting whether any arrived. Failures are logged: the client still gets
// what this server has.
func (a *API) backfill(ctx context.Context, roomID id.RoomID, limit int) bool {
	if a.opts.Backfiller == nil {
		return false
	}
	n, err := a.opts.Backfiller.BackfillRoom(ctx, roomID, max(limit, backfillBatch))
	logIfErr(ctx, "backfilling "+string(roomID), err)
	return n > 0
}

// maxPaginationScan bounds how many events one /messages request looks at while
// filtering; the client continues from the returned end token.
const maxPaginationScan = 2000

// paginate pages through the room from gap in dir, returning up to limit events
// that pass the filter and that the user may see, and the gap to continue from
// (ok=false when the room's history is exhausted in that direction). stop, when
// given, is a gap not to cross.
func (a *API) paginate(ctx context.Context, d *Device, roomID id.RoomID, gap roomserver.TopoPos, gapGiven bool, dir roomserver.Direction,
	limit int, f *RoomEventFilter, stop roomserver.TopoPos, stopGiven bool) (out []*roomserver.StoredEvent, next roomserver.TopoPos, more bool, err error) {
	return a.paginateCapped(ctx, d, roomID, gap, gapGiven, dir, limit, f, stop, stopGiven, noStreamCap)
}

// noStreamCap is paginateCapped's streamCap that leaves no event out.
const noStreamCap = int64(1<<63 - 1)

// paginateCapped is paginate that also leaves out the events with stream
// positions above streamCap: paging back from a /sync stream token covers the
// events the stream had by then, in topological order.
func (a *API) paginateCapped(ctx context.Context, d *Device, roomID id.RoomID, gap roomserver.TopoPos, gapGiven bool, dir roomserver.Direction,
	limit int, f *RoomEventFilter, stop roomserver.TopoPos, stopGiven bool, streamCap int64) (out []*roomserver.StoredEvent, next roomserver.TopoPos, more bool, err error) {
	rs := a.opts.Roomserver
	next = gap
	if limit == 0 {
		return nil, next, true, nil
	}
	// The room engine pages from an exclusive position: backward from the gap
	// itself, forward from the event just before it.
	var from roomserver.TopoPos
	if gapGiven {
		if dir == roomserver.Backward {
			if gap == (roomserver.TopoPos{}) {
				return nil, next, false, nil
			}
			from = gap
		} else if gap != (roomserver.TopoPos{}) {
			from = roomserver.TopoPos{Depth: gap.Depth, Stream: gap.Stream - 1}
		}
	}
	batch := limit
	if f != nil {
		batch = min(max(limit*4, 50), 500)
	}
	// Paging back, history this server lacks is fetched from other servers
	// (once per request; a request that did, and finds more missing, stops
	// there with more=true so that the next one fetches again).
	triedBackfill, backfilled := false, false
	for scanned := 0; len(out) < limit && scanned < maxPaginationScan; {
		evs, pos, err := rs.Messages(ctx, roomID, from, dir, batch)
		if err != nil {
			return nil, next, false, roomErr(err)
		}
		scanned += len(evs)
		exhausted := len(evs) < batch
		stopped := false
		if stopGiven {
			for i, e := range evs {
				p := eventPos(e)
				if (dir == roomserver.Backward && topoBefore(p, stop)) || (dir == roomserver.Forward && !topoBefore(p, stop)) {
					evs, exhausted, stopped = evs[:i], true, true
					break
				}
			}
		}
		gapCut := false
		if dir == roomserver.Backward {
			// A hole inside what this server has (a room rejoined after a
			// while), not only at its start.
			gi, err := a.historyGap(ctx, evs)
			if err != nil {
				return nil, next, false, internalErr(err)
			}
			switch {
			case gi >= 0 && !triedBackfill:
				triedBackfill = true
				if a.backfill(ctx, roomID, limit-len(out)) {
					backfilled = true
					scanned -= len(evs)
					continue // the same page again, with the history filled in
				}
			case gi >= 0 && backfilled:
				evs, exhausted, gapCut = evs[:gi+1], true, true
			}
		}
		var keep []*roomserver.StoredEvent
		for _, e := range evs {
			if e.StreamPos <= streamCap && matchEvent(f, e) {
				keep = append(keep, e)
			}
		}
		if keep, err = a.visibleToDevice(ctx, d, keep); err != nil {
			return nil, next, false, internalErr(err)
		}
		// Take what fits; the continuation gap follows the last event taken, or
		// the last one looked at when all of the batch was used.
		taken := 0
		for _, e := range evs {
			if len(out) == limit {
				break
			}
			taken++
			if len(keep) > 0 && keep[0] == e {
				out = append(out, e)
				keep = keep[1:]
			}
			if dir == roomserver.Backward {
				next = eventPos(e)
			} else {
				next = gapAfter(e)
			}
		}
		if exhausted && taken == len(evs) {
			if gapCut {
				return out, next, true, nil
			}
			// The start of what this server has: older history may be on
			// other servers.
			atCreate := len(evs) > 0 && evs[len(evs)-1].Type() == "m.room.create"
			if dir == roomserver.Backward && !stopped && !atCreate {
				if !triedBackfill {
					triedBackfill = true
					if a.backfill(ctx, roomID, limit-len(out)) {
						backfilled = true
						from = pos
						continue
					}
				}
				if backfilled {
					// Some history arrived and it does not reach the
					// create event yet: the next request fetches more.
					return out, next, true, nil
				}
			}
			return out, next, false, nil
		}
		if taken < len(evs) {
			return out, next, true, nil
		}
		from = pos
	}
	return out, next, true, nil
}

// GET /rooms/{roomId}/messages
func (a *API) getMessages(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	// Whether the user may read the room at all comes first: a room they
	// cannot see answers 403 whatever the parameters (as Synapse).
	cutoff, err := a.historyAccess(ctx, roomID, d.UserID)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	dir, err := dirParam(q.Get("dir"), 0)
	if err != nil {
		return err
	}
	limit, err := limitParam(q.Get("limit"), 10, 1000)
	if err != nil {
		return err
	}
	f, err := roomEventFilter(q.Get("filter"))
	if err != nil {
		return err
	}
	fromTok := q.Get("from")
	from, fromGiven, err := a.parseGap(ctx, roomID, fromTok)
	if err != nil {
		return err
	}
	streamCap := noStreamCap
	if dir == roomserver.Backward && fromGiven && fromTok[0] == 's' {
		// Backward from a /sync stream token (a timeline's prev_batch): the
		// events the stream held up to it, in topological order from the
		// newest, as Synapse pages from a stream token. An event that arrived
		// after the token but sits deep in the DAG is left out; the start of
		// the topological order is not the stream's.
		if t, err := syncstream.ParseToken(fromTok); err == nil {
			streamCap, from, fromGiven = t.Events, roomserver.TopoPos{}, false
		}
	}
	to, toGiven, err := a.parseGap(ctx, roomID, q.Get("to"))
	if err != nil {
		return err
	}
	if cutoff != nil {
		// A user who left sees nothing after leaving: start (backward) or stop
		// (forward) at their leave.
		c := gapAfter(cutoff)
		if dir == roomserver.Backward && (!fromGiven || topoBefore(c, from)) {
			from, fromGiven = c, true
		}
		if dir == roomserver.Forward && (!toGiven || topoBefore(c, to)) {
			to, toGiven = c, true
		}
	}
	if fromTok == "" {
		if dir == roomserver.Backward {
			fromTok = syncstream.Token{Events: a.opts.Roomserver.StreamPosition()}.String()
			if fromGiven {
				fromTok = gapToken(from)
			}
		} else {
			fromTok = gapToken(roomserver.TopoPos{})
		}
	}
	evs, next, more, err := a.paginateCapped(ctx, d, roomID, from, fromGiven, dir, limit, f, to, toGiven, streamCap)
	if err != nil {
		return err
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), evs, EventFormat{Bundle: true})
	if err != nil {
		return internalErr(err)
	}
	b := append(make([]byte, 0, 256+len(evs)*600), `{"chunk":`...)
	b = wr.appendArray(b, evs)
	b = append(b, `,"start":`...)
	b = appendJSONString(b, fromTok)
	if more {
		b = append(b, `,"end":`...)
		b = appendJSONString(b, gapToken(next))
	}
	if f != nil && f.LazyLoadMembers && len(evs) > 0 {
		members, err := a.senderMembers(ctx, evs)
		if err != nil {
			return internalErr(err)
		}
		mw, err := a.newEventWriter(ctx, viewerOf(d), members, EventFormat{})
		if err != nil {
			return internalErr(err)
		}
		b = append(b, `,"state":`...)
		b = mw.appendArray(b, members)
	}
	writeJSON(w, append(b, '}'))
	return nil
}

// senderMembers returns the member events of the senders of evs, each from the
// state at that sender's first event in evs (Client-Server API, "Lazy-loading
// room members").
func (a *API) senderMembers(ctx context.Context, evs []*roomserver.StoredEvent) ([]*roomserver.StoredEvent, error) {
	var keys []pdu.StateKey
	index := map[id.UserID]int{}
	snapOf := map[id.UserID]int64{}
	var snaps []int64
	for _, e := range evs {
		if _, ok := index[e.Sender()]; ok {
			continue
		}
		index[e.Sender()] = len(keys)
		keys = append(keys, memberKey(e.Sender()))
		snapOf[e.Sender()] = e.StateAfter
		snaps = append(snaps, e.StateAfter)
	}
	states, err := a.opts.Roomserver.SnapshotStateEvents(ctx, snaps, keys)
	if err != nil {
		return nil, err
	}
	var out []*roomserver.StoredEvent
	seen := map[id.EventID]bool{}
	for _, e := range evs {
		u := e.Sender()
		if m := states[snapOf[u]][index[u]]; m != nil && !seen[m.ID()] {
			seen[m.ID()] = true
			out = append(out, m)
		}
	}
	return out, nil
}

// GET /rooms/{roomId}/context/{eventId}
func (a *API) getContext(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := limitParam(q.Get("limit"), 10, 1000)
	if err != nil {
		return err
	}
	f, err := roomEventFilter(q.Get("filter"))
	if err != nil {
		return err
	}
	e, err := a.visibleEvent(ctx, d, roomID, r)
	if err != nil {
		return err
	}
	// The limit is shared between the two sides (before gets the smaller half).
	nBefore := limit / 2
	nAfter := limit - nBefore
	before, start, _, err := a.paginate(ctx, d, roomID, eventPos(e), true, roomserver.Backward, nBefore, f, roomserver.TopoPos{}, false)
	if err != nil {
		return err
	}
	var stop roomserver.TopoPos
	stopGiven := false
	if cutoff, err := a.historyAccess(ctx, roomID, d.UserID); err == nil && cutoff != nil {
		stop, stopGiven = gapAfter(cutoff), true
	}
	after, end, _, err := a.paginate(ctx, d, roomID, gapAfter(e), true, roomserver.Forward, nAfter, f, stop, stopGiven)
	if err != nil {
		return err
	}
	all := make([]*roomserver.StoredEvent, 0, len(before)+len(after)+1)
	all = append(append(append(all, e), before...), after...)
	last := e
	if len(after) > 0 {
		last = after[len(after)-1]
	}
	state, err := a.opts.Roomserver.SnapshotState(ctx, last.StateAfter)
	if err != nil {
		return internalErr(err)
	}
	var stateEvs []*roomserver.StoredEvent
	if f != nil && f.LazyLoadMembers {
		members, err := a.senderMembers(ctx, all)
		if err != nil {
			return internalErr(err)
		}
		stateEvs = members
		for _, s := range state {
			if s.Key.Type != "m.room.member" && matchEvent(f, s.Event) {
				stateEvs = append(stateEvs, s.Event)
			}
		}
	} else {
		for _, s := range state {
			if matchEvent(f, s.Event) {
				stateEvs = append(stateEvs, s.Event)
			}
		}
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), all, EventFormat{Bundle: true})
	if err != nil {
		return internalErr(err)
	}
	sw, err := a.newEventWriter(ctx, viewerOf(d), stateEvs, EventFormat{})
	if err != nil {
		return internalErr(err)
	}
	b := append(make([]byte, 0, 1024+len(all)*600+len(stateEvs)*300), `{"event":`...)
	b = wr.append(b, e)
	b = append(b, `,"events_before":`...)
	b = wr.appendArray(b, before)
	b = append(b, `,"events_after":`...)
	b = wr.appendArray(b, after)
	b = append(b, `,"start":`...)
	b = appendJSONString(b, gapToken(start))
	b = append(b, `,"end":`...)
	b = appendJSONString(b, gapToken(end))
	b = append(b, `,"state":`...)
	b = sw.appendArray(b, stateEvs)
	writeJSON(w, append(b, '}'))
	return nil
}

// GET /rooms/{roomId}/members
func (a *API) getMembers(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	membership, notMembership := q.Get("membership"), q.Get("not_membership")
	for _, m := range []string{membership, notMembership} {
		switch m {
		case "", "join", "invite", "knock", "leave", "ban":
		default:
			return httputil.InvalidParam("Unknown membership %q", m)
		}
	}
	cutoff, err := a.historyAccess(ctx, roomID, d.UserID)
	if err != nil {
		return err
	}
	rs := a.opts.Roomserver
	var state []roomserver.StateEntry
	switch {
	case q.Get("at") != "":
		gap, _, err := a.parseGap(ctx, roomID, q.Get("at"))
		if err != nil {
			return err
		}
		if cutoff != nil && topoBefore(gapAfter(cutoff), gap) {
			gap = gapAfter(cutoff)
		}
		var at []*roomserver.StoredEvent
		if gap != (roomserver.TopoPos{}) {
			if at, _, err = rs.Messages(ctx, roomID, gap, roomserver.Backward, 1); err != nil {
				return roomErr(err)
			}
		}
		if len(at) > 0 {
			state, err = rs.SnapshotState(ctx, at[0].StateAfter)
		}
	case cutoff != nil:
		state, err = rs.SnapshotState(ctx, cutoff.StateAfter)
	default:
		state, err = rs.CurrentState(ctx, roomID)
	}
	if err != nil {
		return roomErr(err)
	}
	var evs []*roomserver.StoredEvent
	for _, s := range state {
		if s.Key.Type != "m.room.member" {
			continue
		}
		m := membershipOf(s.Event)
		ok := true
		switch {
		case membership != "" && notMembership != "":
			ok = m == membership || m != notMembership
		case membership != "":
			ok = m == membership
		case notMembership != "":
			ok = m != notMembership
		}
		if ok {
			evs = append(evs, s.Event)
		}
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), evs, EventFormat{})
	if err != nil {
		return internalErr(err)
	}
	b := append(make([]byte, 0, 64+len(evs)*400), `{"chunk":`...)
	b = wr.appendArray(b, evs)
	writeJSON(w, append(b, '}'))
	return nil
}

// GET /rooms/{roomId}/joined_members
func (a *API) getJoinedMembers(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	if err := a.requireJoined(ctx, roomID, d.UserID); err != nil {
		return err
	}
	state, err := a.opts.Roomserver.CurrentState(ctx, roomID)
	if err != nil {
		return roomErr(err)
	}
	type member struct {
		DisplayName *string `json:"display_name"`
		AvatarURL   *string `json:"avatar_url"`
	}
	joined := map[string]member{}
	for _, s := range state {
		if s.Key.Type != "m.room.member" || membershipOf(s.Event) != "join" {
			continue
		}
		var m member
		c := s.Event.Content()
		if v := gjson.GetBytes(c, "displayname"); v.Type == gjson.String {
			m.DisplayName = &v.Str
		}
		if v := gjson.GetBytes(c, "avatar_url"); v.Type == gjson.String {
			m.AvatarURL = &v.Str
		}
		joined[s.Key.StateKey] = m
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"joined": joined})
	return nil
}

// RemoteTimestamps finds events close to a time on other servers (Server-Server
// API, GET /timestamp_to_event). It is implemented by federation.
type RemoteTimestamps interface {
	// RemoteEventNearTimestamp returns the event of roomID closest to ts in
	// direction dir that another server knows, when it is closer than local
	// (this server's answer, nil for none), stored here so that clients can
	// page around it; nil when there is none.
	RemoteEventNearTimestamp(ctx context.Context, roomID id.RoomID, ts int64, dir roomserver.Direction, local *roomserver.StoredEvent) (*roomserver.StoredEvent, error)
}

// maxTimestampSkips bounds how many events the user may not see a timestamp
// search steps past.
const maxTimestampSkips = 20

// GET /v1/rooms/{roomId}/timestamp_to_event
//
// The closest event this server has that the user may see; when this server's
// history may lack a closer one (no event found, or the one found is next to a
// gap in the history held here: roomserver.NextToTimestampGap), other servers
// in the room are asked, and a closer event they know is fetched and stored so
// that /context and /messages work from it (as the Server-Server API's GET
// /timestamp_to_event describes, and as Synapse does).
func (a *API) timestampToEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return httputil.InvalidParam("ts must be a timestamp in milliseconds")
	}
	dir, err := dirParam(q.Get("dir"), 0)
	if err != nil {
		return err
	}
	if _, err := a.historyAccess(ctx, roomID, d.UserID); err != nil {
		return err
	}
	nearest, visible, err := a.localEventNearTimestamp(ctx, d, roomID, ts, dir)
	if err != nil {
		return err
	}
	if remote := a.remoteEventNearTimestamp(ctx, d, roomID, ts, dir, nearest, visible); remote != nil {
		visible = remote
	}
	if visible == nil {
		return httputil.NotFound("No event found from %d in direction %c", ts, dir)
	}
	b := append(make([]byte, 0, 128), `{"event_id":`...)
	b = appendJSONString(b, string(visible.ID()))
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, visible.OriginServerTS(), 10)
	writeJSON(w, append(b, '}'))
	return nil
}

// localEventNearTimestamp returns the timeline event this server has closest to
// ts in direction dir (nearest), and the closest one the user may see
// (visible), stepping past up to maxTimestampSkips events they may not; either
// may be nil.
func (a *API) localEventNearTimestamp(ctx context.Context, d *Device, roomID id.RoomID, ts int64, dir roomserver.Direction) (nearest, visible *roomserver.StoredEvent, err error) {
	rs := a.opts.Roomserver
	for range maxTimestampSkips {
		e, err := rs.EventNearTimestamp(ctx, roomID, ts, dir)
		if err != nil {
			return nil, nil, roomErr(err)
		}
		if e == nil {
			break
		}
		if nearest == nil {
			nearest = e
		}
		vis, err := a.VisibleEvents(ctx, d.UserID, []*roomserver.StoredEvent{e})
		if err != nil {
			return nil, nil, internalErr(err)
		}
		if len(vis) > 0 {
			return nearest, e, nil
		}
		if dir == roomserver.Forward {
			ts = e.OriginServerTS() + 1
		} else {
			ts = e.OriginServerTS() - 1
		}
	}
	return nearest, nil, nil
}

// remoteEventNearTimestamp asks other servers (RemoteTimestamps) when this
// server's answer may not be the closest: none was found, or the nearest event
// is next to a gap in the history held here. It returns the closer event they
// knew when the user may see it, else nil. Failures are logged: the local
// answer stands.
func (a *API) remoteEventNearTimestamp(ctx context.Context, d *Device, roomID id.RoomID, ts int64, dir roomserver.Direction, nearest, visible *roomserver.StoredEvent) *roomserver.StoredEvent {
	if a.opts.RemoteTimestamps == nil {
		return nil
	}
	if nearest != nil {
		gap, err := a.opts.Roomserver.NextToTimestampGap(ctx, nearest, dir)
		if err != nil {
			logIfErr(ctx, "checking for history gaps in "+string(roomID), err)
			return nil
		}
		if !gap {
			return nil
		}
	}
	e, err := a.opts.RemoteTimestamps.RemoteEventNearTimestamp(ctx, roomID, ts, dir, visible)
	if err != nil {
		slog.InfoContext(ctx, "asking other servers for an event near a time", "room_id", roomID, "err", err)
	}
	if e == nil {
		return nil
	}
	vis, err := a.VisibleEvents(ctx, d.UserID, []*roomserver.StoredEvent{e})
	if err != nil || len(vis) == 0 {
		logIfErr(ctx, "checking the visibility of "+string(e.ID()), err)
		return nil
	}
	return e
}

// reportBody is the body of the report endpoints.
type reportBody struct {
	Reason *string `json:"reason"`
	Score  *int64  `json:"score"`
}

func (a *API) saveReport(ctx context.Context, reporter id.UserID, roomID id.RoomID, eventID id.EventID, userID id.UserID, body reportBody) error {
	reason := ""
	if body.Reason != nil {
		reason = *body.Reason
	}
	if len(reason) > 4096 {
		return httputil.InvalidParam("The reason is too long")
	}
	_, err := a.db.Exec(ctx, `INSERT INTO content_reports (reporter, room_id, event_id, user_id, reason, score, received_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		string(reporter), string(roomID), string(eventID), string(userID), reason, body.Score, nowMS())
	if err != nil {
		return internalErr(err)
	}
	return nil
}

// POST /rooms/{roomId}/report/{eventId}
func (a *API) reportEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var body reportBody
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	if body.Score != nil && (*body.Score < -100 || *body.Score > 0) {
		return httputil.InvalidParam("score must be between -100 and 0")
	}
	if m, _, err := a.opts.Roomserver.Membership(ctx, roomID, d.UserID); err != nil || m != "join" {
		return httputil.NotFound("Event not found")
	}
	e, err := a.visibleEvent(ctx, d, roomID, r)
	if err != nil {
		return err
	}
	if err := a.saveReport(ctx, d.UserID, roomID, e.ID(), "", body); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /rooms/{roomId}/report
func (a *API) reportRoom(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var body reportBody
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	if _, err := a.opts.Roomserver.RoomVersion(ctx, roomID); err != nil {
		return roomErr(err)
	}
	if err := a.saveReport(ctx, d.UserID, roomID, "", "", body); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /users/{userId}/report
func (a *API) reportUser(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	uid, _, _, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return err
	}
	var body reportBody
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	if uid.Homeserver() == a.cfg.ServerName {
		ok, err := a.accounts.Exists(ctx, uid.Localpart())
		if err != nil {
			return internalErr(err)
		}
		if !ok {
			return httputil.NotFound("Unknown user")
		}
	}
	if err := a.saveReport(ctx, d.UserID, "", "", uid, body); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}
