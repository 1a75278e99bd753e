package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// Ephemeral endpoints: typing notifications, receipts, read markers and
// presence (Client-Server API, "Typing Notifications", "Receipts", "Read and
// unread markers", "Presence").

// registerEphemeralRoutes serves the ephemeral endpoints.
func (a *API) registerEphemeralRoutes(r *mux.Router) {
	// Guests may use all of them (Client-Server API, "Guest Access").
	handle(r, v3R0, "/rooms/{roomId}/typing/{userId}", a.authed(a.putTyping, allowGuests), http.MethodPut)
	handle(r, v3R0, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", a.authed(a.postReceipt, allowGuests), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/read_markers", a.authed(a.postReadMarkers, allowGuests), http.MethodPost)
	handle(r, v3R0, "/presence/{userId}/status", a.authed(a.getPresence, allowGuests), http.MethodGet)
	handle(r, v3R0, "/presence/{userId}/status", a.authed(a.putPresence, allowGuests), http.MethodPut)
}

// syncer returns the /sync machinery, or M_UNRECOGNIZED without it.
func (a *API) syncer() (*Syncer, error) {
	if s := a.opts.Sync; s != nil && s.api == a {
		return s, nil
	}
	return nil, httputil.Unrecognized("This server does not serve this endpoint")
}

// requireJoined answers M_FORBIDDEN unless userID is joined to roomID,
// according to the membership index (loading the user's rooms if needed).
func (s *Syncer) requireJoined(ctx context.Context, roomID id.RoomID, userID id.UserID) error {
	if err := s.loadUser(ctx, userID); err != nil {
		return internalErr(err)
	}
	if m, ok := s.members.Membership(userID, roomID); !ok || m.Membership != "join" {
		return httputil.Forbidden("You are not in this room")
	}
	return nil
}

// PUT /rooms/{roomId}/typing/{userId}
func (a *API) putTyping(w http.ResponseWriter, r *http.Request, d *Device) error {
	s, err := a.syncer()
	if err != nil {
		return err
	}
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	uid, _, _, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return err
	}
	if uid != d.UserID {
		return httputil.Forbidden("You cannot set another user's typing state")
	}
	var req struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Typing == nil {
		return httputil.BadJSON("typing is required")
	}
	var timeout time.Duration
	if *req.Typing {
		if req.Timeout == nil {
			timeout = 30 * time.Second
		} else if *req.Timeout < 0 {
			return httputil.InvalidParam("timeout must not be negative")
		} else {
			timeout = time.Duration(min(*req.Timeout, int64(time.Hour/time.Millisecond))) * time.Millisecond
		}
	}
	if err := s.requireJoined(r.Context(), id.RoomID(roomID), d.UserID); err != nil {
		return err
	}
	s.typing.Set(id.RoomID(roomID), d.UserID, *req.Typing, timeout)
	if fn := s.hooks().Typing; fn != nil {
		fn(r.Context(), id.RoomID(roomID), d.UserID, *req.Typing)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /rooms/{roomId}/receipt/{receiptType}/{eventId}
func (a *API) postReceipt(w http.ResponseWriter, r *http.Request, d *Device) error {
	s, err := a.syncer()
	if err != nil {
		return err
	}
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	vars := mux.Vars(r)
	typ, eventID := vars["receiptType"], vars["eventId"]
	switch typ {
	case receiptRead, receiptReadPrivate, typeFullyRead:
	default:
		return httputil.InvalidParam("Unknown receipt type %q", typ)
	}
	if !validEventIDParam(eventID) {
		return httputil.InvalidParam("Invalid event ID %q", eventID)
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req struct {
		ThreadID json.RawMessage `json:"thread_id"`
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := unmarshalObject(body, &req); err != nil {
			return err
		}
	}
	thread := ""
	if req.ThreadID != nil {
		if err := json.Unmarshal(req.ThreadID, &thread); err != nil || thread == "" {
			return httputil.InvalidParam("thread_id field must be a non-empty string")
		}
		if typ == typeFullyRead {
			return httputil.InvalidParam("thread_id cannot be given for %s", typeFullyRead)
		}
		if thread != "main" && !validEventIDParam(thread) {
			return httputil.InvalidParam("thread_id must be main or an event ID")
		}
	}
	ctx := r.Context()
	if err := s.requireJoined(ctx, id.RoomID(roomID), d.UserID); err != nil {
		return err
	}
	if typ == typeFullyRead {
		if err := s.setFullyRead(ctx, d, id.RoomID(roomID), id.EventID(eventID)); err != nil {
			return err
		}
	} else if err := s.sendReceipt(ctx, d.UserID, id.RoomID(roomID), typ, id.EventID(eventID), thread, req.ThreadID != nil); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// validEventIDParam checks an event ID from a request (Appendices, "Event IDs").
func validEventIDParam(s string) bool {
	return len(s) > 1 && len(s) <= 255 && s[0] == '$' && !strings.ContainsAny(s, " \x00")
}

// roomEvent loads an event of roomID, answering 404 when it is unknown or
// belongs to another room.
func (s *Syncer) roomEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID) (*roomserver.StoredEvent, error) {
	ev, err := s.rs.Event(ctx, eventID)
	if errors.Is(err, roomserver.ErrEventNotFound) || err == nil && (ev.RoomID() != roomID || ev.StreamPos == 0 || ev.Rejected) {
		return nil, httputil.NotFound("Unknown event %s", eventID)
	}
	if err != nil {
		return nil, internalErr(err)
	}
	return ev, nil
}

// relatesTo reports whether ev relates to root through a chain of at most
// maxThreadHops relations (a reaction to a reference to a thread root, say):
// such an event is in the main timeline, yet related to the root's thread, so
// a receipt in that thread may name it (Client-Server API, POST
// /rooms/{roomId}/receipt: 400 only when "the event_id is not related to the
// thread_id"; Synapse accepts it, Complement TestThreadedReceipts sends it).
func (s *Syncer) relatesTo(ctx context.Context, ev *events.Event, root id.EventID) bool {
	content := ev.Content()
	for hop := 0; hop < maxThreadHops; hop++ {
		rel := gjson.GetBytes(content, `m\.relates_to`)
		if !rel.IsObject() {
			return false
		}
		parent := id.EventID(rel.Get("event_id").Str)
		if parent == "" {
			parent = id.EventID(rel.Get(`m\.in_reply_to.event_id`).Str)
		}
		if parent == "" {
			return false
		}
		if parent == root {
			return true
		}
		pe, err := s.rs.Event(ctx, parent)
		if err != nil || pe.RoomID() != ev.RoomID() {
			return false
		}
		content = pe.Content()
	}
	return false
}

// sendReceipt stores a read receipt, updates notification counts and wakes
// who should see it.
func (s *Syncer) sendReceipt(ctx context.Context, userID id.UserID, roomID id.RoomID, typ string, eventID id.EventID, thread string, threaded bool) error {
	ev, err := s.roomEvent(ctx, roomID, eventID)
	if err != nil {
		return err
	}
	if threaded {
		// The event must belong to the thread the receipt names.
		evThread := s.counts.threadKey(ctx, ev.Event)
		switch {
		case thread == "main" && evThread != "":
			return httputil.InvalidParam("%s is in a thread, not in the main timeline", eventID)
		case thread != "main" && evThread != thread && string(eventID) != thread && !s.relatesTo(ctx, ev.Event, id.EventID(thread)):
			return httputil.InvalidParam("%s is not related to thread %s", eventID, thread)
		}
	}
	rec := &storedReceipt{user: userID, typ: typ, thread: thread, eventID: eventID, eventPos: ev.StreamPos, ts: nowMS()}
	stored, err := s.receipts.put(ctx, roomID, rec, func() {
		s.counts.enqueueRead(readUpTo{user: userID, roomID: roomID, thread: thread, pos: ev.StreamPos})
	})
	if err != nil {
		return internalErr(err)
	}
	if !stored {
		return nil
	}
	if typ == receiptReadPrivate {
		s.notifier.Wake(userID)
	} else {
		s.wakeRoom(roomID)
		s.notifier.Wake(userID)
		if fn := s.hooks().Receipt; fn != nil {
			fn(ctx, roomID, userID, eventID, thread, rec.ts)
		}
	}
	return nil
}

// setFullyRead moves the user's fully read marker (m.fully_read room account
// data, which clients cannot set directly).
func (s *Syncer) setFullyRead(ctx context.Context, d *Device, roomID id.RoomID, eventID id.EventID) error {
	if _, err := s.roomEvent(ctx, roomID, eventID); err != nil {
		return err
	}
	content, err := json.Marshal(map[string]string{"event_id": string(eventID)})
	if err != nil {
		return internalErr(err)
	}
	if _, err := s.api.accounts.SetAccountData(ctx, d.Localpart, string(roomID), typeFullyRead, content); err != nil {
		return internalErr(err)
	}
	s.accountDataChanged(d.UserID)
	return nil
}

// POST /rooms/{roomId}/read_markers
func (a *API) postReadMarkers(w http.ResponseWriter, r *http.Request, d *Device) error {
	s, err := a.syncer()
	if err != nil {
		return err
	}
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	markers := map[string]id.EventID{}
	for _, k := range []string{typeFullyRead, receiptRead, receiptReadPrivate} {
		raw, ok := req[k]
		if !ok || string(raw) == "null" {
			continue
		}
		var e string
		if err := json.Unmarshal(raw, &e); err != nil || !validEventIDParam(e) {
			return httputil.InvalidParam("%s must be an event ID", k)
		}
		markers[k] = id.EventID(e)
	}
	ctx := r.Context()
	if err := s.requireJoined(ctx, id.RoomID(roomID), d.UserID); err != nil {
		return err
	}
	// Check every event first, so a bad one changes nothing.
	for _, e := range markers {
		if _, err := s.roomEvent(ctx, id.RoomID(roomID), e); err != nil {
			return err
		}
	}
	if e, ok := markers[typeFullyRead]; ok {
		if err := s.setFullyRead(ctx, d, id.RoomID(roomID), e); err != nil {
			return err
		}
	}
	for _, t := range []string{receiptRead, receiptReadPrivate} {
		if e, ok := markers[t]; ok {
			if err := s.sendReceipt(ctx, d.UserID, id.RoomID(roomID), t, e, "", false); err != nil {
				return err
			}
		}
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// PUT /presence/{userId}/status
func (a *API) putPresence(w http.ResponseWriter, r *http.Request, d *Device) error {
	s, err := a.syncer()
	if err != nil {
		return err
	}
	uid, _, _, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return err
	}
	if uid != d.UserID {
		return httputil.Forbidden("You cannot set another user's presence")
	}
	var req struct {
		Presence  *string         `json:"presence"`
		StatusMsg json.RawMessage `json:"status_msg"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Presence == nil {
		return httputil.BadJSON("presence is required")
	}
	switch *req.Presence {
	case presenceOnline, presenceUnavailable, presenceOffline:
	default:
		return httputil.InvalidParam("presence must be online, unavailable or offline")
	}
	var msg *string
	if len(req.StatusMsg) > 0 && string(req.StatusMsg) != "null" {
		var m string
		if err := json.Unmarshal(req.StatusMsg, &m); err != nil {
			return httputil.BadJSON("status_msg must be a string")
		}
		if len(m) > 1024 {
			return httputil.InvalidParam("status_msg is too long")
		}
		msg = &m
	}
	ctx := r.Context()
	logIfErr(ctx, "indexing user rooms", s.loadUser(ctx, d.UserID))
	if _, err := s.presence.set(ctx, d.UserID, *req.Presence, msg, false, true, false, func() { s.wakePresence(d.UserID) }); err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /presence/{userId}/status
func (a *API) getPresence(w http.ResponseWriter, r *http.Request, d *Device) error {
	s, err := a.syncer()
	if err != nil {
		return err
	}
	uid, lp, server, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return err
	}
	ctx := r.Context()
	if server != s.serverName {
		// A remote user's presence, as their server sent it in m.presence
		// EDUs (ephemeral_presence_federation.go).
		return s.getRemotePresence(ctx, w, d.UserID, uid)
	}
	if ok, err := a.accounts.Exists(ctx, lp); err != nil {
		return internalErr(err)
	} else if !ok {
		return httputil.NotFound("No presence known for %s", uid)
	}
	if uid != d.UserID {
		share, err := s.shareRoom(ctx, d.UserID, uid)
		if err != nil {
			return internalErr(err)
		}
		if !share {
			return httputil.Forbidden("You are not allowed to see their presence")
		}
	}
	st, err := s.presence.get(ctx, uid)
	if err != nil {
		return internalErr(err)
	}
	httputil.WriteJSONBytes(w, http.StatusOK, appendPresenceContent(nil, st, nowMS()))
	return nil
}

// shareRoom reports whether two users are joined to a common room.
func (s *Syncer) shareRoom(ctx context.Context, a, b id.UserID) (bool, error) {
	if s.members.Loaded(a) && s.members.Loaded(b) {
		return s.members.ShareRoom(a, b), nil
	}
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM current_state x JOIN current_state y ON y.room_nid = x.room_nid
		WHERE x.event_type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
		AND y.event_type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join'`, string(a), string(b)).Scan(&n)
	return n > 0, err
}
