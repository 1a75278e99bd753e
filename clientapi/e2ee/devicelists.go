package e2ee

import (
	"context"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/id"
)

// DeviceListChanges computes the device_lists of a sync, or /keys/changes, for
// userID between two points: from/to on the E2EE stream and roomFrom/roomTo on
// the room event stream (Client-Server API, "Tracking the device list for a
// user" and "Extensions to /sync").
//
// changed holds the users who share a room with userID now and whose device
// list changed in (from, to] (userID included, for its own devices), and the
// users who started sharing a room with userID in (roomFrom, roomTo]: everyone
// in a room userID joined, userID included (as Synapse does: its other
// devices learn that new servers now track its list), and anyone who joined a
// room userID is in. As the spec allows, a user who joins a second shared
// room is reported again.
//
// left holds users with whom userID shared a room that one of them left in
// (roomFrom, roomTo], and who now share none. Both lists are sorted.
func (s *Service) DeviceListChanges(ctx context.Context, userID id.UserID, from, to, roomFrom, roomTo int64) (changed, left []id.UserID, err error) {
	changedSet := map[id.UserID]struct{}{}
	if to > from {
		rows, err := s.db.Query(ctx, `SELECT user_id FROM device_list_positions WHERE pos > $1 AND pos <= $2`, from, to)
		if err != nil {
			return nil, nil, fmt.Errorf("reading device-list changes: %w", err)
		}
		var others []id.UserID
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, nil, err
			}
			if id.UserID(u) == userID {
				changedSet[userID] = struct{}{}
			} else {
				others = append(others, id.UserID(u))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, nil, err
		}
		if len(others) > 0 && s.rooms != nil {
			sharing, err := s.rooms.UsersSharingRoom(ctx, userID, others)
			if err != nil {
				return nil, nil, err
			}
			for _, u := range sharing {
				changedSet[u] = struct{}{}
			}
		}
	}

	leftCandidates := map[id.UserID]struct{}{}
	if roomTo > roomFrom && s.rooms != nil {
		mcs, err := s.rooms.MembershipChangesSince(ctx, userID, roomFrom, roomTo)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range mcs {
			switch {
			case c.UserID == userID && c.Membership == "join":
				members, err := s.rooms.Members(ctx, c.RoomID, "join")
				if err != nil {
					return nil, nil, err
				}
				for _, m := range members {
					changedSet[m] = struct{}{}
				}
				changedSet[userID] = struct{}{}
			case c.UserID == userID:
				// userID left: everyone still in the room may now share nothing
				// with them.
				members, err := s.rooms.Members(ctx, c.RoomID, "join")
				if err != nil {
					return nil, nil, err
				}
				for _, m := range members {
					if m != userID {
						leftCandidates[m] = struct{}{}
					}
				}
			case c.OwnMembership != "join":
				// A room userID is not in now says nothing about sharing.
			case c.Membership == "join":
				changedSet[c.UserID] = struct{}{}
			default:
				leftCandidates[c.UserID] = struct{}{}
			}
		}
	}
	if len(leftCandidates) > 0 {
		cands := make([]id.UserID, 0, len(leftCandidates))
		for u := range leftCandidates {
			if _, ok := changedSet[u]; !ok {
				cands = append(cands, u)
			}
		}
		sharing, err := s.rooms.UsersSharingRoom(ctx, userID, cands)
		if err != nil {
			return nil, nil, err
		}
		still := make(map[id.UserID]struct{}, len(sharing))
		for _, u := range sharing {
			still[u] = struct{}{}
		}
		for _, u := range cands {
			if _, ok := still[u]; !ok {
				left = append(left, u)
			}
		}
		slices.Sort(left)
	}
	changed = make([]id.UserID, 0, len(changedSet))
	for u := range changedSet {
		changed = append(changed, u)
	}
	slices.Sort(changed)
	return changed, left, nil
}
