package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
)

// Out-of-band leaves: a local user leaving a room this server is not in. The
// leave event never enters the room engine (this server has none of the room's
// state), so it is kept here for /sync, which shows the room in the user's leave
// section (Client-Server API, "Syncing": a rejected invite or retracted knock
// moves the room to "leave"). Three things make one:
//
//   - the user rejects an invite: make_leave/send_leave through the inviting
//     server (Server-Server API, "Leaving Rooms (Rejecting Invites)"), or, when
//     no server of the room will take the leave, a leave event built here and
//     kept locally (as Synapse does, so that an unreachable room cannot leave
//     an invite stuck);
//   - the user retracts a knock (make_leave/send_leave);
//   - the inviter rescinds the invite: their server sends the leave event to
//     this server in a transaction although this server is not in the room.

// RemoteLeave is a local user's leave event for a room this server is not in.
type RemoteLeave struct {
	RoomID      id.RoomID
	RoomVersion id.RoomVersion
	EventID     id.EventID
	UserID      id.UserID
	// Event is the leave event in federation JSON.
	Event  json.RawMessage
	LeftTS int64
}

// OnRemoteLeave registers fn to be called for each out-of-band leave recorded
// (/sync then shows the room as left). fn must be quick.
func (a *API) OnRemoteLeave(fn func(RemoteLeave)) {
	a.invitesMu.Lock()
	a.leaveListeners = append(a.leaveListeners, fn)
	a.invitesMu.Unlock()
}

// RemoteLeaves returns userID's out-of-band leaves, oldest first: the newest
// per room, for rooms where the user has not been invited, knocked or joined
// from here since.
func (a *API) RemoteLeaves(ctx context.Context, userID id.UserID) ([]RemoteLeave, error) {
	rows, err := a.store.db.Query(ctx, `SELECT event_id, room_id, room_version, event_json, left_ts
		FROM federation_remote_leaves WHERE user_id = $1 ORDER BY left_ts`, string(userID))
	if err != nil {
		return nil, fmt.Errorf("listing out-of-band leaves of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []RemoteLeave
	for rows.Next() {
		var l RemoteLeave
		var eid, rid, ver string
		if err := rows.Scan(&eid, &rid, &ver, &l.Event, &l.LeftTS); err != nil {
			return nil, fmt.Errorf("listing out-of-band leaves of %s: %w", userID, err)
		}
		l.EventID, l.RoomID, l.RoomVersion, l.UserID = id.EventID(eid), id.RoomID(rid), id.RoomVersion(ver), userID
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing out-of-band leaves of %s: %w", userID, err)
	}
	return out, nil
}

// storeRemoteLeave keeps ev, userID's leave from a room this server is not in,
// in place of earlier ones for the room, and tells the listeners.
func (a *API) storeRemoteLeave(ctx context.Context, ev *events.Event, version id.RoomVersion, userID id.UserID) error {
	if err := a.forgetRemoteLeaves(ctx, ev.RoomID(), userID); err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	if _, err := a.store.db.Exec(ctx, `INSERT INTO federation_remote_leaves (event_id, room_id, room_version, user_id, event_json, left_ts)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING`,
		string(ev.ID()), string(ev.RoomID()), string(version), string(userID), ev.JSON(), now); err != nil {
		return fmt.Errorf("storing out-of-band leave %s: %w", ev.ID(), err)
	}
	l := RemoteLeave{RoomID: ev.RoomID(), RoomVersion: version, EventID: ev.ID(), UserID: userID, Event: ev.JSON(), LeftTS: now}
	a.invitesMu.RLock()
	ls := a.leaveListeners
	a.invitesMu.RUnlock()
	for _, fn := range ls {
		fn(l)
	}
	return nil
}

// forgetRemoteLeaves drops userID's out-of-band leaves of roomID (superseded by
// a new invite, knock or join).
func (a *API) forgetRemoteLeaves(ctx context.Context, roomID id.RoomID, userID id.UserID) error {
	if _, err := a.store.db.Exec(ctx, `DELETE FROM federation_remote_leaves WHERE room_id = $1 AND user_id = $2`,
		string(roomID), string(userID)); err != nil {
		return fmt.Errorf("forgetting out-of-band leaves of %s in %s: %w", userID, roomID, err)
	}
	return nil
}

// localLeaveFor builds, signed by this server, userID's leave event answering
// inv when no server of the room takes the rejection: its only prev and auth
// event is the invite, which is all this server knows of the room.
func (a *API) localLeaveFor(inv Invite, userID id.UserID, reason *string) (*events.Event, error) {
	v, ok := roomversion.Lookup(inv.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("room version %q of %s is not supported", inv.RoomVersion, inv.RoomID)
	}
	invite, err := events.Parse(v.ID, inv.Event)
	if err != nil {
		return nil, fmt.Errorf("parsing invite %s: %w", inv.EventID, err)
	}
	content := []byte(`{"membership":"leave"}`)
	if reason != nil && *reason != "" {
		content = withReason(content, *reason)
	}
	sk := string(userID)
	proto := events.ProtoEvent{
		Type: "m.room.member", StateKey: &sk, Sender: userID, RoomID: inv.RoomID, Content: content,
		PrevEvents: []id.EventID{invite.ID()}, AuthEvents: []id.EventID{invite.ID()}, Depth: invite.Depth() + 1,
	}
	if v.IsOriginBasedEventIDs() {
		proto.ReferenceHashes = map[id.EventID][32]byte{invite.ID(): invite.ReferenceHash()}
	}
	ev, err := events.Build(v.ID, proto, a.serverName, id.KeyID(a.key.ID), a.key.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("building the leave event: %w", err)
	}
	return ev, nil
}

// takeInviteRescissions looks, among PDUs origin sent for roomID, a room this
// server does not know, for the rescission of an invite a local user holds:
// the inviter's leave event for the invitee, citing the invite among its auth
// events. The room's server sends it to the invitee's server because nothing
// else would tell the invitee (as Synapse does). This server cannot
// run the auth rules without the room's state, so, as Synapse, it accepts a
// rescission only from the inviter (whose invite it has), correctly signed.
// The invite is then forgotten and the leave kept for /sync; results gets
// the outcome of the PDUs taken.
func (a *API) takeInviteRescissions(ctx context.Context, origin string, roomID id.RoomID, raws []json.RawMessage, results map[id.EventID]error) {
	for _, raw := range raws {
		x := gjson.ParseBytes(raw)
		if x.Get("type").Str != "m.room.member" || x.Get("content.membership").Str != "leave" {
			continue
		}
		invitee := id.UserID(x.Get("state_key").Str)
		sender := id.UserID(x.Get("sender").Str)
		if invitee.Homeserver() != a.serverName || sender == invitee || sender.Homeserver() != origin {
			continue
		}
		invites, err := a.PendingInvites(ctx, invitee)
		if err != nil {
			slog.Warn("looking up invites for a rescission", "room_id", roomID, "user_id", invitee, "err", err)
			continue
		}
		for _, inv := range invites {
			if inv.RoomID != roomID || inv.Sender != sender {
				continue
			}
			ev, err := events.Parse(inv.RoomVersion, raw)
			if err != nil || ev.RoomID() != roomID || !slices.Contains(ev.AuthEventIDs(), inv.EventID) {
				continue
			}
			results[ev.ID()] = a.takeRescission(ctx, ev, inv)
			break
		}
	}
}

// takeRescission checks and keeps one rescission of inv.
func (a *API) takeRescission(ctx context.Context, ev *events.Event, inv Invite) error {
	if err := events.VerifySignatures(ev, a.getKeyFunc(ctx)); err != nil {
		return fmt.Errorf("bad signature: %w", err)
	}
	if !ev.CheckContentHash() {
		return fmt.Errorf("content hash of %s does not match", ev.ID())
	}
	if err := a.ForgetInvite(ctx, inv.EventID); err != nil {
		return err
	}
	if err := a.storeRemoteLeave(ctx, ev, inv.RoomVersion, inv.Invitee); err != nil {
		return err
	}
	slog.Info("invite rescinded", "room_id", inv.RoomID, "invitee", inv.Invitee, "sender", ev.Sender())
	return nil
}
