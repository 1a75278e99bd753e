package federationapi

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
)

// Bounds on event-walking requests.
const (
	maxBackfillLimit      = 100
	maxMissingEventsLimit = 50
)

// roomOf returns 404 M_NOT_FOUND for rooms unknown here.
func (a *API) roomOf(ctx context.Context, roomID id.RoomID) error {
	if _, err := a.rs.RoomVersion(ctx, roomID); errors.Is(err, roomserver.ErrRoomNotFound) {
		return httputil.NotFound("Unknown room %s", roomID)
	} else if err != nil {
		return err
	}
	return nil
}

// requireInRoom checks the server ACL and that origin has a user joined to the room
// now, or (when eventID is given and has state here) just before eventID.
func (a *API) requireInRoom(ctx context.Context, roomID id.RoomID, eventID id.EventID, origin string) error {
	if err := a.roomOf(ctx, roomID); err != nil {
		return err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return err
	}
	ok, err := a.rs.ServerJoined(ctx, roomID, "", origin)
	if err != nil {
		return err
	}
	if !ok && eventID != "" {
		if ok, err = a.rs.ServerJoined(ctx, roomID, eventID, origin); err != nil && !errors.Is(err, roomserver.ErrEventNotFound) {
			return err
		}
	}
	if !ok {
		return httputil.Forbidden("Server %s is not in room %s", origin, roomID)
	}
	return nil
}

// eventInRoom loads an event of roomID, or 404.
func (a *API) eventInRoom(ctx context.Context, roomID id.RoomID, eventID id.EventID) (*roomserver.StoredEvent, error) {
	ev, err := a.rs.Event(ctx, eventID)
	if errors.Is(err, roomserver.ErrEventNotFound) || err == nil && ev.RoomID() != roomID {
		return nil, httputil.NotFound("Unknown event %s", eventID)
	}
	return ev, err
}

// visibleJSON returns the federation JSON of ev as origin may see it: whole when
// the room's history visibility at ev is shared or world_readable, or when origin
// had a user joined then; redacted otherwise (Client-Server API, "History
// visibility", applied to servers).
func (a *API) visibleJSON(ctx context.Context, ev *roomserver.StoredEvent, origin string) ([]byte, error) {
	if ev.Outlier || ev.RedactedBy != "" {
		return a.storedJSON(ev), nil
	}
	hv, err := a.rs.StateEventAt(ctx, ev.ID(), false, "m.room.history_visibility", "")
	if err != nil {
		return nil, err
	}
	vis := "shared"
	if hv != nil {
		if v := gjson.GetBytes(hv.Content(), "history_visibility"); v.Type == gjson.String {
			vis = v.Str
		}
	}
	if vis == "shared" || vis == "world_readable" {
		return ev.JSON(), nil
	}
	ok, err := a.rs.ServerJoined(ctx, ev.RoomID(), ev.ID(), origin)
	if err != nil {
		return nil, err
	}
	if ok {
		return ev.JSON(), nil
	}
	return ev.Redacted().JSON(), nil
}

// storedJSON is the JSON served for a stored event: redacted once a redaction
// applies.
func (a *API) storedJSON(ev *roomserver.StoredEvent) []byte {
	if ev.RedactedBy != "" {
		return ev.Redacted().JSON()
	}
	return ev.JSON()
}

// appendPDUArray appends a JSON array of the events' JSON.
func appendPDUArray(dst []byte, jsons [][]byte) []byte {
	dst = append(dst, '[')
	for i, j := range jsons {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, j...)
	}
	return append(dst, ']')
}

// pduTransaction writes {"origin", "origin_server_ts", "pdus"}.
func (a *API) pduTransaction(w http.ResponseWriter, jsons [][]byte) {
	b := make([]byte, 0, 128+sizeOf(jsons))
	b = append(b, `{"origin":`...)
	b, _ = appendJSONValue(b, a.serverName)
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, time.Now().UnixMilli(), 10)
	b = append(b, `,"pdus":`...)
	b = appendPDUArray(b, jsons)
	b = append(b, '}')
	httputil.WriteJSONBytes(w, http.StatusOK, b)
}

func sizeOf(jsons [][]byte) int {
	n := 0
	for _, j := range jsons {
		n += len(j) + 1
	}
	return n
}

func appendJSONValue(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

// stateAndChain returns the state before eventID and the auth chain of that state.
func (a *API) stateAndChain(ctx context.Context, eventID id.EventID) ([]*roomserver.StoredEvent, []*roomserver.StoredEvent, error) {
	entries, err := a.rs.StateAtEvent(ctx, eventID, false)
	if err != nil {
		return nil, nil, err
	}
	state := make([]*roomserver.StoredEvent, len(entries))
	ids := make([]id.EventID, len(entries))
	for i, e := range entries {
		state[i] = e.Event
		ids[i] = e.Event.ID()
	}
	chain, err := a.rs.AuthChain(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	return state, chain, nil
}

// stateQuery reads and checks the room and event_id of /state and /state_ids.
func (a *API) stateQuery(r *http.Request, origin string) (id.EventID, error) {
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	eventID := id.EventID(r.URL.Query().Get("event_id"))
	if eventID == "" {
		return "", httputil.MissingParam("event_id is required")
	}
	if err := a.requireInRoom(r.Context(), roomID, eventID, origin); err != nil {
		return "", err
	}
	ev, err := a.eventInRoom(r.Context(), roomID, eventID)
	if err != nil {
		return "", err
	}
	if ev.Outlier || ev.Rejected {
		return "", httputil.NotFound("No state is known at %s", eventID)
	}
	return eventID, nil
}

// GET /_matrix/federation/v1/state/{roomId}?event_id=
func (a *API) getState(w http.ResponseWriter, r *http.Request, origin string) error {
	eventID, err := a.stateQuery(r, origin)
	if err != nil {
		return err
	}
	state, chain, err := a.stateAndChain(r.Context(), eventID)
	if err != nil {
		return err
	}
	b := make([]byte, 0, 64+64*len(state)+64*len(chain))
	b = append(b, `{"auth_chain":`...)
	b = appendPDUArray(b, a.jsonsOf(chain))
	b = append(b, `,"pdus":`...)
	b = appendPDUArray(b, a.jsonsOf(state))
	b = append(b, '}')
	httputil.WriteJSONBytes(w, http.StatusOK, b)
	return nil
}

// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=
func (a *API) getStateIDs(w http.ResponseWriter, r *http.Request, origin string) error {
	eventID, err := a.stateQuery(r, origin)
	if err != nil {
		return err
	}
	state, chain, err := a.stateAndChain(r.Context(), eventID)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"pdu_ids": idsOf(state), "auth_chain_ids": idsOf(chain)})
	return nil
}

func (a *API) jsonsOf(evs []*roomserver.StoredEvent) [][]byte {
	out := make([][]byte, len(evs))
	for i, e := range evs {
		out[i] = a.storedJSON(e)
	}
	return out
}

func idsOf(evs []*roomserver.StoredEvent) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.ID()
	}
	return out
}

// GET /_matrix/federation/v1/event/{eventId}
func (a *API) getEvent(w http.ResponseWriter, r *http.Request, origin string) error {
	eventID := id.EventID(mux.Vars(r)["eventId"])
	ev, err := a.rs.Event(r.Context(), eventID)
	if errors.Is(err, roomserver.ErrEventNotFound) {
		return httputil.NotFound("Unknown event %s", eventID)
	}
	if err != nil {
		return err
	}
	if err := a.requireInRoom(r.Context(), ev.RoomID(), eventID, origin); err != nil {
		return err
	}
	j, err := a.visibleJSON(r.Context(), ev, origin)
	if err != nil {
		return err
	}
	a.pduTransaction(w, [][]byte{j})
	return nil
}

// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
func (a *API) getEventAuth(w http.ResponseWriter, r *http.Request, origin string) error {
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	eventID := id.EventID(mux.Vars(r)["eventId"])
	if err := a.requireInRoom(r.Context(), roomID, eventID, origin); err != nil {
		return err
	}
	if _, err := a.eventInRoom(r.Context(), roomID, eventID); err != nil {
		return err
	}
	chain, err := a.rs.AuthChain(r.Context(), []id.EventID{eventID})
	if err != nil {
		return err
	}
	b := append([]byte(`{"auth_chain":`), appendPDUArray(nil, a.jsonsOf(chain))...)
	httputil.WriteJSONBytes(w, http.StatusOK, append(b, '}'))
	return nil
}

// GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=
func (a *API) getBackfill(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 {
		return httputil.InvalidParam("limit must be a positive integer")
	}
	limit = min(limit, maxBackfillLimit)
	var from []id.EventID
	for _, v := range q["v"] {
		from = append(from, id.EventID(v))
	}
	if len(from) == 0 {
		return httputil.MissingParam("v is required")
	}
	if err := a.requireInRoom(ctx, roomID, "", origin); err != nil {
		return err
	}
	evs, err := a.walkPrevs(ctx, roomID, from, nil, 0, limit)
	if err != nil {
		return err
	}
	jsons, err := a.visibleJSONs(ctx, evs, origin)
	if err != nil {
		return err
	}
	a.pduTransaction(w, jsons)
	return nil
}

// POST /_matrix/federation/v1/get_missing_events/{roomId}
func (a *API) postGetMissingEvents(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	var req struct {
		Earliest []id.EventID `json:"earliest_events"`
		Latest   []id.EventID `json:"latest_events"`
		Limit    *int         `json:"limit"`
		MinDepth int64        `json:"min_depth"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return err
	}
	limit := 10
	if req.Limit != nil {
		limit = max(0, min(*req.Limit, maxMissingEventsLimit))
	}
	if err := a.requireInRoom(ctx, roomID, "", origin); err != nil {
		return err
	}
	skip := make(map[id.EventID]struct{}, len(req.Earliest))
	for _, e := range req.Earliest {
		skip[e] = struct{}{}
	}
	// The walk starts at the prev events of latest_events, which are not returned.
	latest, err := a.rs.Events(ctx, req.Latest)
	if err != nil {
		return err
	}
	var start []id.EventID
	for _, e := range latest {
		if e.RoomID() == roomID {
			start = append(start, e.PrevEventIDs()...)
		}
	}
	evs, err := a.walkPrevs(ctx, roomID, start, skip, req.MinDepth, limit)
	if err != nil {
		return err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	jsons, err := a.visibleJSONs(ctx, evs, origin)
	if err != nil {
		return err
	}
	b := append([]byte(`{"events":`), appendPDUArray(nil, jsons)...)
	httputil.WriteJSONBytes(w, http.StatusOK, append(b, '}'))
	return nil
}

func (a *API) visibleJSONs(ctx context.Context, evs []*roomserver.StoredEvent, origin string) ([][]byte, error) {
	out := make([][]byte, len(evs))
	for i, e := range evs {
		j, err := a.visibleJSON(ctx, e, origin)
		if err != nil {
			return nil, err
		}
		out[i] = j
	}
	return out, nil
}

// walkPrevs walks prev_events from the start events, deepest first, skipping the
// events in skip (and not walking past them), events below minDepth, outliers and
// rejected events, until limit events are collected. Soft-failed events are
// returned only when reached through an event that cites them, as the spec asks.
// The start events themselves are the first candidates.
func (a *API) walkPrevs(ctx context.Context, roomID id.RoomID, start []id.EventID, skip map[id.EventID]struct{}, minDepth int64, limit int) ([]*roomserver.StoredEvent, error) {
	seen := make(map[id.EventID]struct{}, limit*2)
	h := &depthHeap{}
	push := func(ids []id.EventID) error {
		var todo []id.EventID
		for _, x := range ids {
			if _, ok := seen[x]; ok {
				continue
			}
			seen[x] = struct{}{}
			if _, ok := skip[x]; ok {
				continue
			}
			todo = append(todo, x)
		}
		if len(todo) == 0 {
			return nil
		}
		evs, err := a.rs.Events(ctx, todo)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.RoomID() != roomID || e.Outlier || e.Rejected || e.Depth() < minDepth {
				continue
			}
			heap.Push(h, e)
		}
		return nil
	}
	if err := push(start); err != nil {
		return nil, err
	}
	var out []*roomserver.StoredEvent
	for h.Len() > 0 && len(out) < limit {
		e := heap.Pop(h).(*roomserver.StoredEvent)
		out = append(out, e)
		if err := push(e.PrevEventIDs()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// depthHeap is a max-heap of events by depth (then stream position).
type depthHeap []*roomserver.StoredEvent

func (h depthHeap) Len() int { return len(h) }
func (h depthHeap) Less(i, j int) bool {
	if h[i].Depth() != h[j].Depth() {
		return h[i].Depth() > h[j].Depth()
	}
	return h[i].StreamPos > h[j].StreamPos
}
func (h depthHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *depthHeap) Push(x any)   { *h = append(*h, x.(*roomserver.StoredEvent)) }
func (h *depthHeap) Pop() any {
	old := *h
	n := len(old)
	x := old[n-1]
	*h = old[:n-1]
	return x
}
