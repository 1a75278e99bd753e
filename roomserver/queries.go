package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Event returns a stored event by ID, or ErrEventNotFound.
func (r *Roomserver) Event(ctx context.Context, eventID id.EventID) (*StoredEvent, error) {
	evs, err := r.eventsByID(ctx, r.db, []id.EventID{eventID})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrEventNotFound
	}
	return evs[0], nil
}

// Events returns the known events among ids, in no particular order.
func (r *Roomserver) Events(ctx context.Context, ids []id.EventID) ([]*StoredEvent, error) {
	return r.eventsByID(ctx, r.db, ids)
}

// StateEntry is one entry of a room state.
type StateEntry struct {
	Key   pdu.StateKey
	Event *StoredEvent
}

// expandState turns a state map into its events.
func (r *Roomserver) expandState(ctx context.Context, s stateMap) ([]StateEntry, error) {
	keyNIDs := make([]int64, 0, len(s))
	evNIDs := make([]int64, 0, len(s))
	for k, v := range s {
		keyNIDs = append(keyNIDs, k)
		evNIDs = append(evNIDs, v)
	}
	keys, err := r.keys.keysOf(ctx, r.db, keyNIDs, true)
	if err != nil {
		return nil, err
	}
	evs, err := r.eventsByNID(ctx, r.db, evNIDs)
	if err != nil {
		return nil, err
	}
	out := make([]StateEntry, len(evs))
	for i, e := range evs {
		out[i] = StateEntry{Key: keys[keyNIDs[i]], Event: e}
	}
	return out, nil
}

// CurrentState returns the room's current state.
func (r *Roomserver) CurrentState(ctx context.Context, roomID id.RoomID) ([]StateEntry, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	s := rm.current
	rm.mu.Unlock()
	return r.expandState(ctx, s)
}

// CurrentStateEvent returns the current state event at (type, stateKey), or nil.
func (r *Roomserver) CurrentStateEvent(ctx context.Context, roomID id.RoomID, evType, stateKey string) (*StoredEvent, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	s := rm.current
	rm.mu.Unlock()
	return r.stateEventIn(ctx, s, evType, stateKey)
}

func (r *Roomserver) stateEventIn(ctx context.Context, s stateMap, evType, stateKey string) (*StoredEvent, error) {
	kn, err := r.keys.lookup(ctx, r.db, pdu.StateKey{Type: evType, StateKey: stateKey})
	if err != nil || kn == 0 {
		return nil, err
	}
	en, ok := s[kn]
	if !ok {
		return nil, nil
	}
	evs, err := r.eventsByNID(ctx, r.db, []int64{en})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// StateAtEvent returns the room state before the event (after=false) or after it.
// Outliers have no known state.
func (r *Roomserver) StateAtEvent(ctx context.Context, eventID id.EventID, after bool) ([]StateEntry, error) {
	s, err := r.stateMapAt(ctx, eventID, after)
	if err != nil {
		return nil, err
	}
	return r.expandState(ctx, s)
}

func (r *Roomserver) stateMapAt(ctx context.Context, eventID id.EventID, after bool) (stateMap, error) {
	e, err := r.Event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if e.Outlier {
		return nil, fmt.Errorf("%w: %s is an outlier with no known state", ErrEventNotFound, eventID)
	}
	nid := e.StateBefore
	if after {
		nid = e.StateAfter
	}
	s, _, err := r.loadSnapshot(ctx, r.db, nid)
	return s, err
}

// StateEventAt returns the state event at (type, stateKey) before or after eventID.
func (r *Roomserver) StateEventAt(ctx context.Context, eventID id.EventID, after bool, evType, stateKey string) (*StoredEvent, error) {
	s, err := r.stateMapAt(ctx, eventID, after)
	if err != nil {
		return nil, err
	}
	return r.stateEventIn(ctx, s, evType, stateKey)
}

// Membership returns userID's current membership in roomID ("leave" if none) and
// the member event (nil if none).
func (r *Roomserver) Membership(ctx context.Context, roomID id.RoomID, userID id.UserID) (string, *StoredEvent, error) {
	e, err := r.CurrentStateEvent(ctx, roomID, "m.room.member", string(userID))
	if err != nil || e == nil {
		return "leave", nil, err
	}
	return gjson.GetBytes(e.Content(), "membership").Str, e, nil
}

// RoomsForUser lists the rooms where userID's current membership is membership.
func (r *Roomserver) RoomsForUser(ctx context.Context, userID id.UserID, membership string) ([]id.RoomID, error) {
	rows, err := r.db.Query(ctx, `SELECT r.room_id FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		WHERE c.state_key = $1 AND c.event_type = 'm.room.member' AND c.membership = $2`, string(userID), membership)
	if err != nil {
		return nil, fmt.Errorf("listing rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []id.RoomID
	for rows.Next() {
		var rid string
		if err := rows.Scan(&rid); err != nil {
			return nil, err
		}
		out = append(out, id.RoomID(rid))
	}
	return out, rows.Err()
}

// Members lists the users whose current membership in roomID is membership.
func (r *Roomserver) Members(ctx context.Context, roomID id.RoomID, membership string) ([]id.UserID, error) {
	rows, err := r.db.Query(ctx, `SELECT c.state_key FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		WHERE r.room_id = $1 AND c.event_type = 'm.room.member' AND c.membership = $2`, string(roomID), membership)
	if err != nil {
		return nil, fmt.Errorf("listing members of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []id.UserID
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, id.UserID(u))
	}
	return out, rows.Err()
}

// AuthChain returns the events of the auth chain of the given events (excluding
// them unless they are in each other's chains).
func (r *Roomserver) AuthChain(ctx context.Context, eventIDs []id.EventID) ([]*StoredEvent, error) {
	ids, err := r.authChain(ctx, r.db, eventIDs, nil)
	if err != nil {
		return nil, err
	}
	list := make([]id.EventID, 0, len(ids))
	for x := range ids {
		list = append(list, x)
	}
	return r.eventsByID(ctx, r.db, list)
}

// ForwardExtremities returns the room's forward extremities.
func (r *Roomserver) ForwardExtremities(ctx context.Context, roomID id.RoomID) ([]id.EventID, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer rm.mu.Unlock()
	out := make([]id.EventID, len(rm.extremities))
	for i, x := range rm.extremities {
		out[i] = x.id
	}
	return out, nil
}

// Direction of pagination.
type Direction byte

const (
	Backward Direction = 'b'
	Forward  Direction = 'f'
)

// TopoPos is a position in a room's topological order: (depth, stream position).
type TopoPos struct {
	Depth  int64
	Stream int64
}

// Messages pages through the room's timeline in topological order from from
// (exclusive), in dir, returning at most limit events that are not rejected or
// soft-failed, and the position to continue from. A zero from starts at the newest
// (backward) or oldest (forward) end.
func (r *Roomserver) Messages(ctx context.Context, roomID id.RoomID, from TopoPos, dir Direction, limit int) ([]*StoredEvent, TopoPos, error) {
	var q string
	args := []any{string(roomID), limit}
	if dir == Backward {
		q = `SELECT e.event_nid, e.depth, e.stream_pos FROM events e JOIN rooms r ON r.room_nid = e.room_nid
			WHERE r.room_id = $1 AND e.stream_pos IS NOT NULL AND NOT e.is_rejected AND NOT e.is_soft_failed`
		if from != (TopoPos{}) {
			q += ` AND (e.depth < $3 OR (e.depth = $3 AND e.stream_pos < $4))`
			args = append(args, from.Depth, from.Stream)
		}
		q += ` ORDER BY e.depth DESC, e.stream_pos DESC LIMIT $2`
	} else {
		q = `SELECT e.event_nid, e.depth, e.stream_pos FROM events e JOIN rooms r ON r.room_nid = e.room_nid
			WHERE r.room_id = $1 AND e.stream_pos IS NOT NULL AND NOT e.is_rejected AND NOT e.is_soft_failed`
		if from != (TopoPos{}) {
			q += ` AND (e.depth > $3 OR (e.depth = $3 AND e.stream_pos > $4))`
			args = append(args, from.Depth, from.Stream)
		}
		q += ` ORDER BY e.depth ASC, e.stream_pos ASC LIMIT $2`
	}
	rows, err := r.db.Query(ctx, q, args...)
	if err != nil {
		return nil, from, fmt.Errorf("paginating %s: %w", roomID, err)
	}
	var nids []int64
	next := from
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n, &next.Depth, &next.Stream); err != nil {
			rows.Close()
			return nil, from, err
		}
		nids = append(nids, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, from, err
	}
	evs, err := r.eventsByNID(ctx, r.db, nids)
	return evs, next, err
}

// EventsSince returns timeline events with stream positions in (from, to], oldest
// first, at most limit, optionally only in the given rooms.
func (r *Roomserver) EventsSince(ctx context.Context, from, to int64, limit int) ([]*StoredEvent, error) {
	rows, err := r.db.Query(ctx, `SELECT event_nid FROM events WHERE stream_pos > $1 AND stream_pos <= $2 AND NOT is_rejected ORDER BY stream_pos ASC LIMIT $3`, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("reading event stream: %w", err)
	}
	var nids []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		nids = append(nids, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return r.eventsByNID(ctx, r.db, nids)
}

// roomNID returns the NID of a room, or ErrRoomNotFound.
func (r *Roomserver) roomNID(ctx context.Context, roomID id.RoomID) (int64, error) {
	var nid int64
	err := r.db.QueryRow(ctx, `SELECT room_nid FROM rooms WHERE room_id = $1`, string(roomID)).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrRoomNotFound
	}
	return nid, err
}
