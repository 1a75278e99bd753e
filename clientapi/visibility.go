package clientapi

import (
	"context"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// History visibility (Client-Server API, "Room History Visibility"). Every
// endpoint that returns room events to a client filters them here, and /sync
// uses VisibleEvents.

// VisibleEvents returns the events among evs that userID may see, in their
// order. Rejected, soft-failed and outlier events are never visible. The rules
// are applied with the room state at each event ("Server behaviour"):
//
//  1. history_visibility world_readable: allow;
//  2. the user's membership is join: allow;
//  3. shared, and the user joined the room at any point after the event: allow;
//  4. invited, and the user's membership is invite: allow;
//  5. otherwise deny.
//
// A missing or unknown history_visibility counts as shared. For
// m.room.history_visibility events and for the user's own member events the
// event is visible if the state before or after it allows it. The user's own
// leave after an invite, a knock or a join is always visible to them, so that
// a rejected invite, a retracted knock or a leave shows in /sync whatever the
// room's history visibility (as Synapse: "they won't see the room disappear if
// they reject the invite" otherwise).
//
// The state is looked up once per distinct state snapshot among the events and
// the user's joins once per room, so a page of messages costs a handful of
// lookups, not one per event.
func (a *API) VisibleEvents(ctx context.Context, userID id.UserID, evs []*roomserver.StoredEvent) ([]*roomserver.StoredEvent, error) {
	vis, err := a.visibility(ctx, userID, evs)
	if err != nil {
		return nil, err
	}
	out := evs[:0:0]
	for i, e := range evs {
		if vis[i].visible {
			out = append(out, e)
		}
	}
	return out, nil
}

// eventVisibility is what the visibility pass learns about one event.
type eventVisibility struct {
	visible bool
}

// visibility applies the rules to each event.
func (a *API) visibility(ctx context.Context, userID id.UserID, evs []*roomserver.StoredEvent) ([]eventVisibility, error) {
	out := make([]eventVisibility, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	rs := a.opts.Roomserver
	snaps := make([]int64, 0, 4)
	var last int64 = -1
	for _, e := range evs {
		if !timelineEvent(e) {
			continue
		}
		if e.StateBefore != last {
			snaps = append(snaps, e.StateBefore)
			last = e.StateBefore
		}
		if visibilitySensitive(e, userID) {
			snaps = append(snaps, e.StateAfter)
		}
	}
	if len(snaps) == 0 {
		return out, nil
	}
	states, err := rs.SnapshotStateEvents(ctx, snaps, []pdu.StateKey{keyHistory, memberKey(userID)})
	if err != nil {
		return nil, err
	}
	// The user's latest join in each room, looked up only when rule 3 needs it.
	latestJoin := map[id.RoomID]*roomserver.TopoPos{}
	joinedAfter := func(e *roomserver.StoredEvent) (bool, error) {
		pos, ok := latestJoin[e.RoomID()]
		if !ok {
			members, err := rs.MemberEvents(ctx, e.RoomID(), userID)
			if err != nil {
				return false, err
			}
			for i := len(members) - 1; i >= 0; i-- {
				if membershipOf(members[i]) == "join" {
					pos = &roomserver.TopoPos{Depth: members[i].Depth(), Stream: members[i].StreamPos}
					break
				}
			}
			latestJoin[e.RoomID()] = pos
		}
		return pos != nil && topoBefore(roomserver.TopoPos{Depth: e.Depth(), Stream: e.StreamPos}, *pos), nil
	}
	allowedAt := func(e *roomserver.StoredEvent, snap int64) (bool, error) {
		row := states[snap]
		hv := historyVisibility(row[0])
		if hv == "world_readable" {
			return true, nil
		}
		m := membershipOf(row[1])
		switch {
		case m == "join":
			return true, nil
		case hv == "invited" && m == "invite":
			return true, nil
		case hv == "shared":
			return joinedAfter(e)
		}
		return false, nil
	}
	for i, e := range evs {
		if !timelineEvent(e) {
			continue
		}
		ok, err := allowedAt(e, e.StateBefore)
		if err != nil {
			return nil, err
		}
		if !ok && visibilitySensitive(e, userID) {
			ok = ownLeave(e, userID, states[e.StateBefore][1])
			if !ok {
				if ok, err = allowedAt(e, e.StateAfter); err != nil {
					return nil, err
				}
			}
		}
		out[i].visible = ok
	}
	return out, nil
}

// timelineEvent reports whether an event may ever reach a client.
func timelineEvent(e *roomserver.StoredEvent) bool {
	return !e.Outlier && !e.Rejected && !e.SoftFailed && e.StreamPos != 0
}

// visibilitySensitive reports whether the state after the event, not only before
// it, decides its visibility: history visibility changes and the user's own
// membership changes.
func visibilitySensitive(e *roomserver.StoredEvent, userID id.UserID) bool {
	sk := e.StateKey()
	if sk == nil {
		return false
	}
	switch e.Type() {
	case "m.room.history_visibility":
		return *sk == ""
	case "m.room.member":
		return *sk == string(userID)
	}
	return false
}

// ownLeave reports whether e makes userID leave the room from an invite (a
// rejected or withdrawn invite), a knock (a retracted or refused knock) or a
// join (a leave or kick): prev is the user's member event before e.
func ownLeave(e *roomserver.StoredEvent, userID id.UserID, prev *roomserver.StoredEvent) bool {
	if e.Type() != "m.room.member" || membershipOf(e) != "leave" {
		return false
	}
	if sk := e.StateKey(); sk == nil || *sk != string(userID) {
		return false
	}
	m := membershipOf(prev)
	return m == "invite" || m == "knock" || m == "join"
}

// historyVisibility reads an m.room.history_visibility event; absent or unknown
// values are shared.
func historyVisibility(e *roomserver.StoredEvent) string {
	if e == nil {
		return "shared"
	}
	switch v := gjson.GetBytes(e.Content(), "history_visibility").Str; v {
	case "world_readable", "shared", "invited", "joined":
		return v
	}
	return "shared"
}

// topoBefore reports whether position p comes before q in topological order.
func topoBefore(p, q roomserver.TopoPos) bool {
	return p.Depth < q.Depth || p.Depth == q.Depth && p.Stream < q.Stream
}
