package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
)

// Knock is a knock a local user made on a room this server is not in, kept
// until the user is let in or the knock is retracted.
type Knock struct {
	RoomID      id.RoomID
	RoomVersion id.RoomVersion
	EventID     id.EventID
	Knocker     id.UserID
	// Server is the resident server that accepted the knock.
	Server string
	// Event is the knock event in federation JSON.
	Event json.RawMessage
	// KnockRoomState is the state the room's server sent back for display
	// (knock_room_state): full or stripped state events.
	KnockRoomState []json.RawMessage
	SentTS         int64
}

// maxKnockRoomState bounds the knock_room_state entries kept from a server.
const maxKnockRoomState = 100

// KnockRemoteRoom knocks userID (a local user) on a room that lives on other
// servers, by room ID or alias, through the servers in via (and the alias's or
// room ID's own server): make_knock, then send_knock (Server-Server API,
// "Knocking upon a room"). The knock and the room state the resident sent back
// are kept for /sync (PendingKnocks). It returns the room ID. Errors from the
// remote servers come back as *httputil.Error where they carry a Matrix error
// code (M_FORBIDDEN when the room does not allow knocking).
func (a *API) KnockRemoteRoom(ctx context.Context, roomIDOrAlias string, userID id.UserID, via []string, reason *string) (id.RoomID, error) {
	if userID.Homeserver() != a.serverName {
		return "", fmt.Errorf("knocking on %s: %s is not a local user", roomIDOrAlias, userID)
	}
	roomID, candidates, err := a.remoteTarget(ctx, roomIDOrAlias, via, nil)
	if err != nil {
		return "", err
	}
	var errs []error
	for _, server := range candidates {
		err := a.knockVia(ctx, server, roomID, userID, reason)
		if err == nil {
			return roomID, nil
		}
		slog.Info("remote knock failed", "room_id", roomID, "via", server, "err", err)
		errs = append(errs, err)
		var me *httputil.Error
		if errors.As(err, &me) && (me.ErrCode == "M_FORBIDDEN" || me.ErrCode == "M_INCOMPATIBLE_ROOM_VERSION") {
			return "", err // the room said no; other residents will say the same
		}
		if ctx.Err() != nil {
			break
		}
	}
	for _, err := range errs {
		var me *httputil.Error
		if errors.As(err, &me) {
			return "", err
		}
	}
	return "", errors.Join(errs...)
}

// knockVia runs the knock handshake with one resident server.
func (a *API) knockVia(ctx context.Context, server string, roomID id.RoomID, userID id.UserID, reason *string) error {
	var versions []id.RoomVersion
	for _, v := range roomversion.All() {
		if v.Knocking {
			versions = append(versions, v.ID)
		}
	}
	mk, err := a.client.MakeKnock(ctx, &federation.ReqMakeKnock{RoomID: roomID, UserID: userID, Via: server, SupportedVersions: versions})
	if err != nil {
		return remoteError("make_knock", err)
	}
	if mk == nil {
		return errors.New("make_knock: empty answer")
	}
	v, ok := roomversion.Lookup(mk.RoomVersion)
	if !ok || !v.Knocking {
		return fmt.Errorf("make_knock: room version %q does not support knocking here", mk.RoomVersion)
	}
	proto, err := templateProto(v, mk.Event, roomID, userID, "knock")
	if err != nil {
		return fmt.Errorf("make_knock: %w", err)
	}
	if a.opts.Profiles != nil {
		proto.Content = a.withProfile(ctx, userID, proto.Content)
	}
	if reason != nil {
		proto.Content = withReason(proto.Content, *reason)
	}
	ev, err := events.Build(v.ID, *proto, a.serverName, id.KeyID(a.key.ID), a.key.PrivateKey)
	if err != nil {
		return fmt.Errorf("building the knock event: %w", err)
	}
	sk, err := a.client.SendKnock(ctx, &federation.ReqSendKnock{RoomID: roomID, EventID: ev.ID(), Event: ev.JSON(), Via: server})
	if err != nil {
		return remoteError("send_knock", err)
	}
	var state []json.RawMessage
	if sk != nil {
		for _, raw := range sk.KnockRoomState {
			if len(state) >= maxKnockRoomState {
				break
			}
			if x := gjson.ParseBytes(raw); x.IsObject() && x.Get("type").Type == gjson.String {
				state = append(state, json.RawMessage(raw))
			}
		}
	}
	if err := a.storeKnock(ctx, ev, v.ID, userID, server, state); err != nil {
		return err
	}
	slog.Info("knocked on remote room", "room_id", roomID, "user_id", userID, "via", server)
	return nil
}

// withReason sets content.reason of member content.
func withReason(content []byte, reason string) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(content, &m) != nil || m == nil {
		return content
	}
	r, err := json.Marshal(reason)
	if err != nil {
		return content
	}
	m["reason"] = r
	b, err := json.Marshal(m)
	if err != nil {
		return content
	}
	return b
}

// storeKnock keeps a knock, replacing earlier knocks of the user on the room.
func (a *API) storeKnock(ctx context.Context, ev *events.Event, version id.RoomVersion, knocker id.UserID, server string, state []json.RawMessage) error {
	if state == nil {
		state = []json.RawMessage{}
	}
	stateJSON, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("encoding the knock state of %s: %w", ev.ID(), err)
	}
	if err := a.ForgetKnocks(ctx, ev.RoomID(), knocker); err != nil {
		return err
	}
	if err := a.forgetRemoteLeaves(ctx, ev.RoomID(), knocker); err != nil {
		return err
	}
	if _, err := a.store.db.Exec(ctx, `INSERT INTO federation_knocks (event_id, room_id, room_version, knocker, server, event_json, knock_room_state, sent_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING`,
		string(ev.ID()), string(ev.RoomID()), string(version), string(knocker), server, ev.JSON(), stateJSON, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("storing knock %s: %w", ev.ID(), err)
	}
	return nil
}

// PendingKnocks returns userID's knocks on rooms this server is not in, oldest
// first, leaving out rooms where the user has since been invited (the invite
// answers the knock).
func (a *API) PendingKnocks(ctx context.Context, userID id.UserID) ([]Knock, error) {
	rows, err := a.store.db.Query(ctx, `SELECT k.event_id, k.room_id, k.room_version, k.server, k.event_json, k.knock_room_state, k.sent_ts
		FROM federation_knocks k WHERE k.knocker = $1
		AND NOT EXISTS (SELECT 1 FROM federation_invites i WHERE i.invitee = k.knocker AND i.room_id = k.room_id)
		ORDER BY k.sent_ts`, string(userID))
	if err != nil {
		return nil, fmt.Errorf("listing knocks of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Knock
	for rows.Next() {
		var k Knock
		var eid, rid, ver string
		var state []byte
		if err := rows.Scan(&eid, &rid, &ver, &k.Server, &k.Event, &state, &k.SentTS); err != nil {
			return nil, fmt.Errorf("listing knocks of %s: %w", userID, err)
		}
		k.EventID, k.RoomID, k.RoomVersion, k.Knocker = id.EventID(eid), id.RoomID(rid), id.RoomVersion(ver), userID
		if err := json.Unmarshal(state, &k.KnockRoomState); err != nil {
			return nil, fmt.Errorf("decoding knock state of %s: %w", eid, err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// ForgetKnocks drops the kept knocks of userID on roomID (answered, retracted
// or superseded).
func (a *API) ForgetKnocks(ctx context.Context, roomID id.RoomID, userID id.UserID) error {
	if _, err := a.store.db.Exec(ctx, `DELETE FROM federation_knocks WHERE room_id = $1 AND knocker = $2`, string(roomID), string(userID)); err != nil {
		return fmt.Errorf("forgetting knocks of %s on %s: %w", userID, roomID, err)
	}
	return nil
}

// RetractRemoteKnock withdraws userID's pending knock on roomID, a room this
// server is not in, with make_leave/send_leave through the server that took
// the knock (Client-Server API, "Knocking on rooms": a knock is retracted by
// leaving). It reports false when the user has no such knock.
func (a *API) RetractRemoteKnock(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error) {
	knocks, err := a.PendingKnocks(ctx, userID)
	if err != nil {
		return false, err
	}
	var servers []string
	for _, k := range knocks {
		if k.RoomID == roomID {
			servers = append(servers, k.Server)
		}
	}
	if len(servers) == 0 {
		return false, nil
	}
	if _, server, ok := strings.Cut(string(roomID), ":"); ok {
		servers = append(servers, server)
	}
	var errs []error
	for _, server := range servers {
		if server == a.serverName || server == "" {
			continue
		}
		leave, err := a.leaveVia(ctx, server, roomID, userID, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := a.ForgetKnocks(ctx, roomID, userID); err != nil {
			return true, err
		}
		return true, a.storeRemoteLeave(ctx, leave, leave.Version().ID, userID)
	}
	if len(errs) == 0 {
		return true, ErrNoServers
	}
	for _, err := range errs {
		var me *httputil.Error
		if errors.As(err, &me) {
			return true, err
		}
	}
	return true, errors.Join(errs...)
}
