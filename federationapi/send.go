package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// Transaction limits (Server-Server API, "Transactions").
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// txnTimeout bounds the processing of one received transaction, including
	// fetching missing events; it goes on if the sender hangs up.
	txnTimeout = 2 * time.Minute
	// txnMemory is how long received transaction IDs are remembered.
	txnMemory = 24 * time.Hour
)

// PUT /_matrix/federation/v1/send/{txnId}
func (a *API) putSend(w http.ResponseWriter, r *http.Request, origin string) error {
	txnID := mux.Vars(r)["txnId"]
	var body struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []json.RawMessage `json:"edus"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Origin != "" && body.Origin != origin {
		return httputil.InvalidParam("Transaction origin %q is not the authenticated origin", body.Origin)
	}
	if len(body.PDUs) > maxTxnPDUs || len(body.EDUs) > maxTxnEDUs {
		return httputil.BadJSON("A transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs)
	}
	// One transaction per origin at a time: a retry of a slow transaction waits
	// for it and is then answered from the record.
	unlock := a.originLocks.lock(origin)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), txnTimeout)
	defer cancel()
	if resp, ok, err := a.store.txnResponse(ctx, origin, txnID); err != nil {
		return err
	} else if ok {
		httputil.WriteJSONBytes(w, http.StatusOK, resp)
		return nil
	}
	results := a.processPDUs(ctx, origin, body.PDUs)
	a.processEDUs(ctx, origin, body.EDUs)
	pdus := make(map[string]any, len(results))
	for eid, err := range results {
		if err != nil {
			pdus[string(eid)] = map[string]string{"error": err.Error()}
		} else {
			pdus[string(eid)] = struct{}{}
		}
	}
	resp, err := json.Marshal(map[string]any{"pdus": pdus})
	if err != nil {
		return err
	}
	now := time.Now()
	if err := a.store.saveTxn(ctx, origin, txnID, resp, now.UnixMilli(), now.Add(-txnMemory).UnixMilli()); err != nil {
		slog.Warn("recording received transaction", "origin", origin, "txn_id", txnID, "err", err)
	}
	httputil.WriteJSONBytes(w, http.StatusOK, resp)
	return nil
}

// processPDUs runs the checks on received PDUs and inputs them, room by room in
// depth order, returning the result of each PDU whose event ID is known.
func (a *API) processPDUs(ctx context.Context, origin string, raws []json.RawMessage) map[id.EventID]error {
	results := make(map[id.EventID]error, len(raws))
	byRoom := map[id.RoomID][]json.RawMessage{}
	var rooms []id.RoomID
	for _, raw := range raws {
		roomID := id.RoomID(gjson.GetBytes(raw, "room_id").Str)
		if roomID == "" {
			continue // no room: the event cannot even be identified
		}
		if _, ok := byRoom[roomID]; !ok {
			rooms = append(rooms, roomID)
		}
		byRoom[roomID] = append(byRoom[roomID], raw)
	}
	for _, roomID := range rooms {
		a.joins.wait(ctx, roomID)
		v, err := a.rs.RoomVersion(ctx, roomID)
		if err != nil {
			// Without the room's version the event ID of a room v3+ event cannot be
			// computed; room v1/v2 events carry theirs.
			for _, raw := range byRoom[roomID] {
				if eid := gjson.GetBytes(raw, "event_id").Str; eid != "" {
					results[id.EventID(eid)] = errRoomUnknown
				}
			}
			if !errors.Is(err, roomserver.ErrRoomNotFound) {
				slog.Warn("looking up room of received PDUs", "room_id", roomID, "err", err)
			} else {
				a.takeInviteRescissions(ctx, origin, roomID, byRoom[roomID], results)
			}
			continue
		}
		// Server ACLs apply per PDU (Server-Server API, "Server Access Control
		// Lists (ACLs)").
		if ok, err := a.aclAllows(ctx, roomID, origin); err != nil || !ok {
			if err == nil {
				err = fmt.Errorf("server %s is denied by the room's server ACL", origin)
			}
			for _, raw := range byRoom[roomID] {
				if e, perr := events.Parse(v.ID, raw); perr == nil {
					results[e.ID()] = err
				}
			}
			continue
		}
		verified := a.verifyPDUs(ctx, v.ID, byRoom[roomID])
		var evs []*events.Event
		for _, vp := range verified {
			if vp.err != nil {
				if eid := gjson.GetBytes(vp.raw, "event_id").Str; eid != "" {
					results[id.EventID(eid)] = vp.err
				} else if e, perr := events.Parse(v.ID, vp.raw); perr == nil {
					results[e.ID()] = vp.err
				}
				slog.Info("dropped received PDU", "origin", origin, "room_id", roomID, "err", vp.err)
				continue
			}
			evs = append(evs, vp.ev)
		}
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
		for _, ev := range evs {
			results[ev.ID()] = pduResult(origin, ev, a.handlePDU(ctx, origin, ev, true))
		}
	}
	return results
}

// handlePDU inputs a verified PDU (steps 4–6 of "Checks performed on receipt
// of a PDU" are the room engine's), fetching from origin what it needs first.
// Missing prev events come first, as their state may bring the auth events:
//
//   - for a pushed event (one origin sent in a transaction), the events
//     between this server's forward extremities and it, by get_missing_events.
//     If the gap is still open, the event is not taken in: it was pushed, so
//     origin has no excuse for not supplying its prev events, and trusting
//     state for it could make it the room's only extremity with that state
//     (Synapse does the same);
//   - for a pulled event (one get_missing_events returned), the state after
//     each missing prev event, by /state_ids (and /event or /state).
//
// Then missing auth events are fetched by /event_auth and, failing that, one
// by one by /event. An event whose auth events cannot be had is not stored:
// that they could not be fetched does not mean they do not exist.
//
// A rejected event is stored and reported as a *rejectedError; an event that
// could not be taken in yields an *unavailableError. Soft failure is not an
// error.
func (a *API) handlePDU(ctx context.Context, origin string, ev *events.Event, pushed bool) (err error) {
	// A panic while processing one PDU must not fail the whole transaction, which
	// the sender would then retry forever.
	defer func() {
		if p := recover(); p != nil {
			slog.Error("panic processing PDU", "event_id", ev.ID(), "panic", fmt.Sprint(p))
			err = fmt.Errorf("internal error processing %s", ev.ID())
		}
	}()
	var (
		res        *roomserver.InputResult
		prevStates map[id.EventID][]id.EventID
		missing    *roomserver.MissingEventsError
		triedGME   bool
		triedAuth  bool
	)
	input := func() {
		if prevStates != nil {
			res, err = a.rs.InputEventWithState(ctx, ev, prevStates)
		} else {
			res, err = a.rs.InputRemoteEvent(ctx, ev)
		}
	}
	input()
	for errors.As(err, &missing) {
		switch {
		case len(missing.PrevEvents) > 0 && pushed && !triedGME:
			triedGME = true
			if ferr := a.fetchMissingPrevs(ctx, origin, ev); ferr != nil {
				slog.Info("get_missing_events failed", "origin", origin, "event_id", ev.ID(), "err", ferr)
			}
		case len(missing.PrevEvents) > 0 && pushed:
			return &unavailableError{fmt.Errorf("%s did not supply the %d prev events of %s", origin, len(missing.PrevEvents), ev.ID())}
		case len(missing.PrevEvents) > 0 && prevStates == nil:
			if prevStates, err = a.statesAcrossGap(ctx, origin, ev, missing.PrevEvents); err != nil {
				return &unavailableError{err}
			}
		case len(missing.AuthEvents) > 0 && !triedAuth:
			triedAuth = true
			a.fetchAuthEvents(ctx, origin, ev, missing.AuthEvents)
		default:
			return &unavailableError{fmt.Errorf("cannot get the events %s needs: %w", ev.ID(), err)}
		}
		input()
	}
	if err != nil {
		return err
	}
	if res.Rejected != nil {
		return &rejectedError{res.Rejected}
	}
	return nil
}

// rejectedError is an event stored as rejected (steps 4 and 5).
type rejectedError struct{ err error }

func (e *rejectedError) Error() string { return "rejected: " + e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// unavailableError is an event not taken in because the events it needs could
// not be had.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// pduResult is what the response to PUT /send says of a PDU that passed the
// checks on its format, signatures and hashes (steps 1–3) and the room's
// server ACL: success, even when it was rejected or could not be placed in the
// room for want of events origin did not supply. Those outcomes are logged.
// The spec leaves what counts as an error open; Synapse processes received
// PDUs after answering and so reports none, and senders act on none: a
// per-PDU error is neither retried nor shown. Only a failure of this server
// itself is reported.
func pduResult(origin string, ev *events.Event, err error) error {
	var rej *rejectedError
	var un *unavailableError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &rej):
		return nil // logged by the room engine
	case errors.As(err, &un):
		slog.Info("received PDU not taken in", "origin", origin, "event_id", ev.ID(), "room_id", ev.RoomID(), "err", err)
		return nil
	}
	slog.Warn("processing received PDU", "origin", origin, "event_id", ev.ID(), "room_id", ev.RoomID(), "err", err)
	return err
}

// processEDUs hands EDUs to the registered handlers; unknown types are ignored.
func (a *API) processEDUs(ctx context.Context, origin string, raws []json.RawMessage) {
	for _, raw := range raws {
		var edu struct {
			Type    string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &edu); err != nil || edu.Type == "" {
			continue
		}
		handlers := a.eduHandlers(edu.Type)
		if len(handlers) == 0 {
			continue
		}
		content, ok := a.aclFilterEDU(ctx, origin, edu.Type, edu.Content)
		if !ok {
			continue
		}
		edu.Content = content
		for _, h := range handlers {
			if err := safeHandleEDU(ctx, h, origin, edu.Type, edu.Content); err != nil {
				slog.Info("EDU handler failed", "origin", origin, "edu_type", edu.Type, "err", err)
			}
		}
	}
}

func safeHandleEDU(ctx context.Context, h EDUHandler, origin, eduType string, content json.RawMessage) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h.HandleEDU(ctx, origin, eduType, content)
}

// aclFilterEDU applies room server ACLs to the room-scoped EDUs: a typing
// notification for a room that denies origin is dropped, and receipts are kept
// only for rooms that allow it. ok is false when nothing is left.
func (a *API) aclFilterEDU(ctx context.Context, origin, eduType string, content json.RawMessage) (json.RawMessage, bool) {
	allowed := func(roomID string) bool {
		ok, err := a.aclAllows(ctx, id.RoomID(roomID), origin)
		return err == nil && ok
	}
	switch eduType {
	case "m.typing":
		return content, allowed(gjson.GetBytes(content, "room_id").Str)
	case "m.receipt":
		var byRoom map[string]json.RawMessage
		if json.Unmarshal(content, &byRoom) != nil {
			return nil, false
		}
		for roomID := range byRoom {
			if !allowed(roomID) {
				delete(byRoom, roomID)
			}
		}
		if len(byRoom) == 0 {
			return nil, false
		}
		b, err := json.Marshal(byRoom)
		return b, err == nil
	}
	return content, true
}
