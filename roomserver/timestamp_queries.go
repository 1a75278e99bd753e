package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// Queries for jump to date (Client-Server API, GET /timestamp_to_event, and
// its Server-Server counterpart).

// NextToTimestampGap reports whether events this server lacks may lie between
// e, the event EventNearTimestamp found searching in direction dir, and the
// searched timestamp: whether a closer event may be on another server.
//
// Searching forward, the events before e matter: e is next to a gap when one
// of its prev_events is not in the timeline here (unknown, or only an outlier:
// a room joined over federation starts with a join event citing history this
// server never received). Searching backward, the events after e matter: e is
// next to a gap when no accepted timeline event cites it as a prev event,
// unless e is a forward extremity, one of the room's newest events, after which
// other servers send new events unasked. The Server-Server API leaves the
// heuristic to the server and suggests this one (GET /timestamp_to_event:
// "whether the closest event is a forward/backward extremity"), as Synapse
// does it.
func (r *Roomserver) NextToTimestampGap(ctx context.Context, e *StoredEvent, dir Direction) (bool, error) {
	if e == nil || e.Outlier {
		return true, nil
	}
	if dir == Forward {
		if len(e.PrevEventIDs()) == 0 {
			return false, nil // the create event: nothing comes before it
		}
		gap, err := r.exists(ctx, `SELECT 1 FROM event_prev_edges p LEFT JOIN events x ON x.event_id = p.prev_event_id
			WHERE p.event_nid = $1 AND (x.event_nid IS NULL OR x.stream_pos IS NULL) LIMIT 1`, e.NID)
		if err != nil {
			return false, fmt.Errorf("looking for events missing before %s: %w", e.ID(), err)
		}
		return gap, nil
	}
	newest, err := r.exists(ctx, `SELECT 1 FROM forward_extremities WHERE room_nid = $1 AND event_nid = $2`, e.RoomNID, e.NID)
	if err != nil {
		return false, fmt.Errorf("checking the extremities of %s: %w", e.RoomID(), err)
	}
	if newest {
		return false, nil
	}
	cited, err := r.exists(ctx, `SELECT 1 FROM event_prev_edges p JOIN events c ON c.event_nid = p.event_nid
		WHERE p.prev_event_id = $1 AND c.stream_pos IS NOT NULL AND NOT c.is_rejected LIMIT 1`, string(e.ID()))
	if err != nil {
		return false, fmt.Errorf("looking for events after %s: %w", e.ID(), err)
	}
	return !cited, nil
}

// exists reports whether the query returns a row.
func (r *Roomserver) exists(ctx context.Context, q string, args ...any) (bool, error) {
	var one int
	err := r.db.QueryRow(ctx, q, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// JoinedServersByAge returns the servers with users joined to roomID, those in
// the room the longest first: ordered by the earliest topological position of
// their users' current join events (the membership events in the current
// state, as Synapse approximates it; a later profile change moves a user's).
func (r *Roomserver) JoinedServersByAge(ctx context.Context, roomID id.RoomID) ([]string, error) {
	rows, err := r.db.Query(ctx, `SELECT c.state_key FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		JOIN events e ON e.event_nid = c.event_nid
		WHERE r.room_id = $1 AND c.event_type = 'm.room.member' AND c.membership = 'join'
		ORDER BY e.depth, COALESCE(e.stream_pos, 0), c.state_key`, string(roomID))
	if err != nil {
		return nil, fmt.Errorf("listing the servers in %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []string
	seen := make(map[string]struct{}, 8)
	for rows.Next() {
		var userID string
		if err := rows.Scan(&userID); err != nil {
			return nil, fmt.Errorf("listing the servers in %s: %w", roomID, err)
		}
		s := id.UserID(userID).Homeserver()
		if _, ok := seen[s]; ok || s == "" {
			continue
		}
		seen[s] = struct{}{}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing the servers in %s: %w", roomID, err)
	}
	return out, nil
}
