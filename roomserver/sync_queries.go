package roomserver

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Queries /sync needs from the event store: a user's memberships with their
// stream positions, a room's timeline in stream order, and state snapshots
// expanded selectively (only the entries a sync response needs are loaded).

// UserMembership is a user's current membership of a room.
type UserMembership struct {
	RoomID     id.RoomID
	Membership string
	EventID    id.EventID
	StreamPos  int64 // 0 for an outlier member event (a remote invite)
}

// MembershipsOf lists every room where userID has a current member event.
func (r *Roomserver) MembershipsOf(ctx context.Context, userID id.UserID) ([]UserMembership, error) {
	rows, err := r.db.Query(ctx, `SELECT r.room_id, c.membership, e.event_id, COALESCE(e.stream_pos, 0)
		FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid JOIN events e ON e.event_nid = c.event_nid
		WHERE c.state_key = $1 AND c.event_type = 'm.room.member'`, string(userID))
	if err != nil {
		return nil, fmt.Errorf("listing memberships of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []UserMembership
	for rows.Next() {
		var m UserMembership
		var rid, eid string
		var membership *string
		if err := rows.Scan(&rid, &membership, &eid, &m.StreamPos); err != nil {
			return nil, fmt.Errorf("listing memberships of %s: %w", userID, err)
		}
		m.RoomID, m.EventID = id.RoomID(rid), id.EventID(eid)
		if membership != nil {
			m.Membership = *membership
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// RoomTimeline returns the newest at most limit events of roomID with stream
// positions in (after, upTo], oldest first, leaving out rejected and
// soft-failed events.
func (r *Roomserver) RoomTimeline(ctx context.Context, roomID id.RoomID, after, upTo int64, limit int) ([]*StoredEvent, error) {
	rows, err := r.db.Query(ctx, `SELECT e.event_nid FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE r.room_id = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3 AND NOT e.is_rejected AND NOT e.is_soft_failed
		ORDER BY e.stream_pos DESC LIMIT $4`, string(roomID), after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("reading timeline of %s: %w", roomID, err)
	}
	var nids []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading timeline of %s: %w", roomID, err)
		}
		nids = append(nids, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading timeline of %s: %w", roomID, err)
	}
	for i, j := 0, len(nids)-1; i < j; i, j = i+1, j-1 {
		nids[i], nids[j] = nids[j], nids[i]
	}
	return r.eventsByNID(ctx, r.db, nids)
}

// RoomTimelineTopo returns at most limit timeline events of roomID with stream
// positions in (0, upTo] that come before before in the room's topological
// order (depth, then stream position; from the newest when before is zero),
// newest first, leaving out rejected and soft-failed events: the historical
// view an initial /sync shows of a room, the order /messages pages in.
func (r *Roomserver) RoomTimelineTopo(ctx context.Context, roomID id.RoomID, upTo int64, before TopoPos, limit int) ([]*StoredEvent, error) {
	roomNID, err := r.roomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	q := `SELECT event_nid FROM events WHERE room_nid = $1 AND stream_pos > 0 AND stream_pos <= $2
		AND NOT is_rejected AND NOT is_soft_failed`
	args := []any{roomNID, upTo, limit}
	if before != (TopoPos{}) {
		q += ` AND (depth < $4 OR (depth = $4 AND stream_pos < $5))`
		args = append(args, before.Depth, before.Stream)
	}
	evs, err := r.queryEvents(ctx, q+` ORDER BY depth DESC, stream_pos DESC LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading timeline of %s: %w", roomID, err)
	}
	return evs, nil
}

// CurrentSnapshot returns the state snapshot holding roomID's current state.
func (r *Roomserver) CurrentSnapshot(ctx context.Context, roomID id.RoomID) (int64, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	nid := rm.currentNID
	rm.mu.Unlock()
	return nid, nil
}

// RoomsWithEvents returns the rooms with timeline events in (after, upTo] and,
// for each, the newest such position.
func (r *Roomserver) RoomsWithEvents(ctx context.Context, after, upTo int64) (map[id.RoomID]int64, error) {
	rows, err := r.db.Query(ctx, `SELECT r.room_id, MAX(e.stream_pos) FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.stream_pos > $1 AND e.stream_pos <= $2 AND NOT e.is_rejected AND NOT e.is_soft_failed GROUP BY r.room_id`, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("listing rooms with new events: %w", err)
	}
	defer rows.Close()
	out := map[id.RoomID]int64{}
	for rows.Next() {
		var rid string
		var pos int64
		if err := rows.Scan(&rid, &pos); err != nil {
			return nil, fmt.Errorf("listing rooms with new events: %w", err)
		}
		out[id.RoomID(rid)] = pos
	}
	return out, rows.Err()
}

// SnapshotEntries returns the entries of a state snapshot whose key passes
// keep (nil keeps everything); only their events are loaded.
func (r *Roomserver) SnapshotEntries(ctx context.Context, snapshotNID int64, keep func(pdu.StateKey) bool) ([]StateEntry, error) {
	s, _, err := r.loadSnapshot(ctx, r.db, snapshotNID)
	if err != nil {
		return nil, err
	}
	return r.expandSelected(ctx, s, nil, keep)
}

// StateDelta returns the entries of snapshot to that are missing from or
// different in snapshot from, whose key passes keep (nil keeps everything).
func (r *Roomserver) StateDelta(ctx context.Context, from, to int64, keep func(pdu.StateKey) bool) ([]StateEntry, error) {
	if from == to {
		return nil, nil
	}
	fs, _, err := r.loadSnapshot(ctx, r.db, from)
	if err != nil {
		return nil, err
	}
	ts, _, err := r.loadSnapshot(ctx, r.db, to)
	if err != nil {
		return nil, err
	}
	return r.expandSelected(ctx, ts, fs, keep)
}

// expandSelected expands the entries of s that differ from base (nil: all)
// and pass keep.
func (r *Roomserver) expandSelected(ctx context.Context, s, base stateMap, keep func(pdu.StateKey) bool) ([]StateEntry, error) {
	keyNIDs := make([]int64, 0, len(s))
	for k, v := range s {
		if base != nil && base[k] == v {
			continue
		}
		keyNIDs = append(keyNIDs, k)
	}
	keys, err := r.keys.keysOf(ctx, r.db, keyNIDs, true)
	if err != nil {
		return nil, err
	}
	evNIDs := make([]int64, 0, len(keyNIDs))
	kept := keyNIDs[:0]
	for _, k := range keyNIDs {
		if keep != nil && !keep(keys[k]) {
			continue
		}
		kept = append(kept, k)
		evNIDs = append(evNIDs, s[k])
	}
	evs, err := r.eventsByNID(ctx, r.db, evNIDs)
	if err != nil {
		return nil, err
	}
	out := make([]StateEntry, len(evs))
	for i, e := range evs {
		out[i] = StateEntry{Key: keys[kept[i]], Event: e}
	}
	return out, nil
}

// MemberCounts returns how many users are joined to and invited to roomID.
func (r *Roomserver) MemberCounts(ctx context.Context, roomID id.RoomID) (joined, invited int, err error) {
	rows, err := r.db.Query(ctx, `SELECT c.membership, COUNT(*) FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		WHERE r.room_id = $1 AND c.event_type = 'm.room.member' AND c.membership IN ('join', 'invite') GROUP BY c.membership`, string(roomID))
	if err != nil {
		return 0, 0, fmt.Errorf("counting members of %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		var n int
		if err := rows.Scan(&m, &n); err != nil {
			return 0, 0, fmt.Errorf("counting members of %s: %w", roomID, err)
		}
		if m == "join" {
			joined = n
		} else {
			invited = n
		}
	}
	return joined, invited, rows.Err()
}

// Heroes returns up to n members of roomID other than except, in stream order
// of their member events: joined and invited ones, or, when there are none,
// those who left or were banned (Client-Server API, GET /sync, "m.heroes").
func (r *Roomserver) Heroes(ctx context.Context, roomID id.RoomID, except id.UserID, n int) ([]id.UserID, error) {
	q := `SELECT c.state_key FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid JOIN events e ON e.event_nid = c.event_nid
		WHERE r.room_id = $1 AND c.event_type = 'm.room.member' AND c.state_key <> $2 AND c.membership IN (%s)
		ORDER BY e.stream_pos ASC, e.event_nid ASC LIMIT $3`
	for _, set := range []string{`'join', 'invite'`, `'leave', 'ban'`} {
		rows, err := r.db.Query(ctx, fmt.Sprintf(q, set), string(roomID), string(except), n)
		if err != nil {
			return nil, fmt.Errorf("choosing heroes of %s: %w", roomID, err)
		}
		var out []id.UserID
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, fmt.Errorf("choosing heroes of %s: %w", roomID, err)
			}
			out = append(out, id.UserID(u))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, nil
}

// CurrentMemberEvents returns the current member events of roomID whose
// membership is membership, for users of the given server ("" for all).
func (r *Roomserver) CurrentMemberEvents(ctx context.Context, roomID id.RoomID, membership, server string) ([]*StoredEvent, error) {
	q := `SELECT c.event_nid FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		WHERE r.room_id = $1 AND c.event_type = 'm.room.member' AND c.membership = $2`
	args := []any{string(roomID), membership}
	if server != "" {
		q += ` AND c.state_key LIKE $3`
		args = append(args, "%:"+escapeLike(server))
		q += ` ESCAPE '\'`
	}
	rows, err := r.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing members of %s: %w", roomID, err)
	}
	var nids []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing members of %s: %w", roomID, err)
		}
		nids = append(nids, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing members of %s: %w", roomID, err)
	}
	return r.eventsByNID(ctx, r.db, nids)
}

// escapeLike escapes LIKE metacharacters with a backslash.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// EventsAtPositions returns the timeline events (not rejected) stored at the
// given stream positions; positions without one are left out.
func (r *Roomserver) EventsAtPositions(ctx context.Context, positions []int64) ([]*StoredEvent, error) {
	var out []*StoredEvent
	for len(positions) > 0 {
		batch := positions[:min(len(positions), 500)]
		positions = positions[len(batch):]
		args := make([]any, len(batch))
		for i, p := range batch {
			args[i] = p
		}
		rows, err := r.db.Query(ctx, `SELECT event_nid FROM events WHERE stream_pos IN (`+placeholders(len(batch), 1)+`) AND NOT is_rejected`, args...)
		if err != nil {
			return nil, fmt.Errorf("reading events at stream positions: %w", err)
		}
		var nids []int64
		for rows.Next() {
			var n int64
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading events at stream positions: %w", err)
			}
			nids = append(nids, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("reading events at stream positions: %w", err)
		}
		evs, err := r.eventsByNID(ctx, r.db, nids)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}
