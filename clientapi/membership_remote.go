package clientapi

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
)

// Memberships that go through other servers although this server knows the
// room: rejecting an invite from a room this server is not in, and joining a
// restricted room through a server whose users can authorise the join.

// RemoteInviteRejecter rejects invites local users received from other
// servers to rooms this server is not in (Server-Server API, "Leaving Rooms
// (Rejecting Invites)"). It is implemented by federation, which also makes the
// rejection show in /sync (see RemoteLeaves).
type RemoteInviteRejecter interface {
	// RejectRemoteInvite rejects userID's invite to roomID; found is false when
	// the user holds no such invite.
	RejectRemoteInvite(ctx context.Context, roomID id.RoomID, userID id.UserID, reason *string) (found bool, err error)
}

// rejectRemoteInvite rejects the user's invite to a room no local user is
// joined to, if they hold one from another server; done reports whether they
// did. An invite to a room a local user is joined to is in the room engine and
// is rejected there with a leave event like any other.
func (a *API) rejectRemoteInvite(ctx context.Context, roomID id.RoomID, userID id.UserID, reason *string) (done bool, err error) {
	if a.opts.RemoteInviteRejecter == nil {
		return false, nil
	}
	if joined, err := a.localUserJoined(ctx, roomID); err != nil || joined {
		return false, err
	}
	found, err := a.opts.RemoteInviteRejecter.RejectRemoteInvite(ctx, roomID, userID, reason)
	if !found || err == nil {
		return found, nil
	}
	var me *httputil.Error
	if errors.As(err, &me) {
		return true, me
	}
	slog.InfoContext(ctx, "rejecting a remote invite failed", "room_id", roomID, "user_id", userID, "err", err)
	return true, internalErr(err)
}

// localUserJoined reports whether a user of this server is joined to roomID.
func (a *API) localUserJoined(ctx context.Context, roomID id.RoomID) (bool, error) {
	joined, err := a.opts.Roomserver.Members(ctx, roomID, "join")
	if err != nil {
		return false, internalErr(err)
	}
	for _, u := range joined {
		if u.Homeserver() == a.cfg.ServerName {
			return true, nil
		}
	}
	return false, nil
}

// restrictedJoinServers returns the other servers through which a restricted
// join must go when no user of this server may authorise it: those with a
// joined user who has the power to invite (Client-Server API, "Restricted
// rooms": the join event names such a user, and only their server can sign
// it). It returns nil when a local user has that power, or when no other
// server has one (the join is then tried here and the auth rules decide).
func (a *API) restrictedJoinServers(ctx context.Context, roomID id.RoomID) ([]string, error) {
	pl, err := a.roomPower(ctx, roomID)
	if err != nil {
		if errors.Is(err, roomserver.ErrRoomNotFound) {
			return nil, nil
		}
		return nil, internalErr(err)
	}
	joined, err := a.opts.Roomserver.Members(ctx, roomID, "join")
	if err != nil {
		return nil, internalErr(err)
	}
	need := pl.level("invite", 0)
	var servers []string
	for _, u := range joined {
		if pl.userLevel(u) < need {
			continue
		}
		s := u.Homeserver()
		if s == a.cfg.ServerName {
			return nil, nil
		}
		if s != "" && !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	return servers, nil
}

// ownMemberEvent reports whether e is userID's own m.room.member event.
func ownMemberEvent(e *roomserver.StoredEvent, userID id.UserID) bool {
	sk := e.StateKey()
	return e.Type() == "m.room.member" && sk != nil && *sk == string(userID) && !e.Rejected
}
