package clientapi

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// RemoteKnock is a knock a local user made on a room this server is not in.
type RemoteKnock struct {
	RoomID  id.RoomID
	EventID id.EventID
	// Event is the knock event in federation JSON.
	Event json.RawMessage
	// KnockRoomState is the state the room's server sent back for display.
	KnockRoomState []json.RawMessage
}

// RemoteKnocks lists the pending knocks of a user on rooms this server is not
// in. The keeper of remote invites (SetRemoteInvites) may also implement it;
// whoever keeps knocks calls (*Syncer).RemoteInvitesChanged when one is made
// or answered.
type RemoteKnocks interface {
	PendingKnocks(ctx context.Context, userID id.UserID) ([]RemoteKnock, error)
}

// remoteKnockRooms adds the pending knocks on rooms of other servers to the
// knock section (Client-Server API, "Knocking on rooms"), on an initial sync or
// when they changed since the token, leaving out rooms the user has since
// joined or been invited to.
func (b *syncBuilder) remoteKnockRooms() error {
	box := b.s.remoteInvites.Load()
	if box == nil {
		return nil
	}
	rk, ok := box.r.(RemoteKnocks)
	if !ok {
		return nil
	}
	user := b.dev.UserID
	if !b.initial {
		b.s.inviteMu.Lock()
		v := b.s.inviteVers[user]
		b.s.inviteMu.Unlock()
		if v <= b.since.Invites {
			return nil
		}
	}
	knocks, err := rk.PendingKnocks(b.ctx, user)
	if err != nil {
		return err
	}
	for _, k := range knocks {
		if !b.f.rooms.match(k.RoomID) {
			continue
		}
		if m, ok := b.s.members.Membership(user, k.RoomID); ok && m.Pos > 0 && (m.Membership == "join" || m.Membership == "invite") {
			continue // answered: the room's own events say so
		}
		if _, dup := b.resp.Rooms.Invite[k.RoomID]; dup {
			continue
		}
		if _, dup := b.resp.Rooms.Knock[k.RoomID]; dup {
			continue
		}
		evs := make([]json.RawMessage, 0, len(k.KnockRoomState)+1)
		for _, raw := range k.KnockRoomState {
			if x := gjson.ParseBytes(raw); x.IsObject() {
				evs = append(evs, strippedRaw(x))
			}
		}
		if x := gjson.ParseBytes(k.Event); x.IsObject() {
			evs = append(evs, strippedRaw(x))
		}
		b.resp.Rooms.Knock[k.RoomID] = &knockedRoom{KnockState: eventBatch{Events: evs}}
		b.news = true
	}
	return nil
}
