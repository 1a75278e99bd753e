package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
)

// Invite is an invite received from another server for a local user to a room this
// server is not in, signed by this server and kept until the user answers.
type Invite struct {
	RoomID      id.RoomID
	RoomVersion id.RoomVersion
	EventID     id.EventID
	Invitee     id.UserID
	Sender      id.UserID
	// Event is the invite event in federation JSON, with both servers' signatures.
	Event json.RawMessage
	// InviteRoomState is the state the inviting server sent for display
	// (invite_room_state): full or stripped state events.
	InviteRoomState []json.RawMessage
	ReceivedTS      int64
}

// OnInvite registers fn to be called for each invite received for a local user to a
// room this server is not in (sync shows them; the client API accepts or rejects
// them). fn must be quick.
func (a *API) OnInvite(fn func(Invite)) {
	a.invitesMu.Lock()
	a.inviteListeners = append(a.inviteListeners, fn)
	a.invitesMu.Unlock()
}

// PendingInvites returns the invites received for userID, oldest first.
func (a *API) PendingInvites(ctx context.Context, userID id.UserID) ([]Invite, error) {
	rows, err := a.store.db.Query(ctx, `SELECT event_id, room_id, room_version, event_json, invite_room_state, received_ts
		FROM federation_invites WHERE invitee = $1 ORDER BY received_ts`, string(userID))
	if err != nil {
		return nil, fmt.Errorf("listing invites of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Invite
	for rows.Next() {
		var inv Invite
		var eid, rid, ver string
		var state []byte
		if err := rows.Scan(&eid, &rid, &ver, &inv.Event, &state, &inv.ReceivedTS); err != nil {
			return nil, fmt.Errorf("listing invites of %s: %w", userID, err)
		}
		inv.EventID, inv.RoomID, inv.RoomVersion, inv.Invitee = id.EventID(eid), id.RoomID(rid), id.RoomVersion(ver), userID
		if ev, err := events.Parse(inv.RoomVersion, inv.Event); err == nil {
			inv.Sender = ev.Sender()
		}
		if err := json.Unmarshal(state, &inv.InviteRoomState); err != nil {
			return nil, fmt.Errorf("decoding invite state of %s: %w", eid, err)
		}
		out = append(out, inv)
	}
	return out, rows.Err()
}

// ForgetInvite drops a stored invite (answered, or superseded by a join).
func (a *API) ForgetInvite(ctx context.Context, eventID id.EventID) error {
	if _, err := a.store.db.Exec(ctx, `DELETE FROM federation_invites WHERE event_id = $1`, string(eventID)); err != nil {
		return fmt.Errorf("forgetting invite %s: %w", eventID, err)
	}
	return nil
}

// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
func (a *API) putInvite(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	eventID := id.EventID(mux.Vars(r)["eventId"])
	var req struct {
		RoomVersion     id.RoomVersion    `json:"room_version"`
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.RoomVersion == "" {
		return httputil.MissingParam("room_version is required")
	}
	if !roomversion.Known(req.RoomVersion) {
		return errIncompatibleVersion(req.RoomVersion)
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return err
	}
	ev, err := events.Parse(req.RoomVersion, req.Event)
	if err != nil {
		return &httputil.Error{Status: http.StatusBadRequest, ErrCode: orDefault(events.Errcode(err), "M_BAD_JSON"), Message: err.Error()}
	}
	switch {
	case ev.ID() != eventID:
		return httputil.InvalidParam("Event ID %s does not match the path", ev.ID())
	case ev.RoomID() != roomID:
		return httputil.InvalidParam("Event is for another room")
	case ev.Type() != "m.room.member" || membershipOf(ev.Content()) != "invite" || ev.StateKey() == nil:
		return httputil.InvalidParam("Event is not an invite")
	case id.UserID(*ev.StateKey()).Homeserver() != a.serverName:
		return httputil.InvalidParam("The invitee is not a user of this server")
	case ev.Sender().Homeserver() != origin:
		return httputil.Forbidden("The inviter does not belong to %s", origin)
	}
	invitee := id.UserID(*ev.StateKey())
	if a.opts.Profiles != nil {
		if _, err := a.opts.Profiles.LocalProfile(ctx, invitee); errors.Is(err, ErrNotFound) {
			return httputil.NotFound("User %s does not exist", invitee)
		}
	}
	if err := events.VerifySignatures(ev, a.getKeyFunc(ctx)); err != nil {
		return httputil.Forbidden("Bad signature: %v", err)
	}
	if a.opts.Invites != nil {
		if err := a.opts.Invites.CheckInvite(ctx, invitee, ev.Sender()); err != nil {
			return err // MSC4155: the invitee blocks invites from the sender
		}
	}
	if !ev.CheckContentHash() {
		return httputil.InvalidParam("Content hash does not match")
	}
	signed, err := ev.Sign(a.serverName, id.KeyID(a.key.ID), a.key.PrivateKey)
	if err != nil {
		return err
	}
	// An invite to a room this server is in arrives through /send as well; one to
	// a room it is not in is kept for the invitee.
	if exts, err := a.rs.ForwardExtremities(ctx, roomID); err != nil || len(exts) == 0 {
		if err := a.storeInvite(ctx, signed, req.RoomVersion, invitee, req.InviteRoomState); err != nil {
			return err
		}
	}
	b := append([]byte(`{"event":`), signed.JSON()...)
	httputil.WriteJSONBytes(w, http.StatusOK, append(b, '}'))
	return nil
}

func (a *API) storeInvite(ctx context.Context, ev *events.Event, version id.RoomVersion, invitee id.UserID, state []json.RawMessage) error {
	if state == nil {
		state = []json.RawMessage{}
	}
	stateJSON, err := json.Marshal(state)
	if err != nil {
		return err
	}
	if err := a.forgetRemoteLeaves(ctx, ev.RoomID(), invitee); err != nil {
		return err // a new invite supersedes the user's earlier leave
	}
	now := time.Now().UnixMilli()
	if _, err := a.store.db.Exec(ctx, `INSERT INTO federation_invites (event_id, room_id, room_version, invitee, event_json, invite_room_state, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING`,
		string(ev.ID()), string(ev.RoomID()), string(version), string(invitee), ev.JSON(), stateJSON, now); err != nil {
		return fmt.Errorf("storing invite %s: %w", ev.ID(), err)
	}
	inv := Invite{RoomID: ev.RoomID(), RoomVersion: version, EventID: ev.ID(), Invitee: invitee, Sender: ev.Sender(),
		Event: ev.JSON(), InviteRoomState: state, ReceivedTS: now}
	a.invitesMu.RLock()
	ls := a.inviteListeners
	a.invitesMu.RUnlock()
	for _, l := range ls {
		l(inv)
	}
	slog.Info("received invite", "room_id", ev.RoomID(), "invitee", invitee, "sender", ev.Sender())
	return nil
}

// inviteStateTypes are the state events sent along with an invite for display.
var inviteStateTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// InviteRemoteUser has the invitee's server countersign an invite event built here
// (PUT /invite v2, with the room's stripped state for display) and returns the
// event signed by both servers; the caller stores it, which sends it to the room.
// Remote refusals come back as *httputil.Error when they carry a Matrix error.
func (a *API) InviteRemoteUser(ctx context.Context, ev *events.Event) (*events.Event, error) {
	if ev.Type() != "m.room.member" || ev.StateKey() == nil || membershipOf(ev.Content()) != "invite" {
		return nil, errors.New("inviting: the event is not an invite")
	}
	invitee := id.UserID(*ev.StateKey())
	server := invitee.Homeserver()
	if server == "" || server == a.serverName {
		return nil, fmt.Errorf("inviting %s: not a remote user", invitee)
	}
	roomID := ev.RoomID()
	var state []json.RawMessage
	for _, t := range inviteStateTypes {
		if se, err := a.rs.CurrentStateEvent(ctx, roomID, t, ""); err == nil && se != nil {
			state = append(state, a.storedJSON(se))
		}
	}
	if me, err := a.rs.CurrentStateEvent(ctx, roomID, "m.room.member", string(ev.Sender())); err == nil && me != nil {
		state = append(state, a.storedJSON(me))
	}
	resp, err := a.client.SendInvite(ctx, &federation.ReqSendInvite{
		RoomID: roomID, UserID: invitee, EventID: ev.ID(), Event: ev.JSON(), InviteRoomState: state, RoomVersion: ev.Version().ID,
	})
	if err != nil {
		return nil, remoteError("sending the invite to "+server, err)
	}
	if resp == nil || len(resp.Event) == 0 {
		return nil, fmt.Errorf("sending the invite to %s: no event in the answer", server)
	}
	signed, err := events.Parse(ev.Version().ID, resp.Event)
	if err != nil || signed.ID() != ev.ID() {
		return nil, fmt.Errorf("sending the invite to %s: the answer is not the invite event", server)
	}
	// The invitee's server must have signed it, with a key that verifies.
	if err := a.verifyServerSignature(ctx, signed, server); err != nil {
		return nil, fmt.Errorf("sending the invite to %s: %w", server, err)
	}
	return signed, nil
}

// verifyServerSignature checks that server signed ev with a key of its own that
// verifies (the signed bytes are the redacted event without signatures).
func (a *API) verifyServerSignature(ctx context.Context, ev *events.Event, server string) error {
	sigs := ev.PDU().Signatures[server]
	if len(sigs) == 0 {
		return fmt.Errorf("no signature of %s", server)
	}
	msg, err := sjson.DeleteBytes(ev.Redacted().JSON(), "signatures")
	if err != nil {
		return err
	}
	for keyID, sig := range sigs {
		k, err := a.keyRing.Key(ctx, server, keyID, time.UnixMilli(ev.OriginServerTS()))
		if err != nil {
			continue
		}
		pub, err1 := base64.RawStdEncoding.DecodeString(strings.TrimRight(string(k.key), "="))
		raw, err2 := base64.RawStdEncoding.DecodeString(strings.TrimRight(sig, "="))
		if err1 == nil && err2 == nil && len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, raw) {
			return nil
		}
	}
	return fmt.Errorf("no valid signature of %s", server)
}

// ResolveRemoteAlias asks the alias's server for its room and resident servers
// (GET /query/directory).
func (a *API) ResolveRemoteAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, []string, error) {
	server := aliasServer(alias)
	if server == "" {
		return "", nil, httputil.InvalidParam("Bad room alias %s", alias)
	}
	if server == a.serverName {
		return "", nil, fmt.Errorf("resolving %s: a local alias", alias)
	}
	resp, err := a.client.QueryDirectory(ctx, server, alias)
	if err != nil {
		return "", nil, remoteError("resolving "+string(alias), err)
	}
	if resp == nil || resp.RoomID == "" {
		return "", nil, httputil.NotFound("Room alias %s not found", alias)
	}
	return resp.RoomID, resp.Servers, nil
}
