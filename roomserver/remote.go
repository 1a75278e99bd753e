package roomserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/auth"
	"hearth/roomserver/events"
)

// MissingEventsError says which events must be fetched (and input) before an event
// can be processed: auth events as outliers, prev events with their state.
type MissingEventsError struct {
	AuthEvents []id.EventID
	PrevEvents []id.EventID
}

func (e *MissingEventsError) Error() string {
	return fmt.Sprintf("missing %d auth events and %d prev events", len(e.AuthEvents), len(e.PrevEvents))
}

// InputResult says what became of a remote event.
type InputResult struct {
	Output     *OutputEvent // nil for outliers and duplicates
	Duplicate  bool
	Rejected   error // the auth failure, when the event was stored as rejected
	SoftFailed error // the failure against current state, when soft-failed
}

// InputRemoteEvent runs the checks the Server-Server API requires on receipt of a PDU
// ("Checks performed on receipt of a PDU") from step 4 on, and stores the event. The
// caller (federation) has already parsed the event for its room version (step 1),
// verified its signatures (step 2) and its content hash, redacting it on mismatch
// (step 3). Then:
//
//  4. the event must pass the auth rules against its own auth_events, else it is
//     stored as rejected;
//  5. it must pass them against the state before it (resolved from its prev_events),
//     else it is stored as rejected;
//  6. it must pass them against the room's current state, else it is stored but
//     "soft failed": kept out of the forward extremities and from clients.
//
// Unknown auth or prev events yield a *MissingEventsError and nothing is stored.
func (r *Roomserver) InputRemoteEvent(ctx context.Context, ev *events.Event) (*InputResult, error) {
	return r.input(ctx, ev, false)
}

// InputOutlier stores an event without state (an auth event or a state event fetched
// for a join), checking it against its own auth_events only.
func (r *Roomserver) InputOutlier(ctx context.Context, ev *events.Event) (*InputResult, error) {
	return r.input(ctx, ev, true)
}

// EnsureRoom records a room this server learns of from elsewhere (a join through a
// remote server), so its events can be input.
func (r *Roomserver) EnsureRoom(ctx context.Context, roomID id.RoomID, version id.RoomVersion) error {
	_, err := r.db.Exec(ctx, `INSERT INTO rooms (room_id, room_version, created_ts) VALUES ($1, $2, 0) ON CONFLICT (room_id) DO NOTHING`, string(roomID), string(version))
	if err != nil {
		return fmt.Errorf("recording room %s: %w", roomID, err)
	}
	return nil
}

func (r *Roomserver) input(ctx context.Context, ev *events.Event, outlier bool) (*InputResult, error) {
	rm, err := r.lockRoom(ctx, ev.RoomID())
	if err != nil {
		return nil, err
	}
	defer rm.mu.Unlock()
	if ev.Version().ID != rm.version.ID {
		return nil, &BadEventError{Err: fmt.Errorf("event parsed as room version %s, room is %s", ev.Version().ID, rm.version.ID)}
	}
	if known, err := r.eventsByID(ctx, r.db, []id.EventID{ev.ID()}); err != nil {
		return nil, err
	} else if len(known) > 0 && (outlier || !known[0].Outlier) {
		return &InputResult{Duplicate: true}, nil
	} else if len(known) > 0 {
		// Known as an outlier and now arriving in the timeline: not supported
		// without rewriting the stored row; treat as duplicate.
		return &InputResult{Duplicate: true}, nil
	}
	// Step 4: auth events.
	authIDs := ev.AuthEventIDs()
	authEvs, err := r.eventsByID(ctx, r.db, authIDs)
	if err != nil {
		return nil, err
	}
	byID := make(map[id.EventID]*StoredEvent, len(authEvs))
	for _, e := range authEvs {
		byID[e.ID()] = e
	}
	createID := id.EventID("")
	if rm.version.RoomIDIsCreateEventID && ev.Type() != "m.room.create" {
		createID = id.EventID("$" + string(ev.RoomID())[1:])
		if _, ok := byID[createID]; !ok {
			cs, err := r.eventsByID(ctx, r.db, []id.EventID{createID})
			if err != nil {
				return nil, err
			}
			for _, c := range cs {
				byID[c.ID()] = c
			}
		}
	}
	var missing MissingEventsError
	for _, a := range authIDs {
		if _, ok := byID[a]; !ok {
			missing.AuthEvents = append(missing.AuthEvents, a)
		}
	}
	if createID != "" {
		if _, ok := byID[createID]; !ok {
			missing.AuthEvents = append(missing.AuthEvents, createID)
		}
	}
	var prevs []*StoredEvent
	if !outlier {
		prevs, err = r.eventsByID(ctx, r.db, ev.PrevEventIDs())
		if err != nil {
			return nil, err
		}
		have := map[id.EventID]bool{}
		for _, p := range prevs {
			if !p.Outlier {
				have[p.ID()] = true
			}
		}
		for _, p := range ev.PrevEventIDs() {
			if !have[p] {
				missing.PrevEvents = append(missing.PrevEvents, p)
			}
		}
	}
	if len(missing.AuthEvents) > 0 || len(missing.PrevEvents) > 0 {
		return nil, &missing
	}
	authNIDs := make([]int64, 0, len(authIDs))
	for _, a := range authIDs {
		authNIDs = append(authNIDs, byID[a].NID)
	}
	res := &InputResult{}
	in := &persistInput{ev: ev, authNIDs: authNIDs, outlier: outlier, pendingRedactions: true}
	if err := r.ownAuthRejection(rm, ev, byID); err != nil {
		res.Rejected, in.rejected = err, true
	}
	if !outlier {
		// Step 5: the state before the event.
		states := make([]stateMap, 0, len(prevs))
		for _, p := range prevs {
			s, _, err := r.loadSnapshot(ctx, r.db, p.StateAfter)
			if err != nil {
				return nil, err
			}
			states = append(states, s)
		}
		before, err := r.resolveStates(ctx, r.db, rm, states, nil)
		if err != nil {
			return nil, err
		}
		switch len(prevs) {
		case 0:
			// Only a create event has no prev_events; anything else fails the auth
			// rules against this empty state.
			in.stateBefore = stateMap{}
		case 1:
			in.stateBeforeNID = prevs[0].StateAfter
			in.stateBefore, in.stateBeforeMeta, _ = r.loadSnapshot(ctx, r.db, prevs[0].StateAfter)
		default:
			in.stateBefore = before
			in.stateBeforeIsFresh = true
			in.freshParentNID = prevs[0].StateAfter
			in.freshParentState, in.freshParentMeta, err = r.loadSnapshot(ctx, r.db, prevs[0].StateAfter)
			if err != nil {
				return nil, err
			}
		}
		if !in.rejected {
			if err := r.checkAgainst(ctx, rm, ev, before); err != nil {
				res.Rejected = err
				in.rejected = true
			}
		}
		// Step 6: soft failure against the current state.
		if !in.rejected {
			if err := r.checkAgainst(ctx, rm, ev, rm.current); err != nil {
				res.SoftFailed = err
				in.softFailed = true
			}
		}
	}
	if in.rejected {
		slog.Info("rejected event", "event_id", ev.ID(), "room_id", rm.id, "reason", res.Rejected)
	} else if in.softFailed {
		slog.Info("soft-failed event", "event_id", ev.ID(), "room_id", rm.id, "reason", res.SoftFailed)
	}
	out, err := r.persist(ctx, rm, in)
	if errors.Is(err, errDuplicateEvent) {
		return &InputResult{Duplicate: true}, nil
	}
	if err != nil {
		return nil, err
	}
	if !outlier {
		res.Output = out
	}
	return res, nil
}

// ownAuthRejection is step 4 of the checks on receipt of a PDU: the event must
// pass the auth rules against its own auth_events (byID holds them, stored). An
// oversized field that older room versions keep as rejected rejects it too (see
// events.Event.FormatRejection).
func (r *Roomserver) ownAuthRejection(rm *room, ev *events.Event, byID map[id.EventID]*StoredEvent) error {
	if err := ev.FormatRejection(); err != nil {
		return err
	}
	getEvents := func(ids []id.EventID) ([]*pdu.PDU, error) {
		out := make([]*pdu.PDU, len(ids))
		for i, x := range ids {
			if e, ok := byID[x]; ok {
				out[i] = e.authPDU()
			}
		}
		return out, nil
	}
	return auth.CheckAuthEvents(rm.version.ID, ev.PDU(), getEvents, r.getKey)
}
