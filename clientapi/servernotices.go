package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
	"hearth/roomserver"
)

// Server notices, as Synapse has them (its admin API, POST and PUT
// /_synapse/admin/v1/send_server_notice; Client-Server API, "Server Notices"):
// a server admin sends a message to a local user; a system user
// (server_notices.system_user_localpart) delivers it in a private,
// non-federated room it shares with that user, tagged m.server_notice. Each
// user has one such room: created and the user invited at the first notice,
// the user invited back when they left it. The user may join and leave it but
// not reject the invite (403 M_CANNOT_LEAVE_SERVER_NOTICE_ROOM), and cannot
// speak in it (everyone but the system user is below events_default).

const (
	// tagServerNotice tags the notice room in its user's room account data.
	tagServerNotice = "m.server_notice"
	// noticeUsersDefault is the power level of users in a notice room.
	noticeUsersDefault = -10
	// noticeScope scopes the transaction IDs of PUT send_server_notice.
	noticeScope = "server_notice"
)

// serverNotices sends notices as the system user.
type serverNotices struct {
	localpart string
	userID    id.UserID

	mu      sync.Mutex // guards ensured
	ensured bool
	// users serialises notices per recipient, so that two notices never make
	// two rooms.
	users keyedMutex
}

// registerServerNoticeRoutes serves the admin endpoints on /_synapse/admin.
func (a *API) registerServerNoticeRoutes(r *mux.Router) {
	if a.cfg.ServerNotices.Enabled && a.opts.Roomserver != nil {
		lp := a.cfg.ServerNotices.SystemUserLocalpart
		a.notices = &serverNotices{localpart: lp, userID: a.userID(lp)}
	}
	r.HandleFunc("/v1/send_server_notice", a.authed(a.sendServerNotice, adminOnly)).Methods(http.MethodPost)
	r.HandleFunc("/v1/send_server_notice/{txnId}", a.authed(a.sendServerNotice, adminOnly)).Methods(http.MethodPut)
}

// serverNoticeRequest is the body of send_server_notice.
type serverNoticeRequest struct {
	UserID  string          `json:"user_id"`
	Content json.RawMessage `json:"content"`
	// Type is the event type (default m.room.message); StateKey makes the
	// notice a state event.
	Type     string  `json:"type"`
	StateKey *string `json:"state_key"`
}

// POST /_synapse/admin/v1/send_server_notice, PUT …/send_server_notice/{txnId}
func (a *API) sendServerNotice(w http.ResponseWriter, r *http.Request, d *Device) error {
	if a.notices == nil {
		return httputil.Unknown("Server notices are not enabled on this server")
	}
	txnID, hasTxn := mux.Vars(r)["txnId"]
	if hasTxn && (txnID == "" || len(txnID) > 255) {
		return httputil.InvalidParam("Transaction IDs must be 1 to 255 bytes")
	}
	var req serverNoticeRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.UserID == "" {
		return httputil.MissingParam("Missing user_id")
	}
	if len(req.Content) == 0 || string(req.Content) == "null" {
		return httputil.MissingParam("Missing content")
	}
	if !isJSONObject(req.Content) {
		return httputil.BadJSON("content must be an object")
	}
	target, _, _, err := parseUserIDParam(req.UserID)
	if err != nil {
		return httputil.InvalidParam("user_id must be a valid user ID")
	}
	if target.Homeserver() != a.cfg.ServerName {
		return httputil.Unknown("Server notices can only be sent to local users")
	}
	evType := req.Type
	if evType == "" {
		evType = "m.room.message"
	}
	if len(evType) > 255 || (req.StateKey != nil && len(*req.StateKey) > 255) {
		return httputil.InvalidParam("Event types and state keys must be at most 255 bytes")
	}
	content := []byte(req.Content)
	send := func(ctx context.Context) (id.EventID, error) {
		return a.notices.send(ctx, a, target, evType, req.StateKey, content)
	}
	var eventID id.EventID
	if hasTxn {
		key := txnKey{user: d.UserID, device: d.DeviceID, scope: noticeScope, txn: txnID}
		eventID, err = a.rooms.txns.do(r.Context(), key, send)
	} else {
		eventID, err = send(r.Context())
	}
	if err != nil {
		return err
	}
	return respondEventID(w, eventID)
}

// send delivers one notice to target in their notice room.
func (n *serverNotices) send(ctx context.Context, a *API, target id.UserID, evType string, stateKey *string, content []byte) (id.EventID, error) {
	if target == n.userID {
		return "", httputil.InvalidParam("The server notices user cannot be sent notices")
	}
	acct, err := a.accounts.Get(ctx, target.Localpart())
	if accounts.IsNotFound(err) || (err == nil && acct.Deactivated) {
		return "", httputil.NotFound("Unknown user %s", target)
	}
	if err != nil {
		return "", internalErr(err)
	}
	if err := n.ensureUser(ctx, a); err != nil {
		return "", internalErr(err)
	}
	unlock := n.users.lock(string(target))
	defer unlock()
	roomID, err := n.roomFor(ctx, a, target)
	if err != nil {
		return "", err
	}
	out, err := a.opts.Roomserver.SendEvent(ctx, roomID, roomserver.SendRequest{
		Type: evType, StateKey: stateKey, Sender: n.userID, Content: content,
	})
	if err != nil {
		return "", roomErr(err)
	}
	return out.Event.ID(), nil
}

// ensureUser makes sure the system user's account exists (created on the
// first notice: no password, so nobody can log in as it) with the configured
// profile.
func (n *serverNotices) ensureUser(ctx context.Context, a *API) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ensured {
		return nil
	}
	cfg := a.cfg.ServerNotices
	acct, err := a.accounts.Get(ctx, n.localpart)
	switch {
	case accounts.IsNotFound(err):
		err = a.accounts.CreateAccount(ctx, accounts.NewAccount{Localpart: n.localpart, UserType: "support", DisplayName: cfg.SystemUserDisplayName})
		if err != nil && !errors.Is(err, accounts.ErrUserInUse) {
			return fmt.Errorf("creating the server notices user: %w", err)
		}
	case err != nil:
		return fmt.Errorf("reading the server notices user: %w", err)
	case acct.HasPassword || acct.Deactivated:
		return fmt.Errorf("the server notices localpart %q belongs to a user account: choose another server_notices.system_user_localpart", n.localpart)
	}
	prof, err := a.accounts.Profile(ctx, n.localpart)
	if err != nil {
		return fmt.Errorf("reading the server notices user's profile: %w", err)
	}
	for _, f := range []struct {
		key  string
		have *string
		want string
	}{{"displayname", prof.DisplayName, cfg.SystemUserDisplayName}, {"avatar_url", prof.AvatarURL, cfg.SystemUserAvatarURL}} {
		if f.have != nil && *f.have == f.want || f.have == nil && f.want == "" {
			continue
		}
		v, _ := json.Marshal(f.want)
		if _, err := a.accounts.SetProfileField(ctx, n.localpart, f.key, v); err != nil {
			return fmt.Errorf("setting the server notices user's %s: %w", f.key, err)
		}
	}
	n.ensured = true
	return nil
}

// roomFor returns target's notice room, making it (or inviting target back
// into it) as needed. The caller holds target's lock.
func (n *serverNotices) roomFor(ctx context.Context, a *API, target id.UserID) (id.RoomID, error) {
	rs := a.opts.Roomserver
	var stored string
	err := a.db.QueryRow(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, string(target)).Scan(&stored)
	switch {
	case err == nil:
		roomID := id.RoomID(stored)
		m, _, err := rs.Membership(ctx, roomID, n.userID)
		if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
			return "", internalErr(err)
		}
		if m == "join" {
			if err := n.bringBack(ctx, a, roomID, target); err != nil {
				return "", err
			}
			return roomID, nil
		}
		// The system user is no longer in the room: make a new one.
	case !isNoRows(err):
		return "", internalErr(err)
	}
	roomID, err := n.createRoom(ctx, a)
	if err != nil {
		return "", err
	}
	if _, err := a.db.Exec(ctx, `INSERT INTO server_notice_rooms (user_id, room_id, created_ts) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id, created_ts = excluded.created_ts`,
		string(target), string(roomID), nowMS()); err != nil {
		return "", internalErr(fmt.Errorf("recording the notice room of %s: %w", target, err))
	}
	slog.InfoContext(ctx, "created server notices room", "user_id", target, "room_id", roomID)
	if err := n.invite(ctx, a, roomID, target); err != nil {
		return "", err
	}
	return roomID, nil
}

// createRoom makes a notice room: private, not federated, with the system
// user as the only one who may speak.
func (n *serverNotices) createRoom(ctx context.Context, a *API) (id.RoomID, error) {
	d := &Device{UserID: n.userID, Localpart: n.localpart}
	req := createRoomRequest{
		Preset:                    "private_chat",
		CreationContent:           json.RawMessage(`{"m.federate":false}`),
		PowerLevelContentOverride: json.RawMessage(fmt.Sprintf(`{"users_default":%d}`, noticeUsersDefault)),
	}
	if name := a.cfg.ServerNotices.RoomName; name != "" {
		req.Name = &name
	}
	plan, err := a.planRoom(ctx, d, &req)
	if err != nil {
		return "", err
	}
	return a.buildRoom(ctx, d, plan)
}

// bringBack invites target into their notice room again when they are not
// joined or invited (they left, or were never invited).
func (n *serverNotices) bringBack(ctx context.Context, a *API, roomID id.RoomID, target id.UserID) error {
	m, _, err := a.opts.Roomserver.Membership(ctx, roomID, target)
	if err != nil {
		return roomErr(err)
	}
	switch m {
	case "join", "invite":
		return nil
	case "ban":
		if err := a.sendMembership(ctx, roomID, n.userID, target, map[string]any{"membership": "leave"}); err != nil {
			return err
		}
	}
	return n.invite(ctx, a, roomID, target)
}

// invite invites target from the system user (invite filters do not apply to
// server notices) and tags the room m.server_notice for them.
func (n *serverNotices) invite(ctx context.Context, a *API, roomID id.RoomID, target id.UserID) error {
	content, err := a.memberContent(ctx, target.Localpart(), "invite", nil)
	if err != nil {
		return err
	}
	if err := a.sendMembership(ctx, roomID, n.userID, target, content); err != nil {
		return err
	}
	a.unforget(ctx, target, roomID)
	_, err = a.accounts.UpdateAccountData(ctx, target.Localpart(), string(roomID), typeTag, func(old []byte) ([]byte, error) {
		var t roomTags
		if old != nil {
			_ = json.Unmarshal(old, &t)
		}
		if t.Tags == nil {
			t.Tags = map[string]json.RawMessage{}
		}
		if _, ok := t.Tags[tagServerNotice]; !ok {
			t.Tags[tagServerNotice] = json.RawMessage(`{}`)
		}
		return json.Marshal(t)
	})
	if err != nil {
		return internalErr(fmt.Errorf("tagging the notice room of %s: %w", target, err))
	}
	if a.opts.Sync != nil {
		a.opts.Sync.AccountDataChanged(target)
	}
	return nil
}

// refuseNoticeRejection answers a user who tries to reject (leave while
// invited) the invite to their server notices room.
func (a *API) refuseNoticeRejection(membership string, member *roomserver.StoredEvent) error {
	if a.notices == nil || membership != "invite" || member == nil || member.Sender() != a.notices.userID {
		return nil
	}
	return &httputil.Error{Status: http.StatusForbidden, ErrCode: "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
		Message: "You cannot reject the invite to your server notices room"}
}
