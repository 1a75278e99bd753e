package federationapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
)

// ErrNoServers is returned when there is no server to join a room through.
var ErrNoServers = errors.New("no server to join the room through")

// JoinRemoteRoom joins userID (a local user) to a room that lives on other servers,
// by room ID or alias, through the servers in via (and the alias's or room ID's
// own server): make_join, then send_join (v2), then the room's state and auth chain
// are stored and the join event is input with that state. It returns the room ID.
// Errors from the remote servers come back as *httputil.Error where they carry a
// Matrix error code (M_FORBIDDEN when the room does not let the user in).
func (a *API) JoinRemoteRoom(ctx context.Context, roomIDOrAlias string, userID id.UserID, via []string) (id.RoomID, error) {
	if userID.Homeserver() != a.serverName {
		return "", fmt.Errorf("joining %s: %s is not a local user", roomIDOrAlias, userID)
	}
	roomID, candidates, err := a.remoteTarget(ctx, roomIDOrAlias, via, a.inviterServers(ctx, userID))
	if err != nil {
		return "", err
	}
	defer a.joins.begin(roomID)()
	var errs []error
	for _, server := range candidates {
		err := a.joinVia(ctx, server, roomID, userID)
		if err == nil {
			// A knock the user made from here, or an earlier leave kept for
			// /sync, is answered by the join.
			if err := a.ForgetKnocks(ctx, roomID, userID); err != nil {
				slog.Warn("forgetting knocks after a join", "room_id", roomID, "user_id", userID, "err", err)
			}
			if err := a.forgetRemoteLeaves(ctx, roomID, userID); err != nil {
				slog.Warn("forgetting out-of-band leaves after a join", "room_id", roomID, "user_id", userID, "err", err)
			}
			return roomID, nil
		}
		slog.Info("remote join failed", "room_id", roomID, "via", server, "err", err)
		errs = append(errs, err)
		var me *httputil.Error
		if errors.As(err, &me) && me.ErrCode == "M_FORBIDDEN" {
			return "", err // the room said no; other residents will say the same
		}
		if ctx.Err() != nil {
			break
		}
	}
	// The first error with a Matrix error code says most.
	for _, err := range errs {
		var me *httputil.Error
		if errors.As(err, &me) {
			return "", err
		}
	}
	return "", errors.Join(errs...)
}

// inviterServers returns, per room, the servers of the users who invited
// userID to rooms this server is not in (a join or knock answering an invite
// goes through the inviter's server, as Synapse does).
func (a *API) inviterServers(ctx context.Context, userID id.UserID) map[id.RoomID][]string {
	invites, err := a.PendingInvites(ctx, userID)
	if err != nil {
		slog.Warn("listing invites for a remote join", "user_id", userID, "err", err)
		return nil
	}
	out := make(map[id.RoomID][]string, len(invites))
	for _, inv := range invites {
		if s := inv.Sender.Homeserver(); s != "" {
			out[inv.RoomID] = append(out[inv.RoomID], s)
		}
	}
	return out
}

// remoteTarget resolves a room ID or alias to the room ID and the servers to
// ask about it, without this server or duplicates: the alias's answer and
// server, via, and the servers of the users who invited the user there
// (inviters, by room). The room ID's own server (room versions before 12 name
// one) is asked only when nothing else names a server: a client that gives via
// servers chose them (Client-Server API, POST /join: "The servers to attempt to
// join the room through"), and a server that says it cannot grant the join
// must not be bypassed through the room's creator.
func (a *API) remoteTarget(ctx context.Context, roomIDOrAlias string, via []string, inviters map[id.RoomID][]string) (id.RoomID, []string, error) {
	var roomID id.RoomID
	var servers []string
	switch {
	case strings.HasPrefix(roomIDOrAlias, "#"):
		alias := id.RoomAlias(roomIDOrAlias)
		server := aliasServer(alias)
		if server == "" {
			return "", nil, httputil.InvalidParam("Bad room alias %s", alias)
		}
		if server == a.serverName {
			dir := a.directory()
			if dir == nil {
				return "", nil, httputil.NotFound("Room alias %s not found", alias)
			}
			rid, err := dir.ResolveLocalAlias(ctx, alias)
			if errors.Is(err, ErrNotFound) {
				return "", nil, httputil.NotFound("Room alias %s not found", alias)
			}
			if err != nil {
				return "", nil, err
			}
			roomID = rid
		} else {
			resp, err := a.client.QueryDirectory(ctx, server, alias)
			if err != nil {
				return "", nil, remoteError(fmt.Sprintf("resolving %s", alias), err)
			}
			if resp == nil || resp.RoomID == "" {
				return "", nil, httputil.NotFound("Room alias %s not found", alias)
			}
			roomID = resp.RoomID
			servers = append(servers, resp.Servers...)
			servers = append(servers, server)
		}
	case strings.HasPrefix(roomIDOrAlias, "!"):
		roomID = id.RoomID(roomIDOrAlias)
	default:
		return "", nil, httputil.InvalidParam("%s is neither a room ID nor an alias", roomIDOrAlias)
	}
	servers = append(servers, via...)
	servers = append(servers, inviters[roomID]...)
	var candidates []string
	add := func(s string) {
		if s != a.serverName && s != "" && !slices.Contains(candidates, s) {
			candidates = append(candidates, s)
		}
	}
	for _, s := range servers {
		add(s)
	}
	if len(candidates) == 0 {
		if _, server, ok := strings.Cut(string(roomID), ":"); ok {
			add(server) // room versions before 12 name a server
		}
	}
	if len(candidates) == 0 {
		return "", nil, ErrNoServers
	}
	return roomID, candidates, nil
}

// joinVia runs the join handshake with one resident server.
func (a *API) joinVia(ctx context.Context, server string, roomID id.RoomID, userID id.UserID) error {
	start := time.Now()
	versions := make([]id.RoomVersion, 0, 12)
	for _, v := range roomversion.All() {
		versions = append(versions, v.ID)
	}
	mj, err := a.client.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: roomID, UserID: userID, Via: server, SupportedVersions: versions})
	if err != nil {
		return remoteError("make_join", err)
	}
	if mj == nil {
		return errors.New("make_join: empty answer")
	}
	version := mj.RoomVersion
	if version == "" {
		version = "1"
	}
	v, ok := roomversion.Lookup(version)
	if !ok {
		return fmt.Errorf("make_join: unsupported room version %q", version)
	}
	proto, err := templateProto(v, mj.Event, roomID, userID, "join")
	if err != nil {
		return fmt.Errorf("make_join: %w", err)
	}
	if a.opts.Profiles != nil {
		proto.Content = a.withProfile(ctx, userID, proto.Content)
	}
	ev, err := events.Build(v.ID, *proto, a.serverName, id.KeyID(a.key.ID), a.key.PrivateKey)
	if err != nil {
		return fmt.Errorf("building the join event: %w", err)
	}
	sj, err := a.client.SendJoin(ctx, &federation.ReqSendJoin{RoomID: roomID, EventID: ev.ID(), Event: ev.JSON(), Via: server})
	if err != nil {
		return remoteError("send_join", err)
	}
	if sj == nil {
		return errors.New("send_join: empty answer")
	}
	if sj.MembersOmitted {
		return errors.New("send_join: the server omitted members, which this server does not support")
	}
	if len(sj.Event) > 0 {
		// The resident signed a restricted join: use its copy (same ID).
		if signed, err := events.Parse(v.ID, sj.Event); err == nil && signed.ID() == ev.ID() {
			ev = signed
		}
	}
	if err := a.rs.EnsureRoom(ctx, roomID, v.ID); err != nil {
		return err
	}
	raws := make([]json.RawMessage, 0, len(sj.State)+len(sj.AuthChain))
	raws = append(append(raws, sj.AuthChain...), sj.State...)
	evs, err := a.verifyNew(ctx, roomID, v.ID, raws)
	if err != nil {
		return err
	}
	if err := a.inputOutliers(ctx, evs); err != nil {
		return err
	}
	stateIDs := make([]id.EventID, 0, len(sj.State))
	for _, raw := range sj.State {
		if se, err := events.Parse(v.ID, raw); err == nil && se.RoomID() == roomID {
			stateIDs = append(stateIDs, se.ID())
		}
	}
	// Only state events that are stored count (those that failed the checks are
	// left out, as the engine requires every supplied event to be stored).
	stored, err := a.rs.Events(ctx, stateIDs)
	if err != nil {
		return err
	}
	stateIDs = stateIDs[:0]
	for _, se := range stored {
		stateIDs = append(stateIDs, se.ID())
	}
	prevStates := make(map[id.EventID][]id.EventID, len(ev.PrevEventIDs()))
	for _, p := range ev.PrevEventIDs() {
		prevStates[p] = stateIDs
	}
	a.sender.markSkip(ev.ID()) // the resident sends the join to the room
	res, err := a.rs.InputEventWithState(ctx, ev, prevStates)
	if err != nil {
		return fmt.Errorf("storing the join: %w", err)
	}
	if res.Rejected != nil {
		return httputil.Forbidden("The join was rejected: %v", res.Rejected)
	}
	slog.Info("joined remote room", "room_id", roomID, "user_id", userID, "via", server,
		"state_events", len(sj.State), "auth_chain", len(sj.AuthChain), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// templateProto turns a make_join/make_leave template into the event to build,
// checking the fields the spec says the joining server must check.
func templateProto(v *roomversion.Version, tmpl json.RawMessage, roomID id.RoomID, userID id.UserID, membership string) (*events.ProtoEvent, error) {
	t := gjson.ParseBytes(tmpl)
	if !t.IsObject() {
		return nil, errors.New("the template is not an object")
	}
	switch {
	case t.Get("type").Str != "m.room.member":
		return nil, errors.New("the template is not an m.room.member event")
	case t.Get("state_key").Str != string(userID) || t.Get("sender").Str != string(userID):
		return nil, errors.New("the template is for another user")
	case t.Get("room_id").Str != string(roomID):
		return nil, errors.New("the template is for another room")
	case t.Get("content.membership").Str != membership:
		return nil, fmt.Errorf("the template's membership is not %s", membership)
	}
	sk := string(userID)
	proto := &events.ProtoEvent{
		Type: "m.room.member", StateKey: &sk, Sender: userID, RoomID: roomID,
		Content: []byte(t.Get("content").Raw), Depth: t.Get("depth").Int(),
	}
	refs := map[id.EventID][32]byte{}
	readRefs := func(field string) ([]id.EventID, error) {
		var out []id.EventID
		for _, x := range t.Get(field).Array() {
			if !v.IsOriginBasedEventIDs() {
				if x.Type != gjson.String {
					return nil, fmt.Errorf("%s holds a non-string", field)
				}
				out = append(out, id.EventID(x.Str))
				continue
			}
			// Room v1/v2: [event ID, {"sha256": reference hash}].
			pair := x.Array()
			if len(pair) != 2 || pair[0].Type != gjson.String {
				return nil, fmt.Errorf("%s holds a malformed reference", field)
			}
			h, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(pair[1].Get("sha256").Str, "="))
			if err != nil || len(h) != 32 {
				return nil, fmt.Errorf("%s holds a malformed reference hash", field)
			}
			eid := id.EventID(pair[0].Str)
			refs[eid] = [32]byte(h)
			out = append(out, eid)
		}
		return out, nil
	}
	var err error
	if proto.PrevEvents, err = readRefs("prev_events"); err != nil {
		return nil, err
	}
	if proto.AuthEvents, err = readRefs("auth_events"); err != nil {
		return nil, err
	}
	if len(proto.PrevEvents) == 0 {
		return nil, errors.New("the template has no prev_events")
	}
	if v.IsOriginBasedEventIDs() {
		proto.ReferenceHashes = refs
	}
	return proto, nil
}

// withProfile adds the user's displayname and avatar_url to member content.
func (a *API) withProfile(ctx context.Context, userID id.UserID, content []byte) []byte {
	prof, err := a.opts.Profiles.LocalProfile(ctx, userID)
	if err != nil {
		return content
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(content, &m) != nil || m == nil {
		return content
	}
	for _, k := range []string{"displayname", "avatar_url"} {
		if v, ok := prof[k]; ok {
			if _, set := m[k]; !set {
				m[k] = v
			}
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return content
	}
	return b
}

// remoteError turns a failed federation request into an error for the caller,
// keeping the remote Matrix error (code and message) when there is one.
func remoteError(what string, err error) error {
	if code := remoteErrcode(err); code != "" {
		status := httpStatus(err)
		if status < 400 || status >= 500 {
			status = 502
		}
		return &httputil.Error{Status: status, ErrCode: code, Message: fmt.Sprintf("%s: %v", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// RejectRemoteInvite rejects userID's invite to roomID, a room this server is
// not in (Server-Server API, "Leaving Rooms (Rejecting Invites)"): make_leave
// and send_leave through the inviting server (then the room ID's server, for
// room versions that name one). When no server takes the leave, the invite is
// rejected here only, with a leave event of this server's (as Synapse does: an
// unreachable or departed room must not leave the user with an invite they
// cannot get rid of). Either way the invite is forgotten and the leave kept for
// /sync (RemoteLeaves). found is false when the user has no such invite.
func (a *API) RejectRemoteInvite(ctx context.Context, roomID id.RoomID, userID id.UserID, reason *string) (found bool, err error) {
	if userID.Homeserver() != a.serverName {
		return false, fmt.Errorf("rejecting an invite to %s: %s is not a local user", roomID, userID)
	}
	invites, err := a.PendingInvites(ctx, userID)
	if err != nil {
		return false, err
	}
	var mine []Invite
	var servers []string
	for _, inv := range invites {
		if inv.RoomID == roomID {
			mine = append(mine, inv)
			if s := inv.Sender.Homeserver(); s != a.serverName && s != "" && !slices.Contains(servers, s) {
				servers = append(servers, s)
			}
		}
	}
	if len(mine) == 0 {
		return false, nil
	}
	if _, s, ok := strings.Cut(string(roomID), ":"); ok && s != a.serverName && s != "" && !slices.Contains(servers, s) {
		servers = append(servers, s)
	}
	var leave *events.Event
	for _, server := range servers {
		ev, err := a.leaveVia(ctx, server, roomID, userID, reason)
		if err == nil {
			leave = ev
			break
		}
		slog.Info("rejecting an invite through a server failed", "room_id", roomID, "user_id", userID, "via", server, "err", err)
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
	}
	latest := mine[len(mine)-1]
	if leave == nil {
		if leave, err = a.localLeaveFor(latest, userID, reason); err != nil {
			return true, fmt.Errorf("rejecting the invite to %s locally: %w", roomID, err)
		}
		slog.Info("rejected an invite locally: no server of the room took the leave", "room_id", roomID, "user_id", userID)
	}
	for _, inv := range mine {
		if err := a.ForgetInvite(ctx, inv.EventID); err != nil {
			return true, err
		}
	}
	return true, a.storeRemoteLeave(ctx, leave, leave.Version().ID, userID)
}

// leaveVia runs make_leave/send_leave with one server and returns the leave
// event it accepted.
func (a *API) leaveVia(ctx context.Context, server string, roomID id.RoomID, userID id.UserID, reason *string) (*events.Event, error) {
	ml, err := a.client.MakeLeave(ctx, &federation.ReqMakeLeave{RoomID: roomID, UserID: userID, Via: server})
	if err != nil {
		return nil, remoteError("make_leave", err)
	}
	if ml == nil {
		return nil, errors.New("make_leave: empty answer")
	}
	version := ml.RoomVersion
	if version == "" {
		version = "1"
	}
	v, ok := roomversion.Lookup(version)
	if !ok {
		return nil, fmt.Errorf("make_leave: unsupported room version %q", version)
	}
	proto, err := templateProto(v, ml.Event, roomID, userID, "leave")
	if err != nil {
		return nil, fmt.Errorf("make_leave: %w", err)
	}
	if reason != nil && *reason != "" {
		proto.Content = withReason(proto.Content, *reason)
	}
	ev, err := events.Build(v.ID, *proto, a.serverName, id.KeyID(a.key.ID), a.key.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("building the leave event: %w", err)
	}
	if err := a.client.SendLeave(ctx, &federation.ReqSendLeave{RoomID: roomID, EventID: ev.ID(), Event: ev.JSON(), Via: server}); err != nil {
		return nil, remoteError("send_leave", err)
	}
	return ev, nil
}
