package roomserver

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Queries the client API's room endpoints need: state lookups at many snapshots at
// once (history visibility), the events a state event replaced (prev_content), a
// user's member events in a room, and positions for pagination tokens.

// CurrentStateEvents returns the room's current state events at keys, in the order
// of keys (nil where the room has none).
func (r *Roomserver) CurrentStateEvents(ctx context.Context, roomID id.RoomID, keys []pdu.StateKey) ([]*StoredEvent, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	s := rm.current
	rm.mu.Unlock()
	out, err := r.stateEventsIn(ctx, []stateMap{s}, keys)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// SnapshotStateEvents returns, for each of the given state snapshots (the
// StateBefore and StateAfter of stored events), its state events at keys in the
// order of keys (nil where the state has none). Each snapshot is loaded once, so
// asking about the events of a page at once costs one lookup per distinct state.
func (r *Roomserver) SnapshotStateEvents(ctx context.Context, snapshots []int64, keys []pdu.StateKey) (map[int64][]*StoredEvent, error) {
	uniq := make([]int64, 0, len(snapshots))
	seen := make(map[int64]struct{}, len(snapshots))
	for _, s := range snapshots {
		if _, dup := seen[s]; !dup {
			seen[s] = struct{}{}
			uniq = append(uniq, s)
		}
	}
	states := make([]stateMap, len(uniq))
	for i, nid := range uniq {
		s, _, err := r.loadSnapshot(ctx, r.db, nid)
		if err != nil {
			return nil, err
		}
		states[i] = s
	}
	evs, err := r.stateEventsIn(ctx, states, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[int64][]*StoredEvent, len(uniq))
	for i, nid := range uniq {
		out[nid] = evs[i]
	}
	return out, nil
}

// stateEventsIn looks keys up in each state, loading all the events in one batch.
func (r *Roomserver) stateEventsIn(ctx context.Context, states []stateMap, keys []pdu.StateKey) ([][]*StoredEvent, error) {
	keyNIDs := make([]int64, len(keys))
	for i, k := range keys {
		n, err := r.keys.lookup(ctx, r.db, k)
		if err != nil {
			return nil, err
		}
		keyNIDs[i] = n
	}
	var nids []int64
	for _, s := range states {
		for _, kn := range keyNIDs {
			if en, ok := s[kn]; ok && kn != 0 {
				nids = append(nids, en)
			}
		}
	}
	evs, err := r.eventsByNID(ctx, r.db, nids)
	if err != nil {
		return nil, err
	}
	out := make([][]*StoredEvent, len(states))
	j := 0
	for i, s := range states {
		row := make([]*StoredEvent, len(keys))
		for ki, kn := range keyNIDs {
			if _, ok := s[kn]; ok && kn != 0 {
				row[ki] = evs[j]
				j++
			}
		}
		out[i] = row
	}
	return out, nil
}

// SnapshotState returns the full state of a state snapshot.
func (r *Roomserver) SnapshotState(ctx context.Context, snapshot int64) ([]StateEntry, error) {
	s, _, err := r.loadSnapshot(ctx, r.db, snapshot)
	if err != nil {
		return nil, err
	}
	return r.expandState(ctx, s)
}

// ReplacedStateEvents returns, for each state event among evs, the event its
// (type, state_key) held in the state before it, keyed by the event's NID. Events
// that replaced nothing are absent.
func (r *Roomserver) ReplacedStateEvents(ctx context.Context, evs []*StoredEvent) (map[int64]*StoredEvent, error) {
	var owners []int64
	var nids []int64
	for _, e := range evs {
		sk := e.StateKey()
		if sk == nil || e.StateBefore == 0 {
			continue
		}
		kn, err := r.keys.lookup(ctx, r.db, pdu.StateKey{Type: e.Type(), StateKey: *sk})
		if err != nil {
			return nil, err
		}
		if kn == 0 {
			continue
		}
		s, _, err := r.loadSnapshot(ctx, r.db, e.StateBefore)
		if err != nil {
			return nil, err
		}
		if en, ok := s[kn]; ok {
			owners = append(owners, e.NID)
			nids = append(nids, en)
		}
	}
	prev, err := r.eventsByNID(ctx, r.db, nids)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]*StoredEvent, len(prev))
	for i, p := range prev {
		out[owners[i]] = p
	}
	return out, nil
}

// MemberEvents returns userID's m.room.member events in the room's timeline (not
// rejected or soft-failed), oldest first in topological order.
func (r *Roomserver) MemberEvents(ctx context.Context, roomID id.RoomID, userID id.UserID) ([]*StoredEvent, error) {
	roomNID, err := r.roomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return r.queryEvents(ctx, `SELECT event_nid FROM events WHERE room_nid = $1 AND event_type = 'm.room.member' AND state_key = $2
		AND stream_pos IS NOT NULL AND NOT is_rejected AND NOT is_soft_failed ORDER BY depth, stream_pos`, roomNID, string(userID))
}

// LatestEventAtStream returns the room's newest timeline event (not rejected or
// soft-failed) with a stream position at or below pos, or nil if there is none:
// what converts a /sync stream token into a place in the room's topological order.
func (r *Roomserver) LatestEventAtStream(ctx context.Context, roomID id.RoomID, pos int64) (*StoredEvent, error) {
	roomNID, err := r.roomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	evs, err := r.queryEvents(ctx, `SELECT event_nid FROM events WHERE room_nid = $1 AND stream_pos IS NOT NULL AND stream_pos <= $2
		AND NOT is_rejected AND NOT is_soft_failed ORDER BY stream_pos DESC LIMIT 1`, roomNID, pos)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

// EventNearTimestamp returns the room's timeline event closest to ts in direction
// dir: the first with origin_server_ts >= ts going forward, the last with
// origin_server_ts <= ts going backward; nil if there is none.
func (r *Roomserver) EventNearTimestamp(ctx context.Context, roomID id.RoomID, ts int64, dir Direction) (*StoredEvent, error) {
	roomNID, err := r.roomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	q := `SELECT event_nid FROM events WHERE room_nid = $1 AND stream_pos IS NOT NULL AND NOT is_rejected AND NOT is_soft_failed`
	if dir == Forward {
		q += ` AND origin_server_ts >= $2 ORDER BY origin_server_ts ASC, depth ASC, stream_pos ASC LIMIT 1`
	} else {
		q += ` AND origin_server_ts <= $2 ORDER BY origin_server_ts DESC, depth DESC, stream_pos DESC LIMIT 1`
	}
	evs, err := r.queryEvents(ctx, q, roomNID, ts)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

// JoinedMemberCounts returns how many users are joined to each of the given rooms
// (rooms without members are absent).
func (r *Roomserver) JoinedMemberCounts(ctx context.Context, roomIDs []id.RoomID) (map[id.RoomID]int, error) {
	out := make(map[id.RoomID]int, len(roomIDs))
	for len(roomIDs) > 0 {
		batch := roomIDs[:min(len(roomIDs), 500)]
		roomIDs = roomIDs[len(batch):]
		args := make([]any, len(batch))
		for i, x := range batch {
			args[i] = string(x)
		}
		rows, err := r.db.Query(ctx, `SELECT r.room_id, COUNT(*) FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
			WHERE c.event_type = 'm.room.member' AND c.membership = 'join' AND r.room_id IN (`+placeholders(len(batch), 1)+`) GROUP BY r.room_id`, args...)
		if err != nil {
			return nil, fmt.Errorf("counting joined members: %w", err)
		}
		for rows.Next() {
			var rid string
			var n int
			if err := rows.Scan(&rid, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("counting joined members: %w", err)
			}
			out[id.RoomID(rid)] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("counting joined members: %w", err)
		}
	}
	return out, nil
}

// CheckEvent builds a local event against the room's current state and applies
// the auth rules to it without storing anything: "may this user send this?"
// (room upgrades check the tombstone before creating the new room). It returns a
// *NotAllowedError when the event would be rejected.
func (r *Roomserver) CheckEvent(ctx context.Context, roomID id.RoomID, req SendRequest) error {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return err
	}
	defer rm.mu.Unlock()
	ev, _, err := r.buildLocal(ctx, rm, req)
	if err != nil {
		return err
	}
	if err := r.checkAgainst(ctx, rm, ev, rm.current); err != nil {
		return &NotAllowedError{Err: err}
	}
	return nil
}

// queryEvents loads the events whose NIDs a query returns, in the query's order.
func (r *Roomserver) queryEvents(ctx context.Context, q string, args ...any) ([]*StoredEvent, error) {
	rows, err := r.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("querying events: %w", err)
	}
	var nids []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("querying events: %w", err)
		}
		nids = append(nids, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querying events: %w", err)
	}
	return r.eventsByNID(ctx, r.db, nids)
}
