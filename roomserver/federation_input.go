package roomserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
	"hearth/storage"
)

// InputEventWithState is InputRemoteEvent for an event whose prev_events the store
// does not have (or has only as outliers): the federation API supplies, for each
// such prev event, the state after it, as IDs of events already stored (outliers
// are fine). Known prev events contribute their stored state after; the states are
// resolved into the state before the event. This is how a joining server stores
// the join event with the state from send_join, and how a gap that
// get_missing_events could not fill is bridged with /state_ids.
//
// The checks are those of InputRemoteEvent (steps 4–6 of "Checks performed on
// receipt of a PDU"), except that when this server has no forward extremities in
// the room yet (it is joining), there is no current state to soft-fail against,
// and the event's state after becomes the current state.
//
// A *MissingEventsError lists supplied state events and auth events that are not
// stored (as AuthEvents) and prev events with no state (as PrevEvents).
func (r *Roomserver) InputEventWithState(ctx context.Context, ev *events.Event, prevStates map[id.EventID][]id.EventID) (*InputResult, error) {
	// State keys of the supplied states are interned before the room is locked:
	// interning is idempotent and may take a while for a big room.
	supplied := make(map[id.EventID][]*StoredEvent, len(prevStates))
	var missing MissingEventsError
	for prev, ids := range prevStates {
		evs, err := r.eventsByID(ctx, r.db, ids)
		if err != nil {
			return nil, err
		}
		if len(evs) != len(ids) {
			have := make(map[id.EventID]struct{}, len(evs))
			for _, e := range evs {
				have[e.ID()] = struct{}{}
			}
			for _, x := range ids {
				if _, ok := have[x]; !ok && !slices.Contains(missing.AuthEvents, x) {
					missing.AuthEvents = append(missing.AuthEvents, x)
				}
			}
		}
		supplied[prev] = evs
	}
	if len(missing.AuthEvents) > 0 {
		return nil, &missing
	}
	if err := r.internStateKeys(ctx, supplied); err != nil {
		return nil, err
	}

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
	} else if len(known) > 0 {
		return &InputResult{Duplicate: true}, nil
	}
	authIDs := ev.AuthEventIDs()
	authEvs, err := r.eventsByID(ctx, r.db, authIDs)
	if err != nil {
		return nil, err
	}
	byID := make(map[id.EventID]*StoredEvent, len(authEvs))
	for _, e := range authEvs {
		byID[e.ID()] = e
	}
	for _, a := range authIDs {
		if _, ok := byID[a]; !ok {
			missing.AuthEvents = append(missing.AuthEvents, a)
		}
	}
	if rm.version.RoomIDIsCreateEventID && ev.Type() != "m.room.create" {
		createID := id.EventID("$" + string(ev.RoomID())[1:])
		if _, ok := byID[createID]; !ok {
			cs, err := r.eventsByID(ctx, r.db, []id.EventID{createID})
			if err != nil {
				return nil, err
			}
			if len(cs) == 0 {
				missing.AuthEvents = append(missing.AuthEvents, createID)
			}
			for _, c := range cs {
				byID[c.ID()] = c
			}
		}
	}
	// The states after the prev events: stored ones for known timeline events,
	// supplied ones for the rest.
	prevs, err := r.eventsByID(ctx, r.db, ev.PrevEventIDs())
	if err != nil {
		return nil, err
	}
	stored := make(map[id.EventID]*StoredEvent, len(prevs))
	for _, p := range prevs {
		if !p.Outlier && p.RoomNID == rm.nid {
			stored[p.ID()] = p
		}
	}
	var (
		states    []stateMap
		parentNID int64
	)
	for _, p := range ev.PrevEventIDs() {
		if se, ok := stored[p]; ok {
			s, _, err := r.loadSnapshot(ctx, r.db, se.StateAfter)
			if err != nil {
				return nil, err
			}
			states = appendDistinctState(states, s)
			if parentNID == 0 {
				parentNID = se.StateAfter
			}
			continue
		}
		evs, ok := supplied[p]
		if !ok {
			missing.PrevEvents = append(missing.PrevEvents, p)
			continue
		}
		s, err := r.stateMapOf(ctx, rm, evs)
		if err != nil {
			return nil, err
		}
		states = appendDistinctState(states, s)
	}
	if len(missing.AuthEvents) > 0 || len(missing.PrevEvents) > 0 {
		return nil, &missing
	}
	if len(states) == 0 {
		return nil, &BadEventError{Err: errors.New("event has no prev_events")}
	}
	before, err := r.resolveStates(ctx, r.db, rm, states, nil)
	if err != nil {
		return nil, err
	}

	res := &InputResult{}
	authNIDs := make([]int64, 0, len(authIDs))
	for _, a := range authIDs {
		authNIDs = append(authNIDs, byID[a].NID)
	}
	in := &persistInput{ev: ev, authNIDs: authNIDs, stateBefore: before, stateBeforeIsFresh: true, pendingRedactions: true}
	if parentNID != 0 {
		in.freshParentNID = parentNID
		if in.freshParentState, in.freshParentMeta, err = r.loadSnapshot(ctx, r.db, parentNID); err != nil {
			return nil, err
		}
	} else {
		in.freshParentState = stateMap{}
	}
	// Step 4: the event's own auth events.
	if err := r.ownAuthRejection(rm, ev, byID); err != nil {
		res.Rejected, in.rejected = err, true
	}
	// Step 5: the state before the event.
	if !in.rejected {
		if err := r.checkAgainst(ctx, rm, ev, before); err != nil {
			res.Rejected, in.rejected = err, true
		}
	}
	// Step 6: soft failure against the current state, once there is one.
	if !in.rejected && len(rm.extremities) > 0 {
		if err := r.checkAgainst(ctx, rm, ev, rm.current); err != nil {
			res.SoftFailed, in.softFailed = err, true
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
	res.Output = out
	return res, nil
}

// appendDistinctState adds s to states unless an equal state is there already.
func appendDistinctState(states []stateMap, s stateMap) []stateMap {
	for _, o := range states {
		if sameState(o, s) {
			return states
		}
	}
	return append(states, s)
}

// stateMapOf turns supplied state events into a state map, leaving out rejected
// events, events of other rooms and non-state events. For one key, the first event
// listed wins.
func (r *Roomserver) stateMapOf(ctx context.Context, rm *room, evs []*StoredEvent) (stateMap, error) {
	s := make(stateMap, len(evs))
	for _, e := range evs {
		if e.Rejected || e.RoomNID != rm.nid || !e.IsState() {
			continue
		}
		kn, err := r.keys.lookup(ctx, r.db, pdu.StateKey{Type: e.Type(), StateKey: *e.StateKey()})
		if err != nil {
			return nil, err
		}
		if kn == 0 {
			return nil, fmt.Errorf("state key of %s was not interned", e.ID())
		}
		if _, dup := s[kn]; !dup {
			s[kn] = e.NID
		}
	}
	return s, nil
}

// internStateKeys interns the state keys of the supplied events in one transaction.
func (r *Roomserver) internStateKeys(ctx context.Context, supplied map[id.EventID][]*StoredEvent) error {
	var todo []pdu.StateKey
	seen := map[pdu.StateKey]struct{}{}
	for _, evs := range supplied {
		for _, e := range evs {
			if !e.IsState() {
				continue
			}
			k := pdu.StateKey{Type: e.Type(), StateKey: *e.StateKey()}
			if _, ok := seen[k]; ok {
				continue
			}
			seen[k] = struct{}{}
			if kn, err := r.keys.lookup(ctx, r.db, k); err != nil {
				return err
			} else if kn == 0 {
				todo = append(todo, k)
			}
		}
	}
	if len(todo) == 0 {
		return nil
	}
	nids := make([]int64, len(todo))
	err := r.db.WithTx(ctx, func(tx *storage.Tx) error {
		for i, k := range todo {
			n, err := r.keys.assign(ctx, tx, k)
			if err != nil {
				return err
			}
			nids[i] = n
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("interning state keys: %w", err)
	}
	for i, k := range todo {
		r.keys.remember(k, nids[i])
	}
	return nil
}

// EventTemplate returns a new event in roomID as of the room's current state —
// prev_events, auth_events, depth and (room v1/v2) reference hashes filled in — but
// neither signed nor stored: what make_join, make_leave and make_knock send to a
// remote server, whose user is the sender.
func (r *Roomserver) EventTemplate(ctx context.Context, roomID id.RoomID, req SendRequest) (*events.ProtoEvent, *roomversion.Version, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	defer rm.mu.Unlock()
	proto, _, err := r.protoLocal(ctx, rm, req)
	if err != nil {
		return nil, nil, err
	}
	return proto, rm.version, nil
}

// CheckAgainstCurrentState applies the auth rules to ev with the room's current
// state (make_join and friends check that the event they offer would be allowed).
// It returns a *NotAllowedError when it is not.
func (r *Roomserver) CheckAgainstCurrentState(ctx context.Context, ev *events.Event) error {
	rm, err := r.lockRoom(ctx, ev.RoomID())
	if err != nil {
		return err
	}
	defer rm.mu.Unlock()
	if err := r.checkAgainst(ctx, rm, ev, rm.current); err != nil {
		return &NotAllowedError{Err: err}
	}
	return nil
}

// ServerJoined reports whether any user of server is joined to roomID in the state
// before eventID, or in the current state when eventID is empty. It reads only the
// member events of that server's users.
func (r *Roomserver) ServerJoined(ctx context.Context, roomID id.RoomID, eventID id.EventID, server string) (bool, error) {
	var s stateMap
	if eventID == "" {
		rm, err := r.lockRoom(ctx, roomID)
		if err != nil {
			return false, err
		}
		s = rm.current
		rm.mu.Unlock()
	} else {
		var err error
		if s, err = r.stateMapAt(ctx, eventID, false); err != nil {
			return false, err
		}
	}
	keyNIDs := make([]int64, 0, len(s))
	for k := range s {
		keyNIDs = append(keyNIDs, k)
	}
	keys, err := r.keys.keysOf(ctx, r.db, keyNIDs, true)
	if err != nil {
		return false, err
	}
	suffix := ":" + server
	var nids []int64
	for kn, k := range keys {
		if k.Type == "m.room.member" && strings.HasSuffix(k.StateKey, suffix) && id.UserID(k.StateKey).Homeserver() == server {
			nids = append(nids, s[kn])
		}
	}
	evs, err := r.eventsByNID(ctx, r.db, nids)
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		if gjson.GetBytes(e.Content(), "membership").Str == "join" {
			return true, nil
		}
	}
	return false, nil
}
