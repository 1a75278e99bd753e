package clientapi

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/e2ee"
	"hearth/clientapi/syncstream"
)

// DeviceStreams is what /sync needs from the end-to-end encryption module
// (Client-Server API, "Extensions to /sync" of "Send-to-Device messaging" and
// "End-to-End Encryption"): its stream position, the E2EE parts of a
// response, and news of changes, which wake the syncs concerned.
// *e2ee.Service implements it.
type DeviceStreams interface {
	Position() int64
	Sync(ctx context.Context, req e2ee.SyncRequest) (*e2ee.SyncResult, error)
	Subscribe(fn func(e2ee.Change))
}

var _ DeviceStreams = (*e2ee.Service)(nil)

type deviceStreamsBox struct{ d DeviceStreams }

// SetDeviceStreams plugs the end-to-end encryption module into /sync. Until
// it is called, responses carry empty to_device, device_lists and key counts.
func (s *Syncer) SetDeviceStreams(d DeviceStreams) {
	if d == nil {
		return
	}
	s.devices.Store(&deviceStreamsBox{d})
	d.Subscribe(s.onDeviceChange)
}

// deviceStreams returns the plugged-in E2EE module, or nil.
func (s *Syncer) deviceStreams() DeviceStreams {
	if b := s.devices.Load(); b != nil {
		return b.d
	}
	return nil
}

// onDeviceChange wakes the syncs an E2EE change concerns: the recipients of
// to-device messages; for a device-list change, the user and everyone sharing
// a room with them.
func (s *Syncer) onDeviceChange(c e2ee.Change) {
	switch c.Kind {
	case e2ee.ToDeviceChange:
		s.notifier.WakeUsers(c.Users)
	case e2ee.DeviceListChange:
		s.wakePresence(c.User)
	}
}

// deviceSync fills the E2EE parts of a response: next is the position for
// next_batch and news whether there is anything worth returning for.
func (s *Syncer) deviceSync(ctx context.Context, d *Device, since, to syncstream.Token, initial bool, resp *syncResponse) (next int64, news bool, err error) {
	ds := s.deviceStreams()
	if ds == nil {
		return 0, false, nil
	}
	res, err := ds.Sync(ctx, e2ee.SyncRequest{
		UserID: d.UserID, DeviceID: d.DeviceID, Since: since.E2EE, Upto: to.E2EE,
		RoomSince: since.Events, RoomUpto: to.Events, Initial: initial,
	})
	if err != nil {
		return 0, false, err
	}
	if len(res.ToDevice) > 0 {
		resp.ToDevice.Events = res.ToDevice
	}
	if res.DeviceListsChanged != nil {
		resp.DeviceLists.Changed = res.DeviceListsChanged
	}
	if res.DeviceListsLeft != nil {
		resp.DeviceLists.Left = res.DeviceListsLeft
	}
	if res.OneTimeKeysCount != nil {
		resp.OneTimeKeysCount = res.OneTimeKeysCount
	}
	if res.UnusedFallbackKeyTypes != nil {
		resp.FallbackKeyTypes = res.UnusedFallbackKeyTypes
	}
	return res.Next, res.HasUpdates(), nil
}

// RemoteInvite is an invite another server sent a local user to a room this
// server is not in.
type RemoteInvite struct {
	RoomID  id.RoomID
	EventID id.EventID
	Sender  id.UserID
	// Event is the invite event in federation JSON.
	Event json.RawMessage
	// InviteRoomState is the state the inviting server sent for display.
	InviteRoomState []json.RawMessage
}

// RemoteInvites lists the pending invites of a user to rooms this server is
// not in (the federation API keeps them). Whoever keeps them calls
// (*Syncer).RemoteInvitesChanged when one arrives or is answered.
type RemoteInvites interface {
	PendingInvites(ctx context.Context, userID id.UserID) ([]RemoteInvite, error)
}

type remoteInvitesBox struct{ r RemoteInvites }

// SetRemoteInvites plugs the keeper of invites from other servers into /sync.
func (s *Syncer) SetRemoteInvites(r RemoteInvites) {
	if r != nil {
		s.remoteInvites.Store(&remoteInvitesBox{r})
	}
}

// RemoteInvitesChanged tells /sync that userID's invites from other servers
// changed: their syncs show the pending ones again.
func (s *Syncer) RemoteInvitesChanged(userID id.UserID) {
	pos := s.invitePos.Add(1)
	s.inviteMu.Lock()
	s.inviteVers[userID] = pos
	s.inviteMu.Unlock()
	s.notifier.Wake(userID)
}

// remoteInviteRooms adds the pending invites from other servers, on an
// initial sync or when they changed since the token, leaving out rooms the
// user has joined or left since and invites from ignored users.
func (b *syncBuilder) remoteInviteRooms() error {
	box := b.s.remoteInvites.Load()
	if box == nil {
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
	invs, err := box.r.PendingInvites(b.ctx, user)
	if err != nil {
		return err
	}
	for _, inv := range invs {
		if !b.f.rooms.match(inv.RoomID) {
			continue
		}
		if _, ign := b.ignored[inv.Sender]; ign || b.invites.hides(inv.Sender) {
			continue
		}
		if m, ok := b.s.members.Membership(user, inv.RoomID); ok && m.Pos > 0 && m.Membership != "invite" {
			continue // answered: the room's own events say so
		}
		if _, dup := b.resp.Rooms.Invite[inv.RoomID]; dup {
			continue
		}
		evs := make([]json.RawMessage, 0, len(inv.InviteRoomState)+1)
		for _, raw := range inv.InviteRoomState {
			if x := gjson.ParseBytes(raw); x.IsObject() {
				evs = append(evs, strippedRaw(x))
			}
		}
		if x := gjson.ParseBytes(inv.Event); x.IsObject() {
			evs = append(evs, strippedRaw(x))
		}
		b.resp.Rooms.Invite[inv.RoomID] = &invitedRoom{InviteState: eventBatch{Events: evs}}
		b.news = true
	}
	return nil
}
