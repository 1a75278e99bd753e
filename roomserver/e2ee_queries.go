package roomserver

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Queries the end-to-end encryption module needs for device-list tracking.

// MembershipChange is a user whose membership of a room changed within a range of
// the event stream, with the membership they have now.
type MembershipChange struct {
	RoomID id.RoomID
	UserID id.UserID
	// Membership is the user's current membership of the room.
	Membership string
	// OwnMembership is the current membership in the room of the user the
	// changes were asked for.
	OwnMembership string
}

// MembershipChangesSince returns the users whose membership changed, by an event
// with a stream position in (from, to], in the rooms where userID has any
// membership now. Each (room, user) pair appears once.
func (r *Roomserver) MembershipChangesSince(ctx context.Context, userID id.UserID, from, to int64) ([]MembershipChange, error) {
	if to <= from {
		return nil, nil
	}
	rows, err := r.db.Query(ctx, `SELECT DISTINCT rm.room_id, e.state_key, COALESCE(cur.membership, ''), COALESCE(mine.membership, '')
		FROM current_state mine
		JOIN events e ON e.room_nid = mine.room_nid
		JOIN rooms rm ON rm.room_nid = mine.room_nid
		LEFT JOIN current_state cur ON cur.room_nid = e.room_nid AND cur.event_type = 'm.room.member' AND cur.state_key = e.state_key
		WHERE mine.state_key = $1 AND mine.event_type = 'm.room.member'
			AND e.stream_pos > $2 AND e.stream_pos <= $3 AND e.event_type = 'm.room.member'
			AND NOT e.is_rejected AND NOT e.is_soft_failed`, string(userID), from, to)
	if err != nil {
		return nil, fmt.Errorf("reading membership changes for %s: %w", userID, err)
	}
	defer rows.Close()
	var out []MembershipChange
	for rows.Next() {
		var c MembershipChange
		var room, user string
		if err := rows.Scan(&room, &user, &c.Membership, &c.OwnMembership); err != nil {
			return nil, err
		}
		c.RoomID, c.UserID = id.RoomID(room), id.UserID(user)
		out = append(out, c)
	}
	return out, rows.Err()
}

// sharedRoomChunk bounds the candidates asked about in one query.
const sharedRoomChunk = 500

// UsersSharingRoom returns those of candidates who are joined to at least one room
// userID is joined to, in no particular order.
func (r *Roomserver) UsersSharingRoom(ctx context.Context, userID id.UserID, candidates []id.UserID) ([]id.UserID, error) {
	var out []id.UserID
	for len(candidates) > 0 {
		n := min(len(candidates), sharedRoomChunk)
		chunk := candidates[:n]
		candidates = candidates[n:]
		var q strings.Builder
		q.WriteString(`SELECT DISTINCT theirs.state_key FROM current_state mine
			JOIN current_state theirs ON theirs.room_nid = mine.room_nid
			WHERE mine.state_key = $1 AND mine.event_type = 'm.room.member' AND mine.membership = 'join'
				AND theirs.event_type = 'm.room.member' AND theirs.membership = 'join' AND theirs.state_key IN (`)
		args := make([]any, 0, n+1)
		args = append(args, string(userID))
		for i, c := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			fmt.Fprintf(&q, "$%d", i+2)
			args = append(args, string(c))
		}
		q.WriteByte(')')
		rows, err := r.db.Query(ctx, q.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("finding users sharing a room with %s: %w", userID, err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, id.UserID(u))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
