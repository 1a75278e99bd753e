package clientapi

import (
	"context"
	"encoding/json"
	"log/slog"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
)

// RemoteLeave is a local user's leave from a room this server is not in: a
// rejected or rescinded invite, or a retracted knock, whose event never
// entered the room engine (an "out-of-band" membership, as Synapse calls it).
type RemoteLeave struct {
	RoomID      id.RoomID
	RoomVersion id.RoomVersion
	EventID     id.EventID
	// Event is the leave event in federation JSON.
	Event json.RawMessage
}

// RemoteLeaves lists a user's out-of-band leaves, newest per room. The keeper
// of remote invites (SetRemoteInvites) may also implement it; it calls
// (*Syncer).RemoteLeft when it records one.
type RemoteLeaves interface {
	RemoteLeaves(ctx context.Context, userID id.UserID) ([]RemoteLeave, error)
}

// maxRemoteLeavePositions bounds the out-of-band leaves whose stream position
// the Syncer remembers; older ones are no longer news to any live token.
const maxRemoteLeavePositions = 10000

// RemoteLeft tells /sync that userID left a room this server is not in with
// the out-of-band leave eventID: their next incremental sync shows the room in
// its leave section, with the leave event as the timeline.
func (s *Syncer) RemoteLeft(userID id.UserID, eventID id.EventID) {
	s.inviteMu.Lock()
	pos := s.invitePos.Add(1)
	s.inviteVers[userID] = pos
	if s.remoteLeavePos == nil {
		s.remoteLeavePos = map[id.EventID]int64{}
	}
	if len(s.remoteLeavePos) >= maxRemoteLeavePositions {
		// Positions are distinct and increasing: the newer half stays.
		cutoff := pos - maxRemoteLeavePositions/2
		for e, p := range s.remoteLeavePos {
			if p < cutoff {
				delete(s.remoteLeavePos, e)
			}
		}
	}
	s.remoteLeavePos[eventID] = pos
	s.inviteMu.Unlock()
	s.notifier.Wake(userID)
}

// remoteLeaveRooms adds the user's out-of-band leaves to the leave section: on
// an incremental sync those recorded since the token, on an initial (or
// full_state) sync with include_leave all of them, leaving out rooms the
// response or the room engine already has the user in.
func (b *syncBuilder) remoteLeaveRooms() error {
	box := b.s.remoteInvites.Load()
	if box == nil {
		return nil
	}
	rl, ok := box.r.(RemoteLeaves)
	if !ok {
		return nil
	}
	user := b.dev.UserID
	all := (b.initial || b.fullState) && b.f.includeLeave
	if !all {
		if b.initial {
			return nil
		}
		b.s.inviteMu.Lock()
		v := b.s.inviteVers[user]
		b.s.inviteMu.Unlock()
		if v <= b.since.Invites {
			return nil
		}
	}
	leaves, err := rl.RemoteLeaves(b.ctx, user)
	if err != nil {
		return err
	}
	for _, l := range leaves {
		if !b.f.rooms.match(l.RoomID) || b.inResponse(l.RoomID) {
			continue
		}
		if m, ok := b.s.members.Membership(user, l.RoomID); ok && m.Pos > 0 && m.Membership != "leave" && m.Membership != "ban" {
			continue // the room's own events have the user in the room
		}
		if !all {
			b.s.inviteMu.Lock()
			pos := b.s.remoteLeavePos[l.EventID]
			b.s.inviteMu.Unlock()
			if pos <= b.since.Invites || pos > b.to.Invites {
				continue
			}
		} else {
			if b.forgotten == nil {
				f, err := b.a.forgottenRoomIDs(b.ctx, user)
				if err != nil {
					return err
				}
				b.forgotten = f
			}
			if _, forgot := b.forgotten[l.RoomID]; forgot {
				continue
			}
		}
		ev, err := events.Parse(l.RoomVersion, l.Event)
		if err != nil {
			slog.WarnContext(b.ctx, "sync: unreadable out-of-band leave", "event_id", l.EventID, "err", err)
			continue
		}
		lr := &leftRoom{}
		if b.timelinePass(ev) {
			lr.Timeline.Events = []json.RawMessage{ev.AppendClientEvent(nil, events.ClientOptions{OmitRoomID: true})}
		}
		b.setState(&lr.State, &lr.StateAfter, &lr.UnstableStateAfter, []json.RawMessage{})
		lr.AccountData.Events = b.roomAD[l.RoomID]
		b.resp.Rooms.Leave[l.RoomID] = lr
		b.news = true
	}
	return nil
}

// inResponse reports whether the response already has a section for roomID.
func (b *syncBuilder) inResponse(roomID id.RoomID) bool {
	r := &b.resp.Rooms
	if _, ok := r.Join[roomID]; ok {
		return true
	}
	if _, ok := r.Invite[roomID]; ok {
		return true
	}
	if _, ok := r.Knock[roomID]; ok {
		return true
	}
	_, ok := r.Leave[roomID]
	return ok
}
