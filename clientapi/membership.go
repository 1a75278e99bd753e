package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// Room membership (Client-Server API, "Room membership"): joining, knocking,
// inviting, leaving, forgetting, kicking, banning and unbanning, and the list of
// joined rooms. Rooms this server is in are handled by the room engine; joining
// a room this server is not in goes through RemoteJoiner (federation).

// RemoteJoiner joins a local user to a room through other servers (Server-Server
// API, "Joining Rooms"): it resolves remote aliases, runs make_join/send_join
// with the given servers and stores the room. It is implemented by federation;
// without it, joins of rooms this server is not in fail.
type RemoteJoiner interface {
	JoinRemoteRoom(ctx context.Context, roomIDOrAlias string, userID id.UserID, via []string) (id.RoomID, error)
}

// RemoteKnocker knocks a local user on a room through other servers
// (Server-Server API, "Knocking upon a room"): make_knock/send_knock with the
// given servers, keeping the knock for /sync. It is implemented by federation;
// without it, knocks on rooms this server is not in fail.
type RemoteKnocker interface {
	KnockRemoteRoom(ctx context.Context, roomIDOrAlias string, userID id.UserID, via []string, reason *string) (id.RoomID, error)
	// RetractRemoteKnock withdraws a pending knock made through
	// KnockRemoteRoom (make_leave/send_leave); false when there is none.
	RetractRemoteKnock(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error)
}

// RemoteInviter has a remote user's server countersign an invite event built
// here (Server-Server API, "Inviting to a room") and returns the event as signed
// by both servers. It is implemented by federation.
type RemoteInviter interface {
	InviteRemoteUser(ctx context.Context, ev *events.Event) (*events.Event, error)
}

func (a *API) registerMembershipRoutes(r *mux.Router) {
	handle(r, v3R0, "/join/{roomIdOrAlias}", a.authed(a.joinByIDOrAlias, allowGuests), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/join", a.authed(a.joinByID, allowGuests), http.MethodPost)
	handle(r, v3Only, "/knock/{roomIdOrAlias}", a.authed(a.knock, 0), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/invite", a.authed(a.invite, 0), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/leave", a.authed(a.leave, allowGuests), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/forget", a.authed(a.forget, 0), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/kick", a.authed(a.kick, 0), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/ban", a.authed(a.ban, 0), http.MethodPost)
	handle(r, v3R0, "/rooms/{roomId}/unban", a.authed(a.unban, 0), http.MethodPost)
	handle(r, v3R0, "/joined_rooms", a.authed(a.joinedRooms, allowGuests), http.MethodGet)
}

// membershipBody is the body of the membership endpoints.
type membershipBody struct {
	UserID           string          `json:"user_id"`
	Reason           *string         `json:"reason"`
	ThirdPartySigned json.RawMessage `json:"third_party_signed"`
	// Third-party invites (invite_3pid).
	IDServer string `json:"id_server"`
	Medium   string `json:"medium"`
	Address  string `json:"address"`
}

func (b *membershipBody) validate() error {
	if b.Reason != nil && len(*b.Reason) > 2048 {
		return httputil.InvalidParam("The reason is too long")
	}
	return nil
}

// viaParams returns the via (and legacy server_name) query parameters.
func viaParams(r *http.Request) ([]string, error) {
	q := r.URL.Query()
	via := append(append([]string(nil), q["via"]...), q["server_name"]...)
	for _, s := range via {
		if s == "" || len(s) > 255 || strings.ContainsAny(s, "/ \x00") {
			return nil, httputil.InvalidParam("Invalid server name %q", s)
		}
	}
	return via, nil
}

// POST /join/{roomIdOrAlias}
func (a *API) joinByIDOrAlias(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.handleJoin(w, r, d, mux.Vars(r)["roomIdOrAlias"], true)
}

// POST /rooms/{roomId}/join
func (a *API) joinByID(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	return a.handleJoin(w, r, d, string(roomID), false)
}

// POST /join/{roomIdOrAlias} keeps the other members of its body (as Synapse
// does): they become part of the join event's content, e.g. a displayname for
// this room. POST /rooms/{roomId}/join takes only reason and third_party_signed.
func (a *API) handleJoin(w http.ResponseWriter, r *http.Request, d *Device, target string, customContent bool) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	var body membershipBody
	var extra map[string]json.RawMessage
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := unmarshalObject(raw, &body); err != nil {
			return err
		}
		if customContent {
			if err := json.Unmarshal(raw, &extra); err != nil {
				return httputil.BadJSON("Request body must be a JSON object")
			}
		}
	}
	if err := body.validate(); err != nil {
		return err
	}
	if len(body.ThirdPartySigned) > 0 && string(body.ThirdPartySigned) != "null" {
		return httputil.Forbidden("Joining with a third-party invite is not supported on this server")
	}
	via, err := viaParams(r)
	if err != nil {
		return err
	}
	roomID, err := a.join(r.Context(), d, target, via, body.Reason, "join", extra)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]id.RoomID{"room_id": roomID})
	return nil
}

// POST /knock/{roomIdOrAlias}
func (a *API) knock(w http.ResponseWriter, r *http.Request, d *Device) error {
	var body membershipBody
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	if err := body.validate(); err != nil {
		return err
	}
	via, err := viaParams(r)
	if err != nil {
		return err
	}
	roomID, err := a.join(r.Context(), d, mux.Vars(r)["roomIdOrAlias"], via, body.Reason, "knock", nil)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]id.RoomID{"room_id": roomID})
	return nil
}

// join joins (or knocks on, with membership "knock") a room by ID or alias.
// extra holds client-chosen members of the event content (see
// reservedMemberKeys); they are used for rooms this server is in.
func (a *API) join(ctx context.Context, d *Device, target string, via []string, reason *string, membership string, extra map[string]json.RawMessage) (id.RoomID, error) {
	rs := a.opts.Roomserver
	var roomID id.RoomID
	switch {
	case strings.HasPrefix(target, "#"):
		alias, err := parseAlias(target)
		if err != nil {
			return "", err
		}
		if aliasServer(alias) != a.cfg.ServerName {
			return a.joinRemote(ctx, d, target, via, reason, membership)
		}
		rid, err := a.resolveLocalAlias(ctx, alias)
		if err != nil {
			return "", err
		}
		roomID = rid
	case validRoomID(target):
		roomID = id.RoomID(target)
	default:
		return "", httputil.InvalidParam("%q is neither a room ID nor a room alias", target)
	}
	local, err := a.serverInRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	if !local {
		if _, err := rs.RoomVersion(ctx, roomID); errors.Is(err, roomserver.ErrRoomNotFound) && a.onlyLocalServers(roomID, via) {
			return "", httputil.NotFound("Unknown room")
		}
		return a.joinRemote(ctx, d, string(roomID), via, reason, membership)
	}
	cur, err := rs.CurrentStateEvents(ctx, roomID, []pdu.StateKey{memberKey(d.UserID), keyJoinRules})
	if err != nil {
		return "", roomErr(err)
	}
	current := membershipOf(cur[0])
	if current == membership && membership == "join" {
		return roomID, nil // already joined: nothing to do
	}
	if d.IsGuest {
		if membership != "join" {
			return "", httputil.GuestAccessForb("Guests cannot knock")
		}
		if err := a.checkGuestJoin(ctx, roomID); err != nil {
			return "", err
		}
	}
	content, err := a.memberContent(ctx, d.Localpart, membership, reason)
	if err != nil {
		return "", err
	}
	for k, v := range extra {
		if !reservedMemberKeys[k] {
			content[k] = v
		}
	}
	if membership == "join" && current != "invite" {
		switch contentString(cur[1], "join_rule") {
		case "restricted", "knock_restricted":
			if via, ok := a.restrictedJoinAuthoriser(ctx, roomID, cur[1], d.UserID); ok {
				content["join_authorised_via_users_server"] = via
			} else if servers, err := a.restrictedJoinServers(ctx, roomID); err != nil {
				return "", err
			} else if len(servers) > 0 && a.opts.RemoteJoiner != nil {
				// No user of this server may authorise the join: it goes
				// through a server one of whose users may (as Synapse).
				return a.joinRemote(ctx, d, string(roomID), servers, reason, membership)
			}
		}
	}
	if err := a.sendMembership(ctx, roomID, d.UserID, d.UserID, content); err != nil {
		return "", err
	}
	a.unforget(ctx, d.UserID, roomID)
	return roomID, nil
}

// joinRemote joins (or knocks on) a room this server is not in through
// federation.
func (a *API) joinRemote(ctx context.Context, d *Device, target string, via []string, reason *string, membership string) (id.RoomID, error) {
	if membership == "knock" {
		return a.knockRemote(ctx, d, target, via, reason)
	}
	if a.opts.RemoteJoiner == nil {
		return "", errFederationUnavailable("Joining a room this server is not in")
	}
	if d.IsGuest {
		return "", httputil.GuestAccessForb("Guests cannot join rooms on other servers")
	}
	roomID, err := a.opts.RemoteJoiner.JoinRemoteRoom(ctx, target, d.UserID, via)
	if err != nil {
		var me *httputil.Error
		if errors.As(err, &me) {
			return "", me
		}
		// As Synapse: no server of the room could be reached or would help.
		slog.InfoContext(ctx, "joining a remote room failed", "target", target, "user_id", d.UserID, "err", err)
		return "", httputil.NotFound("Could not join %s: no server in the room could be reached", target)
	}
	a.unforget(ctx, d.UserID, roomID)
	return roomID, nil
}

// knockRemote knocks on a room this server is not in through federation; the
// knock then shows in the user's /sync.
func (a *API) knockRemote(ctx context.Context, d *Device, target string, via []string, reason *string) (id.RoomID, error) {
	if a.opts.RemoteKnocker == nil {
		return "", errFederationUnavailable("Knocking on a room this server is not in")
	}
	if d.IsGuest {
		return "", httputil.GuestAccessForb("Guests cannot knock")
	}
	roomID, err := a.opts.RemoteKnocker.KnockRemoteRoom(ctx, target, d.UserID, via, reason)
	if err != nil {
		var me *httputil.Error
		if errors.As(err, &me) {
			return "", me
		}
		slog.InfoContext(ctx, "knocking on a remote room failed", "target", target, "user_id", d.UserID, "err", err)
		return "", httputil.NotFound("Could not knock on %s: no server in the room could be reached", target)
	}
	if a.opts.Sync != nil {
		a.opts.Sync.RemoteInvitesChanged(d.UserID) // shows the knock
	}
	return roomID, nil
}

// retractRemoteKnock withdraws the user's knock on a room of another server,
// if they have one; done reports whether there was one.
func (a *API) retractRemoteKnock(ctx context.Context, roomID id.RoomID, userID id.UserID) (done bool, err error) {
	if a.opts.RemoteKnocker == nil {
		return false, nil
	}
	found, err := a.opts.RemoteKnocker.RetractRemoteKnock(ctx, roomID, userID)
	if !found {
		return false, err
	}
	if err != nil {
		var me *httputil.Error
		if errors.As(err, &me) {
			return true, me
		}
		slog.InfoContext(ctx, "retracting a remote knock failed", "room_id", roomID, "user_id", userID, "err", err)
		return true, httputil.NotFound("Could not retract the knock on %s: no server in the room could be reached", roomID)
	}
	if a.opts.Sync != nil {
		a.opts.Sync.RemoteInvitesChanged(userID)
	}
	return true, nil
}

// onlyLocalServers reports whether nothing points outside this server: the
// room ID's server part (rooms before v12 have one) and every via server.
func (a *API) onlyLocalServers(roomID id.RoomID, via []string) bool {
	if i := strings.IndexByte(string(roomID), ':'); i >= 0 && string(roomID)[i+1:] != a.cfg.ServerName {
		return false
	}
	for _, v := range via {
		if v != a.cfg.ServerName {
			return false
		}
	}
	return true
}

// serverInRoom reports whether this server can change memberships of the room
// locally: some local user is joined, or nobody is joined at all to a room the
// server knows (the auth rules then decide, e.g. a creator rejoining).
func (a *API) serverInRoom(ctx context.Context, roomID id.RoomID) (bool, error) {
	joined, err := a.opts.Roomserver.Members(ctx, roomID, "join")
	if err != nil {
		return false, internalErr(err)
	}
	if len(joined) == 0 {
		exts, err := a.opts.Roomserver.ForwardExtremities(ctx, roomID)
		if errors.Is(err, roomserver.ErrRoomNotFound) {
			return false, nil
		}
		if err != nil {
			return false, internalErr(err)
		}
		return len(exts) > 0, nil
	}
	for _, u := range joined {
		if u.Homeserver() == a.cfg.ServerName {
			return true, nil
		}
	}
	return false, nil
}

// restrictedJoinAuthoriser picks a local user who may authorise a restricted join
// (Client-Server API, "Restricted rooms"): the joiner must be joined to a room in
// the allow list, and the authoriser a joined member with the power to invite.
func (a *API) restrictedJoinAuthoriser(ctx context.Context, roomID id.RoomID, joinRules *roomserver.StoredEvent, joiner id.UserID) (string, bool) {
	rs := a.opts.Roomserver
	allowed := false
	for _, rule := range gjson.GetBytes(joinRules.Content(), "allow").Array() {
		if rule.Get("type").Str != "m.room_membership" {
			continue
		}
		if m, _, err := rs.Membership(ctx, id.RoomID(rule.Get("room_id").Str), joiner); err == nil && m == "join" {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", false
	}
	pl, err := a.roomPower(ctx, roomID)
	if err != nil {
		return "", false
	}
	joined, err := rs.Members(ctx, roomID, "join")
	if err != nil {
		return "", false
	}
	need := pl.level("invite", 0)
	for _, u := range joined {
		if u.Homeserver() == a.cfg.ServerName && pl.userLevel(u) >= need {
			return string(u), true
		}
	}
	return "", false
}

// reservedMemberKeys are the members of an m.room.member content a client
// does not choose through the body of POST /join: the membership itself, the
// request's own parameters, and join_authorised_via_users_server, which only
// the authorising server may set (its signature must be on the event).
var reservedMemberKeys = map[string]bool{
	"membership":                       true,
	"reason":                           true,
	"third_party_signed":               true,
	"join_authorised_via_users_server": true,
}

// memberStateContent prepares the content of an m.room.member event a client
// sends with PUT /rooms/{roomId}/state. join_authorised_via_users_server is
// dropped: it is the authorising server's to set, and a client echoing an old
// join's content would otherwise produce an event that fails the auth rules
// ("If content has a join_authorised_via_users_server property ... If the event
// is not validly signed by the homeserver of the user ID denoted by the key,
// reject", room version 8+). A user joining a restricted room they are not
// joined or invited to gets a local authoriser, as with POST /join.
func (a *API) memberStateContent(ctx context.Context, roomID id.RoomID, sender id.UserID, stateKey string, content []byte) ([]byte, error) {
	const key = "join_authorised_via_users_server"
	if gjson.GetBytes(content, key).Exists() {
		c, err := sjson.DeleteBytes(content, key)
		if err != nil {
			return nil, httputil.BadJSON("Invalid content")
		}
		content = c
	}
	if gjson.GetBytes(content, "membership").Str != "join" || stateKey != string(sender) {
		return content, nil
	}
	cur, err := a.opts.Roomserver.CurrentStateEvents(ctx, roomID, []pdu.StateKey{memberKey(sender), keyJoinRules})
	if err != nil {
		return nil, roomErr(err)
	}
	if m := membershipOf(cur[0]); m == "join" || m == "invite" {
		return content, nil
	}
	switch contentString(cur[1], "join_rule") {
	case "restricted", "knock_restricted":
		if via, ok := a.restrictedJoinAuthoriser(ctx, roomID, cur[1], sender); ok {
			c, err := sjson.SetBytes(content, key, via)
			if err != nil {
				return nil, internalErr(err)
			}
			content = c
		}
	}
	return content, nil
}

// memberContent is the content of a member event for a local user, with their
// display name and avatar (Client-Server API, "m.room.member").
func (a *API) memberContent(ctx context.Context, localpart, membership string, reason *string) (map[string]any, error) {
	content := map[string]any{"membership": membership}
	if reason != nil && *reason != "" {
		content["reason"] = *reason
	}
	if membership == "join" || membership == "invite" || membership == "knock" {
		p, err := a.accounts.Profile(ctx, localpart)
		if err != nil && !errors.Is(err, accounts.ErrNotFound) {
			return nil, internalErr(err)
		}
		if p != nil {
			if p.DisplayName != nil && *p.DisplayName != "" {
				content["displayname"] = *p.DisplayName
			}
			if p.AvatarURL != nil && *p.AvatarURL != "" {
				content["avatar_url"] = *p.AvatarURL
			}
		}
	}
	return content, nil
}

// sendMembership sends an m.room.member event by sender about target.
func (a *API) sendMembership(ctx context.Context, roomID id.RoomID, sender, target id.UserID, content map[string]any) error {
	b, err := json.Marshal(content)
	if err != nil {
		return internalErr(err)
	}
	sk := string(target)
	_, err = a.opts.Roomserver.SendEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: sender, Content: b})
	return roomErr(err)
}

// checkGuestJoin lets guests join only rooms with guest_access can_join
// (Client-Server API, "Guest Access", "Server behaviour").
func (a *API) checkGuestJoin(ctx context.Context, roomID id.RoomID) error {
	cur, err := a.opts.Roomserver.CurrentStateEvents(ctx, roomID, []pdu.StateKey{keyGuest})
	if err != nil {
		return roomErr(err)
	}
	if contentString(cur[0], "guest_access") != "can_join" {
		return httputil.GuestAccessForb("Guests cannot join this room")
	}
	return nil
}

// removeGuests makes the local guests joined to a room leave it, after its
// guest_access stopped being can_join ("Guest Access", "Server behaviour").
func (a *API) removeGuests(ctx context.Context, roomID id.RoomID) {
	joined, err := a.opts.Roomserver.Members(ctx, roomID, "join")
	if err != nil {
		logIfErr(ctx, "listing members to remove guests", err)
		return
	}
	for _, u := range joined {
		if u.Homeserver() != a.cfg.ServerName {
			continue
		}
		acct, err := a.accounts.Get(ctx, u.Localpart())
		if err != nil || !acct.IsGuest {
			continue
		}
		logIfErr(ctx, "removing guest from room", a.sendMembership(ctx, roomID, u, u, map[string]any{"membership": "leave"}))
	}
}

// inviteStateEvent writes a state event for the stripped state of an invite
// or knock (Client-Server API, "Stripped state"): content, sender, state_key
// and type, except the m.room.create event of rooms whose ID is the create
// event's hash (room version 12+), which goes whole (MSC4311), so that the
// room's creator and the room ID can be checked before joining.
func inviteStateEvent(e *events.Event) json.RawMessage {
	if e.Type() == "m.room.create" && e.Version() != nil && e.Version().RoomIDIsCreateEventID {
		return json.RawMessage(e.JSON())
	}
	return strippedEvent(e)
}

// POST /rooms/{roomId}/invite
func (a *API) invite(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var body membershipBody
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if err := body.validate(); err != nil {
		return err
	}
	if body.UserID == "" && (body.IDServer != "" || body.Medium != "" || body.Address != "") {
		return httputil.Forbidden("Inviting by third-party identifier is not supported on this server")
	}
	target, _, _, err := parseUserIDParam(body.UserID)
	if err != nil {
		return httputil.BadJSON("user_id must be a valid user ID")
	}
	if err := a.inviteUser(ctx, roomID, d.UserID, target, body.Reason, false); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// inviteUser sends an invite from inviter to target: directly for local users,
// countersigned by the target's server (RemoteInviter) for remote ones.
func (a *API) inviteUser(ctx context.Context, roomID id.RoomID, inviter, target id.UserID, reason *string, isDirect bool) error {
	rs := a.opts.Roomserver
	if err := a.requireJoined(ctx, roomID, inviter); err != nil {
		return err
	}
	if m, _, err := rs.Membership(ctx, roomID, target); err != nil {
		return roomErr(err)
	} else if m == "join" {
		return httputil.Forbidden("%s is already in the room", target)
	} else if m == "ban" {
		return httputil.Forbidden("%s is banned from the room", target)
	}
	content := map[string]any{"membership": "invite"}
	if reason != nil && *reason != "" {
		content["reason"] = *reason
	}
	if isDirect {
		content["is_direct"] = true
	}
	if target.Homeserver() == a.cfg.ServerName {
		acct, err := a.accounts.Get(ctx, target.Localpart())
		if accounts.IsNotFound(err) && a.queryAppServiceUser(ctx, target) {
			// An application service knew the user and has just registered it.
			acct, err = a.accounts.Get(ctx, target.Localpart())
		}
		if accounts.IsNotFound(err) || (err == nil && acct.Deactivated) {
			return httputil.NotFound("Unknown user %s", target)
		}
		if err != nil {
			return internalErr(err)
		}
		if err := a.checkInvitePermission(ctx, target, inviter); err != nil {
			return err // MSC4155: the invitee blocks invites from inviter
		}
		prof, err := a.memberContent(ctx, target.Localpart(), "invite", reason)
		if err != nil {
			return err
		}
		for k, v := range prof {
			content[k] = v
		}
		if err := a.sendMembership(ctx, roomID, inviter, target, content); err != nil {
			return err
		}
		a.unforget(ctx, target, roomID)
		return nil
	}
	if a.opts.RemoteInviter == nil {
		return errFederationUnavailable("Inviting a user of another server")
	}
	b, err := json.Marshal(content)
	if err != nil {
		return internalErr(err)
	}
	sk := string(target)
	ev, err := rs.BuildEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: inviter, Content: b})
	if err != nil {
		return roomErr(err)
	}
	if err := rs.CheckEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: inviter, Content: b}); err != nil {
		return roomErr(err)
	}
	signed, err := a.opts.RemoteInviter.InviteRemoteUser(ctx, ev)
	if err != nil {
		var me *httputil.Error
		if errors.As(err, &me) {
			return me
		}
		return httputil.Forbidden("The invited user's server refused the invite: %v", err)
	}
	res, err := rs.InputRemoteEvent(ctx, signed)
	if err != nil {
		return roomErr(err)
	}
	if res.Rejected != nil {
		return roomErr(&roomserver.NotAllowedError{Err: res.Rejected})
	}
	return nil
}

// POST /rooms/{roomId}/leave
func (a *API) leave(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var body membershipBody
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	if err := body.validate(); err != nil {
		return err
	}
	if err := a.leaveRoom(ctx, roomID, d.UserID, body.Reason); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// leaveRoom makes a user leave a room (or reject an invite, or retract a knock).
// Leaving a room one is not in is a no-op.
func (a *API) leaveRoom(ctx context.Context, roomID id.RoomID, userID id.UserID, reason *string) error {
	if done, err := a.retractRemoteKnock(ctx, roomID, userID); done || err != nil {
		return err
	}
	if done, err := a.rejectRemoteInvite(ctx, roomID, userID, reason); done || err != nil {
		return err
	}
	m, member, err := a.opts.Roomserver.Membership(ctx, roomID, userID)
	if err != nil {
		return roomErr(err)
	}
	if err := a.refuseNoticeRejection(m, member); err != nil {
		return err
	}
	switch m {
	case "leave":
		return nil
	case "ban":
		return httputil.Forbidden("You are banned from this room")
	}
	local, err := a.serverInRoom(ctx, roomID)
	if err != nil {
		return err
	}
	if !local {
		return errFederationUnavailable("Leaving a room (or rejecting an invite to a room) this server is not in")
	}
	content := map[string]any{"membership": "leave"}
	if reason != nil && *reason != "" {
		content["reason"] = *reason
	}
	return a.sendMembership(ctx, roomID, userID, userID, content)
}

// POST /rooms/{roomId}/kick
func (a *API) kick(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.moderate(w, r, d, "leave", func(current string) error {
		if current != "join" && current != "invite" && current != "knock" {
			return httputil.Forbidden("The user is not in the room")
		}
		return nil
	})
}

// POST /rooms/{roomId}/ban
func (a *API) ban(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.moderate(w, r, d, "ban", func(string) error { return nil })
}

// POST /rooms/{roomId}/unban
func (a *API) unban(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.moderate(w, r, d, "leave", func(current string) error {
		if current != "ban" {
			return httputil.Forbidden("The user is not banned")
		}
		return nil
	})
}

// moderate changes another user's membership (kick, ban, unban).
func (a *API) moderate(w http.ResponseWriter, r *http.Request, d *Device, membership string, check func(current string) error) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var body membershipBody
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if err := body.validate(); err != nil {
		return err
	}
	target, _, _, err := parseUserIDParam(body.UserID)
	if err != nil {
		return httputil.BadJSON("user_id must be a valid user ID")
	}
	if err := a.requireJoined(ctx, roomID, d.UserID); err != nil {
		return err
	}
	current, _, err := a.opts.Roomserver.Membership(ctx, roomID, target)
	if err != nil {
		return roomErr(err)
	}
	if err := check(current); err != nil {
		return err
	}
	content := map[string]any{"membership": membership}
	if body.Reason != nil && *body.Reason != "" {
		content["reason"] = *body.Reason
	}
	if err := a.sendMembership(ctx, roomID, d.UserID, target, content); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /rooms/{roomId}/forget
func (a *API) forget(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	m, _, err := a.opts.Roomserver.Membership(ctx, roomID, d.UserID)
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return internalErr(err)
	}
	if m == "join" || m == "invite" || m == "knock" {
		return httputil.Unknown("You must leave the room before forgetting it")
	}
	if _, err := a.db.Exec(ctx, `INSERT INTO room_forgotten (user_id, room_id, forgotten_ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		string(d.UserID), string(roomID), nowMS()); err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// unforget clears a forgotten mark when the user is back in the room.
func (a *API) unforget(ctx context.Context, userID id.UserID, roomID id.RoomID) {
	_, err := a.db.Exec(ctx, `DELETE FROM room_forgotten WHERE user_id = $1 AND room_id = $2`, string(userID), string(roomID))
	logIfErr(ctx, "clearing forgotten room", err)
}

// forgotRoom reports whether userID has forgotten the room (and not come back
// since): the room's history is then closed to them, as to a non-member.
func (a *API) forgotRoom(ctx context.Context, userID id.UserID, roomID id.RoomID) (bool, error) {
	rows, err := a.db.Query(ctx, `SELECT 1 FROM room_forgotten WHERE user_id = $1 AND room_id = $2`, string(userID), string(roomID))
	if err != nil {
		return false, err
	}
	found := rows.Next()
	rows.Close()
	return found, rows.Err()
}

// forgottenRoomIDs returns the rooms marked forgotten for userID (a mark is
// cleared when the user is invited or joins again).
func (a *API) forgottenRoomIDs(ctx context.Context, userID id.UserID) (map[id.RoomID]struct{}, error) {
	rows, err := a.db.Query(ctx, `SELECT room_id FROM room_forgotten WHERE user_id = $1`, string(userID))
	if err != nil {
		return nil, fmt.Errorf("reading forgotten rooms: %w", err)
	}
	out := map[id.RoomID]struct{}{}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading forgotten rooms: %w", err)
		}
		out[id.RoomID(r)] = struct{}{}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading forgotten rooms: %w", err)
	}
	return out, nil
}

// ForgottenRooms returns the rooms userID has forgotten and not returned to
// (their membership is leave or ban): /sync leaves them out.
func (a *API) ForgottenRooms(ctx context.Context, userID id.UserID) (map[id.RoomID]struct{}, error) {
	marked, err := a.forgottenRoomIDs(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make(map[id.RoomID]struct{}, len(marked))
	for r := range marked {
		m, _, err := a.opts.Roomserver.Membership(ctx, r, userID)
		if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
			return nil, err
		}
		if m == "leave" || m == "ban" {
			out[r] = struct{}{}
		}
	}
	return out, nil
}

// GET /joined_rooms
func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request, d *Device) error {
	rooms, err := a.opts.Roomserver.RoomsForUser(r.Context(), d.UserID, "join")
	if err != nil {
		return internalErr(err)
	}
	if rooms == nil {
		rooms = []id.RoomID{}
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"joined_rooms": rooms})
	return nil
}

// RoomMembership carries account changes into rooms: it implements
// MembershipUpdater (profile changes become new member events in joined rooms,
// Client-Server API, "Events on Change of Profile Information") and RoomLeaver
// (a deactivated account leaves every room).
type RoomMembership struct {
	rs *roomserver.Roomserver
}

var (
	_ MembershipUpdater = (*RoomMembership)(nil)
	_ RoomLeaver        = (*RoomMembership)(nil)
)

// NewRoomMembership returns the account-to-room bridge over the room engine.
func NewRoomMembership(rs *roomserver.Roomserver) *RoomMembership { return &RoomMembership{rs: rs} }

// UpdateProfileInRooms sends a new join event with the given display name and
// avatar (empty: removed) to every room the user is joined to and whose member
// event differs. Failures in one room do not stop the others.
func (m *RoomMembership) UpdateProfileInRooms(ctx context.Context, userID id.UserID, displayName, avatarURL string) error {
	rooms, err := m.rs.RoomsForUser(ctx, userID, "join")
	if err != nil {
		return err
	}
	var errs []error
	for _, roomID := range rooms {
		_, ev, err := m.rs.Membership(ctx, roomID, userID)
		if err != nil || ev == nil {
			errs = append(errs, err)
			continue
		}
		content := map[string]json.RawMessage{}
		if err := json.Unmarshal(ev.Content(), &content); err != nil {
			errs = append(errs, err)
			continue
		}
		changed := setOrDelete(content, "displayname", displayName)
		changed = setOrDelete(content, "avatar_url", avatarURL) || changed
		if !changed {
			continue
		}
		delete(content, "reason")
		delete(content, "join_authorised_via_users_server")
		b, err := json.Marshal(content)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sk := string(userID)
		if _, err := m.rs.SendEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: userID, Content: b}); err != nil {
			slog.WarnContext(ctx, "updating member event after profile change", "room_id", roomID, "user_id", userID, "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// setOrDelete sets a string member of a JSON object (deleting it for ""),
// reporting whether it changed.
func setOrDelete(obj map[string]json.RawMessage, key, value string) bool {
	old, had := obj[key]
	if value == "" {
		delete(obj, key)
		return had
	}
	b, _ := json.Marshal(value)
	obj[key] = b
	return !had || string(old) != string(b)
}

// LeaveAllRooms makes the user leave every room they are joined to, invited to
// or knocking on. Rooms this server cannot leave alone (remote invites) are
// skipped and reported in the error.
func (m *RoomMembership) LeaveAllRooms(ctx context.Context, userID id.UserID) error {
	var errs []error
	for _, membership := range []string{"join", "invite", "knock"} {
		rooms, err := m.rs.RoomsForUser(ctx, userID, membership)
		if err != nil {
			return err
		}
		for _, roomID := range rooms {
			sk := string(userID)
			if _, err := m.rs.SendEvent(ctx, roomID, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: userID,
				Content: []byte(`{"membership":"leave"}`)}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
